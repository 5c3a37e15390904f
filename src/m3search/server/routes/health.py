"""`GET /healthz` (the process answers), `GET /readyz` (the model is loaded), `GET /metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from m3search.server.schemas import HealthResponse, ReadyResponse
from m3search.server.state import ServerState, get_state

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="Liveness")
async def healthz() -> HealthResponse:
    """Always ok while the process serves requests."""
    return HealthResponse()


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse}},
    summary="Readiness: the model is loaded",
)
async def readyz(state: ServerState = Depends(get_state)) -> JSONResponse:
    """200 with the model's description once loaded; 503 with the reason before (or if loading failed)."""
    if state.ready and state.encoder is not None:
        body = ReadyResponse(ready=True, model=state.encoder.name, info=state.encoder.describe())
        return JSONResponse(body.model_dump(mode="json"))
    body = ReadyResponse(ready=False, detail=state.not_ready_reason())
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: ServerState = Depends(get_state)) -> Response:
    """Request counts and latencies by route, and the micro-batcher's batch sizes and queue."""
    return Response(state.metrics.render(), media_type=state.metrics.content_type)
