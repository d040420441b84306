"""``/api/numbers``: phone numbers (E.164) and the agent each one is routed to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db, get_default_region
from sipbridge.api.errors import BAD_BODY, error_responses, field_error, service_errors
from sipbridge.api.schemas import (
    NAME_PATTERN,
    NumberCreate,
    NumberOut,
    NumberUpdate,
    check_text,
)
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.service import NotFound

__all__ = ["router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
Region = Annotated[str | None, Depends(get_default_region)]
NumberPath = Annotated[
    str,
    Path(
        description="E.164 (URL-encode the '+' as %2B or leave it) or a national format "
        "when the server has a default region"
    ),
    AfterValidator(check_text),
]

_NOT_FOUND = error_responses(e404="The number is not there")


async def _require_agent(db: Database, name: str) -> None:
    """A number's agent is a reference in the body: unknown → 422 naming ``agent``."""
    try:
        await service.get_agent(db, name)
    except NotFound as exc:
        raise field_error("body", "agent", str(exc)) from exc


@router.get("/numbers", response_model=list[NumberOut], tags=["numbers"])
async def list_numbers(
    db: Db,
    agent: Annotated[
        str | None,
        Query(max_length=100, pattern=NAME_PATTERN, description="Only this agent's numbers"),
    ] = None,
) -> list[dict[str, Any]]:
    """All numbers, in E.164 order, with their agent (null when the agent was removed)."""
    return [number.to_json() for number in await service.list_numbers(db, agent=agent)]


@router.post(
    "/numbers",
    response_model=NumberOut,
    status_code=status.HTTP_201_CREATED,
    tags=["numbers"],
    responses={**error_responses(e409="The number exists"), **BAD_BODY},
)
async def create_number(body: NumberCreate, db: Db, region: Region) -> dict[str, Any]:
    """Route a number to an agent. Invalid number or unknown agent → 422 naming the field."""
    await _require_agent(db, body.agent)
    with service_errors("body"):
        try:
            number = await service.add_number(
                db, body.number, body.agent, default_region=region, record=body.record
            )
        except NotFound as exc:  # the agent went away meanwhile
            raise field_error("body", "agent", str(exc)) from exc
    return number.to_json()


@router.get("/numbers/{number}", response_model=NumberOut, tags=["numbers"], responses=_NOT_FOUND)
async def get_number(number: NumberPath, db: Db, region: Region) -> dict[str, Any]:
    """One number. An invalid number → 422 naming ``number``."""
    with service_errors("path"):
        record = await service.get_number(db, number, default_region=region)
    return record.to_json()


@router.patch(
    "/numbers/{number}",
    response_model=NumberOut,
    tags=["numbers"],
    responses={**_NOT_FOUND, **BAD_BODY},
)
async def update_number(
    number: NumberPath, body: NumberUpdate, db: Db, region: Region
) -> dict[str, Any]:
    """Give a number to another agent (unknown agent → 422 naming ``agent``), or to none
    with ``"agent": null`` (calls to it are then answered 480); ``record`` sets whether
    its calls are recorded (null: as its agent says). Fields left out stay as they are."""
    sent = body.model_fields_set
    if body.agent is not None:
        await _require_agent(db, body.agent)
    with service_errors("body", overrides={"number": "path"}):
        record = await service.update_number(
            db,
            number,
            body.agent if "agent" in sent else service.UNSET,
            default_region=region,
            record=body.record if "record" in sent else service.UNSET,
        )
    return record.to_json()


@router.delete(
    "/numbers/{number}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["numbers"],
    responses=_NOT_FOUND,
)
async def delete_number(number: NumberPath, db: Db, region: Region) -> None:
    """Stop routing a number."""
    with service_errors("path"):
        await service.remove_number(db, number, default_region=region)
