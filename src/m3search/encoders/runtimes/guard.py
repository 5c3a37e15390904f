"""The quality guard: how far a fast runtime's outputs are from the fp32 reference, and whether that is close enough.

Deviation is measured on all three outputs: the lowest dense cosine, the largest sparse-weight difference
relative to the text's largest reference weight, and the lowest per-text mean ColBERT cosine. `auto` only
picks a runtime whose deviation on a fixed multilingual probe stays within `GUARD_BOUNDS`; the benchmark and
the tests report the same numbers on larger inputs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from m3search.encoders.base import EncodeResult
from m3search.encoders.runtimes.base import ForwardOutput, Runtime

#: Texts run through a candidate and the fp32 reference before `auto` trusts the candidate: several scripts,
#: short and medium lengths, digits and punctuation (where low-precision arithmetic errs first).
PROBE_TEXTS = (
    "What is the capital of France?",
    "Paris ist die Hauptstadt und bevölkerungsreichste Stadt Frankreichs.",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "التعلم الآلي هو فرع من فروع الذكاء الاصطناعي",
    "Der Wirkstoff senkte den Blutdruck um 12,5 mmHg (95% KI: 9,8–15,2; p < 0,001) nach 24 Wochen.",
    " ".join(
        "Dense, sparse and multi-vector retrieval share one encoder pass; hybrid ranking combines them."
        for _ in range(12)
    ),
)


@dataclass(frozen=True)
class Deviation:
    """Distance of a runtime's outputs from fp32; None for outputs not compared."""

    dense_cosine_min: float | None = None
    sparse_rel_diff_max: float | None = None
    colbert_cosine_min: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class GuardBounds:
    """The worst deviation a runtime may show and still be chosen by `auto`."""

    dense_cosine_min: float = 0.999
    sparse_rel_diff_max: float = 0.05
    colbert_cosine_min: float = 0.995

    def violations(self, dev: Deviation) -> list[str]:
        """The bounds `dev` breaks, as readable phrases (empty when it passes)."""
        out = []
        if dev.dense_cosine_min is not None and dev.dense_cosine_min < self.dense_cosine_min:
            out.append(f"dense cosine {dev.dense_cosine_min:.5f} < {self.dense_cosine_min}")
        if dev.sparse_rel_diff_max is not None and dev.sparse_rel_diff_max > self.sparse_rel_diff_max:
            out.append(f"sparse weight difference {dev.sparse_rel_diff_max:.4f} > {self.sparse_rel_diff_max}")
        if dev.colbert_cosine_min is not None and dev.colbert_cosine_min < self.colbert_cosine_min:
            out.append(f"ColBERT cosine {dev.colbert_cosine_min:.5f} < {self.colbert_cosine_min}")
        return out


GUARD_BOUNDS = GuardBounds()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-12)


def _sparse_rel_diff(ref: dict[Any, float], cand: dict[Any, float]) -> float:
    """Largest weight difference over the union of keys, relative to the largest reference weight."""
    if not ref and not cand:
        return 0.0
    scale = max(ref.values(), default=0.0) or max(cand.values())
    diff = max(abs(ref.get(k, 0.0) - cand.get(k, 0.0)) for k in ref.keys() | cand.keys())
    return diff / scale


def measure_deviation(reference: EncodeResult, candidate: EncodeResult) -> Deviation:
    """Compare two encodings of the same texts (outputs present in both are compared)."""
    dense = sparse = colbert = None
    if reference.dense is not None and candidate.dense is not None:
        dense = float(_cosines(reference.dense, candidate.dense).min())
    if reference.sparse is not None and candidate.sparse is not None:
        sparse = max(
            (_sparse_rel_diff(r, c) for r, c in zip(reference.sparse, candidate.sparse)), default=0.0
        )
    if reference.colbert is not None and candidate.colbert is not None:
        means = [float(_cosines(r, c).mean()) for r, c in zip(reference.colbert, candidate.colbert) if len(r)]
        colbert = min(means, default=1.0)
    return Deviation(dense, sparse, colbert)


def forward_as_result(out: ForwardOutput, lengths: np.ndarray) -> EncodeResult:
    """View one batch's raw outputs per text (sparse keyed by position), for `measure_deviation`."""
    sparse = None
    if out.token_weights is not None:
        sparse = [
            {p: float(w) for p, w in enumerate(row[:n]) if w > 0}
            for row, n in zip(out.token_weights, lengths)
        ]
    colbert = None if out.colbert is None else [row[: n - 1] for row, n in zip(out.colbert, lengths)]
    return EncodeResult(dense=out.dense, sparse=sparse, colbert=colbert, num_tokens=[int(n) for n in lengths])


def probe_batch(tokenizer: Any, max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The probe texts as one padded batch of (ids, mask)."""
    enc = tokenizer(
        list(PROBE_TEXTS), padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def runtime_deviation(
    reference: Runtime | ForwardOutput,
    candidate: Runtime,
    ids: np.ndarray,
    mask: np.ndarray,
    *,
    sparse: bool = True,
) -> Deviation:
    """Deviation of `candidate` from `reference` (a runtime, or its output on this batch) on one batch."""
    ref = (
        reference
        if isinstance(reference, ForwardOutput)
        else reference.forward(ids, mask, dense=True, sparse=sparse, colbert=True)
    )
    lengths = mask.sum(axis=1)
    cand = candidate.forward(ids, mask, dense=True, sparse=sparse, colbert=True)
    return measure_deviation(forward_as_result(ref, lengths), forward_as_result(cand, lengths))
