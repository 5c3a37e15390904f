"""kill -9 at random moments, mid-flush and mid-merge included: every acknowledged write survives, no write is
half applied, and the collection opens and searches correctly (local collections, and edge ones: Qdrant Edge's
write-ahead log)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from m3search import Collection
from tests.store.conftest import COLBERT_DIM, DIM
from tests.store.crash_writer import doc_version

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KILLS = 12
EDGE_KILLS = 2


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def run_and_kill(
    path, seed: int, rng: np.random.Generator, kill_after: str | None = None
) -> tuple[list[str], int]:
    """Start a writer, SIGKILL it (within 50 ms of its first log line starting with `kill_after`, else at a
    random moment); returns its output lines and how many writes it acknowledged."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), ROOT])}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", str(path), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(child.stdout, lines), daemon=True).start()
    out: list[str] = []
    acks = 0
    deadline = time.monotonic() + 60
    kill_at = None
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.005)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            out.append(line)
            acks += line.startswith("ACK")
            if kill_after and line.startswith(kill_after) and kill_at is None:
                kill_at = time.monotonic() + rng.uniform(0, 0.05)
            if not kill_after and acks == 1 and kill_at is None:
                kill_at = time.monotonic() + rng.uniform(0, 1.5)
        if kill_at is not None and time.monotonic() >= kill_at:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    while (line := lines.get()) is not None:  # whatever it printed before dying
        out.append(line)
    return out, acks


def replay(lines: list[str], state: dict[str, int]) -> tuple[dict[str, int], dict[str, int] | None]:
    """Apply acknowledged writes to `state` (id -> version); returns it and the state with the unacknowledged
    last write applied too (None when every announced write was acknowledged)."""
    pending = None
    for line in lines:
        if line.startswith("BEGIN"):
            _, op, version, ids = line.split(" ")
            pending = (op, int(version), ids.split(","))
        elif line.startswith("ACK"):
            op, version, ids = pending
            assert int(line.split()[1]) == version
            for i in ids:
                if op == "U":
                    state[i] = version
                else:
                    state.pop(i, None)
            pending = None
    if pending is None:
        return state, None
    op, version, ids = pending
    alt = dict(state)
    for i in ids:
        if op == "U":
            alt[i] = version
        else:
            alt.pop(i, None)
    return state, alt


def check_survivors(
    collection: Collection, lines: list[str], state: dict[str, int], attempt: int
) -> dict[str, int]:
    """After a kill: the collection holds exactly the acknowledged writes (and perhaps the one in flight, whole),
    with their vectors, and takes writes again; returns the state it holds."""
    state, alt = replay(lines, state)
    stored = {d.id: d.metadata["version"] for d in collection.get([f"d{i}" for i in range(150)]) if d}
    assert stored == state or (alt is not None and stored == alt), f"kill {attempt}: partial or lost write"
    assert collection.count() == len(stored)
    # the vectors are the acknowledged version's: each document is its own nearest neighbour
    for doc_id in sorted(stored)[:10]:
        doc = doc_version(doc_id, stored[doc_id])
        hit = collection.search({k: doc[k] for k in ("dense", "sparse", "colbert")}, k=1, mode="all")[0]
        assert (hit.id, hit.metadata["version"]) == (doc_id, stored[doc_id])
        assert hit.scores["dense"] == pytest.approx(float(np.dot(doc["dense"], doc["dense"])), abs=1e-4)
    collection.upsert([doc_version("d0", 0)])  # reopening writable cleans up after the crash
    collection.delete("d0")
    stored.pop("d0", None)
    return stored


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path):
    path = tmp_path / "crash"
    Collection.create(
        path,
        dim=DIM,
        colbert_dim=COLBERT_DIM,
        flush_docs=25,
        merge_factor=2,
        hnsw={"min_rows": 40},
        cache=False,
    ).close()
    rng = np.random.default_rng(0)
    state: dict[str, int] = {}
    mid_seal_kills = direct_kills = 0
    total_acks = 0
    for attempt in range(KILLS):
        # at random; while a segment is written (a flush or a merge); while a large batch becomes one
        kill_after = (None, "LOG writing segment", "LOG writing a batch")[attempt % 3]
        lines, acks = run_and_kill(path, attempt + 1, rng, kill_after)
        total_acks += acks
        began = [line for line in lines if line.startswith("LOG writing segment")]
        done = [line for line in lines if line.startswith("LOG registered")]
        mid_seal_kills += len(began) > len(done)
        last = {
            p: max((i for i, line in enumerate(lines) if line.startswith(p)), default=-1)
            for p in ("LOG writing a batch", "LOG registered", "ACK")
        }
        direct_kills += last["LOG writing a batch"] > max(last["LOG registered"], last["ACK"])
        with Collection.open(path, cache=False) as collection:
            state = check_survivors(collection, lines, state, attempt)
            segment_dirs = sorted(p.name for p in (path / "segments").iterdir())
            assert segment_dirs == sorted(s["name"] for s in collection.stats()["segments"])
    assert total_acks > 3 * KILLS
    assert mid_seal_kills >= 2, "no kill landed while a segment was being written"
    assert direct_kills >= 2, "no kill landed while a large batch was being written as a segment"


def test_acknowledged_writes_survive_sigkill_on_edge(tmp_path):
    """The same on an edge collection, briefly: a batch is one write-ahead-log entry, flushed before `upsert`
    or `delete` returns; segments are indexed from 20 rows, so kills also land in the engine's optimizers."""
    path = tmp_path / "crash"
    Collection.create(
        path, backend="edge", dim=DIM, colbert_dim=COLBERT_DIM, hnsw={"min_rows": 20}, cache=False
    ).close()
    rng = np.random.default_rng(1)
    state: dict[str, int] = {}
    total_acks = 0
    for attempt in range(EDGE_KILLS):
        lines, acks = run_and_kill(path, attempt + 1, rng)
        total_acks += acks
        with Collection.open(path, cache=False) as collection:
            state = check_survivors(collection, lines, state, attempt)
    assert total_acks > EDGE_KILLS
