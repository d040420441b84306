"""``/api/agents``: the AI agents (WebSocket endpoints) calls are bridged to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Response, status
from pydantic import AfterValidator

from sipbridge.api.auth import api_router
from sipbridge.api.deps import get_db
from sipbridge.api.errors import BAD_BODY, error_responses, service_errors
from sipbridge.api.schemas import AgentCreate, AgentOut, AgentUpdate, check_text
from sipbridge.store import service
from sipbridge.store.db import Database

__all__ = ["AgentName", "router"]

router = api_router()

Db = Annotated[Database, Depends(get_db)]
AgentName = Annotated[str, Path(description="The agent's name"), AfterValidator(check_text)]

_NOT_FOUND = error_responses(e404="No agent with that name")


@router.get("/agents", response_model=list[AgentOut], tags=["agents"])
async def list_agents(db: Db) -> list[dict[str, Any]]:
    """All agents, by name."""
    return [agent.to_json() for agent in await service.list_agents(db)]


@router.post(
    "/agents",
    response_model=AgentOut,
    status_code=status.HTTP_201_CREATED,
    tags=["agents"],
    responses={**error_responses(e409="The name is taken"), **BAD_BODY},
)
async def create_agent(body: AgentCreate, db: Db) -> dict[str, Any]:
    """Create an agent. The token is write-only: answers say ``has_token``.

    ``ca_bundle`` names a PEM file on the server; a missing or unreadable file, or one
    without a certificate, is a 422 naming ``ca_bundle``.
    """
    with service_errors("body"):
        agent = await service.add_agent(
            db,
            body.name,
            list(body.urls),
            body.voice_enabled,
            protocol=body.protocol,
            token=body.token,
            sample_rate=body.sample_rate,
            ca_bundle=body.ca_bundle,
            transfer_allow=body.transfer_allow,
            record=body.record,
        )
    return agent.to_json()


@router.get("/agents/{name}", response_model=AgentOut, tags=["agents"], responses=_NOT_FOUND)
async def get_agent(name: AgentName, db: Db) -> dict[str, Any]:
    """One agent."""
    return (await service.get_agent(db, name)).to_json()


@router.patch(
    "/agents/{name}",
    response_model=AgentOut,
    tags=["agents"],
    responses={**_NOT_FOUND, **BAD_BODY},
)
async def update_agent(name: AgentName, body: AgentUpdate, db: Db) -> dict[str, Any]:
    """Change some fields of an agent; fields left out stay as they are."""
    changes: dict[str, Any] = {field: getattr(body, field) for field in body.model_fields_set}
    with service_errors("body"):
        agent = await service.update_agent(db, name, **changes)
    return agent.to_json()


@router.delete(
    "/agents/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["agents"],
    responses=_NOT_FOUND,
)
async def delete_agent(name: AgentName, db: Db) -> None:
    """Delete an agent. Its numbers stay, without an agent (calls to them get 480)."""
    await service.remove_agent(db, name)
