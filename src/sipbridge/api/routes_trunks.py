"""``/api/trunks``: SIP providers (allowed source networks, outbound host, credentials)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db, get_default_region
from sipbridge.api.errors import BAD_BODY, error_responses, service_errors
from sipbridge.api.schemas import TrunkCreate, TrunkOut, TrunkUpdate, check_text
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import RegistrationRecord, TrunkRecord

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
Region = Annotated[str | None, Depends(get_default_region)]
TrunkName = Annotated[str, Path(description="The trunk's name"), AfterValidator(check_text)]

_NOT_FOUND = error_responses(e404="No trunk with that name")


def _out(request: Request, trunk: TrunkRecord, stored: list[RegistrationRecord]) -> dict[str, Any]:
    """The trunk's JSON with its ``registration``: the answering server's live REGISTER
    client state (null when the trunk does not register, or no server runs this API),
    and ``registrations``: every instance's last state written to the store."""
    data = trunk.to_json()
    registration = request.app.state.registration
    data["registration"] = registration(trunk.name) if registration is not None else None
    data["registrations"] = [r.to_json() for r in stored if r.trunk == trunk.name]
    return data


async def _stored(db: Database, trunk: TrunkRecord) -> list[RegistrationRecord]:
    return await service.list_registrations(db) if trunk.register else []


def _service_fields(body: TrunkCreate | TrunkUpdate) -> dict[str, Any]:
    """The fields the client sent, under the service's keyword names."""
    values: dict[str, Any] = {}
    for attribute in body.model_fields_set:
        key = "register" if attribute == "register_" else attribute
        values[key] = getattr(body, attribute)
    return values


@router.get("/trunks", response_model=list[TrunkOut], tags=["trunks"])
async def list_trunks(request: Request, db: Db) -> list[dict[str, Any]]:
    """All trunks, by name. Passwords are never returned (``has_password``)."""
    trunks = await service.list_trunks(db)
    stored = await service.list_registrations(db) if trunks else []
    return [_out(request, trunk, stored) for trunk in trunks]


@router.post(
    "/trunks",
    response_model=TrunkOut,
    status_code=status.HTTP_201_CREATED,
    tags=["trunks"],
    responses={**error_responses(e409="The name is taken"), **BAD_BODY},
)
async def create_trunk(
    request: Request, body: TrunkCreate, db: Db, region: Region
) -> dict[str, Any]:
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
    return _out(request, trunk, [])  # no server registered it yet


@router.get("/trunks/{name}", response_model=TrunkOut, tags=["trunks"], responses=_NOT_FOUND)
async def get_trunk(request: Request, name: TrunkName, db: Db) -> dict[str, Any]:
    """One trunk."""
    trunk = await service.get_trunk(db, name)
    return _out(request, trunk, await _stored(db, trunk))


@router.patch(
    "/trunks/{name}",
    response_model=TrunkOut,
    tags=["trunks"],
    responses={**_NOT_FOUND, **BAD_BODY},
)
async def update_trunk(
    request: Request, name: TrunkName, body: TrunkUpdate, db: Db, region: Region
) -> dict[str, Any]:
    """Change some fields of a trunk; fields left out stay as they are."""
    with service_errors("body"):
        trunk = await service.update_trunk(db, name, default_region=region, **_service_fields(body))
    return _out(request, trunk, await _stored(db, trunk))


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
