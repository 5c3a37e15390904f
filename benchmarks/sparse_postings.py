"""Sparse postings: the current format (uint16 row offsets in 65,536-row blocks) against a reference
implementation file (e.g. the int32-row format of an earlier commit), on the same postings in the same run.

The documents are `index_speed.py`'s sparse vectors (~50 nonzeros over a Zipf vocabulary, IDF-like weights),
queries 8 tokens. Both indexes answer every query (interleaved); results must be identical.

    git show dd137ce:src/m3search/index/sparse.py > /tmp/sparse_int32.py
    flock /tmp/m3search-heavy.lock env PYTHONPATH=src python benchmarks/sparse_postings.py \\
        --reference /tmp/sparse_int32.py --docs 1000000

Prints a table and writes benchmarks/results/sparse_postings-<docs>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from m3search.index.sparse import SparseIndex

ROOT = Path(__file__).resolve().parent


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("reference_sparse", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SparseIndex


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--reference", type=Path, required=True, help="a sparse.py defining the reference SparseIndex"
    )
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--nnz", type=int, default=62)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    n = args.docs
    rng = np.random.default_rng(0)
    ranks = np.arange(1, args.vocab + 1, dtype=np.float64)
    p = (1 / ranks) / (1 / ranks).sum()
    idf = np.log(1 + 1 / (1 - (1 - p) ** args.nnz))
    scale = (idf / idf.max()).astype(np.float32)
    key = np.unique(
        np.repeat(np.arange(n, dtype=np.int64), args.nnz) * args.vocab
        + rng.choice(args.vocab, n * args.nnz, p=p)
    )
    rows, terms = key // args.vocab, key % args.vocab
    del key
    weights = (rng.uniform(0.05, 0.4, len(rows)) * scale[terms]).astype(np.float32)
    indexes = {
        "reference": load_reference(args.reference).from_coo(n, rows, terms, weights),
        "current": SparseIndex.from_coo(n, rows, terms, weights),
    }
    result: dict = {"docs": n, "postings_per_doc": len(rows) / n, "reference": str(args.reference)}
    del rows, terms, weights
    queries = []
    for _ in range(args.queries):
        t = np.unique(rng.choice(args.vocab, 8, p=p))
        queries.append((t.astype(np.int64), (rng.uniform(0.05, 0.4, len(t)) * scale[t]).astype(np.float32)))
    masks = {"no filter": None, "10% allowed": rng.random(n) < 0.1}
    for name, index in indexes.items():
        arrays = [a for a in vars(index).values() if isinstance(a, np.ndarray)]
        result.setdefault("bytes_per_doc", {})[name] = sum(a.nbytes for a in arrays) / n
    timings = {(name, mask): [] for name in indexes for mask in masks}
    for q in queries:
        answers = []
        for mask_name, mask in masks.items():
            for name, index in indexes.items():
                start = time.perf_counter()
                answers.append(index.search(q, 100, mask))
                timings[(name, mask_name)].append(1000 * (time.perf_counter() - start))
            (ref_rows, ref_scores), (rows_, scores) = answers[-2:]
            assert np.array_equal(ref_rows, rows_) and np.array_equal(ref_scores, scores), "results differ"
    result["latency_ms"] = {
        f"{name}, {mask}": {
            "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)),
            "mean": float(np.mean(ms)),
        }
        for (name, mask), ms in timings.items()
    }
    print(
        f"{n:,} documents, {result['postings_per_doc']:.1f} postings each; top-100 of {args.queries} queries, "
        "identical results"
    )
    for name, b in result["bytes_per_doc"].items():
        print(f"{name:<10} {b:8.1f} B/doc")
    for label, t in result["latency_ms"].items():
        print(f"{label:<25} p50 {t['p50']:6.2f} ms  p99 {t['p99']:6.2f} ms  mean {t['mean']:6.2f} ms")
    out = ROOT / "results" / f"sparse_postings-{n}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
