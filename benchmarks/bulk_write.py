"""Writing precomputed vectors: the same batches through the incremental level (pending rows in SQLite, sealed
into a segment at `flush_docs`) against written as a segment directly (a batch of at least `flush_docs`).

Synthetic documents of `index_speed.py` (1024-d dense, sparse, ColBERT tokens for every document), generated
once per repeat outside the timing; each repeat writes them into two fresh collections, the two paths in
alternating order, and times the whole write including the flush (wall and this process's CPU time).

    env PYTHONPATH=src python benchmarks/bulk_write.py --docs 10000 --repeats 3

Prints a table and writes benchmarks/results/bulk_write-<docs>-<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from index_speed import ROOT, Corpus, dense_model

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record


def write(path: Path, docs: list[dict], batch: int, flush_docs: int, colbert_dtype: str) -> dict:
    """Upsert `docs` in batches of `batch` into a new collection, then flush: wall and CPU seconds."""
    collection = Collection.create(
        path,
        dim=len(docs[0]["dense"]),
        colbert_dim=docs[0]["colbert"].shape[1],
        colbert_dtype=colbert_dtype,
        flush_docs=flush_docs,
        hnsw={"min_rows": len(docs) + 1},  # no graph: the write path alone
        cache=False,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    with collection:
        for start in range(0, len(docs), batch):
            collection.upsert(docs[start : start + batch])
        collection.flush()
        segments = len(collection.stats()["segments"])
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "segments": segments}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--tokens", type=int, default=100, help="ColBERT tokens a document")
    ap.add_argument("--small-batch", type=int, default=1000, help="upsert size through the incremental level")
    ap.add_argument("--colbert-dtype", default="binary")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument(
        "--geometry", type=Path, default=ROOT / "results" / "embedding_geometry.json", help="index_speed's"
    )
    args = ap.parse_args()
    model = dense_model(argparse.Namespace(data="latent", geometry=args.geometry, dim=1024, clusters=2000))
    corpus = Corpus(model, 1024, 30_000, 62)
    paths = {  # (batch, flush_docs): the same segment size, reached two ways
        "incremental level": (args.small_batch, args.docs),
        "segment directly": (args.docs, args.docs),
    }
    runs: dict[str, list[dict]] = {name: [] for name in paths}
    work = Path(tempfile.mkdtemp(prefix="m3s-bulk-", dir=args.workdir))
    try:
        for repeat in range(args.repeats):
            docs = [d for s in range(0, args.docs, 1000) for d in corpus.batch(s, 1000, 1, args.tokens)]
            order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
            for name in order:
                target = work / name.replace(" ", "-")
                runs[name].append(write(target, docs, *paths[name], args.colbert_dtype))
                shutil.rmtree(target)
            del docs
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpu": cpu_record(),
    }
    print(
        f"{args.docs:,} documents x {args.tokens} ColBERT tokens ({args.colbert_dtype}), {args.repeats} repeats"
    )
    print(f"{'path':<20} {'docs/s (median)':>16} {'wall s':>8} {'CPU s':>8}")
    for name, measured in runs.items():
        wall = float(np.median([m["wall_s"] for m in measured]))
        cpu = float(np.median([m["cpu_s"] for m in measured]))
        result[name] = {"runs": measured, "docs_per_s": args.docs / wall, "wall_s": wall, "cpu_s": cpu}
        print(f"{name:<20} {args.docs / wall:>16.0f} {wall:>8.1f} {cpu:>8.1f}")
    a, b = result["incremental level"], result["segment directly"]
    result["speedup_wall"], result["speedup_cpu"] = a["wall_s"] / b["wall_s"], a["cpu_s"] / b["cpu_s"]
    print(
        f"segment directly: {result['speedup_wall']:.2f}x the wall speed, {result['speedup_cpu']:.2f}x in CPU time"
    )
    out = ROOT / "results" / f"bulk_write-{args.docs}-{args.colbert_dtype}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
