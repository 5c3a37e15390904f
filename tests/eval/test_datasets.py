"""Loaders on the real shared data: BEIR SciFact and XQuAD-R, mono- and cross-lingual, and query slices."""

from __future__ import annotations

import json
import shutil

import pytest

from m3search.errors import InvalidInputError
from m3search.eval.datasets import load_beir, load_tasks, slice_task, squad_languages, squad_task

LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
# Candidate sentences per language, as the XQuAD-R README's statistics table gives them.
README_SENTENCES = {
    "ar": 1222,
    "de": 1276,
    "el": 1234,
    "en": 1180,
    "es": 1215,
    "hi": 1244,
    "ru": 1219,
    "th": 852,
    "tr": 1167,
    "vi": 1209,
    "zh": 1196,
}


def _raw_questions(path):
    """qid -> (question, answer text, paragraph text), read straight from a SQuAD JSON file."""
    out = {}
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out[qa["id"]] = (qa["question"], qa["answers"][0]["text"], para["context"])
    return out


def test_scifact_test_split_matches_the_data_readme(scifact, scifact_dir):
    assert len(scifact.corpus) == 5183
    assert len(scifact.queries) == 300
    assert sum(len(j) for j in scifact.qrels.values()) == 339
    assert all(isinstance(d, str) for d in scifact.corpus)
    assert all(g == 1 for j in scifact.qrels.values() for g in j.values())
    first = json.loads((scifact_dir / "corpus.jsonl").open().readline())
    doc = scifact.corpus[first["_id"]]
    assert doc.full_text == first["title"] + " " + first["text"]  # BEIR: title and text, space-joined
    assert scifact.describe() == {
        "name": "scifact",
        "split": "test",
        "documents": 5183,
        "queries": 300,
        "judgments": 339,
    }


def test_scifact_train_split_is_disjoint_from_test(scifact, scifact_dir):
    train = load_beir(scifact_dir, "train")
    assert len(train.queries) == 809
    assert train.corpus.keys() == scifact.corpus.keys()
    assert not set(train.queries) & set(scifact.queries)


def test_beir_missing_split_names_the_available_ones(scifact_dir):
    with pytest.raises(InvalidInputError, match="dev.tsv is missing.*splits here: test, train"):
        load_beir(scifact_dir, "dev")


def test_beir_bad_qrels_line_is_reported(scifact_dir, tmp_path):
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(scifact_dir / name, tmp_path / name)
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t31715818\thigh\n")
    with pytest.raises(InvalidInputError, match="test.tsv:2: relevance 'high' is not an integer"):
        load_beir(tmp_path, "test")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\tnope\t1\n")
    with pytest.raises(InvalidInputError, match="judges document 'nope'"):
        load_beir(tmp_path, "test")


@pytest.mark.parametrize("lang", LANGS)
def test_xquad_r_sizes_per_language(xquad_dir, lang):
    para = squad_task(xquad_dir / f"{lang}.json", unit="paragraph")
    sent = squad_task(xquad_dir / f"{lang}.json", unit="sentence")
    assert len(para.queries) == len(sent.queries) == 1190
    assert len(para.corpus) == 240
    assert len(sent.corpus) == README_SENTENCES[lang]
    assert all(len(j) == 1 for j in sent.qrels.values())


def test_xquad_r_files_are_parallel(xquad_dir):
    """Every language has the same question ids in the same paragraphs (the loader checks), verified raw."""
    en = _raw_questions(xquad_dir / "en.json")
    for lang in LANGS:
        other = _raw_questions(xquad_dir / f"{lang}.json")
        assert other.keys() == en.keys()
        task = squad_task(xquad_dir / "en.json", xquad_dir / f"{lang}.json", query_lang="en", doc_lang=lang)
        assert task.qrels.keys() == en.keys()


@pytest.mark.parametrize("doc_lang", ["zh", "de", "th"])
def test_cross_lingual_paragraph_task_judges_the_doc_language_paragraph(xquad_dir, doc_lang):
    task = squad_task(
        xquad_dir / "en.json", xquad_dir / f"{doc_lang}.json", query_lang="en", doc_lang=doc_lang
    )
    en, other = _raw_questions(xquad_dir / "en.json"), _raw_questions(xquad_dir / f"{doc_lang}.json")
    for qid, judged in task.qrels.items():
        assert task.queries[qid] == en[qid][0]  # the English question
        (doc_id,) = judged
        doc = task.corpus[doc_id]
        assert doc.metadata["lang"] == doc_lang
        assert doc.text == other[qid][2]  # the doc-language paragraph of that question
        assert other[qid][1] in doc.text
    assert task.name == f"{xquad_dir.name}/en-{doc_lang}/paragraph"


@pytest.mark.parametrize("doc_lang", ["en", "zh", "ar"])
def test_sentence_task_judges_the_answer_sentence(xquad_dir, doc_lang):
    task = squad_task(
        xquad_dir / "en.json",
        xquad_dir / f"{doc_lang}.json",
        unit="sentence",
        query_lang="en",
        doc_lang=doc_lang,
    )
    paragraphs = squad_task(
        xquad_dir / "en.json", xquad_dir / f"{doc_lang}.json", query_lang="en", doc_lang=doc_lang
    )
    other = _raw_questions(xquad_dir / f"{doc_lang}.json")
    inside = 0
    for qid, judged in task.qrels.items():
        (sid,) = judged
        (pid,) = paragraphs.qrels[qid]
        assert sid.rsplit("-", 1)[0] == pid  # the sentence belongs to the question's paragraph
        assert task.corpus[sid].text in paragraphs.corpus[pid].text
        inside += other[qid][1] in task.corpus[sid].text
    # A few answers run past their sentence's end (the sentence holds their start): at most 2 %.
    assert inside >= 0.98 * len(task.qrels)


def test_not_parallel_files_are_refused(xquad_dir, tmp_path):
    data = json.loads((xquad_dir / "de.json").read_text(encoding="utf-8"))
    moved = data["data"][0]["paragraphs"][0]["qas"].pop()
    data["data"][0]["paragraphs"][1]["qas"].append(moved)
    (tmp_path / "xx.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InvalidInputError, match=f"question {moved['id']} sits in another paragraph"):
        squad_task(xquad_dir / "en.json", tmp_path / "xx.json")


def test_sentence_unit_needs_annotations(xquad_dir, tmp_path):
    data = json.loads((xquad_dir / "en.json").read_text(encoding="utf-8"))
    for article in data["data"]:
        for para in article["paragraphs"]:
            del para["sentences"], para["sentence_breaks"]
    (tmp_path / "plain.json").write_text(json.dumps(data), encoding="utf-8")
    assert len(squad_task(tmp_path / "plain.json").corpus) == 240
    with pytest.raises(InvalidInputError, match="no sentence annotations"):
        squad_task(tmp_path / "plain.json", unit="sentence")


def test_dataset_specs(scifact_dir, xquad_dir):
    (beir,) = load_tasks(str(scifact_dir), split="train")
    assert (beir.name, beir.split, len(beir.queries)) == ("scifact", "train", 809)
    release = xquad_dir.parent  # the release layout: <folder>/xquad-r/<lang>.json
    (mono,) = load_tasks(f"xquad-r:{release}")
    assert mono.name == "xquad-r/en-en/paragraph"
    (zh,) = load_tasks(f"xquad-r:{xquad_dir}", query_lang="en", doc_lang="zh", unit="sentence")
    assert zh.name == "xquad-r/en-zh/sentence" and len(zh.corpus) == README_SENTENCES["zh"]
    everything = load_tasks(f"xquad-r:{release}", query_lang="en", doc_lang="all")
    assert [t.name for t in everything] == [f"xquad-r/en-{lang}/paragraph" for lang in LANGS]
    pairs = load_tasks(f"squad:{release}", query_lang="de,es", doc_lang="en")
    assert [t.name for t in pairs] == ["xquad-r/de-en/paragraph", "xquad-r/es-en/paragraph"]
    (single,) = load_tasks(f"squad:{xquad_dir / 'vi.json'}")
    assert single.name == "vi/paragraph" and len(single.queries) == 1190
    assert squad_languages(xquad_dir) == LANGS


def test_bad_dataset_specs(scifact_dir, xquad_dir, tmp_path):
    with pytest.raises(InvalidInputError, match="not available; choose from ar, de"):
        load_tasks(f"xquad-r:{xquad_dir}", doc_lang="xx")
    with pytest.raises(InvalidInputError, match="only a test split"):
        load_tasks(f"xquad-r:{xquad_dir}", split="train")
    with pytest.raises(InvalidInputError, match="holds no SQuAD-style"):
        load_tasks(f"xquad-r:{tmp_path}")
    with pytest.raises(InvalidInputError, match="not found"):
        load_tasks(str(tmp_path / "nothing"))
    with pytest.raises(InvalidInputError, match="is not a BEIR dataset"):
        load_tasks(str(tmp_path))


def test_slices_are_deterministic_nested_and_keep_judged_documents(scifact):
    small = slice_task(scifact, max_queries=20, max_docs=200)
    again = slice_task(scifact, max_queries=20, max_docs=200)
    larger = slice_task(scifact, max_queries=50)
    assert small.queries == again.queries and small.corpus.keys() == again.corpus.keys()
    assert len(small.queries) == 20 and len(larger.queries) == 50
    assert set(small.queries) < set(larger.queries)
    assert len(small.corpus) == 200 and len(larger.corpus) == 5183
    assert all(d in small.corpus for judged in small.qrels.values() for d in judged)
    assert list(small.queries) == [q for q in scifact.queries if q in small.queries]  # original order kept
    assert slice_task(scifact) is scifact
    with pytest.raises(InvalidInputError, match="max_queries must be at least 1"):
        slice_task(scifact, max_queries=0)


def test_malformed_squad_files_are_reported(xquad_dir, tmp_path):
    (tmp_path / "broken.json").write_text('{"data": [{"paragraphs": [{"qas": []}]}]}')
    with pytest.raises(InvalidInputError, match="broken.json is not a SQuAD-style JSON file.*context"):
        squad_task(tmp_path / "broken.json")
    data = json.loads((xquad_dir / "en.json").read_text(encoding="utf-8"))
    data["data"][0]["paragraphs"][0]["sentence_breaks"].pop()
    n = len(data["data"][0]["paragraphs"][0]["sentences"])
    (tmp_path / "cut.json").write_text(json.dumps(data))
    with pytest.raises(InvalidInputError, match=f"0-0 has {n} sentences but {n - 1} sentence breaks"):
        squad_task(tmp_path / "cut.json", unit="sentence")
