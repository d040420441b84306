"""``/api/instances``: the sipbridge instances sharing this database (docs/scaling.md).

Each running instance writes a heartbeat every few seconds; one that stops writing it for
``--instance-timeout`` seconds is declared ``lost`` by a peer, which closes its open calls
as ``interrupted`` (reason ``instance_lost``). Read-only: the rows belong to the
instances.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db
from sipbridge.api.schemas import InstanceOut
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]


@router.get("/instances", response_model=list[InstanceOut], tags=["instances"])
async def list_instances(db: Db) -> list[dict[str, Any]]:
    """Every instance the database has seen, by id: running, draining, stopped or lost."""
    return [i.to_json() for i in await service.list_instances(db)]
