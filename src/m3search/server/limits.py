"""Request body size and time limits, enforced before a handler reads the body (a pure ASGI middleware).

A declared `Content-Length` over the limit is refused at once; a chunked body is counted as it streams and
refused with the same 413 (raised as an `HTTPException`, which FastAPI's body reader lets through). A body
that has not fully arrived `timeout_s` after the handler started reading it is answered 408 and the connection
closed, so a client declaring more bytes than it sends (or sending them a byte at a time) cannot hold a
connection and a handler forever; uvicorn itself has no such timeout.
"""

from __future__ import annotations

import asyncio
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

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

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
        complete = False
        deadline: float | None = None

        async def limited_receive() -> Message:
            nonlocal seen, complete, deadline
            if complete:  # after the body: only the disconnect message is left to wait for
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline if deadline is not None else loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s (the server's "
                    "--body-timeout); send the whole body, or a correct Content-Length",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, too_large_message(self.max_bytes))
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        await self.app(scope, limited_receive, send)
