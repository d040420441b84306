"""Pydantic models for the REST API: request bodies and the documented response shapes.

Response models mirror the ``to_json()`` of the records in :mod:`sipbridge.store.records`
(tests compare the field sets, so the two cannot drift apart silently). Timestamps are kept
as the ISO 8601 strings ``to_json()`` produces.

Every string that reaches the database is checked for NUL characters and lone surrogates
(PostgreSQL rejects the first, UTF-8 cannot encode the second) and bounded in length, and
every integer is bounded, so bad input is a 422 and never a database error.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

__all__ = [
    "CODEC_NAMES",
    "NAME_PATTERN",
    "AgentCreate",
    "AgentOut",
    "AgentStatsOut",
    "AgentUpdate",
    "BanCreate",
    "BanOut",
    "CallDetailOut",
    "CallOut",
    "CallPage",
    "CallStatsOut",
    "ErrorMessage",
    "InstanceOut",
    "MetadataEntry",
    "NumberCreate",
    "NumberOut",
    "NumberUpdate",
    "TimelineEntry",
    "TraceCreate",
    "TraceOut",
    "TranscriptEntry",
    "TrunkCreate",
    "TrunkOut",
    "TrunkUpdate",
    "check_text",
    "check_utc_datetime",
]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
CODEC_NAMES = ("pcmu", "pcma", "g722", "opus")
MAX_URLS = 10
MAX_CIDRS = 256


def check_text(value: str) -> str:
    """Reject text the database cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def check_utc_datetime(value: datetime) -> datetime:
    """A timestamp that converts to UTC (naive means UTC) without leaving the datetime range."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (CIDR)") from None
    return value.strip()


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional(**kwargs: Any) -> Any:
    """A PATCH field that may be left out but not set to null (unless its type allows it).

    Its ``None`` default is never validated and never shown in the schema; routes look at
    ``model_fields_set`` to tell which fields were sent.
    """
    return Field(default=None, json_schema_extra=_drop_default, **kwargs)


Text = Annotated[str, AfterValidator(check_text)]
Name = Annotated[
    str,
    Field(min_length=1, max_length=100, pattern=NAME_PATTERN, examples=["support"]),
]
AgentUrl = Annotated[
    str,
    Field(
        min_length=6,
        max_length=2048,
        pattern=r"^[wW][sS][sS]?://",
        examples=["wss://agent.example.com/ws"],
    ),
    AfterValidator(check_text),
]
AgentUrls = Annotated[list[AgentUrl], Field(min_length=1, max_length=MAX_URLS)]
Protocol = Literal["native", "twilio"]
SampleRate = Literal[8000, 16000]
Token = Annotated[str, Field(min_length=1, max_length=1024), AfterValidator(check_text)]
CaBundle = Annotated[
    str,
    Field(min_length=1, max_length=1024, examples=["/etc/sipbridge/agent-ca.pem"]),
    AfterValidator(check_text),
]
_CA_BUNDLE_HELP = (
    "Path, on the server, of a PEM file of CA certificates that verify the agent's wss:// "
    "certificate instead of the system's. It must exist and hold a certificate; stored as "
    "an absolute path."
)
TransferAllow = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=256), AfterValidator(check_text)]],
    Field(max_length=100, examples=[["+1202555*", "pbx.example.com"]]),
]
_TRANSFER_HELP = (
    "Where the agent may transfer callers: +NUMBER patterns (tel: targets, * and ? as "
    "wildcards), HOST or USER@HOST patterns (sip:/sips: targets), or * (anywhere). Empty: "
    "the default policy (numbers in the called number's country, no premium rate, no sip: "
    "targets)."
)
Cidr = Annotated[
    str,
    Field(min_length=1, max_length=64, examples=["203.0.113.0/24"]),
    AfterValidator(check_text),
    AfterValidator(_check_cidr),
]
Cidrs = Annotated[list[Cidr], Field(max_length=MAX_CIDRS)]
Host = Annotated[
    str,
    Field(min_length=1, max_length=255, examples=["sip.example.net"]),
    AfterValidator(check_text),
]
Credential = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(check_text)]
MaxCalls = Annotated[int, Field(ge=1, le=100_000)]
MessageRate = Annotated[int, Field(ge=0, le=1_000_000)]
_MESSAGE_RATE_HELP = (
    "SIP messages per second the trunk's networks may send; null: the default (1000); 0: no limit"
)
Codec = Literal["pcmu", "pcma", "g722", "opus"]
Codecs = Annotated[list[Codec], Field(max_length=len(CODEC_NAMES))]
NumberText = Annotated[
    str,
    Field(min_length=1, max_length=64, examples=["+12025550101"]),
    AfterValidator(check_text),
]
AllowedNumbers = Annotated[list[NumberText], Field(max_length=10_000)]
SrtpMode = Literal["off", "optional", "required"]
BanAddress = Annotated[
    str,
    Field(min_length=1, max_length=64, examples=["203.0.113.7", "198.51.100.0/24"]),
    AfterValidator(check_text),
]
BanSeconds = Annotated[int, Field(ge=1, le=10 * 365 * 86400)]
BanNote = Annotated[str, Field(max_length=255), AfterValidator(check_text)]
# ISO 8601 timestamps exactly as the records' to_json() writes them
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]


_RECORD_HELP = (
    'Record its calls (two-channel WAV, docs/operations.md "Recordings"), unless '
    "their number says otherwise"
)
_NUMBER_RECORD_HELP = (
    "Record the number's calls: true or false win over its agent's record setting; "
    "null follows the agent's"
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ErrorMessage(BaseModel):
    """The body of 400, 401, 404, 409 and 413 answers."""

    detail: str


# -------------------------------------------------------------------------- agents


class AgentCreate(_Body):
    name: Name
    urls: AgentUrls = Field(
        description="WebSocket URLs (ws:// or wss://), tried in order; the first is the primary."
    )
    protocol: Protocol = "native"
    token: Token | None = Field(
        default=None,
        description="Sent to the agent as a bearer token. Write-only: answers show has_token.",
    )
    sample_rate: SampleRate = 8000
    voice_enabled: bool = True
    ca_bundle: CaBundle | None = Field(default=None, description=_CA_BUNDLE_HELP)
    transfer_allow: TransferAllow = Field(default_factory=list, description=_TRANSFER_HELP)
    record: bool = Field(default=False, description=_RECORD_HELP)


class AgentUpdate(_Body):
    """Fields left out stay as they are; ``"token": null`` removes the token and
    ``"ca_bundle": null`` the CA bundle."""

    urls: AgentUrls = _optional()
    protocol: Protocol = _optional()
    token: Token | None = Field(default=None, description="null removes the token")
    sample_rate: SampleRate = _optional()
    voice_enabled: bool = _optional()
    ca_bundle: CaBundle | None = Field(
        default=None, description=_CA_BUNDLE_HELP + " null removes it."
    )
    transfer_allow: TransferAllow | None = Field(
        default=None, description=_TRANSFER_HELP + " Replaces the list; [] for the default."
    )
    record: bool = _optional()


class AgentOut(_Out):
    name: str
    urls: list[str]
    protocol: str
    has_token: bool
    ca_bundle: str | None = Field(description="absolute path of the CA bundle, or null")
    transfer_allow: list[str] = Field(description=_TRANSFER_HELP)
    sample_rate: int
    voice_enabled: bool
    record: bool = Field(description=_RECORD_HELP)
    created_at: Timestamp
    updated_at: Timestamp | None


# ------------------------------------------------------------------------- numbers


class NumberCreate(_Body):
    number: NumberText = Field(
        description="E.164 (+12025550101) or, with a default region set, a national format"
    )
    agent: Name
    record: bool | None = Field(default=None, description=_NUMBER_RECORD_HELP)


class NumberUpdate(_Body):
    """Fields left out stay as they are."""

    agent: Name | None = Field(
        default=None, description="null leaves the number without an agent (480)"
    )
    record: bool | None = Field(default=None, description=_NUMBER_RECORD_HELP)


class NumberOut(_Out):
    number: str
    agent: str | None = Field(description="null once the agent was removed")
    record: bool | None = Field(description=_NUMBER_RECORD_HELP)
    created_at: Timestamp | None


# -------------------------------------------------------------------------- trunks


class TrunkCreate(_Body):
    name: Name
    allowed_cidrs: Cidrs = Field(
        default_factory=list, description="Source addresses allowed to send calls"
    )
    host: Host | None = Field(
        default=None, description="Where outbound calls and registrations go (host[:port])"
    )
    username: Credential | None = None
    password: Credential | None = Field(default=None, description="Write-only")
    register_: bool = Field(default=False, alias="register")
    max_calls: MaxCalls | None = None
    codecs: Codecs = Field(default_factory=list)
    allowed_numbers: AllowedNumbers = Field(
        default_factory=list,
        description="Numbers this trunk may call (E.164); empty: any number with an agent",
    )
    srtp: SrtpMode = Field(
        default="optional", description="SRTP (SDES): off, optional (when offered) or required"
    )
    max_message_rate: MessageRate | None = Field(default=None, description=_MESSAGE_RATE_HELP)


class TrunkUpdate(_Body):
    """Fields left out stay as they are; null clears host, username, password, max_calls
    (max_message_rate: back to the default)."""

    allowed_cidrs: Cidrs = _optional()
    host: Host | None = None
    username: Credential | None = None
    password: Credential | None = None
    register_: bool = _optional(alias="register")
    max_calls: MaxCalls | None = None
    codecs: Codecs = _optional()
    allowed_numbers: AllowedNumbers = _optional()
    srtp: SrtpMode = _optional()
    max_message_rate: MessageRate | None = Field(default=None, description=_MESSAGE_RATE_HELP)


class RegistrationOut(_Out):
    """A registering trunk's registration, as this server's REGISTER client sees it."""

    state: Literal["registering", "registered", "failing", "unregistering", "unregistered"]
    registered_until: Timestamp | None = Field(
        description="When the binding the registrar granted ends (refreshed at half of it)"
    )
    last_status: int | None = Field(
        description="The last final status of a REGISTER; null: none yet, or a timeout"
    )
    last_reason: str | None = Field(description="ok, timeout, auth_failed, or the reason phrase")
    next_attempt: Timestamp | None = Field(description="The next REGISTER (refresh or retry)")
    failures: int = Field(description="Failed attempts in a row")


class StoredRegistrationOut(RegistrationOut):
    """One instance's registration with a trunk, as that instance last wrote it to the
    store (whenever it changed)."""

    instance: str = Field(description="The instance (--instance-id) that registers")
    instance_state: Literal["running", "draining", "stopped", "lost"] | None = Field(
        description="That instance's state (stopped or lost: the row is history; null: "
        "the instance is unknown)"
    )
    updated_at: Timestamp = Field(description="When the instance wrote this state")


class TrunkOut(_Out):
    name: str
    allowed_cidrs: list[str]
    host: str | None
    username: str | None
    has_password: bool
    register_: bool = Field(alias="register")
    max_calls: int | None
    codecs: list[str]
    allowed_numbers: list[str]
    srtp: Literal["off", "optional", "required"]
    max_message_rate: int | None = Field(description=_MESSAGE_RATE_HELP)
    created_at: Timestamp
    registration: RegistrationOut | None = Field(
        default=None,
        description="With register=true, the registration's live state on the server "
        "answering (null otherwise, or when no server runs this API)",
    )
    registrations: list[StoredRegistrationOut] = Field(
        default_factory=list,
        description="Every instance's last known registration with this trunk, from the "
        "database (each instance writes its own whenever it changes)",
    )


# ---------------------------------------------------------------------------- bans


class BanCreate(_Body):
    address: BanAddress = Field(description="An IP address or a network (CIDR)")
    duration: BanSeconds | None = Field(
        default=None, description="Seconds the ban lasts; null or left out: until lifted"
    )
    note: BanNote | None = None


class BanOut(_Out):
    address: str
    reason: Literal["flood", "auth_failures", "unknown_numbers", "scanner", "manual"]
    note: str | None
    created_at: Timestamp
    expires_at: Timestamp | None = Field(description="null: until lifted")


# -------------------------------------------------------------------------- traces


class TraceCreate(_Body):
    """Exactly one of ``number`` and ``trunk``."""

    number: NumberText | None = Field(
        default=None, description="Trace the calls to or from this number (E.164)"
    )
    trunk: str | None = Field(
        default=None,
        max_length=100,
        pattern=NAME_PATTERN,
        description="Trace the calls of this trunk",
    )
    duration: int = Field(
        default=3600, ge=1, le=7 * 86400, description="Seconds the trace lasts (default 1 h)"
    )


class TraceOut(_Out):
    kind: Literal["number", "trunk"]
    value: str = Field(description="The E.164 number or the trunk's name")
    created_at: Timestamp
    expires_at: Timestamp


# ----------------------------------------------------------------------- instances


class InstanceOut(_Out):
    """An instance sharing the database; times are the database's clock."""

    id: str = Field(description="Its --instance-id, the owner of the calls it records")
    sip_address: str | None = Field(description="Advertised SIP address and port")
    state: Literal["running", "draining", "stopped", "lost"]
    started_at: Timestamp
    seen_at: Timestamp = Field(description="Its last heartbeat")
    lost_at: Timestamp | None = Field(description="When a peer declared it lost")
    lost_by: str | None = Field(description="The peer that closed its open calls")
    lost_calls: int | None = Field(description="How many open calls that peer closed")


# --------------------------------------------------------------------------- calls


class RecordingOut(_Out):
    """A call's recording: a two-channel WAV file (left the caller, right the agent) on
    the instance that handled the call; download it from ``/api/calls/{id}/recording``."""

    path: str = Field(description="The file on the server")
    format: Literal["wav"]
    sample_rate: int = Field(description="8000 or 16000 (the agent's rate), PCM16")
    channels: int = Field(description="2: left the caller, right the agent")
    bytes: int = Field(description="The file's size")
    duration_s: float = Field(description="Length of the audio, seconds")
    dropped_ms: int = Field(
        description="Audio left out (silence) because the recording writer fell behind"
    )


class CallOut(_Out):
    """A call record; the field order is also the CSV export's column order."""

    id: str
    sip_call_id: str
    from_number: str | None
    to_number: str | None
    agent: str | None
    received_at: Timestamp
    answered_at: Timestamp | None
    ended_at: Timestamp | None
    duration_s: float | None
    status: Literal[
        "ringing",
        "active",
        "answered",
        "failed",
        "cancelled",
        "interrupted",
        "busy",
        "no_answer",
        "rejected",
    ] = Field(
        description="ringing, active: in progress; answered, failed, cancelled: how it ended; "
        "interrupted: the instance handling it ended (crash) and closed it at its next start; "
        "busy (486/600), no_answer (ring timeout, 408/480/487), rejected (another final "
        "status, in sip_code): an outbound call the callee's side did not take"
    )
    reason: str | None
    sip_code: int | None
    codec: str | None
    hangup_by: str | None
    source: str | None = Field(description="The caller's address and port")
    trunk: str | None = Field(
        description="The trunk the call came from (outbound: went through); null for "
        "loopback with no trunk configured"
    )
    direction: Literal["inbound", "outbound"] = Field(
        description="inbound: a caller called us; outbound: placed with POST /api/calls "
        "(from_number is ours, to_number the callee's)"
    )
    srtp: str | None = Field(
        description="The SRTP suite of the call's media (RFC 4568); null: plain RTP"
    )
    caller_country: str | None = Field(description="ISO 3166 alpha-2, from the caller's number")
    caller_region: str | None = Field(description="e.g. Washington D.C.; null when unknown")
    first_audio_at: Timestamp | None
    setup_ms: float | None = Field(description="INVITE to answer, milliseconds")
    time_to_first_audio_ms: float | None = Field(
        description="Answer to the agent's first audio, milliseconds"
    )
    packets_in: int | None = Field(description="RTP packets from the caller")
    packets_out: int | None = Field(description="RTP packets to the caller")
    bytes_in: int | None = Field(description="RTP payload bytes from the caller")
    bytes_out: int | None = Field(description="RTP payload bytes to the caller")
    packets_lost: int | None = Field(description="Caller packets lost (RFC 3550 A.3)")
    loss_percent: float | None = Field(description="Caller packet loss, percent")
    jitter_ms: float | None = Field(description="Interarrival jitter (RFC 3550 A.8), ms")
    rtt_ms: float | None = Field(description="Round trip time from RTCP, ms; null if unknown")
    concealed_ms: int | None = Field(description="Caller audio concealed (loss), ms")
    mos: float | None = Field(description="Estimated MOS (ITU-T G.107 E-model, simplified)")
    mos_method: str | None = Field(
        description='How `mos` was estimated: "g107" with the codec\'s equipment impairment '
        'and loss robustness from ITU-T G.113 Appendix I (PCMU, PCMA); "g107-assumed" when '
        "one of them is our assumption, not a tabulated value (G.722's Bpl, Opus' Ie and "
        "Bpl): an estimate to compare calls of one codec, not a measurement; null with mos"
    )
    turns: int | None = Field(
        description="Times the agent answered the caller's speech (energy-detected turns)"
    )
    response_p50_ms: float | None = Field(
        description="Median time from the end of the caller's speech to the agent's first "
        "audio after it, measured at the bridge, ms; null without any turn"
    )
    response_max_ms: float | None = Field(description="Longest such response time, ms")
    owner: str | None = Field(
        default=None, description="The instance (--instance-id) that handled the call"
    )
    updated_at: Timestamp | None = Field(
        default=None, description="When that instance last wrote the record"
    )
    recording: RecordingOut | None = Field(
        default=None,
        description="The call's recording; null when the call was not recorded or the "
        "retention period deleted it (in the CSV export: the file's path)",
    )


class CallCreate(_Body):
    """An outbound call to place (``POST /api/calls``)."""

    to: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_text)] = Field(
        description="The callee's number: E.164, or national in --default-region"
    )
    from_: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_text)] = Field(
        alias="from", description="Our caller ID, a number as `to`"
    )
    agent: Name = Field(description="The agent the callee is bridged to once answered")
    trunk: Name = Field(description="The trunk dialled through (its `host`)")
    headers: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=1024)]] = (
        Field(
            default_factory=dict,
            max_length=20,
            description="Extra INVITE headers (e.g. X-...); not those sipbridge sets itself",
        )
    )
    ring_timeout: float = Field(
        default=30.0, ge=1, le=300, description="Seconds of ringing before CANCEL (no_answer)"
    )


class CallCreated(_Out):
    """The call placed: poll ``GET /api/calls/{id}`` for its outcome."""

    id: str
    status: Literal["ringing"]


class CallEnding(_Out):
    """The call is being ended: poll ``GET /api/calls/{id}`` for its record."""

    id: str
    status: Literal["ending"]


class CallPage(_Out):
    items: list[CallOut]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end"
    )


class TimelineEntry(_Out):
    event: Literal[
        "received",
        "answered",
        "first_audio",
        "ended",
        "transfer_refused",
        "transfer_requested",
        "transfer_accepted",
        "transfer_failed",
        "transfer_completed",
        "transfer_dialing",
        "transfer_bridged",
        "transfer_ended",
        "transfer_consulting",
        "transfer_cancelled",
    ]
    at: Timestamp


class TransferEntry(_Out):
    """One step of a transfer the agent asked for."""

    at: Timestamp
    target: str | None
    status: Literal[
        "refused",
        "requested",
        "accepted",
        "failed",
        "completed",
        "dialing",
        "bridged",
        "ended",
        "consulting",
        "cancelled",
    ] = Field(
        description="requested/accepted/completed: the REFER; failed: the REFER (a fallback "
        "to the bridge follows when the call came through a trunk with a host) or the bridge; "
        "dialing: the target's leg placed through the trunk; bridged: the target answered, "
        "the caller is joined to it and the agent left; ended: the bridged call is over. "
        "A warm transfer: requested, dialing, consulting (the target answered, the agent "
        "talks to it), then completed (the caller joined, the agent left), cancelled (by the "
        "agent, or by ``by`` ending the call meanwhile), failed (not answered) or ended "
        "(the target hung up during the consultation, reason target_hangup; or, after "
        "completed, the joined call is over)"
    )
    method: Literal["refer", "bridge", "warm"] | None = Field(
        default=None, description="how the step was carried out"
    )
    reason: str | None = Field(
        description="why it was refused or failed: premium_rate, other_country, sip_target, "
        "not_allowed, identity_header, not_a_number, transfer_pending, refer_not_sent; "
        "refer_rejected, refer_timeout, refer_failed (the REFER, before the bridge); "
        "bridge_unavailable (no trunk with a host), bad_target, and the target leg's own "
        "reason (busy, no_answer, rejected...); warm_unsupported (a Twilio-mode agent), "
        "target_hangup"
    )
    detail: str | None
    sip_code: int | None
    leg: str | None = Field(
        default=None, description="the id of the target's leg (an outbound call record)"
    )
    by: str | None = Field(
        default=None,
        description="ended: who hung up the bridged call (caller or target); cancelled: "
        "who ended the call during a warm transfer's consultation",
    )


class TranscriptEntry(_Out):
    at: Timestamp
    role: str | None
    text: str | None
    final: bool | None


class MetadataEntry(_Out):
    at: Timestamp
    data: dict[str, Any]


class CallDetailOut(CallOut):
    timeline: list[TimelineEntry]
    transcript: list[TranscriptEntry]
    metadata: list[MetadataEntry]
    transfers: list[TransferEntry]
    quality: dict[str, Any] | None


# --------------------------------------------------------------------------- stats


class ReasonCount(_Out):
    reason: str | None
    count: int


class DayCount(_Out):
    date: str = Field(json_schema_extra={"format": "date"})
    count: int


class CountryCount(_Out):
    country: str | None
    count: int


class RegionCount(_Out):
    country: str | None
    region: str | None
    count: int


class AgentStatsOut(_Out):
    agent: str
    calls: int
    answered: int
    success_rate: float
    average_duration_s: float | None
    average_time_to_first_audio_ms: float | None


class TrunkStatsOut(_Out):
    trunk: str
    calls: int
    answered: int
    success_rate: float


class HourCount(_Out):
    hour: Timestamp
    count: int


class CallStatsOut(_Out):
    since: Timestamp | None
    until: Timestamp | None
    total: int
    answered: int
    failed: int
    cancelled: int
    interrupted: int = Field(
        description="closed by their instance's next start after it ended mid-call (crash)"
    )
    in_progress: int = Field(description="ringing or active now: neither answered nor failed")
    success_rate: float = Field(description="answered / total; 0 without calls")
    average_duration_s: float | None = Field(description="over answered calls")
    failure_reasons: list[ReasonCount]
    by_hour_of_day: list[int] = Field(min_length=24, max_length=24, description="UTC hours")
    by_day_of_week: list[int] = Field(min_length=7, max_length=7, description="Monday first, UTC")
    by_day: list[DayCount]
    callers_by_country: list[CountryCount]
    callers_by_region: list[RegionCount]
    agents: list[AgentStatsOut]
    by_weekday_hour: list[list[int]] = Field(
        min_length=7, max_length=7, description="[weekday][hour], Monday first, UTC"
    )
    by_hour: list[HourCount] = Field(
        description="every hour from the first to the last with calls when at most 7 days "
        "apart; else empty"
    )
    trunks: list[TrunkStatsOut] = Field(description="calls that came from a trunk, per trunk")
