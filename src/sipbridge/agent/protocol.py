"""The native agent protocol, version 1 (sans-I/O).

One WebSocket per call. Text frames are JSON objects with a ``"type"``; binary frames are
raw audio, PCM signed 16-bit little-endian mono at the session's sample rate, in both
directions.

- We send ``start`` once the call is answered and ``stop`` when it ends.
- The agent may send ``{"type": "hangup"}`` to end the call; other types are reported once
  each as :class:`UnknownMessage` so newer agents keep working with this server.
- Agent audio may come in chunks of any even length and faster than real time; it is queued
  (up to ``cap_seconds``) and played out one frame per frame period.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from sipbridge.agent.playout import PlayoutBuffer

__all__ = [
    "PROTOCOL_VERSION",
    "AgentEvent",
    "AgentSession",
    "AudioDropped",
    "HangupRequested",
    "InvalidMessage",
    "UnknownMessage",
]

PROTOCOL_VERSION: Final = 1
# Bounds what a misbehaving agent can make us remember and log.
_MAX_UNKNOWN_TYPES: Final = 64
_MAX_TYPE_LENGTH: Final = 64


@dataclass(frozen=True)
class HangupRequested:
    """The agent asked to end the call."""


@dataclass(frozen=True)
class UnknownMessage:
    """The agent sent a message type this version does not know (reported once per type)."""

    type: str


@dataclass(frozen=True)
class InvalidMessage:
    """A frame from the agent was ignored; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class AudioDropped:
    """Agent audio was discarded because more than ``cap_seconds`` were queued."""

    bytes: int


AgentEvent = HangupRequested | UnknownMessage | InvalidMessage | AudioDropped


@lru_cache(maxsize=8)
def _silence(size: int) -> bytes:
    return bytes(size)


class AgentSession:
    """The agent side of one call.

    Send :meth:`start_message` when the call is answered; feed every text frame to
    :meth:`receive_text` and every binary frame to :meth:`receive_binary`, acting on the
    events they return; call :meth:`next_frame` every ``frame_ms`` and send what it returns
    as RTP; send :meth:`stop_message` when the call ends.
    """

    def __init__(
        self,
        call_id: str,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        cap_seconds: float = 60.0,
    ) -> None:
        if sample_rate <= 0 or frame_ms <= 0 or cap_seconds <= 0:
            raise ValueError("sample_rate, frame_ms and cap_seconds must be positive")
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        frame_bytes = 2 * (sample_rate * frame_ms // 1000)
        cap_bytes = max(2 * int(cap_seconds * sample_rate), frame_bytes)
        self._playout = PlayoutBuffer(frame_bytes, cap_bytes)
        self._silence = _silence(frame_bytes)
        self._unknown_types: set[str] = set()

    @property
    def frame_bytes(self) -> int:
        return self._playout.frame_bytes

    def start_message(
        self,
        *,
        from_: str | None,
        to: str | None,
        agent: str,
        sip_call_id: str,
        sip_headers: dict[str, str],
    ) -> str:
        """The ``start`` message, the first frame on the WebSocket."""
        return _dumps(
            {
                "type": "start",
                "version": PROTOCOL_VERSION,
                "call_id": self.call_id,
                "from": from_,
                "to": to,
                "agent": agent,
                "sip_call_id": sip_call_id,
                "sip_headers": sip_headers,
                "media_format": {
                    "encoding": "pcm_s16le",
                    "sample_rate": self.sample_rate,
                    "channels": 1,
                    "frame_ms": self.frame_ms,
                },
            }
        )

    def stop_message(self, reason: str) -> str:
        """The ``stop`` message, the last frame before we close the WebSocket."""
        return _dumps({"type": "stop", "reason": reason})

    def receive_text(self, text: str) -> list[AgentEvent]:
        """Interpret one text frame from the agent."""
        try:
            message = json.loads(text)
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and integers beyond the digit limit.
            return [InvalidMessage(f"invalid JSON: {exc}")]
        if not isinstance(message, dict):
            return [InvalidMessage("message is not a JSON object")]
        kind = message.get("type")
        if not isinstance(kind, str):
            return [InvalidMessage('message has no string "type"')]
        if kind == "hangup":
            return [HangupRequested()]
        kind = kind[:_MAX_TYPE_LENGTH]
        if kind in self._unknown_types or len(self._unknown_types) >= _MAX_UNKNOWN_TYPES:
            return []
        self._unknown_types.add(kind)
        return [UnknownMessage(kind)]

    def receive_binary(self, data: bytes) -> list[AgentEvent]:
        """Queue one binary frame of agent audio for playout."""
        if len(data) & 1:
            return [InvalidMessage(f"odd-length audio frame of {len(data)} bytes skipped")]
        dropped = self._playout.write(data)
        if dropped:
            return [AudioDropped(dropped)]
        return []

    def next_frame(self) -> bytes:
        """The next ``frame_ms`` of agent audio, or silence when none is ready."""
        frame = self._playout.next_frame()
        return self._silence if frame is None else frame

    def clear_audio(self) -> None:
        """Discard queued agent audio (for a barge-in or when the call ends)."""
        self._playout.clear()

    @property
    def has_audio(self) -> bool:
        return not self._playout.empty

    @property
    def pending_audio_ms(self) -> int:
        """Queued agent audio in milliseconds, rounded down."""
        return self._playout.queued_bytes * 500 // self.sample_rate


def _dumps(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
