"""Child process of the crash test: writes to a collection forever, announcing each write before it starts
and acknowledging it once `upsert`/`delete` has returned; some writes are large enough to become a segment
directly. Segment sealing is logged to the same stream.

    python -m tests.store.crash_writer COLLECTION SEED
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from m3search import Collection
from tests.store.conftest import make_docs

POOL = 150  # ids are drawn from d0..d149, so upserts also replace and deletes hit


def doc_version(doc_id: str, version: int) -> dict:
    """The document `doc_id` as written in `version`: its vectors are a function of (id, version)."""
    number = int(doc_id[1:])
    doc = make_docs(1, seed=version * 1000 + number, start=number)[0]
    doc["metadata"] = {"version": version}
    return doc


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="LOG %(message)s")
    logging.getLogger().handlers[0].flush = sys.stdout.flush  # type: ignore[method-assign]
    rng = np.random.default_rng(seed)
    collection = Collection.open(path, cache=False)
    version = seed * 1_000_000
    while True:
        version += 1
        # one write in five is large: at least the crash test's flush_docs (25), a segment written directly
        size = int(rng.integers(40, 80)) if rng.random() < 0.2 else int(rng.integers(1, 25))
        ids = sorted({f"d{i}" for i in rng.integers(0, POOL, size)})
        if rng.random() < 0.25:
            print(f"BEGIN D {version} {','.join(ids)}", flush=True)
            collection.delete(ids)
        else:
            print(f"BEGIN U {version} {','.join(ids)}", flush=True)
            collection.upsert([doc_version(i, version) for i in ids])
        print(f"ACK {version}", flush=True)


if __name__ == "__main__":
    main()
