"""Optional bearer-token authentication, as a FastAPI dependency on every API router."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="One of the keys given to `m3search serve --api-key`.")


def require_api_key(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """Pass when the server has no keys or the request's bearer token is one of them; 401 otherwise."""
    keys: tuple[str, ...] = request.app.state.server.settings.api_keys
    if not keys:
        return
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = credentials.credentials.encode()
    if not any(hmac.compare_digest(token, key.encode()) for key in keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
