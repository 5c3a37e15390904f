"""`POST /similarity`: one text against one or many, scored in every mode the model has, plus a level."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from m3search.encoders import OUTPUT_KINDS
from m3search.errors import InvalidInputError
from m3search.scoring import check_weights, colbert_score, dense_score, lexical_score
from m3search.server.auth import require_api_key
from m3search.server.batching import EncodeOptions, MicroBatcher
from m3search.server.schemas import (
    ERROR_RESPONSES,
    SimilarityItem,
    SimilarityRequest,
    SimilarityResponse,
    Thresholds,
)
from m3search.server.state import ServerState, get_batcher, get_state
from m3search.server.validation import check_token_budget, checked_texts

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, tags=["similarity"])


def weighted_mean(scores: dict[str, float], weights: tuple[float, float, float]) -> float:
    """Hybrid score: the weighted mean over the modes present (bge-m3's formula when all three are)."""
    by_mode: dict[str, float] = dict(zip(OUTPUT_KINDS, weights))
    total = sum(by_mode[m] for m in scores)
    if total == 0:
        raise InvalidInputError(f"weights give no weight to any mode this model has ({', '.join(scores)})")
    return sum((by_mode[m] / total) * s for m, s in scores.items())


@router.post("/similarity", response_model=SimilarityResponse, summary="Score texts against a source text")
async def similarity(
    body: SimilarityRequest,
    request: Request,
    state: ServerState = Depends(get_state),
    batcher: MicroBatcher = Depends(get_batcher),
) -> SimilarityResponse:
    """Scores per mode (dense, sparse, colbert: those the model has), hybrid, and a level (from dense).

    Both sides are encoded as queries: similarity is symmetric, and models with prefixes (e5) use the query
    prefix for symmetric tasks. The level thresholds are the served model's (score scales differ by model).
    """
    encoder = batcher.encoder
    targets = checked_texts(body.targets, state.settings, field="targets")
    source = checked_texts(body.source, state.settings, field="source")
    weights = check_weights(body.weights.as_tuple())
    modes = [k for k in OUTPUT_KINDS if k in encoder.outputs]
    options = EncodeOptions(
        dense="dense" in modes, sparse="sparse" in modes, colbert="colbert" in modes, is_query=True
    )
    await check_token_budget(source + targets, options, encoder, state.settings)
    out = await batcher.encode(source + targets, options, disconnected=request.is_disconnected)
    levels = state.settings.similarity_levels(encoder.name)
    results = []
    for i, text in enumerate(targets, start=1):
        scores: dict[str, float] = {}
        if out.dense is not None:
            scores["dense"] = dense_score(out.dense[0], out.dense[i])
        if out.sparse is not None:
            scores["sparse"] = lexical_score(out.sparse[0], out.sparse[i])
        if out.colbert is not None:
            scores["colbert"] = colbert_score(out.colbert[0], out.colbert[i])
        level_score = scores.get("dense", 0.0)
        scores["hybrid"] = weighted_mean(scores, weights)
        results.append(SimilarityItem(index=i - 1, text=text, scores=scores, level=levels.level(level_score)))
    return SimilarityResponse(
        model=encoder.name,
        modes=modes,
        weights=body.weights,
        thresholds=Thresholds(very_similar=levels.very_similar, related=levels.related),
        results=results,
    )
