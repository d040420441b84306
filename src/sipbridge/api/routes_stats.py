"""``/api/stats``: call figures over a time range (aggregated in the database)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db
from sipbridge.api.errors import service_errors
from sipbridge.api.schemas import CallStatsOut, check_utc_datetime
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
UtcDateTime = Annotated[datetime, AfterValidator(check_utc_datetime)]


@router.get("/stats", response_model=CallStatsOut, tags=["stats"])
async def call_stats(
    db: Db,
    since: Annotated[
        UtcDateTime | None,
        Query(description="Calls received at or after (ISO 8601; no offset means UTC)"),
    ] = None,
    until: Annotated[UtcDateTime | None, Query(description="Calls received before")] = None,
) -> dict[str, Any]:
    """Totals, success rate, failure reasons, peak times, callers' origins, per-agent figures."""
    with service_errors("query"):
        stats = await service.call_stats(db, since, until)
    return stats.to_json()
