"""Block size of packed-code MaxSim (`multivector.BLOCK_VALUES`): a re-rank's time with its candidates' tokens
scored a block at a time, for several tokens per block, on cached rows of a kept collection.

A block's table sums are one `embedding_bag` call; small blocks pay its fixed cost and the numpy steps around it
many times, large ones leave the cache. Each search draws its candidates from the first `--pool` rows (touched
once before timing, so every arm reads from memory), and each search runs under every arm in turn (alternating
which goes first).

    PYTHONPATH=src python benchmarks/colbert_blocks.py DIR/m3s-bench-*/collection --block-tokens 1024 8192 32768

Prints a table, writes benchmarks/results/colbert_blocks-ROWS.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from colbert_prefetch import largest_colbert_store
from host_speed import machine_record
from index_speed import percentiles

from m3search.index import multivector

ROOT = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "collection", type=Path, help="a collection kept by index_speed.py --keep (packed ColBERT)"
    )
    ap.add_argument("--block-tokens", type=int, nargs="+", default=[1024, 8192, 32768])
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--pool", type=int, default=300_000, help="rows the candidates are drawn from")
    ap.add_argument("--searches", type=int, default=240)
    ap.add_argument("--query-tokens", type=int, default=32)
    args = ap.parse_args()
    segment, store = largest_colbert_store(args.collection)
    if store.dtype not in ("binary", "2bit"):
        raise SystemExit(f"block sizes here are for packed codes; this store is {store.dtype}")
    width = store.tokens.shape[1]
    default_tokens = multivector.BLOCK_VALUES // width
    arms = {f"{t} tokens": t * width for t in args.block_tokens}
    arms[f"default ({default_tokens} tokens)"] = multivector.BLOCK_VALUES
    rng = np.random.default_rng(0)
    pool = min(args.pool, len(store))
    searches = [
        (
            np.sort(rng.choice(pool, args.candidates, replace=False)),
            rng.standard_normal((args.query_tokens, store.dim)),
        )
        for _ in range(args.searches)
    ]
    for rows, query in searches:  # into the page cache
        store.maxsim(query.astype(np.float32), rows)
    ms: dict[str, list[float]] = {arm: [] for arm in arms}
    names = list(arms)
    for i, (rows, query) in enumerate(searches):
        query = query.astype(np.float32)
        reference = None
        for arm in names if i % 2 else names[::-1]:
            multivector.BLOCK_VALUES = arms[arm]
            start = time.perf_counter()
            scores = store.maxsim(query, rows)
            ms[arm].append(1000 * (time.perf_counter() - start))
            if reference is None:
                reference = scores
            elif not np.allclose(scores, reference, rtol=1e-5, atol=1e-6):
                raise SystemExit(f"{arm} scored differently")
    tokens = int(store.offsets[-1])
    result = {
        "segment": str(segment),
        "rows": len(store),
        "colbert_dtype": store.dtype,
        "bytes_per_token": width,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_record(),
        "latency_ms": {arm: percentiles(v) for arm, v in ms.items()},
    }
    first = result["latency_ms"][names[0]]["p50_ms"]
    print(
        f"{len(store):,} rows, {tokens / len(store):.0f} {store.dtype} tokens each; {args.candidates} cached "
        f"candidates a search, {args.query_tokens} query tokens, {args.searches} searches"
    )
    print(f"{'block':<26} {'p50 ms':>8} {'p99 ms':>8} {'p50 ÷ first':>12}")
    for arm, p in result["latency_ms"].items():
        print(f"{arm:<26} {p['p50_ms']:>8.2f} {p['p99_ms']:>8.2f} {p['p50_ms'] / first:>12.2f}")
    out = ROOT / "results" / f"colbert_blocks-{len(store)}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
