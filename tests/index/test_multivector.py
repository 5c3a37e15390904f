"""ColBERT token store: MaxSim equals the reference `colbert_score`; float16 and int8 on disk."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.index import multivector
from m3search.index.multivector import MultiVectorStore, MultiVectorWriter, StoredRows, quantize_int8
from m3search.scoring import colbert_score
from m3search.threads import QUERY_THREADS_ENV


def unit_rows(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("int8", 2e-2)])
def test_written_store_scores_like_the_reference(tmp_path, dtype, tol):
    rng = np.random.default_rng(0)
    docs = [unit_rows(rng, int(rng.integers(1, 20)), 24) for _ in range(30)]
    docs[5] = None  # a document without token vectors
    writer = MultiVectorWriter(tmp_path, 24, dtype, sum(len(d) for d in docs if d is not None), len(docs))
    for d in docs:
        writer.append(d)
    writer.finish()
    store = MultiVectorStore.load(tmp_path)
    assert store.dtype == dtype and isinstance(store.tokens, np.memmap)
    query = unit_rows(rng, 7, 24)
    rows = np.array([9, 0, 5, 29, 3])
    expected = [colbert_score(query, docs[r]) if docs[r] is not None else 0.0 for r in rows]
    np.testing.assert_allclose(store.maxsim(query, rows), expected, atol=tol)
    np.testing.assert_allclose(store.row(3), docs[3], atol=tol)


def test_int8_quantization_error_is_small():
    rng = np.random.default_rng(1)
    x = unit_rows(rng, 100, 64)
    codes, scales = quantize_int8(x)
    assert codes.dtype == np.int8
    assert np.abs(codes * scales[:, None] - x).max() <= scales.max() / 2 + 1e-7


@pytest.mark.parametrize("dtype", ["float16", "int8", "2bit", "binary"])
@pytest.mark.parametrize("block_values", [multivector.BLOCK_VALUES, 5 * 16])
def test_maxsim_equals_the_reference_on_the_stored_vectors(tmp_path, monkeypatch, dtype, block_values):
    """Blocked decoding and scoring give the reference score of exactly what is stored, whether the candidates
    share one block or split over many (a 5-token block: rows longer than a block are a block of their own)."""
    monkeypatch.setattr(multivector, "BLOCK_VALUES", block_values)
    rng = np.random.default_rng(2)
    docs = [unit_rows(rng, int(rng.integers(1, 12)), 16) if i % 7 else None for i in range(40)]
    writer = new_writer(tmp_path, docs, 16, dtype)
    for d in docs:
        writer.append(d)
    writer.finish()
    store = MultiVectorStore.load(tmp_path)
    query = rng.standard_normal((5, 16)).astype(np.float32)
    rows = rng.permutation(len(docs))[:25]
    expected = [colbert_score(query, store.row(r)) if docs[r] is not None else 0.0 for r in rows]
    np.testing.assert_allclose(store.maxsim(query, rows), expected, rtol=1e-6, atol=1e-6)


def test_float16_decoding_is_exact_for_every_finite_value():
    """The vectorized float16 -> float32 decoding matches numpy's cast bit for bit (signed zeros, subnormals)."""
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = every[np.isfinite(every)]
    decoded = multivector._float16_bits_to_float32(finite.view(np.int16).astype(np.int32))
    np.testing.assert_array_equal(decoded.view(np.uint32), finite.astype(np.float32).view(np.uint32))


def new_writer(directory, docs, dim, dtype, **options):
    """A writer for `docs`; binary gets its center fitted on all of them."""
    tokens = [d for d in docs if d is not None]
    if dtype == "binary":
        options["center"] = multivector.fit_center(np.concatenate(tokens))
    return MultiVectorWriter(directory, dim, dtype, sum(map(len, tokens)), len(docs), **options)


def write_store(directory, docs, dim, dtype, **options):
    writer = new_writer(directory, docs, dim, dtype, **options)
    for d in docs:
        writer.append(d)
    writer.finish()
    return MultiVectorStore.load(directory)


@pytest.mark.parametrize("dim", [24, 21, 260])
@pytest.mark.parametrize("block_values", [multivector.BLOCK_VALUES, 5 * 24])
def test_binary_maxsim_equals_the_reference_on_sign_vectors(tmp_path, monkeypatch, dim, block_values):
    """Binary: a sign bit for each kept dimension, 8 a byte (rounded up), plus a float16 scale; the asymmetric
    MaxSim (float query against center + scale · spread · ±1 document, dropped dimensions at the center) is
    exactly the reference score of those vectors, rebuilt here from the bits with numpy's own unpacking and the
    center fitted here (mean; mean |value - mean| per dimension, 0 for the 16 of least spread from 256 up)."""
    monkeypatch.setattr(multivector, "BLOCK_VALUES", block_values)
    rng = np.random.default_rng(3)
    docs = [unit_rows(rng, int(rng.integers(1, 12)), dim) + 0.3 if i % 6 else None for i in range(40)]
    store = write_store(tmp_path, docs, dim, "binary")
    everything = np.concatenate([d for d in docs if d is not None])
    mean = everything.mean(0)
    spread = np.abs(everything - mean).mean(0)
    dropped = np.argsort(spread)[: multivector.BINARY_DROPPED_DIMS] if dim >= 256 else []
    spread[dropped] = 0
    kept = np.flatnonzero(spread > 0)
    assert len(kept) == dim - len(dropped)
    assert store.dtype == "binary" and store.tokens.dtype == np.uint8 and store.scales.dtype == np.float16
    assert store.tokens.shape == (sum(len(d) for d in docs if d is not None), -(-len(kept) // 8))
    np.testing.assert_allclose(store.center, [mean, spread], rtol=1e-5)
    query = rng.standard_normal((6, dim)).astype(np.float32)
    rows = rng.permutation(len(docs))[:30]
    expected = []
    for r in rows:
        if docs[r] is None:
            expected.append(0.0)
            continue
        start, end = store.offsets[r], store.offsets[r + 1]
        signs = np.zeros((end - start, dim))
        signs[:, kept] = np.unpackbits(store.tokens[start:end], axis=1)[:, : len(kept)] * 2.0 - 1.0
        residual = docs[r].astype(np.float16).astype(np.float32) - mean
        assert np.array_equal(signs[:, kept] > 0, residual[:, kept] >= 0)
        scales = store.scales[start:end].astype(np.float32)[:, None]
        expected.append(colbert_score(query, mean + scales * spread * signs))
    np.testing.assert_allclose(store.maxsim(query, rows), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [16, 18])
def test_2bit_maxsim_equals_the_reference_on_the_decoded_levels(tmp_path, dim):
    """2bit: d/4 bytes plus a float32 scale a token; MaxSim is the reference score of level * scale, the codes
    unpacked here independently (2 bits a dimension, first dimension in the high bits)."""
    rng = np.random.default_rng(4)
    docs = [unit_rows(rng, int(rng.integers(1, 12)), dim) for _ in range(20)]
    store = write_store(tmp_path, docs, dim, "2bit")
    assert store.tokens.shape[1] == -(-dim // 4) and store.scales.dtype == np.float32
    shifts = np.array([6, 4, 2, 0])
    query = rng.standard_normal((4, dim)).astype(np.float32)
    rows = np.arange(len(docs))
    expected = []
    for r in rows:
        codes = store.tokens[store.offsets[r] : store.offsets[r + 1]]
        unpacked = ((codes[:, :, None] >> shifts) & 3).reshape(len(codes), -1)[:, :dim]
        values = (
            multivector.LEVELS_2BIT[unpacked] * store.scales[store.offsets[r] : store.offsets[r + 1], None]
        )
        expected.append(colbert_score(query, values))
        # and the decoded vectors are close to the originals: 2 bits keep most of a token's direction
        cosines = (values * docs[r]).sum(1) / np.linalg.norm(values, axis=1)
        assert cosines.min() > 0.85
    np.testing.assert_allclose(store.maxsim(query, rows), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["binary", "2bit"])
@pytest.mark.parametrize("dim", [1024, 37])
@pytest.mark.parametrize("block_tokens", [None, 8])
def test_packed_maxsim_equals_the_decoded_rows_times_the_query(monkeypatch, dtype, dim, block_tokens):
    """Binary and 2bit are scored from their code bytes without decoding; the scores are those of the decoded
    rows (`row`) times the query, in float64 here, over ragged rows (empty ones, rows longer than a block,
    dimensions that fill no whole byte) and a query that is not unit-length. A packed block's values are its
    tokens' code bytes."""
    rng = np.random.default_rng(8)
    lengths = rng.integers(0, 40, 60)
    lengths[[3, 17]] = 0
    lengths[9] = 90  # longer than a block
    docs = [unit_rows(rng, int(n), dim) + 0.1 if n else None for n in lengths]
    docs[17] = np.empty((0, dim), np.float32)
    store = MultiVectorStore.from_rows(docs, dtype)
    if block_tokens:
        monkeypatch.setattr(multivector, "BLOCK_VALUES", block_tokens * store.tokens.shape[1])
    query = 3 * rng.standard_normal((32, dim)).astype(np.float32)
    rows = np.concatenate([rng.permutation(len(docs))[:45], [9, 3, 9]])  # repeats too
    expected = [
        (query.astype(np.float64) @ store.row(r).T.astype(np.float64)).max(1).mean() if lengths[r] else 0.0
        for r in rows
    ]
    np.testing.assert_allclose(store.maxsim(query, rows), expected, rtol=1e-5, atol=1e-5)


def test_a_packed_block_is_sized_by_code_bytes_not_dimensions(monkeypatch):
    """Packed codes are blocked by their bytes (`BLOCK_VALUES` table indices): 4,000 binary tokens of 1024
    dimensions (126 bytes each) are one block of table sums, where sizing by dimensions made four (each block
    pays the kernel's fixed costs; docs/INDEX.md, `colbert_blocks.py`)."""
    rng = np.random.default_rng(11)
    store = MultiVectorStore.from_rows([unit_rows(rng, 40, 1024) for _ in range(100)], "binary")
    calls = []
    products = MultiVectorStore._packed_products

    def counted(self, token_rows, table):
        calls.append(len(token_rows))
        return products(self, token_rows, table)

    monkeypatch.setattr(MultiVectorStore, "_packed_products", counted)
    store.maxsim(rng.standard_normal((8, 1024)).astype(np.float32), np.arange(100))
    assert calls == [4000]


@pytest.mark.parametrize("dtype", ["binary", "2bit", "int8"])
def test_recheck_scores_the_top_m_with_the_float16_vectors(tmp_path, dtype):
    """With re-check M, the M best candidates by the compressed score get exactly the float16 MaxSim; the
    others keep the compressed score; the float16 copies are memory-mapped, not read into RAM."""
    rng = np.random.default_rng(5)
    dim, m = 32, 7
    docs = [unit_rows(rng, int(rng.integers(2, 15)), dim) for _ in range(50)]
    writer = new_writer(tmp_path, docs, dim, dtype, keep_exact=True)
    for d in docs:
        writer.append(d)
    writer.finish()
    plain = MultiVectorStore.load(tmp_path)
    rechecked = MultiVectorStore.load(tmp_path, recheck=m)
    assert isinstance(rechecked.exact, np.memmap) and rechecked.exact.dtype == np.float16
    query = unit_rows(rng, 5, dim)
    rows = rng.permutation(len(docs))[:40]
    compressed = plain.maxsim(query, rows)
    scores = rechecked.maxsim(query, rows)
    top = np.argsort(-compressed, kind="stable")[:m]
    rest = np.setdiff1d(np.arange(len(rows)), top)
    exact = [colbert_score(query, docs[r].astype(np.float16).astype(np.float32)) for r in rows[top]]
    np.testing.assert_allclose(scores[top], exact, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(scores[rest], compressed[rest])


@pytest.mark.parametrize("runs", [False, True, "files"])
@pytest.mark.parametrize("dtype", ["float16", "int8", "2bit", "binary"])
def test_copying_rows_in_storage_form_keeps_the_scores(tmp_path, dtype, runs):
    """A merge copies rows in storage form (binary: under the collection's one center), one by one or a run of
    consecutive rows at once, or runs file to file; the copy holds the same bytes, scores like the original and
    carries the float16 copies along."""
    rng = np.random.default_rng(6)
    docs = [unit_rows(rng, int(rng.integers(0, 9)), 16) for _ in range(25)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    keep = dtype != "float16"
    writer = new_writer(tmp_path / "a", docs, 16, dtype, keep_exact=keep)
    for d in docs:
        writer.append(d)
    writer.finish()
    source = MultiVectorStore.load(tmp_path / "a", recheck=3 if keep else 0)
    copy = MultiVectorWriter(
        tmp_path / "b", 16, dtype, sum(map(len, docs)), len(docs), keep_exact=keep, center=source.center
    )
    if runs:  # a row alone, then runs of various lengths (an empty one too)
        for first, end in [(0, 1), (1, 2), (2, 2), (2, 12), (12, 13), (13, 25)]:
            copy.add(StoredRows(source, first, end) if runs == "files" else source.encoded(first, end))
    else:
        for r in range(len(docs)):
            copy.append_encoded(source.encoded(r))
    copy.finish()
    target = MultiVectorStore.load(tmp_path / "b", recheck=3 if keep else 0)
    np.testing.assert_array_equal(target.offsets, source.offsets)
    np.testing.assert_array_equal(np.asarray(target.tokens), np.asarray(source.tokens))
    if source.scales is not None:
        np.testing.assert_array_equal(target.scales, source.scales)
    query = unit_rows(rng, 4, 16)
    rows = np.arange(len(docs))
    np.testing.assert_allclose(target.maxsim(query, rows), source.maxsim(query, rows), rtol=1e-6)
    if keep:
        np.testing.assert_array_equal(np.asarray(target.exact), np.asarray(source.exact))


def test_rows_of_a_store_in_memory_are_added_as_encoded(tmp_path):
    rng = np.random.default_rng(9)
    docs = [unit_rows(rng, 3, 16), unit_rows(rng, 0, 16), unit_rows(rng, 2, 16)]
    source = MultiVectorStore.from_rows(docs, "int8")
    copy = MultiVectorWriter(tmp_path, 16, "int8", 5, 3)
    copy.add(StoredRows(source, 0, 3))
    copy.finish()
    target = MultiVectorStore.load(tmp_path)
    np.testing.assert_array_equal(np.asarray(target.tokens), source.tokens)
    np.testing.assert_array_equal(target.offsets, source.offsets)
    np.testing.assert_array_equal(target.scales, source.scales)


def test_a_run_whose_row_lengths_do_not_add_up_is_refused(tmp_path):
    rng = np.random.default_rng(8)
    docs = [unit_rows(rng, 3, 16), unit_rows(rng, 2, 16)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_store(tmp_path / "a", docs, 16, "float16")
    source = MultiVectorStore.load(tmp_path / "a")
    run = source.encoded(0, 2)
    assert run.lengths.tolist() == [3, 2]
    copy = MultiVectorWriter(tmp_path / "b", 16, "float16", 5, 2)
    with pytest.raises(ValueError, match="add up to 4 tokens, the codes hold 5"):
        copy.append_encoded(run._replace(lengths=np.array([2, 2])))


def test_store_without_a_dtype_record_opens_as_before(tmp_path):
    """Stores written before `colbert.json` (format-2 collections) are float16, or int8 when they have scales."""
    rng = np.random.default_rng(7)
    docs = [unit_rows(rng, 3, 8) for _ in range(4)]
    for dtype in ("float16", "int8"):
        (tmp_path / dtype).mkdir()
        store = write_store(tmp_path / dtype, docs, 8, dtype)
        before = store.maxsim(docs[0], np.arange(4))
        (tmp_path / dtype / multivector.META_FILE).unlink()
        old = MultiVectorStore.load(tmp_path / dtype)
        assert old.dtype == dtype
        np.testing.assert_array_equal(old.maxsim(docs[0], np.arange(4)), before)


@pytest.mark.parametrize("dtype", ["2bit", "binary"])
def test_a_deep_packed_re_rank_on_two_threads_scores_as_on_one(tmp_path, monkeypatch, dtype):
    """From `PARALLEL_TOKENS` candidate tokens (lowered here) the table sums split over `query_threads()`
    threads: each token's sum is still one thread's, so the scores are the same to the bit."""
    rng = np.random.default_rng(4)
    docs = [unit_rows(rng, int(rng.integers(1, 40)), 64) for _ in range(60)]
    write_store(tmp_path, docs, 64, dtype)
    store = MultiVectorStore.load(tmp_path)
    query, rows = unit_rows(rng, 9, 64), rng.permutation(60)[:45]
    monkeypatch.setenv(QUERY_THREADS_ENV, "1")
    alone = store.maxsim(query, rows)
    monkeypatch.setenv(QUERY_THREADS_ENV, "2")
    monkeypatch.setattr(multivector, "PARALLEL_TOKENS", 0)
    np.testing.assert_array_equal(store.maxsim(query, rows), alone)
