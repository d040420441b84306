"""Plain records exchanged between the store and the rest of the program.

No SQLAlchemy here: the runtime builds :class:`CallRecord` objects without touching the ORM.
All datetimes are timezone-aware UTC; naive datetimes are taken to be UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["AgentRecord", "CallRecord", "CallStatus", "NumberRecord", "as_utc", "utcnow"]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to already be UTC."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


class CallStatus(StrEnum):
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class AgentRecord:
    name: str
    url: str
    voice_enabled: bool
    created_at: datetime

    def __post_init__(self) -> None:
        self.created_at = as_utc(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "voice_enabled": self.voice_enabled,
            "created_at": _iso(self.created_at),
        }


@dataclass
class NumberRecord:
    number: str
    agent: str | None  # None once the agent was removed

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "agent": self.agent}


@dataclass
class CallRecord:
    id: str
    sip_call_id: str
    from_number: str | None
    to_number: str | None
    agent: str | None
    received_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    status: CallStatus = CallStatus.FAILED
    reason: str | None = None
    sip_code: int | None = None
    codec: str | None = None
    hangup_by: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.received_at = as_utc(self.received_at)
        self.answered_at = _opt_utc(self.answered_at)
        self.ended_at = _opt_utc(self.ended_at)
        self.status = CallStatus(self.status)

    @property
    def duration_s(self) -> float | None:
        """Seconds between answer and end; None when the call was never answered/ended."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.answered_at).total_seconds())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sip_call_id": self.sip_call_id,
            "from_number": self.from_number,
            "to_number": self.to_number,
            "agent": self.agent,
            "received_at": _iso(self.received_at),
            "answered_at": _iso(self.answered_at),
            "ended_at": _iso(self.ended_at),
            "duration_s": self.duration_s,
            "status": self.status.value,
            "reason": self.reason,
            "sip_code": self.sip_code,
            "codec": self.codec,
            "hangup_by": self.hangup_by,
            "source": self.source,
        }
