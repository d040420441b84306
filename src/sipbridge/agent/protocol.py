"""The native agent protocol, version 1 (sans-I/O).

One WebSocket per call. Text frames are JSON objects with a ``"type"``; binary frames are
raw audio, PCM signed 16-bit little-endian mono at the session's sample rate, in both
directions. docs/agent-protocol.md has an example of every message.

- We send ``start`` first, ``dtmf`` per caller key press, ``mark`` answers,
  ``transfer_result`` and ``stop`` last; caller audio goes out as binary frames as is.
- The agent sends audio (binary, any even length, faster than real time is fine: it is
  queued up to ``cap_seconds`` and paced), ``mark``, ``clear``, ``hangup``, ``transfer``,
  ``transfer_complete``, ``transfer_cancel`` (a warm transfer's end), ``send_dtmf``,
  ``transcript`` and ``metadata``. Other types are reported once each as
  :class:`UnknownMessage` so newer agents keep working with this server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from sipbridge.agent.events import (
    AgentEvent,
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    Metadata,
    SendDtmf,
    Transcript,
    TransferCancel,
    TransferComplete,
    TransferRequested,
    UnknownMessage,
)
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits
from sipbridge.agent.session import (
    Session,
    parse_hangup,
    parse_metadata,
    parse_send_dtmf,
    parse_transcript,
    parse_transfer,
)

__all__ = [
    "PROTOCOL_VERSION",
    "AgentEvent",
    "AgentSession",
    "AudioCleared",
    "AudioDropped",
    "HangupRequested",
    "InvalidMessage",
    "Metadata",
    "SendDtmf",
    "Transcript",
    "TransferCancel",
    "TransferComplete",
    "TransferRequested",
    "UnknownMessage",
]

PROTOCOL_VERSION: Final = 1

_Parser = Callable[[dict[str, Any]], AgentEvent]
_REQUESTS: Final[dict[str, _Parser]] = {
    "hangup": parse_hangup,
    "transfer": parse_transfer,
    "transfer_complete": lambda _body: TransferComplete(),
    "transfer_cancel": lambda _body: TransferCancel(),
    "send_dtmf": parse_send_dtmf,
    "transcript": parse_transcript,
    "metadata": parse_metadata,
}


class AgentSession(Session):
    """The native protocol v1 side of one call; see :class:`Session` for what to call
    when. ``sample_rate`` is 8000 or 16000 (announced in ``start.media_format``)."""

    kind_key = "type"
    protocol = "native"

    def __init__(
        self,
        call_id: str,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        cap_seconds: float = 60.0,
        limits: AgentLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(
            call_id,
            sample_rate=sample_rate,
            frame_ms=frame_ms,
            cap_seconds=cap_seconds,
            limits=limits,
        )

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
        if resumed:
            self._reset_connection()
        return [
            _dumps(
                {
                    "type": "start",
                    "version": PROTOCOL_VERSION,
                    "call_id": self.call_id,
                    "from": from_,
                    "to": to,
                    "agent": agent,
                    "direction": direction,
                    "sip_call_id": sip_call_id,
                    "sip_headers": sip_headers,
                    "media_format": {
                        "encoding": "pcm_s16le",
                        "sample_rate": self.sample_rate,
                        "channels": 1,
                        "frame_ms": self.frame_ms,
                    },
                    "resumed": resumed,
                }
            )
        ]

    def start_message(
        self,
        *,
        from_: str | None,
        to: str | None,
        agent: str,
        sip_call_id: str,
        sip_headers: dict[str, str],
        resumed: bool = False,
    ) -> str:
        """The one ``start`` frame (kept for callers predating :meth:`start_messages`)."""
        [text] = self.start_messages(
            from_=from_,
            to=to,
            agent=agent,
            sip_call_id=sip_call_id,
            sip_headers=sip_headers,
            resumed=resumed,
        )
        return text

    def stop_message(self, reason: str) -> str:
        return _dumps({"type": "stop", "reason": reason})

    def caller_audio(self, pcm: bytes) -> bytes:
        """The caller frame itself: a binary frame of PCM16 (no copy)."""
        return pcm

    def caller_dtmf(self, digit: str, duration_ms: int) -> str:
        return _dumps({"type": "dtmf", "digit": digit, "duration_ms": duration_ms})

    # -- from the agent ---------------------------------------------------------------

    def receive_binary(self, data: bytes) -> list[AgentEvent]:
        """Queue one binary frame of agent audio for playout."""
        if len(data) & 1:
            return self._error("audio", f"odd-length audio frame of {len(data)} bytes skipped")
        return self._queue_audio(data)

    def _handle(self, kind: str, message: dict[str, Any]) -> list[AgentEvent]:
        if kind == "mark":
            return self._mark(message.get("name"))
        if kind == "clear":
            return self._clear()
        parse = _REQUESTS.get(kind)
        if parse is None:
            return self._unknown(kind)
        return [parse(message)]

    # -- wire format ------------------------------------------------------------------

    def _encode(self, message: dict[str, Any]) -> str:
        return _dumps(message)

    def _mark_message(self, name: str, *, played: bool) -> dict[str, Any]:
        return {"type": "mark", "name": name, "status": "played" if played else "cleared"}

    def _transfer_result_message(self, status: str, sip_code: int | None) -> dict[str, Any]:
        return {"type": "transfer_result", "status": status, "sip_code": sip_code}


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
