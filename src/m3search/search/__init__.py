"""Hybrid search: the per-mode plan over a collection's levels, score fusion, and the results it returns."""

from m3search.search.fusion import FUSIONS, RRF_K, rrf_fusion, weighted_fusion
from m3search.search.planner import MODES, QueryVectors
from m3search.search.results import Hit

__all__ = ["FUSIONS", "MODES", "RRF_K", "Hit", "QueryVectors", "rrf_fusion", "weighted_fusion"]
