"""Retrieval tasks from real data: BEIR folders and SQuAD-style sets (XQuAD-R), mono- and cross-lingual.

A task is a corpus, queries and graded relevance judgments (qrels). BEIR folders are read as BEIR does
(title + text, string ids, `qrels/<split>.tsv`). SQuAD-style files become answer retrieval: each question's
relevant candidate is the paragraph, or with XQuAD-R's `sentences` the sentence, that holds its answer.
XQuAD-R's files are parallel (same articles, paragraphs and question ids in the same order in every language),
so a question in one language is judged against the candidates of another through the question id.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from m3search.errors import InvalidInputError
from m3search.jsonl import json_objects

Qrels = dict[str, dict[str, int]]
"""query id -> {document id: relevance grade}; grades >= 1 are relevant, higher is more relevant."""

Unit = Literal["paragraph", "sentence"]
UNITS: tuple[Unit, ...] = ("paragraph", "sentence")


@dataclass(frozen=True)
class Document:
    """One candidate: BEIR's (id, title, text) plus free metadata (language, source article...)."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def full_text(self) -> str:
        """What gets indexed: title and text joined by a space, the BEIR convention."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class RetrievalTask:
    """A corpus, the queries to run and their judgments; every query has at least one relevant document."""

    name: str
    split: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels

    def describe(self) -> dict[str, Any]:
        """Sizes and identity, for results.json."""
        return {
            "name": self.name,
            "split": self.split,
            "documents": len(self.corpus),
            "queries": len(self.queries),
            "judgments": sum(len(j) for j in self.qrels.values()),
        }


def _task(
    name: str, split: str, corpus: dict[str, Document], queries: dict[str, str], qrels: Qrels
) -> RetrievalTask:
    """Keep the queries that have text and a relevant document; check judged ids exist in the corpus."""
    kept: dict[str, str] = {}
    for qid, judged in qrels.items():
        missing = [d for d in judged if d not in corpus]
        if missing:
            raise InvalidInputError(f"{name}: query {qid} judges document {missing[0]!r}, not in the corpus")
        if qid not in queries:
            raise InvalidInputError(f"{name}: query {qid} has judgments but no text in the queries")
        if any(g >= 1 for g in judged.values()):
            kept[qid] = queries[qid]
    if not kept:
        raise InvalidInputError(f"{name} ({split}): no query has a relevant document")
    return RetrievalTask(name, split, corpus, kept, {q: dict(qrels[q]) for q in kept})


# --- BEIR ---------------------------------------------------------------------------------------------------


def _jsonl(path: Path) -> Iterable[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, obj in json_objects(f, str(path)):
            if "_id" not in obj or not isinstance(obj.get("text"), str):
                raise InvalidInputError(f"{path}:{lineno}: expected an object with '_id' and a 'text' string")
            yield obj


def read_queries(path: Path) -> dict[str, str]:
    """BEIR's queries.jsonl (`{"_id", "text"}` a line) as query id -> text."""
    return {str(o["_id"]): o["text"] for o in _jsonl(path)}


def read_qrels(path: Path) -> Qrels:
    """BEIR's qrels TSV (header `query-id corpus-id score`; integer grades) as query -> {doc: grade}."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        for lineno, row in enumerate(rows, 1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if not row:
                continue
            if len(row) != 3:
                raise InvalidInputError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(row)}")
            try:
                grade = int(row[2])
            except ValueError:
                raise InvalidInputError(f"{path}:{lineno}: relevance {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(path: str | Path, split: str = "test") -> RetrievalTask:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv; the task keeps the judged queries."""
    root = Path(path)
    files = {
        "corpus": root / "corpus.jsonl",
        "queries": root / "queries.jsonl",
        "qrels": root / "qrels" / f"{split}.tsv",
    }
    for what, file in files.items():
        if not file.is_file():
            splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if what == "qrels" else []
            hint = f" (splits here: {', '.join(splits)})" if splits else ""
            raise InvalidInputError(f"{root} is not a BEIR dataset: {file} is missing{hint}")
    corpus = {
        str(o["_id"]): Document(str(o["_id"]), o["text"], str(o.get("title") or ""), o.get("metadata") or {})
        for o in _jsonl(files["corpus"])
    }
    queries = read_queries(files["queries"])
    return _task(root.name, split, corpus, queries, read_qrels(files["qrels"]))


# --- SQuAD-style (XQuAD-R) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Question:
    id: str
    text: str
    paragraph: str  # id of the paragraph holding the answer
    sentence: str | None  # id of the sentence holding the answer start, when sentences are annotated


def _read_squad(path: Path, lang: str) -> tuple[list[Document], list[Document] | None, list[_Question]]:
    """Paragraphs, sentences (None without annotations) and questions of one SQuAD JSON file.

    Ids are positional, `<article>-<paragraph>[-<sentence>]`, which is what makes parallel files comparable.
    A question's sentence is the one whose `sentence_breaks` span holds the answer's first character.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        return _parse_squad(data, lang)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InvalidInputError(
            f"{path} is not a SQuAD-style JSON file ({type(exc).__name__}: {exc})"
        ) from None


def _parse_squad(
    data: list[dict[str, Any]], lang: str
) -> tuple[list[Document], list[Document] | None, list[_Question]]:
    annotated = all(
        "sentences" in para and "sentence_breaks" in para
        for article in data
        for para in article["paragraphs"]
    )
    paragraphs: list[Document] = []
    sentences: list[Document] = []
    questions: list[_Question] = []
    for a, article in enumerate(data):
        for p, para in enumerate(article["paragraphs"]):
            pid = f"{a}-{p}"
            meta = {"lang": lang, "title": article.get("title", "")}
            paragraphs.append(Document(pid, para["context"], metadata=meta))
            if annotated:
                if len(para["sentences"]) != len(para["sentence_breaks"]):
                    raise ValueError(
                        f"paragraph {pid} has {len(para['sentences'])} sentences but "
                        f"{len(para['sentence_breaks'])} sentence breaks"
                    )
                sentences.extend(
                    Document(f"{pid}-{s}", text, metadata=meta) for s, text in enumerate(para["sentences"])
                )
            for qa in para["qas"]:
                if not qa.get("answers"):
                    continue  # unanswerable (SQuAD 2.0): nothing to retrieve
                sid = None
                if annotated:
                    start = qa["answers"][0]["answer_start"]
                    hits = [s for s, (lo, hi) in enumerate(para["sentence_breaks"]) if lo <= start < hi]
                    if len(hits) != 1:
                        raise ValueError(f"the answer of question {qa['id']} starts in no sentence")
                    sid = f"{pid}-{hits[0]}"
                questions.append(_Question(str(qa["id"]), qa["question"], pid, sid))
    return paragraphs, sentences if annotated else None, questions


def squad_task(
    query_file: str | Path,
    doc_file: str | Path | None = None,
    *,
    unit: Unit = "paragraph",
    query_lang: str = "",
    doc_lang: str = "",
    name: str | None = None,
) -> RetrievalTask:
    """Answer retrieval from SQuAD-style files: questions from `query_file`, candidates from `doc_file`.

    With two files (cross-lingual) they must be parallel: the same question ids in the same paragraphs; a
    question's relevant candidate is the doc-language paragraph or sentence that holds the answer.
    """
    if unit not in UNITS:
        raise InvalidInputError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    query_file = Path(query_file)
    doc_file = Path(doc_file) if doc_file is not None else query_file
    paragraphs, sentences, doc_questions = _read_squad(doc_file, doc_lang)
    questions = doc_questions if doc_file == query_file else _read_squad(query_file, query_lang)[2]
    if unit == "sentence" and sentences is None:
        raise InvalidInputError(
            f"{doc_file} has no sentence annotations ('sentences', 'sentence_breaks'); use --unit paragraph"
        )
    by_id = {q.id: q for q in doc_questions}
    for q in questions:
        twin = by_id.get(q.id)
        if twin is None or twin.paragraph != q.paragraph:
            where = "is missing" if twin is None else "sits in another paragraph"
            raise InvalidInputError(
                f"{query_file} and {doc_file} are not parallel: question {q.id} {where} in {doc_file}"
            )
    units = sentences if unit == "sentence" and sentences is not None else paragraphs
    corpus = {d.id: d for d in units}
    queries = {q.id: q.text for q in questions}
    target = (lambda q: q.sentence) if unit == "sentence" else (lambda q: q.paragraph)
    qrels = {q.id: {target(by_id[q.id]): 1} for q in questions}
    if name is None:
        pair = f"{query_lang}-{doc_lang}" if query_lang or doc_lang else query_file.stem
        name = f"{query_file.parent.name}/{pair}/{unit}"
    return _task(name, "test", corpus, queries, qrels)


def squad_languages(folder: str | Path) -> list[str]:
    """The languages of a folder of parallel SQuAD-style files named `<lang>.json` (XQuAD-R's layout)."""
    return sorted(p.stem for p in Path(folder).glob("*.json"))


# --- Dataset specs and slices -------------------------------------------------------------------------------

SQUAD_PREFIXES = ("xquad-r:", "squad:")


def _squad_folder(path: Path) -> Path:
    """The folder of `<lang>.json` files: `path` itself or its `xquad-r/` subfolder (the release layout)."""
    for folder in (path, path / "xquad-r"):
        if folder.is_dir() and squad_languages(folder):
            return folder
    raise InvalidInputError(f"{path} holds no SQuAD-style <lang>.json files (nor does {path / 'xquad-r'})")


def _languages(value: str | Sequence[str], available: list[str]) -> list[str]:
    langs = (
        available
        if value == "all"
        else ([v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value))
    )
    unknown = [lang for lang in langs if lang not in available]
    if unknown or not langs:
        raise InvalidInputError(
            f"language(s) {', '.join(unknown) or '(none)'} not available; "
            f"choose from {', '.join(available)} or 'all'"
        )
    return langs


def load_tasks(
    spec: str,
    *,
    split: str = "test",
    query_lang: str | Sequence[str] | None = None,
    doc_lang: str | Sequence[str] | None = None,
    unit: Unit | None = None,
) -> list[RetrievalTask]:
    """Tasks named by a dataset spec: `PATH` (a BEIR folder) or `xquad-r:PATH` / `squad:PATH`.

    For SQuAD-style folders, `query_lang` (default en) and `doc_lang` take a language, a comma-separated list or
    `all`; one task per (query, doc) pair; `doc_lang` defaults to the query language. `squad:FILE.json` is one
    monolingual task. `unit` (default paragraph) is SQuAD-style only. An option that cannot apply to `spec`
    (languages for one file, languages or unit for BEIR) is an error rather than silently ignored.
    """
    langs = [f"--{n}-lang" for n, v in (("query", query_lang), ("doc", doc_lang)) if v is not None]
    for prefix in SQUAD_PREFIXES:
        if spec.startswith(prefix):
            path = Path(spec[len(prefix) :])
            if split != "test":
                raise InvalidInputError(f"{spec} has only a test split, not {split!r}")
            unit = unit or "paragraph"
            if path.is_file():
                if langs:
                    raise InvalidInputError(
                        f"{' and '.join(langs)} cannot apply to {spec}: one file holds one language; give a "
                        f"folder of parallel <lang>.json files (e.g. xquad-r:{path.parent}) for other pairs"
                    )
                return [squad_task(path, unit=unit, name=f"{path.stem}/{unit}")]
            query_lang = query_lang if query_lang is not None else "en"
            folder = _squad_folder(path)
            available = squad_languages(folder)
            label = "xquad-r" if prefix == "xquad-r:" else folder.name
            return [
                squad_task(
                    folder / f"{q}.json",
                    folder / f"{d}.json",
                    unit=unit,
                    query_lang=q,
                    doc_lang=d,
                    name=f"{label}/{q}-{d}/{unit}",
                )
                for q in _languages(query_lang, available)
                for d in (_languages(doc_lang, available) if doc_lang is not None else [q])
            ]
    path = Path(spec)
    if not path.is_dir():
        raise InvalidInputError(f"dataset {spec!r} not found: give a BEIR folder, xquad-r:PATH or squad:PATH")
    squad_only = langs + (["--unit"] if unit is not None else [])
    if squad_only:
        raise InvalidInputError(
            f"{' and '.join(squad_only)} cannot apply to {spec}: a BEIR folder has one corpus and its own "
            "queries; these options choose languages and units of SQuAD-style sets (xquad-r:PATH, squad:PATH)"
        )
    return [load_beir(path, split)]


def _stable_order(ids: Iterable[str], salt: str) -> list[str]:
    """Ids in a pseudo-random order that depends only on the ids (so smaller slices nest in larger ones)."""
    return sorted(ids, key=lambda i: hashlib.sha1(f"{salt}:{i}".encode()).hexdigest())


def slice_task(
    task: RetrievalTask, *, max_queries: int | None = None, max_docs: int | None = None
) -> RetrievalTask:
    """A deterministic sub-task for quick runs (CI): a fixed sample of queries, and optionally of documents.

    The document sample always keeps every document judged for the kept queries and fills up to `max_docs`
    with other documents in a fixed pseudo-random order, so the slice stays a real retrieval problem.
    """
    for label, value in (("max_queries", max_queries), ("max_docs", max_docs)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{label} must be at least 1, got {value}")
    qids = list(task.queries)
    if max_queries is not None and max_queries < len(qids):
        keep = set(_stable_order(qids, "query")[:max_queries])
        qids = [q for q in qids if q in keep]
    qrels = {q: task.qrels[q] for q in qids}
    corpus = task.corpus
    if max_docs is not None and max_docs < len(corpus):
        judged = {d for j in qrels.values() for d in j}
        others = [d for d in _stable_order(corpus, "doc") if d not in judged]
        keep = judged | set(others[: max(0, max_docs - len(judged))])
        corpus = {d: doc for d, doc in corpus.items() if d in keep}
    if len(qids) == len(task.queries) and corpus is task.corpus:
        return task
    return replace(task, corpus=corpus, queries={q: task.queries[q] for q in qids}, qrels=qrels)
