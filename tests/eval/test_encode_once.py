"""The collection searcher of `m3search eval`: `--encode-once` reuses a query's vectors across runs and
tasks (BM25 weights re-made per collection) and ranks exactly as encoding each search."""

from __future__ import annotations

import numpy as np

from m3search.encoders import BM25Encoder, CompositeEncoder
from m3search.eval.datasets import load_tasks, slice_task
from m3search.eval.engine import indexed_collection
from m3search.eval.runner import plan_runs, run_task


def test_encode_once_shares_dense_and_colbert_and_remakes_bm25(tmp_path, tiny_m3, xlmr_tokenizer, xquad_dir):
    tasks = [
        slice_task(t, max_queries=8)
        for t in load_tasks(f"xquad-r:{xquad_dir}", query_lang="en", doc_lang="de,es")
    ]
    runs = plan_runs(["dense", "all"], ["weighted", "rrf"])
    shared: dict = {}
    for task in tasks:
        encoder = CompositeEncoder(
            {"dense": tiny_m3, "colbert": tiny_m3, "sparse": BM25Encoder(xlmr_tokenizer)}
        )
        options = {"model": "tiny", "outputs": ["dense", "sparse", "colbert"], "encoder": encoder}
        path = tmp_path / task.name.replace("/", "_")
        with indexed_collection(task, path=path, progress=False, **options) as (plain, _):
            expected = run_task(plain, task, runs, measures=["ndcg@10"], progress=False)
        with indexed_collection(task, path=path, shared_queries=shared, **options) as (once, stats):
            assert stats["reused"] == str(path)
            got = run_task(once, task, runs, measures=["ndcg@10"], progress=False)
            for text in task.queries.values():  # this collection's BM25 weights and ceiling, shared dense
                own = once.collection.encode_query(text)
                np.testing.assert_array_equal(shared[text].dense, own.dense)
                np.testing.assert_array_equal(shared[text].sparse[1], own.sparse[1])
                assert shared[text].sparse_ceiling == own.sparse_ceiling
        for a, b in zip(expected, got):
            assert a.hits == b.hits
    assert set(shared) == set(tasks[0].queries.values()) | set(tasks[1].queries.values())
