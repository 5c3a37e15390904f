"""`create_app(settings)`: the FastAPI application — API routers, web UI, limits, metrics, error handling."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from m3search import __version__
from m3search.encoders import TextEncoder
from m3search.server.config import ServerSettings
from m3search.server.error_handlers import install_error_handlers
from m3search.server.limits import BodyLimitMiddleware
from m3search.server.metrics import MetricsMiddleware
from m3search.server.routes import collections, embeddings, health, similarity
from m3search.server.state import ServerState
from m3search.server.web_safety import WebSafetyMiddleware

STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: ServerSettings | None = None, *, encoder: TextEncoder | None = None) -> FastAPI:
    """Build the app; `encoder` serves a model already in memory, else `settings.model` loads at startup.

    The model loads in the background, so the server answers `/healthz` (and `/readyz` with 503) at once.
    """
    settings = settings or ServerSettings()
    state = ServerState(settings=settings, encoder=encoder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="m3search",
        version=__version__,
        lifespan=lifespan,
        description="Dense, sparse and ColBERT embeddings, similarity and hybrid search over "
        "collections, with micro-batching and a web UI at /ui/.",
    )
    app.state.server = state
    install_error_handlers(app)
    for module in (embeddings, similarity, collections, health):
        app.include_router(module.router)
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(
        WebSafetyMiddleware, allowed_hosts=settings.allowed_hosts, allowed_origins=settings.allowed_origins
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: counts 413s too
    return app
