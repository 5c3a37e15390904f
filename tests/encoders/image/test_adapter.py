"""The adapter: contrastive training learns a real mapping, saves and loads, and runs from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.encoders.image import load_image_encoder
from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.encoders.image.captions import load_image_captions
from m3search.encoders.image.training import (
    TrainConfig,
    evaluate_projection,
    initial_projection,
    random_projection,
    train_projection,
)
from m3search.errors import InvalidInputError, ModelLoadError


@pytest.fixture(scope="module")
def flickr_features(lite0, flickr_images: list[Path]) -> np.ndarray:
    """Real EfficientNet-Lite0 features of the first 250 Flickr photos (sorted by name)."""
    return lite0.encode(flickr_images[:250], batch_size=50)


def _captions_from_a_hidden_map(
    features: np.ndarray, dim: int, per_image: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Caption vectors: a fixed unknown linear map of the standardized features plus per-caption noise."""
    rng = np.random.default_rng(seed)
    standardized = (features - features.mean(0)) / (features.std(0) + 1e-6)
    hidden_map = rng.normal(size=(features.shape[1], dim)) / np.sqrt(features.shape[1])
    clean = standardized @ hidden_map
    captions = np.repeat(clean, per_image, axis=0)
    captions += 0.5 * clean.std() * rng.normal(size=captions.shape)
    captions /= np.linalg.norm(captions, axis=1, keepdims=True)
    return captions.astype(np.float32), np.repeat(np.arange(len(features)), per_image)


@pytest.mark.slow
def test_flickr_captions_in_e5_space_beat_both_baselines(
    flickr_features: np.ndarray, e5_encoder, flickr_dir: Path
) -> None:
    """The real task, small: train on 200 photos' captions embedded by multilingual-e5-small, test on 50."""
    data = load_image_captions(flickr_dir / "captions.txt", flickr_dir / "images").subset(0, 250)
    queries = e5_encoder.encode_queries(data.captions, batch_size=64).dense
    train = data.caption_image < 200
    held_captions = [c for c, t in zip(data.captions, train) if not t]
    passages = e5_encoder.encode_documents(held_captions, batch_size=64).dense
    config = TrainConfig(seed=0)
    projection, _, losses = train_projection(
        flickr_features[:200], queries[train], data.caption_image[train], config
    )
    assert losses[-1] < losses[0]
    held = (flickr_features[200:], queries[~train], passages, data.caption_image[~train] - 200)
    trained = evaluate_projection(projection, *held)
    baselines = [
        evaluate_projection(initial_projection(flickr_features[:200], 384, config), *held),
        evaluate_projection(random_projection(flickr_features[:200], 384, 0), *held),
    ]
    # 50 held-out photos: chance recall@5 is 10%. Measured: trained 58% (t2i) and 76% (i2t), baselines <= 11%.
    assert trained["text_to_image"]["recall@5"] >= 0.4
    assert trained["image_to_text"]["recall@5"] >= 0.5
    for baseline in baselines:
        assert baseline["text_to_image"]["recall@5"] <= 0.25
        assert baseline["image_to_text"]["recall@5"] <= 0.25


def test_training_recovers_a_linear_relation_that_baselines_miss(flickr_features: np.ndarray) -> None:
    flickr_features = flickr_features[:100]
    captions, owner = _captions_from_a_hidden_map(flickr_features, dim=32, per_image=5, seed=0)
    train, held = slice(0, 80), slice(80, 100)
    train_caps = owner < 80
    config = TrainConfig(epochs=60, batch_size=32, seed=0)
    projection, scale, losses = train_projection(
        flickr_features[train], captions[train_caps], owner[train_caps], config
    )
    assert losses[-1] < 0.5 * losses[0]
    assert 1.0 < scale <= 100.0
    held_args = (flickr_features[held], captions[~train_caps], captions[~train_caps], owner[~train_caps] - 80)
    trained = evaluate_projection(projection, *held_args)
    untrained = evaluate_projection(initial_projection(flickr_features[train], 32, config), *held_args)
    rand = evaluate_projection(random_projection(flickr_features[train], 32, 0), *held_args)
    # 20 held-out images: chance recall@1 is 5%, recall@5 25%. 80 training images under-determine a
    # 1280-d map,
    # so the relation is only partly recovered, but far above chance.
    assert trained["text_to_image"]["recall@1"] >= 0.3
    assert trained["image_to_text"]["recall@1"] >= 0.3
    for baseline in (untrained, rand):
        assert baseline["text_to_image"]["recall@1"] < 0.2
        assert trained["text_to_image"]["recall@5"] > baseline["text_to_image"]["recall@5"] + 0.25
    # the same seed gives the same projection
    again, _, _ = train_projection(flickr_features[train], captions[train_caps], owner[train_caps], config)
    assert evaluate_projection(again, *held_args) == trained


def test_mlp_projection_trains_too(flickr_features: np.ndarray) -> None:
    flickr_features = flickr_features[:100]
    captions, owner = _captions_from_a_hidden_map(flickr_features, dim=16, per_image=3, seed=1)
    projection, _, losses = train_projection(
        flickr_features, captions, owner, TrainConfig(epochs=10, batch_size=32, hidden_dim=64)
    )
    assert losses[-1] < losses[0]
    assert projection.net[0].out_features == 64


def test_bad_training_settings() -> None:
    with pytest.raises(InvalidInputError, match="batch_size"):
        TrainConfig(batch_size=1).check()
    with pytest.raises(InvalidInputError, match="hidden_dim"):
        TrainConfig(hidden_dim=0).check()
    with pytest.raises(InvalidInputError, match="at least one caption"):
        train_projection(
            np.ones((3, 4), np.float32), np.ones((2, 8), np.float32), np.array([0, 1]), TrainConfig()
        )


def test_cli_train_save_load_and_eval(
    tiny_m3_dir: Path, flickr_dir: Path, tmp_path: Path, lite0, flickr_images: list[Path]
) -> None:
    pairs = tmp_path / "pairs.csv"
    with (flickr_dir / "captions.txt").open(encoding="utf-8") as f:
        pairs.write_text("".join(f.readlines()[: 1 + 5 * 24]), encoding="utf-8")  # 24 images
    out = tmp_path / "adapter"
    runner = CliRunner()
    common = ["--pairs", str(pairs), "--images", str(flickr_dir / "images")]
    result = runner.invoke(
        cli,
        [
            "images",
            "train-adapter",
            *common,
            "--model",
            str(tiny_m3_dir),
            "--train-images",
            "16",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "held-out recall@k (%) on 8 images, 40 captions" in result.output
    for row in ("trained", "untrained", "random"):
        assert row in result.output
    saved = json.loads((out / "adapter.json").read_text())
    assert saved["tower"] == "efficientnet-lite0" and saved["dim"] == 64 and saved["feature_dim"] == 1280
    assert saved["training"]["train_images"] == 16 and saved["training"]["train_captions"] == 80
    assert set(saved["metrics"]["trained"]["text_to_image"]) == {"recall@1", "recall@5", "recall@10"}
    assert any((tmp_path / "cache").glob("image-efficientnet-lite0-*.npy"))

    adapter = load_image_encoder(out)
    assert isinstance(adapter, AdapterImageEncoder) and not adapter.supports_composed
    with pytest.raises(InvalidInputError, match="cannot encode an image and a text together"):
        adapter.encode_composed(flickr_images[:1], ["a dog"])
    assert adapter.dim == 64 and adapter.text_model == str(tiny_m3_dir)
    vectors = adapter.encode_images(flickr_images[:3])
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, adapter.project(lite0.encode(flickr_images[:3])), atol=1e-5)
    assert adapter.describe()["tower"] == "efficientnet-lite0"

    result = runner.invoke(
        cli, ["images", "eval-adapter", "--adapter", str(out), *common, "--skip-images", "16", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["images"] == 8 and report["trained"] == saved["metrics"]["trained"]


def test_broken_adapter_directories(tmp_path: Path, tiny_m3_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="missing adapter.json, projection.safetensors"):
        AdapterImageEncoder.load(tmp_path)
    (tmp_path / "adapter.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "projection.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="not an m3search image adapter"):
        AdapterImageEncoder.load(tmp_path)
    (tmp_path / "adapter.json").write_text(
        json.dumps(
            {
                "format": "m3search-image-adapter",
                "version": 1,
                "tower": "efficientnet-lite0",
                "text_model": "x",
                "feature_dim": 1280,
                "dim": 8,
            }
        )
    )
    with pytest.raises(ModelLoadError, match="does not fit"):
        AdapterImageEncoder.load(tmp_path)


def test_pairs_file_errors(tmp_path: Path, flickr_dir: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.jpg,hello\n")
    with pytest.raises(InvalidInputError, match="needs the columns 'image' and 'caption'"):
        load_image_captions(bad, flickr_dir / "images")
    bad.write_text("image,caption\nnot-there.jpg,hello\n")
    with pytest.raises(InvalidInputError, match="1 images named in .* are not in"):
        load_image_captions(bad, flickr_dir / "images")
