"""SQLAlchemy 2 ORM models. Schema changes go through an Alembic migration."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Agent",
    "ApiKey",
    "Base",
    "Call",
    "CallEventRow",
    "Instance",
    "PhoneNumber",
    "SipTrace",
    "Trunk",
    "UTCDateTime",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware UTC, SQLite included.

    Values are converted to UTC before storage; SQLite (which has no time zone support)
    stores the naive UTC wall time. Naive input values are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    urls: Mapped[list[str]] = mapped_column(JSON, nullable=False, server_default=text("'[]'"))
    voice_enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    protocol: Mapped[str] = mapped_column(
        String(16), nullable=False, default="native", server_default="native"
    )
    token: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    sample_rate: Mapped[int] = mapped_column(
        Integer, nullable=False, default=8000, server_default=text("8000")
    )
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Absolute path of a PEM CA bundle for the agent's wss:// certificate (migration 0003).
    ca_bundle: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # Where the agent may transfer callers (sipbridge.agent.transfers; migration 0008).
    transfer_allow: Mapped[list[str]] = mapped_column(
        JSON, nullable=False, default=list, server_default=text("'[]'")
    )
    # Its calls are recorded, unless their number says otherwise (migration 0014).
    record: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class PhoneNumber(Base):
    __tablename__ = "phone_numbers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), unique=True, index=True, nullable=False)
    # SET NULL: a number whose agent was removed must still be found (it answers 480).
    agent_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("agents.id", ondelete="SET NULL"), index=True, nullable=True
    )
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Record its calls: true/false win over the agent's ``record``; null: the agent's
    # (migration 0014).
    record: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class Trunk(Base):
    __tablename__ = "trunks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    allowed_cidrs: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password: Mapped[str | None] = mapped_column(String(255), nullable=True)
    register: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    max_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)
    codecs: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    allowed_numbers: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    srtp: Mapped[str] = mapped_column(String(16), nullable=False, default="optional")
    # Messages per second from the trunk's networks; null: the default; 0: no limit.
    max_message_rate: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Ban(Base):
    """A source address or network whose SIP traffic is dropped (see sip/guard.py)."""

    __tablename__ = "bans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    address: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    # sha256 hex of the secret; the secret itself is never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Call(Base):
    __tablename__ = "calls"
    # Keyset pagination walks (filter column, received_at, id) backwards: one index per filter.
    __table_args__ = (
        Index("ix_calls_received_at_id", "received_at", "id"),
        Index("ix_calls_from_number_received_at", "from_number", "received_at", "id"),
        Index("ix_calls_to_number_received_at", "to_number", "received_at", "id"),
        Index("ix_calls_agent_name_received_at", "agent_name", "received_at", "id"),
        Index("ix_calls_status_received_at", "status", "received_at", "id"),
        Index("ix_calls_reason_received_at", "reason", "received_at", "id"),
        # A starting instance looks for its own calls still open (migration 0008).
        Index("ix_calls_owner_status", "owner", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True, nullable=False)
    from_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    to_number: Mapped[str | None] = mapped_column(String(255), nullable=True)
    agent_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sip_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    hangup_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    trunk: Mapped[str | None] = mapped_column(String(100), nullable=True)  # migration 0004
    # "inbound" or "outbound" (migration 0013).
    direction: Mapped[str] = mapped_column(String(8), nullable=False, default="inbound")
    srtp: Mapped[str | None] = mapped_column(String(40), nullable=True)  # migration 0005
    caller_country: Mapped[str | None] = mapped_column(String(2), nullable=True)
    caller_region: Mapped[str | None] = mapped_column(String(255), nullable=True)
    first_audio_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Computed at write time so statistics group without per-dialect date functions:
    received_day: Mapped[date | None] = mapped_column(Date, nullable=True)  # UTC date
    received_hour: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)  # UTC 0-23
    first_audio_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # answer->audio
    # Media quality at hang-up (migration 0003).
    packets_in: Mapped[int | None] = mapped_column(Integer, nullable=True)
    packets_out: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes_in: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes_out: Mapped[int | None] = mapped_column(Integer, nullable=True)
    packets_lost: Mapped[int | None] = mapped_column(Integer, nullable=True)
    loss_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    jitter_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    rtt_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    concealed_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    mos: Mapped[float | None] = mapped_column(Float, nullable=True)
    mos_method: Mapped[str | None] = mapped_column(String(16), nullable=True)  # 0007
    # The instance that handles the call and its last write (migration 0008).
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The agent's response time per turn (migration 0006).
    turns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_max_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The call's recording (records.RecordingInfo as JSON), SQL NULL when none
    # (migration 0014).
    recording: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class CallEventRow(Base):
    """A :class:`~sipbridge.store.records.CallEvent`; no foreign key, because events are
    written while the call runs and its record only at the end."""

    __tablename__ = "call_events"
    __table_args__ = (Index("ix_call_events_call_id_at", "call_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(String(36), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class Instance(Base):
    """A sipbridge process sharing the database (migration 0011): its heartbeat, and for
    one that died, the peer that closed its open calls. Times are the database's clock."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # --instance-id
    sip_address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lost_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lost_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Registration(Base):
    """A registering trunk's last known registration on one instance (migration 0015),
    written by that instance whenever it changes; times are the instance's clock."""

    __tablename__ = "registrations"

    trunk: Mapped[str] = mapped_column(String(100), primary_key=True)
    instance: Mapped[str] = mapped_column(String(255), primary_key=True)  # --instance-id
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    registered_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    next_attempt: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class SipTrace(Base):
    """A SIP trace switched on (migration 0012): every SIP message of the calls to or from
    one number, or of one trunk's calls, written to the log until ``expires_at``
    (runtime/trace.py). Every instance sharing the database reads them."""

    __tablename__ = "sip_traces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "number" or "trunk"
    value: Mapped[str] = mapped_column(String(100), nullable=False)  # E.164 or trunk name
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (UniqueConstraint("kind", "value"),)
