"""Image collections from the shell: `index create --image-encoder`, `index add` of image files and JSONL with
image paths, `search --image`."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from m3search.cli.main import cli


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_image_collection_end_to_end(
    tiny_m3_dir: Path, tiny_adapter_dir: Path, flickr_images: list[Path], tmp_path: Path
) -> None:
    path = tmp_path / "col"
    out = run(
        "index",
        "create",
        str(path),
        "--model",
        str(tiny_m3_dir),
        "--image-encoder",
        str(tiny_adapter_dir),
        "--runtime",
        "torch-fp32",
    )
    assert "images: lite0-tiny" in out
    photos = tmp_path / "photos"
    photos.mkdir()
    for image in flickr_images[:3]:
        shutil.copy(image, photos / image.name)
    docs = tmp_path / "docs.jsonl"
    shutil.copy(flickr_images[3], tmp_path / "dog.jpg")
    docs.write_text(
        json.dumps({"id": "t", "text": "A dog runs on the beach"})
        + "\n"
        + json.dumps({"id": "both", "image": "dog.jpg", "text": "a brown dog"})
        + "\n"
        + json.dumps({"id": "b64", "image": base64.b64encode(flickr_images[4].read_bytes()).decode()})
        + "\n"
    )
    out = run("index", "add", str(path), str(photos), str(docs), "--runtime", "torch-fp32")
    assert "wrote 6 documents" in out

    first = flickr_images[0].name
    hits = json.loads(run("search", str(path), "--image", str(photos / first), "--json", "-k", "5"))
    assert hits[0]["id"] == first and hits[0]["kind"] == "image" and hits[0]["thumbnail"]
    assert hits[0]["metadata"] == {"path": str(photos / first)}
    texts = json.loads(run("search", str(path), "--image", str(photos / first), "--kinds", "text", "--json"))
    assert [h["id"] for h in texts] == ["t"]
    images = json.loads(run("search", str(path), "dog", "--kinds", "image,image+text", "--json"))
    assert {h["id"] for h in images} == {f.name for f in flickr_images[:3]} | {"both", "b64"}
    combo = run("search", str(path), "a brown dog", "--image", str(tmp_path / "dog.jpg"), "--mode", "dense")
    assert combo.splitlines()[0].split()[1:3] == ["both", "[image+text]"]

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = CliRunner().invoke(cli, ["index", "add", str(path), str(broken)])
    assert result.exit_code != 0 and "'bad.png'" in result.output and "truncated" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["search", str(path)])
    assert result.exit_code != 0 and "give a QUERY text, an --image, or both" in result.output
