"""RTP and RTCP sockets for calls, and the one media clock all calls share.

The media logic is the sans-I/O :class:`~sipbridge.media.session.MediaSession`; this
module only feeds it:

- :class:`RtpEndpoint` is one call's RTP socket (and its RTCP companion on port + 1). Per
  caller packet (hot path) it hands the datagram and ``loop.time()`` to the session and the
  PCM that comes back to the agent link, at once.
- :class:`MediaClock` is one timer for every call instead of one per call: calls are kept
  in slots of :data:`SLOT_SECONDS` on an absolute time grid, and one ``loop.call_at`` wakes
  up for the earliest slot and ticks every call in it (agent frame → RTP packet). A call
  stays in its phase (slot + 20 ms, no drift); at the start of an agent talkspurt it sends
  the first frame at once and moves its phase there (see :meth:`RtpEndpoint.agent_audio`);
  while it sends silence it waits for its RTP timeline to catch up, so it never runs ahead
  of real time (see ``media/session.py``).
- After a stall of the loop (a wake-up that runs late by whole frames), each call sends
  the frames that are due back to back, at most :data:`CATCH_UP_FRAMES`, and skips the
  rest in RTP time, dropping the agent audio of the skipped time: the caller's jitter
  buffer gets what it can still play and the stream is back on time at once, with no
  delay left behind.
- Every wake-up reports its lag (how late it ran) to the server's load monitor
  (``media/overload.py``), which decides when new calls are refused with 503.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import random
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from sipbridge.media.dtmf import DigitPressed
from sipbridge.media.session import FRAME_SECONDS, MediaQuality, MediaSession, MediaStats

if TYPE_CHECKING:
    from sipbridge.runtime.recordings import CallRecording

log = logging.getLogger("sipbridge.media")

Address = tuple[str, int]
# The media clock's grid: a call's sends fall on multiples of this.
SLOT_SECONDS = 0.002
_SLOTS_PER_FRAME = round(FRAME_SECONDS / SLOT_SECONDS)
# After a stall, at most this many frames due are sent back to back; the rest is skipped.
CATCH_UP_FRAMES = 5
# At the start of an agent talkspurt the next frame is due one frame period plus this
# margin after the first: a real-time agent's next frame has arrived by then.
TALKSPURT_MARGIN_SLOTS = 1
# Mid-talkspurt, an agent frame that is not there yet is waited for this many slots (8 ms)
# before silence goes out; when it comes, the call's phase moves that much later.
GRACE_SLOTS = 4


class PortsExhausted(Exception):
    """No free even RTP port (with its RTCP port) is left in the configured range."""


class RtpPortAllocator:
    """Hands out even RTP ports from ``[low, high]`` (RFC 3550 §11: RTP even, RTCP odd).

    A port is reserved until :meth:`release`. Ports the OS refuses to bind
    (used by another program) are skipped when the socket is opened.
    """

    def __init__(self, low: int, high: int) -> None:
        first = low + (low % 2)
        self._free = list(range(first, high, 2))
        random.shuffle(self._free)
        self._used: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        if not self._free:
            raise PortsExhausted("no free RTP port in the configured range")
        port = self._free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.insert(0, port)


class _RtcpSocket(asyncio.DatagramProtocol):
    def __init__(self, owner: RtpEndpoint) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.owner.rtcp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's RTP socket (and its RTCP companion) around its :class:`MediaSession`.

    ``on_audio`` gets caller PCM16 at the agent's rate (any length, in order, gaps
    concealed); ``on_dtmf`` gets each caller key press once; ``next_frame`` returns the
    agent's next 20 ms of PCM16, or ``None`` when it has none (silence is sent), and
    ``frame_ready`` says whether a whole frame is waiting. :meth:`start` puts the call on
    the shared :class:`MediaClock`. ``recording`` (set by the call when it is recorded)
    gets the same caller PCM and each agent frame sent, with the time
    (runtime/recordings.py: an append, the writing is elsewhere).
    """

    def __init__(
        self,
        session: MediaSession,
        *,
        on_audio: Callable[[bytes], None],
        next_frame: Callable[[], bytes | None],
        frame_ready: Callable[[], bool] = lambda: False,
        on_dtmf: Callable[[DigitPressed], None] | None = None,
    ) -> None:
        self.session = session
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._next_frame = next_frame
        self._frame_ready = frame_ready
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp: _RtcpSocket | None = None
        self._clock: MediaClock | None = None
        self._time: Callable[[], float] = time.monotonic
        self.clock_slot: int | None = None  # the clock's slot this call is due in
        self._grace = 0  # slots waited for a late agent frame
        self.frames_skipped = 0  # frame periods skipped after stalls
        self.recording: CallRecording | None = None

    @property
    def stats(self) -> MediaStats:
        return self.session.stats

    def quality(self) -> MediaQuality:
        return self.session.quality()

    # -- socket callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        # One time base from the first packet on (early media before the answer too).
        self._time = asyncio.get_running_loop().time

    def datagram_received(self, data: bytes, addr: Address) -> None:  # hot path
        session = self.session
        now = self._time()
        pcm = session.receive_rtp(data, addr, now)
        if pcm:
            self._on_audio(pcm)
            if self.recording is not None:
                self.recording.caller(now, pcm)
        if session.digits:
            self._deliver_digits()
        clock = self._clock
        if clock is not None and now >= clock.next_at:
            clock.poke(now)

    def release(self, since: float) -> None:
        """The answer to our offer is applied: play what :meth:`MediaSession.hold` kept
        from ``since`` on (see MediaSession.release)."""
        pcm = self.session.release(since)
        if pcm:
            self._on_audio(pcm)
            if self.recording is not None:
                self.recording.caller(self._time(), pcm)
        if self.session.digits:
            self._deliver_digits()

    def _deliver_digits(self) -> None:
        session = self.session
        digits, session.digits = session.digits, []
        if self._on_dtmf is not None:
            for digit in digits:
                self._on_dtmf(digit)

    def rtcp_received(self, data: bytes, addr: Address) -> None:
        self.session.receive_rtcp(data, addr, self._time(), time.time())

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable before the caller's media starts is normal.
        pass

    def rewire(
        self,
        *,
        on_audio: Callable[[bytes], None],
        next_frame: Callable[[], bytes | None],
        frame_ready: Callable[[], bool],
        on_dtmf: Callable[[DigitPressed], None] | None = None,
    ) -> None:
        """Send the received PCM and take the PCM to send elsewhere from now on: a bridged
        transfer (runtime/bridge.py) joins the caller to the target's leg this way."""
        self._on_audio = on_audio
        self._next_frame = next_frame
        self._frame_ready = frame_ready
        self._on_dtmf = on_dtmf

    def attach_rtcp(self, rtcp: _RtcpSocket) -> None:
        self._rtcp = rtcp

    # -- pacing -------------------------------------------------------------

    def start(self, clock: MediaClock) -> None:
        """Media begins: the first frame goes out at the clock's next slot, then one
        every 20 ms."""
        self._clock = clock
        self._time = clock.time
        now = clock.time()
        self.session.start(now)
        clock.add(self, clock.slot_after(now))

    def agent_audio(self) -> None:
        """The agent just sent a message. Runs the clock if it is due; then, if the
        caller hears our silence and a whole frame of agent audio is waiting, it goes out
        now as the start of a talkspurt, and the 20 ms pace restarts from it: the agent's
        first words do not wait for the next tick."""
        session = self.session
        clock = self._clock
        if clock is None:
            return
        now = clock.time()
        if now >= clock.next_at:
            clock.poke(now)
        if (
            session.talking
            or not session.sending
            or session.sending_dtmf
            or not self._frame_ready()
        ):
            return
        if session.timeline - now > FRAME_SECONDS:
            return  # still ahead from the last talkspurt: the next tick is its time
        self._send_frame(now)
        clock.add(self, clock.slot_near(now + FRAME_SECONDS) + TALKSPURT_MARGIN_SLOTS)

    def on_clock(self, now: float, slot: int, now_slot: int) -> int | None:  # hot path
        """The clock reached this call's slot; returns the next slot (None: stop)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return None
        due = 1 + (now_slot - slot) // _SLOTS_PER_FRAME if now_slot > slot else 1
        if due > CATCH_UP_FRAMES:
            # A stall longer than the catch-up allows: the oldest frames' time is gone.
            # Skip it in RTP time, and drop the agent audio that belonged to it, so the
            # agent's stream stays as close to real time as before the stall.
            skipped = due - CATCH_UP_FRAMES
            self.session.skip(skipped)
            self.frames_skipped += skipped
            for _ in range(skipped):
                if self._next_frame() is None:
                    break
            for _ in range(CATCH_UP_FRAMES):
                self._send_frame(now)
        elif due == 1:
            session = self.session
            if (
                session.talking
                and self._grace < GRACE_SLOTS
                and not self._frame_ready()
                and not session.sending_dtmf
            ):
                # Mid-talkspurt the agent's next frame is late: wait a little for it
                # rather than cut its speech with a frame of silence.
                self._grace += 1
                return slot + 1
            grace, self._grace = self._grace, 0
            self._send_frame(now)
            if not session.talking and grace:
                # The talkspurt ended: keep the phase it had before the wait.
                slot -= grace
        else:
            for _ in range(due):
                self._send_frame(now)
        following = slot + due * _SLOTS_PER_FRAME
        session = self.session
        if not session.talking:
            # Silence: bring the RTP timeline back to real time. Ahead (after a talkspurt
            # started early): wait, one longer gap. Behind by a frame (after waits for a
            # late agent): leave one silent frame out (RFC 3551 §4.1 silence suppression).
            timeline = session.timeline
            on_time = round(timeline / SLOT_SECONDS)
            if on_time > following:
                return on_time
            if now - timeline >= FRAME_SECONDS:
                session.skip(1)
        return following

    def _send_frame(self, now: float) -> None:  # hot path
        session = self.session
        pcm = session.poll(now)
        recording = self.recording
        if pcm:
            self._on_audio(pcm)
            if recording is not None:
                recording.caller(now, pcm)
        if session.digits:
            self._deliver_digits()
        transport = self._transport
        if transport is None:
            return
        remote = session.remote
        frame = self._next_frame()
        if frame is not None and recording is not None:
            recording.agent(now, frame)
        for packet in session.tick(now, frame):
            transport.sendto(packet, remote)
        if now >= session.rtcp_due:
            self._send_rtcp(now)

    def _send_rtcp(self, now: float) -> None:
        report = self.session.rtcp_report(now, time.time())
        rtcp = self._rtcp
        if report is None or rtcp is None or rtcp.transport is None:
            return
        if not rtcp.transport.is_closing():
            rtcp.transport.sendto(report, self.session.rtcp_remote)

    def close(self) -> None:
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._rtcp is not None and self._rtcp.transport is not None:
            self._rtcp.transport.close()
            self._rtcp = None


class MediaClock:
    """One timer for every call's 20 ms send clock; see the module docstring.

    ``on_lag(lag, now)`` is called at every wake-up with how late it ran (seconds).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_lag: Callable[[float, float], None] | None = None,
    ) -> None:
        self._loop = loop
        self.time = loop.time
        self._on_lag = on_lag
        self._slots: dict[int, list[RtpEndpoint]] = {}
        self._heap: list[int] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot: int | None = None
        self.next_at = math.inf  # when the earliest slot is due (half a slot early)
        self.calls = 0
        self.wakeups = 0

    @staticmethod
    def slot_after(now: float) -> int:
        """The first slot at or after ``now``."""
        slot = int(now / SLOT_SECONDS)
        return slot if slot * SLOT_SECONDS >= now else slot + 1

    @staticmethod
    def slot_near(at: float) -> int:
        return round(at / SLOT_SECONDS)

    def add(self, endpoint: RtpEndpoint, slot: int) -> None:
        """Tick ``endpoint`` at ``slot`` (moving it if it was due elsewhere)."""
        if endpoint.clock_slot == slot:
            return
        if endpoint.clock_slot is None:
            self.calls += 1
        endpoint.clock_slot = slot
        self._put(endpoint, slot)
        if self._timer_slot is None or slot < self._timer_slot:
            self._arm()

    def remove(self, endpoint: RtpEndpoint) -> None:
        if endpoint.clock_slot is not None:
            endpoint.clock_slot = None  # its entry is skipped when its slot comes
            self.calls -= 1

    def _put(self, endpoint: RtpEndpoint, slot: int) -> None:
        members = self._slots.get(slot)
        if members is None:
            self._slots[slot] = [endpoint]
            heapq.heappush(self._heap, slot)
        else:
            members.append(endpoint)

    def _arm(self) -> None:
        heap = self._heap
        while heap and heap[0] not in self._slots:
            heapq.heappop(heap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_slot = None
        if heap:
            self._timer_slot = heap[0]
            self._timer = self._loop.call_at(heap[0] * SLOT_SECONDS, self._fire)
            self.next_at = (heap[0] - 0.5) * SLOT_SECONDS
        else:
            self.next_at = math.inf

    def poke(self, now: float) -> None:  # hot path: from every datagram and agent message
        """Run what is due at ``now`` from another callback. A burst of I/O callbacks
        (a loader's or a carrier's packets arriving together) would otherwise hold every
        call's sends back until the timer's own turn in the loop."""
        if now >= self.next_at:
            self._run(now)

    def _fire(self) -> None:
        self._timer = None
        self._timer_slot = None
        self._run(self.time())

    def _run(self, now: float) -> None:  # hot path: one wake-up for every call due
        self.wakeups += 1
        # A timer may fire up to a clock tick early: what is due within half a slot runs.
        now_slot = int(now / SLOT_SECONDS + 0.5)
        heap = self._heap
        slots = self._slots
        if heap and self._on_lag is not None:
            self._on_lag(max(0.0, now - heap[0] * SLOT_SECONDS), now)
        while heap and heap[0] <= now_slot:
            slot = heapq.heappop(heap)
            members = slots.pop(slot, None)
            if members is None:
                continue
            for endpoint in members:
                if endpoint.clock_slot != slot:
                    continue  # closed, or moved to another slot
                try:
                    following = endpoint.on_clock(now, slot, now_slot)
                except Exception:
                    # One call's bug must not stop every other call's media.
                    log.exception("event=media_tick_failed")
                    following = None
                if following is None:
                    self.remove(endpoint)
                else:
                    endpoint.clock_slot = following
                    self._put(endpoint, following)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._slots.clear()
        self._heap.clear()


async def open_rtp_endpoint(
    loop: asyncio.AbstractEventLoop,
    allocator: RtpPortAllocator,
    host: str,
    factory: Callable[[], RtpEndpoint],
    attempts: int = 20,
) -> tuple[RtpEndpoint, int]:
    """Bind RTP on a free even port and RTCP on the next one; PortsExhausted when none binds.

    The sockets' family is ``host``'s: IPv6 for an IPv6 address (``::`` included)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        port = allocator.acquire()
        try:
            _transport, protocol = await loop.create_datagram_endpoint(
                factory, local_addr=(host, port), family=family
            )
        except OSError:
            allocator.release(port)
            continue
        rtcp = _RtcpSocket(protocol)
        try:
            await loop.create_datagram_endpoint(
                functools.partial(_same, rtcp), local_addr=(host, port + 1), family=family
            )
        except OSError:
            protocol.close()
            allocator.release(port)
            continue
        protocol.attach_rtcp(rtcp)
        return protocol, port
    raise PortsExhausted("could not bind any RTP/RTCP port pair in the configured range")


def _same(rtcp: _RtcpSocket) -> _RtcpSocket:
    return rtcp


__all__ = [
    "CATCH_UP_FRAMES",
    "SLOT_SECONDS",
    "MediaClock",
    "MediaQuality",
    "MediaStats",
    "PortsExhausted",
    "RtpEndpoint",
    "RtpPortAllocator",
    "open_rtp_endpoint",
]
