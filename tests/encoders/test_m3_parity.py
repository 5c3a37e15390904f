"""bge-m3 outputs and scores equal FlagEmbedding's (the reference) on a tiny random model."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import numpy as np
import pytest

from tests.encoders.texts import MULTILINGUAL

TOL = 1e-5
LOCK = Path(__file__).parents[2] / "requirements" / "lock-cpu.txt"


def _locked(package: str) -> str:
    """The version of `package` in the lock of tested versions."""
    found = re.search(rf"^{re.escape(package)}==(\S+)", LOCK.read_text(), re.MULTILINE | re.IGNORECASE)
    assert found, f"{package} is not in {LOCK}"
    return found.group(1)


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _import_oracle():
    """FlagEmbedding's M3 model class; if it cannot be imported, fail naming the tested pair (never skip)."""
    try:
        from FlagEmbedding import BGEM3FlagModel
    except ImportError as exc:
        pytest.fail(
            f"the parity oracle does not import: {exc}. Installed: FlagEmbedding "
            f"{_installed('FlagEmbedding')} with transformers {_installed('transformers')}; the tested pair is "
            f"FlagEmbedding {_locked('flagembedding')} with transformers {_locked('transformers')} "
            f"(pip install -c {LOCK.name} ..., see scripts/install.sh)"
        )
    return BGEM3FlagModel


@pytest.fixture(scope="module")
def reference(tiny_m3_dir):
    return _import_oracle()(str(tiny_m3_dir), use_fp16=False, devices="cpu")


def test_oracle_pair_is_the_locked_one():
    """The suite runs against the FlagEmbedding/transformers pair the lock says was tested."""
    _import_oracle()
    assert _installed("FlagEmbedding") == _locked("flagembedding")
    assert _installed("transformers") == _locked("transformers")


@pytest.mark.parametrize("max_length", [512, 64])
def test_encode_matches_reference(tiny_m3, reference, max_length):
    assert max(tiny_m3.count_tokens(MULTILINGUAL)) > 512
    ref = reference.encode(
        MULTILINGUAL,
        batch_size=4,
        max_length=max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
    )
    ours = tiny_m3.encode(
        MULTILINGUAL,
        batch_size=4,
        max_length=max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert=True,
    )

    assert ours.dense.dtype == np.float32 and ours.dense.shape == ref["dense_vecs"].shape
    np.testing.assert_allclose(ours.dense, ref["dense_vecs"], atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(ours.dense, axis=1), 1.0, atol=1e-6)

    for i, (theirs, mine) in enumerate(zip(ref["lexical_weights"], ours.sparse)):
        assert {int(k) for k in theirs} == set(mine), f"sparse token ids differ for text {i}"
        for token, weight in mine.items():
            assert abs(float(theirs[str(token)]) - weight) < TOL

    for i, (theirs, mine) in enumerate(zip(ref["colbert_vecs"], ours.colbert)):
        assert theirs.shape == mine.shape, f"ColBERT shape differs for text {i}"
        np.testing.assert_allclose(mine, theirs, atol=TOL)

    expected_truncated = [i for i, n in enumerate(tiny_m3.count_tokens(MULTILINGUAL)) if n > max_length]
    assert ours.truncated == expected_truncated
    assert all(n <= max_length for n in ours.num_tokens)


def test_compute_score_matches_reference(tiny_m3, reference):
    pairs = [
        (MULTILINGUAL[0], MULTILINGUAL[1]),
        (MULTILINGUAL[2], MULTILINGUAL[3]),
        (MULTILINGUAL[4], MULTILINGUAL[8]),
        (MULTILINGUAL[7], MULTILINGUAL[6]),
    ]
    for weights in ([1.0, 1.0, 1.0], [0.4, 0.2, 0.4]):
        ref = reference.compute_score(pairs, weights_for_different_modes=weights, max_passage_length=512)
        ours = tiny_m3.compute_score(pairs, weights=weights, max_passage_length=512)
        assert set(ours) == set(ref)
        for mode in ref:
            np.testing.assert_allclose(ours[mode], ref[mode], atol=TOL, err_msg=mode)


def test_reference_score_functions(tiny_m3, reference):
    """Our scoring functions agree with the reference's own helpers on encoded outputs."""
    from m3search.scoring import colbert_score, lexical_score

    out = tiny_m3.encode(MULTILINGUAL[:4], return_sparse=True, return_colbert=True)
    ref_lex = reference.compute_lexical_matching_score(
        [{str(k): v for k, v in s.items()} for s in out.sparse[:2]],
        [{str(k): v for k, v in s.items()} for s in out.sparse[2:]],
    )
    ours_lex = [[lexical_score(a, b) for b in out.sparse[2:]] for a in out.sparse[:2]]
    np.testing.assert_allclose(ours_lex, ref_lex, atol=TOL)
    for a in out.colbert:
        for b in out.colbert:
            assert abs(colbert_score(a, b) - float(reference.colbert_score(a, b))) < TOL


def test_single_string_and_batch_size_do_not_change_results(tiny_m3):
    one = tiny_m3.encode(MULTILINGUAL, batch_size=1, return_sparse=True)
    many = tiny_m3.encode(MULTILINGUAL, batch_size=16, return_sparse=True)
    np.testing.assert_allclose(one.dense, many.dense, atol=TOL)
    single = tiny_m3.encode(MULTILINGUAL[2])
    np.testing.assert_allclose(single.dense[0], many.dense[2], atol=TOL)
