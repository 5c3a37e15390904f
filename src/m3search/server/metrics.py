"""Prometheus metrics of one server: HTTP requests by route and status, and what the micro-batcher does.

Each app gets its own `CollectorRegistry`, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Methods labelled as themselves; any other (clients may send made-up ones) is counted as "other", so label
#: values stay bounded: method x route template x status.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The counters, histograms and gauges `/metrics` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "m3search_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "m3search_http_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batches = Counter(
            "m3search_encode_batches", "Model calls made by the micro-batcher.", registry=r
        )
        self.texts = Counter("m3search_encode_texts", "Texts encoded by the micro-batcher.", registry=r)
        self.batch_texts = Histogram(
            "m3search_encode_batch_texts", "Texts per model call.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "m3search_encode_batch_requests",
            "Requests merged into one model call.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.encode_seconds = Histogram(
            "m3search_encode_seconds", "Time of one model call.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_texts = Gauge("m3search_encode_queue_texts", "Texts waiting for the model.", registry=r)
        self.model_ready = Gauge("m3search_model_ready", "1 once the model is loaded.", registry=r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request (an unknown method as "other")."""
        method = method if method in KNOWN_METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_batch(self, texts: int, requests: int, seconds: float) -> None:
        """Count one model call of the micro-batcher (its `on_batch` hook)."""
        self.batches.inc()
        self.texts.inc(texts)
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)
        self.encode_seconds.observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request, labelled by route template (not path) and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = "/ui" if scope["path"].startswith("/ui") else "unmatched"
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - started)
