"""`m3search index ...` and `m3search search` end to end on the tiny bge-m3, with every input format."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from m3search.cli.main import cli

DOCS = [
    {"id": "a", "text": "The cat sat on the warm mat.", "metadata": {"lang": "en", "year": 2021}},
    {"id": "b", "text": "Der Hund schläft im Garten.", "metadata": {"lang": "de", "year": 2019}},
    {
        "id": "c",
        "text": "Photosynthesis converts light into chemical energy.",
        "metadata": {"lang": "en", "year": 2023},
    },
]


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_m3_dir):
    """A collection built once through the CLI from JSONL, BEIR and plain-text inputs."""
    tmp_path = tmp_path_factory.mktemp("cli")
    path = tmp_path / "col"
    run("index", "create", str(path), "--model", str(tiny_m3_dir), "--runtime", "torch-fp32")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    beir = tmp_path / "corpus.jsonl"
    beir.write_text(
        json.dumps({"_id": "beir1", "title": "Bread", "text": "Flour, water, salt and yeast."}) + "\n"
    )
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "note.txt").write_text("A plain text note about the stock market.")
    out = run("index", "add", str(path), str(docs), str(beir), str(texts), "--runtime", "torch-fp32")
    assert "wrote 5 documents" in out
    return path


@pytest.fixture
def collection(built, tmp_path):
    """A private copy of the built collection (tests may change it)."""
    shutil.copytree(built, tmp_path / "col")
    return tmp_path / "col"


def test_search_json_every_mode(collection):
    for mode in ("dense", "sparse", "colbert", "dense+sparse", "all"):
        hits = json.loads(
            run(
                "search",
                str(collection),
                DOCS[2]["text"],
                "--mode",
                mode,
                "--json",
                "--runtime",
                "torch-fp32",
            )
        )
        assert hits[0]["id"] == "c" and set(hits[0]["scores"]) <= {"dense", "sparse", "colbert"}


def test_formats_are_read(collection):
    hits = json.loads(
        run("search", str(collection), "Bread\nFlour, water, salt and yeast.", "--json", "-k", "1")
    )
    assert hits[0]["id"] == "beir1" and hits[0]["metadata"]["title"] == "Bread"
    hits = json.loads(
        run("search", str(collection), "A plain text note about the stock market.", "--json", "-k", "1")
    )
    assert hits[0]["id"] == "note.txt"


def test_filters_weights_fusion_and_table(collection):
    hits = json.loads(run("search", str(collection), "cat", "--filter", "lang=de", "--json"))
    assert [h["id"] for h in hits] == ["b"]
    hits = json.loads(
        run(
            "search",
            str(collection),
            "cat",
            "--filter",
            '{"year": {"$gte": 2020}}',
            "--filter",
            "lang=en",
            "--fusion",
            "rrf",
            "--weights",
            "1,1,0",
            "--json",
        )
    )
    assert sorted(h["id"] for h in hits) == ["a", "c"]
    table = run("search", str(collection), DOCS[0]["text"], "-k", "2")
    assert table.lstrip().startswith("1. a") and "dense=" in table


def test_delete_and_stats(collection):
    assert "deleted 1 of 2" in run("index", "delete", str(collection), "a", "zzz")
    info = json.loads(run("index", "stats", str(collection), "--json"))
    assert info["count"] == 4
    assert "4 documents" in run("index", "stats", str(collection))
    assert "1 segment" in run("index", "compact", str(collection))


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "{path}", "x", "--filter", "{bad"], "not valid JSON"),
        (["search", "{path}", "x", "--filter", '{"a": {"$regex": "x"}}'], "unknown operator"),
        (["search", "{path}", "x", "--weights", "1,a,2"], "three numbers"),
        (["search", "{missing}", "x"], "no collection"),
        (["index", "create", "{path}", "--dim", "4"], "already exists"),
    ],
)
def test_clean_errors(collection, tmp_path, args, message):
    args = [
        a.replace("{path}", str(collection)).replace("{missing}", str(tmp_path / "missing")) for a in args
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_bad_jsonl_line_loses_nothing(collection, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "z", "text": "fine"}) + "\n{oops\n")
    result = CliRunner().invoke(cli, ["index", "add", str(collection), str(bad)])
    assert result.exit_code != 0 and "bad.jsonl:2" in result.output
    assert json.loads(run("index", "stats", str(collection), "--json"))["count"] == 5


def test_verify_names_damaged_files(collection):
    run("index", "compact", str(collection))
    out = run("index", "verify", str(collection))
    assert f"{collection}: ok (1 segment(s)" in out
    segment = next((collection / "segments").iterdir())
    vectors = segment / "colbert.npy"
    data = bytearray(vectors.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    vectors.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["index", "verify", str(collection)])
    assert result.exit_code != 0
    assert f"DAMAGED segments/{segment.name}/colbert.npy" in result.stderr
    assert "1 damaged file(s)" in result.stderr


def test_create_with_compressed_colbert_options(tmp_path):
    """`index create` passes the ColBERT storage options into the collection's config."""
    path = tmp_path / "vec"
    run("index", "create", str(path), "--dim", "8", "--colbert-dim", "16", "--colbert-dtype", "binary",
        "--colbert-recheck", "20", "--colbert-prune", "punctuation")  # fmt: skip
    config = json.loads((path / "config.json").read_text())
    assert (config["colbert_dtype"], config["colbert_recheck"], config["colbert_prune"]) == (
        "binary",
        20,
        "punctuation",
    )
