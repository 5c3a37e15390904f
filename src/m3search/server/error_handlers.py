"""Every error leaves the server as `{"error": {"message", "type"}}` with a fitting status, never a traceback.

m3search's own exceptions map to statuses by class (bad input 422, bad image 400, image over the limits 413,
unknown collection 404, busy 503...);
FastAPI's validation errors become one readable message plus the per-field details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from m3search import errors

log = logging.getLogger(__name__)

#: Status per exception class; the first class an exception is an instance of wins.
STATUS_BY_ERROR: tuple[tuple[type[errors.M3SearchError], int], ...] = (
    (errors.CollectionNotFoundError, 404),
    (errors.CollectionExistsError, 409),
    (errors.CollectionLockedError, 409),
    (errors.CollectionClosedError, 409),
    (errors.CorruptCollectionError, 500),
    (errors.ImageTooLargeError, 413),
    (errors.ImageError, 400),
    (errors.InvalidInputError, 422),
    (errors.ServerBusyError, 503),
    (errors.ModelLoadError, 503),
    (errors.RuntimeUnavailableError, 503),
    (errors.CollectionError, 400),
)

TYPE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    422: "invalid_request_error",
    503: "service_unavailable",
}


def error_response(
    status: int,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error answer."""
    body: dict[str, Any] = {"message": message, "type": TYPE_BY_STATUS.get(status, "error")}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    """One sentence for the first problem (bad JSON named as such) and JSON-able details for all."""
    problems = exc.errors()
    details = [
        {"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in problems
    ]
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return f"request body is not valid JSON: {ctx.get('error', first.get('msg'))}", details
    if tuple(first.get("loc", ())) == ("body",):
        if first.get("type") == "missing":
            return "request body is missing: send a JSON object", details
        return "request body must be a JSON object, sent with 'Content-Type: application/json'", details
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{details[0]['field']}: {details[0]['message']}{more}", details


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = validation_message(exc)
        return error_response(422, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(errors.M3SearchError)
    async def _m3search(request: Request, exc: errors.M3SearchError) -> JSONResponse:
        status = next((code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls)), 400)
        return error_response(status, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the server log")
