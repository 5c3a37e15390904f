"""Per-query thread limits: one BLAS / OpenMP thread inside the context, the previous settings after it."""

from __future__ import annotations

import pytest
import torch  # noqa: F401  (loads torch's OpenMP runtime, the one query encoding runs on)
from threadpoolctl import threadpool_info

from m3search.threads import one_thread


def _threads(user_api: str) -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == user_api}


@pytest.mark.parametrize("user_api", ["blas", "openmp"])
def test_one_thread_limits_then_restores(user_api):
    before = _threads(user_api)
    assert before, f"no {user_api} library loaded"
    with one_thread(user_api):
        assert set(_threads(user_api).values()) == {1}
    assert _threads(user_api) == before
