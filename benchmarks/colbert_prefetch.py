"""Read-ahead of a ColBERT re-rank's rows (`threads.prefetch_rows`): MaxSim over scattered rows of a large
memory-mapped store, with and without asking the kernel for all rows first.

Each search draws its own random candidates from a segment of a kept collection (`index_speed.py --keep`), so
most rows are cold when the store is larger than the page cache can hold beside everything else; the arms
alternate per search. `warm` repeats the previous search's rows (now cached): what the advice costs when
there is nothing to read.

    PYTHONPATH=src python benchmarks/colbert_prefetch.py DIR/m3s-bench-*/collection --candidates 200

Prints a table, writes benchmarks/results/colbert_prefetch-ROWS.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np
from host_speed import machine_record
from index_speed import percentiles

from m3search.index import multivector
from m3search.index.multivector import TOKENS_FILE, MultiVectorStore

ROOT = Path(__file__).resolve().parent


def largest_colbert_store(collection: Path) -> tuple[Path, MultiVectorStore]:
    """The segment of a kept collection with the most ColBERT codes, and its store (memory-mapped)."""
    segment = max((collection / "segments").iterdir(), key=lambda p: (p / TOKENS_FILE).stat().st_size)
    return segment, MultiVectorStore.load(segment)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("collection", type=Path, help="a collection kept by index_speed.py --keep")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--searches", type=int, default=100, help="per arm")
    ap.add_argument("--query-tokens", type=int, default=32)
    args = ap.parse_args()
    segment, store = largest_colbert_store(args.collection)
    rng = np.random.default_rng()
    query = rng.standard_normal((args.query_tokens, store.dim)).astype(np.float32)
    ms: dict[str, list[float]] = {"no read-ahead": [], "read-ahead": [], "read-ahead, warm": []}

    def timed(rows: np.ndarray) -> float:
        start = time.perf_counter()
        store.maxsim(query, rows)
        return 1000 * (time.perf_counter() - start)

    for i in range(args.searches):
        for arm in ("no read-ahead", "read-ahead") if i % 2 else ("read-ahead", "no read-ahead"):
            rows = np.sort(rng.choice(len(store), args.candidates, replace=False))
            if arm == "no read-ahead":
                with mock.patch.object(multivector, "prefetch_rows", lambda *_: None):
                    ms[arm].append(timed(rows))
            else:
                ms[arm].append(timed(rows))
                ms["read-ahead, warm"].append(timed(rows))
    tokens = int(store.offsets[-1])
    result = {
        "segment": str(segment),
        "rows": len(store),
        "colbert_dtype": store.dtype,
        "store_gb": (segment / TOKENS_FILE).stat().st_size / 2**30,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_record(),
        "latency_ms": {arm: percentiles(v) for arm, v in ms.items()},
    }
    print(
        f"{len(store):,} rows, {tokens / len(store):.0f} {store.dtype} tokens each, {result['store_gb']:.1f} GB; "
        f"RAM {result['machine']['ram_gb']:.0f} GB; {args.candidates} random candidates a search"
    )
    print(f"{'arm':<18} {'p50 ms':>8} {'p99 ms':>8}")
    for arm, p in result["latency_ms"].items():
        print(f"{arm:<18} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f}")
    out = ROOT / "results" / f"colbert_prefetch-{len(store)}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
