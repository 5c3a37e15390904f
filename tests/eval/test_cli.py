"""`m3search eval` and `m3search eval tune-weights` end to end, with the exhaustive stand-in for a collection.

`m3search.eval.engine.indexed_collection` is the one seam to the real collection; here it yields the
stand-in, after checking it is asked for the corpus and outputs the command should ask for.
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.eval import engine
from m3search.eval.datasets import RetrievalTask, load_beir, slice_task
from tests.eval.conftest import ExhaustiveSearcher


class _Model:
    """What the commands need of a loaded model when the collection is a stand-in."""

    def __init__(self, name):
        self.name = name

    def describe(self):
        return {"name": self.name}


def _stand_in(monkeypatch, searcher, requests):
    loads = []

    def load_model(model, *, outputs, runtime, device, sparse):
        loads.append(model)
        return _Model(model)

    @contextmanager
    def indexed(task, *, model, outputs, encoder, path=None, **settings):
        assert encoder.name == model and loads == [model]  # loaded once, before any task
        requests.append({"task": task, "model": model, "outputs": list(outputs), "path": path, **settings})
        assert set(searcher.ids) <= set(task.corpus)
        yield searcher, {"documents": len(task.corpus), "seconds": 2.0, "docs_per_s": len(task.corpus) / 2.0}

    monkeypatch.setattr(engine, "load_model", load_model)
    monkeypatch.setattr(engine, "indexed_collection", indexed)


def _invoke(*args):
    return CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)


def test_eval_writes_every_report(monkeypatch, tmp_path, scifact_dir, exhaustive, scifact_slice):
    requests = []
    _stand_in(monkeypatch, exhaustive, requests)
    out = tmp_path / "out"
    result = _invoke(
        "--model",
        "tiny",
        "--dataset",
        str(scifact_dir),
        "--max-queries",
        "40",
        "--max-docs",
        "300",
        "--output",
        str(out),
        "--save-runs",
    )
    assert result.exit_code == 0, result.output
    (request,) = requests
    assert request["task"].corpus.keys() == scifact_slice.corpus.keys()  # the deterministic slice
    assert request["outputs"] == ["dense", "sparse", "colbert"] and request["model"] == "tiny"
    assert (request["normalize"], request["candidates"], request["cache"]) == ("auto", 100, False)
    results = json.loads((out / "results.json").read_text())
    (task,) = results["tasks"]
    assert task["task"]["queries"] == 40 and task["task"]["documents"] == 300
    assert [r["label"] for r in task["runs"]] == [
        "dense",
        "sparse",
        "colbert",
        "dense+sparse (weighted)",
        "dense+sparse (rrf)",
        "all (weighted)",
        "all (rrf)",
    ]
    assert results["settings"]["measures"][0] == "ndcg@10" and results["settings"]["max_docs"] == 300
    assert "| sparse |" in result.output  # the Markdown table is printed too
    for name in ("results.md", "scifact_metrics.png", "scifact_recall.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "runs" / "scifact").glob("*.trec"))) == 7


def test_eval_modes_fusions_and_cutoffs(monkeypatch, tmp_path, scifact_dir, exhaustive):
    requests = []
    _stand_in(monkeypatch, exhaustive, requests)
    result = _invoke(
        "run",
        "--model",
        "tiny",
        "--dataset",
        str(scifact_dir),
        "--max-queries",
        "40",
        "--max-docs",
        "300",
        "--modes",
        "sparse,dense+sparse",
        "--fusion",
        "rrf",
        "--k",
        "5,20",
        "--weights",
        "0.5,0.5,0",
        "--normalize",
        "none",
        "--candidates",
        "50",
        "--output",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert requests[0]["outputs"] == ["dense", "sparse"]
    assert (requests[0]["normalize"], requests[0]["candidates"]) == ("none", 50)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["normalize"] == "none" and results["settings"]["encoder"] == {"name": "tiny"}
    runs = results["tasks"][0]["runs"]
    assert [r["label"] for r in runs] == ["sparse", "dense+sparse (rrf)"]
    assert runs[1]["weights"] == [0.5, 0.5, 0.0]
    assert set(runs[0]["metrics"]) == {
        "ndcg@5",
        "ndcg@20",
        "recall@5",
        "recall@20",
        "mrr@5",
        "mrr@20",
        "map@5",
        "map@20",
    }
    assert len(runs[0]["recall_curve"]) == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "nowhere"], "dataset 'nowhere' not found"),
        (["--dataset", "{scifact}", "--modes", "dense,best"], "unknown mode best"),
        (["--dataset", "{scifact}", "--k", "ten"], "--k takes comma-separated integers"),
        (["--dataset", "{scifact}", "--weights", "1,2"], "--weights takes dense,sparse,colbert"),
        (["--dataset", "{scifact}", "--split", "dev"], "splits here: test, train"),
        (
            ["--dataset", "{scifact}", "--normalize", "zscore"],
            "'zscore' is not one of 'auto', 'none', 'minmax'",
        ),
        (["tune-weights", "--dataset", "{scifact}", "--dev-split", "test"], "the test split are both"),
    ],
)
def test_eval_errors_are_clean(args, message, scifact_dir):
    args = [a.replace("{scifact}", str(scifact_dir)) for a in args]
    result = CliRunner().invoke(cli, ["eval", *args])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_tune_weights_tunes_on_train_then_reports_test(
    monkeypatch, tmp_path, scifact_dir, tiny_m3, xlmr_tokenizer
):
    """SciFact train queries tune the weights; test queries are evaluated with default and tuned weights."""
    train = slice_task(load_beir(scifact_dir, "train"), max_queries=15)
    test = slice_task(load_beir(scifact_dir, "test"), max_queries=10)
    judged = {d for t in (train, test) for j in t.qrels.values() for d in j}
    kept = judged | set([d for d in train.corpus if d not in judged][: 250 - len(judged)])
    corpus = {d: doc for d, doc in train.corpus.items() if d in kept}  # every judged document of both slices
    searcher = ExhaustiveSearcher(tiny_m3, xlmr_tokenizer, RetrievalTask("x", "x", corpus, {}, {}))
    requests = []
    _stand_in(monkeypatch, searcher, requests)
    result = _invoke(
        "tune-weights",
        "--model",
        "tiny",
        "--dataset",
        str(scifact_dir),
        "--max-dev-queries",
        "15",
        "--max-queries",
        "10",
        "--step",
        "0.25",
        "--output",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    (request,) = requests  # indexed once, for both splits
    assert request["outputs"] == ["dense", "sparse", "colbert"]
    results = json.loads((tmp_path / "results.json").read_text())
    tuning = results["tuning"]
    assert tuning["dev_split"] == "train" and tuning["method"] == "coordinate"
    assert tuning["best_score"] == max(t["score"] for t in tuning["trials"])
    (task,) = results["tasks"]
    assert task["task"]["split"] == "test" and task["task"]["queries"] == 10
    labels = [r["label"] for r in task["runs"]]
    assert labels == ["dense", "sparse", "colbert", "all (weighted, default)", "all (weighted, tuned)"]
    assert task["runs"][3]["weights"] == [0.4, 0.2, 0.4] and task["runs"][4]["weights"] == tuning["best"]
    assert "## Tuned fusion weights" in result.output


def test_eval_colbert_mode_builds_what_the_planner_needs(tmp_path, tiny_m3_dir, scifact_dir):
    """`--modes colbert` re-ranks the dense top-N, so the collection eval builds holds dense vectors too."""
    kept, out = tmp_path / "collection", tmp_path / "out"
    result = _invoke(
        *("--model", str(tiny_m3_dir), "--dataset", str(scifact_dir), "--modes", "colbert"),
        *("--max-queries", "3", "--max-docs", "20", "--runtime", "torch-fp32"),
        *("--collection", str(kept), "--output", str(out)),
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((out / "results.json").read_text())["tasks"]
    assert [r["label"] for r in entry["runs"]] == ["colbert"]
    from m3search import Collection

    with Collection.open(kept) as col:
        assert set(col.config.outputs) == {"dense", "colbert"}
