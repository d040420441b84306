"""``/api/bans``: source addresses and networks whose SIP traffic is dropped.

The server bans floods, password guessers, number scanners and scanner User-Agents by
itself (docs/security.md); these routes list the bans and let an operator add and lift
them. A change reaches the running server at once (and other instances sharing the
database within seconds).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db
from sipbridge.api.errors import BAD_BODY, error_responses, service_errors
from sipbridge.api.schemas import BanCreate, BanOut, check_text
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
BanPath = Annotated[
    str,
    Path(
        description="The banned address or network, e.g. 203.0.113.7 or 198.51.100.0/24",
        max_length=64,
        pattern=r"^[0-9A-Fa-f:.\[\]]+(/[0-9]{1,3})?$",
    ),
    AfterValidator(check_text),
]


async def _changed(request: Request) -> None:
    """Tell the running server (if any) to read the bans again now."""
    notify = getattr(request.app.state, "bans_changed", None)
    if notify is not None:
        await notify()


@router.get("/bans", response_model=list[BanOut], tags=["bans"])
async def list_bans(
    db: Db,
    include_expired: Annotated[
        bool, Query(alias="all", description="Also bans that have ended")
    ] = False,
) -> list[dict[str, Any]]:
    """The bans in force (all of them with ``all=true``), newest first."""
    return [b.to_json() for b in await service.list_bans(db, include_expired=include_expired)]


@router.post(
    "/bans",
    response_model=BanOut,
    status_code=status.HTTP_201_CREATED,
    tags=["bans"],
    responses=BAD_BODY,
)
async def create_ban(body: BanCreate, db: Db, request: Request) -> dict[str, Any]:
    """Ban an address or a network (replacing any ban on exactly the same one)."""
    with service_errors("body"):
        ban = await service.add_ban(db, body.address, duration=body.duration, note=body.note)
    await _changed(request)
    return ban.to_json()


@router.delete(
    "/bans/{address:path}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["bans"],
    responses=error_responses(e404="No ban on that address"),
)
async def delete_ban(address: BanPath, db: Db, request: Request) -> None:
    """Lift a ban (name it as it was banned: an address or a network)."""
    with service_errors("path", overrides={"address": "path"}):
        await service.remove_ban(db, address)
    await _changed(request)
