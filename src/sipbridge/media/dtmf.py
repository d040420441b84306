"""DTMF: RFC 4733 telephone-events both ways, and SIP INFO bodies.

An RFC 4733 §2.3 event payload is four octets: event code, E(nd) bit, R bit and 6-bit
volume, 16-bit duration in RTP clock units. All packets of one key press carry the
timestamp of its start (§2.5.1.1); the duration grows with each update (§2.5.1.2); the
end is sent three times (§2.5.1.4). The marker bit flags the first packet (§2.5.1.1) but
carriers drop or repeat it, so the receiver keys events on the timestamp instead.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DigitPressed",
    "DtmfError",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "encode_event",
    "parse_dtmf_info",
    "parse_event",
]

# RFC 4733 §3.2 table 3: events 0-9, *, #, A-D.
DIGITS: Final = "0123456789*#ABCD"
_EVENT: Final = struct.Struct("!BBH")
_END: Final = 0x80
_MAX_DURATION: Final = 0xFFFF


class DtmfError(ValueError):
    """A malformed telephone-event payload or SIP INFO DTMF body."""


@dataclass(frozen=True, slots=True)
class DigitPressed:
    """One key press, reported once: ``{"type":"dtmf","digit":...,"duration_ms":...}``."""

    digit: str
    duration_ms: int


def parse_event(payload: bytes) -> tuple[int, bool, int, int]:
    """``(event, end, volume, duration)`` of an RFC 4733 §2.3 payload; raises DtmfError.
    Only the first event block counts when a packet carries several (§2.5.1.5)."""
    if len(payload) < 4:
        raise DtmfError(f"telephone-event payload of {len(payload)} bytes, need 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    return event, bool(flags & _END), flags & 0x3F, duration


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """An RFC 4733 §2.3 payload (R bit zero); raises DtmfError on out-of-range fields."""
    if not 0 <= event <= 255 or not 0 <= volume <= 63 or not 0 <= duration <= _MAX_DURATION:
        raise DtmfError("telephone-event field out of range")
    return _EVENT.pack(event, (_END if end else 0) | volume, duration)


class DtmfReceiver:
    """Turns the caller's telephone-event packets into one :class:`DigitPressed` per key.

    For each packet of the telephone-event payload type call
    ``receive(payload, timestamp, marker, now)``; call ``poll(now)`` on the 20 ms tick (or
    at :meth:`get_timer`). Both return the digits completed. A press is reported on its
    first end packet (later end copies are ignored), or — when every end packet was lost —
    on the next event with a new timestamp or ``timeout`` seconds after its last packet
    (RFC 4733 §2.5.2.2: the receiver ends an event whose end never came).
    """

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.3) -> None:
        self.clock_rate: Final = clock_rate
        self.timeout: Final = timeout
        self._timestamp: int | None = None  # start time of the current event
        self._event = 0
        self._duration = 0
        self._base = 0  # duration carried over from earlier segments of a long event
        self._last_packet = 0.0
        self._reported = True
        # Timestamps of recently finished events: a late copy of their end is ignored.
        self._finished: deque[int] = deque(maxlen=8)

    def _finish(self) -> list[DigitPressed]:
        if self._reported or self._timestamp is None:
            return []
        self._reported = True
        self._finished.append(self._timestamp)
        if self._event >= len(DIGITS):
            return []  # flash (16) and other events are not key presses
        total = self._base + self._duration
        return [DigitPressed(DIGITS[self._event], total * 1000 // self.clock_rate)]

    def receive(
        self, payload: bytes, timestamp: int, marker: bool, now: float
    ) -> list[DigitPressed]:
        """One telephone-event packet; raises DtmfError when the payload is malformed."""
        event, end, _volume, duration = parse_event(payload)
        out: list[DigitPressed] = []
        if timestamp != self._timestamp:
            if timestamp in self._finished:
                return out  # a retransmitted end of an event already reported
            current = self._timestamp
            if (
                current is not None
                and not self._reported
                and event == self._event
                and timestamp == (current + self._duration) & 0xFFFFFFFF
                and self._duration >= _MAX_DURATION - self.clock_rate // 10
            ):
                # RFC 4733 §2.5.1.3: a long event continues in a new segment whose
                # timestamp is where the previous one ended.
                self._base += self._duration
                self._timestamp, self._duration = timestamp, duration
            else:
                out += self._finish()
                self._timestamp, self._event = timestamp, event
                self._duration, self._base = duration, 0
                self._reported = False
        elif not self._reported:
            self._duration = max(self._duration, duration)
        self._last_packet = now
        if end:
            out += self._finish()
        return out

    def poll(self, now: float) -> list[DigitPressed]:
        """Ends an event whose end packets were all lost, ``timeout`` after its last packet."""
        if not self._reported and now - self._last_packet >= self.timeout:
            return self._finish()
        return []

    @property
    def pending(self) -> bool:
        """An event has started and not been reported yet (:meth:`poll` may end it)."""
        return not self._reported

    def get_timer(self) -> float | None:
        """When :meth:`poll` may report something, or None."""
        return None if self._reported else self._last_packet + self.timeout


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event packet to send: RTP ``timestamp`` (the event's start), the
    ``marker`` bit, and the four-octet ``payload``; sequence number and SSRC are those of
    the audio stream (RFC 4733 §2.2)."""

    payload: bytes
    marker: bool
    timestamp: int


@dataclass
class _Pending:
    event: int
    duration: int  # clock units
    pause: int  # clock units of audio after it


class DtmfSender:
    """Sends digits as RFC 4733 events in step with the 20 ms audio clock.

    :meth:`queue` adds digits. On every audio tick call ``tick(timestamp)`` with the RTP
    timestamp the audio packet of this tick would carry: while it returns None, send audio
    as usual; otherwise send the packets it returns (possibly none) *instead of* audio,
    with the telephone-event payload type and the next sequence numbers, and let the audio
    timestamp advance by one frame as for a packet sent (RFC 4733 §2.5.1.1: events replace
    the audio of the same period).

    Per event: a first packet with the marker bit and one frame of duration, an update
    each time the duration passes a multiple of ``update_ms`` (§2.5.1.2 suggests 50 ms),
    then three end packets with the final duration on three consecutive ticks (§2.5.1.4),
    then ``pause_ms`` of audio before the next digit.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        frame_ms: int = 20,
        volume: int = 10,
        update_ms: int = 50,
    ) -> None:
        if not 0 <= volume <= 63:
            raise ValueError("volume is 0-63 (-dBm0)")
        self.clock_rate: Final = clock_rate
        self._frame = clock_rate * frame_ms // 1000
        self._update = clock_rate * update_ms // 1000
        self._volume = volume
        self._queue: deque[_Pending] = deque()
        self._current: _Pending | None = None
        self._start = 0
        self._elapsed = 0  # clock units of the event covered so far
        self._reported = 0
        self._ends_sent = 0
        self._pause_left = 0

    def queue(self, digits: str, duration_ms: int = 100, pause_ms: int = 60) -> None:
        """Add ``digits`` (0-9, *, #, A-D) at ``duration_ms`` each; raises DtmfError on an
        unknown digit or a duration that does not fit the 16-bit field."""
        duration = self.clock_rate * duration_ms // 1000
        if not self._frame <= duration <= _MAX_DURATION:
            raise DtmfError(f"DTMF duration {duration_ms} ms out of range")
        pause = self.clock_rate * max(pause_ms, 0) // 1000
        events = []
        for digit in digits.upper():
            index = DIGITS.find(digit)
            if index < 0:
                raise DtmfError(f"not a DTMF digit: {digit!r}")
            events.append(_Pending(index, duration, pause))
        self._queue.extend(events)

    @property
    def pending(self) -> int:
        """Digits waiting or being sent."""
        return len(self._queue) + (self._current is not None)

    @property
    def active(self) -> bool:
        """Whether digits are being sent or waiting."""
        return self._current is not None or bool(self._queue) or self._pause_left > 0

    def tick(self, timestamp: int) -> list[DtmfPacket] | None:
        """Packets for this 20 ms tick, or None to send audio instead."""
        if self._current is None:
            if self._pause_left > 0:
                self._pause_left -= self._frame
                return None
            if not self._queue:
                return None
            self._current = self._queue.popleft()
            self._start = timestamp & 0xFFFFFFFF
            self._elapsed = 0
            self._reported = 0
            self._ends_sent = 0
        event = self._current
        packets: list[DtmfPacket] = []
        if self._elapsed < event.duration:
            self._elapsed = min(self._elapsed + self._frame, event.duration)
            first = self._reported == 0
            if self._elapsed >= event.duration:
                pass  # the end packets below carry it
            elif first or self._elapsed // self._update > self._reported // self._update:
                packets.append(
                    DtmfPacket(
                        encode_event(event.event, False, self._volume, self._elapsed),
                        first,
                        self._start,
                    )
                )
                self._reported = self._elapsed
                return packets
        if self._elapsed >= event.duration:
            packets.append(
                DtmfPacket(
                    encode_event(event.event, True, self._volume, event.duration),
                    self._reported == 0 and self._ends_sent == 0,
                    self._start,
                )
            )
            self._ends_sent += 1
            if self._ends_sent == 3:
                self._current = None
                self._pause_left = event.pause
        return packets


# SIP INFO bodies. application/dtmf-relay (de facto, Cisco): "Signal=5\r\nDuration=160";
# application/dtmf (RFC 2976 era practice): the digit alone.
_RELAY_LINE: Final = re.compile(r"^\s*(signal|duration)\s*=\s*(\S+)\s*$", re.IGNORECASE)
DEFAULT_INFO_DURATION_MS: Final = 250


def parse_dtmf_info(content_type: str, body: bytes | str) -> DigitPressed | None:
    """The key press in a SIP INFO body, None when the content type is not DTMF; raises
    DtmfError when it is but the body is malformed. ``Duration`` is in milliseconds."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("application/dtmf-relay", "application/dtmf"):
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    signal: str | None = None
    duration = DEFAULT_INFO_DURATION_MS
    if kind == "application/dtmf":
        signal = text.strip()
    else:
        for line in text.splitlines():
            if not line.strip():
                continue
            match = _RELAY_LINE.match(line)
            if match is None:
                continue  # tolerate unknown lines
            key, value = match.group(1).lower(), match.group(2)
            if key == "signal":
                signal = value
            else:
                try:
                    duration = int(value)
                except ValueError:
                    raise DtmfError(f"bad Duration {value!r}") from None
                if duration < 0:
                    raise DtmfError(f"bad Duration {value!r}")
    if signal is None:
        raise DtmfError("no Signal in the DTMF body")
    digit = _info_digit(signal)
    return DigitPressed(digit, duration)


def _info_digit(signal: str) -> str:
    value = signal.strip().upper()
    if len(value) == 1 and value in DIGITS:
        return value
    if value.isdigit() and int(value) < len(DIGITS):
        return DIGITS[int(value)]  # some send the event code: 10 for *, 11 for #
    raise DtmfError(f"not a DTMF signal: {signal!r}")
