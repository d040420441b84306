"""Plain records exchanged between the store and the rest of the program.

No SQLAlchemy here: the runtime builds :class:`CallRecord` objects without touching the ORM.
All datetimes are timezone-aware UTC; naive datetimes are taken to be UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "OPEN_STATUSES",
    "AgentRecord",
    "ApiKeyRecord",
    "CallDetail",
    "CallEvent",
    "CallRecord",
    "CallStatus",
    "InstanceRecord",
    "InstanceState",
    "NumberRecord",
    "RecordingInfo",
    "RegistrationRecord",
    "TraceRecord",
    "TrunkRecord",
    "as_utc",
    "utcnow",
]


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


QUALITY_FIELDS: tuple[str, ...] = (
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "packets_lost",
    "loss_percent",
    "jitter_ms",
    "rtt_ms",
    "concealed_ms",
    "mos",
    "mos_method",
    "turns",
    "response_p50_ms",
    "response_max_ms",
)


class CallStatus(StrEnum):
    """A call's state in the store. ``ringing`` and ``active`` are the open states of a
    call in progress (written at admission and at the answer); the others are final.
    ``interrupted``: the instance that owned the open call ended without closing it (a
    crash, ``kill -9``); its next start closes the row. ``busy``, ``no_answer`` and
    ``rejected`` end outbound calls the callee's side refused (486/600; our ring timeout,
    408/480/487; any other final status, in ``sip_code``)."""

    RINGING = "ringing"
    ACTIVE = "active"
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        """True for a call still in progress (ringing or active)."""
        return self in OPEN_STATUSES


OPEN_STATUSES: frozenset[CallStatus] = frozenset({CallStatus.RINGING, CallStatus.ACTIVE})


@dataclass
class AgentRecord:
    """An AI agent: one or more WebSocket URLs (tried in order) and how to talk to it.

    ``token`` is a secret: it is never part of :meth:`to_json` (``has_token`` is).
    ``ca_bundle`` is the absolute path of a PEM file of CA certificates that verifies the
    agent's ``wss://`` certificate instead of the system trust store (None: the system's).
    ``transfer_allow`` are the patterns of the targets it may transfer callers to (empty:
    the default policy; see :mod:`sipbridge.agent.transfers`).
    """

    name: str
    urls: list[str]
    voice_enabled: bool
    created_at: datetime
    protocol: str = "native"  # "native" | "twilio"
    token: str | None = None
    sample_rate: int = 8000  # 8000 | 16000
    updated_at: datetime | None = None
    ca_bundle: str | None = None
    transfer_allow: list[str] = field(default_factory=list)
    record: bool = False  # its calls are recorded (a number's own setting wins)

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):  # AgentRecord("bot", "wss://...", ...) still works
            self.urls = [self.urls]
        else:
            self.urls = list(self.urls)
        self.created_at = as_utc(self.created_at)
        self.updated_at = _opt_utc(self.updated_at)

    @property
    def url(self) -> str:
        """The first (preferred) URL."""
        return self.urls[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "urls": list(self.urls),
            "protocol": self.protocol,
            "sample_rate": self.sample_rate,
            "voice_enabled": self.voice_enabled,
            "has_token": self.token is not None,
            "ca_bundle": self.ca_bundle,
            "transfer_allow": list(self.transfer_allow),
            "record": self.record,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass
class NumberRecord:
    number: str
    agent: str | None  # None once the agent was removed
    created_at: datetime | None = None  # None for numbers added before it was recorded
    # Whether its calls are recorded: True/False win over the agent's setting; None: the
    # agent's.
    record: bool | None = None

    def __post_init__(self) -> None:
        self.created_at = _opt_utc(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "agent": self.agent,
            "record": self.record,
            "created_at": _iso(self.created_at),
        }


@dataclass
class TrunkRecord:
    """A SIP trunk (provider). ``password`` is never part of :meth:`to_json`."""

    name: str
    allowed_cidrs: list[str]
    host: str | None
    username: str | None
    password: str | None
    register: bool
    max_calls: int | None
    codecs: list[str]
    created_at: datetime
    # Numbers (E.164) this trunk may call; empty: any number with an agent.
    allowed_numbers: list[str] = field(default_factory=list)
    srtp: str = "optional"  # "off", "optional" or "required" (RFC 4568 SDES)
    # Messages per second from its networks (sip/guard.py); None: the default (1000);
    # 0: no limit.
    max_message_rate: int | None = None

    def __post_init__(self) -> None:
        self.allowed_cidrs = list(self.allowed_cidrs)
        self.codecs = list(self.codecs)
        self.allowed_numbers = list(self.allowed_numbers)
        self.created_at = as_utc(self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "allowed_cidrs": list(self.allowed_cidrs),
            "host": self.host,
            "username": self.username,
            "has_password": self.password is not None,
            "register": self.register,
            "max_calls": self.max_calls,
            "codecs": list(self.codecs),
            "allowed_numbers": list(self.allowed_numbers),
            "srtp": self.srtp,
            "max_message_rate": self.max_message_rate,
            "created_at": _iso(self.created_at),
        }


@dataclass
class BanRecord:
    """A banned source address or network; ``expires_at`` None: until lifted."""

    address: str
    reason: str
    created_at: datetime
    expires_at: datetime | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        self.created_at = as_utc(self.created_at)
        self.expires_at = _opt_utc(self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "reason": self.reason,
            "note": self.note,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
        }


@dataclass
class ApiKeyRecord:
    """An API key as stored: its name and display prefix, never the secret."""

    name: str
    prefix: str  # the key's first 8 characters
    created_at: datetime
    last_used_at: datetime | None = None

    def __post_init__(self) -> None:
        self.created_at = as_utc(self.created_at)
        self.last_used_at = _opt_utc(self.last_used_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prefix": self.prefix,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
        }


@dataclass
class RecordingInfo:
    """A call's recording (runtime/recordings.py): a file on the instance that handled
    the call. ``duration_s`` is the audio's length; ``dropped_ms`` the audio left out
    because the writer fell behind (silence in the file)."""

    path: str
    format: str
    sample_rate: int
    channels: int
    bytes: int
    duration_s: float
    dropped_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "bytes": self.bytes,
            "duration_s": self.duration_s,
            "dropped_ms": self.dropped_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> RecordingInfo | None:
        """From a stored JSON object (None for anything else: an unreadable value is no
        recording)."""
        if isinstance(data, RecordingInfo):
            return data
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                path=str(data["path"]),
                format=str(data.get("format", "wav")),
                sample_rate=int(data["sample_rate"]),
                channels=int(data.get("channels", 2)),
                bytes=int(data["bytes"]),
                duration_s=float(data["duration_s"]),
                dropped_ms=int(data.get("dropped_ms", 0)),
            )
        except (KeyError, TypeError, ValueError):
            return None


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
    trunk: str | None = None  # the trunk the call was admitted from (None: loopback, no trunks)
    # "inbound" (a caller called us) or "outbound" (POST /api/calls: we called the callee;
    # from_number is ours, to_number theirs, trunk the one dialled through).
    direction: str = "inbound"
    srtp: str | None = None  # the SRTP suite of the call's media (None: plain RTP)
    caller_country: str | None = None  # ISO 3166 alpha-2; filled by save_call when None
    caller_region: str | None = None  # geocoder description, e.g. "Washington D.C."
    first_audio_at: datetime | None = None  # the agent's first audio reached the caller
    # Media quality at hang-up (RFC 3550 receiver figures, ITU-T G.107 E-model MOS);
    # None for calls that never had media.
    packets_in: int | None = None
    packets_out: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    packets_lost: int | None = None
    loss_percent: float | None = None
    jitter_ms: float | None = None
    rtt_ms: float | None = None
    concealed_ms: int | None = None
    mos: float | None = None
    mos_method: str | None = None  # "g107" (cited constants) or "g107-assumed"
    # The agent's response time per turn (media/turns.py): how many answers, their
    # median and maximum in ms (None without any turn).
    turns: int | None = None
    response_p50_ms: float | None = None
    response_max_ms: float | None = None
    # The instance that wrote the row (``--instance-id``) and when it last did: a
    # restarted instance closes its own rows still open as ``interrupted``.
    owner: str | None = None
    updated_at: datetime | None = None
    # The call's recording when it was recorded (None: not recorded, or deleted by the
    # retention sweep).
    recording: RecordingInfo | None = None

    def __post_init__(self) -> None:
        if self.recording is not None and not isinstance(self.recording, RecordingInfo):
            self.recording = RecordingInfo.from_json(self.recording)  # from the spool
        self.received_at = as_utc(self.received_at)
        self.answered_at = _opt_utc(self.answered_at)
        self.ended_at = _opt_utc(self.ended_at)
        self.updated_at = _opt_utc(self.updated_at)
        self.first_audio_at = _opt_utc(self.first_audio_at)
        self.status = CallStatus(self.status)

    @property
    def setup_ms(self) -> float | None:
        """Milliseconds from the INVITE to the answer; None when never answered."""
        if self.answered_at is None:
            return None
        return max(0.0, (self.answered_at - self.received_at).total_seconds() * 1000.0)

    @property
    def time_to_first_audio_ms(self) -> float | None:
        """Milliseconds from the answer to the agent's first audio; None when unknown."""
        if self.answered_at is None or self.first_audio_at is None:
            return None
        return max(0.0, (self.first_audio_at - self.answered_at).total_seconds() * 1000.0)

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
            "trunk": self.trunk,
            "direction": self.direction,
            "srtp": self.srtp,
            "caller_country": self.caller_country,
            "caller_region": self.caller_region,
            "first_audio_at": _iso(self.first_audio_at),
            "setup_ms": self.setup_ms,
            "time_to_first_audio_ms": self.time_to_first_audio_ms,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "packets_lost": self.packets_lost,
            "loss_percent": self.loss_percent,
            "jitter_ms": self.jitter_ms,
            "rtt_ms": self.rtt_ms,
            "concealed_ms": self.concealed_ms,
            "mos": self.mos,
            "mos_method": self.mos_method,
            "turns": self.turns,
            "response_p50_ms": self.response_p50_ms,
            "response_max_ms": self.response_max_ms,
            "owner": self.owner,
            "updated_at": _iso(self.updated_at),
            "recording": None if self.recording is None else self.recording.to_json(),
        }

    def quality(self) -> dict[str, Any] | None:
        """The media figures as one object, None when the call had no media."""
        values = {name: getattr(self, name) for name in QUALITY_FIELDS}
        return None if all(v is None for v in values.values()) else values


@dataclass
class CallEvent:
    """Something that happened during a call, kept in order (transcripts, metadata, DTMF).

    ``kind`` ``"transcript"`` carries ``{"role", "text", "final"}`` in ``data``;
    ``"metadata"`` any JSON object.
    """

    call_id: str
    at: datetime
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.at = as_utc(self.at)

    def to_json(self) -> dict[str, Any]:
        return {"at": _iso(self.at), "kind": self.kind, "data": self.data}


@dataclass
class CallDetail:
    """One call with its events, as shown by ``/api/calls/{id}``."""

    record: CallRecord
    events: list[CallEvent] = field(default_factory=list)

    def timeline(self) -> list[dict[str, Any]]:
        record = self.record
        points = [
            ("received", record.received_at),
            ("answered", record.answered_at),
            ("first_audio", record.first_audio_at),
            ("ended", record.ended_at),
        ]
        timeline: list[dict[str, Any]] = [
            {"event": name, "at": _iso(at)} for name, at in points if at is not None
        ]
        transfers = [
            {"event": f"transfer_{event.data.get('status')}", "at": _iso(event.at)}
            for event in self.events
            if event.kind == "transfer"
        ]
        if transfers:
            timeline = sorted(timeline + transfers, key=lambda point: point["at"] or "")
        return timeline

    def transfers(self) -> list[dict[str, Any]]:
        """Every transfer the agent asked for, step by step: ``status`` is ``refused``
        (with ``reason``), ``requested``, ``accepted``, ``failed`` or ``completed``
        (with ``sip_code`` when known), and for a bridged transfer ``dialing``, ``bridged``
        and ``ended`` (with ``leg``, the target leg's call id, and ``by``), for a warm one
        ``dialing``, ``consulting``, then ``completed``, ``cancelled``, ``failed`` or
        ``ended``; ``method`` is ``refer``, ``bridge`` or ``warm`` (None in records older
        than it)."""
        return [
            {
                "at": _iso(event.at),
                "target": event.data.get("target"),
                "status": event.data.get("status"),
                "method": event.data.get("method"),
                "reason": event.data.get("reason"),
                "detail": event.data.get("detail"),
                "sip_code": event.data.get("sip_code"),
                "leg": event.data.get("leg"),
                "by": event.data.get("by"),
            }
            for event in self.events
            if event.kind == "transfer"
        ]

    def to_json(self) -> dict[str, Any]:
        data = self.record.to_json()
        data["timeline"] = self.timeline()
        data["transcript"] = [
            {
                "at": _iso(event.at),
                "role": event.data.get("role"),
                "text": event.data.get("text"),
                "final": bool(event.data.get("final", True)),
            }
            for event in self.events
            if event.kind == "transcript"
        ]
        data["metadata"] = [
            {"at": _iso(event.at), "data": event.data}
            for event in self.events
            if event.kind == "metadata"
        ]
        data["transfers"] = self.transfers()
        data["quality"] = self.record.quality()
        return data


class InstanceState(StrEnum):
    """An instance's state in the store. ``running`` and ``draining`` are alive (they
    write a heartbeat); ``stopped`` ended cleanly; ``lost`` stopped writing its heartbeat
    and a peer closed its open calls."""

    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    LOST = "lost"

    @property
    def is_alive(self) -> bool:
        return self in (InstanceState.RUNNING, InstanceState.DRAINING)


@dataclass
class InstanceRecord:
    """One instance sharing the database. ``seen_at`` is its last heartbeat; for a lost
    one, ``lost_by`` is the peer that closed its ``lost_calls`` open calls at ``lost_at``.
    Times are the database's clock."""

    id: str
    sip_address: str | None
    state: InstanceState
    started_at: datetime
    seen_at: datetime
    lost_at: datetime | None = None
    lost_by: str | None = None
    lost_calls: int | None = None

    def __post_init__(self) -> None:
        self.state = InstanceState(self.state)
        self.started_at = as_utc(self.started_at)
        self.seen_at = as_utc(self.seen_at)
        self.lost_at = _opt_utc(self.lost_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sip_address": self.sip_address,
            "state": self.state.value,
            "started_at": _iso(self.started_at),
            "seen_at": _iso(self.seen_at),
            "lost_at": _iso(self.lost_at),
            "lost_by": self.lost_by,
            "lost_calls": self.lost_calls,
        }


@dataclass
class RegistrationRecord:
    """A registering trunk's last known registration on one instance (``state`` as the
    API's ``registration.state``), and that instance's own state (None: no row in
    ``instances``): a row of a ``stopped`` or ``lost`` instance is history."""

    trunk: str
    instance: str
    state: str
    registered_until: datetime | None
    last_status: int | None
    last_reason: str | None
    next_attempt: datetime | None
    failures: int
    updated_at: datetime
    instance_state: InstanceState | None = None

    def __post_init__(self) -> None:
        self.registered_until = _opt_utc(self.registered_until)
        self.next_attempt = _opt_utc(self.next_attempt)
        self.updated_at = as_utc(self.updated_at)
        if self.instance_state is not None:
            self.instance_state = InstanceState(self.instance_state)

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "instance_state": None if self.instance_state is None else self.instance_state.value,
            "state": self.state,
            "registered_until": _iso(self.registered_until),
            "last_status": self.last_status,
            "last_reason": self.last_reason,
            "next_attempt": _iso(self.next_attempt),
            "failures": self.failures,
            "updated_at": _iso(self.updated_at),
        }


@dataclass
class TraceRecord:
    """A SIP trace in force until ``expires_at``: ``kind`` ``"number"`` (the calls to or
    from ``value``, an E.164 number) or ``"trunk"`` (the calls of the trunk ``value``)."""

    kind: str
    value: str
    created_at: datetime
    expires_at: datetime

    def __post_init__(self) -> None:
        self.created_at = as_utc(self.created_at)
        self.expires_at = as_utc(self.expires_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
        }
