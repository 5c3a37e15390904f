"""What a search returns: one `Hit` per document, best first."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class Hit:
    """A matching document: its fused `score`, the score of each mode that ran, its stored text and metadata."""

    id: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "text"
    #: Reference of the document's image thumbnail (`Collection.thumbnail`), None without an image.
    thumbnail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)
