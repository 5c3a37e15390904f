"""What segment checksums cost: hash speed of the candidates, and the time to open a collection and verify it.

1. CPU time to hash a 256 MiB buffer with xxh3-128 (what m3search records), xxh64, blake2b, sha256 and crc32.
2. A dense-only collection of `--docs` random vectors (one sealed segment with an HNSW graph): CPU time of
   `Collection.open` + one search with the open-time checks (sizes; checksums of small files and of the files
   read whole) against the same with checksums switched off, interleaved `--rounds` times; and `verify()`.

    PYTHONPATH=src python benchmarks/checksum_cost.py --docs 20000 --dim 384

Prints tables, writes benchmarks/results/checksum_cost.json (with the CPU model and flags).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import xxhash

from m3search import Collection
from m3search.encoders.runtimes.hardware import cpu_record
from m3search.store import integrity

RESULTS = Path(__file__).resolve().parent / "results"


def hash_speeds(mib: int = 256) -> dict[str, float]:
    data = os.urandom(mib << 20)
    candidates = {
        "xxh3_128": lambda: xxhash.xxh3_128(data).hexdigest(),
        "xxh64": lambda: xxhash.xxh64(data).hexdigest(),
        "blake2b": lambda: hashlib.blake2b(data).hexdigest(),
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
        "crc32": lambda: zlib.crc32(data),
    }
    out = {}
    for name, run in candidates.items():
        start = time.process_time()
        run()
        out[name] = mib / 1024 / (time.process_time() - start)
    return out


def open_and_search(path: Path, query: np.ndarray) -> float:
    start = time.process_time()
    with Collection.open(path, readonly=True) as c:
        c.search({"dense": query}, k=10, mode="dense")
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    speeds = hash_speeds()
    print("hash       GB/s (CPU time, 256 MiB)")
    for name, speed in speeds.items():
        print(f"{name:10} {speed:6.2f}")

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.docs, args.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c"
        with Collection.create(path, dim=args.dim, outputs=["dense"], flush_docs=args.docs, cache=False) as c:
            for start in range(0, args.docs, 5000):
                c.upsert(
                    {"id": str(i), "dense": vectors[i]} for i in range(start, min(start + 5000, args.docs))
                )
            c.flush()
            files = c.stats()["segments"][0]["bytes"]
        checked, unchecked = [], []
        saved = integrity.OPEN_CHECK_BYTES, integrity.READ_WHOLE
        for _ in range(args.rounds):
            checked.append(open_and_search(path, vectors[0]))
            integrity.OPEN_CHECK_BYTES, integrity.READ_WHOLE = -1, frozenset()
            unchecked.append(open_and_search(path, vectors[0]))
            integrity.OPEN_CHECK_BYTES, integrity.READ_WHOLE = saved
        start = time.process_time()
        with Collection.open(path, readonly=True) as c:
            report = c.verify()
        verify_s = time.process_time() - start
    result = {
        "docs": args.docs,
        "dim": args.dim,
        "segment_bytes": files,
        "hash_gb_per_s": speeds,
        "open_search_s_checked_median": float(np.median(checked)),
        "open_search_s_unchecked_median": float(np.median(unchecked)),
        "verify_s": verify_s,
        "verify_bytes": report["bytes"],
        "cpu": cpu_record(),
    }
    print(f"\nsegment: {args.docs} x {args.dim}, {sum(files.values()) / 2**20:.1f} MiB in {len(files)} files")
    print("open + 1 search, CPU s (median of rounds)   checks on   checks off")
    print(
        f"{'':43} {result['open_search_s_checked_median']:9.4f}   {result['open_search_s_unchecked_median']:9.4f}"
    )
    print(f"verify: {report['bytes'] / 2**20:.1f} MiB in {verify_s:.3f} CPU s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "checksum_cost.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
