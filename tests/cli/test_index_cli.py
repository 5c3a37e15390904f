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


def test_search_rerank_is_the_python_rerank(collection):
    """--rerank reaches `Collection.search`: the CLI's ranking is the API's with the same depth."""
    from m3search import Collection

    args = ("--mode", "all", "--candidates", "3", "-k", "2", "--json", "--runtime", "torch-fp32")
    hits = json.loads(run("search", str(collection), DOCS[2]["text"], *args, "--rerank", "2"))
    with Collection.open(collection, runtime="torch-fp32", readonly=True) as col:
        want = col.search(DOCS[2]["text"], k=2, mode="all", candidates=3, rerank=2)
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-6)


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


def test_on_error_skip_writes_the_good_records_and_names_the_bad(collection, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(
        b'{"id": "y", "text": "kept"}\n{"id": "e", "text": ""}\n{"id": "u", "text": "caf\xe9"}\n'
    )
    result = CliRunner().invoke(cli, ["index", "add", str(collection), str(mixed), "--on-error", "skip"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 documents, skipped 2 bad record(s)" in result.output
    assert f"skipped {mixed}:2: document 'e': empty text" in result.output
    assert f"skipped {mixed}:3: not UTF-8" in result.output
    assert json.loads(run("index", "stats", str(collection), "--json"))["count"] == 6


def _write_labels(tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(
            json.dumps({"_id": q, "text": t}) + "\n"
            for q, t in (("q1", "a cat on a warm mat"), ("q2", "flour and yeast"), ("q3", "light to energy"))
        )
    )
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tbeir1\t1\nq3\tc\t1\n")
    return queries, qrels


def test_index_tune_stores_defaults_that_search_then_uses(collection, tmp_path):
    from m3search.search.fusion import FUSIONS
    from m3search.store.search_defaults import SEARCH_DEFAULTS_FILE

    queries, qrels = _write_labels(tmp_path)
    out = run(
        "index", "tune", str(collection), "--queries", str(queries), "--qrels", str(qrels), "--step", "0.5"
    )
    for fusion in FUSIONS:
        assert f"  {fusion} " in out
    stored = json.loads((collection / SEARCH_DEFAULTS_FILE).read_text())
    assert (
        stored["mode"] == "all" and stored["fusion"] in FUSIONS and sum(stored["weights"]) == pytest.approx(1)
    )
    assert (
        stored["source"]["queries"] == str(queries)
        and stored["source"]["score"] >= stored["source"]["default_score"]
    )
    weights = ",".join(str(w) for w in stored["weights"])
    plain = run("search", str(collection), "warm mat", "--json")
    explicit = run(
        "search", str(collection), "warm mat", "--json", "--fusion", stored["fusion"], "--weights", weights
    )
    assert json.loads(plain) == json.loads(explicit)


def test_index_tune_with_pseudo_queries_and_dry_run(collection):
    from m3search.store.search_defaults import SEARCH_DEFAULTS_FILE

    out = run(
        "index",
        "tune",
        str(collection),
        "--pseudo",
        "4",
        "--fusion",
        "weighted,dbsf",
        "--step",
        "0.5",
        "--dry-run",
    )
    assert "chosen:" in out and "rrf" not in out
    assert not (collection / SEARCH_DEFAULTS_FILE).exists()
    result = CliRunner().invoke(cli, ["index", "tune", str(collection), "--queries", "x"])
    assert result.exit_code != 0
    bad = CliRunner().invoke(cli, ["index", "tune", str(collection), "--pseudo", "3", "--fusion", "borda"])
    assert bad.exit_code != 0 and "unknown fusion borda" in bad.output


def test_qdrant_backend_and_migration(built, tmp_path, tiny_m3_dir):
    """`index create --backend qdrant` makes a link every command uses; `index migrate` copies local ->
    qdrant -> local from stored vectors, resumably, and every copy answers like the original."""
    linked, store = tmp_path / "linked", tmp_path / "qdrant"
    out = run(
        "index",
        "create",
        str(linked),
        "--model",
        str(tiny_m3_dir),
        "--backend",
        "qdrant",
        "--qdrant-path",
        str(store),
    )
    assert "collection 'linked'" in out and (linked / "qdrant.json").is_file()
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    assert "wrote 3 documents" in run("index", "add", str(linked), str(docs), "--runtime", "torch-fp32")
    moved, back = tmp_path / "moved", tmp_path / "back"
    out = run("index", "migrate", str(built), str(moved), "--qdrant-path", str(tmp_path / "q2"))
    assert "wrote 5 documents (0 were there)" in out
    assert "wrote 0 documents (5 were there)" in run("index", "migrate", str(built), str(moved))
    assert "wrote 5 documents" in run("index", "migrate", str(moved), str(back), "--backend", "local")

    def search(path, mode):
        return json.loads(
            run("search", str(path), DOCS[2]["text"], "--mode", mode, "--json", "--runtime", "torch-fp32")
        )

    for mode in ("dense", "sparse", "colbert", "dense+sparse", "all"):
        original = [(h["id"], round(h["score"], 4)) for h in search(built, mode)]
        # Qdrant's float32 sums differ from ours in the 4th-5th digit; min-max over five candidates of the tiny
        # model magnifies that to a few 1e-3 in fused scores (0.0024 seen): the ranking must be identical.
        in_qdrant = search(moved, mode)
        assert [h["id"] for h in in_qdrant] == [i for i, _ in original], mode
        assert [h["score"] for h in in_qdrant] == pytest.approx([s for _, s in original], abs=5e-3), mode
        back_again = search(back, mode)  # vectors that went through Qdrant's float32 storage
        assert [h["id"] for h in back_again] == [i for i, _ in original], mode
        assert [h["score"] for h in back_again] == pytest.approx([s for _, s in original], abs=5e-3), mode
        assert search(linked, mode)[0]["id"] == "c"
    assert "deleted 1 of 1" in run("index", "delete", str(linked), "a")
    assert json.loads(run("index", "stats", str(linked), "--json"))["count"] == 2
    assert f"{linked}: ok (2 points read back)" in run("index", "verify", str(linked))


def test_edge_backend_and_migration(built, tmp_path, tiny_m3_dir):
    """`index create --backend edge` makes a directory every command opens without being told the backend;
    `index migrate` copies local -> edge -> local from stored vectors, resumably, ranking like the original."""
    edge = tmp_path / "edge"
    run("index", "create", str(edge), "--model", str(tiny_m3_dir), "--backend", "edge")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    assert "wrote 3 documents" in run("index", "add", str(edge), str(docs), "--runtime", "torch-fp32")
    moved, back = tmp_path / "moved", tmp_path / "back"
    assert "wrote 5 documents (0 were there)" in run(
        "index", "migrate", str(built), str(moved), "--backend", "edge"
    )
    assert "wrote 0 documents (5 were there)" in run("index", "migrate", str(built), str(moved))
    assert "wrote 5 documents" in run("index", "migrate", str(moved), str(back), "--backend", "local")

    def search(path, mode):
        return json.loads(
            run("search", str(path), DOCS[2]["text"], "--mode", mode, "--json", "--runtime", "torch-fp32")
        )

    for mode in ("sparse", "all"):  # every mode and fusion: tests/store/test_backends.py
        original = [(h["id"], round(h["score"], 4)) for h in search(built, mode)]
        for copy in (moved, back):  # fused scores within 5e-3, as on qdrant (float32 sums, min-max)
            found = search(copy, mode)
            assert [h["id"] for h in found] == [i for i, _ in original], (copy, mode)
            assert [h["score"] for h in found] == pytest.approx([s for _, s in original], abs=5e-3), mode
    assert search(edge, "all")[0]["id"] == "c"
    assert "deleted 1 of 1" in run("index", "delete", str(edge), "a")
    stats = json.loads(run("index", "stats", str(edge), "--json"))
    assert (stats["backend"], stats["count"]) == ("edge", 2)
    # compact reports the engine's segments: an edge collection has no local ones
    compacted = run("index", "compact", str(edge))
    segments = json.loads(run("index", "stats", str(edge), "--json"))["edge"]["segments_count"]
    assert segments >= 1 and f"{segments} segment(s), 2 docs" in compacted
    assert f"{moved}: ok (5 points read back" in run("index", "verify", str(moved))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "qdrant"], "--qdrant-url or --qdrant-path"),
        (["--qdrant-url", "http://127.0.0.1:9"], "go with --backend qdrant"),
        (
            ["--backend", "qdrant", "--qdrant-url", "http://127.0.0.1:9"],
            "cannot reach Qdrant at http://127.0.0.1:9",
        ),
    ],
)
def test_qdrant_options_are_checked(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["index", "create", str(tmp_path / "x"), "--dim", "4", *args])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "x").exists()


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
    """`index create` passes the ColBERT and sparse storage options into the collection's config."""
    path = tmp_path / "vec"
    run("index", "create", str(path), "--dim", "8", "--colbert-dim", "16", "--colbert-dtype", "binary",
        "--colbert-recheck", "20", "--colbert-prune", "punctuation", "--no-sparse-forward")  # fmt: skip
    config = json.loads((path / "config.json").read_text())
    assert (config["colbert_dtype"], config["colbert_recheck"], config["colbert_prune"]) == (
        "binary",
        20,
        "punctuation",
    )
    assert config["sparse_forward"] is False
