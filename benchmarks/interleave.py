"""Interleaved A/B latency on one open collection: each query runs under every variant in turn (alternating
which goes first), so all variants see the same page cache and machine load. Used by `query_threads.py` and
`sparse_forward.py`, which switch a setting per query on a collection that `index_speed.py --keep` built."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from index_speed import Corpus, data_defaults, dense_model

from m3search import Collection

ROOT = Path(__file__).resolve().parent
#: Queries searched under every variant before timing starts (page cache, lazy loads).
WARM_QUERIES = 40


def kept_corpus_queries(n: int, query_tokens: int) -> list[dict]:
    """The queries `index_speed.py` generates for its default calibrated data (same seed, same vectors)."""
    data = data_defaults()
    return Corpus(dense_model(data), data.colbert_dim, data.vocab, data.nnz).queries(n, query_tokens)


def interleaved(
    collection: Collection,
    queries: list[dict],
    plans: dict[str, dict],
    variants: dict[str, Callable[[], None]],
    **common: object,
) -> tuple[dict[str, dict[str, list[float]]], bool]:
    """Milliseconds per (plan, variant) over `queries[WARM_QUERIES:]`, and whether every variant returned the
    same hits (ids and scores) for every timed query. Each variant callable switches the setting on."""
    for q in queries[:WARM_QUERIES]:
        for switch in variants.values():
            switch()
            for plan in plans.values():
                collection.search(q, **common, **plan)
    ms: dict[str, dict[str, list[float]]] = {plan: {v: [] for v in variants} for plan in plans}
    same = True
    names = list(variants)
    for i, q in enumerate(queries[WARM_QUERIES:]):
        hits: dict[str, list] = {}
        for name in names if i % 2 else names[::-1]:
            variants[name]()
            for plan_name, plan in plans.items():
                start = time.perf_counter()
                found = collection.search(q, **common, **plan)
                ms[plan_name][name].append(1000 * (time.perf_counter() - start))
                hits.setdefault(plan_name, []).append([(h.id, h.score) for h in found])
        same &= all(all(r == by[0] for r in by) for by in hits.values())
    return ms, same
