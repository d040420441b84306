"""The calls in progress on this instance, as the dashboard's Live calls page shows them.

:class:`LiveCalls` reads the server's call table (``SipBridgeServer.calls``) without
changing it and ends a call on an operator's request (:meth:`Call.hang_up`). It is handed
to the HTTP app beside the database, the way ``registration`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sipbridge.store.records import utcnow

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = ["LiveCall", "LiveCalls"]


@dataclass(frozen=True)
class LiveCall:
    """One call in progress: ``state`` is ``ringing`` until answered, then ``active``."""

    id: str
    from_number: str | None
    to_number: str | None
    agent: str | None
    trunk: str | None
    codec: str | None
    state: str
    received_at: datetime
    answered_at: datetime | None
    duration_s: float  # so far: since the answer (0 while ringing)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "agent": self.agent,
            "trunk": self.trunk,
            "codec": self.codec,
            "state": self.state,
            "received_at": self.received_at.isoformat(),
            "answered_at": None if self.answered_at is None else self.answered_at.isoformat(),
            "duration_s": round(self.duration_s, 1),
        }


class LiveCalls:
    """The live view of one server's calls."""

    def __init__(self, server: SipBridgeServer) -> None:
        self._server = server

    @property
    def owner(self) -> str:
        """This instance's id in the store (the ``owner`` of the calls it handles)."""
        return str(self._server.settings.owner_id)

    @property
    def closing(self) -> bool:
        """True once the server stops: the event streams end so uvicorn can close."""
        return bool(self._server._stopping)

    def snapshot(self, now: datetime | None = None) -> list[LiveCall]:
        """Every call in progress, oldest first."""
        now = now or utcnow()
        calls = []
        for call in list(self._server.calls.values()):
            record = call.record
            answered = record.answered_at
            calls.append(
                LiveCall(
                    id=record.id,
                    from_number=record.from_number,
                    to_number=record.to_number,
                    agent=record.agent,
                    trunk=record.trunk,
                    codec=record.codec,
                    state="ringing" if answered is None else "active",
                    received_at=record.received_at,
                    answered_at=answered,
                    duration_s=0.0 if answered is None else (now - answered).total_seconds(),
                )
            )
        calls.sort(key=lambda live: (live.received_at, live.id))
        return calls

    def hang_up(self, call_id: str) -> bool | None:
        """End an answered call with our BYE. None: no such call here; False: it is not
        answered yet or already ending."""
        call = self._server.calls.get(call_id)
        if call is None:
            return None
        return call.hang_up()
