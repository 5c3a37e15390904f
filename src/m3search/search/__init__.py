"""Hybrid search: the per-mode plan over a collection's levels, score fusion, and the results it returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from m3search.lazy import lazy_exports

#: Public name -> the module that defines it (the planner loads faiss; the mode table is light).
_EXPORTS = {
    "FUSIONS": "m3search.search.fusion",
    "RRF_K": "m3search.search.fusion",
    "rrf_fusion": "m3search.search.fusion",
    "weighted_fusion": "m3search.search.fusion",
    "MODES": "m3search.search.modes",
    "QueryVectors": "m3search.search.planner",
    "Hit": "m3search.search.results",
}

if TYPE_CHECKING:
    from m3search.search.fusion import FUSIONS, RRF_K, rrf_fusion, weighted_fusion
    from m3search.search.modes import MODES
    from m3search.search.planner import QueryVectors
    from m3search.search.results import Hit

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["FUSIONS", "MODES", "RRF_K", "Hit", "QueryVectors", "rrf_fusion", "weighted_fusion"]
