"""Dialed number -> agent decision for an incoming INVITE."""

from __future__ import annotations

from dataclasses import dataclass

from sipbridge.numbers import dialed_number
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import AgentRecord

__all__ = ["RouteResult", "route"]


@dataclass(frozen=True)
class RouteResult:
    """What to do with a call.

    ``status`` is the SIP status to answer with when it is not 200 (404 or 480), and
    ``reason`` a stable machine-readable word: ``ok``, ``unknown_number``,
    ``agent_missing`` or ``agent_not_voice_enabled``. ``record``: the call is to be
    recorded (the number's setting, else its agent's).
    """

    number: str | None
    agent: AgentRecord | None
    status: int
    reason: str
    record: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200


async def route(
    db: Database,
    request_uri_user: str | None,
    to_user: str | None,
    default_region: str | None = None,
) -> RouteResult:
    """Decide which agent takes a call to ``request_uri_user`` (falling back to ``to_user``;
    national formats read in ``default_region``)."""
    number = dialed_number(request_uri_user, to_user, default_region)
    if number is None:
        return RouteResult(number=None, agent=None, status=404, reason="unknown_number")
    found = await service.lookup_number(db, number)
    if found is None:
        return RouteResult(number=number, agent=None, status=404, reason="unknown_number")
    if found.agent is None:
        return RouteResult(number=number, agent=None, status=480, reason="agent_missing")
    if not found.agent.voice_enabled:
        return RouteResult(
            number=number, agent=found.agent, status=480, reason="agent_not_voice_enabled"
        )
    return RouteResult(
        number=number, agent=found.agent, status=200, reason="ok", record=found.record
    )
