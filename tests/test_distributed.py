"""Distributed ingest on a local Ray cluster (loopback only, started once for the module): the same collection
as a plain upsert, exactly once through a worker crash, resumable, bad records reported with FILE:LINE."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner

from m3search import Collection
from m3search.cli.main import cli
from m3search.distributed import DocumentEncoder, upsert_distributed
from m3search.errors import InvalidInputError, MissingExtraError
from m3search.jsonl import corpus_records
from m3search.store.database import DB_FILE, unpack_sparse

RUNTIME = "torch-fp32"
WORDS = [
    "river",
    "stone",
    "light",
    "harbour",
    "winter",
    "garden",
    "signal",
    "market",
    "bridge",
    "lantern",
    "orchard",
    "violin",
]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local two-CPU Ray for every test here, on 127.0.0.1, without the dashboard."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


def _corpus(n: int, seed: int = 0) -> list[dict]:
    """BEIR records of varied lengths and words (titles become metadata, as in `index add`)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "_id": f"d{i}",
            "title": f"{WORDS[i % len(WORDS)]} {i}",
            "text": " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))),
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _create(path: Path, model: Path | str) -> Path:
    Collection.create(path, model, runtime=RUNTIME).close()
    return path


def _stored(path: Path) -> dict[str, tuple]:
    """id -> (dense, sparse ids, sparse weights, colbert bytes) as written to the collection's database."""
    with sqlite3.connect(path / DB_FILE) as db:
        rows = db.execute(
            "SELECT d.id, p.dense, p.sparse, p.colbert FROM pending p JOIN docs d ON d.seq = p.seq"
        ).fetchall()
    out = {}
    for doc_id, dense, sparse, colbert in rows:
        ids, weights = unpack_sparse(sparse) if sparse is not None else (np.zeros(0), np.zeros(0))
        out[doc_id] = (
            np.frombuffer(dense, np.float32),
            ids,
            weights,
            None if colbert is None else np.frombuffer(colbert, np.float16),
        )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny_m3_dir", "e5_dir"])
def test_distributed_equals_plain_upsert(ray_cluster, model, request, tmp_path: Path) -> None:
    model_dir = request.getfixturevalue(model)
    source = _write(tmp_path / "corpus.jsonl", _corpus(40))
    plain = _create(tmp_path / "plain", model_dir)
    with Collection.open(plain, runtime=RUNTIME, cache=False) as collection:
        collection.upsert([r for _, r in corpus_records(source)], batch_size=8)
    dist = _create(tmp_path / "dist", model_dir)
    summary = upsert_distributed(
        dist, [source], workers=2, batch_size=8, runtime=RUNTIME, show_progress=False
    )
    assert summary.documents == 40 and summary.unchanged == 0 and summary.bad == []
    assert set(summary.seconds) == {"read", "encode", "write", "total"}
    a, b = _stored(plain), _stored(dist)
    assert sorted(a) == sorted(b) == sorted(f"d{i}" for i in range(40))
    for doc_id in a:
        np.testing.assert_allclose(b[doc_id][0], a[doc_id][0], atol=1e-6)
        np.testing.assert_array_equal(b[doc_id][1], a[doc_id][1])
        np.testing.assert_allclose(b[doc_id][2], a[doc_id][2], atol=1e-6)
        if a[doc_id][3] is not None:
            np.testing.assert_allclose(b[doc_id][3], a[doc_id][3], atol=1e-3)  # stored as float16
    with (
        Collection.open(plain, readonly=True, runtime=RUNTIME) as p,
        Collection.open(dist, readonly=True, runtime=RUNTIME) as d,
    ):
        assert p.get([f"d{i}" for i in range(40)]) == d.get([f"d{i}" for i in range(40)])
        for query in ("river stone", "winter garden lantern", "violin 7"):
            hp, hd = p.search(query, k=10), d.search(query, k=10)
            assert [h.id for h in hp] == [h.id for h in hd]
            np.testing.assert_allclose([h.score for h in hd], [h.score for h in hp], atol=1e-5)


@pytest.mark.slow
def test_worker_killed_mid_run_every_document_once(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    marker = tmp_path / "died"

    class DiesOnce(DocumentEncoder):
        """Kills its own worker process on the batch holding position 20, the first time only."""

        def __call__(self, batch):
            if 20 in batch["pos"] and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    source = _write(tmp_path / "corpus.jsonl", _corpus(48))
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    summary = upsert_distributed(
        dist, [source], workers=2, batch_size=4, runtime=RUNTIME, show_progress=False, encoder_actor=DiesOnce
    )
    assert marker.exists()  # a worker did die
    assert summary.documents == 48
    with sqlite3.connect(dist / DB_FILE) as db:
        ids = [r[0] for r in db.execute("SELECT d.id FROM docs d JOIN pending p ON p.seq = d.seq")]
    assert sorted(ids) == sorted(f"d{i}" for i in range(48))  # each exactly once, vectors and all
    with Collection.open(dist, readonly=True) as collection:
        assert collection.count() == 48


@pytest.mark.slow
def test_rerun_resumes_and_rewrites_only_changed(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    rows = _corpus(30, seed=3)
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    # an interrupted run: only the first 12 documents made it
    first = upsert_distributed(
        dist, [_write(tmp_path / "part.jsonl", rows[:12])], runtime=RUNTIME, show_progress=False
    )
    assert first.documents == 12
    rows[5]["text"] += " changed"
    rows[6]["title"] = "new title"  # metadata (and text) changed
    source = _write(tmp_path / "all.jsonl", rows)
    again = upsert_distributed(dist, [source], runtime=RUNTIME, show_progress=False)
    assert (again.documents, again.unchanged) == (18 + 2, 10)
    before = _stored(dist)
    last = upsert_distributed(dist, [source], runtime=RUNTIME, show_progress=False)
    assert (last.documents, last.unchanged) == (0, 30)
    after = _stored(dist)
    assert sorted(after) == sorted(before) and all(np.array_equal(after[i][0], before[i][0]) for i in after)
    with Collection.open(dist, readonly=True) as collection:
        assert collection.count() == 30
        assert collection.get("d5")[0].text.endswith(" changed")


def _bad_corpus(path: Path) -> Path:
    lines = [
        b'{"id": "ok1", "text": "first good"}',
        b'{"id": "empty", "text": "   "}',
        b'{"id": "latin", "text": "caf\xe9"}',
        b'{"id": "broken", "text": ',
        b'{"text": "no id here"}',
        b'{"id": "ok1", "text": "same id again"}',
        b'{"id": "ok2", "text": "second good"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_records_skipped_with_file_line(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    source = _bad_corpus(tmp_path / "bad.jsonl")
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    summary = upsert_distributed(dist, [source], runtime=RUNTIME, on_error="skip", show_progress=False)
    assert summary.documents == 2
    assert [b.split(": ", 1)[0] for b in summary.bad] == [f"{source}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "empty text" in summary.bad[0] and "not UTF-8" in summary.bad[1]
    assert "not valid JSON" in summary.bad[2] and "needs an 'id'" in summary.bad[3]
    assert f"already at {source}:1" in summary.bad[4]
    with Collection.open(dist, readonly=True) as collection:
        assert [d.text for d in collection.get(["ok1", "ok2"])] == ["first good", "second good"]
        assert collection.count() == 2


def test_bad_records_fail_before_writing(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    source = _bad_corpus(tmp_path / "bad.jsonl")
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    with pytest.raises(InvalidInputError) as err:
        upsert_distributed(dist, [source], runtime=RUNTIME, on_error="fail", show_progress=False)
    for n in (2, 3, 4, 5, 6):
        assert f"{source}:{n}:" in str(err.value)
    with Collection.open(dist, readonly=True) as collection:
        assert collection.count() == 0


def test_cli_add_ray(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    source = _write(tmp_path / "corpus.jsonl", _corpus(10))
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    args = ["index", "add", str(dist), str(source), "--ray", "--workers", "1", "--batch-size", "4"]
    result = CliRunner().invoke(cli, [*args, "--runtime", RUNTIME])
    assert result.exit_code == 0, result.output
    assert "wrote 10 documents (0 unchanged, 0 bad skipped" in result.output
    again = CliRunner().invoke(cli, [*args, "--runtime", RUNTIME])
    assert "wrote 0 documents (10 unchanged" in again.output
    bad = CliRunner().invoke(cli, [*args[:3], str(_bad_corpus(tmp_path / "bad.jsonl")), *args[4:]])
    assert bad.exit_code != 0 and f"{tmp_path / 'bad.jsonl'}:3: not UTF-8" in bad.output


def test_without_ray_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees: ImportError
    with pytest.raises(MissingExtraError, match=r"m3search\[ray\]"):
        upsert_distributed(tmp_path / "nothing", [tmp_path / "none.jsonl"])
    result = CliRunner().invoke(cli, ["index", "add", str(tmp_path), str(tmp_path), "--ray"])
    assert result.exit_code != 0 and "pip install 'm3search[ray]'" in result.output
