"""Micro-batching: concurrent encode requests are queued and run as model-sized batches.

The one component between the HTTP layer and the model (as infinity does it): handlers `await
batcher.encode(texts, options)`; a single worker takes every queued request with the same options (outputs,
query or passage, max length, chunking), up to `max_batch` texts, runs them as one `encoder.encode` call in a
dedicated thread, and answers each caller from its slice. Model calls never overlap, so CPU threads are not
oversubscribed, and under load each call carries many requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from m3search.encoders import EncodeResult, TextEncoder
from m3search.errors import ServerBusyError

log = logging.getLogger(__name__)

#: Called after each model call with (texts, requests, seconds).
BatchHook = Callable[[int, int, float], None]


@dataclass(frozen=True)
class EncodeOptions:
    """Options that must be equal for requests to share one model call."""

    dense: bool = True
    sparse: bool = False
    colbert: bool = False
    is_query: bool = False
    max_length: int | None = None
    chunking: str = "truncate"

    def kwargs(self) -> dict:
        """Keyword arguments for `TextEncoder.encode`."""
        return dict(
            return_dense=self.dense,
            return_sparse=self.sparse,
            return_colbert=self.colbert,
            is_query=self.is_query,
            max_length=self.max_length,
            chunking=self.chunking,
        )


@dataclass
class _Job:
    texts: list[str]
    options: EncodeOptions
    future: asyncio.Future = field(repr=False)


def slice_result(result: EncodeResult, start: int, stop: int) -> EncodeResult:
    """The part of `result` for texts `start:stop`, with truncation indices made relative to `start`."""
    return EncodeResult(
        dense=None if result.dense is None else result.dense[start:stop],
        sparse=None if result.sparse is None else result.sparse[start:stop],
        colbert=None if result.colbert is None else result.colbert[start:stop],
        num_tokens=result.num_tokens[start:stop],
        truncated=[i - start for i in result.truncated if start <= i < stop],
    )


class MicroBatcher:
    """Queue of encode requests served by one worker that merges compatible requests into one model call."""

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.queued_texts = 0
        self._queue: asyncio.Queue[_Job] | None = None
        #: Jobs taken from the queue but not yet run, and the jobs of the model call under way.
        self._pending: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3search-encode")
        self._worker = asyncio.create_task(self._run_forever(), name="m3search-batcher")

    async def close(self) -> None:
        """Stop the worker; requests queued or running fail with `ServerBusyError`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._queue is not None and not self._queue.empty():
            self._pending.append(self._queue.get_nowait())
        for job in [*self._running, *self._pending]:
            _answer(job.future, exc=ServerBusyError("the server is shutting down"))
        self._pending.clear()
        self._running = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = None

    async def encode(self, texts: Sequence[str], options: EncodeOptions) -> EncodeResult:
        """Encode `texts` in the next batch the worker forms; `ServerBusyError` when the queue is full."""
        if self._queue is None or self._worker is None:
            raise ServerBusyError("the encoder is not running")
        texts = list(texts)
        if self.queued_texts + len(texts) > self.max_queue:
            raise ServerBusyError(
                f"the encode queue is full ({self.queued_texts} texts waiting); retry later"
            )
        future = asyncio.get_running_loop().create_future()
        self.queued_texts += len(texts)
        self._queue.put_nowait(_Job(texts, options, future))
        return await future

    async def _run_forever(self) -> None:
        assert self._queue is not None
        while True:
            if not self._pending:
                self._pending.append(await self._queue.get())
                if self.max_wait and self._queue.empty():
                    await asyncio.sleep(self.max_wait)
            while not self._queue.empty():
                self._pending.append(self._queue.get_nowait())
            self._running, self._pending = self._take_batch(self._pending)
            await self._run_batch(self._running)
            self._running = []

    def _take_batch(self, pending: deque[_Job]) -> tuple[list[_Job], deque[_Job]]:
        """The oldest job and later ones with its options, up to `max_batch` texts; the rest stays."""
        key = pending[0].options
        batch: list[_Job] = []
        rest: deque[_Job] = deque()
        size = 0
        for job in pending:
            if job.future.done():  # the caller went away
                self.queued_texts -= len(job.texts)
            elif job.options == key and (not batch or size + len(job.texts) <= self.max_batch):
                batch.append(job)
                size += len(job.texts)
            else:
                rest.append(job)
        return batch, rest

    async def _run_batch(self, batch: list[_Job]) -> None:
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        self.queued_texts -= len(texts)
        call = partial(self.encoder.encode, texts, batch_size=self.max_batch, **batch[0].options.kwargs())
        started = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except Exception as exc:  # noqa: BLE001 - the error belongs to the callers, not the worker
            if len(batch) == 1:
                _answer(batch[0].future, exc=exc)
                return
            # One request's bad input must not fail the others: run them one by one.
            log.debug("batch of %d requests failed (%s); retrying them separately", len(batch), exc)
            self.queued_texts += len(texts)
            for job in batch:
                await self._run_batch([job])
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), len(batch), time.perf_counter() - started)
        start = 0
        for job in batch:
            stop = start + len(job.texts)
            _answer(job.future, result=slice_result(result, start, stop))
            start = stop


def _answer(
    future: asyncio.Future, *, result: EncodeResult | None = None, exc: BaseException | None = None
) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
