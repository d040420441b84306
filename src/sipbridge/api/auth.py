"""API key authentication for every ``/api/...`` route.

Clients send ``Authorization: Bearer <key>``; the key is checked with
:func:`sipbridge.store.service.verify_api_key` (a SHA-256 lookup plus a constant-time
comparison; only hashes are stored). A missing or wrong key is a 401 with
``WWW-Authenticate: Bearer``.

The check runs in :class:`AuthenticatedRoute` *before* the request body is read, so an
unauthenticated client learns nothing about its input; the :func:`require_api_key`
dependency declares the scheme in the OpenAPI document and is a second line of defence.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sipbridge.api.deps import get_db
from sipbridge.api.schemas import ErrorMessage
from sipbridge.store import service
from sipbridge.store.records import ApiKeyRecord

__all__ = [
    "AuthenticatedRoute",
    "CurrentKey",
    "api_router",
    "authenticate",
    "bearer_scheme",
    "require_api_key",
]

# Longer than any key `sipbridge apikey create` makes; refused without hashing.
MAX_KEY_LENGTH = 512

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `sipbridge apikey create NAME`, as `Authorization: Bearer <key>`.",
)


def _unauthorized(message: str, *, invalid: bool) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": challenge})


async def authenticate(request: Request) -> ApiKeyRecord:
    """The API key the request carries; 401 when it has none or a wrong one."""
    cached = getattr(request.state, "api_key", None)
    if isinstance(cached, ApiKeyRecord):
        return cached
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing API key (Authorization: Bearer <key>)", invalid=False)
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("use Authorization: Bearer <key>", invalid=False)
    record = None
    if len(presented) <= MAX_KEY_LENGTH:
        record = await service.verify_api_key(get_db(request), presented)
    if record is None:
        raise _unauthorized("invalid API key", invalid=True)
    request.state.api_key = record
    return record


async def require_api_key(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
) -> ApiKeyRecord:
    """Dependency: the authenticated key (documents the Bearer scheme in OpenAPI)."""
    return await authenticate(request)


CurrentKey = Annotated[ApiKeyRecord, Depends(require_api_key)]


class AuthenticatedRoute(APIRoute):
    """An APIRoute that authenticates before FastAPI reads and validates the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated_handler(request: Request) -> Response:
            await authenticate(request)
            return await handler(request)

        return authenticated_handler


def api_router() -> APIRouter:
    """A router whose routes all need an API key and document the 401."""
    return APIRouter(
        prefix="/api",
        route_class=AuthenticatedRoute,
        dependencies=[Depends(require_api_key)],
        responses={401: {"model": ErrorMessage, "description": "Missing or invalid API key"}},
    )
