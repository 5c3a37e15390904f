"""`POST /v1/embeddings` (OpenAI-compatible), `GET /v1/models`, `POST /embed` (dense, sparse, ColBERT; images
as base64) and `POST /embed/upload` (images as multipart files)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from m3search.encoders.base import OUTPUT_KINDS
from m3search.encoders.image import image_field
from m3search.encoders.registry import find_spec
from m3search.errors import InvalidInputError
from m3search.server.auth import require_api_key
from m3search.server.batching import EncodeOptions, MicroBatcher
from m3search.server.catalog import Catalog
from m3search.server.schemas import (
    ERROR_RESPONSES,
    EmbeddingData,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    EmbedItem,
    EmbedRequest,
    EmbedResponse,
    EmbedUsage,
    ModelCard,
    ModelList,
)
from m3search.server.state import ServerState, get_batcher, get_catalog, get_state
from m3search.server.validation import check_token_budget, checked_texts

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, tags=["embeddings"])


def _check_model(requested: str | None, served: str) -> None:
    if requested is None or requested == served:
        return
    spec = find_spec(requested)
    if spec is None or spec.name != served:
        raise HTTPException(404, f"model {requested!r} is not served here; this server serves {served!r}")


def _base64(vector: np.ndarray) -> str:
    """OpenAI's base64 format: the little-endian float32 bytes."""
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


@router.post(
    "/v1/embeddings", response_model=EmbeddingsResponse, summary="OpenAI-compatible dense embeddings"
)
async def embeddings(
    body: EmbeddingsRequest,
    request: Request,
    state: ServerState = Depends(get_state),
    batcher: MicroBatcher = Depends(get_batcher),
) -> EmbeddingsResponse:
    """Dense vectors in OpenAI's request and response format, so OpenAI clients work unchanged."""
    encoder = batcher.encoder
    _check_model(body.model, encoder.name)
    if body.dimensions is not None and body.dimensions != encoder.dim:
        raise InvalidInputError(
            f"dimensions={body.dimensions} is not available: {encoder.name} gives "
            f"{encoder.dim}-dimensional vectors only"
        )
    if isinstance(body.input, list) and body.input and not isinstance(body.input[0], str):
        raise InvalidInputError(
            "input holds token ids; send text (token ids of another tokenizer mean nothing here)"
        )
    texts = checked_texts(body.input, state.settings, field="input")  # type: ignore[arg-type]
    options = EncodeOptions(dense=True, is_query=body.input_type == "query")
    await check_token_budget(texts, options, encoder, state.settings)
    result = await batcher.encode(texts, options, disconnected=request.is_disconnected)
    if body.encoding_format == "base64":
        data = [EmbeddingData(index=i, embedding=_base64(v)) for i, v in enumerate(result.need("dense"))]
    else:
        data = [EmbeddingData(index=i, embedding=v.tolist()) for i, v in enumerate(result.need("dense"))]
    tokens = sum(result.num_tokens)
    return EmbeddingsResponse(
        data=data, model=encoder.name, usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


@router.get("/v1/models", response_model=ModelList, summary="The served model (OpenAI-compatible)")
async def models(batcher: MicroBatcher = Depends(get_batcher)) -> ModelList:
    """List the one model this server serves."""
    return ModelList(data=[ModelCard(id=batcher.encoder.name)])


@router.post(
    "/embed",
    response_model=EmbedResponse,
    response_model_exclude_none=True,
    summary="Dense, sparse and ColBERT outputs in one call",
)
async def embed(
    body: EmbedRequest,
    request: Request,
    state: ServerState = Depends(get_state),
    batcher: MicroBatcher = Depends(get_batcher),
    catalog: Catalog = Depends(get_catalog),
) -> EmbedResponse:
    """Any of the model's outputs from one pass; sparse weights keyed by token id (optionally with tokens).
    `images` (base64) get dense vectors in the same space from the server's image encoder."""
    if body.texts is None and body.images is None:
        raise InvalidInputError("send texts, images, or both")
    images = None
    if body.images is not None:
        sources = [image_field(b, f"images[{i}]", allow_paths=False) for i, b in enumerate(body.images)]
        images = await _embed_images(sources, state, catalog)
    if body.texts is None:
        return EmbedResponse(
            model=batcher.encoder.name, data=[], usage=EmbedUsage(total_tokens=0), images=images
        )
    response = await _embed_texts(body, request, state, batcher)
    response.images = images
    return response


@router.post(
    "/embed/upload",
    response_model=EmbedResponse,
    response_model_exclude_none=True,
    summary="Dense vectors of uploaded images (multipart)",
)
async def embed_upload(
    images: list[UploadFile] = File(description="Image files"),
    state: ServerState = Depends(get_state),
    batcher: MicroBatcher = Depends(get_batcher),
    catalog: Catalog = Depends(get_catalog),
) -> EmbedResponse:
    """The images' dense vectors, in the served text model's space."""
    data = [await f.read() for f in images]
    vectors = await _embed_images(data, state, catalog)
    return EmbedResponse(
        model=batcher.encoder.name, data=[], usage=EmbedUsage(total_tokens=0), images=vectors
    )


async def _embed_images(images: list, state: ServerState, catalog: Catalog) -> list[list[float]]:
    if not images:
        raise InvalidInputError("images is empty: send at least one image")
    if len(images) > state.settings.max_inputs:
        raise InvalidInputError(
            f"{len(images)} images in one request; this server accepts at most "
            f"{state.settings.max_inputs}: split the request"
        )
    encoder = await run_in_threadpool(catalog.image_encoder)
    vectors = await run_in_threadpool(encoder.encode_images, images, batch_size=state.settings.batch_size)
    return vectors.tolist()


async def _embed_texts(
    body: EmbedRequest, request: Request, state: ServerState, batcher: MicroBatcher
) -> EmbedResponse:
    encoder = batcher.encoder
    texts = checked_texts(body.texts, state.settings)  # type: ignore[arg-type]
    asked = {"dense": body.dense, "sparse": body.sparse, "colbert": body.colbert}
    wanted = [k for k in OUTPUT_KINDS if asked[k]]
    if not wanted:
        raise InvalidInputError("ask for at least one output: dense, sparse or colbert")
    encoder.check_outputs(wanted)
    if body.max_length is not None and body.max_length > encoder.max_length:
        raise InvalidInputError(
            f"max_length must be at most {encoder.max_length} for {encoder.name}, got {body.max_length}"
        )
    options = EncodeOptions(
        dense=body.dense,
        sparse=body.sparse,
        colbert=body.colbert,
        is_query=body.input_type == "query",
        max_length=body.max_length,
        chunking=body.chunking,
    )
    await check_token_budget(texts, options, encoder, state.settings)
    result = await batcher.encode(texts, options, disconnected=request.is_disconnected)
    truncated = set(result.truncated)
    items = []
    for i in range(len(texts)):
        item = EmbedItem(index=i, num_tokens=result.num_tokens[i], truncated=i in truncated)
        if result.dense is not None:
            item.dense = result.dense[i].tolist()
        if result.sparse is not None:
            weights = result.sparse[i]
            item.sparse = {str(t): w for t, w in weights.items()}
            if body.return_tokens:
                ids = list(weights)
                item.sparse_tokens = {str(t): s for t, s in zip(ids, encoder.token_strings(ids))}
        if result.colbert is not None:
            item.colbert = result.colbert[i].tolist()
        items.append(item)
    return EmbedResponse(
        model=encoder.name, data=items, usage=EmbedUsage(total_tokens=sum(result.num_tokens))
    )
