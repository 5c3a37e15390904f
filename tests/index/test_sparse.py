"""Sparse inverted index: exact lexical scores (the reference `lexical_score`), exact masked top-k with and
without MaxScore pruning."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from m3search.index import sparse as sparse_module
from m3search.index import sparse_kernels as kernels
from m3search.index.sparse import SparseIndex
from m3search.scoring import lexical_score


def random_rows(n: int, seed: int, vocab: int = 300, zipf: bool = False) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    p = None
    if zipf:
        p = 1 / np.arange(1, vocab + 1)
        p /= p.sum()
    out = []
    for _ in range(n):
        tokens = np.unique(rng.choice(vocab, int(rng.integers(1, 15)), p=p))
        out.append({int(t): float(rng.uniform(0.01, 1)) for t in tokens})
    return out


def as_row(d: dict[int, float]):
    return np.array(list(d), np.int64), np.array(list(d.values()), np.float32)


def brute(query, docs, k, allowed=None):
    ids = [i for i in range(len(docs)) if set(query) & set(docs[i]) and (allowed is None or allowed[i])]
    return sorted(ids, key=lambda i: (-lexical_score(query, docs[i]), i))[:k]


def test_scores_equal_the_reference_and_survive_save_load(tmp_path):
    docs = random_rows(400, 0)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    index.save(tmp_path)
    loaded = SparseIndex.load(tmp_path, len(docs))
    rows = np.arange(len(docs))
    for query in random_rows(20, 1):
        expected = np.array([lexical_score(query, d) for d in docs])
        np.testing.assert_allclose(loaded.score_rows(as_row(query), rows), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prune_at", [10**9, 0])  # never prune / check before every list
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("forward_per_run", [0, 10**9])  # lookups always probe / always use the forward index
@pytest.mark.parametrize(
    "sample", [0, 10**9]
)  # prune checks bound by every row met / by the short lists first
def test_top_k_is_exact(monkeypatch, prune_at, masked, forward_per_run, sample):
    monkeypatch.setattr(sparse_module, "PRUNE_CHECK_LENGTH", prune_at)
    monkeypatch.setattr(sparse_module, "FORWARD_POSTINGS_PER_RUN", forward_per_run)
    monkeypatch.setattr(sparse_module, "SAMPLE_POSTINGS", sample)
    docs = random_rows(2000, 2, vocab=500, zipf=True)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    allowed = (np.arange(len(docs)) % 3 == 0) if masked else None
    for query in random_rows(30, 3, vocab=500, zipf=True):
        rows, scores = index.search(as_row(query), 10, allowed)
        expected = brute(query, docs, 10, allowed)
        assert len(rows) == len(expected)
        np.testing.assert_allclose(scores, [lexical_score(query, docs[i]) for i in expected], rtol=1e-5)
        np.testing.assert_allclose(scores, [lexical_score(query, docs[i]) for i in rows], rtol=1e-5)
    assert not sparse_module._zeros(len(docs)).any()  # the scratch scores are left zero


def test_the_query_path_compiled_ahead_serves_loaded_segments_without_compiling_again(tmp_path):
    """`compile_query_path` (run at install and at server start) compiles the very signatures a memory-mapped
    segment's search and lookup use, with and without a filter: the first real query compiles nothing."""
    sparse_module.compile_query_path()
    compiled = {
        name: len(kernel.signatures)
        for name, kernel in (("search", kernels.search), ("score_rows", kernels.score_rows))
    }
    docs = random_rows(100, 14)
    SparseIndex.from_rows([as_row(d) for d in docs]).save(tmp_path)
    loaded = SparseIndex.load(tmp_path, len(docs))
    query = as_row(docs[0])
    loaded.search(query, 5)
    loaded.search(query, 5, np.arange(len(docs)) % 2 == 0)
    loaded.score_rows(query, np.arange(10))
    assert {
        name: len(kernel.signatures)
        for name, kernel in (("search", kernels.search), ("score_rows", kernels.score_rows))
    } == compiled


def test_searches_in_threads_at_once_agree_with_one_at_a_time():
    """The compiled search releases the GIL and each thread adds into its own scratch scores: concurrent
    searches return exactly what the same searches return one after another."""
    docs = random_rows(3000, 12, vocab=400, zipf=True)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    queries = [as_row(q) for q in random_rows(200, 13, vocab=400, zipf=True)]
    alone = [index.search(q, 10) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: index.search(q, 10), queries))
    for (rows, scores), (want_rows, want_scores) in zip(together, alone):
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(scores, want_scores)


def test_the_short_lists_bound_the_kth_best_score_from_below():
    """The prune check's cheap bound: the best k-th best partial score among the allowed rows of any one list
    read so far never exceeds the k-th best over every allowed row (so pruning by it stays exact), and is -inf
    when no list has k allowed rows."""
    rng = np.random.default_rng(7)
    n = 5000
    coo = random_coo(n, 11, vocab=60, per_row=3)
    index = SparseIndex.from_coo(n, *coo)
    term_rows = {int(t): coo[0][coo[1] == t] for t in index.terms}
    scores = rng.random(n).astype(np.float32)
    no_mask = np.empty(0, bool)
    for trial in range(50):
        chosen = rng.choice(len(index.terms), int(rng.integers(0, 4)), replace=False)
        allowed = rng.random(n) < 0.5 if trial % 2 else None
        k = int(rng.integers(1, 200))
        firsts, ends = index.term_runs[chosen], index.term_runs[chosen + 1]
        bound = kernels.sample_bound(
            index._index, scores, firsts, ends, no_mask if allowed is None else allowed, k
        )
        kept = [term_rows[int(index.terms[j])] for j in chosen]
        kept = [rows if allowed is None else rows[allowed[rows]] for rows in kept]
        kths = [np.sort(scores[rows])[::-1][k - 1] for rows in kept if len(rows) >= k]
        if not kths:
            assert bound == -np.inf
            continue
        everywhere = np.sort(scores if allowed is None else scores[allowed])[::-1]
        assert bound == max(kths) and bound <= everywhere[k - 1]


def test_unknown_tokens_match_nothing():
    index = SparseIndex.from_rows([as_row(d) for d in random_rows(50, 4)])
    assert index.search(as_row({10_000: 1.0}), 5)[0].size == 0


def test_coo_round_trip():
    docs = random_rows(50, 4)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    again = SparseIndex.from_coo(50, *index.to_coo())
    for name in sparse_module.FILES | sparse_module.FORWARD_FILES:
        np.testing.assert_array_equal(getattr(index, name), getattr(again, name))


@pytest.mark.parametrize("shift", [0, 2**62])  # ids near int64's limit take the two-key sort
def test_triples_in_any_order_build_the_same_index(shift):
    docs = random_rows(400, 6, vocab=500, zipf=True)
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    rows, terms, weights = index.to_coo()
    mixed = np.random.default_rng(0).permutation(len(rows))
    again = SparseIndex.from_coo(len(docs), rows[mixed], terms[mixed] + shift, weights[mixed])
    for name in sparse_module.FILES | sparse_module.FORWARD_FILES:
        expected = getattr(index, name) + (shift if name == "terms" else 0)
        np.testing.assert_array_equal(getattr(again, name), expected)


@pytest.mark.parametrize("bound", [7, 2**16, 2**16 + 1, 2**40])
def test_the_radix_order_is_numpys_stable_order(bound):
    values = np.random.default_rng(1).integers(0, bound, 20_000)
    np.testing.assert_array_equal(
        sparse_module._stable_order(values, bound), np.argsort(values, kind="stable")
    )


def test_the_forward_index_lists_each_rows_postings_by_term():
    docs = random_rows(300, 5, vocab=400, zipf=True) + [{}]  # a row with no terms too
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    assert index.fwd_postings.dtype == np.uint32
    term_start = index.run_start[index.term_runs[:-1]]  # each term's first position
    for i, doc in enumerate(docs):
        positions = index.fwd_postings[index.fwd_start[i] : index.fwd_start[i + 1]]
        terms = index.terms[np.searchsorted(term_start, positions, "right") - 1]
        assert terms.tolist() == sorted(doc)
        np.testing.assert_array_equal(index.weights[positions], np.array([doc[t] for t in terms], np.float32))


@pytest.mark.parametrize("masked", [False, True])
def test_forward_lookups_equal_probes_to_the_bit(monkeypatch, tmp_path, masked):
    """A segment written before the forward index (its files absent) opens, probes instead, and gives the very
    same scores and top-k, pruned (`PRUNE_CHECK_LENGTH` 0: every long list looked up) and not."""
    monkeypatch.setattr(sparse_module, "PRUNE_CHECK_LENGTH", 0)
    n = 65_536 + 3_000  # two blocks
    coo = random_coo(n, 9, per_row=10)
    SparseIndex.from_coo(n, *coo).save(tmp_path)
    forward = SparseIndex.load(tmp_path, n)
    for file in sparse_module.FORWARD_FILES.values():
        (tmp_path / file).unlink()
    probing = SparseIndex.load(tmp_path, n)
    assert forward.fwd_start is not None and probing.fwd_start is None
    rng = np.random.default_rng(10)
    allowed = rng.random(n) < 0.5 if masked else None
    rows = rng.choice(n, 700, replace=False)
    for seed in range(10):
        terms = np.unique(random_coo(1, 200 + seed, per_row=12)[1])
        query = (terms.astype(np.int64), rng.uniform(0.05, 1, len(terms)).astype(np.float32))
        np.testing.assert_array_equal(forward.score_rows(query, rows), probing.score_rows(query, rows))
        for got, want in zip(forward.search(query, 25, allowed), probing.search(query, 25, allowed)):
            np.testing.assert_array_equal(got, want)


def random_coo(n_rows: int, seed: int, vocab: int = 2000, per_row: int = 6):
    """(rows, terms, weights) with unique (row, term) pairs over a Zipf vocabulary, as numpy arrays."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, vocab + 1)
    terms = rng.choice(vocab, (n_rows, per_row), p=p / p.sum())
    rows = np.repeat(np.arange(n_rows), per_row)
    pairs = np.unique(np.stack([rows, terms.ravel()], 1), axis=0)
    weights = rng.uniform(0.01, 1, len(pairs)).astype(np.float32)
    return pairs[:, 0], pairs[:, 1], weights


def exact_scores(n_rows: int, coo, query) -> np.ndarray:
    """Scores by a plain scipy product: the old (int32 row id) layout's arithmetic, independent of the index."""
    rows, terms, weights = coo
    vocab = int(max(terms.max(), query[0].max())) + 1
    matrix = sp.csr_matrix((weights, (rows, terms)), shape=(n_rows, vocab))
    q = np.zeros(vocab, np.float32)
    q[query[0]] = query[1]
    return np.asarray(matrix @ q, np.float32)


@pytest.mark.parametrize("prune_at", [10**9, 0])
def test_postings_span_blocks_of_65536_rows_and_stay_exact(monkeypatch, prune_at, tmp_path):
    """Rows in three blocks (uint16 offsets + per-block runs): scores, top-k with and without pruning and a mask,
    merge triples and a saved copy all agree with the exact product."""
    monkeypatch.setattr(sparse_module, "PRUNE_CHECK_LENGTH", prune_at)
    n = 2 * 65_536 + 5_000
    coo = random_coo(n, 7)
    index = SparseIndex.from_coo(n, *coo)
    assert index.rows.dtype == np.uint16 and index.rows.nbytes + index.weights.nbytes == 6 * len(coo[0])
    assert set(np.asarray(index.run_block).tolist()) == {0, 1, 2}
    index.save(tmp_path)
    loaded = SparseIndex.load(tmp_path, n)
    assert isinstance(loaded.rows, np.memmap)
    back = loaded.to_coo()
    order = np.lexsort((back[0], back[1]))
    expected_order = np.lexsort((coo[0], coo[1]))
    for got, want in zip(back, coo):
        np.testing.assert_array_equal(got[order], want[expected_order])
    rng = np.random.default_rng(8)
    allowed = rng.random(n) < 0.3
    probe_rows = rng.choice(n, 500, replace=False)  # unsorted, across blocks
    for seed in range(12):
        terms = np.unique(random_coo(1, 100 + seed, per_row=8)[1])
        query = (terms.astype(np.int64), rng.uniform(0.1, 1, len(terms)).astype(np.float32))
        truth = exact_scores(n, coo, query)
        np.testing.assert_allclose(
            loaded.score_rows(query, probe_rows), truth[probe_rows], rtol=1e-5, atol=1e-6
        )
        for mask in (None, allowed):
            rows, scores = loaded.search(query, 10, mask)
            candidates = np.flatnonzero((truth > 0) & (mask if mask is not None else True))
            best = candidates[np.lexsort((candidates, -truth[candidates]))][:10]
            np.testing.assert_allclose(scores, truth[best], rtol=1e-5)
            np.testing.assert_allclose(truth[rows], truth[best], rtol=1e-5)  # same list up to exact ties
            assert mask is None or mask[rows].all()


@pytest.mark.parametrize("prune_at", [10**9, 0])
def test_a_shared_token_matches_even_when_its_product_underflows(monkeypatch, prune_at):
    """Rows sharing a token with the query are found even when `w_query * w_doc` rounds to 0 in float32 (no
    positive score marks them then): they rank after every positive score, lower row first."""
    monkeypatch.setattr(sparse_module, "PRUNE_CHECK_LENGTH", prune_at)
    tiny = 1e-30  # tiny * tiny underflows float32
    docs = [{1: 0.5}, {2: tiny}, {3: 0.25}, {4: 1.0}, {2: tiny, 3: 0.5}]
    index = SparseIndex.from_rows([as_row(d) for d in docs])
    query = as_row({2: tiny, 3: 1.0})
    assert np.float32(tiny) * np.float32(tiny) == 0
    rows, scores = index.search(query, 5)
    assert rows.tolist() == [4, 2, 1] and scores.tolist() == [0.5, 0.25, 0.0]
    assert index.search(query, 5, np.array([True, True, False, True, False]))[0].tolist() == [1]
