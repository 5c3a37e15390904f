"""The search modes and what each needs: one table shared by the planner, the collection, eval, the CLI and the
server (the bge-m3 paper's names and protocol: `colbert` re-ranks the dense top-N, so it needs dense vectors)."""

from __future__ import annotations

from typing import Literal

from m3search.encoders.base import OUTPUT_KINDS, OutputKind
from m3search.errors import InvalidInputError

Mode = Literal["dense", "sparse", "colbert", "dense+sparse", "all"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "colbert", "dense+sparse", "all")

#: The kinds whose scores a mode reports and fuses.
MODE_KINDS: dict[str, tuple[OutputKind, ...]] = {
    "dense": ("dense",),
    "sparse": ("sparse",),
    "colbert": ("colbert",),
    "dense+sparse": ("dense", "sparse"),
    "all": ("dense", "sparse", "colbert"),
}
#: The first stages that retrieve a mode's candidates.
MODE_STAGES: dict[str, tuple[OutputKind, ...]] = {
    "dense": ("dense",),
    "sparse": ("sparse",),
    "colbert": ("dense",),
    "dense+sparse": ("dense", "sparse"),
    "all": ("dense", "sparse"),
}

#: The kinds whose fusion chooses the candidates ColBERT re-scores in the modes that have it (the cascade's
#: earlier steps; `m3search.search.planner`).
RERANK_PRIOR: dict[str, tuple[OutputKind, ...]] = {"colbert": ("dense",), "all": ("dense", "sparse")}


def mode_outputs(mode: str) -> tuple[OutputKind, ...]:
    """The outputs a collection (and the query) must have for `mode`."""
    if mode not in MODES:
        raise InvalidInputError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    kinds = set(MODE_KINDS[mode]) | set(MODE_STAGES[mode])
    return tuple(k for k in OUTPUT_KINDS if k in kinds)


#: Modes whose one first stage is the answer: searched k deep, with no candidates to re-score.
ONE_STAGE_MODES: tuple[Mode, ...] = tuple(
    m for m in MODES if MODE_STAGES[m] == MODE_KINDS[m] and len(MODE_KINDS[m]) == 1
)
#: Modes that search one representation, and those that fuse several.
SINGLE_MODES: tuple[Mode, ...] = tuple(m for m in MODES if len(MODE_KINDS[m]) == 1)
HYBRID_MODES: tuple[Mode, ...] = tuple(m for m in MODES if len(MODE_KINDS[m]) > 1)
