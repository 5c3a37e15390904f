"""Micro-batching: concurrent encode requests are queued and run as model-sized batches, in two lanes.

The one component between the HTTP layer and the model (as infinity does it): handlers `await
batcher.encode(texts, options)`; a worker takes every queued request with the same options (outputs, query or
passage, max length, chunking), up to `max_batch` texts, runs them as one `encoder.encode` call in a dedicated
thread, and answers each caller from its slice. Under load each call carries many requests.

Fair scheduling: a request is priced in tokens before it is queued (`estimate_tokens`, from characters: a token
spans at least one). Requests up to `bulk_tokens` go to the interactive lane; bigger ones to the bulk lane, cut
into slices of at most `slice_tokens` queued one after another, so big requests take turns slice by slice and
the rest of a request whose client went away is never run. Each lane has its own worker and thread, so a
small request never waits behind a big one: at most two model calls overlap (one per lane).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from m3search.encoders import EncodeResult, TextEncoder
from m3search.errors import ClientDisconnectedError, ServerBusyError
from m3search.server.memory import release_free_memory

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
        colbert_ids=None if result.colbert_ids is None else result.colbert_ids[start:stop],
        num_tokens=result.num_tokens[start:stop],
        truncated=[i - start for i in result.truncated if start <= i < stop],
    )


@dataclass
class _Lane:
    """One queue with one worker and one model thread."""

    name: str
    executor: ThreadPoolExecutor
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    #: Jobs taken from the queue but not yet run, and the jobs of the model call under way.
    pending: deque = field(default_factory=deque)
    running: list = field(default_factory=list)
    worker: asyncio.Task | None = None

    def waiting(self) -> list[_Job]:
        """Every job not answered yet: running, taken and still queued."""
        while not self.queue.empty():
            self.pending.append(self.queue.get_nowait())
        return [*self.running, *self.pending]


def estimate_tokens(texts: Sequence[str], options: EncodeOptions, default_max_length: int) -> int:
    """An upper bound of the tokens `texts` make the model read, from characters (a token spans at least one
    character; +2 for the special tokens): each text up to its max length when truncated, all of it when
    chunked."""
    limit = options.max_length or default_max_length
    lengths = (len(t) + 2 for t in texts)
    if options.chunking == "chunk":
        return sum(lengths)
    return sum(min(n, limit) for n in lengths)


def concat_results(parts: list[EncodeResult]) -> EncodeResult:
    """One result from the results of consecutive slices of a request (truncation indices shifted)."""
    if len(parts) == 1:
        return parts[0]
    truncated: list[int] = []
    offset = 0
    for part in parts:
        truncated += [i + offset for i in part.truncated]
        offset += len(part.num_tokens)
    first = parts[0]
    return EncodeResult(
        dense=None if first.dense is None else np.concatenate([p.dense for p in parts]),
        sparse=None if first.sparse is None else [v for p in parts for v in p.sparse or []],
        colbert=None if first.colbert is None else [v for p in parts for v in p.colbert or []],
        colbert_ids=None if first.colbert_ids is None else [v for p in parts for v in p.colbert_ids or []],
        num_tokens=[n for p in parts for n in p.num_tokens],
        truncated=truncated,
    )


#: How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


class MicroBatcher:
    """Encode requests served by two lanes of one worker each, merging compatible requests into one call."""

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 4096,
        bulk_tokens: int = 4096,
        slice_tokens: int = 16384,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.bulk_tokens = bulk_tokens
        self.slice_tokens = max(slice_tokens, bulk_tokens)
        self.on_batch = on_batch
        self.queued_texts = 0
        self._lanes: dict[str, _Lane] = {}

    async def start(self) -> None:
        """Start both lanes' workers on the running event loop."""
        for name in ("interactive", "bulk"):
            lane = _Lane(
                name, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"m3search-encode-{name}")
            )
            lane.worker = asyncio.create_task(self._run_forever(lane), name=f"m3search-batcher-{name}")
            self._lanes[name] = lane

    async def close(self) -> None:
        """Stop the workers; requests queued or running fail with `ServerBusyError`."""
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.worker
            for job in lane.waiting():
                _answer(job.future, exc=ServerBusyError("the server is shutting down"))
            lane.executor.shutdown(wait=True)
        self._lanes = {}

    async def encode(
        self,
        texts: Sequence[str],
        options: EncodeOptions,
        *,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> EncodeResult:
        """Encode `texts` in the lane their size picks; `ServerBusyError` when the queue is full.

        `disconnected` (e.g. `Request.is_disconnected`) is polled while the request waits and before each
        slice is queued: once it says True, the request's queued work is dropped and `ClientDisconnectedError`
        raised.
        """
        if not self._lanes:
            raise ServerBusyError("the encoder is not running")
        texts = list(texts)
        if self.queued_texts + len(texts) > self.max_queue:
            raise ServerBusyError(
                f"the encode queue is full ({self.queued_texts} texts waiting); retry later"
            )
        limit = self.encoder.default_max_length
        if estimate_tokens(texts, options, limit) <= self.bulk_tokens:
            return await self._queue(self._lanes["interactive"], texts, options, disconnected)
        parts = []
        for piece in self._slices(texts, options, limit):
            parts.append(await self._queue(self._lanes["bulk"], piece, options, disconnected))
        return concat_results(parts)

    def _slices(self, texts: list[str], options: EncodeOptions, limit: int) -> list[list[str]]:
        """Consecutive runs of texts of at most `slice_tokens` estimated tokens and `max_batch` texts each
        (a longer text is a slice of its own)."""
        slices: list[list[str]] = [[]]
        size = 0
        for text in texts:
            cost = estimate_tokens([text], options, limit)
            if slices[-1] and (size + cost > self.slice_tokens or len(slices[-1]) >= self.max_batch):
                slices.append([])
                size = 0
            slices[-1].append(text)
            size += cost
        return slices

    async def _queue(
        self,
        lane: _Lane,
        texts: list[str],
        options: EncodeOptions,
        disconnected: Callable[[], Awaitable[bool]] | None,
    ) -> EncodeResult:
        if disconnected is not None and await disconnected():  # also between the slices of a big request,
            raise ClientDisconnectedError(
                "the client disconnected; its queued work was dropped"
            )  # fast ones too
        future = asyncio.get_running_loop().create_future()
        self.queued_texts += len(texts)
        lane.queue.put_nowait(_Job(texts, options, future))
        if disconnected is None:
            return await future
        while True:
            done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await disconnected():
                future.cancel()  # the worker skips it, or drops the answer if it is running
                raise ClientDisconnectedError("the client disconnected; its queued work was dropped")

    async def _run_forever(self, lane: _Lane) -> None:
        while True:
            if not lane.pending:
                lane.pending.append(await lane.queue.get())
                if self.max_wait and lane.queue.empty():
                    await asyncio.sleep(self.max_wait)
            while not lane.queue.empty():
                lane.pending.append(lane.queue.get_nowait())
            lane.running, lane.pending = self._take_batch(lane.pending)
            await self._run_batch(lane, lane.running)
            lane.running = []

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

    async def _run_batch(self, lane: _Lane, batch: list[_Job]) -> None:
        if not batch:
            return
        texts = [t for job in batch for t in job.texts]
        self.queued_texts -= len(texts)
        call = partial(self.encoder.encode, texts, batch_size=self.max_batch, **batch[0].options.kwargs())
        started = time.perf_counter()
        try:
            result = await asyncio.get_running_loop().run_in_executor(lane.executor, call)
        except Exception as exc:  # noqa: BLE001 - the error belongs to the callers, not the worker
            if len(batch) == 1:
                _answer(batch[0].future, exc=exc)
                return
            # One request's bad input must not fail the others: run them one by one.
            log.debug("batch of %d requests failed (%s); retrying them separately", len(batch), exc)
            self.queued_texts += len(texts)
            for job in batch:
                await self._run_batch(lane, [job])
            return
        if self.on_batch is not None:
            self.on_batch(len(texts), len(batch), time.perf_counter() - started)
        if lane.name == "bulk":  # big calls set the allocator's high-water mark: give it back
            await asyncio.get_running_loop().run_in_executor(lane.executor, release_free_memory)
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
