"""Per-query thread limits (one BLAS / OpenMP thread inside the context, the previous settings after it), and
array loads that threads can share."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

import numpy as np
import pytest
import torch  # noqa: F401  (loads torch's OpenMP runtime, the one query encoding runs on)
from threadpoolctl import threadpool_info

from m3search import threads
from m3search.threads import (
    QUERY_THREADS_ENV,
    WARM_CHUNK,
    load_array,
    one_thread,
    prefetch_rows,
    query_threads,
    warm_files,
    warm_plan,
)


def _threads(user_api: str) -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == user_api}


@pytest.mark.parametrize("user_api", ["blas", "openmp"])
def test_one_thread_limits_then_restores(user_api):
    before = _threads(user_api)
    assert before, f"no {user_api} library loaded"
    with one_thread(user_api):
        assert set(_threads(user_api).values()) == {1}
    assert _threads(user_api) == before


def test_a_load_in_another_thread_waits_for_the_header_parse(tmp_path):
    """numpy parses `.npy` headers with `ast.literal_eval`; on CPython 3.11 a second thread's parse completing
    inside the first one's AST conversion made the first fail ("AST constructor recursion depth mismatch"), as a
    reader refreshing while the writer sealed a segment did in CI. A garbage collection inside the first parse
    hands over to a second loader here: it must wait, and both loads succeed."""
    path = tmp_path / "a.npy"
    np.save(path, np.arange(3))
    handed_over, other_done, errors = threading.Event(), threading.Event(), []

    def other() -> None:
        try:
            load_array(path)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)
        finally:
            other_done.set()

    def in_ast_parse() -> bool:
        frame = sys._getframe()
        while frame is not None:
            if frame.f_code.co_name == "parse" and frame.f_code.co_filename.endswith("ast.py"):
                return True
            frame = frame.f_back
        return False

    def during_collection(phase: str, info: dict) -> None:
        if phase == "start" and not handed_over.is_set() and in_ast_parse():
            handed_over.set()
            threading.Thread(target=other).start()
            assert not other_done.wait(0.5), "the second load ran inside the first one's header parse"

    threshold = gc.get_threshold()
    gc.callbacks.append(during_collection)
    gc.set_threshold(1)
    try:
        loaded = load_array(path)
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(during_collection)
    assert handed_over.is_set(), "no collection happened inside the header parse"
    assert other_done.wait(5) and not errors, errors
    assert loaded.tolist() == [0, 1, 2]


def test_query_threads_is_the_setting_else_two_where_the_process_has_two_cpus(monkeypatch):
    monkeypatch.setenv(QUERY_THREADS_ENV, "3")
    assert query_threads() == 3
    monkeypatch.delenv(QUERY_THREADS_ENV)
    for cpus, expected in (({0}, 1), ({0, 1}, 2), (set(range(8)), 2)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, cpus=cpus: cpus)
        assert query_threads() == expected


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_a_bad_query_thread_setting_is_named(monkeypatch, bad):
    monkeypatch.setenv(QUERY_THREADS_ENV, bad)
    with pytest.raises(ValueError, match=QUERY_THREADS_ENV):
        query_threads()


def test_prefetch_asks_for_exactly_the_rows_bytes_of_a_mapped_array(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", np.arange(60, dtype=np.float32).reshape(20, 3))
    mapped = load_array(tmp_path / "a.npy", mmap=True)
    asked = []
    monkeypatch.setattr(
        os, "posix_fadvise", lambda _fd, offset, length, advice: asked.append((offset, length, advice))
    )
    prefetch_rows(mapped, np.array([2, 7, 9]), np.array([5, 7, 10]))  # the empty range 7:7 asks nothing
    assert [a[2] for a in asked] == [os.POSIX_FADV_WILLNEED] * 2
    raw = (tmp_path / "a.npy").read_bytes()
    assert [raw[offset : offset + length] for offset, length, _ in asked] == [
        mapped[2:5].tobytes(),
        mapped[9:10].tobytes(),
    ]
    asked.clear()
    prefetch_rows(np.load(tmp_path / "a.npy"), np.array([0]), np.array([3]))  # in RAM
    prefetch_rows(mapped[4:], np.array([0]), np.array([3]))  # a view: its offsets are not the file's
    (tmp_path / "a.npy").unlink()  # merged away by a writer while a reader still maps it: the rows still read
    prefetch_rows(mapped, np.array([0]), np.array([3]))
    assert asked == [] and mapped[:3].tolist() == np.arange(9, dtype=np.float32).reshape(3, 3).tolist()


def test_warming_reads_the_smallest_files_first_within_the_budget(tmp_path):
    """Small hot structures before a large store; the file that crosses the budget is read up to it, the rest
    not at all; a file gone by then is skipped."""
    sizes = {"big": WARM_CHUNK + 100, "small": 10, "mid": 1000, "huge": 3 * WARM_CHUNK}
    paths = []
    for name, size in sizes.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(os.urandom(size))
    budget = 10 + 1000 + WARM_CHUNK
    assert [(p.name, n) for p, n in warm_plan(paths, budget)] == [
        ("small", 10),
        ("mid", 1000),
        ("big", WARM_CHUNK),
    ]
    assert warm_plan(paths, 0) == []
    warm = warm_files([*paths, tmp_path / "absent"], budget)
    warm.join(10)
    assert [(p.name, n) for p, n in warm.read] == [("small", 10), ("mid", 1000), ("big", WARM_CHUNK)]
    (tmp_path / "mid").unlink()
    everything = warm_files(
        paths, sum(sizes.values())
    )  # planned before the thread runs: "mid" is gone by then
    everything.join(10)
    assert everything.progress() == {
        "state": "done",
        "planned_bytes": sum(sizes.values()) - sizes["mid"],
        "read_bytes": sum(sizes.values()) - sizes["mid"],
    }
    assert [(p.name, n) for p, n in everything.read] == [
        ("small", 10),
        ("big", sizes["big"]),
        ("huge", sizes["huge"]),
    ]


def test_a_warm_up_behind_another_says_it_is_waiting(tmp_path):
    """One warm-up reads at a time: a second one reports `waiting`, with nothing planned yet, until the first
    is done, then reads its plan."""
    (tmp_path / "a").write_bytes(os.urandom(1000))
    with threads._WARM_LOCK:
        second = warm_files([tmp_path / "a"], 10_000)
        time.sleep(0.05)
        assert second.progress() == {"state": "waiting", "planned_bytes": None, "read_bytes": 0}
    second.join(10)
    assert second.progress() == {"state": "done", "planned_bytes": 1000, "read_bytes": 1000}


def _mapped_bytes(array: np.ndarray) -> int:
    """The resident bytes of the memory mapping holding `array` (its `Rss` in /proc/self/smaps)."""
    address, inside = array.ctypes.data, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "Rss:":
                return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the array")


@pytest.mark.parametrize("mapped", [True, False], ids=["mapped at load", "left to faults"])
def test_a_memory_mapped_load_maps_what_is_cached(tmp_path, monkeypatch, mapped):
    """A file just written is in the page cache: `load_array(mmap=True)` maps all of it into the process at once
    (`map_resident`), before any read; without it a page is mapped only when a read faults on it."""
    rows = np.arange(4096 * 1024, dtype=np.float32).reshape(4096, 1024)  # 16 MiB
    np.save(tmp_path / "rows.npy", rows)
    if not mapped:
        monkeypatch.setattr(threads, "map_resident", lambda array: 0)
    array = threads.load_array(tmp_path / "rows.npy", mmap=True)
    if mapped:
        assert _mapped_bytes(array) >= array.nbytes
    else:
        assert _mapped_bytes(array) < array.nbytes // 4
    np.testing.assert_array_equal(array, rows)


def test_map_resident_leaves_what_is_not_cached_and_arrays_in_ram_alone(tmp_path):
    assert threads.map_resident(np.zeros(0, np.float32)) == 0
    assert threads.map_resident(np.ones((256, 1024), np.float32)) == 0  # in RAM: nothing to map
    np.save(tmp_path / "rows.npy", np.ones((1024, 1024), np.float32))
    with open(tmp_path / "rows.npy", "rb") as f:  # written out, then dropped from the page cache
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    array = threads.load_array(tmp_path / "rows.npy", mmap=True)
    assert threads.map_resident(array) < array.nbytes // 2
