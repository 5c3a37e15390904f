"""The real engine behind `m3search eval`: collections remember the runtime that made their vectors, reports
state it, tune-weights holds out queries of a one-split set, and every long phase shows progress on a terminal.

All on the tiny random bge-m3 (fast to encode); the numbers are not the point, the bookkeeping is.
"""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.search.fusion import FUSION_WEIGHTS
from m3search.store.config import CollectionConfig
from tests.conftest import run_on_terminal


def _eval(*args: str):
    return CliRunner().invoke(cli, ["eval", *args])


def test_a_collection_of_another_runtime_is_refused_then_rebuilt_on_request(
    tmp_path, tiny_m3_dir, scifact_dir
):
    kept = tmp_path / "collection"
    common = ["--model", str(tiny_m3_dir), "--dataset", str(scifact_dir), "--max-queries", "5"]
    common += ["--max-docs", "60", "--modes", "dense", "--collection", str(kept)]
    first = _eval(*common, "--runtime", "torch-fp32", "--output", str(tmp_path / "fp32"))
    assert first.exit_code == 0, first.output
    assert CollectionConfig.load(kept).runtime == {"runtime": "torch-fp32", "dtype": "fp32"}

    mixed = _eval(*common, "--runtime", "torch-bf16", "--output", str(tmp_path / "mixed"))
    assert mixed.exit_code != 0 and "Traceback" not in mixed.output
    assert "its vectors were made by runtime torch-fp32 (fp32), not torch-bf16 (bf16)" in mixed.output
    assert "--reindex" in mixed.output and not (tmp_path / "mixed").exists()
    assert CollectionConfig.load(kept).runtime["runtime"] == "torch-fp32"  # untouched

    rebuilt = _eval(*common, "--runtime", "torch-bf16", "--reindex", "--output", str(tmp_path / "bf16"))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert CollectionConfig.load(kept).runtime == {"runtime": "torch-bf16", "dtype": "bf16"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16", "collection", "fp32"]  # no leftovers
    results = json.loads((tmp_path / "bf16" / "results.json").read_text())
    settings = results["settings"]
    assert (settings["runtime"], settings["dtype"], settings["runtime_requested"]) == (
        "torch-bf16",
        "bf16",
        "torch-bf16",
    )
    (task,) = results["tasks"]
    assert task["index"]["reindexed"] == str(kept) and task["index"]["documents"] == 60
    assert "Runtime: **torch-bf16** (bf16)." in (tmp_path / "bf16" / "results.md").read_text()

    again = _eval(*common, "--runtime", "torch-bf16", "--output", str(tmp_path / "again"))
    assert again.exit_code == 0, again.output  # the same runtime reuses it
    (task,) = json.loads((tmp_path / "again" / "results.json").read_text())["tasks"]
    assert task["index"]["reused"] == str(kept)


def test_auto_says_which_runtime_it_chose_and_why(tmp_path, tiny_m3_dir, scifact_dir):
    out = tmp_path / "out"
    result = _eval(
        "--model",
        str(tiny_m3_dir),
        "--dataset",
        str(scifact_dir),
        "--max-queries",
        "3",
        "--max-docs",
        "30",
        "--modes",
        "dense",
        "--output",
        str(out),
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["runtime_requested"] == "auto" and settings["runtime_auto"]
    line = f"runtime auto -> {settings['runtime']} ({settings['dtype']}) for "
    assert line in result.output and settings["runtime_auto"] in result.output
    assert f"chosen by `--runtime auto`: {settings['runtime_auto']}" in (out / "results.md").read_text()


def _tune_args(tiny_m3_dir, xquad_dir, out) -> list[str]:
    return [
        "eval",
        "tune-weights",
        "--model",
        str(tiny_m3_dir),
        "--dataset",
        f"squad:{xquad_dir / 'vi.json'}",
        "--dev-fraction",
        "0.3",
        "--max-dev-queries",
        "12",
        "--max-queries",
        "12",
        "--mode",
        "dense+sparse",
        "--step",
        "0.5",
        "--runtime",
        "torch-fp32",
        "--output",
        str(out),
    ]


def test_tune_weights_holds_out_a_seeded_share_of_a_one_split_set(tmp_path, tiny_m3_dir, xquad_dir):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, _tune_args(tiny_m3_dir, xquad_dir, out))
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    tuning = results["tuning"]
    assert (tuning["dev_split"], tuning["dev_fraction"], tuning["seed"]) == ("test[dev]", 0.3, 0)
    assert tuning["dev_queries"] == 12 and tuning["best_score"] == max(t["score"] for t in tuning["trials"])
    (task,) = results["tasks"]
    assert task["task"]["split"] == "test[held out]" and task["task"]["queries"] == 12
    default, tuned = [r["label"] for r in task["runs"]][-2:]  # labels state each row's weights
    dense, sparse, _ = FUSION_WEIGHTS["weighted"]["dense+sparse"]
    assert default == f"dense+sparse (weighted {dense:g}/{sparse:g}/0, default)"
    assert tuned.startswith("dense+sparse (weighted ") and tuned.endswith(", tuned)")
    assert "0.3 of its queries drawn with seed 0" in (out / "results.md").read_text()


def test_every_long_phase_shows_progress_on_a_terminal_unless_quiet(tmp_path, tiny_m3_dir, xquad_dir):
    command = [sys.executable, "-m", "m3search.cli.main", *_tune_args(tiny_m3_dir, xquad_dir, tmp_path / "a")]
    shown = run_on_terminal(command)
    for bar in ("index vi/paragraph", "tune weights (coordinate search)", "search vi/paragraph"):
        assert bar in shown, (bar, shown[-2000:])
    assert "12/12" in shown  # the held-out queries, searched
    quiet = [sys.executable, "-m", "m3search.cli.main", *_tune_args(tiny_m3_dir, xquad_dir, tmp_path / "b")]
    shown = run_on_terminal([*quiet, "--quiet"])
    assert "tune weights" not in shown and "index vi" not in shown and "search vi" not in shown
    assert json.loads((tmp_path / "b" / "results.json").read_text())["tuning"]["dev_queries"] == 12
