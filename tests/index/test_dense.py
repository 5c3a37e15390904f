"""Dense index: HNSW (float32 and 8-bit codes) against exact search on clustered vectors, filters during the
search."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from m3search.index import graph_walk
from m3search.index.dense import (
    BACKGROUND_RANGE_MARGIN,
    BackgroundGraph,
    ByteCodes,
    DenseIndex,
    HNSWParams,
    build_ann,
    use_huge_pages,
    walk_order,
)
from m3search.index.graph_walk import ByteGraphWalk
from m3search.index.topk import top_k
from tests.conftest import linked_some

DIM = 32


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((20, DIM))
    x = centers[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def of_many_lengths(vectors: np.ndarray, seed: int) -> np.ndarray:
    """`vectors` scaled to lengths between 0.5 and 2: inner products no longer rank as distances do."""
    return vectors * np.random.default_rng(seed).uniform(0.5, 2, (len(vectors), 1)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 0), clustered(30, 1)


@pytest.mark.parametrize("unit", [True, False], ids=["unit", "lengths"])
@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_hnsw_recall_against_exact(data, kind, unit):
    """Unit rows get a graph over byte codes, rows of other lengths one over `QT_8bit_uniform` codes: both
    find the rows of highest inner product."""
    vectors, queries = data
    if not unit:
        vectors, queries = of_many_lengths(vectors, 7), of_many_lengths(queries, 8)
    params = HNSWParams(min_rows=100)
    index = DenseIndex(vectors, build_ann(vectors, kind, params), params)
    assert index.ann is not None
    exact = DenseIndex(vectors)
    hits = 0
    for q in queries:
        rows, scores = index.search(q, 10)
        truth, _ = exact.search(q, 10)
        hits += len(set(rows) & set(truth))
        np.testing.assert_allclose(scores, vectors[rows] @ q, atol=1e-5 if kind == "hnsw" else 1e-6)
        assert np.all(np.diff(scores) <= 1e-6)
    assert hits / (10 * len(queries)) >= 0.95


def test_a_deep_sq8_search_orders_its_best_rows_exactly_and_fetches_fewer(data, monkeypatch):
    """A hybrid first stage asks for its depth with `exact_top` = the query's k: the SQ8 graph fetches depth +
    (refine - 1) · k rows by the codes instead of depth · refine, re-ranked by the float vectors; the list is
    still the depth's best by exact score, best first, and its top k at least as good as a k-deep search's (the
    same graph walk, more of its list re-ranked)."""
    vectors, queries = data
    params = HNSWParams(min_rows=100, refine=3)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw-sq8", params), params)
    fetched = []  # how many rows each walk fetches, faiss's or the compiled one
    search, walk = type(index.ann).search, ByteGraphWalk.search
    monkeypatch.setattr(
        type(index.ann), "search", lambda self, x, n, **kw: fetched.append(n) or search(self, x, n, **kw)
    )
    monkeypatch.setattr(
        ByteGraphWalk,
        "search",
        lambda self, x, scale, n, *a: fetched.append(n) or walk(self, x, scale, n, *a),
    )
    for q in queries[:10]:
        rows, scores = index.search(q, 100, exact_top=10)
        assert fetched[-1] == 100 + 2 * 10 and len(rows) == 100
        np.testing.assert_allclose(scores, vectors[rows] @ q, atol=1e-6)
        assert np.all(np.diff(scores) <= 1e-6)
        _, top = index.search(q, 10)
        assert fetched[-1] == 30
        assert np.all(scores[:10] >= top - 1e-6)


def test_small_sets_get_no_graph(data):
    assert build_ann(data[0][:50], "hnsw", HNSWParams(min_rows=100)) is None
    assert build_ann(data[0], "flat", HNSWParams(min_rows=1)) is None


@pytest.mark.parametrize("fraction", [0.5, 0.05, 0.001])
def test_filtered_search_returns_the_exact_allowed_top_k(data, fraction):
    vectors, queries = data
    params = HNSWParams(min_rows=100, exact_max_rows=20, exact_max_fraction=0.002)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw", params), params)
    rng = np.random.default_rng(2)
    allowed = rng.random(len(vectors)) < fraction
    allowed[:2] = True
    found = 0
    for q in queries:
        rows, _ = index.search(q, 10, allowed)
        assert allowed[rows].all() and len(rows) == min(10, allowed.sum())
        truth, _ = top_k(vectors @ q, 10, allowed)
        found += len(set(rows) & set(truth)) / len(truth)
    assert found / len(queries) >= 0.95


@pytest.mark.parametrize("unit", [True, False], ids=["unit", "lengths"])
@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_the_graph_built_over_8bit_codes_is_searched_over_the_kinds_storage(tmp_path, data, kind, unit):
    """The graph is linked over 8-bit codes with one range (a cheaper build): byte codes compared by squared
    distance for unit rows, `QT_8bit_uniform` codes by inner product otherwise; `hnsw-sq8` walks those same
    codes, `hnsw` moves the graph onto float32 vectors: one code per row, which a saved and loaded index keeps
    (with the byte codes' range)."""
    vectors, queries = data
    if not unit:
        vectors, queries = of_many_lengths(vectors, 7), of_many_lengths(queries, 8)
    params = HNSWParams(min_rows=100)
    ann = build_ann(vectors, kind, params)
    storage = faiss.downcast_index(ann.storage)
    assert ann.ntotal == storage.ntotal == len(vectors)
    assert storage.sa_code_size() == (4 * DIM if kind == "hnsw" else DIM)
    codes = ByteCodes.of(ann)
    if kind == "hnsw":
        assert codes is None and ann.metric_type == faiss.METRIC_INNER_PRODUCT
    elif unit:
        assert storage.sq.qtype == faiss.ScalarQuantizer.QT_8bit_direct and ann.metric_type == faiss.METRIC_L2
        assert codes is not None and codes.top == np.abs(vectors).max()
    else:
        assert storage.sq.qtype == faiss.ScalarQuantizer.QT_8bit_uniform and codes is None
    assert ann.hnsw.levels.size() == len(vectors) and ann.hnsw.efConstruction == params.ef_construction
    faiss.write_index(ann, str(tmp_path / "graph.faiss"))
    loaded = faiss.read_index(str(tmp_path / "graph.faiss"))
    assert faiss.downcast_index(loaded.storage).sa_code_size() == storage.sa_code_size()
    assert ByteCodes.of(loaded) == codes
    walked = queries if codes is None else codes.encode(queries)
    assert np.array_equal(loaded.search(walked, 10)[1], ann.search(walked, 10)[1])


def test_byte_codes_span_the_rows_and_clamp_what_lies_beyond():
    """A value's code is its place in [-top, top] on 0..255, the same for every dimension; values beyond the
    range (a query, rows arriving after a background graph's range was set) take the nearest end. Rows that are
    not all unit vectors get no byte codes."""
    rows = np.array([[0.6, -0.8, 0.0], [0.0, 0.0, 1.0]], np.float32)
    codes = ByteCodes.fit(rows)
    assert codes == ByteCodes(1.0)
    assert codes.encode(np.array([-1.0, 0.0, 1.0, 2.0, -3.0, 0.6])).tolist() == [0, 128, 255, 255, 0, 204]
    assert ByteCodes.fit(rows, margin=0.25) == ByteCodes(1.25)
    assert ByteCodes.fit(rows * 1.01) is None and ByteCodes.fit(rows[:0]) is None
    assert ByteCodes.fit(rows * (1 + 0.5 * ByteCodes.UNIT_TOLERANCE)) is not None


@pytest.mark.parametrize("top", [0.0731, 0.25, 1.0])
def test_a_query_coded_to_bytes_in_one_pass_gets_the_bytes_numpy_codes(top: float) -> None:
    """The compiled walk's query bytes (`graph_walk.encode_bytes` with `ByteCodes.scale`) are `encode`'s values, also on the halves that round
    to even and beyond the range: a byte off would walk the graph from another point than faiss's search."""
    codes = ByteCodes(float(np.float32(top)))
    rng = np.random.default_rng(7)
    scale = codes.scale
    for _ in range(50):
        x = (rng.standard_normal(1024) * top * rng.uniform(0.2, 1.6)).astype(np.float32)  # some beyond top
        halves = rng.integers(0, 255, 128) + np.float32(0.5)  # values whose code is a half before rounding
        x[:128] = (halves - np.float32(127.5)) / scale
        before_rounding = x[:128] * scale + np.float32(127.5)
        assert (before_rounding - np.floor(before_rounding) == 0.5).mean() > 0.9
        out = np.empty(len(x), np.uint8)
        graph_walk.encode_bytes(x, scale, out)
        np.testing.assert_array_equal(out, codes.encode(x).astype(np.uint8))


@pytest.mark.parametrize("qtype", ["QT_8bit_uniform", "QT_8bit"])
def test_graphs_written_before_byte_codes_still_search(data, qtype):
    """Segments written before 2026-12-04 keep their graph over inner-product codes, with one range
    (`QT_8bit_uniform`) or per-dimension ranges (SQ8, before 2026-12-03 late): the index walks them with the
    float query, as before, candidates re-ranked exactly."""
    vectors, queries = data
    params = HNSWParams(min_rows=100)
    old = faiss.IndexHNSWSQ(DIM, getattr(faiss.ScalarQuantizer, qtype), params.m, faiss.METRIC_INNER_PRODUCT)
    old.train(vectors)
    old.add(vectors)
    assert ByteCodes.of(old) is None
    index, exact = DenseIndex(vectors, old, params), DenseIndex(vectors)
    found = 0
    for q in queries:
        rows, scores = index.search(q, 10)
        assert np.array_equal(scores, exact.score_rows(q, rows))  # re-ranked exactly
        found += len(set(rows) & set(exact.search(q, 10)[0]))
    assert found / (10 * len(queries)) >= 0.95


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_a_graph_linked_in_the_background_is_finished_by_the_build(data, kind):
    """Parts offered to a background graph are linked in order beside the caller; the build links the rows it
    did not reach and codes all rows from their whole range, as a new graph's codes are."""
    vectors = data[0]
    params = HNSWParams(min_rows=100)
    threads = faiss.omp_get_max_threads()
    background = BackgroundGraph(params)
    for i, start in enumerate(range(0, len(vectors), 1000)):
        background.offer(f"part{i}", vectors[start : start + 1000])
    assert background.take(["part0", "part1"]) is None  # not the parts offered: nothing to build on
    assert background.keys == [] and faiss.omp_get_max_threads() == threads  # the caller's threads kept
    for i, start in enumerate(range(0, len(vectors), 1000)):
        background.offer(f"part{i}", vectors[start : start + 1000])
    linked_some(background, 1000)  # the thread starts when it is scheduled: a take before then finds nothing
    graph = background.take(["part0", "part1", "part2"])
    assert graph is not None and 1000 <= graph.ntotal <= len(vectors)
    margin = 1 + BACKGROUND_RANGE_MARGIN  # its range: the first part's, widened
    assert ByteCodes.of(graph) == ByteCodes(float(np.float32(float(np.abs(vectors[:1000]).max()) * margin)))
    ann = build_ann(vectors, kind, params, graph)
    assert ann.ntotal == ann.hnsw.levels.size() == len(vectors)
    if kind == "hnsw-sq8":
        new = build_ann(vectors, kind, params)  # kept: its storage lives as long as it does
        fresh = faiss.downcast_index(new.storage)
        codes = faiss.downcast_index(ann.storage)
        assert ByteCodes.of(new) is not None and ByteCodes.of(ann) == ByteCodes.of(new)
        np.testing.assert_array_equal(faiss.vector_to_array(codes.codes), faiss.vector_to_array(fresh.codes))
    exact, queries = DenseIndex(vectors), clustered(300, 2)
    finished, at_once = DenseIndex(vectors, ann, params), DenseIndex.build(vectors, kind, params)
    found, found_at_once = (
        np.mean([len(set(index.search(q, 10)[0]) & set(exact.search(q, 10)[0])) / 10 for q in queries])
        for index in (finished, at_once)
    )
    # finds what a graph linked at once finds (on these near-isotropic rows recall@10 moves by +-0.02 from one
    # build to the next of either)
    assert found >= found_at_once - 0.03 and found >= 0.93


def test_a_background_graph_over_byte_codes_is_dropped_for_rows_not_of_unit_length(data):
    """Byte codes rank unit vectors only: a part of other lengths after unit ones stops the background graph
    (the merge builds its own), and a graph over byte codes offered to the build of rows that are not all unit
    vectors is not built on; the build links a graph over `QT_8bit_uniform` codes that finds the rows of highest
    inner product."""
    vectors, queries = data
    params = HNSWParams(min_rows=100)
    mixed = np.concatenate([vectors[:1000], of_many_lengths(vectors[1000:2000], 9)])
    background = BackgroundGraph(params)
    background.offer("unit", vectors[:1000])
    background.offer("lengths", mixed[1000:])
    background._queue.put(None)  # let it finish what it has before stopping it
    background._thread.join()
    assert background.linked == 1000 and background.take(["unit", "lengths"]) is None
    background.offer("unit", vectors[:1000])
    linked_some(background, 1000)
    graph = background.take(["unit"])
    assert ByteCodes.of(graph) is not None
    ann = build_ann(mixed, "hnsw-sq8", params, graph)
    assert ann is not graph and ByteCodes.of(ann) is None and ann.ntotal == len(mixed)
    index, exact = DenseIndex(mixed, ann, params), DenseIndex(mixed)
    found = sum(len(set(index.search(q, 10)[0]) & set(exact.search(q, 10)[0])) for q in queries)
    assert found / (10 * len(queries)) >= 0.95


def test_a_background_graph_reaches_every_row_it_is_given_time_for(data):
    vectors, _ = data
    background = BackgroundGraph(HNSWParams(min_rows=100))
    background.offer("all", vectors)
    background._queue.put(None)  # let it finish what it has before stopping it
    background._thread.join()
    assert background.linked == len(vectors)
    assert background.take(["all"]).ntotal == len(vectors)


def test_save_and_load(tmp_path, data):
    vectors = data[0]
    params = HNSWParams(min_rows=100)
    index = DenseIndex(vectors, build_ann(vectors, "hnsw-sq8", params), params)
    index.save(tmp_path)
    loaded = DenseIndex.load(tmp_path, params)
    assert isinstance(loaded.vectors, np.memmap)
    q = data[1][0]
    assert loaded.search(q, 5)[0].tolist() == index.search(q, 5)[0].tolist()


_TEAM_PROBE = textwrap.dedent(
    """
    import os, faiss, numpy as np
    from m3search.index.dense import DenseIndex
    def threads():
        return len(os.listdir("/proc/self/task"))
    faiss.omp_set_num_threads(2)
    index, q, rows = DenseIndex(np.eye(64, dtype=np.float32)), np.ones(64, np.float32), np.arange(30)
    before = threads()
    for _ in range(20):
        index.score_rows(q, rows)
    after, setting = threads(), faiss.omp_get_max_threads()
    out = np.empty(30, np.float32)
    ptr = faiss.swig_ptr
    faiss.fvec_inner_products_by_idx(ptr(out), ptr(q), ptr(index._base), ptr(rows), 64, 1, 30)
    print(before, after, setting, threads())
    """
)


def test_re_scoring_a_few_rows_wakes_no_thread_team():
    """faiss's row-by-row kernel runs in an OpenMP team even for one query; re-scoring limits the team to the
    calling thread (a team waiting at its barrier for a busy core made a search take ms), leaving the thread's
    setting as it was: a fresh process that re-scores starts no thread, where one call of the bare kernel
    starts the team (the control)."""
    probe = subprocess.run([sys.executable, "-c", _TEAM_PROBE], capture_output=True, text=True, check=True)
    before, after, setting, bare = map(int, probe.stdout.split())
    assert after == before and setting == 2
    assert bare > before  # the probe sees a team when one starts


def test_a_row_scores_the_same_bits_whichever_rows_it_is_scored_with(tmp_path, data):
    """Every exact dense score comes from one kernel: a whole scan, a filtered scan and a re-score of a few
    candidates give a row bit-identical scores (a BLAS product's rounding depends on its batch), memory-mapped
    too; a row number past the end is an error, not a read beyond the vectors."""
    vectors, queries = data
    DenseIndex(vectors).save(tmp_path)
    index = DenseIndex.load(tmp_path)
    rng = np.random.default_rng(3)
    for q in queries[:5]:
        whole = index.score_rows(q)
        np.testing.assert_allclose(whole, vectors.astype(np.float64) @ q.astype(np.float64), atol=1e-6)
        rows = rng.choice(len(vectors), 37, replace=False)
        assert np.array_equal(index.score_rows(q, rows), whole[rows])
        assert np.array_equal(index.score_rows(q, rows[:1]), whole[rows[:1]])
        allowed = np.zeros(len(vectors), bool)
        allowed[rows] = True
        found, scores = index.search(q, 10, allowed)
        assert np.array_equal(scores, whole[found])
    params = HNSWParams(min_rows=100)
    walked = DenseIndex.build(vectors, "hnsw-sq8", params)  # a graph's candidates, re-scored where they lie
    for q in queries[:5]:
        found, scores = walked.search(q, 10)
        assert np.array_equal(scores, index.score_rows(q)[found]) and np.all(np.diff(scores) <= 0)
    for outside in (len(vectors), -1):
        with pytest.raises(IndexError):
            index.score_rows(queries[0], np.array([outside]))


def link_spread(ann) -> float:
    """Mean distance in storage positions between a node and its base-layer neighbours."""
    width = int(faiss.vector_to_array(ann.hnsw.cum_nneighbor_per_level)[1])
    starts = faiss.vector_to_array(ann.hnsw.offsets)[: ann.ntotal].astype(np.int64)
    links = faiss.vector_to_array(ann.hnsw.neighbors)[starts[:, None] + np.arange(width)]
    node, slot = np.nonzero(links >= 0)
    return float(np.mean(np.abs(node - links[node, slot])))


@pytest.mark.parametrize("kind", ["hnsw", "hnsw-sq8"])
def test_nodes_stored_in_walk_order_answer_like_the_graph_they_were_built_as(tmp_path, kind):
    """`DenseIndex.build` stores the graph's nodes in the order a walk from the entry point meets them: the
    same graph under other numbers, so every search (filtered ones too, whose bitmap is in node numbers) returns
    the same rows and scores as the graph in row order, before and after a save and load; linked nodes lie
    closer together in storage, which is the point."""
    rng = np.random.default_rng(4)
    vectors = clustered(3000, 0)[rng.permutation(3000)]  # rows in no particular order, as documents arrive
    queries = clustered(30, 1)
    params = HNSWParams(min_rows=100, exact_max_rows=20, exact_max_fraction=0.002)
    ann = build_ann(vectors, kind, params)
    order = walk_order(ann)
    assert sorted(order.tolist()) == list(range(len(vectors))) and order[0] == ann.hnsw.entry_point
    walked = faiss.clone_index(ann)
    walked.permute_entries(order)
    assert link_spread(walked) < 0.75 * link_spread(ann)
    DenseIndex(vectors, walked, params, order).save(tmp_path)
    as_built, loaded = DenseIndex(vectors, ann, params), DenseIndex.load(tmp_path, params)
    assert np.array_equal(loaded.order, order)
    allowed = rng.random(len(vectors)) < 0.3
    for q in queries:
        for index in (loaded, DenseIndex(vectors, walked, params, order)):
            for mask in (None, allowed):
                rows, scores = index.search(q, 10, mask)
                want_rows, want_scores = as_built.search(q, 10, mask)
                assert np.array_equal(rows, want_rows) and np.array_equal(scores, want_scores)
                assert mask is None or mask[rows].all()
    shuffled = faiss.clone_index(ann)  # a graph swapped into an index with its own order (as benchmarks do)
    other = rng.permutation(len(vectors)).astype(np.int64)
    shuffled.permute_entries(other)
    loaded.ann, loaded.order = shuffled, other
    for q in queries[:5]:
        rows, scores = loaded.search(q, 10, allowed)
        want_rows, want_scores = as_built.search(q, 10, allowed)
        assert np.array_equal(rows, want_rows) and np.array_equal(scores, want_scores)
    built = DenseIndex.build(vectors, kind, params)
    assert built.order is not None and sorted(built.order.tolist()) == list(range(len(vectors)))
    assert DenseIndex.build(vectors[:50], kind, params).order is None  # no graph, nothing to order


def test_the_graph_goes_on_huge_pages_where_the_system_allows_them():
    """`use_huge_pages` reports the bytes of the graph's codes and links it had backed by 2 MiB pages now; the
    kernel's own accounting (`/proc/self/smaps`) agrees, and searches answer as before. Where transparent huge
    pages are off it does nothing."""
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((6000, 1024)).astype(np.float32)  # 6 MB of SQ8 codes: whole 2 MiB pages
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = HNSWParams(min_rows=100)
    ann = build_ann(vectors, "hnsw-sq8", params)
    index = DenseIndex(vectors, ann, params)
    before = [index.search(q, 10) for q in vectors[:20]]
    collapsed = use_huge_pages(ann)
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    if "[never]" in mode:
        assert collapsed == 0
    else:
        assert collapsed >= 2 << 20
        codes = int(faiss.downcast_index(ann.storage).codes.data())
        first_page = -(-codes // (2 << 20)) * (2 << 20)  # the advice covers whole 2 MiB pages from here
        assert huge_kib_around(first_page) * 1024 >= min(collapsed, 4 << 20)
    after = [index.search(q, 10) for q in vectors[:20]]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(before, after))


def huge_kib_around(address: int) -> int:
    """AnonHugePages (KiB) of the mapping holding `address`, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0
