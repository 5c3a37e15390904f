"""The runner: which runs a request makes, interleaved timed searches, and metrics of what came back."""

from __future__ import annotations

import pytest

from m3search.errors import InvalidInputError
from m3search.eval.metrics import DEFAULT_MEASURES, evaluate
from m3search.eval.runner import RunSpec, plan_runs, required_outputs, run_task, score_weights
from m3search.search.fusion import FUSION_WEIGHTS, FUSIONS, default_weights


class _Recorder:
    """Wraps a searcher and records (query, run label) per call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def search(self, query, *, k, mode, fusion, weights):
        self.calls.append((query, RunSpec(mode, fusion, weights).label, k))
        return self.inner.search(query, k=k, mode=mode, fusion=fusion, weights=weights)


def test_plan_runs():
    runs = plan_runs()
    assert [r.label for r in runs] == [
        "dense",
        "sparse",
        "colbert",
        *(
            f"{mode} ({fusion} {'/'.join(f'{w:g}' for w in FUSION_WEIGHTS[fusion][mode])})"
            for mode in ("dense+sparse", "all")
            for fusion in FUSIONS
        ),
    ]
    # every fusion runs with the weights a search uses by default: one definition
    assert runs[0].weights is None and all(r.weights == default_weights(r.fusion, r.mode) for r in runs[3:])
    assert [r.label for r in plan_runs(["all", "sparse"], ["rrf"], (1, 1, 0))] == [
        "sparse",
        "all (rrf 1/1/0)",
    ]
    assert RunSpec("all", "weighted", (0.5, 0.5, 0.0), "tuned").label == "all (weighted 0.5/0.5/0, tuned)"
    assert required_outputs(plan_runs(["sparse", "dense+sparse"])) == ["dense", "sparse"]
    assert required_outputs(plan_runs(["colbert"])) == ["dense", "colbert"]  # colbert re-ranks dense
    with pytest.raises(InvalidInputError, match="unknown mode hybrid"):
        plan_runs(["dense", "hybrid"])
    with pytest.raises(InvalidInputError, match="unknown fusion max"):
        plan_runs(fusions=["max"])
    with pytest.raises(InvalidInputError, match="weights must be"):
        plan_runs(weights=(0, 0, 0))


def test_run_task_interleaves_modes_and_scores_what_came_back(exhaustive, scifact_slice):
    recorder = _Recorder(exhaustive)
    runs = plan_runs()
    results = run_task(recorder, scifact_slice, runs, progress=False)
    n = len(scifact_slice.queries)
    assert len(recorder.calls) == len(runs) * (n + 1)  # one untimed warm-up search per run, then every query
    timed = recorder.calls[len(runs) :]
    labels = [r.label for r in runs]
    for i, qtext in enumerate(scifact_slice.queries.values()):  # per query, every run in turn, rotating
        block = timed[i * len(runs) : (i + 1) * len(runs)]
        assert [c[0] for c in block] == [qtext] * len(runs)
        assert [c[1] for c in block] == labels[i % len(runs) :] + labels[: i % len(runs)]
    assert {c[2] for c in recorder.calls} == {100}  # deep enough for recall@100
    for result in results:
        assert len(result.latencies_ms) == n and min(result.latencies_ms) > 0
        assert set(result.hits) == set(scifact_slice.queries)
        ranking = {q: [d for d, _ in h] for q, h in result.hits.items()}
        assert result.metrics == evaluate(scifact_slice.qrels, ranking, DEFAULT_MEASURES)
        assert len(result.recall_curve) == 100
        assert result.recall_curve[9] == pytest.approx(result.metrics["recall@10"])
        assert set(result.latency_summary()) == {"mean", "p50", "p95"}
    by_label = {r.spec.label: r.metrics["ndcg@10"] for r in results}
    # BM25 is a strong baseline on SciFact; the tiny model's dense and ColBERT vectors are random.
    assert by_label["sparse"] > 0.5 and by_label["sparse"] > by_label["dense"] + 0.2


def test_fusion_weights_reach_the_searcher(exhaustive, scifact_slice):
    """`all` fused with all weight on one mode ranks exactly as that mode alone."""
    singles = run_task(
        exhaustive, scifact_slice, [RunSpec("dense"), RunSpec("sparse")], measures=["ndcg@10"], progress=False
    )
    for weights, single in (((1.0, 0.0, 0.0), singles[0]), ((0.0, 1.0, 0.0), singles[1])):
        fused = score_weights(
            exhaustive, scifact_slice, weights, mode="all", fusion="weighted", metric="ndcg@10"
        )
        assert fused == pytest.approx(single.metrics["ndcg@10"])
    assert singles[0].metrics["ndcg@10"] != singles[1].metrics["ndcg@10"]
