"""The demo: its documents (shared data or the bundled sample), a collection built once and reused."""

from __future__ import annotations

import json
import os

from click.testing import CliRunner

from m3search.cli.main import cli
from m3search.server.catalog import Catalog
from m3search.server.demo import (
    DEMO_COLLECTION,
    DEMO_MAX_LENGTH,
    XQUAD_LANGUAGES,
    demo_documents,
    ensure_demo_collection,
)


def test_bundled_sample_is_multilingual_and_well_formed():
    docs = demo_documents(None)
    assert len(docs) == 40 and len({d["id"] for d in docs}) == 40
    assert all(d["text"].strip() and d["metadata"]["lang"] for d in docs)
    assert len({d["metadata"]["lang"] for d in docs}) >= 10


def test_shared_data_documents(shared_data):
    docs = demo_documents(shared_data, scifact_docs=5, xquad_per_language=3)
    scifact = [d for d in docs if d["metadata"]["source"] == "scifact"]
    xquad = [d for d in docs if d["metadata"]["source"] == "xquad-r"]
    assert len(scifact) == 5 and len(xquad) == 3 * len(XQUAD_LANGUAGES)
    first = json.loads((shared_data / "scifact" / "corpus.jsonl").open(encoding="utf-8").readline())
    assert scifact[0]["id"] == f"scifact-{first['_id']}" and first["title"] in scifact[0]["text"]
    # The same paragraphs in every language: parallel ids.
    by_lang = {}
    for d in xquad:
        by_lang.setdefault(d["metadata"]["lang"], []).append(d["metadata"]["paragraph"])
    assert len({tuple(v) for v in by_lang.values()}) == 1
    assert len({d["id"] for d in docs}) == len(docs)


def test_collection_is_built_once_and_reused(m3, tmp_path):
    docs = demo_documents(None)[:6]
    catalog = Catalog(tmp_path / "collections", m3, str(m3.path))
    built = ensure_demo_collection(catalog, docs, progress=False)
    assert built.count() == 6 and built.config.max_length == DEMO_MAX_LENGTH
    built.upsert([{"id": "mine", "text": "added by a user"}])
    reused = ensure_demo_collection(catalog, docs, progress=False)
    assert reused is built and reused.count() == 7  # kept, with the user's document
    more = demo_documents(None)[:8]
    rebuilt = ensure_demo_collection(catalog, more, progress=False)  # incomplete: built again
    assert rebuilt.count() == 8 and rebuilt.get(["mine"]) == [None]
    catalog.close()


def test_demo_command_builds_without_serving(m3_dir):
    result = CliRunner().invoke(
        cli, ["demo", "--model", str(m3_dir), "--build-only"], env={"M3SEARCH_SHARED_DATA": ""}
    )
    assert result.exit_code == 0, result.output
    assert "40 documents from the bundled multilingual sample" in result.output
    home = os.environ["M3SEARCH_HOME"]
    assert f"collection '{DEMO_COLLECTION}' (40 documents) at {home}/demo/collections/sample" in result.output
