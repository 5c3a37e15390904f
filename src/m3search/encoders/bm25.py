"""BM25 as a sparse encoder over a model's own tokenizer, so hybrid search works without a sparse head.

Document weights are BM25's saturated term frequency, `tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))`; query
weights are the IDF, `ln(1 + (N - df + 0.5) / (df + 0.5))` (Lucene's), times the term's count in the query (a
repeated query term counts each time, as in Lucene and rank_bm25). Their dot product is the BM25 score, so
the same sparse inverted index serves learned and BM25 weights. Corpus statistics (`BM25Stats`) belong to the
collection: it adds and removes documents from them; queries always use the current IDF, and document
weights use the average length at indexing time (collections re-weight on compaction).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from m3search.encoders.base import (
    Chunking,
    EncodeResult,
    SparseVector,
    TextEncoder,
    content_ids,
    requested_outputs,
    token_pieces,
    validate_texts,
)
from m3search.errors import InvalidInputError

TermCounts = dict[int, int]


@dataclass
class BM25Stats:
    """Document count, total length and document frequency per token id of a corpus."""

    n_docs: int = 0
    total_len: int = 0
    df: dict[int, int] = field(default_factory=dict)

    @property
    def avgdl(self) -> float:
        """Average document length in tokens (1.0 for an empty corpus)."""
        return self.total_len / self.n_docs if self.n_docs else 1.0

    def add(self, counts: Mapping[int, int]) -> None:
        """Count one document in."""
        self.n_docs += 1
        self.total_len += sum(counts.values())
        for token in counts:
            self.df[token] = self.df.get(token, 0) + 1

    def remove(self, counts: Mapping[int, int]) -> None:
        """Count one previously added document out (refused, with the stats unchanged, if it cannot have been)."""
        absent = [token for token in counts if self.df.get(token, 0) < 1]
        if self.n_docs < 1 or absent or sum(counts.values()) > self.total_len:
            raise InvalidInputError(
                f"cannot remove a document that was not added to these BM25 statistics "
                f"({self.n_docs} documents; {len(absent)} of its tokens never seen)"
            )
        self.n_docs -= 1
        self.total_len -= sum(counts.values())
        for token in counts:
            left = self.df.get(token, 0) - 1
            if left > 0:
                self.df[token] = left
            else:
                self.df.pop(token, None)

    def idf(self, token: int) -> float:
        """Lucene's BM25 IDF, always positive."""
        df = self.df.get(token, 0)
        return math.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (token ids become strings)."""
        return {
            "n_docs": self.n_docs,
            "total_len": self.total_len,
            "df": {str(k): v for k, v in self.df.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BM25Stats:
        """Inverse of `to_dict`."""
        return cls(
            int(data["n_docs"]), int(data["total_len"]), {int(k): int(v) for k, v in data["df"].items()}
        )


class BM25Encoder(TextEncoder):
    """Sparse-only encoder: BM25 weights over `tokenizer`'s token ids (special tokens excluded)."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        stats: BM25Stats | None = None,
        k1: float = 1.2,
        b: float = 0.75,
        lowercase: bool = True,
        name: str = "bm25",
    ) -> None:
        self.tokenizer = tokenizer
        self.stats = stats if stats is not None else BM25Stats()
        self.k1, self.b, self.lowercase = k1, b, lowercase
        self.name = name
        self.dim = 0
        self.colbert_dim = None
        self.outputs = frozenset({"sparse"})
        self.max_length = self.default_max_length = 1 << 30  # BM25 reads whole texts

    def term_counts(self, texts: str | Sequence[str]) -> list[TermCounts]:
        """Token id -> count for each text: what `BM25Stats.add` takes."""
        texts = validate_texts(texts)
        if self.lowercase:
            texts = [t.lower() for t in texts]
        return [dict(Counter(ids)) for ids in content_ids(self.tokenizer, texts)]

    def document_weights(self, counts: Mapping[int, int]) -> SparseVector:
        """Saturated term frequencies of one document under the current average length."""
        length = sum(counts.values())
        norm = self.k1 * (1.0 - self.b + self.b * length / self.stats.avgdl)
        return {t: tf * (self.k1 + 1.0) / (tf + norm) for t, tf in counts.items()}

    def query_weights(self, counts: Mapping[int, int]) -> SparseVector:
        """IDF times query count of each query token present in the corpus (absent tokens can match nothing)."""
        return {t: n * self.stats.idf(t) for t, n in counts.items() if t in self.stats.df}

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        batch_size: int = 32,
        max_length: int | None = None,
        return_dense: bool = False,
        return_sparse: bool = True,
        return_colbert: bool = False,
        show_progress_bar: bool = False,
        chunking: Chunking = "truncate",
        chunk_overlap: int = 64,
        is_query: bool = False,
    ) -> EncodeResult:
        """BM25 weights of whole texts (no length limit; batching, chunking and max_length do not apply)."""
        self.check_outputs(requested_outputs(return_dense, return_sparse, return_colbert))
        counts = self.term_counts(texts)
        weigh = self.query_weights if is_query else self.document_weights
        return EncodeResult(sparse=[weigh(c) for c in counts], num_tokens=[sum(c.values()) for c in counts])

    def token_strings(self, token_ids: Iterable[int]) -> list[str]:
        """Readable token strings."""
        return token_pieces(self.tokenizer, token_ids)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update({"k1": self.k1, "b": self.b, "lowercase": self.lowercase})
        return info
