"""Evaluation fixtures: real tasks, a BM25 run over SciFact, and an exhaustive stand-in for a collection."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from m3search.encoders import BM25Encoder
from m3search.encoders.offline.tokenizer import XLMR_VOCAB_SIZE, xlmr_tokenizer_json
from m3search.eval.datasets import RetrievalTask, load_beir, slice_task
from m3search.scoring import colbert_score
from m3search.search.modes import MODE_KINDS


@pytest.fixture(scope="session")
def scifact_dir(shared_data: Path) -> Path:
    return shared_data / "scifact"


@pytest.fixture(scope="session")
def xquad_dir(shared_data: Path) -> Path:
    return shared_data / "xquad_r" / "xquad-r"


@pytest.fixture(scope="session")
def scifact(scifact_dir: Path) -> RetrievalTask:
    return load_beir(scifact_dir, "test")


@pytest.fixture(scope="session")
def xlmr_tokenizer():
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(xlmr_tokenizer_json()))


def _matrix(rows: Sequence[dict[int, float]]) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [t for row in rows for t in row]
    v = [w for row in rows for w in row.values()]
    return sp.csr_matrix((v, (r, c)), shape=(len(rows), XLMR_VOCAB_SIZE))


class BM25Index:
    """Exact BM25 over a task's corpus with the real XLM-R tokenizer (m3search's BM25Encoder)."""

    def __init__(self, tokenizer, task: RetrievalTask) -> None:
        self.encoder = BM25Encoder(tokenizer)
        self.ids = list(task.corpus)
        counts = self.encoder.term_counts([task.corpus[d].full_text for d in self.ids])
        for c in counts:
            self.encoder.stats.add(c)
        self.docs = _matrix([self.encoder.document_weights(c) for c in counts]).T.tocsr()

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(queries, documents) BM25 scores."""
        return (_matrix(self.encoder.encode(list(queries), is_query=True).sparse) @ self.docs).toarray()

    def run(self, task: RetrievalTask, depth: int = 100) -> dict[str, dict[str, float]]:
        """query -> {doc: score} of the `depth` best documents with a positive score (a TREC-style run)."""
        qids = list(task.queries)
        scores = self.scores([task.queries[q] for q in qids])
        run = {}
        for i, qid in enumerate(qids):
            top = np.argsort(-scores[i], kind="stable")[:depth]
            run[qid] = {self.ids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
        return run


@pytest.fixture(scope="session")
def scifact_bm25_run(xlmr_tokenizer, scifact) -> dict[str, dict[str, float]]:
    """A real run: BM25 over all 5,183 SciFact abstracts for the 300 test queries, top 100."""
    return BM25Index(xlmr_tokenizer, scifact).run(scifact)


class ExhaustiveSearcher:
    """Stand-in for a collection in runner and CLI tests: exact scores of every document in every mode.

    Dense and ColBERT come from the tiny random bge-m3, sparse from BM25; weighted fusion is the weighted mean
    of the mode scores, RRF sums weight / (60 + rank). Scores are cached per query text; calls are recorded.
    """

    def __init__(self, encoder, tokenizer, task: RetrievalTask) -> None:
        self.encoder = encoder
        self.bm25 = BM25Index(tokenizer, task)
        self.ids = self.bm25.ids
        docs = encoder.encode(
            [task.corpus[d].full_text for d in self.ids],
            max_length=128,
            return_dense=True,
            return_colbert=True,
        )
        self.dense, self.colbert = docs.dense, docs.colbert
        self.calls: list[tuple[str, str, str | None, tuple | None]] = []
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def _mode_scores(self, query: str) -> dict[str, np.ndarray]:
        if query not in self._cache:
            q = self.encoder.encode_queries([query], return_dense=True, return_colbert=True)
            self._cache[query] = {
                "dense": self.dense @ q.dense[0],
                "sparse": self.bm25.scores([query])[0],
                "colbert": np.array([colbert_score(q.colbert[0], d) for d in self.colbert]),
            }
        return self._cache[query]

    def reusing_queries(self) -> ExhaustiveSearcher:
        """Scores are already cached per query text."""
        return self

    def search(self, query: str, *, k: int, mode: str, fusion: str | None, weights):
        self.calls.append((query, mode, fusion, weights))
        scores = self._mode_scores(query)
        if fusion is None:
            total = scores[mode]
        else:
            parts = [
                (scores[m], weights[i])
                for i, m in enumerate(("dense", "sparse", "colbert"))
                if m in MODE_KINDS[mode]
            ]
            if fusion == "weighted":
                total = sum(w * s for s, w in parts) / sum(w for _, w in parts)
            else:
                total = sum(w / (60.0 + np.argsort(np.argsort(-s)) + 1) for s, w in parts)
        top = np.argsort(-total, kind="stable")[:k]
        return [(self.ids[j], float(total[j])) for j in top]


@pytest.fixture(scope="session")
def scifact_slice(scifact) -> RetrievalTask:
    """40 SciFact test queries against 300 abstracts (their judged ones and a fixed sample of others)."""
    return slice_task(scifact, max_queries=40, max_docs=300)


@pytest.fixture(scope="session")
def exhaustive(tiny_m3, xlmr_tokenizer, scifact_slice) -> ExhaustiveSearcher:
    return ExhaustiveSearcher(tiny_m3, xlmr_tokenizer, scifact_slice)
