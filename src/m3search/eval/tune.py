"""Fusion-weight tuning on a dev split, then one evaluation of the chosen weights on the test split.

Weighted fusion is a weighted mean, so weights are searched on the simplex (they sum to 1): either a full grid
with a given step, or coordinate ascent from a start point. `tune_on_dev` is the only entry point that touches
splits: it loads the dev split, searches with an objective that can only see that task, and loads the test
split after the search is final, so test judgments cannot leak into the choice of weights.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from m3search.errors import InvalidInputError
from m3search.eval.datasets import RetrievalTask
from m3search.progress import bar
from m3search.scoring import DEFAULT_WEIGHTS, check_weights

log = logging.getLogger(__name__)

Weights = tuple[float, float, float]
"""(dense, sparse, colbert)."""
Method = Literal["grid", "coordinate"]
METHODS: tuple[Method, ...] = ("grid", "coordinate")


@dataclass
class TuneResult:
    """The best weights found, their dev score, and every trial in the order tried."""

    method: str
    metric: str
    dev_split: str
    best: Weights
    best_score: float
    trials: list[tuple[Weights, float]] = field(default_factory=list)
    dev_queries: int = 0
    #: With `split_queries`: the share of the split's queries tuned on, and the seed that chose them.
    dev_fraction: float | None = None
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for results.json."""
        out = {
            "method": self.method,
            "metric": self.metric,
            "dev_split": self.dev_split,
            "dev_queries": self.dev_queries,
            "best": list(self.best),
            "best_score": self.best_score,
            "trials": [{"weights": list(w), "score": s} for w, s in self.trials],
        }
        if self.dev_fraction is not None:
            out.update(dev_fraction=self.dev_fraction, seed=self.seed)
        return out


def _normalize(weights: Sequence[float]) -> Weights:
    w = check_weights(weights)
    total = sum(w)
    return tuple(round(x / total, 10) for x in w)  # type: ignore[return-value]


def _divisions(step: float) -> int:
    """How many steps make 1; raise unless `step` divides 1."""
    if not 0 < step <= 1 or abs(round(1 / step) * step - 1) > 1e-9:
        raise InvalidInputError(f"step must divide 1 (0.5, 0.25, 0.1, 0.05...), got {step}")
    return round(1 / step)


def simplex_grid(step: float, free: Sequence[bool] = (True, True, True)) -> list[Weights]:
    """Every weight triple with components on multiples of `step` summing to 1; non-free components stay 0."""
    n = _divisions(step)
    if not any(free):
        raise InvalidInputError("at least one weight must be free to tune")
    points = []
    for parts in itertools.product(range(n + 1), repeat=3):
        if sum(parts) == n and all(f or p == 0 for f, p in zip(free, parts)):
            points.append(tuple(p / n for p in parts))
    return points  # type: ignore[return-value]


class _Memo:
    """Objective calls cached by normalized weights, recorded in order; each new trial advances `shown`."""

    def __init__(self, objective: Callable[[Weights], float], shown: Any) -> None:
        self.objective = objective
        self.shown = shown
        self.trials: dict[Weights, float] = {}

    def __call__(self, weights: Sequence[float]) -> float:
        w = _normalize(weights)
        if w not in self.trials:
            self.trials[w] = float(self.objective(w))
            log.info("weights %s -> %.5f", w, self.trials[w])
            best = max(self.trials.items(), key=lambda t: t[1])
            self.shown.set_postfix_str(f"best {best[1]:.4f} at {tuple(round(x, 3) for x in best[0])}")
            self.shown.update(1)
        return self.trials[w]


def _snap(weights: Sequence[float], n: int, free: Sequence[bool]) -> list[int]:
    """The grid point (integer parts summing to n) nearest to `weights`, by largest remainder."""
    masked = [w if f else 0.0 for w, f in zip(weights, free)]
    if sum(masked) <= 0:
        masked = [float(f) for f in free]
    scaled = [w * n / sum(masked) for w in masked]
    parts = [int(x) for x in scaled]
    for i in sorted(range(3), key=lambda i: parts[i] - scaled[i])[: n - sum(parts)]:
        parts[i] += 1
    return parts


def search_weights(
    objective: Callable[[Weights], float],
    *,
    method: Method = "coordinate",
    step: float = 0.1,
    start: Sequence[float] = DEFAULT_WEIGHTS,
    free: Sequence[bool] = (True, True, True),
    max_rounds: int = 100,
) -> tuple[Weights, float, list[tuple[Weights, float]]]:
    """Maximize `objective` over weights on the simplex grid of `step`; ties keep the earlier point.

    grid: every point of `simplex_grid(step, free)`, after the start point. coordinate: from the grid point
    nearest `start`, repeatedly move `step` of weight from one mode to another, taking the best improving
    move, until none improves (a few dozen evaluations instead of the whole grid).
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not any(free):
        raise InvalidInputError("at least one weight must be free to tune")
    n = _divisions(step)
    grid = simplex_grid(step, free) if method == "grid" else []
    with bar(desc=f"tune weights ({method} search)", unit="trial", total=len(grid) or None) as shown:
        memo = _Memo(objective, shown)
        return _search(memo, method, grid, _snap(start, n, free), n, free, max_rounds)


def _search(
    memo: _Memo,
    method: Method,
    grid: list[Weights],
    parts: list[int],
    n: int,
    free: Sequence[bool],
    max_rounds: int,
) -> tuple[Weights, float, list[tuple[Weights, float]]]:
    """`search_weights` once its trials are counted: the grid, or coordinate ascent from `parts`."""
    best = _normalize([p / n for p in parts])
    best_score = memo(best)
    if method == "grid":
        for point in grid:
            if memo(point) > best_score:
                best, best_score = point, memo(point)
        return best, best_score, list(memo.trials.items())
    movable = [i for i in range(3) if free[i]]
    for _ in range(max_rounds):
        moves = []
        for i in movable:
            for j in movable:
                if i != j and parts[i] > 0:
                    moved = list(parts)
                    moved[i] -= 1
                    moved[j] += 1
                    moves.append(moved)
        scored = [(memo([p / n for p in m]), m) for m in moves]
        top_score, top = max(scored, key=lambda x: x[0], default=(best_score, parts))
        if top_score <= best_score:
            break
        parts, best_score = top, top_score
        best = _normalize([p / n for p in parts])
    return best, best_score, list(memo.trials.items())


def split_queries(task: RetrievalTask, fraction: float, seed: int = 0) -> tuple[RetrievalTask, RetrievalTask]:
    """Split `task`'s queries in two disjoint parts over the same corpus: a dev part of `fraction` of them, drawn
    with `seed`, and the rest; for tuning on sets with one split. The parts' splits are `<split>[dev]` and
    `<split>[held out]`."""
    if not 0 < fraction < 1:
        raise InvalidInputError(f"--dev-fraction must lie strictly between 0 and 1, got {fraction}")
    qids = sorted(task.queries)
    size = round(fraction * len(qids))
    if not 0 < size < len(qids):
        raise InvalidInputError(
            f"--dev-fraction {fraction} of {task.name}'s {len(qids)} queries leaves "
            f"{'no dev' if size == 0 else 'no held-out'} query: choose a fraction nearer 0.5"
        )
    dev = set(random.Random(seed).sample(qids, size))

    def part(keep: Callable[[str], bool], label: str) -> RetrievalTask:
        queries = {q: text for q, text in task.queries.items() if keep(q)}
        return replace(
            task, split=f"{task.split}[{label}]", queries=queries, qrels={q: task.qrels[q] for q in queries}
        )

    return part(lambda q: q in dev, "dev"), part(lambda q: q not in dev, "held out")


def check_splits(dev_split: str, test_split: str) -> None:
    """Refuse to tune on the split that will be reported."""
    if dev_split == test_split:
        raise InvalidInputError(
            f"the dev split and the test split are both {dev_split!r}: tune on another split (SciFact: train)"
        )


def tune_on_dev(
    load_split: Callable[[str], RetrievalTask],
    evaluate: Callable[[RetrievalTask, Weights], float],
    *,
    dev_split: str,
    test_split: str,
    metric: str,
    method: Method = "coordinate",
    step: float = 0.1,
    start: Sequence[float] = DEFAULT_WEIGHTS,
    free: Sequence[bool] = (True, True, True),
) -> tuple[TuneResult, RetrievalTask]:
    """Tune weights on `dev_split`; only then load `test_split`. Returns the result and the test task.

    `evaluate(task, weights)` scores weights on a task (higher is better); during the search it is only ever
    given the dev task, because the test task does not exist yet. Dev and test must not share queries.
    """
    check_splits(dev_split, test_split)
    dev = load_split(dev_split)
    best, score, trials = search_weights(
        lambda w: evaluate(dev, w), method=method, step=step, start=start, free=free
    )
    result = TuneResult(method, metric, dev_split, best, score, trials, dev_queries=len(dev.queries))
    test = load_split(test_split)
    shared = set(dev.queries) & set(test.queries)
    if shared:
        raise InvalidInputError(
            f"{len(shared)} queries of the {test_split!r} split are also in "
            f"{dev_split!r} (e.g. {min(shared)}): tuning on them would leak into "
            "the test score"
        )
    return result, test


@dataclass
class FusionChoice:
    """The best fusion and weights over several fusions, each fusion's own best, and the library default's score."""

    metric: str
    fusion: str
    weights: Weights
    score: float
    default_score: float
    per_fusion: dict[str, TuneResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored with a collection's tuned search defaults)."""
        return {
            "metric": self.metric,
            "fusion": self.fusion,
            "weights": list(self.weights),
            "score": self.score,
            "default_score": self.default_score,
            "per_fusion": {
                f: {"weights": list(r.best), "score": r.best_score} for f, r in self.per_fusion.items()
            },
        }


def choose_fusion(
    objective: Callable[[str, Weights], float],
    fusions: Sequence[str],
    *,
    default: tuple[str, Weights],
    metric: str,
    method: Method = "coordinate",
    step: float = 0.1,
    free: Sequence[bool] = (True, True, True),
    start: Callable[[str], Sequence[float]],
) -> FusionChoice:
    """Search the weights of each fusion in `fusions` (from `start(fusion)`), keep the best of all; the
    library `default` (fusion, weights) is scored too and wins ties, so tuning never picks a worse setting."""
    default_score = objective(*default)
    choice = FusionChoice(metric, default[0], default[1], default_score, default_score)
    for fusion in fusions:
        best, score, trials = search_weights(
            functools.partial(objective, fusion), method=method, step=step, start=start(fusion), free=free
        )
        choice.per_fusion[fusion] = TuneResult(method, metric, "", best, score, trials)
        if score > choice.score:
            choice.fusion, choice.weights, choice.score = fusion, best, score
    return choice


class DocumentSource(Protocol):
    """What pseudo-queries are drawn from: a collection's ids and stored documents."""

    def ids(self) -> list[str]: ...

    def get(self, ids: Sequence[str]) -> Sequence[Any]: ...


def sample_pseudo_queries(
    collection: DocumentSource, count: int, *, seed: int = 0
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """`pseudo_queries` from a seeded sample of 4 x `count` of the collection's documents (their texts)."""
    ids = collection.ids()
    docs = collection.get(random.Random(seed).sample(ids, min(len(ids), 4 * count)))
    return pseudo_queries([(d.id, d.text or "") for d in docs if d], count, seed=seed)


def judged_task(name: str, texts: dict[str, str], judged: dict[str, dict[str, int]]) -> RetrievalTask:
    """A task of the queries that have a text and at least one relevant document (what tuning can score)."""
    kept = {q: texts[q] for q in judged if q in texts and any(g >= 1 for g in judged[q].values())}
    if not kept:
        raise InvalidInputError("no query has both a text and a relevant document")
    return RetrievalTask(name, "tune", {}, kept, {q: judged[q] for q in kept})


_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+")


def pseudo_queries(
    documents: Sequence[tuple[str, str]],
    count: int,
    *,
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 40,
) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Queries from a collection's own documents, for tuning without labels: from each of `count` documents (a
    seeded sample of the (id, text) pairs), one sentence of `min_words`..`max_words` words (else its first
    `max_words` words) is the query and that document its one relevant answer. Returns (queries, qrels)."""
    if count < 1:
        raise InvalidInputError(f"the number of pseudo-queries must be at least 1, got {count}")
    usable = [(i, t) for i, t in documents if t and len(t.split()) >= min_words]
    if not usable:
        raise InvalidInputError(f"no document has {min_words} words or more to make a pseudo-query from")
    rng = random.Random(seed)
    queries, qrels = {}, {}
    for n, (doc_id, text) in enumerate(rng.sample(usable, min(count, len(usable)))):
        sentences = [s for s in _SENTENCE.split(text) if min_words <= len(s.split()) <= max_words]
        query = rng.choice(sentences) if sentences else " ".join(text.split()[:max_words])
        queries[f"pseudo-{n}"] = query
        qrels[f"pseudo-{n}"] = {doc_id: 1}
    return queries, qrels
