"""One call's media as a sans-I/O object: caller RTP in, audio for the agent out, agent
audio in, RTP and RTCP for the caller out.

:class:`MediaSession` holds everything one call's media needs — strict-RTP source
learning, SRTP, the jitter buffer, the decoder with its concealment, resamplers, RFC 4733
DTMF both ways, the RTP sender, RFC 3550 receiver statistics and RTCP timing — and never
opens a socket or reads the clock: every input carries ``now`` (monotonic seconds) and every
output is returned. The runtime (``runtime/media.py``) feeds it from the call's sockets and
from the one media clock all calls share.

What the caller must do:

- for each datagram on the RTP port: ``pcm = receive_rtp(data, source, now)``; send ``pcm``
  (caller audio at the agent's rate, ``b""`` when none) to the agent, then hand over the
  key presses in :attr:`digits` (and clear the list);
- for each datagram on the RTCP port: ``receive_rtcp(data, source, now, wallclock)``;
- once per frame period: ``pcm = poll(now)`` (gaps past their deadline become
  concealment; DTMF whose end packets were lost ends), then
  ``tick(now, frame)`` with the agent's next 20 ms of PCM16 (``None`` when it has none) and
  send each packet it returns to :attr:`remote`; when ``now >= rtcp_due`` send
  ``rtcp_report(now, wallclock)`` to :attr:`rtcp_remote`;
- when agent audio arrives while :attr:`talking` is false (the caller hears our silence),
  it may call ``poll``/``tick`` at once instead of waiting for the next frame period: the
  first frame of a talkspurt goes out with the marker bit (RFC 3551 §4.1) and the pace of
  20 ms may restart from there.

Timestamps stay continuous (RFC 3550 §5.1), so a packet sent early is *ahead* of its
place on the stream's timeline by up to one frame: :attr:`timeline` is where the next
packet belongs in the caller's time (``start(now)`` puts the first one at ``now``, each
packet and each skipped frame moves it 20 ms). The runtime never lets a talkspurt start
put the stream more than one frame ahead, and while silence goes out it waits until the
timeline has caught up (one longer gap between two silent packets): the stream never
drifts ahead of real time, so the caller's jitter buffer sees at most one frame of early
arrival, at the start of a talkspurt, where RFC 3551 §4.1 lets it adjust its playout;
- after a stall of its own loop, ``tick`` may be called for every frame period that is
  due (the runtime bounds this) and :meth:`skip` for the rest.

When the offer is ours (an outbound call, a delayed-offer INVITE) the far end's first
packets can arrive with its answer, before the answer's address, codec and key are
applied: :meth:`hold` keeps the datagrams raw (the last :data:`HELD_PACKETS`) instead of
playing them with the wrong ones, and :meth:`release` plays those that came from a given
time on (not an early-media ringback) once the answer is applied.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Final

from sipbridge.codecs import get_codec
from sipbridge.codecs.base import ConcealingDecoder, Encoder
from sipbridge.media.dtmf import DigitPressed, DtmfError, DtmfReceiver, DtmfSender
from sipbridge.media.jitter import Frame, JitterBuffer, Lost
from sipbridge.media.plc import with_concealment
from sipbridge.media.quality import (
    ReceiverStats,
    estimate_mos,
    mos_method,
    mouth_to_ear_delay_ms,
)
from sipbridge.media.resample import Resampler
from sipbridge.media.turns import TurnTimer
from sipbridge.rtp.packet import RtpError, parse_rtp_header
from sipbridge.rtp.rtcp import (
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    ntp_timestamp,
    parse_compound,
    round_trip_time,
    serialize_compound,
)
from sipbridge.rtp.srtp import SrtpSession
from sipbridge.rtp.stream import RtpSender
from sipbridge.sdp.negotiate import Negotiated

__all__ = [
    "FRAME_SECONDS",
    "REBIND_SILENCE_SECONDS",
    "Address",
    "MediaQuality",
    "MediaSession",
    "MediaStats",
    "SourceState",
]

# A socket address as the OS reports it: (host, port) for IPv4, (host, port, flowinfo,
# scope_id) for IPv6. Strict RTP keeps the caller's as received, so the per-packet check
# is one tuple comparison; what identifies a source is its host and port only.
Address = tuple[str, int] | tuple[str, int, int, int]
FRAME_SECONDS: Final = 0.020
# Strict RTP: once a source is learned, another one may take over only after the learned
# one has been silent this long (a NAT rebinding), and only by continuing its stream.
REBIND_SILENCE_SECONDS: Final = 1.0
# Datagrams kept raw while held (hold): 200 ms of 20 ms packets, the newest.
HELD_PACKETS: Final = 10
# How far ahead of the last sequence number a rebinding source's first packet may be.
_REBIND_SEQ_WINDOW: Final = 100
# RFC 3550 §6.2: about every 5 s for a two-party session, randomized (§6.3.1) to 0.5-1.5x.
RTCP_INTERVAL_SECONDS: Final = 5.0
# Once the caller's stream has been silent this long (an underrun, not loss), concealment
# has faded to silence (G.711 Appendix I at 60 ms): send zeros without running it.
_FADED_SECONDS: Final = 0.12
# Codecs whose encoder keeps no state: the silence payload is encoded once.
_STATELESS: Final = frozenset({"pcmu", "pcma"})


def _same_endpoint(a: Address, b: Address) -> bool:
    """Same host and port: an IPv6 address's flowinfo and scope id do not make another
    source."""
    return a[0] == b[0] and a[1] == b[1]


def _rtcp_address(rtp: Address) -> Address:
    """Where RTCP for ``rtp`` goes: the next port (RFC 3550 §11), the IPv6 scope kept."""
    if len(rtp) == 4:
        return (rtp[0], rtp[1] + 1, rtp[2], rtp[3])
    return (rtp[0], rtp[1] + 1)


class SourceState(Enum):
    """Strict RTP (symmetric RTP, RFC 4961, hardened against RTP bleed and injection)."""

    LEARNING = "learning"  # no caller packet yet: the first audio source is learned
    LOCKED = "locked"  # other sources are dropped (a NAT rebinding excepted)


@dataclass
class MediaStats:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped_in: int = 0
    refused_source: int = 0  # strict RTP: packets from a source that is not the caller's
    refused_rtcp: int = 0
    concealed_ms: int = 0
    rtt_ms: float | None = None
    source_changes: int = 0


@dataclass(frozen=True)
class MediaQuality:
    """What a call's record keeps of its media (RFC 3550 receiver figures + E-model MOS)."""

    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    # None when no caller packet ever arrived: nothing was measured.
    packets_lost: int | None
    loss_percent: float | None
    jitter_ms: float | None
    rtt_ms: float | None
    concealed_ms: int | None
    mos: float | None
    mos_method: str | None  # media/quality.py mos_method: cited or assumed constants
    turns: int  # agent answers to the caller's speech (media/turns.py)
    response_p50_ms: float | None  # end of the caller's speech -> the agent's first audio
    response_max_ms: float | None


class MediaSession:
    """One call's media; see the module docstring for what the caller must do.

    ``remote`` starts at the SDP address; symmetric RTP (RFC 4961) moves it to where the
    caller's packets come from. ``sending`` is false while our direction is on hold
    (recvonly/inactive). ``srtp`` (replaceable at any time, e.g. by a re-INVITE) makes it
    SRTP/SRTCP both ways.
    """

    def __init__(
        self,
        negotiated: Negotiated,
        agent_rate: int,
        *,
        srtp: SrtpSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self.srtp = srtp
        self.agent_rate = agent_rate
        # While the SDP answer to our offer is awaited: the datagrams, raw (hold).
        self._held: deque[tuple[bytes, Address, float]] | None = None
        self.remote: Address = (negotiated.remote_address, negotiated.remote_port)
        self.rtcp_remote: Address = _rtcp_address(self.remote)
        self._sdp_remote: Address = self.remote
        self.source_state = SourceState.LEARNING
        self._rtcp_learned = False
        self.stats = MediaStats()
        self.last_packet_at: float | None = None  # the caller's last packet (strict RTP too)
        self._remote_ssrc: int | None = None
        self._last_seq = 0
        self._last_ts = 0
        self.sending = True
        self.talking = False  # the last frame sent carried agent audio
        self.digits: list[DigitPressed] = []
        self.timeline = 0.0
        self.rtcp_due = 0.0
        self._underrun = 0.0  # seconds concealed since the caller's last packet
        self._pending_concealed_ms = 0  # underrun concealment not yet known to be loss
        self._sender: RtpSender | None = None
        self.turns = TurnTimer()  # the agent's response time per turn, kept across codecs
        # RFC 3550 figures of the codecs used before the current one (a codec change).
        self._prior_expected = 0
        self._prior_received = 0
        self._prior_jitter_ms: float | None = None
        self.set_codec(negotiated)

    # -- set-up ---------------------------------------------------------------

    def set_codec(self, negotiated: Negotiated) -> None:
        """(Re)build the codec chain for ``negotiated`` (at set-up and on a codec change);
        our stream keeps its SSRC and sequence numbers."""
        info = get_codec(negotiated.codec)
        self.codec = info.name
        self.payload_type = negotiated.payload_type
        self.telephone_event_pt = negotiated.telephone_event_pt
        rate = info.audio_rate_for(self.agent_rate)
        self._codec_rate = rate
        self._clock_rate = info.clock_rate
        self._decoder: ConcealingDecoder = with_concealment(info.decoder(rate), rate)
        self._encoder: Encoder = info.encoder(rate)
        self._to_agent = Resampler(rate, self.agent_rate)
        self._from_agent = Resampler(self.agent_rate, rate)
        self._agent_silence = bytes(2 * self.agent_rate // 50)
        self._silence_payload = (
            self._encoder.encode(bytes(2 * rate // 50)) if info.name in _STATELESS else None
        )
        # Packets in order are released at once; a missing one is waited for at least one
        # frame, so a short stall of our own loop is not mistaken for loss.
        self._jitter = JitterBuffer(info.clock_rate, min_delay_ms=20.0)
        self._new_receiver(info.clock_rate)
        self._dtmf_rx = DtmfReceiver(info.clock_rate)
        self._dtmf_tx = DtmfSender(info.clock_rate)
        previous = self._sender
        rng = self._rng
        self._sender = RtpSender(
            ssrc=previous.ssrc if previous is not None else rng.getrandbits(32),
            payload_type=negotiated.payload_type,
            samples_per_frame=info.timestamp_increment(20),
            initial_sequence=previous.sequence if previous is not None else rng.getrandbits(16),
            initial_timestamp=rng.getrandbits(32),
        )

    def _new_receiver(self, clock_rate: int) -> None:
        """Start new RFC 3550 receiver statistics (a codec change, or a new SSRC: §8.2,
        statistics are per source); what the old ones counted stays in the call's
        totals, so the record covers the whole call."""
        previous: ReceiverStats | None = getattr(self, "_receiver", None)
        if previous is not None and previous.received:
            self._prior_expected += previous.total_expected
            self._prior_received += previous.total_received
            self._prior_jitter_ms = previous.jitter_ms
        self._receiver = ReceiverStats(clock_rate)

    def start(self, now: float) -> None:
        """Media begins (the call is answered): the first frame is due now."""
        self.timeline = now
        self.rtcp_due = now + self._rtcp_interval()

    def update_remote(self, remote: Address) -> None:
        """New SDP address (re-INVITE, UPDATE): signalled by the caller, so the source is
        learned afresh from the next packet. An unchanged address (hold, codec change)
        keeps the learned source."""
        if remote == self._sdp_remote:
            return
        self._sdp_remote = remote
        self.remote = remote
        self.rtcp_remote = _rtcp_address(remote)
        self.source_state = SourceState.LEARNING
        self._rtcp_learned = False

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> bool:
        """Queue RFC 4733 events for ``digits``; False when the caller did not offer
        telephone-event (nothing can be sent)."""
        if self.telephone_event_pt is None:
            return False
        self._dtmf_tx.queue(digits, duration_ms)
        return True

    @property
    def dtmf_pending(self) -> int:
        """Digits queued by :meth:`send_dtmf` and not yet sent in full."""
        return self._dtmf_tx.pending

    @property
    def sending_dtmf(self) -> bool:
        return self._dtmf_tx.active

    # -- caller → agent ---------------------------------------------------------

    def hold(self) -> None:
        """Keep datagrams raw until :meth:`release` (the answer to our offer is awaited)."""
        self._held = deque(maxlen=HELD_PACKETS)

    def release(self, since: float) -> bytes:
        """Stop holding (the answer is applied) and play the held datagrams that arrived
        at ``since`` or later, in order; earlier ones (early media before the answer)
        are dropped. Returns their PCM for the agent, as :meth:`receive_rtp` does."""
        held, self._held = self._held, None
        out = b""
        for data, source, at in held or ():
            if at < since:
                self.stats.dropped_in += 1
                continue
            pcm = self.receive_rtp(data, source, at)
            if pcm:
                out += pcm
        return out

    def receive_rtp(self, data: bytes, source: Address, now: float) -> bytes:  # hot path
        """One datagram from the RTP port; returns caller PCM for the agent (may be
        ``b""``). Key presses completed by it are appended to :attr:`digits`."""
        held = self._held
        if held is not None:
            if len(held) == HELD_PACKETS:
                self.stats.dropped_in += 1  # the oldest makes room
            held.append((data, source, now))
            return b""
        srtp = self.srtp
        if srtp is not None:
            # RFC 3711 §3.3: authenticate first, so packets without the caller's key can
            # neither be played nor teach strict RTP a source.
            plain = srtp.unprotect(data)
            if plain is None:
                self.stats.dropped_in += 1
                return b""
            data = plain
        try:
            pt, seq, ts, ssrc, marker, start, end = parse_rtp_header(data)
        except RtpError:
            self.stats.dropped_in += 1
            return b""
        if pt == self.payload_type:
            if (
                source != self.remote or self.source_state is SourceState.LEARNING
            ) and not self._accept_source(source, ssrc, seq, ts, now):
                self.stats.dropped_in += 1
                self.stats.refused_source += 1
                return b""
            if ssrc != self._remote_ssrc:
                if self._remote_ssrc is not None:
                    # The caller's SSRC changed (a PBX re-anchoring its media): a new
                    # source for RFC 3550; the jitter buffer restarts on it too.
                    self._new_receiver(self._clock_rate)
                self._remote_ssrc = ssrc
            self._last_seq = seq
            self._last_ts = ts
            stats = self.stats
            stats.packets_in += 1
            stats.bytes_in += end - start
            self.last_packet_at = now
            self._receiver.update(seq, ts, now, end - start)
            payload = self._jitter.push_next(seq, ts, data[start:end], now, ssrc=ssrc)
            # In order (the common case): straight to the decoder.
            pcm = self._frame(payload) if payload is not None else self._drain(now)
            if pcm:
                self.turns.caller_audio(pcm, now)
            return pcm
        if pt == self.telephone_event_pt:
            if source != self.remote and not _same_endpoint(source, self.remote):
                # Strict RTP: events only from the caller's source (learned from audio).
                self.stats.dropped_in += 1
                self.stats.refused_source += 1
                return b""
            self.last_packet_at = now
            if ssrc == self._remote_ssrc:
                # RFC 4733 §2.1: events take sequence numbers of the audio stream; counted,
                # they are not seen as loss (nor as jitter: their timestamps repeat).
                self._receiver.update(seq, ts, now, timing=False)
            try:
                self.digits += self._dtmf_rx.receive(data[start:end], ts, marker, now)
            except DtmfError:
                self.stats.dropped_in += 1  # a malformed RFC 4733 payload
            return b""
        # Comfort noise, other payload types, RTCP on a muxed port: not for us.
        self.stats.dropped_in += 1
        return b""

    def _accept_source(self, source: Address, ssrc: int, seq: int, ts: int, now: float) -> bool:
        """Strict RTP. While learning (the start of media, or a new SDP address), the first
        source of audio is taken. Once locked, another source is refused unless the learned
        one has been silent for :data:`REBIND_SILENCE_SECONDS` and the new one continues its
        stream: same SSRC, sequence numbers just after the last one, a timestamp that has
        moved forward by no more than the silence. So a burst from elsewhere (RTP bleed,
        injection), with the caller's SSRC or a new one, neither plays nor moves our media
        while the caller is talking."""
        if self.source_state is SourceState.LEARNING:
            self._learn(source)
            return True
        if _same_endpoint(source, self.remote):
            self.remote = source  # the learned source, its IPv6 flowinfo or scope changed
            return True
        last = self.last_packet_at if self.last_packet_at is not None else 0.0
        if now - last < REBIND_SILENCE_SECONDS:
            return False
        if ssrc != self._remote_ssrc:
            return False
        if not 0 < (seq - self._last_seq) & 0xFFFF <= _REBIND_SEQ_WINDOW:
            return False
        elapsed = int((now - last + 1.0) * self._clock_rate)
        if not 0 < (ts - self._last_ts) & 0xFFFFFFFF <= elapsed:
            return False
        self._learn(source)
        self.stats.source_changes += 1
        return True

    def _learn(self, source: Address) -> None:
        if source != self.remote:
            # Kept as the socket reports it (an IPv6 4-tuple too): later packets from the
            # same source then match it with one comparison, no per-packet conversion.
            self.remote = source
            self.rtcp_remote = _rtcp_address(source)
            self._rtcp_learned = False
        self.source_state = SourceState.LOCKED

    def poll(self, now: float) -> bytes:  # hot path: once per frame period
        """Gaps past their deadline become concealment; returns PCM for the agent. Key
        presses whose end packets were lost are appended to :attr:`digits`."""
        pcm = self._drain(now)
        dtmf_rx = self._dtmf_rx
        if dtmf_rx.pending:
            self.digits += dtmf_rx.poll(now)
        return pcm

    def _drain(self, now: float) -> bytes:  # hot path
        jitter = self._jitter
        out = b""
        while (event := jitter.pop(now)) is not None:
            audio = self._frame(event.payload) if isinstance(event, Frame) else self._gap(event)
            if audio:
                out = out + audio if out else audio
        return out

    def _gap(self, event: Lost) -> bytes:
        """Audio standing in for a gap: concealment, FEC, or (once faded) silence."""
        samples = event.duration * self._codec_rate // self._clock_rate
        if samples <= 0:
            return b""
        ms = samples * 1000 // self._codec_rate
        if event.count:
            self.stats.concealed_ms += ms
            self._underrun = 0.0
            self._pending_concealed_ms = 0
        elif event.next_payload is not None:
            # RFC 3551 §4.1 silence suppression: the caller chose not to send.
            self._pending_concealed_ms = 0
            self._underrun = 0.0
        else:
            # Nothing arrived in time: a late packet or the end of the stream.
            self._pending_concealed_ms += ms
            self._underrun += samples / self._codec_rate
            if self._underrun > _FADED_SECONDS:
                # Concealment has faded out: silence, without running it.
                if samples * 50 == self._codec_rate:
                    return self._agent_silence
                return bytes(2 * samples * self.agent_rate // self._codec_rate)
        if event.next_payload is not None and event.count:
            pcm = self._decoder.decode_fec(event.next_payload, samples)
        else:
            pcm = self._decoder.conceal(samples)
        return self._to_agent.process(pcm)

    def _frame(self, payload: bytes) -> bytes:  # hot path
        """One packet released in order: decoded and at the agent's rate."""
        if self._pending_concealed_ms:
            if self._underrun:
                # The stream went on where it stopped: that underrun was concealment.
                self.stats.concealed_ms += self._pending_concealed_ms
            self._pending_concealed_ms = 0
        self._underrun = 0.0
        return self._to_agent.process(self._decoder.decode(payload))

    def receive_rtcp(self, data: bytes, source: Address, now: float, wallclock: float) -> None:
        """Caller RTCP: their sender reports (for LSR/DLSR) and our round trip time.

        Accepted only from the caller's RTP host once strict RTP has learned it; the
        first such packet teaches the RTCP port (NATs may map it anywhere)."""
        if self.source_state is SourceState.LEARNING or source[0] != self.remote[0]:
            self.stats.refused_rtcp += 1
            return
        if (
            self._rtcp_learned
            and source != self.rtcp_remote
            and not _same_endpoint(source, self.rtcp_remote)
        ):
            self.stats.refused_rtcp += 1
            return
        srtp = self.srtp
        if srtp is not None:
            plain = srtp.unprotect_rtcp(data)  # RFC 3711 §3.4
            if plain is None:
                self.stats.refused_rtcp += 1
                return
            data = plain
        try:
            packets = parse_compound(data)
        except RtcpError:
            self.stats.refused_rtcp += 1
            return
        if not self._rtcp_learned:
            self.rtcp_remote = source
            self._rtcp_learned = True
        arrival = ntp_timestamp(wallclock)
        sender = self._sender
        assert sender is not None
        for packet in packets:
            blocks: tuple[ReportBlock, ...] = ()
            if isinstance(packet, SenderReport):
                self._receiver.sender_report(packet.ntp_timestamp, now)
                blocks = packet.reports
            elif isinstance(packet, ReceiverReport):
                blocks = packet.reports
            for block in blocks:
                if block.ssrc == sender.ssrc:
                    rtt = round_trip_time(block, arrival)
                    if rtt is not None:
                        self.stats.rtt_ms = rtt * 1000

    # -- agent → caller -----------------------------------------------------------

    def tick(self, now: float, frame: bytes | None) -> list[bytes]:  # hot path
        """One frame period: the RTP packets to send to :attr:`remote` now (RFC 4733
        events while DTMF goes out, else one audio packet; none on hold). ``frame`` is the
        agent's next 20 ms of PCM16 at the agent's rate, ``None`` for silence."""
        sender = self._sender
        assert sender is not None
        self.timeline += FRAME_SECONDS
        srtp = self.srtp
        stats = self.stats
        if self._dtmf_tx.active:
            events = self._dtmf_tx.tick(sender.timestamp)
            out: list[bytes] = []
            te = self.telephone_event_pt
            if events is not None and te is not None and self.sending:
                for event in events:
                    raw = sender.event_packet(te, event.timestamp, event.marker, event.payload)
                    packet = raw if srtp is None else srtp.protect(raw)
                    if packet is not None:
                        out.append(packet)
                        stats.packets_out += 1
            sender.skip()
            self.talking = False
            return out
        if not self.sending:
            # On hold (our direction recvonly/inactive): nothing goes out; RFC 3550 §5.1
            # the timestamp keeps running, sequence numbers do not.
            sender.skip()
            self.talking = False
            return []
        if frame is None:
            payload = self._silence_payload
            if payload is None:
                payload = self._encoder.encode(self._from_agent.process(self._agent_silence))
            self.talking = False
        else:
            if not self.talking:
                sender.mark()  # RFC 3551 §4.1: the first packet of a talkspurt
                self.talking = True
                self.turns.agent_started(now)
            payload = self._encoder.encode(self._from_agent.process(frame))
        raw = sender.packet(payload)
        packet = raw if srtp is None else srtp.protect(raw)
        if packet is None:
            return []
        stats.packets_out += 1
        stats.bytes_out += len(payload)
        return [packet]

    def skip(self, frames: int) -> None:
        """Frame periods lost to a stall of our loop that will not be sent: RTP time moves
        on (RFC 3550 §5.1), so what is sent next is not late forever."""
        if frames > 0:
            assert self._sender is not None
            self._sender.skip(frames)
            self.timeline += frames * FRAME_SECONDS
            self.talking = False

    def rtcp_report(self, now: float, wallclock: float) -> bytes | None:
        """RFC 3550 §6.4.1 sender report with a reception report and our CNAME (SRTCP
        when keyed); the next one becomes due about 5 s later."""
        self.rtcp_due = now + self._rtcp_interval()
        sender = self._sender
        assert sender is not None
        reports: tuple[ReportBlock, ...] = ()
        if self._remote_ssrc is not None and self._receiver.received:
            reports = (self._receiver.report_block(self._remote_ssrc, now),)
        packet = serialize_compound(
            [
                SenderReport(
                    ssrc=sender.ssrc,
                    ntp_timestamp=ntp_timestamp(wallclock),
                    rtp_timestamp=sender.timestamp,
                    packet_count=sender.packets_sent & 0xFFFFFFFF,
                    octet_count=sender.octets_sent & 0xFFFFFFFF,
                    reports=reports,
                ),
                SourceDescription.cname(sender.ssrc, f"sipbridge-{sender.ssrc:08x}"),
            ]
        )
        if self.srtp is not None:
            return self.srtp.protect_rtcp(packet)  # RFC 3711 §3.4
        return packet

    def _rtcp_interval(self) -> float:
        return RTCP_INTERVAL_SECONDS * self._rng.uniform(0.5, 1.5)

    # -- figures ------------------------------------------------------------------

    @property
    def ssrc(self) -> int:
        assert self._sender is not None
        return self._sender.ssrc

    def quality(self) -> MediaQuality:
        """The call's media figures so far (for the call record and metrics)."""
        receiver = self._receiver
        received = self._prior_received + receiver.total_received
        expected = self._prior_expected + receiver.total_expected
        measured = received > 0
        lost = max(expected - received, 0)
        loss = 100.0 * lost / expected if expected else 0.0
        jitter = receiver.jitter_ms if receiver.received else self._prior_jitter_ms
        delay = mouth_to_ear_delay_ms(
            self.codec, jitter_buffer_ms=self._jitter.delay_ms, rtt_ms=self.stats.rtt_ms
        )
        return MediaQuality(
            packets_in=self.stats.packets_in,
            packets_out=self.stats.packets_out,
            bytes_in=self.stats.bytes_in,
            bytes_out=self.stats.bytes_out,
            packets_lost=lost if measured else None,
            loss_percent=round(loss, 2) if measured else None,
            jitter_ms=round(jitter, 2) if measured and jitter is not None else None,
            rtt_ms=None if self.stats.rtt_ms is None else round(self.stats.rtt_ms, 1),
            concealed_ms=self.stats.concealed_ms if measured else None,
            mos=round(estimate_mos(self.codec, loss, delay), 2) if measured else None,
            mos_method=mos_method(self.codec) if measured else None,
            turns=self.turns.count,
            response_p50_ms=self.turns.p50_ms(),
            response_max_ms=self.turns.max_ms(),
        )
