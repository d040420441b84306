"""An adaptive jitter buffer for the caller → agent direction (sans-I/O).

The agent wants a continuous PCM stream, as early as possible; the network delivers RTP
packets late, out of order, twice, or not at all. This buffer puts packets back in
sequence order and decides, for each gap, how long to wait before declaring the packet
lost so the caller conceals it.

Timing model. Every packet has an expected arrival time ``E(ts) = base + ts / clock``,
where ``base`` is the smallest transit time seen (arrival time minus RTP time, following
clock drift slowly upward). A missing packet is waited for until ``E(ts) + delay``; the
``delay`` is the buffer's depth and adapts to the interarrival jitter ``J`` of RFC 3550
§6.4.1 / A.8: ``delay = clamp(3 J, min_delay, max_delay)`` with ``max_delay`` at most
60 ms. A packet that is present and next in sequence is released at once, so on a clean
network the buffer holds nothing and the only wait is the caller's own 20 ms tick
(at most one frame).

What the caller does (the buffer never reads the clock):

- for each audio packet of the call: ``push(seq, timestamp, payload, now, ssrc=ssrc)``,
  then drain (below), so audio reaches the agent without waiting for the tick;
- every 20 ms tick: drain, so gaps past their deadline become :class:`Lost`;
- drain = ``while (event := buffer.pop(now)) is not None``: a :class:`Frame` is decoded
  (``decoder.decode(event.payload)``); a :class:`Lost` is concealed for
  ``event.duration`` RTP clock units, i.e. ``event.duration * audio_rate // clock``
  samples (``decoder.decode_fec(event.next_payload, samples)`` when ``next_payload`` is
  set and the codec has FEC, else ``decoder.conceal(samples)``). The PCM goes into the
  20 ms re-framer that feeds the agent. Packets of 10, 20, 30 or 40 ms all work: the
  buffer deals in packets and RTP time, the re-framer cuts 20 ms frames.

Also handled: 16-bit sequence wrap-around and 32-bit timestamp wrap-around (extended
counters, RFC 3550 A.1), sequence restarts (two consecutive packets far outside the
window, RFC 3550 A.1 ``MAX_DROPOUT``), timestamp jumps of more than half a second and SSRC
changes (both restart the buffer at the new packet), silence suppression (RFC 3551 §4.1:
a timestamp gap without a sequence gap is filled with :class:`Lost` ``count=0``), and a
delay step (the first packet found too late moves ``base`` to its transit time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["Frame", "JitterBuffer", "JitterEvent", "Lost"]

# RFC 3550 A.1: a jump this far ahead, or this far behind, is not reordering.
_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100
# A timestamp whose transit differs from the expected one by more than this is a jump of
# the sender's RTP clock, not network delay.
_JUMP_SECONDS: Final = 0.5
# How fast base follows transit upward (sender clock slower than ours, route change).
_BASE_CREEP: Final = 1 / 256


@dataclass(frozen=True, slots=True)
class Frame:
    """The next packet in order: decode ``payload``. ``duration`` is its length in RTP
    clock units as far as the buffer knows (the packet spacing)."""

    payload: bytes
    sequence: int
    timestamp: int
    duration: int


@dataclass(frozen=True, slots=True)
class Lost:
    """Conceal ``duration`` RTP clock units.

    ``count`` is how many packets (sequence numbers) were given up; 0 means nothing is
    missing by sequence number but no audio arrived in time (the caller paused its stream
    or everything is late) or the timestamps skipped ahead (silence suppression).
    ``next_payload`` is the packet right after the gap when it is already here, for
    codecs with forward error correction (Opus ``decode_fec``).
    """

    count: int
    duration: int
    next_payload: bytes | None = None


JitterEvent = Frame | Lost


def _extend(value: int, reference: int, bits: int) -> int:
    """The extended counter nearest ``reference`` whose low ``bits`` are ``value``."""
    modulus = 1 << bits
    diff = (value - reference) & (modulus - 1)
    if diff >= modulus >> 1:
        diff -= modulus
    return reference + diff


class JitterBuffer:
    """Reorders and times one incoming RTP stream; see the module docstring for the
    caller's duties. ``clock_rate`` is the RTP clock (8000 for G.711 and G.722, 48000 for
    Opus); ``frame_ms`` is the expected packet time until packets show the real one."""

    def __init__(
        self,
        clock_rate: int,
        *,
        frame_ms: int = 20,
        min_delay_ms: float = 5.0,
        max_delay_ms: float = 60.0,
    ) -> None:
        if clock_rate <= 0 or frame_ms <= 0:
            raise ValueError("clock_rate and frame_ms must be positive")
        if not 0 <= min_delay_ms <= max_delay_ms <= 60:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms <= 60")
        self.clock_rate: Final = clock_rate
        self._default_ptime = clock_rate * frame_ms // 1000
        self._min_delay = min_delay_ms / 1000
        self._max_delay = max_delay_ms / 1000
        # Statistics, for logs and tests (RFC 3550 receiver figures live in
        # sipbridge.media.quality).
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.restarts = 0
        self._ssrc: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._packets: dict[int, tuple[int, bytes]] = {}
        self._started = False
        self._next_seq = 0
        self._highest = 0
        self._last_out: int | None = None  # extended RTP time of the last Frame
        self._concealed_to = 0  # extended RTP time up to which Lost events reached
        self._ptime = self._default_ptime
        self._ptime_measured = False
        self._last_spacing = 0
        self._base = 0.0
        self._jitter = 0.0  # RFC 3550 A.8, in clock units
        self._last_transit: float | None = None
        self._last_seq: int | None = None
        self._last_ts = 0
        self._bad_seq: int | None = None
        self._delay = self._min_delay

    def _start(self, seq: int, timestamp: int, now: float, ssrc: int | None) -> None:
        if self._started:
            self.restarts += 1
        self._reset()
        self._ssrc = ssrc
        self._started = True
        self._next_seq = self._highest = seq
        self._concealed_to = timestamp
        self._base = now - timestamp / self.clock_rate

    # -- input ------------------------------------------------------------------

    def push(
        self, seq: int, timestamp: int, payload: bytes, now: float, *, ssrc: int | None = None
    ) -> None:
        """Add one received packet (``seq`` 16-bit, ``timestamp`` 32-bit, ``now`` the
        arrival time in seconds). Duplicates and packets too late to play are dropped and
        counted."""
        self._push(seq, timestamp, payload, now, ssrc, False)

    def push_next(
        self, seq: int, timestamp: int, payload: bytes, now: float, *, ssrc: int | None = None
    ) -> bytes | None:
        """Like :meth:`push`, but a packet that is next in order, with nothing queued
        and no timestamp gap before it, is released at once: its payload is returned
        (decode it as a :class:`Frame`; :meth:`pop` would return nothing more now).
        The common case on a clean network costs no dict entry and no event object."""
        return self._push(seq, timestamp, payload, now, ssrc, True)

    def _push(
        self,
        seq: int,
        timestamp: int,
        payload: bytes,
        now: float,
        ssrc: int | None,
        release: bool,
    ) -> bytes | None:
        if not self._started or (ssrc is not None and ssrc != self._ssrc):
            # RFC 3550 §8.2: a new SSRC is a new stream; start over with it.
            self._start(seq, timestamp, now, ssrc)
        ext_seq = _extend(seq, self._highest, 16)
        if ext_seq - self._highest > _MAX_DROPOUT or self._highest - ext_seq > _MAX_MISORDER:
            # RFC 3550 A.1: a big jump is believed only when the next packet follows it.
            if self._bad_seq is not None and seq == self._bad_seq:
                self._start(seq, timestamp, now, ssrc)
                ext_seq = seq
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                self.late += 1
                return None
        self._bad_seq = None
        ext_ts = _extend(timestamp, self._cursor, 32)
        transit = now - ext_ts / self.clock_rate
        if abs(transit - self._base) > _JUMP_SECONDS + self._max_delay:
            self._start(seq, timestamp, now, ssrc)
            ext_seq, ext_ts, transit = seq, timestamp, now - timestamp / self.clock_rate
        self.received += 1
        self._update_timing(ext_seq, ext_ts, transit)
        if ext_seq > self._highest:
            self._highest = ext_seq
        if ext_seq < self._next_seq or ext_ts + self._ptime <= self._concealed_to:
            # Its turn is over (already played, declared lost or concealed): too late.
            # RFC 3550 §6.4.1 transit grew: wait longer from now on.
            if ext_seq not in self._packets:
                self.late += 1
            if transit > self._base:
                self._base = transit
            return None
        packets = self._packets
        if (
            release
            and not packets
            and ext_seq == self._next_seq
            and ext_ts - self._cursor <= self._ptime // 2
        ):
            # What pop() would do with it at once: the next Frame.
            self._next_seq = ext_seq + 1
            self._last_out = ext_ts
            return payload
        if ext_seq in packets:
            self.duplicates += 1
            return None
        packets[ext_seq] = (ext_ts, payload)
        return None

    def _update_timing(self, ext_seq: int, ext_ts: int, transit: float) -> None:
        # RFC 3550 A.8: J += (|D| - J) / 16, D the change in transit, in clock units.
        if self._last_transit is not None:
            d = abs(transit - self._last_transit) * self.clock_rate
            self._jitter += (d - self._jitter) / 16
        self._last_transit = transit
        if transit < self._base:
            self._base = transit
        else:
            self._base += (transit - self._base) * _BASE_CREEP
        if self._last_seq is not None and ext_seq == self._last_seq + 1:
            # The packet time is the timestamp spacing of consecutive packets, up to
            # 120 ms (RFC 6716 §3.2.1); the first spacing is taken at once, later changes
            # only when two spacings agree, so one silence gap does not count.
            spacing = ext_ts - self._last_ts
            if 0 < spacing <= self.clock_rate * 3 // 25 and (
                spacing == self._last_spacing or not self._ptime_measured
            ):
                self._ptime = spacing
                self._ptime_measured = True
            self._last_spacing = spacing
        self._last_seq, self._last_ts = ext_seq, ext_ts
        self._delay = min(self._max_delay, max(self._min_delay, 3 * self._jitter / self.clock_rate))

    # -- output -----------------------------------------------------------------

    @property
    def _cursor(self) -> int:
        """Extended RTP time where the next audio starts: the end of the last frame (by
        the packet time as now measured) or of the last concealment."""
        if self._last_out is None:
            return self._concealed_to
        return max(self._last_out + self._ptime, self._concealed_to)

    def pop(self, now: float) -> JitterEvent | None:
        """The next event, or None when the caller should wait for more packets (or the
        next tick). Call it until it returns None."""
        if not self._started:
            return None
        packets = self._packets
        while True:
            entry = packets.get(self._next_seq)
            if entry is None:
                break
            ts, payload = entry
            cursor = self._cursor
            gap = ts - cursor
            if gap > self._ptime // 2:
                # RFC 3551 §4.1: a timestamp gap without a sequence gap is silence
                # suppression; keep the agent's time line continuous.
                self._concealed_to = ts
                return Lost(0, gap, payload)
            del packets[self._next_seq]
            seq = self._next_seq
            self._next_seq += 1
            if ts + self._ptime <= self._concealed_to:
                self.late += 1  # its time was concealed already
                continue
            self._last_out = ts
            return Frame(payload, seq & 0xFFFF, ts & 0xFFFFFFFF, self._ptime)
        cursor = self._cursor
        first = min(packets) if packets else None
        if first is not None:
            first_ts, first_payload = packets[first]
            uncovered = first_ts - cursor
            if uncovered <= self._ptime // 2:
                # The missing packets' time was concealed already (an underrun while
                # they were late): give their numbers up without concealing twice.
                self.lost += first - self._next_seq
                self._next_seq = first
                return self.pop(now)
        deadline = self._base + cursor / self.clock_rate + self._delay
        if now < deadline:
            return None
        if first is None:
            # Underrun: nothing to play and nothing known missing. Conceal one packet
            # time, keeping the sequence number open (the stream may only be paused).
            self._concealed_to = cursor + self._ptime
            return Lost(0, self._ptime)
        run = first - self._next_seq
        due = 1 + int((now - deadline) * self.clock_rate / self._ptime)
        count = min(due, run)
        next_payload: bytes | None = None
        duration = min(count * self._ptime, uncovered)
        if count == run:
            # The whole gap is due: conceal exactly up to the next packet (its spacing
            # may differ from the packet time), which may carry FEC for the last one.
            duration = uncovered if uncovered <= 2 * run * self._ptime else duration
            next_payload = first_payload
        self._next_seq += count
        self.lost += count
        self._concealed_to = cursor + duration
        return Lost(count, duration, next_payload)

    # -- introspection ----------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`pop` will next produce a :class:`Lost` if nothing arrives (for a
        runtime that arms a timer instead of, or besides, the 20 ms tick)."""
        if not self._started:
            return None
        return self._base + self._cursor / self.clock_rate + self._delay

    @property
    def delay_ms(self) -> float:
        """The current wait for a missing packet (the adaptive depth), in ms."""
        return self._delay * 1000

    @property
    def jitter_ms(self) -> float:
        """The RFC 3550 interarrival jitter estimate, in ms."""
        return self._jitter * 1000 / self.clock_rate

    @property
    def ptime(self) -> int:
        """The packet time in RTP clock units, as measured from the packets."""
        return self._ptime

    @property
    def queued(self) -> int:
        """Packets waiting in the buffer."""
        return len(self._packets)
