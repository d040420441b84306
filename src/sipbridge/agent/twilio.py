"""Twilio Media Streams mode (sans-I/O): the agent sees what Twilio would send it.

An agent written for a bidirectional Twilio Media Stream (``<Connect><Stream>``), such as
a Pipecat pipeline with ``TwilioFrameSerializer``, works unchanged. Every frame is a JSON
text frame with an ``"event"``; audio is base64 G.711 μ-law, 8000 Hz, mono, both ways.

We send, as Twilio does (https://www.twilio.com/docs/voice/media-streams/websocket-messages):

- ``connected``, then ``start`` (``accountSid``, ``streamSid``, ``callSid``, ``tracks``,
  ``mediaFormat``, ``customParameters``: from, to and the INVITE's X- headers);
- ``media`` every 20 ms with ``track`` "inbound", ``chunk`` (from "1"), ``timestamp``
  (milliseconds of stream time, as a string) and the payload;
- ``dtmf`` per key press, ``mark`` when the audio before an agent's mark has played (or
  was cleared), ``stop`` last.

Every message but ``connected`` carries ``sequenceNumber``, a string counting from "1"
(``start``) across all we send on the connection, and ``streamSid``.

The agent sends ``media`` (any size; queued and paced), ``mark``, ``clear``, and the
sipbridge extension events ``hangup``, ``transfer``, ``send_dtmf``, ``transcript`` and
``metadata``, whose fields sit in an object named like the event, as Twilio nests them:
``{"event": "transfer", "transfer": {"target": "tel:+15551234567"}}``. We answer
``transfer`` with ``{"event": "transfer_result", ..., "transfer_result": {...}}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from sipbridge.agent.events import AgentEvent, InvalidMessage
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits
from sipbridge.agent.session import (
    Session,
    parse_hangup,
    parse_metadata,
    parse_send_dtmf,
    parse_transcript,
    parse_transfer,
)
from sipbridge.codecs.g711 import ulaw_decode, ulaw_encode

__all__ = ["SAMPLE_RATE", "TwilioSession", "derive_sid"]

SAMPLE_RATE: Final = 8000
_FRAME_MS: Final = 20

_Parser = Callable[[dict[str, Any]], AgentEvent]
# Extension events, the fields nested under the event's name.
_EXTENSIONS: Final[dict[str, _Parser]] = {
    "hangup": parse_hangup,
    "transfer": parse_transfer,
    "send_dtmf": parse_send_dtmf,
    "transcript": parse_transcript,
    "metadata": parse_metadata,
}
# Events whose object may be left out (every field has a default).
_BODY_OPTIONAL: Final = frozenset({"hangup"})


def derive_sid(prefix: str, call_id: str) -> str:
    """A Twilio-shaped SID (two letters, 32 lower-case hex digits) derived from the call
    id, so the same call always gets the same SIDs."""
    digest = hashlib.sha256(f"{prefix}:{call_id}".encode()).hexdigest()
    return prefix + digest[:32]


class TwilioSession(Session):
    """The Twilio Media Streams side of one call; see :class:`Session` for what to call
    when. Audio to and from the caller is PCM16 at 8000 Hz whatever the RTP codec: the
    runtime converts to and from :attr:`sample_rate` like for a native agent.

    SIDs not given are derived from ``call_id`` (``AC``/``CA``/``MZ`` + 32 hex digits);
    ``custom_parameters`` (per agent) are sent in ``start.customParameters`` before the
    call's own ``from``, ``to`` and X- headers, which win on a clash.
    """

    kind_key = "event"
    protocol = "twilio"

    def __init__(
        self,
        call_id: str,
        *,
        account_sid: str | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        cap_seconds: float = 60.0,
        limits: AgentLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(
            call_id,
            sample_rate=SAMPLE_RATE,
            frame_ms=_FRAME_MS,
            cap_seconds=cap_seconds,
            limits=limits,
        )
        self.account_sid = account_sid or derive_sid("AC", call_id)
        self.stream_sid = stream_sid or derive_sid("MZ", call_id)
        self.call_sid = call_sid or derive_sid("CA", call_id)
        self.custom_parameters = dict(custom_parameters or {})
        self._sequence = 0
        self._chunk = 0
        self._samples = 0  # caller samples sent: the stream clock of ``timestamp``
        # The hot path formats media messages by hand; the SID is quoted once here.
        self._sid_json = json.dumps(self.stream_sid)

    # -- to the agent -----------------------------------------------------------------

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
        """``connected`` and ``start``. A resumed stream numbers its messages from "1"
        again (a new connection) but keeps its SIDs, chunk count and clock, and says
        ``"resumed": "true"`` in ``customParameters``; an outbound call says
        ``"direction": "outbound"`` there."""
        if resumed:
            self._reset_connection()
        self._sequence = 0
        parameters = dict(self.custom_parameters)
        # Both spellings: Twilio's TwiML examples (and Pipecat's parser) name them
        # from_number/to_number, others from/to.
        if from_ is not None:
            parameters["from"] = parameters["from_number"] = from_
        if to is not None:
            parameters["to"] = parameters["to_number"] = to
        parameters.update(sip_headers)
        if direction != "inbound":
            # Twilio's start has no direction field; a stream's own facts beyond its
            # fixed fields travel in customParameters (inbound calls leave it out, as
            # before).
            parameters["direction"] = direction
        if resumed:
            parameters["resumed"] = "true"
        connected = _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = _dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_sequence(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": SAMPLE_RATE,
                        "channels": 1,
                    },
                    "customParameters": parameters,
                },
                "streamSid": self.stream_sid,
            }
        )
        return [connected, start]

    def stop_message(self, reason: str) -> str:
        """Twilio's ``stop`` (it has no reason field; ``reason`` is not sent)."""
        return _dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    def caller_audio(self, pcm: bytes) -> str:
        """A ``media`` message carrying ``pcm`` (PCM16 at 8 kHz) as base64 μ-law."""
        self._sequence += 1
        self._chunk += 1
        timestamp = self._samples * 1000 // SAMPLE_RATE
        self._samples += len(pcm) >> 1
        payload = base64.b64encode(ulaw_encode(pcm)).decode("ascii")
        return (
            f'{{"event":"media","sequenceNumber":"{self._sequence}","media":'
            f'{{"track":"inbound","chunk":"{self._chunk}","timestamp":"{timestamp}",'
            f'"payload":"{payload}"}},"streamSid":{self._sid_json}}}'
        )

    def caller_dtmf(self, digit: str, duration_ms: int) -> str:
        """A ``dtmf`` message (Twilio reports no duration)."""
        return _dumps(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": self._next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    # -- from the agent ---------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[AgentEvent]:
        return self._error("binary", "binary frame in Twilio mode (audio goes in media events)")

    def _handle(self, kind: str, message: dict[str, Any]) -> list[AgentEvent]:
        if kind == "media":
            return self._media(message.get("media"))
        if kind == "mark":
            mark = message.get("mark")
            if not isinstance(mark, dict):
                return [InvalidMessage('mark without a "mark" object')]
            return self._mark(mark.get("name"))
        if kind == "clear":
            return self._clear()
        parse = _EXTENSIONS.get(kind)
        if parse is None:
            return self._unknown(kind)
        body = message.get(kind)
        if body is None and kind in _BODY_OPTIONAL:
            body = {}
        if not isinstance(body, dict):
            return [InvalidMessage(f'{kind} without a "{kind}" object')]
        return [parse(body)]

    def _media(self, media: object) -> list[AgentEvent]:
        if not isinstance(media, dict):
            return [InvalidMessage('media without a "media" object')]
        payload = media.get("payload")
        if not isinstance(payload, str):
            return [InvalidMessage('media without a string "payload"')]
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            return [InvalidMessage(f"media payload is not base64: {exc}")]
        if not ulaw:
            return []
        return self._queue_audio(ulaw_decode(ulaw))

    # -- wire format ------------------------------------------------------------------

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def _encode(self, message: dict[str, Any]) -> str:
        # Numbered as it leaves the outbox, so numbers follow the order frames are sent.
        event = message.pop("event")
        return _dumps(
            {
                "event": event,
                "sequenceNumber": self._next_sequence(),
                "streamSid": self.stream_sid,
                **message,
            }
        )

    def _mark_message(self, name: str, *, played: bool) -> dict[str, Any]:
        # Twilio answers a mark the same way whether its audio played or was cleared.
        return {"event": "mark", "mark": {"name": name}}

    def _add_transfer_fields(self, message: dict[str, Any], fields: dict[str, str]) -> None:
        message["transfer_result"].update(fields)

    def _transfer_result_message(self, status: str, sip_code: int | None) -> dict[str, Any]:
        return {
            "event": "transfer_result",
            "transfer_result": {"status": status, "sip_code": sip_code},
        }


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
