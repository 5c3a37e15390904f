"""What one running server holds: settings, the model (loaded in the background), the batcher and metrics.

Handlers reach it through the dependencies here, which turn "not loaded yet" into a clear 503.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from fastapi import Request

from m3search.encoders import TextEncoder
from m3search.errors import ModelLoadError, ServerBusyError
from m3search.index.graph_build import compile_graph
from m3search.index.sparse import compile_query_path
from m3search.server.batching import MicroBatcher
from m3search.server.catalog import Catalog
from m3search.server.config import ServerSettings
from m3search.server.metrics import ServerMetrics

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Shared by every request of one app."""

    settings: ServerSettings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    encoder: TextEncoder | None = None
    batcher: MicroBatcher | None = None
    catalog: Catalog | None = None
    load_error: str | None = None
    _load_task: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the batcher now if the encoder was given, else load the model in a thread first; compile the
        sparse search and the graph's walk and insertion in the background meanwhile (only once per install;
        `compile_query_path`, `compile_graph`)."""
        for compile_ in (compile_query_path, compile_graph):
            threading.Thread(target=compile_, name="m3search-compile", daemon=True).start()
        if self.encoder is not None:
            await self._start_batcher()
        else:
            self._load_task = asyncio.create_task(self._load(), name="m3search-model-load")

    async def _load(self) -> None:
        from m3search.encoders import load_encoder

        s = self.settings
        log.info("loading model %s", s.model)
        try:
            # The model's own outputs only: BM25 weights need a corpus, which collections bring.
            self.encoder = await asyncio.to_thread(
                load_encoder, s.model, runtime=s.runtime, device=s.device, sparse="none"
            )
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and every model endpoint
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load model %s: %s", s.model, self.load_error)
            return
        await self._start_batcher()
        log.info("model %s ready", self.encoder.name)

    async def _start_batcher(self) -> None:
        s = self.settings
        assert self.encoder is not None  # loaded before the batcher starts
        self.batcher = MicroBatcher(
            self.encoder,
            max_batch=s.batch_size,
            max_wait_ms=s.batch_wait_ms,
            max_queue=s.max_queue,
            bulk_tokens=s.bulk_tokens,
            on_batch=self.metrics.observe_batch,
        )
        self.metrics.queue_texts.set_function(lambda: self.batcher.queued_texts if self.batcher else 0)
        await self.batcher.start()
        self.catalog = Catalog(
            s.collections_dir, self.encoder, s.model, image_encoder=s.image_encoder, warm=s.warm
        )
        self.metrics.model_ready.set(1)

    async def stop(self) -> None:
        """Stop loading or batching."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.batcher is not None:
            await self.batcher.close()
        if self.catalog is not None:
            self.catalog.close()

    @property
    def ready(self) -> bool:
        """The model is loaded and the batcher and collections are available."""
        return self.catalog is not None

    def not_ready_reason(self) -> str:
        """Why model endpoints cannot answer yet."""
        if self.load_error:
            return f"the model {self.settings.model!r} failed to load: {self.load_error}"
        return f"the model {self.settings.model!r} is still loading; retry in a moment"


def get_state(request: Request) -> ServerState:
    """Dependency: the app's state."""
    return request.app.state.server


def _ready(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    if not state.ready:
        raise (ModelLoadError if state.load_error else ServerBusyError)(state.not_ready_reason())
    return state


def get_batcher(request: Request) -> MicroBatcher:
    """Dependency: the micro-batcher, or 503 while the model is loading (or failed to)."""
    batcher = _ready(request).batcher
    assert batcher is not None  # ready means started
    return batcher


def get_catalog(request: Request) -> Catalog:
    """Dependency: the server's collections, or 503 while the model they share is loading."""
    catalog = _ready(request).catalog
    assert catalog is not None  # ready means opened
    return catalog
