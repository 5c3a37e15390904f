"""Request body size limit, enforced before a handler reads the body (a pure ASGI middleware).

A declared `Content-Length` over the limit is refused at once; a chunked body is counted as it streams and
refused with the same 413 (raised as an `HTTPException`, which FastAPI's body reader lets through).
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_message(max_bytes: int) -> str:
    """The 413 text."""
    return (
        f"request body is larger than the server's limit of {max_bytes} bytes; "
        "split the request, or start the server with a larger --max-body-mb"
    )


class BodyLimitMiddleware:
    """Answer 413 to requests whose body exceeds `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = json.dumps(
                {"error": {"message": too_large_message(self.max_bytes), "type": "request_too_large"}}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)
