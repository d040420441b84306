"""What both agent protocols share (sans-I/O): playout, marks, the outbox, validation.

:class:`Session` is the interface the call layer drives, whichever protocol the agent
speaks (:class:`~sipbridge.agent.protocol.AgentSession` for the native protocol,
:class:`~sipbridge.agent.twilio.TwilioSession` for Twilio Media Streams). The subclasses
only know their wire format; queueing and pacing agent audio, keeping marks at their
place in it, and checking what the agent asks for happen here, once.

A mark is a position in the agent's audio stream, counted in bytes accepted by the
playout buffer. It is answered when :meth:`Session.next_frame` has handed out every byte
queued before it (at once when nothing is queued), or as cleared when the agent clears
its audio first. Audio refused by the cap takes no position, so marks stay exact.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import deque
from functools import lru_cache
from typing import Any, Final, Literal

from sipbridge.agent.events import (
    DEFAULT_DTMF_DURATION_MS,
    DTMF_DIGITS,
    MAX_DTMF_DURATION_MS,
    MIN_DTMF_DURATION_MS,
    AgentEvent,
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    LimitReached,
    Metadata,
    SendDtmf,
    Transcript,
    TransferRequested,
    UnknownMessage,
)
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits
from sipbridge.agent.playout import PlayoutBuffer
from sipbridge.sip import grammar
from sipbridge.sip.errors import SipError
from sipbridge.sip.message import Uri

__all__ = [
    "TRANSFER_LEGS",
    "TRANSFER_MODES",
    "TRANSFER_STATUSES",
    "Session",
    "parse_hangup",
    "parse_metadata",
    "parse_send_dtmf",
    "parse_transcript",
    "parse_transfer",
]

# Bounds what a misbehaving agent can make us remember, log or store.
_MAX_UNKNOWN_TYPES: Final = 64
_MAX_TYPE_LENGTH: Final = 64
_MAX_PENDING_MARKS: Final = 1000
_MAX_MARK_NAME: Final = 1024
_MAX_TARGET_LENGTH: Final = 2048
_MAX_TRANSFER_HEADERS: Final = 32
_MAX_HEADER_VALUE: Final = 1024
_MAX_DTMF_DIGITS: Final = 64
_MAX_TRANSCRIPT: Final = 65536
# Kinds of protocol errors counted per call (they are our names or known message types).
_MAX_ERROR_KINDS: Final = 32

# accepted/failed: a blind transfer's REFER or bridge; dialing, consulting, cancelled,
# ended, completed: the steps of a warm one (docs/agent-protocol.md, "Warm transfer").
TRANSFER_STATUSES: Final = (
    "accepted",
    "failed",
    "dialing",
    "consulting",
    "cancelled",
    "ended",
    "completed",
)
TRANSFER_LEGS: Final = ("caller", "target")
TRANSFER_MODES: Final = ("blind", "warm")
_TRANSFER_SCHEMES: Final = ("tel", "sip", "sips")

# A \uD800-\uDFFF escape may decode to a lone surrogate, which no UTF-8 encoder (the
# WebSocket, the database) accepts; such messages are checked once more after parsing.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


@lru_cache(maxsize=8)
def _silence(size: int) -> bytes:
    return bytes(size)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


class Session(ABC):
    """The agent side of one call, whatever the protocol.

    What the caller (the runtime) does:

    - once connected: send every frame of :meth:`start_messages`, in order;
    - for each caller frame (20 ms of PCM16 at :attr:`sample_rate`): send what
      :meth:`caller_audio` returns (``bytes`` as a binary frame, ``str`` as a text frame);
      for each caller key press, send :meth:`caller_dtmf` as a text frame;
    - for each frame from the agent: :meth:`receive_text` or :meth:`receive_binary`, act
      on the events returned, then send every text frame of :meth:`data_to_send`;
    - every :attr:`frame_ms`: send :meth:`next_frame` to the caller (as RTP), then send
      every text frame of :meth:`data_to_send` (mark echoes);
    - after a REFER: :meth:`transfer_result`, then :meth:`data_to_send`;
    - at the end: send :meth:`stop_message` and close.

    Frames must go out in the order they were obtained (Twilio numbers them).
    """

    #: How messages name their kind: ``"type"`` (native) or ``"event"`` (Twilio).
    kind_key: str = "type"
    #: The protocol's name, as in ``sipbridge agent add --protocol``.
    protocol: str = ""

    def __init__(
        self,
        call_id: str,
        *,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        cap_seconds: float = 60.0,
        limits: AgentLimits = DEFAULT_LIMITS,
    ) -> None:
        if sample_rate <= 0 or frame_ms <= 0 or cap_seconds <= 0:
            raise ValueError("sample_rate, frame_ms and cap_seconds must be positive")
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        frame_bytes = 2 * (sample_rate * frame_ms // 1000)
        if frame_bytes <= 0:
            raise ValueError("a frame must hold at least one sample")
        cap_bytes = max(2 * int(cap_seconds * sample_rate), frame_bytes)
        self._playout = PlayoutBuffer(frame_bytes, cap_bytes)
        self._silence = _silence(frame_bytes)
        self._unknown_types: set[str] = set()
        # (position in the playout stream, name), positions never decreasing.
        self._marks: deque[tuple[int, str]] = deque()
        self._outbox: list[dict[str, Any]] = []
        self.limits = limits
        #: Protocol errors of this call by kind (see :class:`InvalidMessage`).
        self.protocol_errors: dict[str, int] = {}
        #: Messages dropped by the per-call caps, by kind (``transcript``...).
        self.dropped: dict[str, int] = {}
        self._transcripts = 0
        self._transcript_bytes = 0
        self._metadata = 0
        self._metadata_bytes = 0
        self._dtmf_digits = 0

    # -- to the agent -----------------------------------------------------------------

    @abstractmethod
    def start_messages(
        self,
        *,
        from_: str | None,
        to: str | None,
        agent: str,
        sip_call_id: str,
        sip_headers: dict[str, str],
        resumed: bool = False,
        direction: str = "inbound",
    ) -> list[str]:
        """The text frames that open the WebSocket, in order.

        ``direction`` is ``inbound`` (the caller called us) or ``outbound`` (we placed
        the call, ``POST /api/calls``: ``from_`` is our number, ``to`` the callee's).
        ``resumed`` says this is a reconnection in the middle of the call; what was
        waiting in :meth:`data_to_send` and the marks of the lost connection are dropped
        (the new connection never sent those marks). Queued audio keeps playing.
        """

    @abstractmethod
    def stop_message(self, reason: str) -> str:
        """The last text frame before we close the WebSocket."""

    @abstractmethod
    def caller_audio(self, pcm: bytes) -> str | bytes:
        """The WebSocket frame carrying one caller frame (PCM16 LE at ``sample_rate``)."""

    @abstractmethod
    def caller_dtmf(self, digit: str, duration_ms: int) -> str:
        """The text frame reporting one key press of the caller."""

    def transfer_result(
        self,
        status: str,
        sip_code: int | None,
        *,
        leg: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Queue the outcome (or, for a warm transfer, a step) of a transfer the agent
        asked for: ``status`` one of :data:`TRANSFER_STATUSES`, ``sip_code`` the final SIP
        status if any; ``leg`` (warm transfers) says whom the agent's audio now goes to
        and comes from, ``caller`` or ``target``; ``reason`` a word for a failure."""
        if status not in TRANSFER_STATUSES:
            raise ValueError(f"transfer status must be one of {TRANSFER_STATUSES}")
        if leg is not None and leg not in TRANSFER_LEGS:
            raise ValueError(f"transfer leg must be one of {TRANSFER_LEGS}")
        message = self._transfer_result_message(status, sip_code)
        extra = {key: value for key, value in (("leg", leg), ("reason", reason)) if value}
        if extra:
            self._add_transfer_fields(message, extra)
        self._outbox.append(message)

    @property
    def has_outbox(self) -> bool:
        """Whether :meth:`data_to_send` has anything."""
        return bool(self._outbox)

    def data_to_send(self) -> list[str]:
        """Text frames to send to the agent now, in order (usually none)."""
        if not self._outbox:
            return []
        outbox, self._outbox = self._outbox, []
        return [self._encode(message) for message in outbox]

    # -- from the agent ---------------------------------------------------------------

    def receive_text(self, text: str) -> list[AgentEvent]:
        """Interpret one text frame from the agent; never raises."""
        try:
            message = json.loads(text, parse_constant=_reject_constant)
            if _SURROGATE_ESCAPE.search(text) is not None:
                json.dumps(message, ensure_ascii=False).encode()
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError, integers beyond the digit limit, NaN and
            # UnicodeEncodeError (a lone surrogate).
            return self._error("invalid_json", f"invalid JSON: {exc}")
        if not isinstance(message, dict):
            return self._error("not_object", "message is not a JSON object")
        kind = message.get(self.kind_key)
        if not isinstance(kind, str):
            return self._error("no_type", f'message has no string "{self.kind_key}"')
        events = self._handle(kind, message)
        return self._screen(events, kind) if events else events

    def admit_dtmf(self, digits: int, pending: int) -> list[AgentEvent] | None:
        """Whether ``digits`` more digits may be queued for the caller while ``pending``
        wait: None when they may (they are counted), else the events to report (the
        request is dropped and counted as ``dtmf``)."""
        limits = self.limits
        if pending + digits > limits.dtmf_pending:
            return self.drop("dtmf", f"more than {limits.dtmf_pending} digits waiting")
        if self._dtmf_digits + digits > limits.dtmf_digits:
            return self.drop("dtmf", f"more than {limits.dtmf_digits} digits in the call")
        self._dtmf_digits += digits
        return None

    def drop(self, kind: str, detail: str) -> list[AgentEvent]:
        """Count one message of ``kind`` dropped by a cap; the first one is reported."""
        count = self.dropped.get(kind, 0)
        self.dropped[kind] = count + 1
        return [] if count else [LimitReached(kind, detail)]

    def _error(self, kind: str, reason: str) -> list[AgentEvent]:
        """Count one protocol error of ``kind``; the first of each kind is reported."""
        errors = self.protocol_errors
        count = errors.get(kind)
        if count is None:
            if len(errors) >= _MAX_ERROR_KINDS:
                kind = "other"
                count = errors.get(kind, 0)
            else:
                count = 0
        errors[kind] = count + 1
        return [] if count else [InvalidMessage(reason, kind)]

    def _screen(self, events: list[AgentEvent], kind: str) -> list[AgentEvent]:
        """Apply the per-call caps and count protocol errors (``kind``: the message's)."""
        screened: list[AgentEvent] = []
        for event in events:
            if isinstance(event, InvalidMessage):
                screened += self._error(event.kind or kind, event.reason)
            elif isinstance(event, Transcript):
                screened += self._admit_transcript(event)
            elif isinstance(event, Metadata):
                screened += self._admit_metadata(event)
            else:
                screened.append(event)
        return screened

    def _admit_transcript(self, event: Transcript) -> list[AgentEvent]:
        limits = self.limits
        size = len(event.text.encode("utf-8", "surrogatepass"))  # never raises
        if size > limits.transcript_text_bytes:
            return self.drop(
                "transcript", f"a text of more than {limits.transcript_text_bytes} bytes"
            )
        if self._transcripts >= limits.transcripts:
            return self.drop("transcript", f"more than {limits.transcripts} lines")
        if self._transcript_bytes + size > limits.transcript_bytes:
            return self.drop("transcript", f"more than {limits.transcript_bytes} bytes of text")
        self._transcripts += 1
        self._transcript_bytes += size
        return [event]

    def _admit_metadata(self, event: Metadata) -> list[AgentEvent]:
        limits = self.limits
        text = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
        size = len(text.encode("utf-8", "surrogatepass"))  # never raises
        if size > limits.metadata_message_bytes:
            return self.drop(
                "metadata", f"a message of more than {limits.metadata_message_bytes} bytes"
            )
        if self._metadata >= limits.metadata_messages:
            return self.drop("metadata", f"more than {limits.metadata_messages} messages")
        if self._metadata_bytes + size > limits.metadata_bytes:
            return self.drop("metadata", f"more than {limits.metadata_bytes} bytes")
        self._metadata += 1
        self._metadata_bytes += size
        return [event]

    @abstractmethod
    def receive_binary(self, data: bytes) -> list[AgentEvent]:
        """Interpret one binary frame from the agent; never raises."""

    @abstractmethod
    def _handle(self, kind: str, message: dict[str, Any]) -> list[AgentEvent]:
        """Act on one parsed message whose kind is ``kind``."""

    # -- to the caller ----------------------------------------------------------------

    def next_frame(self) -> bytes:
        """The next ``frame_ms`` of agent audio as PCM16, or silence when none is ready.

        Call it once per frame period; marks whose audio has now all been handed out
        are answered in :meth:`data_to_send`.
        """
        frame = self.take_frame()
        return self._silence if frame is None else frame

    def take_frame(self) -> bytes | None:
        """Like :meth:`next_frame`, but ``None`` when the agent has nothing to play (the
        media side sends its own silence and knows a talkspurt has ended)."""
        frame = self._playout.next_frame()
        marks = self._marks
        if marks and marks[0][0] <= self._playout.played_bytes:
            self._answer_marks()
        return frame

    @property
    def frame_ready(self) -> bool:
        """A whole frame of agent audio is queued."""
        return self._playout.queued_bytes >= self._playout.frame_bytes

    def clear_audio(self) -> int:
        """Discard queued agent audio at once; pending marks are answered as cleared.
        Returns how many bytes were discarded."""
        dropped = self._playout.clear()
        while self._marks:
            _, name = self._marks.popleft()
            self._outbox.append(self._mark_message(name, played=False))
        return dropped

    @property
    def frame_bytes(self) -> int:
        """Bytes of PCM16 in one frame (320 at 8 kHz, 20 ms)."""
        return self._playout.frame_bytes

    @property
    def has_audio(self) -> bool:
        """Whether agent audio is queued (a held-back partial frame counts)."""
        return not self._playout.empty

    @property
    def pending_audio_ms(self) -> int:
        """Queued agent audio in milliseconds, rounded down."""
        return self._playout.queued_bytes * 500 // self.sample_rate

    @property
    def pending_marks(self) -> int:
        """Marks waiting for their audio to play."""
        return len(self._marks)

    # -- for the subclasses -----------------------------------------------------------

    @abstractmethod
    def _encode(self, message: dict[str, Any]) -> str:
        """Serialize one outbox message (Twilio numbers it here, as it goes out)."""

    @abstractmethod
    def _mark_message(self, name: str, *, played: bool) -> dict[str, Any]:
        """The answer to a mark, for the outbox."""

    @abstractmethod
    def _transfer_result_message(self, status: str, sip_code: int | None) -> dict[str, Any]:
        """The outcome of a transfer, for the outbox."""

    def _add_transfer_fields(self, message: dict[str, Any], fields: dict[str, str]) -> None:
        """Put ``leg``/``reason`` where the protocol carries the transfer's fields."""
        message.update(fields)

    def _reset_connection(self) -> None:
        """Forget what belonged to a previous WebSocket (for a resumed ``start``)."""
        self._outbox.clear()
        self._marks.clear()

    def _queue_audio(self, pcm: bytes) -> list[AgentEvent]:
        dropped = self._playout.write(pcm)
        return [AudioDropped(dropped)] if dropped else []

    def _mark(self, name: object) -> list[AgentEvent]:
        if not isinstance(name, str):
            return [InvalidMessage('mark without a string "name"')]
        if len(name) > _MAX_MARK_NAME:
            return [InvalidMessage(f"mark name longer than {_MAX_MARK_NAME} characters")]
        if len(self._marks) >= _MAX_PENDING_MARKS:
            return [InvalidMessage(f"more than {_MAX_PENDING_MARKS} marks pending; ignored")]
        self._marks.append((self._playout.written_bytes, name))
        if self._playout.empty:
            self._answer_marks()
        return []

    def _clear(self) -> list[AgentEvent]:
        return [AudioCleared(self.clear_audio())]

    def _answer_marks(self) -> None:
        played = self._playout.played_bytes
        marks = self._marks
        while marks and marks[0][0] <= played:
            _, name = marks.popleft()
            self._outbox.append(self._mark_message(name, played=True))

    def _unknown(self, kind: str) -> list[AgentEvent]:
        kind = kind[:_MAX_TYPE_LENGTH]
        if kind in self._unknown_types or len(self._unknown_types) >= _MAX_UNKNOWN_TYPES:
            return []
        self._unknown_types.add(kind)
        return [UnknownMessage(kind)]


# -- the bodies of the requests both protocols share ------------------------------------
# Each takes the object holding the fields (the native message itself, or the object
# under the event name in Twilio mode) and returns the event or why it is invalid.


def parse_hangup(body: dict[str, Any]) -> HangupRequested | InvalidMessage:
    """``{"after_playout": true|false}`` (optional, default true)."""
    after = body.get("after_playout", True)
    if not isinstance(after, bool):
        return InvalidMessage('hangup "after_playout" must be true or false')
    return HangupRequested(after)


# Headers the REFER itself carries (RFC 3261 §8.1.1, RFC 3515 §2.4.1), full and compact
# forms: an agent may add others (X- headers, User-to-User...), never these.
_RESERVED_TRANSFER_HEADERS = frozenset(
    {
        "via",
        "v",
        "from",
        "f",
        "to",
        "t",
        "call-id",
        "i",
        "cseq",
        "max-forwards",
        "contact",
        "m",
        "route",
        "record-route",
        "content-length",
        "l",
        "content-type",
        "c",
        "refer-to",
        "r",
    }
)
# Identity headers (Referred-By, P-Asserted-Identity...) parse here but refuse the transfer
# in its policy (sipbridge.agent.transfers), which records why.


def parse_transfer(body: dict[str, Any]) -> TransferRequested | InvalidMessage:
    """``{"target": "tel:...|sip:...|sips:...", "headers": {...}, "mode": "blind|warm"}``
    (headers and mode optional; mode blind by default)."""
    mode = body.get("mode", "blind")
    if mode is None:
        mode = "blind"
    if mode not in TRANSFER_MODES:
        return InvalidMessage('transfer "mode" must be "blind" or "warm"')
    target = body.get("target")
    if not isinstance(target, str) or not target:
        return InvalidMessage('transfer without a string "target"')
    if len(target) > _MAX_TARGET_LENGTH:
        return InvalidMessage(f"transfer target longer than {_MAX_TARGET_LENGTH} characters")
    try:
        uri = Uri.parse(target)
    except (SipError, ValueError) as exc:
        return InvalidMessage(f"transfer target is not a valid URI: {exc}")
    if uri.scheme not in _TRANSFER_SCHEMES:
        return InvalidMessage("transfer target must be a tel:, sip: or sips: URI")
    headers = body.get("headers", {})
    if headers is None:
        headers = {}
    if not isinstance(headers, dict):
        return InvalidMessage('transfer "headers" must be an object')
    if len(headers) > _MAX_TRANSFER_HEADERS:
        return InvalidMessage(f"more than {_MAX_TRANSFER_HEADERS} transfer headers")
    for name, value in headers.items():
        if not grammar.is_token(name):
            return InvalidMessage(f"transfer header name {name[:64]!r} is not a SIP token")
        if name.lower() in _RESERVED_TRANSFER_HEADERS:
            return InvalidMessage(f"transfer header {name} is set by sipbridge, not the agent")
        if (
            not isinstance(value, str)
            or len(value) > _MAX_HEADER_VALUE
            or any(c in value for c in "\r\n\0")
        ):
            return InvalidMessage(f"transfer header {name} needs a one-line string value")
    return TransferRequested(target, dict(headers), "warm" if mode == "warm" else "blind")


def parse_send_dtmf(body: dict[str, Any]) -> SendDtmf | InvalidMessage:
    """``{"digits": "12#", "duration_ms": 100}`` (duration optional, 40-2000 ms)."""
    digits = body.get("digits")
    if not isinstance(digits, str) or not digits:
        return InvalidMessage('send_dtmf without a string "digits"')
    digits = digits.upper()
    if len(digits) > _MAX_DTMF_DIGITS or any(d not in DTMF_DIGITS for d in digits):
        return InvalidMessage(f"send_dtmf digits must be 1-{_MAX_DTMF_DIGITS} of 0-9, *, #, A-D")
    duration = body.get("duration_ms", DEFAULT_DTMF_DURATION_MS)
    if (
        not isinstance(duration, int)
        or isinstance(duration, bool)
        or not MIN_DTMF_DURATION_MS <= duration <= MAX_DTMF_DURATION_MS
    ):
        return InvalidMessage(
            f"send_dtmf duration_ms must be an integer from {MIN_DTMF_DURATION_MS}"
            f" to {MAX_DTMF_DURATION_MS}"
        )
    return SendDtmf(digits, duration)


def parse_transcript(body: dict[str, Any]) -> Transcript | InvalidMessage:
    """``{"role": "caller|agent", "text": "...", "final": true}`` (final optional)."""
    role = body.get("role")
    text = body.get("text")
    final = body.get("final", True)
    role_: Literal["caller", "agent"]
    if role == "caller":
        role_ = "caller"
    elif role == "agent":
        role_ = "agent"
    else:
        return InvalidMessage('transcript "role" must be "caller" or "agent"')
    if not isinstance(text, str):
        return InvalidMessage('transcript without a string "text"')
    if len(text) > _MAX_TRANSCRIPT:
        return InvalidMessage(f"transcript text longer than {_MAX_TRANSCRIPT} characters")
    if not isinstance(final, bool):
        return InvalidMessage('transcript "final" must be true or false')
    return Transcript(role_, text, final)


def parse_metadata(body: dict[str, Any]) -> Metadata | InvalidMessage:
    """``{"data": {...}}``."""
    data = body.get("data")
    if not isinstance(data, dict):
        return InvalidMessage('metadata "data" must be an object')
    return Metadata(data)
