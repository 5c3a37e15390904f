"""Weight search finds optima on the simplex; tuning only ever sees the dev split."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.errors import InvalidInputError
from m3search.eval.datasets import load_beir, slice_task
from m3search.eval.runner import score_weights
from m3search.eval.tune import search_weights, simplex_grid, tune_on_dev
from tests.eval.conftest import ExhaustiveSearcher


def _bowl(target):
    return lambda w: -float(np.sum((np.asarray(w) - np.asarray(target)) ** 2))


def test_simplex_grid():
    grid = simplex_grid(0.1)
    assert len(grid) == 66  # C(12, 2) points with three components on tenths summing to 1
    assert all(abs(sum(w) - 1) < 1e-12 for w in grid)
    pair = simplex_grid(0.25, free=(True, True, False))
    assert pair == [(0.0, 1.0, 0.0), (0.25, 0.75, 0.0), (0.5, 0.5, 0.0), (0.75, 0.25, 0.0), (1.0, 0.0, 0.0)]
    with pytest.raises(InvalidInputError, match="step must divide 1"):
        simplex_grid(0.3)


@pytest.mark.parametrize("method", ["grid", "coordinate"])
def test_search_finds_the_optimum(method):
    best, score, trials = search_weights(_bowl((0.6, 0.1, 0.3)), method=method, step=0.1)
    assert best == pytest.approx((0.6, 0.1, 0.3))
    assert score == pytest.approx(0.0, abs=1e-12)
    assert trials[0][0] == pytest.approx((0.4, 0.2, 0.4))  # starts from the model card's weights
    if method == "coordinate":
        assert len(trials) < 66  # cheaper than the grid


def test_search_keeps_fixed_weights_at_zero():
    best, _, trials = search_weights(
        _bowl((0.2, 0.6, 0.2)), method="coordinate", step=0.1, free=(True, True, False)
    )
    assert all(w[2] == 0 for w, _ in trials)
    assert best == pytest.approx((0.3, 0.7, 0.0))  # the closest point with colbert at 0


@pytest.mark.parametrize("method", ["grid", "coordinate"])
def test_ties_keep_the_start_point(method):
    best, _, _ = search_weights(lambda w: 1.0, method=method, step=0.1)
    assert best == pytest.approx((0.4, 0.2, 0.4))
    best, _, trials = search_weights(lambda w: 1.0, method=method, step=0.5)
    assert best == trials[0][0] == pytest.approx((0.5, 0.0, 0.5))  # the start, moved onto the coarser grid


class _Spy:
    """Records, in order, which splits were loaded and which split each objective call was given."""

    def __init__(self, scifact_dir, max_queries=None):
        self.events: list[tuple[str, str]] = []
        self.dir, self.max_queries = scifact_dir, max_queries

    def load(self, split):
        self.events.append(("load", split))
        return slice_task(load_beir(self.dir, split), max_queries=self.max_queries)

    def objective(self, score):
        def evaluate(task, weights):
            self.events.append(("evaluate", task.split))
            return score(task, weights)

        return evaluate


def test_tuning_never_sees_the_test_split(scifact_dir, tiny_m3, xlmr_tokenizer):
    """A real objective (nDCG@10 of weighted fusion on SciFact train queries); test is loaded last."""
    spy = _Spy(scifact_dir, max_queries=15)
    dev_slice = slice_task(load_beir(scifact_dir, "train"), max_queries=15, max_docs=200)
    searcher = ExhaustiveSearcher(tiny_m3, xlmr_tokenizer, dev_slice)  # holds every judged dev document

    def score(task, weights):
        return score_weights(searcher, task, weights, mode="all", fusion="weighted", metric="ndcg@10")

    result, test = tune_on_dev(
        spy.load,
        spy.objective(score),
        dev_split="train",
        test_split="test",
        metric="ndcg@10",
        method="coordinate",
        step=0.25,
    )
    events = spy.events
    assert events[0] == ("load", "train") and events[-1] == ("load", "test")
    assert events.count(("load", "test")) == 1
    assert set(events[1:-1]) == {("evaluate", "train")}  # every objective call saw the dev split only
    assert test.split == "test" and len(test.queries) == 15
    assert result.dev_split == "train" and len(result.trials) == len(events) - 2
    assert result.best_score == max(s for _, s in result.trials)
    assert len({s for _, s in result.trials}) > 1  # the weights matter on real data
    assert result.to_dict()["best"] == list(result.best)


def test_tuning_on_the_test_split_is_refused(scifact_dir):
    spy = _Spy(scifact_dir)
    with pytest.raises(InvalidInputError, match="dev split and the test split are both 'test'"):
        tune_on_dev(
            spy.load, spy.objective(lambda t, w: 0.0), dev_split="test", test_split="test", metric="ndcg@10"
        )
    assert spy.events == []


def test_dev_queries_shared_with_test_are_refused(scifact_dir):
    """A dev split that shares queries with the test split (here: a copy of it) cannot yield a result."""
    spy = _Spy(scifact_dir)
    load = lambda split: spy.load("test")  # noqa: E731 - a mislabelled dev split: really the test queries
    with pytest.raises(InvalidInputError, match="300 queries of the 'test' split are also in 'dev'"):
        tune_on_dev(
            load,
            spy.objective(lambda t, w: 0.0),
            dev_split="dev",
            test_split="test",
            metric="ndcg@10",
            step=0.5,
        )


def test_split_queries_is_seeded_disjoint_and_keeps_the_corpus(xquad_dir):
    from m3search.eval.datasets import squad_task
    from m3search.eval.tune import split_queries

    task = squad_task(xquad_dir / "vi.json")
    dev, held_out = split_queries(task, 0.3, seed=7)
    assert (dev.split, held_out.split) == ("test[dev]", "test[held out]")
    assert len(dev.queries) == round(0.3 * len(task.queries))
    assert set(dev.queries).isdisjoint(held_out.queries)
    assert set(dev.queries) | set(held_out.queries) == set(task.queries)
    assert dev.corpus is task.corpus is held_out.corpus
    assert all(dev.qrels[q] == task.qrels[q] for q in dev.queries)
    again, _ = split_queries(task, 0.3, seed=7)
    other, _ = split_queries(task, 0.3, seed=8)
    assert list(again.queries) == list(dev.queries) and set(other.queries) != set(dev.queries)
    for fraction, message in ((0.0, "strictly between"), (1.0, "strictly between"), (1e-6, "leaves no dev")):
        with pytest.raises(InvalidInputError, match=message):
            split_queries(task, fraction)
