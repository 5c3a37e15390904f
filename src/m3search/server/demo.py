"""The demo collection `m3search demo` serves: real multilingual documents, small enough to build in a minute.

From the shared evaluation data beside a checkout (`../shared/data`): SciFact abstracts (English science) and
XQuAD-R paragraphs in seven languages (the same paragraphs translated, so cross-lingual search shows). Without
it, the 40-document multilingual sample bundled in `sample/sample.jsonl`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from m3search.server.catalog import Catalog
from m3search.store import Collection

log = logging.getLogger(__name__)

DEMO_COLLECTION = "sample"
BUNDLED_SAMPLE = Path(__file__).parent / "sample" / "sample.jsonl"
XQUAD_LANGUAGES = ("en", "de", "es", "ru", "zh", "ar", "hi")
#: Tokens kept per document: enough for an abstract's first paragraphs, and a quick first build on a laptop.
DEMO_MAX_LENGTH = 256
#: Documents encoded per upsert (a progress step).
BLOCK = 32


def shared_data_dir() -> Path | None:
    """The shared evaluation data: `$M3SEARCH_SHARED_DATA` when set (empty or missing: none), else
    `shared/data` beside the checkout or beside the working directory, if present."""
    if "M3SEARCH_SHARED_DATA" in os.environ:
        candidates = [Path(os.environ["M3SEARCH_SHARED_DATA"])] if os.environ["M3SEARCH_SHARED_DATA"] else []
    else:
        candidates = [
            Path(__file__).resolve().parents[3].parent / "shared" / "data",
            Path.cwd().parent / "shared" / "data",
        ]
    return next((c for c in candidates if (c / "scifact" / "corpus.jsonl").is_file()), None)


def _scifact(data: Path, limit: int) -> Iterator[dict[str, Any]]:
    with (data / "scifact" / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in islice(f, limit):
            doc = json.loads(line)
            yield {
                "id": f"scifact-{doc['_id']}",
                "text": f"{doc['title']}\n{doc['text']}",
                "metadata": {"source": "scifact", "lang": "en", "title": doc["title"]},
            }


def _xquad(data: Path, per_language: int) -> Iterator[dict[str, Any]]:
    for lang in XQUAD_LANGUAGES:
        path = data / "xquad_r" / "xquad-r" / f"{lang}.json"
        if not path.is_file():
            continue
        articles = json.loads(path.read_text(encoding="utf-8"))["data"]
        paragraphs = [p["context"] for a in articles for p in a["paragraphs"]]
        # Every n-th paragraph: several articles (topics), and the same ones in every language.
        step = max(1, len(paragraphs) // per_language)
        for i in range(0, step * per_language, step):
            yield {
                "id": f"xquad-{lang}-{i}",
                "text": paragraphs[i],
                "metadata": {"source": "xquad-r", "lang": lang, "paragraph": i},
            }


def demo_documents(
    data: Path | None, scifact_docs: int = 120, xquad_per_language: int = 12
) -> list[dict[str, Any]]:
    """The demo's documents: from the shared data when given, else the bundled sample."""
    if data is None:
        with BUNDLED_SAMPLE.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return [*_scifact(data, scifact_docs), *_xquad(data, xquad_per_language)]


def ensure_demo_collection(
    catalog: Catalog, documents: list[dict[str, Any]], *, rebuild: bool = False, progress: bool = True
) -> Collection:
    """The demo collection, built from `documents` unless one for the served model already holds them all.

    Documents a user added to it through the UI are kept on reuse; a partial build (interrupted) is redone.
    """
    from tqdm.auto import tqdm

    if DEMO_COLLECTION in catalog.names():
        collection = catalog.get(DEMO_COLLECTION)
        complete = all(d is not None for d in collection.get([str(d["id"]) for d in documents]))
        if not rebuild and catalog.serves(collection.config) and complete:
            log.info("reusing the demo collection at %s", collection.path)
            return collection
        catalog.delete(DEMO_COLLECTION)
    collection = catalog.create(DEMO_COLLECTION, max_length=DEMO_MAX_LENGTH)
    with tqdm(
        total=len(documents), unit="doc", desc="building the demo collection", disable=not progress
    ) as bar:
        for start in range(0, len(documents), BLOCK):
            block = documents[start : start + BLOCK]
            collection.upsert(block, batch_size=BLOCK)
            bar.update(len(block))
    collection.flush()
    return collection
