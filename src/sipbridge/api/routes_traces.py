"""``/api/traces``: per-call SIP traces, switched on for a number or a trunk.

While a trace is in force, every SIP message of the calls to or from its number, or of
its trunk's calls, is written to the server's log (runtime/trace.py, docs/operations.md
"SIP trace"), secrets masked. A change reaches the running server at once (and other
instances sharing the database within seconds); a trace ends by itself at its expiry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db, get_default_region
from sipbridge.api.errors import BAD_BODY, error_responses, service_errors
from sipbridge.api.schemas import TraceCreate, TraceOut, check_text
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
Region = Annotated[str | None, Depends(get_default_region)]
TraceValue = Annotated[
    str,
    Path(
        description="The traced number (E.164; URL-encode the '+' as %2B or leave it) or "
        "trunk name",
        max_length=100,
    ),
    AfterValidator(check_text),
]


async def _changed(request: Request) -> None:
    """Tell the running server (if any) to read the traces again now."""
    notify = getattr(request.app.state, "traces_changed", None)
    if notify is not None:
        await notify()


@router.get("/traces", response_model=list[TraceOut], tags=["traces"])
async def list_traces(
    db: Db,
    include_expired: Annotated[
        bool, Query(alias="all", description="Also traces that have ended")
    ] = False,
) -> list[dict[str, Any]]:
    """The traces in force (all of them with ``all=true``), newest first."""
    return [t.to_json() for t in await service.list_traces(db, include_expired=include_expired)]


@router.post(
    "/traces",
    response_model=TraceOut,
    status_code=status.HTTP_201_CREATED,
    tags=["traces"],
    responses=BAD_BODY,
)
async def create_trace(
    body: TraceCreate, db: Db, region: Region, request: Request
) -> dict[str, Any]:
    """Trace the calls to or from a number, or a trunk's calls, for ``duration`` seconds
    (tracing it again sets the new end)."""
    with service_errors("body"):
        trace = await service.add_trace(
            db,
            number=body.number,
            trunk=body.trunk,
            duration=body.duration,
            default_region=region,
        )
    await _changed(request)
    return trace.to_json()


@router.delete(
    "/traces/{kind}/{value}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["traces"],
    responses=error_responses(e404="No trace of that number or trunk"),
)
async def delete_trace(
    kind: Literal["number", "trunk"], value: TraceValue, db: Db, region: Region, request: Request
) -> None:
    """Switch a trace off: ``/traces/number/+12025550101`` or ``/traces/trunk/carrier``."""
    with service_errors("path", overrides={"number": "path", "name": "path"}):
        if kind == "number":
            await service.remove_trace(db, number=value, default_region=region)
        else:
            await service.remove_trace(db, trunk=value)
    await _changed(request)
