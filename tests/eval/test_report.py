"""Reports from real runs: results.json round-trips, Markdown tables, readable PNG plots, TREC run files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytrec_eval

from m3search.errors import InvalidInputError
from m3search.eval.metrics import DEFAULT_MEASURES
from m3search.eval.report import (
    build_results,
    hybrid_verdicts,
    load_results,
    markdown,
    task_entry,
    write_report,
    write_trec_runs,
)
from m3search.eval.runner import plan_runs, run_task


@pytest.fixture(scope="module")
def run_results(exhaustive, scifact_slice):
    return run_task(exhaustive, scifact_slice, plan_runs(), progress=False)


def _results(scifact_slice, run_results, tasks=1):
    entries = []
    for i in range(tasks):
        entry = task_entry(
            scifact_slice.describe(), {"documents": 300, "seconds": 1.5, "docs_per_s": 200.0}, run_results
        )
        entry["task"]["name"] = f"scifact-slice-{i}" if tasks > 1 else entry["task"]["name"]
        entries.append(entry)
    settings = {"measures": list(DEFAULT_MEASURES), "depth": 100}
    return build_results(model="tiny-m3", settings=settings, tasks=entries)


def _png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert float(np.std(image)) > 0.01  # something was drawn


def test_write_report_single_task(tmp_path, scifact_slice, run_results):
    results = _results(scifact_slice, run_results)
    paths = write_report(results, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["results.json", "results.md", "scifact_metrics.png", "scifact_recall.png"]
    loaded = load_results(tmp_path / "out" / "results.json")
    assert loaded == json.loads(json.dumps(results))
    (task,) = loaded["tasks"]
    assert [r["label"] for r in task["runs"]] == [r.spec.label for r in run_results]
    assert task["runs"][1]["metrics"] == run_results[1].metrics
    for p in paths:
        if p.suffix == ".png":
            _png(p)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| run | nDCG@10 | R@1 | R@10 | R@100 | MRR@10 | MAP@100 | ms/query |" in md
    sparse = run_results[1]
    assert f"| sparse | {sparse.metrics['ndcg@10']:.4f} | {sparse.metrics['recall@1']:.4f} |" in md
    assert "![nDCG@10 per run](scifact_metrics.png)" in md
    assert "Summary" not in md


def test_write_report_several_tasks_adds_a_summary(tmp_path, scifact_slice, run_results):
    results = _results(scifact_slice, run_results, tasks=2)
    paths = write_report(results, tmp_path)
    assert (tmp_path / "summary_ndcg_10.png") in paths
    _png(tmp_path / "summary_ndcg_10.png")
    md = markdown(results)
    assert "## Summary: nDCG@10" in md and "| mean |" in md


def test_hybrid_verdicts_compare_with_the_best_single_mode(scifact_slice, run_results):
    (entry,) = _results(scifact_slice, run_results)["tasks"]
    lines = hybrid_verdicts(entry, "ndcg@10")
    singles = {r.spec.label: r.metrics["ndcg@10"] for r in run_results if not r.spec.hybrid}
    best_label = max(singles, key=singles.get)
    assert lines[0].startswith(f"Best single mode: **{best_label}**")
    hybrids = [r for r in run_results if r.spec.hybrid]
    assert len(lines) == 1 + len(hybrids)
    for line, run in zip(lines[1:], hybrids):
        delta = run.metrics["ndcg@10"] - singles[best_label]
        verdict = "beats it" if delta > 0 else "ties it" if delta == 0 else "does not beat it"
        assert line.startswith(f"- {run.spec.label}:") and verdict in line


def test_trec_run_files_evaluate_the_same_with_trec_eval(tmp_path, scifact_slice, run_results):
    paths = write_trec_runs(scifact_slice.name, run_results, tmp_path)
    assert len(paths) == len(run_results)
    for path, result in zip(paths, run_results):
        run: dict[str, dict[str, float]] = {}
        for line in path.read_text().splitlines():
            qid, _, doc, _, score, _ = line.split()
            run.setdefault(qid, {})[doc] = float(score)
        assert sum(len(h) for h in result.hits.values()) == sum(len(r) for r in run.values())
        trec = pytrec_eval.RelevanceEvaluator(scifact_slice.qrels, {"recall.100"}).evaluate(run)
        recall = np.mean([v["recall_100"] for v in trec.values()])
        assert recall == pytest.approx(result.metrics["recall@100"])


def test_load_results_checks_the_schema(tmp_path):
    (tmp_path / "other.json").write_text('{"schema": "something else"}')
    with pytest.raises(InvalidInputError, match="not an m3search evaluation result"):
        load_results(tmp_path / "other.json")
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_results(tmp_path / "missing.json")
