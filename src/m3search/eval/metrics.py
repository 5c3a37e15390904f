"""Ranking metrics with trec_eval's definitions: nDCG@k, Recall@k, MRR@k, MAP@k, and recall@k curves.

Hand-written on numpy (four vectorized formulas) rather than a run-time dependency: ranx pulls numba (LLVM)
and pandas; pytrec_eval's own release builds trec_eval from a download, and it has neither MRR@k nor cheap
recall curves. The tests check every value against pytrec_eval (pytrec-eval-terrier's wheels) on real runs.
Definitions, as trec_eval's `ndcg_cut`, `recall`, `recip_rank` on the top k, and `map_cut`:
- a document is relevant when its grade is >= 1; unjudged documents have grade 0; negative grades gain 0;
- nDCG@k gains the grade itself (BEIR's graded gains) with discount 1/log2(rank + 1), divided by the ideal
  DCG@k of all judged grades;
- Recall@k and MAP@k divide by the number of relevant documents, however many that is;
- a query without relevant documents scores 0 everywhere; a query missing from the run scores 0;
- means are over the queries of the qrels (the run's other queries are ignored).
Rankings are lists of ids, best first; scores become a ranking with trec_eval's tie-break (higher score first,
then the larger id), so results equal trec_eval's on the same scores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from m3search.errors import InvalidInputError

Ranking = Sequence[str]
Run = Mapping[str, Ranking]
"""query id -> document ids, best first."""

MEASURES = ("ndcg", "recall", "mrr", "map")
#: What the reports show by default (the BEIR / MTEB headline numbers).
DEFAULT_MEASURES = ("ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10", "map@100")

_MEASURE = re.compile(r"^(ndcg|recall|mrr|map)@([1-9][0-9]*)$")


def parse_measure(name: str) -> tuple[str, int]:
    """`"ndcg@10"` -> `("ndcg", 10)`; raise on unknown names."""
    match = _MEASURE.match(name.strip().lower())
    if match is None:
        known = ", ".join(m + "@K" for m in MEASURES)
        raise InvalidInputError(f"unknown measure {name!r}: use {known} (K >= 1)")
    return match.group(1), int(match.group(2))


def measures_at(ks: Iterable[int]) -> tuple[str, ...]:
    """Every measure at each cutoff in `ks`: ndcg@k, recall@k, mrr@k, map@k."""
    ks = sorted(set(ks))
    if not ks or ks[0] < 1:
        raise InvalidInputError(f"cutoffs must be integers >= 1, got {ks}")
    return tuple(f"{m}@{k}" for m in MEASURES for k in ks)


def ranking_from_scores(scores: Mapping[str, float]) -> list[str]:
    """Document ids by decreasing score, ties broken as trec_eval does (larger id first)."""
    return [d for d, _ in sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def _grades(
    qrels: Mapping[str, Mapping[str, int]], run: Run, qids: list[str], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, depth) grades of the ranked documents (0 past a ranking's end), and the ideal grades."""
    ranked = np.zeros((len(qids), depth))
    ideal = np.zeros((len(qids), depth))
    for i, qid in enumerate(qids):
        judged = qrels[qid]
        ranking = list(run.get(qid, ()))
        if len(set(ranking)) != len(ranking):
            raise InvalidInputError(f"the ranking of query {qid} lists a document twice")
        top = [judged.get(d, 0) for d in ranking[:depth]]
        ranked[i, : len(top)] = top
        best = sorted((g for g in judged.values() if g > 0), reverse=True)[:depth]
        ideal[i, : len(best)] = best
    return ranked, ideal


def per_query(
    qrels: Mapping[str, Mapping[str, int]], run: Run, measures: Iterable[str] = DEFAULT_MEASURES
) -> dict[str, np.ndarray]:
    """measure -> per-query values, in the order of `qrels`' query ids."""
    parsed = {m: parse_measure(m) for m in measures}
    qids = list(qrels)
    depth = max((k for _, k in parsed.values()), default=1)
    grades, ideal = _grades(qrels, run, qids, depth)
    relevant = grades >= 1
    num_rel = np.array([sum(g >= 1 for g in qrels[q].values()) for q in qids], dtype=float)
    safe_rel = np.maximum(num_rel, 1.0)
    ranks = np.arange(1, depth + 1, dtype=float)
    discount = 1.0 / np.log2(ranks + 1.0)
    gains = np.maximum(grades, 0.0)
    out: dict[str, np.ndarray] = {}
    for name, (measure, k) in parsed.items():
        if measure == "ndcg":
            dcg = (gains[:, :k] * discount[:k]).sum(axis=1)
            idcg = (ideal[:, :k] * discount[:k]).sum(axis=1)
            value = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
        elif measure == "recall":
            value = relevant[:, :k].sum(axis=1) / safe_rel
        elif measure == "mrr":
            hit = relevant[:, :k]
            first = hit.argmax(axis=1)
            value = np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0)
        else:  # map
            hit = relevant[:, :k]
            precision = np.cumsum(hit, axis=1) / ranks[:k]
            value = (precision * hit).sum(axis=1) / safe_rel
        out[name] = value
    return out


def evaluate(
    qrels: Mapping[str, Mapping[str, int]], run: Run, measures: Iterable[str] = DEFAULT_MEASURES
) -> dict[str, float]:
    """measure -> mean over the qrels' queries."""
    if not qrels:
        raise InvalidInputError("no judged queries to evaluate")
    return {name: float(values.mean()) for name, values in per_query(qrels, run, measures).items()}


def recall_curve(qrels: Mapping[str, Mapping[str, int]], run: Run, depth: int) -> np.ndarray:
    """Mean Recall@k for k = 1..depth (index k-1), for plots."""
    if depth < 1:
        raise InvalidInputError(f"depth must be >= 1, got {depth}")
    qids = list(qrels)
    grades, _ = _grades(qrels, run, qids, depth)
    num_rel = np.array([max(1, sum(g >= 1 for g in qrels[q].values())) for q in qids], dtype=float)
    return (np.cumsum(grades >= 1, axis=1) / num_rel[:, None]).mean(axis=0)
