"""Our metrics equal pytrec_eval's (trec_eval) on real runs, including graded qrels, ties and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from m3search.errors import InvalidInputError
from m3search.eval.datasets import squad_task
from m3search.eval.metrics import (
    evaluate,
    measures_at,
    parse_measure,
    per_query,
    ranking_from_scores,
    recall_curve,
)
from tests.eval.conftest import BM25Index

TREC = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut"}
MEASURES = [
    "ndcg@1",
    "ndcg@10",
    "ndcg@100",
    "recall@1",
    "recall@10",
    "recall@100",
    "map@10",
    "map@100",
    "mrr@1",
    "mrr@10",
    "mrr@100",
]


def _rankings(run):
    return {q: ranking_from_scores(scores) for q, scores in run.items()}


def assert_matches_trec_eval(qrels, run, measures=MEASURES):
    """Per query and on average, every measure equals pytrec_eval's on the same scores."""
    ours = per_query(qrels, _rankings(run), measures)
    qids = list(qrels)
    plain = [m for m in measures if not m.startswith("mrr")]
    names = {m: f"{TREC[m.split('@')[0]]}_{m.split('@')[1]}" for m in plain}
    specs = {f"{TREC[m.split('@')[0]]}.{m.split('@')[1]}" for m in plain}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, specs).evaluate(run)
    for m in plain:
        expected = np.array([theirs[q][names[m]] if q in theirs else 0.0 for q in qids])
        np.testing.assert_allclose(ours[m], expected, rtol=0, atol=1e-12, err_msg=m)
    for m in (m for m in measures if m.startswith("mrr")):
        k = int(m.split("@")[1])  # trec_eval has no MRR@k: recip_rank of the run cut to its top k
        cut = {q: {d: s[d] for d in ranking_from_scores(s)[:k]} for q, s in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        expected = np.array([rr[q]["recip_rank"] if q in rr else 0.0 for q in qids])
        np.testing.assert_allclose(ours[m], expected, rtol=0, atol=1e-12, err_msg=m)
    means = evaluate(qrels, _rankings(run), measures)
    for m in measures:
        assert means[m] == pytest.approx(float(ours[m].mean()), abs=1e-15)


def test_bm25_run_on_scifact_matches_trec_eval(scifact, scifact_bm25_run):
    assert_matches_trec_eval(scifact.qrels, scifact_bm25_run)
    scores = evaluate(scifact.qrels, _rankings(scifact_bm25_run))
    assert 0.6 < scores["ndcg@10"] < 0.8  # BM25 on SciFact (BEIR reports 0.665): a real, non-trivial run


def test_ties_are_broken_like_trec_eval(scifact, scifact_bm25_run):
    """Rounding the BM25 scores makes many ties; the order must still equal trec_eval's."""
    coarse = {q: {d: round(s, 0) for d, s in scores.items()} for q, scores in scifact_bm25_run.items()}
    tied = sum(len(s) - len(set(s.values())) for s in coarse.values())
    assert tied > 1000
    assert_matches_trec_eval(scifact.qrels, coarse)


def test_graded_qrels_on_a_real_cross_lingual_run(xlmr_tokenizer, xquad_dir):
    """XQuAD-R sentences, en -> de, BM25; grade 2 for the answer sentence, 1 for its paragraph's others."""
    task = squad_task(
        xquad_dir / "en.json", xquad_dir / "de.json", unit="sentence", query_lang="en", doc_lang="de"
    )
    graded = {}
    for qid, judged in task.qrels.items():
        (answer,) = judged
        paragraph = answer.rsplit("-", 1)[0]
        graded[qid] = {d: 2 if d == answer else 1 for d in task.corpus if d.rsplit("-", 1)[0] == paragraph}
    assert any(len(j) > 3 for j in graded.values())
    run = BM25Index(xlmr_tokenizer, task).run(task)
    assert_matches_trec_eval(graded, run)
    with_grades = evaluate(graded, _rankings(run), ["ndcg@10"])["ndcg@10"]
    binary_qrels = {q: dict.fromkeys(j, 1) for q, j in graded.items()}
    binary = evaluate(binary_qrels, _rankings(run), ["ndcg@10"])["ndcg@10"]
    assert with_grades != binary  # the grades are used as gains


def test_edge_cases_match_trec_eval(scifact, scifact_bm25_run):
    """Queries without relevant documents, absent from the run, extra run queries, negative grades."""
    qids = list(scifact.qrels)[:30]
    qrels = {q: dict(scifact.qrels[q]) for q in qids}
    run = {q: scifact_bm25_run[q] for q in qids}
    zero_q, absent_q, negative_q = qids[0], qids[1], qids[2]
    qrels[zero_q] = dict.fromkeys(list(run[zero_q])[:3], 0)  # judged, none relevant
    del run[absent_q]  # the engine returned nothing
    qrels[negative_q] = dict(qrels[negative_q], **dict.fromkeys(list(run[negative_q])[:2], -1))
    run["not-judged"] = scifact_bm25_run[list(scifact.qrels)[40]]
    run[qids[3]] = {}  # an empty result list
    assert_matches_trec_eval(qrels, run)
    values = per_query(qrels, _rankings(run), ["ndcg@10", "recall@100", "mrr@10", "map@100"])
    for m, v in values.items():
        assert v[0] == 0.0 and v[1] == 0.0 and v[3] == 0.0, m
    assert len(values["ndcg@10"]) == 30  # averaged over the judged queries, run extras ignored


def test_recall_curve_agrees_with_recall_at_k(scifact, scifact_bm25_run):
    ranking = _rankings(scifact_bm25_run)
    curve = recall_curve(scifact.qrels, ranking, 100)
    assert curve.shape == (100,)
    assert np.all(np.diff(curve) >= 0)
    for k in (1, 5, 10, 37, 100):
        assert curve[k - 1] == pytest.approx(evaluate(scifact.qrels, ranking, [f"recall@{k}"])[f"recall@{k}"])


def test_measure_names_and_bad_input():
    assert parse_measure("nDCG@10") == ("ndcg", 10)
    assert measures_at([100, 10]) == (
        "ndcg@10",
        "ndcg@100",
        "recall@10",
        "recall@100",
        "mrr@10",
        "mrr@100",
        "map@10",
        "map@100",
    )
    for bad in ("ndcg", "ndcg@0", "precision@10", "ndcg@-1"):
        with pytest.raises(InvalidInputError, match="unknown measure"):
            parse_measure(bad)
    with pytest.raises(InvalidInputError, match="lists a document twice"):
        evaluate({"q": {"a": 1}}, {"q": ["a", "b", "a"]})
    with pytest.raises(InvalidInputError, match="no judged queries"):
        evaluate({}, {"q": ["a"]})
