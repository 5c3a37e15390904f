"""Distributed ingest on a local Ray cluster (loopback only, started once for the module): the same collection
as a plain upsert (texts, and images through the collection's image encoder), exactly once through a worker
crash, resumable, bad records reported with FILE:LINE."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from PIL import Image

from m3search import Collection, Document
from m3search.cli.main import cli
from m3search.distributed import DocumentEncoder, upsert_distributed
from m3search.encoders.image.adapter import AdapterImageEncoder
from m3search.errors import InvalidInputError, MissingExtraError
from m3search.store.corpus import read_corpus
from m3search.store.ingest import PreparedBatch
from m3search.threads import one_thread

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


def _stored(path: Path) -> dict[str, Document]:
    """id -> the document with its stored vectors, as exported for migration."""
    with Collection.open(path, readonly=True, cache=False) as collection:
        return {doc.id: doc for batch in collection.export() for doc in batch.docs}


def _same_scores(a: list, b: list) -> None:
    """Hits' scores, fused and per output, as equal as `_same_vectors` lets them be: 1e-5 apart for dense and
    sparse; a ColBERT token stored in float16 may round to the neighbouring half, which moves a unit token's dot
    product, hence the ColBERT score and the fused one, by up to 2^-11."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.scores.keys() == y.scores.keys()
        for output, score in x.scores.items():
            assert y.scores[output] == pytest.approx(score, abs=2**-11 if output == "colbert" else 1e-5)
        assert y.score == pytest.approx(x.score, abs=2**-11 if "colbert" in x.scores else 1e-5)


def _thumbnails(path: Path) -> dict[str, bytes]:
    """id -> the JPEG thumbnail stored with each image document."""
    with Collection.open(path, readonly=True, cache=False) as collection:
        return {doc_id: jpeg for batch in collection.export() for doc_id, jpeg in batch.thumbnails.items()}


def _same_vectors(a: dict[str, Document], b: dict[str, Document]) -> None:
    assert sorted(a) == sorted(b)
    for doc_id, x in a.items():
        y = b[doc_id]
        assert (y.kind, y.text, y.metadata) == (x.kind, x.text, x.metadata)
        np.testing.assert_allclose(y.dense, x.dense, atol=1e-6)
        assert (x.colbert is None) == (y.colbert is None)  # an image alone has no token vectors
        if x.colbert is not None:
            # ColBERT is stored in float16: float32 values 1e-7 apart may round to neighbouring halves (one ulp)
            np.testing.assert_allclose(y.colbert, x.colbert, rtol=2**-10, atol=1e-6)
        assert (x.sparse is None) == (y.sparse is None)
        if x.sparse is not None:
            np.testing.assert_array_equal(y.sparse[0], x.sparse[0])
            np.testing.assert_allclose(y.sparse[1], x.sparse[1], atol=1e-6)


@pytest.mark.parametrize("model,workers", [("tiny_m3_dir", 2), ("e5_dir", 1)])
def test_distributed_equals_plain_upsert(ray_cluster, model, workers, request, tmp_path: Path) -> None:
    """bge-m3 (the model's sparse head) and e5 (BM25 weights, computed at commit): same ids, vectors, hits."""
    model_dir = request.getfixturevalue(model)
    source = _write(tmp_path / "corpus.jsonl", _corpus(24))
    plain = _create(tmp_path / "plain", model_dir)
    records = [r for _, r in read_corpus([source])]
    # as the actors encode (calls of 8 texts: a call sorts its texts by length, which sets the padding; one
    # OpenMP thread) and the driver commits (one write: BM25 weights depend on the statistics at commit)
    with Collection.open(plain, runtime=RUNTIME, cache=False) as collection, one_thread("openmp"):
        parts = [collection.prepare(records[i : i + 8], batch_size=8) for i in range(0, len(records), 8)]
        collection.write(
            PreparedBatch([d for p in parts for d in p.docs], [c for p in parts for c in p.counts])
        )
    dist = _create(tmp_path / "dist", model_dir)
    summary = upsert_distributed(
        dist, [source], workers=2, batch_size=8, runtime=RUNTIME, show_progress=False
    )
    assert (summary.documents, summary.unchanged, summary.bad, summary.count) == (24, 0, [], 24)
    assert set(summary.seconds) == {"read", "encode", "write", "total"}
    a, b = _stored(plain), _stored(dist)
    assert sorted(a) == sorted(f"d{i}" for i in range(24))
    _same_vectors(a, b)
    ids = [f"d{i}" for i in range(24)]
    with (
        Collection.open(plain, readonly=True, runtime=RUNTIME) as p,
        Collection.open(dist, readonly=True, runtime=RUNTIME) as d,
    ):
        assert p.get(ids) == d.get(ids)
        for query in ("river stone", "winter garden lantern", "violin 7"):
            hp, hd = p.search(query, k=10), d.search(query, k=10)
            assert [h.id for h in hp] == [h.id for h in hd]
            _same_scores(hp, hd)


def test_worker_killed_mid_run_every_document_once(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    marker = tmp_path / "died"

    class DiesOnce(DocumentEncoder):
        """Kills its own worker process on the batch holding position 10, the first time only (defined here,
        so Ray ships it by value with `marker`)."""

        def __call__(self, batch):
            if 10 in batch["pos"] and not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    source = _write(tmp_path / "corpus.jsonl", _corpus(32))
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    summary = upsert_distributed(
        dist, [source], workers=2, batch_size=4, runtime=RUNTIME, show_progress=False, encoder_actor=DiesOnce
    )
    assert marker.exists()  # a worker did die
    assert (summary.documents, summary.count) == (32, 32)
    stored = _stored(dist)
    assert sorted(stored) == sorted(f"d{i}" for i in range(32))  # each exactly once, vectors and all
    assert all(doc.dense is not None and doc.colbert is not None for doc in stored.values())


def test_rerun_resumes_and_rewrites_only_changed(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    rows = _corpus(20, seed=3)
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    # an interrupted run: only the first 8 documents made it
    part = _write(tmp_path / "part.jsonl", rows[:8])
    first = upsert_distributed(dist, [part], workers=1, runtime=RUNTIME, show_progress=False)
    assert first.documents == 8
    before = _stored(dist)
    rows[5]["text"] += " changed"
    rows[6]["title"] = "new title"  # metadata (and text) changed
    source = _write(tmp_path / "all.jsonl", rows)
    again = upsert_distributed(dist, [source], workers=1, runtime=RUNTIME, show_progress=False)
    assert (again.documents, again.unchanged, again.count) == (12 + 2, 6, 20)
    after = _stored(dist)
    for doc_id in set(before) - {"d5", "d6"}:  # untouched: not written again
        np.testing.assert_array_equal(after[doc_id].dense, before[doc_id].dense)
    last = upsert_distributed(dist, [source], runtime=RUNTIME, show_progress=False)
    assert (last.documents, last.unchanged, last.count) == (0, 20, 20)
    with Collection.open(dist, readonly=True) as collection:
        assert collection.get("d5")[0].text.endswith(" changed")
        assert collection.get("d6")[0].metadata == {"title": "new title"}


def _b64png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 90, 200)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _bad_corpus(path: Path) -> Path:
    lines = [
        b'{"id": "ok1", "text": "first good"}',
        b'{"id": "empty", "text": "   "}',
        b'{"id": "latin", "text": "caf\xe9"}',
        b'{"id": "broken", "text": ',
        b'{"text": "no id here"}',
        b'{"id": "ok1", "text": "same id again"}',
        b'{"id": "ok2", "text": "second good"}',
        # a valid image, but the collection has no image encoder: refused by the worker that prepares it
        json.dumps({"id": "picture", "image": _b64png()}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_records_skipped_with_file_line_or_fail_before_writing(
    ray_cluster, tiny_m3_dir, tmp_path: Path
) -> None:
    source = _bad_corpus(tmp_path / "bad.jsonl")
    dist = _create(tmp_path / "dist", tiny_m3_dir)
    with pytest.raises(InvalidInputError) as err:
        upsert_distributed(dist, [source], runtime=RUNTIME, on_error="fail", show_progress=False)
    for n in (2, 3, 4, 5, 6):
        assert f"{source}:{n}:" in str(err.value)
    with Collection.open(dist, readonly=True) as collection:
        assert collection.count() == 0

    summary = upsert_distributed(
        dist, [source], workers=1, runtime=RUNTIME, on_error="skip", show_progress=False
    )
    assert summary.documents == 2
    assert [b.split(": ", 1)[0] for b in summary.bad] == [f"{source}:{n}" for n in (2, 3, 4, 5, 6, 8)]
    assert "empty text" in summary.bad[0] and "not UTF-8" in summary.bad[1]
    assert "not valid JSON" in summary.bad[2] and "needs an 'id'" in summary.bad[3]
    assert f"already at {source}:1" in summary.bad[4] and "holds no images" in summary.bad[5]
    with Collection.open(dist, readonly=True) as collection:
        assert [d.text for d in collection.get(["ok1", "ok2"])] == ["first good", "second good"]
        assert collection.count() == 2


def test_cli_add_ray_into_qdrant(ray_cluster, tiny_m3_dir, tmp_path: Path) -> None:
    """`index add --ray` into a Qdrant collection (local mode, linked from a directory): the driver writes."""
    rows = _corpus(10)
    source = _write(tmp_path / "corpus.jsonl", rows)
    dist = tmp_path / "dist"
    create = ["index", "create", str(dist), "--model", str(tiny_m3_dir), "--backend", "qdrant"]
    made = CliRunner().invoke(cli, [*create, "--qdrant-path", str(tmp_path / "qdrant"), "--runtime", RUNTIME])
    assert made.exit_code == 0, made.output
    args = ["index", "add", str(dist), str(source), "--ray", "--workers", "1", "--batch-size", "4"]
    result = CliRunner().invoke(cli, [*args, "--runtime", RUNTIME])
    assert result.exit_code == 0, result.output
    assert "wrote 10 documents (0 unchanged, 0 bad skipped" in result.output
    again = CliRunner().invoke(cli, [*args, "--runtime", RUNTIME])
    assert "wrote 0 documents (10 unchanged" in again.output and f"{dist} holds 10" in again.output
    with Collection.open(dist, readonly=True, runtime=RUNTIME) as collection:
        assert collection.search(f"{rows[3]['title']}\n{rows[3]['text']}", k=3)[0].id == "d3"
    # a record only the worker can refuse (an image; the collection has no image encoder), --on-error fail:
    # the others are written, the run fails naming it
    mixed = _write(
        tmp_path / "mixed.jsonl", [{"id": "x1", "text": "fine"}, {"id": "pic", "image": _b64png()}]
    )
    refused = CliRunner().invoke(cli, [*args[:3], str(mixed), *args[4:], "--runtime", RUNTIME])
    assert refused.exit_code != 0, refused.output
    assert "1 record(s) refused while encoding (the other 1 were written)" in refused.output
    assert f"{mixed}:2: " in refused.output and "holds no images" in refused.output
    with Collection.open(dist, readonly=True) as collection:
        assert collection.count() == 11


def _photos(folder: Path, images: list[Path]) -> Path:
    """A folder of photos as a user has one: the first in a subfolder, the rest at the top."""
    (folder / "trip").mkdir(parents=True)
    shutil.copy(images[0], folder / "trip" / images[0].name)
    for image in images[1:]:
        shutil.copy(image, folder / image.name)
    return folder


def _create_with_images(name: str, model: Path, adapter: Path) -> None:
    create = ["index", "create", name, "--model", str(model), "--image-encoder", str(adapter)]
    made = CliRunner().invoke(cli, [*create, "--runtime", RUNTIME])
    assert made.exit_code == 0, made.output


def test_cli_add_ray_image_folder_and_records_equal_plain_add(
    ray_cluster,
    tiny_m3_dir,
    tiny_adapter_dir,
    flickr_images: list[Path],
    flickr_captions: dict[str, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`index add NAME ./photos/ records.jsonl --ray` as a user types it (relative paths, from a working
    directory the Ray workers do not share): the same ids, kinds, vectors, thumbnails and text->image hits as
    `index add` without --ray."""
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "photos", flickr_images[:4])
    records = [  # an image alone (a path relative to the file), an image with a text, a text
        {"id": "alone", "image": f"photos/{flickr_images[1].name}", "metadata": {"from": "records"}},
        {"id": "pair", "image": str(flickr_images[4]), "text": flickr_captions[flickr_images[4].name][0]},
        {"id": "note", "text": "A note about the trip: two dogs and a ball"},
    ]
    _write(tmp_path / "records.jsonl", records)
    inputs, options = ["./photos/", "records.jsonl"], ["--batch-size", "4", "--runtime", RUNTIME]
    for name in ("plain", "dist"):
        _create_with_images(name, tiny_m3_dir, tiny_adapter_dir)
    with one_thread("openmp"):  # as the actors run (one CPU each)
        plain = CliRunner().invoke(cli, ["index", "add", "plain", *inputs, *options])
    assert plain.exit_code == 0, plain.output
    dist = CliRunner().invoke(cli, ["index", "add", "dist", *inputs, "--ray", "--workers", "1", *options])
    assert dist.exit_code == 0, dist.output
    assert "wrote 7 documents (0 unchanged, 0 bad skipped" in dist.output
    a, b = _stored(tmp_path / "plain"), _stored(tmp_path / "dist")
    folder = [f"trip/{flickr_images[0].name}", *(p.name for p in flickr_images[1:4])]
    assert sorted(b) == sorted([*folder, "alone", "pair", "note"])
    assert [b[i].kind for i in (*folder, "alone", "pair", "note")] == ["image"] * 5 + ["image+text", "text"]
    _same_vectors(a, b)
    thumbnails = _thumbnails(tmp_path / "dist")
    assert sorted(thumbnails) == sorted([*folder, "alone", "pair"])
    assert thumbnails == _thumbnails(tmp_path / "plain")
    with (
        Collection.open(tmp_path / "plain", readonly=True, runtime=RUNTIME) as p,
        Collection.open(tmp_path / "dist", readonly=True, runtime=RUNTIME) as d,
    ):
        for image in flickr_images[:4]:
            for kinds, mode in ((["image", "image+text"], "dense"), (None, None)):
                query = flickr_captions[image.name][1]
                hp, hd = (
                    p.search(query, k=7, kinds=kinds, mode=mode),
                    d.search(query, k=7, kinds=kinds, mode=mode),
                )
                # "alone" is a copy of one folder image: the two tie, and float noise orders them
                assert _tie_ordered(hd) == _tie_ordered(hp)
                _same_scores(hp, hd)


def _tie_ordered(hits) -> list[str]:
    """Hit ids best first, hits whose scores agree to 1e-5 (ties up to float noise) ordered by id."""
    return [h.id for h in sorted(hits, key=lambda h: (-round(h.score, 5), h.id))]


def test_image_rerun_encodes_only_changed_images_and_reports_corrupt_file(
    ray_cluster, tiny_m3_dir, tiny_adapter_dir, flickr_images: list[Path], tmp_path: Path
) -> None:
    """A re-run skips the images stored unchanged (written by a plain add here), encodes the one replaced under
    the same name, and reports a corrupt file by name: `fail` before writing anything, `skip` listing it."""
    photos = _photos(tmp_path / "photos", flickr_images[:3])
    path = tmp_path / "dist"
    adapter = AdapterImageEncoder.load(tiny_adapter_dir)
    Collection.create(path, tiny_m3_dir, runtime=RUNTIME, image_encoder=tiny_adapter_dir).close()
    with Collection.open(path, runtime=RUNTIME, cache=False) as collection:
        collection.upsert([r for _, r in read_corpus([photos])])
    before, thumbnails = _stored(path), _thumbnails(path)
    replaced = photos / flickr_images[2].name
    shutil.copy(flickr_images[5], replaced)  # another photo under the same name and path
    (photos / "broken.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    )  # a PNG signature, nothing after it
    run = {"workers": 1, "runtime": RUNTIME, "show_progress": False}
    with pytest.raises(InvalidInputError, match=f"{photos / 'broken.png'}: .*corrupt"):
        upsert_distributed(path, [photos], on_error="fail", **run)
    assert (
        _stored(path)[replaced.name].dense.tolist() == before[replaced.name].dense.tolist()
    )  # nothing written
    summary = upsert_distributed(path, [photos], on_error="skip", **run)
    assert (summary.documents, summary.unchanged, summary.count) == (1, 2, 3)
    assert len(summary.bad) == 1 and summary.bad[0].startswith(f"{photos / 'broken.png'}: ")
    after, now = _stored(path), _thumbnails(path)
    for doc_id in set(before) - {replaced.name}:  # unchanged: not written again
        np.testing.assert_array_equal(after[doc_id].dense, before[doc_id].dense)
        assert now[doc_id] == thumbnails[doc_id]
    np.testing.assert_allclose(
        after[replaced.name].dense, adapter.encode_images([flickr_images[5]])[0], atol=1e-6
    )
    assert now[replaced.name] != thumbnails[replaced.name]
    again = upsert_distributed(path, [photos], on_error="skip", **run)
    assert (again.documents, again.unchanged, len(again.bad)) == (0, 3, 1)


def test_without_ray_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees: ImportError
    with pytest.raises(MissingExtraError, match=r"m3search\[ray\]"):
        upsert_distributed(tmp_path / "nothing", [tmp_path / "none.jsonl"])
    result = CliRunner().invoke(cli, ["index", "add", str(tmp_path), str(tmp_path), "--ray"])
    assert result.exit_code != 0 and "pip install 'm3search[ray]'" in result.output
    alone = CliRunner().invoke(cli, ["index", "add", str(tmp_path), str(tmp_path), "--workers", "4"])
    assert alone.exit_code != 0 and "go with --ray" in alone.output  # without --ray nothing changes
