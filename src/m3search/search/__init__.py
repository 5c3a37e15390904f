"""Hybrid search: the per-mode plan over a collection's levels, score fusion, and the results it returns.

The planner (it brings the index libraries) loads on first use, so the result type stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports
from m3search.search.fusion import FUSIONS, RRF_K, rrf_fusion, weighted_fusion
from m3search.search.results import Hit

if TYPE_CHECKING:
    from m3search.search.planner import MODES, QueryVectors

__getattr__, __dir__ = lazy_exports(
    __name__, {"MODES": "m3search.search.planner", "QueryVectors": "m3search.search.planner"}
)

__all__ = ["FUSIONS", "MODES", "RRF_K", "Hit", "QueryVectors", "rrf_fusion", "weighted_fusion"]
