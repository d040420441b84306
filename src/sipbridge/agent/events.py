"""What an agent session reports to the call: one frozen dataclass per kind of event.

Both protocols (native v1 and Twilio Media Streams) produce the same events, so the call
layer handles them once::

    AgentEvent
    ├── HangupRequested     the agent asked to end the call
    ├── TransferRequested   the agent asked for a transfer (blind: SIP REFER; or warm)
    ├── TransferComplete    the agent joins the caller to the target of its warm transfer
    ├── TransferCancel      the agent calls its warm transfer off
    ├── SendDtmf            the agent asked to send digits to the caller (RFC 4733)
    ├── Transcript          a line of the conversation, for the call record
    ├── Metadata            free-form data, for the call record
    ├── AudioCleared        the agent interrupted its own audio (barge-in)
    ├── AudioDropped        agent audio beyond the playout cap was discarded
    ├── UnknownMessage      a message kind this version does not know (once per kind)
    ├── InvalidMessage      a frame that was ignored, and why (once per kind of error)
    ├── LimitReached        a per-call cap was reached: the excess is dropped (once per kind)
    └── RateExceeded        the agent sent messages faster than allowed: end the call
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_DTMF_DURATION_MS",
    "DTMF_DIGITS",
    "MAX_DTMF_DURATION_MS",
    "MIN_DTMF_DURATION_MS",
    "AgentEvent",
    "AudioCleared",
    "AudioDropped",
    "HangupRequested",
    "InvalidMessage",
    "LimitReached",
    "Metadata",
    "RateExceeded",
    "SendDtmf",
    "Transcript",
    "TransferCancel",
    "TransferComplete",
    "TransferRequested",
    "UnknownMessage",
]

# RFC 4733 §3.2 table 3: the sixteen DTMF events.
DTMF_DIGITS: Final = "0123456789*#ABCD"
MIN_DTMF_DURATION_MS: Final = 40
MAX_DTMF_DURATION_MS: Final = 2000
DEFAULT_DTMF_DURATION_MS: Final = 100


@dataclass(frozen=True, slots=True)
class HangupRequested:
    """The agent asked to end the call.

    With ``after_playout`` (the default) the audio it already sent is played first;
    without, the call ends at once and queued audio is discarded.
    """

    after_playout: bool = True


@dataclass(frozen=True, slots=True)
class TransferRequested:
    """The agent asked for a transfer of the caller to ``target``.

    ``target`` is a valid ``tel:``, ``sip:`` or ``sips:`` URI, to be used as the Refer-To
    of a REFER (RFC 3515) or dialled through the trunk; ``headers`` are extra SIP headers
    for it, names checked to be RFC 3261 tokens and values free of line breaks. ``mode``
    is ``blind`` (REFER, then the bridge) or ``warm`` (the agent talks to the target on
    its own leg first, then sends :class:`TransferComplete` or :class:`TransferCancel`).
    Answer with ``session.transfer_result(...)``.
    """

    target: str
    headers: dict[str, str] = field(default_factory=dict)
    mode: Literal["blind", "warm"] = "blind"


@dataclass(frozen=True, slots=True)
class TransferComplete:
    """The agent is done talking to the target of its warm transfer: join the caller."""


@dataclass(frozen=True, slots=True)
class TransferCancel:
    """The agent calls its warm transfer off: hang up the target, back to the caller."""


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """The agent asked to send ``digits`` (0-9, *, #, A-D; upper case) to the caller,
    each lasting ``duration_ms`` (40-2000)."""

    digits: str
    duration_ms: int = DEFAULT_DTMF_DURATION_MS


@dataclass(frozen=True, slots=True)
class Transcript:
    """A line of the conversation as the agent heard (``caller``) or said (``agent``) it;
    ``final`` is False for interim hypotheses that a later line replaces."""

    role: Literal["caller", "agent"]
    text: str
    final: bool = True


@dataclass(frozen=True, slots=True)
class Metadata:
    """A JSON object the agent wants stored with the call."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """The agent cleared its queued audio; ``dropped_bytes`` of PCM were discarded.

    The next frame already carries none of it; pending marks were answered as cleared.
    """

    dropped_bytes: int


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """The agent sent a message kind this version does not know (reported once per kind,
    for at most 64 kinds, the name cut to 64 characters)."""

    type: str


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A frame from the agent was ignored; ``reason`` says why. The call goes on.

    ``kind`` names the kind of error (``invalid_json``, ``not_object``, ``no_type``,
    ``audio``, or the message type whose fields were wrong). A session reports the first
    error of each kind per call and counts the others (``Session.protocol_errors``).
    """

    reason: str
    kind: str = ""


@dataclass(frozen=True, slots=True)
class LimitReached:
    """A per-call cap of ``kind`` (``transcript``, ``metadata``, ``dtmf``) was reached;
    ``detail`` says which. Reported once per kind per call; this message and the later
    ones of the kind over the cap are dropped and counted (``Session.dropped``)."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class RateExceeded:
    """The agent's connection sent more than ``burst`` messages at once or more than
    ``rate`` per second on average: the call ends as ``agent_protocol_error``."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class AudioDropped:
    """Agent audio was discarded because more than the cap (60 s) was queued."""

    bytes: int


AgentEvent = (
    HangupRequested
    | TransferRequested
    | TransferComplete
    | TransferCancel
    | SendDtmf
    | Transcript
    | Metadata
    | AudioCleared
    | UnknownMessage
    | InvalidMessage
    | AudioDropped
    | LimitReached
    | RateExceeded
)
