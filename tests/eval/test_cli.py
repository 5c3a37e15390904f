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
from m3search.search.fusion import FUSION_WEIGHTS, FUSIONS
from tests.eval.conftest import ExhaustiveSearcher


class _Model:
    """What the commands need of a loaded model when the collection is a stand-in."""

    def __init__(self, name):
        self.name = name

    def describe(self):
        return {"name": self.name}

    def runtime_identity(self):
        return None


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
    assert request["rerank"] is None  # the library's
    results = json.loads((out / "results.json").read_text())
    (task,) = results["tasks"]
    assert task["task"]["queries"] == 40 and task["task"]["documents"] == 300
    assert [r["label"] for r in task["runs"]] == [
        "dense",
        "sparse",
        "colbert",
        *(
            f"{m} ({f} {'/'.join(f'{w:g}' for w in FUSION_WEIGHTS[f][m])})"
            for m in ("dense+sparse", "all")
            for f in FUSIONS
        ),
    ]
    assert [r["weights"] for r in task["runs"][3:]] == [
        list(FUSION_WEIGHTS[f][m]) for m in ("dense+sparse", "all") for f in FUSIONS
    ]
    assert results["settings"]["measures"][0] == "ndcg@10" and results["settings"]["max_docs"] == 300
    assert "| sparse |" in result.output  # the Markdown table is printed too
    for name in ("results.md", "scifact_metrics.png", "scifact_recall.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "runs" / "scifact").glob("*.trec"))) == 3 + 2 * len(FUSIONS)


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
        "--candidates",
        "50",
        "--output",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert requests[0]["outputs"] == ["dense", "sparse"]
    assert (requests[0]["normalize"], requests[0]["candidates"]) == ("auto", 50)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["candidates"] == 50 and results["settings"]["encoder"] == {"name": "tiny"}
    runs = results["tasks"][0]["runs"]
    assert [r["label"] for r in runs] == ["sparse", "dense+sparse (rrf 0.5/0.5/0)"]
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
        # options that cannot apply are refused, naming why (never silently ignored)
        (
            ["--dataset", "squad:{xquad}/vi.json", "--query-lang", "ja", "--doc-lang", "en"],
            "--query-lang and --doc-lang cannot apply to squad:",
        ),
        (["--dataset", "{scifact}", "--unit", "sentence"], "--unit cannot apply to"),
        (["--dataset", "{scifact}", "--query-lang", "de"], "a BEIR folder has one corpus"),
        (["--dataset", "{scifact}", "--modes", "dense", "--weights", "1,0,0"], "--weights cannot apply"),
        (["--dataset", "{scifact}", "--modes", "sparse", "--fusion", "rrf"], "no run fuses modes"),
        (["--dataset", "{scifact}", "--fusion", "rrf", "--normalize", "none"], "no run fuses with weights"),
        (["--dataset", "{scifact}", "--modes", "dense,sparse", "--candidates", "50"], "re-score candidates"),
        (["--dataset", "{scifact}", "--modes", "dense+sparse", "--rerank", "50"], "re-rank with ColBERT"),
        (["--dataset", "{scifact}", "--modes", "dense", "--sparse", "bm25"], "no run uses sparse weights"),
        (
            ["--dataset", "{scifact}", "--modes", "sparse", "--dense-index", "flat"],
            "no run uses dense vectors",
        ),
        (["--dataset", "{scifact}", "--reindex"], "--reindex cannot apply: it rebuilds a kept --collection"),
        (["tune-weights", "--dataset", "{scifact}", "--seed", "3"], "--seed cannot apply"),
        (
            ["tune-weights", "--dataset", "{scifact}", "--dev-split", "train", "--dev-fraction", "0.3"],
            "--dev-split cannot apply: --dev-fraction already chooses",
        ),
        (
            ["tune-weights", "--dataset", "{scifact}", "--fusion", "rrf", "--normalize", "minmax"],
            "--normalize",
        ),
        (["tune-weights", "--dataset", "{scifact}", "--dev-fraction", "1.5"], "strictly between 0 and 1"),
    ],
)
def test_eval_errors_are_clean(args, message, scifact_dir, xquad_dir):
    args = [a.replace("{scifact}", str(scifact_dir)).replace("{xquad}", str(xquad_dir)) for a in args]
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
    default, tuned = (
        "/".join(f"{w:g}" for w in ws) for ws in (FUSION_WEIGHTS["weighted"]["all"], tuning["best"])
    )
    assert labels == [
        "dense",
        "sparse",
        "colbert",
        f"all (weighted {default}, default)",
        f"all (weighted {tuned}, tuned)",
    ]
    assert task["runs"][3]["weights"] == list(FUSION_WEIGHTS["weighted"]["all"])
    assert task["runs"][4]["weights"] == tuning["best"]
    assert "## Tuned fusion weights" in result.output


def test_tune_weights_on_a_set_with_one_split_points_to_dev_fraction(xquad_dir):
    """The dev split defaults to train; a SQuAD-style set has none, and the error says so without claiming the
    user passed --split."""
    result = CliRunner().invoke(cli, ["eval", "tune-weights", "--dataset", f"squad:{xquad_dir / 'vi.json'}"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "has only a test split, not 'train'" in result.output and "--dev-fraction" in result.output
    assert "--split train" not in result.output


def test_eval_help_lists_the_options_of_the_implied_run_command():
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0
    head, _, implied = result.output.partition("Options of `run` (implied when no command is given):")
    assert "tune-weights" in head  # the subcommands are still listed
    for option in ("--dataset", "--modes", "--max-docs", "--collection", "--reindex", "--runtime", "--quiet"):
        assert option in implied, option
    assert implied.count("--help") == 0  # -h is the group's, listed once above


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
