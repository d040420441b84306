"""``/api/trunks``: SIP providers (allowed source networks, outbound host, credentials)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db, get_default_region
from sipbridge.api.errors import BAD_BODY, error_responses, service_errors
from sipbridge.api.schemas import TrunkCreate, TrunkOut, TrunkUpdate, check_text
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
Region = Annotated[str | None, Depends(get_default_region)]
TrunkName = Annotated[str, Path(description="The trunk's name"), AfterValidator(check_text)]

_NOT_FOUND = error_responses(e404="No trunk with that name")


def _service_fields(body: TrunkCreate | TrunkUpdate) -> dict[str, Any]:
    """The fields the client sent, under the service's keyword names."""
    values: dict[str, Any] = {}
    for attribute in body.model_fields_set:
        key = "register" if attribute == "register_" else attribute
        values[key] = getattr(body, attribute)
    return values


@router.get("/trunks", response_model=list[TrunkOut], tags=["trunks"])
async def list_trunks(db: Db) -> list[dict[str, Any]]:
    """All trunks, by name. Passwords are never returned (``has_password``)."""
    return [trunk.to_json() for trunk in await service.list_trunks(db)]


@router.post(
    "/trunks",
    response_model=TrunkOut,
    status_code=status.HTTP_201_CREATED,
    tags=["trunks"],
    responses={**error_responses(e409="The name is taken"), **BAD_BODY},
)
async def create_trunk(body: TrunkCreate, db: Db, region: Region) -> dict[str, Any]:
    """Create a trunk."""
    with service_errors("body"):
        trunk = await service.add_trunk(
            db,
            body.name,
            allowed_cidrs=list(body.allowed_cidrs),
            host=body.host,
            username=body.username,
            password=body.password,
            register=body.register_,
            max_calls=body.max_calls,
            codecs=list(body.codecs),
            allowed_numbers=list(body.allowed_numbers),
            srtp=body.srtp,
            max_message_rate=body.max_message_rate,
            default_region=region,
        )
    return trunk.to_json()


@router.get("/trunks/{name}", response_model=TrunkOut, tags=["trunks"], responses=_NOT_FOUND)
async def get_trunk(name: TrunkName, db: Db) -> dict[str, Any]:
    """One trunk."""
    return (await service.get_trunk(db, name)).to_json()


@router.patch(
    "/trunks/{name}",
    response_model=TrunkOut,
    tags=["trunks"],
    responses={**_NOT_FOUND, **BAD_BODY},
)
async def update_trunk(
    name: TrunkName, body: TrunkUpdate, db: Db, region: Region
) -> dict[str, Any]:
    """Change some fields of a trunk; fields left out stay as they are."""
    with service_errors("body"):
        trunk = await service.update_trunk(db, name, default_region=region, **_service_fields(body))
    return trunk.to_json()


@router.delete(
    "/trunks/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["trunks"],
    responses=_NOT_FOUND,
)
async def delete_trunk(name: TrunkName, db: Db) -> None:
    """Delete a trunk."""
    await service.remove_trunk(db, name)
