"""Checks on the vectors documents bring: sparse token ids must be plain non-negative integers."""

from __future__ import annotations

import pytest

from m3search.errors import InvalidInputError
from m3search.store.documents import check_sparse


@pytest.mark.parametrize("token", ["²", "١٢", "-3", "x", 2**63, str(2**70)])
def test_token_ids_that_are_not_64_bit_non_negative_integers_are_refused(token):
    with pytest.raises(InvalidInputError, match="is not a non-negative 64-bit integer"):
        check_sparse({token: 1.0}, "document 'a'")


def test_numeric_string_token_ids_are_read():
    ids, weights = check_sparse({"12": 0.5, 3: 0.25}, "document 'a'")
    assert sorted(zip(list(ids), list(weights))) == [(3, 0.25), (12, 0.5)]
