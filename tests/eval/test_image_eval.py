"""`m3search eval images`: held-out image-caption recall of an adapter against both baselines, as
results.json + Markdown; it reproduces the held-out numbers training recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.errors import InvalidInputError
from m3search.eval.images import load_image_dataset


@pytest.fixture
def small_flickr(flickr_dir: Path, tmp_path: Path) -> Path:
    """The first 24 photos (the ones `tiny_adapter_dir` was trained and held out on) in the Flickr layout."""
    root = tmp_path / "flickr24"
    (root / "images").mkdir(parents=True)
    lines = (flickr_dir / "captions.txt").read_text(encoding="utf-8").splitlines()
    names = sorted({line.split(",", 1)[0] for line in lines[1:]})[:24]
    for name in names:
        (root / "images" / name).symlink_to(flickr_dir / "images" / name)
    keep = [lines[0]] + [line for line in lines[1:] if line.split(",", 1)[0] in set(names)]
    (root / "captions.txt").write_text("\n".join(keep) + "\n", encoding="utf-8")
    return root


def test_eval_images_reproduces_training_metrics(
    tiny_adapter_dir: Path, small_flickr: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "images",
            "--dataset",
            f"flickr8k:{small_flickr}",
            "--adapter",
            str(tiny_adapter_dir),
            "--runtime",
            "torch-fp32",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    recorded = AdapterImageEncoder.load(tiny_adapter_dir).config.metrics
    assert results["task"]["train_images"] == 16 and results["task"]["heldout_images"] == 8
    assert results["task"]["heldout_captions"] == recorded["heldout_captions"] == 40
    for projection in ("trained", "untrained", "random"):
        for way in ("text_to_image", "image_to_text"):
            assert results["projections"][projection][way] == pytest.approx(recorded[projection][way])
    table = (out / "results.md").read_text()
    assert "| projection | t2i R@1 | t2i R@5 | t2i R@10 | i2t R@1 | i2t R@5 | i2t R@10 |" in table
    trained = results["projections"]["trained"]["text_to_image"]["recall@5"]
    assert "| trained | " in table and f"{100 * trained:.1f}" in table.split("| trained |")[1].split("\n")[0]


def test_bad_dataset_and_split(tiny_adapter_dir: Path, small_flickr: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="captions.txt"):
        load_image_dataset(f"flickr8k:{tmp_path}")
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "images",
            "-d",
            str(small_flickr),
            "--adapter",
            str(tiny_adapter_dir),
            "--train-images",
            "24",
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "must leave held-out images" in result.output
