"""Runs every query of a task through every requested mode and fusion, timing each search; scores the runs.

The runner talks to a `Searcher` (anything with the collection's `search` shape), so it does not depend on how
the corpus was indexed; `m3search.eval.engine` builds one from a real collection. Modes are interleaved per
query, so machine noise hits every mode alike and latencies stay comparable.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from m3search.encoders.base import OUTPUT_KINDS
from m3search.errors import InvalidInputError
from m3search.eval.datasets import RetrievalTask
from m3search.eval.metrics import DEFAULT_MEASURES, evaluate, parse_measure, recall_curve
from m3search.eval.tune import FusionChoice, Weights, choose_fusion
from m3search.progress import bar
from m3search.scoring import check_weights
from m3search.search.fusion import DEFAULT_FUSION, FUSIONS, default_weights
from m3search.search.modes import HYBRID_MODES, MODE_KINDS, MODES, SINGLE_MODES, mode_outputs

Hit = tuple[str, float]
"""(document id, score)."""


class Searcher(Protocol):
    """What the runner needs from a collection: ranked (id, score) hits for one text query."""

    def search(
        self, query: str, *, k: int, mode: str, fusion: str | None, weights: Weights | None
    ) -> Sequence[Hit]:
        """The best `k` documents for `query`, best first."""


@dataclass(frozen=True)
class RunSpec:
    """One way of searching: a mode, and for hybrid modes a fusion and its weights; `tag` tells runs apart."""

    mode: str
    fusion: str | None = None
    weights: Weights | None = None
    tag: str = ""

    @property
    def label(self) -> str:
        """Name shown in tables and plots, with the weights (dense/sparse/colbert) a hybrid run fuses with,
        e.g. `all (rrf 0.4/0.2/0.4)` or `all (weighted 0.2/0.2/0.6, tuned)`."""
        fusion = self.fusion
        if fusion is not None and self.weights is not None:
            fusion += " " + "/".join(f"{w:g}" for w in self.weights)
        detail = ", ".join(x for x in (fusion, self.tag) if x)
        return f"{self.mode} ({detail})" if detail else self.mode

    @property
    def hybrid(self) -> bool:
        """Whether this run fuses several modes."""
        return self.mode in HYBRID_MODES


def plan_runs(
    modes: Iterable[str] = MODES, fusions: Iterable[str] = FUSIONS, weights: Sequence[float] | None = None
) -> list[RunSpec]:
    """Single modes once each; hybrid modes once per fusion, with `weights` (dense, sparse, colbert), by default
    each fusion's own (`m3search.search.fusion.FUSION_WEIGHTS` for the mode, what a search uses)."""
    modes, fusions = list(dict.fromkeys(modes)), list(dict.fromkeys(fusions))
    for value, allowed, what in ((modes, MODES, "mode"), (fusions, FUSIONS, "fusion")):
        bad = [v for v in value if v not in allowed]
        if bad or not value:
            raise InvalidInputError(
                f"unknown {what} {', '.join(bad) or '(none)'}: choose from {', '.join(allowed)}"
            )
    chosen = check_weights(weights) if weights is not None else None
    runs = [RunSpec(m) for m in modes if m in SINGLE_MODES]
    runs += [
        RunSpec(m, f, chosen or default_weights(f, m)) for m in modes if m in HYBRID_MODES for f in fusions
    ]
    return runs


def required_outputs(runs: Iterable[RunSpec]) -> list[str]:
    """The outputs a collection must store to serve `runs`, in canonical order."""
    needed = {o for r in runs for o in mode_outputs(r.mode)}
    return [o for o in OUTPUT_KINDS if o in needed]


@dataclass
class RunResult:
    """Scores of one run over one task, its recall curve and per-query latencies."""

    spec: RunSpec
    metrics: dict[str, float]
    recall_curve: list[float]
    latencies_ms: list[float]
    hits: dict[str, list[Hit]] = field(repr=False)

    def latency_summary(self) -> dict[str, float]:
        """Mean, median and 95th percentile of the search latency in milliseconds."""
        ms = np.asarray(self.latencies_ms)
        return {
            "mean": float(ms.mean()),
            "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)),
        }

    def to_dict(self) -> dict[str, Any]:
        """results.json form (hits are left out; see `report.write_trec_runs`)."""
        return {
            "label": self.spec.label,
            "mode": self.spec.mode,
            "fusion": self.spec.fusion,
            "weights": list(self.spec.weights) if self.spec.weights else None,
            "metrics": self.metrics,
            "recall_curve": self.recall_curve,
            "latency_ms": self.latency_summary(),
        }


def depth_for(measures: Iterable[str]) -> int:
    """How many results each search must return to compute `measures`."""
    return max(parse_measure(m)[1] for m in measures)


def run_task(
    searcher: Searcher,
    task: RetrievalTask,
    runs: Sequence[RunSpec],
    *,
    measures: Sequence[str] = DEFAULT_MEASURES,
    depth: int | None = None,
    progress: bool = True,
) -> list[RunResult]:
    """Search every query with every run (interleaved, in rotating order), time and score them."""
    depth = depth or depth_for(measures)
    if not runs:
        raise InvalidInputError("no runs to evaluate")
    first = next(iter(task.queries.values()))
    for spec in runs:  # warm-up: the first search of a mode pays one-off costs (lazy loads, caches)
        searcher.search(first, k=depth, mode=spec.mode, fusion=spec.fusion, weights=spec.weights)
    hits: dict[RunSpec, dict[str, list[Hit]]] = {spec: {} for spec in runs}
    latencies: dict[RunSpec, list[float]] = {spec: [] for spec in runs}
    queries = bar(task.queries.items(), desc=f"search {task.name}", unit="query", disable=not progress)
    for i, (qid, text) in enumerate(queries):
        for spec in [
            *runs[i % len(runs) :],
            *runs[: i % len(runs)],
        ]:  # rotated: no mode always searches first
            start = time.perf_counter()
            found = searcher.search(text, k=depth, mode=spec.mode, fusion=spec.fusion, weights=spec.weights)
            latencies[spec].append((time.perf_counter() - start) * 1000.0)
            hits[spec][qid] = [(str(d), float(s)) for d, s in found]
    results = []
    for spec in runs:
        ranking = {qid: [d for d, _ in h] for qid, h in hits[spec].items()}
        curve = recall_curve(task.qrels, ranking, depth).tolist()
        results.append(
            RunResult(spec, evaluate(task.qrels, ranking, measures), curve, latencies[spec], hits[spec])
        )
    return results


def score_weights(
    searcher: Searcher, task: RetrievalTask, weights: Weights, *, mode: str, fusion: str, metric: str
) -> float:
    """One measure of `mode`/`fusion` under `weights` on `task`: the objective of weight tuning."""
    (result,) = run_task(searcher, task, [RunSpec(mode, fusion, weights)], measures=[metric], progress=False)
    return result.metrics[metric]


def tune_fusion(
    searcher: Searcher,
    task: RetrievalTask,
    *,
    mode: str,
    fusions: Sequence[str],
    metric: str = "ndcg@10",
    step: float = 0.1,
    on_trial: Callable[[], None] | None = None,
) -> FusionChoice:
    """The best of `fusions` and its weights for `mode` on `task`'s queries (`m3search index tune`): each
    fusion's weights searched from its default over the kinds `mode` fuses; the library default is scored too
    and wins ties."""

    def objective(fusion: str, weights: Weights) -> float:
        if on_trial is not None:
            on_trial()
        return score_weights(searcher, task, weights, mode=mode, fusion=fusion, metric=metric)

    return choose_fusion(
        objective,
        fusions,
        default=(DEFAULT_FUSION, default_weights(DEFAULT_FUSION, mode)),
        metric=metric,
        step=step,
        free=[k in MODE_KINDS[mode] for k in OUTPUT_KINDS],
        start=functools.partial(default_weights, mode=mode),
    )
