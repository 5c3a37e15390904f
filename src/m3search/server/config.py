"""What one server process serves and its limits: `ServerSettings`, plus per-model similarity levels.

Similarity levels need per-model thresholds because score scales differ: bge-m3's dense cosines spread over
[0, 1], while e5's are compressed into roughly [0.7, 0.95] (its contrastive training used a low temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from m3search.encoders.registry import find_spec
from m3search.settings import home_dir


@dataclass(frozen=True)
class SimilarityLevels:
    """Thresholds on the dense cosine: above `very_similar` is "very similar", above `related` "related"."""

    very_similar: float = 0.85
    related: float = 0.6

    def level(self, score: float) -> str:
        """The label for one score."""
        if score > self.very_similar:
            return "very similar"
        if score > self.related:
            return "related"
        return "unrelated"


#: Levels per registered model name; models not listed use `SimilarityLevels()` (bge-m3's scale).
MODEL_LEVELS: dict[str, SimilarityLevels] = {
    "BAAI/bge-m3": SimilarityLevels(0.85, 0.6),
    "intfloat/multilingual-e5-small": SimilarityLevels(0.9, 0.82),
    "intfloat/multilingual-e5-base": SimilarityLevels(0.9, 0.82),
    "intfloat/multilingual-e5-large": SimilarityLevels(0.9, 0.82),
}


def levels_for(model: str) -> SimilarityLevels:
    """The similarity levels of a model name or alias (bge-m3's scale for unknown models)."""
    spec = find_spec(model)
    return MODEL_LEVELS.get(spec.name if spec else model, SimilarityLevels())


def default_collections_dir() -> Path:
    """`$M3SEARCH_HOME/collections`: where `serve` keeps collections unless told otherwise."""
    return home_dir() / "collections"


@dataclass
class ServerSettings:
    """Everything `create_app` needs; the CLI fills it from its options."""

    model: str = "intfloat/multilingual-e5-small"
    collections_dir: Path = field(default_factory=default_collections_dir)
    runtime: str = "auto"
    device: str | None = None
    #: Bearer tokens accepted; empty means no authentication.
    api_keys: tuple[str, ...] = ()
    #: Host names the server answers to besides the loopback names ("*": any); see `web_safety`.
    allowed_hosts: tuple[str, ...] = ()
    #: Origins (scheme://host[:port]) whose pages may send unsafe requests besides the server's own ("*": any).
    allowed_origins: tuple[str, ...] = ()
    #: Largest request body in bytes (413 above it).
    max_body_bytes: int = 16 * 1024 * 1024
    #: Most texts in one encode or similarity request (422 above it).
    max_inputs: int = 256
    #: Most tokens one encode or similarity request may make the model read (413 above it): a text costs its
    #: tokens up to the max length when truncated, all of them when chunked.
    max_request_tokens: int = 65_536
    #: Longest search query in characters (413 above it).
    max_query_chars: int = 65_536
    #: Requests estimated above this many tokens run in the batcher's bulk lane, in slices (see `batching`).
    bulk_tokens: int = 4096
    #: Seconds a client has to send a request's whole body once it started (408 after, connection closed).
    body_timeout_s: float = 60.0
    #: Most documents in one upsert request or upload (422 above it).
    max_upsert_docs: int = 10_000
    #: Most results one search may ask for.
    max_k: int = 1000
    #: Micro-batching: most texts per model call, how long to wait for more, and queued texts before 503.
    batch_size: int = 64
    batch_wait_ms: float = 2.0
    max_queue: int = 4096
    #: The image encoder (adapter directory or Visualized-BGE checkpoint) for /embed images and new image
    #: collections; None: no images except in collections that bring their own.
    image_encoder: str | None = None
    #: Warm each collection's search files into free memory when it is first opened (`Collection.warm`).
    warm: bool = True
    #: Similarity thresholds; None picks the model's (`levels_for`).
    levels: SimilarityLevels | None = None

    def similarity_levels(self, model_name: str) -> SimilarityLevels:
        """The configured levels, or the served model's."""
        return self.levels if self.levels is not None else levels_for(model_name)
