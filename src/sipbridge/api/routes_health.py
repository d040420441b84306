"""``/healthz`` (the process is alive) and ``/readyz`` (it can take calls); no API key."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from sipbridge.api.deps import get_db
from sipbridge.store.db import Database

__all__ = ["Readiness", "database_readiness", "router"]

logger = logging.getLogger("sipbridge.api")

Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]

router = APIRouter(tags=["health"])


class HealthOut(BaseModel):
    status: str


def database_readiness(db: Database) -> Readiness:
    """The readiness check used when the app is created without one: the database answers."""

    async def check() -> tuple[bool, dict[str, Any]]:
        try:
            async with db.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            return False, {"database": f"unreachable: {type(exc).__name__}"}
        return True, {"database": "ok"}

    return check


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=dict[str, Any],
    responses={503: {"description": "Not ready; the body says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 when ready to take calls, 503 when not; the body holds the individual checks."""
    readiness: Readiness = request.app.state.readiness or database_readiness(get_db(request))
    try:
        ready, detail = await readiness()
    except Exception:
        logger.exception("readiness check failed")
        ready, detail = False, {"error": "readiness check failed"}
    return JSONResponse(detail, status_code=200 if ready else 503)
