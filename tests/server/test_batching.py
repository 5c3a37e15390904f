"""The micro-batcher merges concurrent compatible requests into one model call; each gets its slice."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from m3search.errors import InvalidInputError, ServerBusyError
from m3search.server.batching import EncodeOptions, MicroBatcher


class CountingEncoder:
    """Wraps an encoder: records each `encode` call's texts; can hold the first call to let requests queue."""

    def __init__(self, encoder, hold_first: float = 0.0) -> None:
        self.inner = encoder
        self.calls: list[list[str]] = []
        self.hold_first = hold_first
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, **kwargs):
        with self._lock:
            self.calls.append(list(texts))
            first = len(self.calls) == 1
        if first and self.hold_first:
            time.sleep(self.hold_first)
        if any(t == "BOOM" for t in texts):
            raise InvalidInputError("BOOM is not a text")
        return self.inner.encode(texts, **kwargs)


def run(coro):
    return asyncio.run(coro)


async def _with_batcher(encoder, body, **kwargs):
    batcher = MicroBatcher(encoder, **kwargs)
    await batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.close()


def test_concurrent_requests_share_model_calls(m3):
    counting = CountingEncoder(m3, hold_first=0.3)
    requests = [[f"request {i} text {j}" for j in range(1 + i % 3)] for i in range(20)]
    options = EncodeOptions(dense=True, sparse=True)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.encode(requests[0], options))
        await asyncio.sleep(0.05)  # the worker is busy with the first request while the others arrive
        rest = await asyncio.gather(*(batcher.encode(texts, options) for texts in requests[1:]))
        return [await first, *rest]

    results = run(_with_batcher(counting, body, max_batch=64))
    # The first request runs alone while the other 19 queue; they then share one call.
    assert [len(c) for c in counting.calls] == [len(requests[0]), sum(len(r) for r in requests[1:])]
    for texts, result in zip(requests, results):
        alone = m3.encode(texts, return_dense=True, return_sparse=True)
        np.testing.assert_allclose(result.dense, alone.dense, atol=1e-5)
        for mine, theirs in zip(result.sparse, alone.sparse):
            assert mine == pytest.approx(theirs, abs=1e-5)
        assert result.num_tokens == alone.num_tokens


def test_batches_respect_max_batch_and_options(m3):
    counting = CountingEncoder(m3, hold_first=0.3)
    dense, sparse = EncodeOptions(dense=True), EncodeOptions(dense=False, sparse=True)

    async def body(batcher):
        jobs = [batcher.encode([f"d{i}"], dense if i % 2 else sparse) for i in range(13)]
        return await asyncio.gather(*jobs)

    results = run(_with_batcher(counting, body, max_batch=4))
    assert all(len(call) <= 4 for call in counting.calls)
    for i, result in enumerate(results):
        assert (result.dense is not None) == bool(i % 2) and (result.sparse is not None) == (not i % 2)
    # Each call holds texts of one option kind only.
    for call in counting.calls:
        assert len({int(t[1:]) % 2 for t in call}) == 1


def test_one_bad_request_does_not_fail_the_batch(m3):
    counting = CountingEncoder(m3, hold_first=0.3)

    async def body(batcher):
        return await asyncio.gather(
            batcher.encode(["warm up"], EncodeOptions()),
            batcher.encode(["fine"], EncodeOptions()),
            batcher.encode(["BOOM"], EncodeOptions()),
            batcher.encode(["also fine"], EncodeOptions()),
            return_exceptions=True,
        )

    _warm, fine, boom, also = run(_with_batcher(counting, body))
    assert isinstance(boom, InvalidInputError)
    assert fine.dense.shape == (1, m3.dim) and also.dense.shape == (1, m3.dim)


def test_full_queue_is_refused(m3):
    counting = CountingEncoder(m3, hold_first=0.3)

    async def body(batcher):
        first = asyncio.ensure_future(batcher.encode(["a", "b"], EncodeOptions()))
        await asyncio.sleep(0.05)  # the worker is now busy with `first`
        second = asyncio.ensure_future(batcher.encode(["c", "d", "e"], EncodeOptions()))
        await asyncio.sleep(0)
        with pytest.raises(ServerBusyError, match="queue is full"):
            await batcher.encode(["f", "g"], EncodeOptions())
        return await asyncio.gather(first, second)

    first, second = run(_with_batcher(counting, body, max_queue=4))
    assert len(first) == 2 and len(second) == 3


def test_truncation_indices_are_per_request(m3):
    long_text = " ".join(["token"] * 50)
    counting = CountingEncoder(m3)
    options = EncodeOptions(max_length=8)

    async def body(batcher):
        return await asyncio.gather(
            batcher.encode(["short", long_text], options), batcher.encode([long_text, "short"], options)
        )

    a, b = run(_with_batcher(counting, body))
    assert [len(c) for c in counting.calls] == [4]  # both requests were queued before the worker woke
    assert a.truncated == [1] and b.truncated == [0]


def test_http_requests_are_batched_on_a_live_server(live_server):
    """20 concurrent HTTP clients: the server makes fewer model calls than it gets requests."""

    async def hammer():
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as client:
            before = _metric(await client.get("/metrics"), "m3search_encode_batches_total")
            responses = await asyncio.gather(
                *(client.post("/embed", json={"texts": [f"text number {i}"] * 4}) for i in range(20))
            )
            after = _metric(await client.get("/metrics"), "m3search_encode_batches_total")
            return responses, after - before

    responses, batches = asyncio.run(hammer())
    assert all(r.status_code == 200 for r in responses)
    assert [len(r.json()["data"]) for r in responses] == [4] * 20
    assert 1 <= batches < 20


def _metric(response: httpx.Response, name: str) -> float:
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_close_fails_waiting_requests(m3):
    counting = CountingEncoder(m3, hold_first=0.5)

    async def body():
        batcher = MicroBatcher(counting)
        await batcher.start()
        running = asyncio.ensure_future(batcher.encode(["first"], EncodeOptions()))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.encode(["second"], EncodeOptions(sparse=True)))
        await asyncio.sleep(0.01)
        await batcher.close()
        return await asyncio.gather(running, waiting, return_exceptions=True)

    running, waiting = run(body())
    for outcome in (running, waiting):
        assert isinstance(outcome, ServerBusyError) and "shutting down" in str(outcome)
