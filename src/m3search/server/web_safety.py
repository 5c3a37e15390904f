"""Host and Origin checks, so web pages the user visits cannot use a local server (a pure ASGI middleware).

A keyless server on 127.0.0.1 is reachable by any page in the user's browser: a cross-site form post is a CORS
"simple" request that the browser sends without asking, and DNS rebinding points an attacker's name at
127.0.0.1 so that even reads look same-origin. Two checks close both:

- `Host` must name this server: loopback names by default, plus `ServerSettings.allowed_hosts` (`"*"`: any).
  A rebinding page sends its own name as `Host`, so it is refused with 400. The probes (`/healthz`,
  `/readyz`, `/metrics`) answer GETs under any name, as load balancers use addresses.
- On unsafe methods (anything but GET, HEAD, OPTIONS), an `Origin` header must be this server's own origin or
  one of `ServerSettings.allowed_origins` (403 otherwise). Requests without `Origin` (curl, the OpenAI client,
  every non-browser client) pass: browsers always send it on cross-site posts.

Starlette's `TrustedHostMiddleware` is not used: it cuts `Host` at the first ':' (so IPv6 `[::1]:8000` never
matches) and answers in plain text instead of the API's error shape.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

#: Names a loopback server is reached by; always allowed.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Read-only routes answered under any Host name (probes and scrapers use addresses).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def host_name(host: str) -> str:
    """The name part of a `Host` value, lowercase, without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class WebSafetyMiddleware:
    """Answer 400 to an unknown `Host` and 403 to a foreign `Origin` on an unsafe method."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: tuple[str, ...], allowed_origins: tuple[str, ...]
    ) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {host_name(h) for h in (*LOOPBACK_HOSTS, *allowed_hosts)}
        self.any_origin = "*" in allowed_origins
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host")
        method = scope["method"]
        probe = method in SAFE_METHODS and scope["path"] in PROBE_PATHS
        if host is not None and not self.any_host and not probe and host_name(host) not in self.hosts:
            await _refuse(
                send,
                400,
                f"Host {host[:100]!r} is not a name of this server; start it with --allowed-host "
                f"{host_name(host)[:100]} to allow it",
            )
            return
        origin = headers.get("origin")
        if origin is not None and method not in SAFE_METHODS and not self._origin_ok(origin, host):
            await _refuse(
                send,
                403,
                f"cross-origin {method} from {origin[:100]!r} refused; start the server with "
                "--allowed-origin to allow that site",
            )
            return
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)
        # Same origin: the page was served by this server under the name the request is addressed to.
        return parts.scheme in ("http", "https") and host is not None and parts.netloc == host.strip().lower()


async def _refuse(send: Send, status: int, message: str) -> None:
    kind = "bad_request" if status == 400 else "forbidden"
    body = json.dumps({"error": {"message": message, "type": kind}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
