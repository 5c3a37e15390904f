"""A collection's own search defaults (`search.json`): the fusion settings its searches use unless told
otherwise, set by hand or learned by `m3search index tune`.

Unlike `config.json` (fixed at creation) these may change at any time; an unset field falls back to the
library's default (`m3search.search.fusion`, `m3search.search.planner.default_candidates`, `RERANK_DEFAULT`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from m3search.errors import CollectionError, InvalidInputError
from m3search.scoring import check_weights
from m3search.search.fusion import (
    DEFAULT_FUSION,
    FUSIONS,
    NORMALIZATIONS,
    Fusion,
    Normalize,
    Weights,
    default_weights,
)
from m3search.search.modes import HYBRID_MODES, MODES, Mode
from m3search.store.config import atomic_write_text

SEARCH_DEFAULTS_FILE = "search.json"


@dataclass
class SearchDefaults:
    """Fusion settings a collection searches with by default; None: the library's default."""

    mode: Mode | None = None
    fusion: Fusion | None = None
    #: (dense, sparse, colbert)
    weights: list[float] | None = None
    normalize: Normalize | None = None
    candidates: int | None = None
    #: How many candidates ColBERT re-scores (modes colbert and all)
    rerank: int | None = None
    #: How the settings were chosen (e.g. the tuning run: queries, metric, scores); informative only.
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("fusion", self.fusion, FUSIONS),
            ("normalize", self.normalize, NORMALIZATIONS),
        ):
            if value is not None and value not in allowed:
                raise InvalidInputError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.weights is not None:
            self.weights = list(check_weights(self.weights))
        for depth, count in (("candidates", self.candidates), ("rerank", self.rerank)):
            if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
                raise InvalidInputError(f"{depth} must be a positive integer, got {count!r}")

    def options(self) -> dict[str, Any]:
        """The settings that are set, as `Collection.search` keyword arguments."""
        return {
            f.name: v for f in fields(self) if f.name != "source" and (v := getattr(self, f.name)) is not None
        }

    def fusion_for(
        self, fusion: Fusion | None, mode: Mode | None, default_mode: Mode
    ) -> tuple[Mode, Fusion, Weights | None]:
        """The mode, fusion and (dense, sparse, colbert) weights a search given no weights uses, `fusion` and
        `mode` left None taking these defaults (mode: then `default_mode`): the stored weights when the fusion
        is left to them, else the fusion's default for the mode; None for a single mode."""
        mode = mode or self.mode or default_mode
        tuned = fusion is None and self.fusion is not None
        fusion = (self.fusion if tuned else fusion) or DEFAULT_FUSION
        if mode not in HYBRID_MODES:
            return mode, fusion, None
        if tuned and self.weights is not None:
            return mode, fusion, check_weights(self.weights)
        return mode, fusion, default_weights(fusion, mode)

    def save(self, directory: Path) -> None:
        """Write `search.json` durably (a crash leaves the old or the new file)."""
        atomic_write_text(
            directory / SEARCH_DEFAULTS_FILE, json.dumps(asdict(self), indent=2, sort_keys=True)
        )

    @classmethod
    def load(cls, directory: Path) -> SearchDefaults:
        """The defaults stored in `directory`; all unset when it has none."""
        path = directory / SEARCH_DEFAULTS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (OSError, ValueError, TypeError, InvalidInputError) as exc:
            raise CollectionError(f"cannot read the search defaults {path}: {exc}") from None
