"""Checks on the vectors documents bring: sparse token ids must be plain non-negative integers."""

from __future__ import annotations

import pytest

from m3search.errors import InvalidInputError
from m3search.store.documents import check_sparse


@pytest.mark.parametrize("token", ["²", "١٢", "-3", "x"])
def test_non_ascii_digit_token_ids_are_refused(token):
    with pytest.raises(InvalidInputError, match="is not a non-negative integer"):
        check_sparse({token: 1.0}, "document 'a'")


def test_numeric_string_token_ids_are_read():
    ids, weights = check_sparse({"12": 0.5, 3: 0.25}, "document 'a'")
    assert sorted(zip(list(ids), list(weights))) == [(3, 0.25), (12, 0.5)]
