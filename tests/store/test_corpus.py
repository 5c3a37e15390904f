"""The corpus reader `index add` and distributed ingest share: every format, bad records named FILE:LINE."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from m3search.errors import InvalidInputError
from m3search.store.corpus import count, expand, read_corpus


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_parquet_beir_and_jsonl_rows(tmp_path: Path) -> None:
    beir = tmp_path / "corpus.parquet"
    pq.write_table(
        pa.table({"_id": ["b1", "b2"], "title": ["Bread", None], "text": ["Flour.", "Salt."]}), beir
    )
    plain = tmp_path / "docs.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["p1", "p2", None],
                "text": ["one", " ", "three"],
                "metadata": [{"y": 1}, {"y": 2}, {"y": 3}],
            }
        ),
        plain,
    )
    skipped: list[str] = []
    records = list(read_corpus([beir, plain], skipped=skipped))
    assert records == [
        (f"{beir}:1", {"id": "b1", "text": "Bread\nFlour.", "metadata": {"title": "Bread"}}),
        (f"{beir}:2", {"id": "b2", "text": "Salt.", "metadata": {}}),
        (f"{plain}:1", {"id": "p1", "text": "one", "metadata": {"y": 1}}),
    ]
    assert skipped == [f"{plain}:2: document 'p2': empty text", f"{plain}:3: a record needs an 'id'"]
    assert count(expand([beir, plain])) == 5


def test_image_paths_come_out_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative inputs and `image` paths (beside the JSONL file, or from here) become absolute, so a process
    with another working directory (a Ray actor) reads the same files; a file's metadata keeps its path as given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.png").write_bytes(_png())
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "b.png").write_bytes(_png())
    rows = [{"id": "beside", "image": "b.png"}, {"id": "from-here", "image": "photos/a.png"}]
    (tmp_path / "lists" / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = {r["id"]: r for _, r in read_corpus(["photos", "lists/docs.jsonl"])}
    assert records["a.png"]["image"] == tmp_path / "photos" / "a.png"
    assert records["a.png"]["metadata"] == {"path": str(Path("photos") / "a.png")}
    assert records["beside"]["image"] == tmp_path / "lists" / "b.png"
    assert records["from-here"]["image"] == tmp_path / "photos" / "a.png"


def test_image_folder_and_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "good.png").write_bytes(_png())
    (photos / "bad.png").write_bytes(_png()[:40])  # cut short: corrupt
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(
        b"\n".join(
            [
                json.dumps({"id": "a", "image": "photos/good.png", "text": "red"}).encode(),
                b'{"id": "b", "text": "caf\xe9"}',
                b'{"id": "c", "text": ""}',
                b"[1, 2]",
                json.dumps({"id": "a", "text": "again"}).encode(),
            ]
        )
        + b"\n"
    )
    skipped: list[str] = []
    records = list(read_corpus([photos, docs], skipped=skipped))
    assert [(where, r["id"]) for where, r in records] == [
        (str(photos / "good.png"), "good.png"),
        (f"{docs}:1", "a"),
    ]
    assert records[1][1]["image"] == photos / "good.png"  # relative to the JSONL file's folder
    assert (
        skipped[0].startswith(f"{photos / 'bad.png'}: document 'bad.png': image") and "corrupt" in skipped[0]
    )
    assert [s.split(": ", 1)[0] for s in skipped[1:]] == [f"{docs}:{n}" for n in (2, 3, 4, 5)]
    assert "not UTF-8" in skipped[1] and "empty text" in skipped[2] and "expected a JSON object" in skipped[3]
    assert f"already at {docs}:1" in skipped[4]
    with pytest.raises(
        InvalidInputError, match=f"{photos / 'bad.png'}: document 'bad.png': image is corrupt"
    ):
        list(read_corpus([photos]))
