"""One pydantic model per request and response body: together they are the OpenAPI contract of the server."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from m3search.scoring import MAX_WEIGHT
from m3search.search.fusion import DEFAULT_FUSION, describe_defaults
from m3search.search.modes import Mode

InputType = Literal["query", "passage"]


class _Request(BaseModel):
    """Request bodies reject unknown fields, so a misspelt option is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


# ---- errors and health ----------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    message: str = Field(description="What is wrong, in words a user can act on.")
    type: str = Field(description="Error class, e.g. invalid_request_error, not_found, unauthorized.")
    details: list[dict[str, Any]] | None = Field(None, description="Per-field problems of a 422.")


class ErrorResponse(BaseModel):
    """Every error answer: the shape OpenAI clients read (`error.message`)."""

    error: ErrorBody


#: The error answers every API route documents in the OpenAPI schema, with what each means.
ERROR_STATUSES: dict[int, str] = {
    400: "Unreadable body (not UTF-8 or JSON nested too deeply, bad multipart), a bad image, or a Host name "
    "this server does not answer to.",
    401: "Missing or wrong API key (servers started with --api-key).",
    403: "An unsafe method sent by a web page of another origin (--allowed-origin).",
    404: "Unknown collection, document or model.",
    408: "The request body did not arrive within --body-timeout.",
    413: "Body over --max-body-mb, texts over --max-request-tokens, query over --max-query-chars, or an "
    "image over the size limits.",
    422: "Invalid request: malformed JSON, wrong or unknown fields, empty texts, bad options or filters.",
    503: "The model is loading (or failed to), the encode queue is full, or the server is stopping.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in ERROR_STATUSES.items()
}


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str | None = Field(None, description="The served model once loaded.")
    detail: str | None = Field(None, description="Why the server is not ready (loading, or the load error).")
    info: dict[str, Any] | None = Field(
        None, description="The encoder's description (dims, outputs, runtime)."
    )


# ---- OpenAI-compatible embeddings -----------------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    """OpenAI's `POST /v1/embeddings` body; `input_type` is an m3search extension (query or passage prefix).

    Unknown fields (such as `user`) are ignored, as OpenAI clients send them.
    """

    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (token-id arrays are refused: another tokenizer's ids)."
    )
    model: str | None = Field(None, description="Must name the served model (or one of its aliases).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="Only the model's own dimension is accepted.")
    input_type: InputType = Field("passage", description="Encode as search queries or as passages.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32 bytes.")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingsUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "m3search"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- /embed: all three outputs ----------------------------------------------------------------------------


#: Images in JSON bodies: base64 text of the file's bytes, optionally as a `data:` URL.
IMAGE_FIELD = "Base64 of the image file (JPEG, PNG, WebP, GIF, BMP), optionally as a data: URL."
#: Document kinds, as collections store them.
DocKind = Literal["text", "image", "image+text"]


class EmbedRequest(_Request):
    """Encode texts into any of dense, sparse and ColBERT outputs in one model pass, or images into dense
    vectors of the same space (with the server's image encoder)."""

    texts: str | list[str] | None = None
    images: list[str] | None = Field(None, description=f"Images to embed (dense only). {IMAGE_FIELD}")
    dense: bool = True
    sparse: bool = False
    colbert: bool = False
    input_type: InputType = "passage"
    max_length: int | None = Field(None, ge=3, description="Tokens per text; default: the model's default.")
    chunking: Literal["truncate", "chunk"] = "truncate"
    return_tokens: bool = Field(False, description="Add the token string of each sparse token id.")


class EmbedItem(BaseModel):
    index: int
    dense: list[float] | None = None
    sparse: dict[str, float] | None = Field(None, description="Token id (as a string) -> weight.")
    sparse_tokens: dict[str, str] | None = Field(None, description="Token id -> token string.")
    colbert: list[list[float]] | None = Field(None, description="One vector per token.")
    num_tokens: int
    truncated: bool


class EmbedUsage(BaseModel):
    total_tokens: int


class EmbedResponse(BaseModel):
    model: str
    data: list[EmbedItem]
    images: list[list[float]] | None = Field(None, description="Dense vectors of the request's images.")
    usage: EmbedUsage


# ---- /similarity ---------------------------------------------------------------------------------------


class Weights(_Request):
    """Weights of the modes in the hybrid score, each in [0, 1000] (relative: only their ratios matter); the
    default is the bge-m3 model card's (0.4, 0.2, 0.4)."""

    dense: float = Field(0.4, ge=0, le=MAX_WEIGHT)
    sparse: float = Field(0.2, ge=0, le=MAX_WEIGHT)
    colbert: float = Field(0.4, ge=0, le=MAX_WEIGHT)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.dense, self.sparse, self.colbert)


class SimilarityRequest(_Request):
    """One text compared with another text or with each text of a list."""

    source: str
    targets: str | list[str]
    weights: Weights = Field(default_factory=Weights)


class Thresholds(BaseModel):
    very_similar: float
    related: float


class SimilarityItem(BaseModel):
    index: int
    text: str
    scores: dict[str, float] = Field(description="Score per mode (dense, sparse, colbert) and `hybrid`.")
    level: Literal["very similar", "related", "unrelated"]


class SimilarityResponse(BaseModel):
    model: str
    modes: list[str] = Field(description="The modes the served model scores in.")
    weights: Weights
    level_mode: Literal["dense"] = Field("dense", description="The score the level is read from.")
    thresholds: Thresholds
    results: list[SimilarityItem]


# ---- collections ---------------------------------------------------------------------------------------


class CreateCollectionRequest(_Request):
    """A new collection for the served model."""

    name: str = Field(description="1-64 letters, digits, '_', '.' or '-', starting with a letter or digit.")
    outputs: list[Literal["dense", "sparse", "colbert"]] | None = Field(
        None,
        description="What to index (default: everything the model gives; BM25 when it has no sparse head).",
    )
    dense_index: Literal["hnsw", "hnsw-sq8", "flat"] = "hnsw"
    max_length: int | None = Field(None, ge=3, description="Tokens kept per document (default: the model's).")
    images: bool = Field(
        False, description="Hold images too, with the server's image encoder (--image-encoder)."
    )
    colbert_dtype: Literal["float16", "int8", "2bit", "binary"] = Field(
        "float16", description="How ColBERT token vectors are stored (docs/INDEX.md: size against ranking)."
    )
    colbert_recheck: int = Field(
        0, ge=0, description="Re-score the best M candidates with kept float16 vectors (compressed dtypes)."
    )
    colbert_prune: Literal["punctuation"] | None = Field(
        None, description="'punctuation': drop special and punctuation tokens' vectors of encoded texts."
    )


class WarmUpInfo(BaseModel):
    """How far reading a collection's search files into memory is (`serve --warm`): until `done`, the first
    queries may wait on the disk."""

    state: Literal["waiting", "reading", "done"]
    planned_bytes: int | None = Field(
        description="bytes it will read; null while it waits for another warm-up"
    )
    read_bytes: int


class CollectionInfo(BaseModel):
    name: str
    count: int
    model: str | None
    outputs: list[str]
    dense_index: str
    size_bytes: int
    segments: int
    pending: int = Field(description="Documents not yet sealed into a segment.")
    images: bool = Field(False, description="Whether documents and queries may be images.")
    colbert_dtype: str = Field("float16", description="How ColBERT token vectors are stored.")
    colbert_recheck: int = Field(0, description="Candidates re-scored with kept float16 vectors.")
    colbert_prune: str | None = Field(None, description="Which tokens' ColBERT vectors are dropped.")
    search_mode: Mode = Field(description="The mode a search uses when the request names none.")
    fusion_weights: dict[str, Weights] = Field(
        default_factory=dict,
        description="The weights a search in `search_mode` fuses with when the request gives none, per fusion "
        '("default": the fusion the collection picks); empty for a single mode.',
    )
    warm_up: WarmUpInfo | None = Field(
        None,
        description="The server's warm-up of the collection's search files (`serve --warm`): null when it started "
        "none (--no-warm, or a collection this server created).",
    )


class BrokenCollection(BaseModel):
    name: str
    error: str = Field(description="Why it cannot be opened (a damaged config.json or store.sqlite...).")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    broken: list[BrokenCollection] = Field(
        default_factory=list, description="Collections on disk that cannot be opened, with the reason."
    )


class DocumentIn(_Request):
    id: str | int
    text: str | None = Field(None, description="The text; a document needs a text, an image, or both.")
    image: str | None = Field(None, description=IMAGE_FIELD)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _text_or_image(self) -> DocumentIn:
        if self.text is None and self.image is None:
            raise ValueError("a document needs a text, an image, or both")
        return self


class UpsertRequest(_Request):
    documents: list[DocumentIn]


class UpsertResponse(BaseModel):
    upserted: int
    count: int = Field(description="Documents in the collection afterwards.")


class DocumentOut(BaseModel):
    id: str
    kind: DocKind = "text"
    text: str | None
    metadata: dict[str, Any]
    thumbnail_url: str | None = Field(None, description="The JPEG thumbnail of the document's image.")


class DeleteDocumentsRequest(_Request):
    ids: list[str | int]


class DeleteResponse(BaseModel):
    deleted: int


class SearchRequest(_Request):
    query: str | None = Field(None, description="The query text; a search needs a query, an image, or both.")
    image: str | None = Field(None, description=f"A query image (image search, or image+text). {IMAGE_FIELD}")
    kinds: list[DocKind] | None = Field(
        None, description='Only documents of these kinds, e.g. ["image", "image+text"] for text->image.'
    )
    k: int = Field(10, ge=1)
    mode: Mode | None = Field(None, description="Default: the richest mode the collection allows.")
    weights: Weights | None = Field(
        None,
        description="Default: the collection's tuned weights, else the fusion's: "
        + describe_defaults()
        + " (dense/sparse/colbert).",
    )
    fusion: Literal["weighted", "rrf", "dbsf"] | None = Field(
        None,
        description="weighted (mean of scaled scores), rrf (reciprocal ranks) or dbsf (mean ± 3σ scaling). "
        f"Default: the collection's tuned fusion, else {DEFAULT_FUSION}.",
    )
    normalize: Literal["auto", "none", "minmax", "signal"] | None = Field(
        None,
        description="signal: min-max scaled, each mode weighted by how much it found for this query; minmax: "
        "without that weighting; none: the bge-m3 reference formula; auto = signal. Default: the "
        "collection's tuned setting, else auto.",
    )
    filter: dict[str, Any] | None = Field(None, description='Metadata filter, e.g. {"lang": "en"}.')
    candidates: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="First-stage candidates per mode in hybrid modes. Default: the collection's tuned depth, "
        "else 100 up to 100,000 documents, growing with the square root of the count beyond.",
    )
    rerank: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Candidates ColBERT re-scores in modes colbert and all, the best by the other modes. "
        "Default: the collection's, else 200.",
    )
    highlight: bool = Field(False, description="Return the query tokens found in each result, with spans.")


class TokenMatchOut(BaseModel):
    token: str
    token_id: int
    weight: float = Field(description="The token's weight in the query's sparse vector.")
    spans: list[tuple[int, int]] = Field(description="Character [start, end) ranges in the result text.")


class SearchHit(BaseModel):
    id: str
    score: float
    scores: dict[str, float]
    text: str | None = Field(None, description="The document's text; absent for image-only documents.")
    metadata: dict[str, Any]
    kind: DocKind = "text"
    thumbnail_url: str | None = None
    matched_tokens: list[TokenMatchOut] | None = None


class SearchResponse(BaseModel):
    collection: str
    mode: str
    results: list[SearchHit]


class CollectionStats(CollectionInfo):
    """`CollectionInfo` plus the storage details: segments (rows, deleted rows, bytes) and tombstones."""

    tombstones: int
    segment_details: list[dict[str, Any]]
