"""What one agent may make sipbridge store, queue or do in one call (sans-I/O).

An agent URL can be compromised or buggy; these bounds keep it from hurting the server or
other calls. docs/security.md says what each one is for.

- :class:`AgentLimits`: the per-call caps on what an agent leaves in the call record
  (transcripts, metadata) and queues for the caller (DTMF). What exceeds a cap is dropped,
  reported once per kind per call and counted (:attr:`Session.dropped
  <sipbridge.agent.session.Session.dropped>`).
- :class:`MessageRate`: a token bucket on the messages of one agent connection. The caller
  asks :meth:`MessageRate.allow` with the current time for every message, audio included;
  past the bucket the call ends as ``agent_protocol_error``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DEFAULT_LIMITS", "LIMIT_KINDS", "AgentLimits", "MessageRate", "parse_agent_limits"]

#: The kinds of per-call caps, as in the ``kind`` label of
#: ``sipbridge_agent_messages_dropped_total``.
LIMIT_KINDS: Final = ("transcript", "metadata", "dtmf")


@dataclass(frozen=True, slots=True)
class AgentLimits:
    """Per-call caps (sizes in bytes of UTF-8 / compact JSON) and the message rate."""

    #: Transcript lines kept per call, their total text, and the largest single text.
    transcripts: int = 1000
    transcript_bytes: int = 1024 * 1024
    transcript_text_bytes: int = 8 * 1024
    #: Metadata messages kept per call, their total size, and the largest single one.
    metadata_messages: int = 100
    metadata_bytes: int = 256 * 1024
    metadata_message_bytes: int = 64 * 1024
    #: DTMF digits waiting to be played to the caller, and digits per call in all.
    dtmf_pending: int = 64
    dtmf_digits: int = 1000
    #: Messages (text or binary) per second on one agent connection, on average, and the
    #: burst allowed above that average. Audio at real time is 50 frames/s.
    message_rate: float = 500.0
    message_burst: int = 2000


DEFAULT_LIMITS: Final = AgentLimits()


def parse_agent_limits(text: str, base: AgentLimits = DEFAULT_LIMITS) -> AgentLimits:
    """``"transcripts=5000,message_rate=1000"``: ``base`` with those limits changed (the
    names of :class:`AgentLimits`' fields, positive numbers; empty text: ``base``).
    ValueError saying what is wrong otherwise."""
    fields = {field.name: field for field in dataclasses.fields(AgentLimits)}
    changes: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not equals or name not in fields:
            raise ValueError(
                f"{item.strip()!r}: expected NAME=VALUE, NAME one of {', '.join(fields)}"
            )
        try:
            number: int | float = (
                float(value) if fields[name].type in ("float", float) else int(value)
            )
        except ValueError:
            raise ValueError(f"{name}: {value.strip()!r} is not a number") from None
        if not number > 0:
            raise ValueError(f"{name}: must be positive")
        changes[name] = number
    return dataclasses.replace(base, **changes)


class MessageRate:
    """A token bucket: ``burst`` messages at once, ``rate`` per second on average.

    Call :meth:`allow` once per message with the current time (seconds, monotonic); it is
    O(1) and keeps two floats.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    def allow(self, now: float) -> bool:
        """Take one token; False when the bucket is empty (the message is over the rate)."""
        tokens = self._tokens + (now - self._last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True
