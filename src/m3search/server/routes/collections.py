"""Collections (create, list, stats, delete), their documents (upsert as JSON or JSONL upload, get, delete),
image thumbnails, and `POST /collections/{name}/search` (text, image as base64, or both; `search/upload` takes
the image as a multipart file).

Collection calls block (SQLite, index files), so they run in the thread pool. For collections built with the
served model, queries and uploaded documents are encoded through the micro-batcher, so concurrent requests
share model calls and the collection holds its lock only to write; BM25 weights come from the collection
itself (they need its statistics).
"""

from __future__ import annotations

import functools
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, Response, UploadFile, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from m3search.encoders.base import OUTPUT_KINDS, OutputKind
from m3search.encoders.image import image_field
from m3search.errors import ImageError, InvalidInputError
from m3search.jsonl import json_objects, parse_json
from m3search.search.modes import mode_outputs
from m3search.server.auth import require_api_key
from m3search.server.batching import EncodeOptions
from m3search.server.catalog import Catalog
from m3search.server.highlight import matched_tokens
from m3search.server.schemas import (
    ERROR_RESPONSES,
    BrokenCollection,
    CollectionInfo,
    CollectionList,
    CollectionStats,
    CreateCollectionRequest,
    DeleteDocumentsRequest,
    DeleteResponse,
    DocumentIn,
    DocumentOut,
    ErrorResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    TokenMatchOut,
    UpsertRequest,
    UpsertResponse,
)
from m3search.server.state import ServerState, get_catalog, get_state
from m3search.server.validation import check_query_length
from m3search.store import Collection
from m3search.store.ingest import EncodeTexts, colbert_pruner, encoded_rows, model_kinds

router = APIRouter(
    prefix="/collections",
    dependencies=[Depends(require_api_key)],
    tags=["collections"],
    responses={
        **ERROR_RESPONSES,
        409: {
            "model": ErrorResponse,
            "description": "The name is taken, the writer lock is held, or the "
            "collection was deleted meanwhile.",
        },
        500: {"model": ErrorResponse, "description": "A damaged collection; the message names the file."},
    },
)


def _info(name: str, stats: dict[str, Any]) -> dict[str, Any]:
    """`CollectionInfo` fields from `Collection.stats()`."""
    return {
        "name": name,
        "count": stats["count"],
        "model": stats["model"],
        "outputs": stats["outputs"],
        "dense_index": stats["dense_index"],
        "size_bytes": stats["disk_bytes"],
        "segments": len(stats["segments"]),
        "pending": stats["pending"],
        "images": bool(stats["image_encoder"]),
        **{key: stats[key] for key in ("colbert_dtype", "colbert_recheck", "colbert_prune", "search_mode")},
        "fusion_weights": {
            fusion: dict(zip(OUTPUT_KINDS, weights)) for fusion, weights in stats["fusion_weights"].items()
        },
    }


def thumbnail_url(name: str, reference: str | None) -> str | None:
    """Where the UI fetches a document's thumbnail."""
    return None if reference is None else f"/collections/{name}/thumbnails/{reference}"


@router.get("", response_model=CollectionList, summary="List collections")
async def list_collections(catalog: Catalog = Depends(get_catalog)) -> CollectionList:
    def build() -> CollectionList:
        found, broken = catalog.listing()
        return CollectionList(
            collections=[CollectionInfo(**_info(n, stats), warm_up=catalog.warm_up(n)) for n, stats in found],
            broken=[BrokenCollection(name=n, error=error) for n, error in broken],
        )

    return await run_in_threadpool(build)


@router.post(
    "", response_model=CollectionInfo, status_code=status.HTTP_201_CREATED, summary="Create a collection"
)
async def create_collection(
    body: CreateCollectionRequest, catalog: Catalog = Depends(get_catalog)
) -> CollectionInfo:
    """An empty collection for the served model (409 if the name is taken)."""
    collection = await run_in_threadpool(
        catalog.create,
        body.name,
        outputs=body.outputs,
        dense_index=body.dense_index,
        max_length=body.max_length,
        images=body.images,
        colbert_dtype=body.colbert_dtype,
        colbert_recheck=body.colbert_recheck,
        colbert_prune=body.colbert_prune,
    )
    return CollectionInfo(**_info(body.name, await run_in_threadpool(collection.stats)))


@router.get("/{name}", response_model=CollectionStats, summary="Collection statistics")
async def collection_stats(name: str, catalog: Catalog = Depends(get_catalog)) -> CollectionStats:
    def build() -> CollectionStats:
        stats = catalog.get(name).stats()
        return CollectionStats(
            **_info(name, stats),
            tombstones=stats["tombstones"],
            segment_details=stats["segments"],
            warm_up=catalog.warm_up(name),
        )

    return await run_in_threadpool(build)


@router.delete("/{name}", response_model=DeleteResponse, summary="Delete a collection and its files")
async def delete_collection(name: str, catalog: Catalog = Depends(get_catalog)) -> DeleteResponse:
    await run_in_threadpool(catalog.delete, name)
    return DeleteResponse(deleted=1)


# ---- documents ------------------------------------------------------------------------------------------


async def _upsert(
    name: str, documents: list[DocumentIn], request: Request, state: ServerState, catalog: Catalog
) -> UpsertResponse:
    if not documents:
        raise InvalidInputError("documents is empty: send at least one document")
    limit = state.settings.max_upsert_docs
    if len(documents) > limit:
        raise InvalidInputError(
            f"{len(documents)} documents in one request; this server accepts at most {limit}: "
            "split the upload"
        )
    for i, doc in enumerate(documents):
        if doc.text is not None and not doc.text.strip():
            raise InvalidInputError(f"documents[{i}] (id {doc.id!r}) has an empty text")

    collection = await run_in_threadpool(catalog.get, name)
    records = [d.model_dump(exclude_none=True) for d in documents]
    for i, record in enumerate(records):
        if "image" in record:  # bytes only: a request never names a file on the server
            record["image"] = image_field(
                record["image"], f"document {record['id']!r} (documents[{i}])", allow_paths=False
            )
    encode = _batched_encoding(state, collection, request) if catalog.serves(collection.config) else None
    batch = await run_in_threadpool(
        lambda: collection.prepare(records, batch_size=state.settings.batch_size, encode=encode)
    )

    def write() -> UpsertResponse:
        written = collection.write(batch)
        return UpsertResponse(upserted=written, count=collection.count())

    return await run_in_threadpool(write)


def _batched_encoding(state: ServerState, collection: Collection, request: Request) -> EncodeTexts:
    """The collection's prepare step encoding texts through the micro-batcher, a batch at a time.

    Prepare runs in a worker thread, outside the collection's write; each batch is handed to the event loop's
    batcher, so search queries arriving meanwhile get model calls between the batches; when the client goes
    away the rest is dropped.
    """
    cfg = collection.config
    step = state.settings.batch_size
    prune = colbert_pruner(cfg, collection.encoder)

    def encode(texts: list[str], kinds: list[OutputKind]) -> list[dict[str, Any]]:
        options = EncodeOptions(
            dense="dense" in kinds,
            sparse="sparse" in kinds,
            colbert="colbert" in kinds,
            max_length=cfg.max_length,
        )
        assert state.batcher is not None  # get_catalog answered: the model is ready
        batch = functools.partial(state.batcher.encode, disconnected=request.is_disconnected)
        rows: list[dict[str, Any]] = []
        for start in range(0, len(texts), step):
            out = from_thread.run(batch, texts[start : start + step], options)
            rows.extend(encoded_rows(out, kinds, prune))
        return rows

    return encode


@router.post("/{name}/documents", response_model=UpsertResponse, summary="Insert or replace documents")
async def upsert_documents(
    name: str,
    body: UpsertRequest,
    request: Request,
    state: ServerState = Depends(get_state),
    catalog: Catalog = Depends(get_catalog),
) -> UpsertResponse:
    """Documents with `id`, `text` and/or `image` (base64), and optional `metadata`; durable when the answer
    comes."""
    return await _upsert(name, body.documents, request, state, catalog)


def parse_upload(data: bytes, filename: str) -> list[DocumentIn]:
    """Documents from a JSON array (or {"documents": [...]}) or JSONL file; errors name the line or item."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{filename} is not UTF-8 text (byte {exc.start})") from None
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")) and not filename.endswith((".jsonl", ".ndjson")):
        try:
            items = parse_json(text, filename)
        except InvalidInputError:
            if not stripped.startswith("{"):
                raise
            items = None  # one object per line after all
        if isinstance(items, dict) and "documents" in items:
            items = items["documents"]
        if isinstance(items, list):
            return [_document(item, f"item {i}") for i, item in enumerate(items)]
    docs = []
    for lineno, item in json_objects(text.splitlines(), filename):
        docs.append(_document(item, f"line {lineno}"))
    return docs


def _document(item: Any, where: str) -> DocumentIn:
    try:
        return DocumentIn.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "document"
        raise InvalidInputError(f"{where}: {field}: {first['msg']}") from None


@router.post("/{name}/documents/upload", response_model=UpsertResponse, summary="Upload a JSONL or JSON file")
async def upload_documents(
    name: str,
    request: Request,
    file: UploadFile = File(description="JSONL, or a JSON array of documents"),
    state: ServerState = Depends(get_state),
    catalog: Catalog = Depends(get_catalog),
) -> UpsertResponse:
    """Upsert the documents of an uploaded file (one object per line, or a JSON array)."""
    documents = parse_upload(await file.read(), file.filename or "upload")
    return await _upsert(name, documents, request, state, catalog)


@router.get("/{name}/documents/{doc_id}", response_model=DocumentOut, summary="Get a document")
async def get_document(name: str, doc_id: str, catalog: Catalog = Depends(get_catalog)) -> DocumentOut:
    doc = (await run_in_threadpool(lambda: catalog.get(name).get([doc_id])))[0]
    if doc is None:
        raise _not_found(f"document {doc_id!r} is not in collection {name!r}")
    return DocumentOut(
        id=doc.id,
        kind=doc.kind,
        text=doc.text,
        metadata=doc.metadata,
        thumbnail_url=thumbnail_url(name, doc.thumbnail),
    )


@router.get(
    "/{name}/thumbnails/{reference}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
    summary="The JPEG thumbnail of a document's image",
)
async def thumbnail(name: str, reference: str, catalog: Catalog = Depends(get_catalog)) -> Response:
    """References come from documents and search results (`thumbnail_url`); they never change meaning, so
    the answer may be cached for good."""
    jpeg = await run_in_threadpool(lambda: catalog.get(name).thumbnail(reference))
    if jpeg is None:
        raise _not_found(f"thumbnail {reference!r} is not in collection {name!r} (its document is gone)")
    return Response(
        jpeg, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


@router.delete("/{name}/documents/{doc_id}", response_model=DeleteResponse, summary="Delete a document")
async def delete_document(name: str, doc_id: str, catalog: Catalog = Depends(get_catalog)) -> DeleteResponse:
    deleted = await run_in_threadpool(lambda: catalog.get(name).delete([doc_id]))
    if not deleted:
        raise _not_found(f"document {doc_id!r} is not in collection {name!r}")
    return DeleteResponse(deleted=deleted)


@router.post("/{name}/documents/delete", response_model=DeleteResponse, summary="Delete documents by id")
async def delete_documents(
    name: str, body: DeleteDocumentsRequest, catalog: Catalog = Depends(get_catalog)
) -> DeleteResponse:
    """Unknown ids are ignored; the answer counts the documents that existed."""
    return DeleteResponse(deleted=await run_in_threadpool(lambda: catalog.get(name).delete(body.ids)))


def _not_found(message: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, message)


# ---- search ---------------------------------------------------------------------------------------------


async def _query_vectors(
    state: ServerState,
    catalog: Catalog,
    collection: Collection,
    query: str,
    kinds: set[OutputKind],
    request: Request,
) -> dict | None:
    """The query's vectors for `kinds` via the batcher (BM25 weights from the collection), or None when the
    collection uses another model than the served one (then it encodes the query itself)."""
    cfg = collection.config
    if not catalog.serves(cfg):
        return None
    bm25 = cfg.sparse_source == "bm25"
    encoded = set(model_kinds(cfg)) & kinds
    vectors: dict[str, Any] = {}
    if encoded:
        assert state.batcher is not None  # the catalog serves this model: it is loaded
        out = await state.batcher.encode(
            [query],
            EncodeOptions(
                dense="dense" in encoded,
                sparse="sparse" in encoded,
                colbert="colbert" in encoded,
                is_query=True,
                max_length=cfg.max_length,
            ),
            disconnected=request.is_disconnected,
        )
        vectors.update({k: getattr(out, k)[0] for k in encoded})
    if "sparse" in kinds and bm25:  # with the query's BM25 ceiling, which needs its text
        lexical = await run_in_threadpool(collection.encode_query, query, ["sparse"])
        assert lexical.sparse is not None  # asked for
        vectors["sparse"] = dict(zip(lexical.sparse[0].tolist(), lexical.sparse[1].tolist()))
        vectors["sparse_ceiling"] = lexical.sparse_ceiling
    return vectors


@router.post(
    "/{name}/search", response_model=SearchResponse, response_model_exclude_none=True, summary="Hybrid search"
)
async def search(
    name: str,
    body: SearchRequest,
    request: Request,
    state: ServerState = Depends(get_state),
    catalog: Catalog = Depends(get_catalog),
) -> SearchResponse:
    """The `k` best documents for a text query, an image (base64) or both, in any mode, fused by weights or
    RRF, after a filter; `kinds` picks text->image, image->text and so on."""
    image = image_field(body.image, "query", allow_paths=False) if body.image is not None else None
    return await _search(name, body, image, request, state, catalog)


@router.post(
    "/{name}/search/upload",
    response_model=SearchResponse,
    response_model_exclude_none=True,
    summary="Search with an uploaded image (multipart)",
)
async def search_upload(
    name: str,
    http_request: Request,
    image: UploadFile = File(description="The query image"),
    request: str = Form("{}", description="The other search fields as JSON (query, k, kinds, mode...)."),
    state: ServerState = Depends(get_state),
    catalog: Catalog = Depends(get_catalog),
) -> SearchResponse:
    """The same search as `POST /{name}/search`, with the image as a file instead of base64."""
    try:
        body = SearchRequest.model_validate_json(request)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInputError(
            f"request: {'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
        ) from None
    if body.image is not None:
        raise InvalidInputError("send the image once: as the file, not also in request.image")
    data = await image.read()
    if not data:
        raise ImageError(f"the uploaded image {image.filename or ''!r} is empty (0 bytes)")
    return await _search(name, body, data, http_request, state, catalog)


async def _search(
    name: str, body: SearchRequest, image: Any, request: Request, state: ServerState, catalog: Catalog
) -> SearchResponse:
    if image is None and (body.query is None or not body.query.strip()):
        raise InvalidInputError("query is empty: send a query, an image, or both")
    if body.query is not None and not body.query.strip():
        raise InvalidInputError("query is empty")
    check_query_length(body.query, state.settings)
    if body.k > state.settings.max_k:
        raise InvalidInputError(f"k={body.k} is over this server's limit of {state.settings.max_k}")
    collection = await run_in_threadpool(catalog.get, name)
    mode = body.mode or ("dense" if body.query is None else collection.default_mode)
    kinds = set(mode_outputs(mode)) & set(collection.config.outputs)
    highlight = body.highlight and "sparse" in collection.config.outputs and body.query is not None
    if highlight:
        kinds.add("sparse")
    vectors = None
    if image is None and body.query is not None:  # with an image the collection encodes both (a joint vector)
        vectors = await _query_vectors(state, catalog, collection, body.query, kinds, request)
    weights = body.weights.model_dump() if body.weights is not None else None

    def run() -> tuple[list, dict | None]:
        query_sparse = None
        if highlight:
            query_sparse = (
                vectors["sparse"]
                if vectors is not None
                else collection.encoder.encode_queries(
                    [body.query or ""], return_dense=False, return_sparse=True
                ).need("sparse")[0]
            )
        hits = collection.search(
            vectors if vectors is not None else body.query,
            body.k,
            image=image,
            kinds=body.kinds,
            mode=mode,
            weights=weights,
            fusion=body.fusion,
            normalize=body.normalize,
            filter=body.filter,
            candidates=body.candidates,
            rerank=body.rerank,
        )
        return hits, query_sparse

    hits, query_sparse = await run_in_threadpool(run)
    matches = (
        matched_tokens(collection.encoder, query_sparse, [h.text for h in hits])
        if highlight and query_sparse is not None
        else None
    )
    results = []
    for i, hit in enumerate(hits):
        item = SearchHit(
            id=hit.id,
            score=hit.score,
            scores=hit.scores,
            text=hit.text,
            metadata=hit.metadata,
            kind=hit.kind,
            thumbnail_url=thumbnail_url(name, hit.thumbnail),
        )
        if matches is not None:
            item.matched_tokens = [
                TokenMatchOut(token=m.token, token_id=m.token_id, weight=m.weight, spans=m.spans)
                for m in matches[i]
            ]
        results.append(item)
    return SearchResponse(collection=name, mode=mode, results=results)
