"""Receiver statistics (RFC 3550 A.1, A.3, A.8) and an E-model MOS estimate (ITU-T G.107).

:class:`ReceiverStats` is fed every RTP packet of the caller's stream — ``update(seq,
timestamp, arrival, size)`` — and answers expected, lost, fraction lost and interarrival
jitter in the RTP clock, and builds RTCP report blocks. :func:`estimate_mos` turns loss and
delay into an R factor and a MOS for PCMU, PCMA, G.722 and Opus; :func:`mos_method` says
whether a codec's constants come from an ITU-T table (``"g107"``) or are partly assumed
(``"g107-assumed"``), so a G.722 or Opus MOS is not read as a measured one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sipbridge.rtp.rtcp import ReportBlock, report_block

__all__ = [
    "CODEC_IMPAIRMENTS",
    "MOS_ASSUMED",
    "MOS_CITED",
    "CodecImpairment",
    "ReceiverStats",
    "estimate_mos",
    "mos_from_r",
    "mos_method",
    "mouth_to_ear_delay_ms",
    "r_factor",
]

# RFC 3550 A.1
_RTP_SEQ_MOD: Final = 1 << 16
_MAX_DROPOUT: Final = 3000
_MAX_MISORDER: Final = 100
# A timestamp step this much larger than the arrival step is a new RTP time base (a PBX
# re-anchoring the media, a sender restart), not network jitter: it is left out of A.8,
# as the jitter buffer restarts on it (media/jitter.py).
_TIME_BASE_JUMP_SECONDS: Final = 0.5


class ReceiverStats:
    """RFC 3550 receiver state for one source (A.1 sequence tracking without probation:
    the SSRC was announced by signalling, so the first packet is trusted).

    ``update`` per packet; read the properties whenever; ``report_block(ssrc, now)`` for
    each RTCP report (it moves the "prior" counts that fraction lost is relative to);
    ``sender_report(ntp, now)`` when the source's SR arrives, for LSR/DLSR.
    """

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate: Final = clock_rate
        self.received = 0
        self.bytes = 0
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival = 0.0
        self._last_ts = 0
        self._timed = False  # a timed packet (audio) has set _last_arrival/_last_ts
        self._last_sr_ntp: int | None = None
        self._last_sr_at: float | None = None
        # Counts of the sequence runs before the last A.1 restart: the call's totals.
        self._earlier_expected = 0
        self._earlier_received = 0

    def _init_seq(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = _RTP_SEQ_MOD + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(
        self, seq: int, timestamp: int, arrival: float, size: int = 0, *, timing: bool = True
    ) -> bool:
        """Account one packet (``arrival`` in seconds); False when A.1 rejects it as a
        jump not yet confirmed. ``timing=False`` counts the packet's sequence number
        only: an RFC 4733 event shares the audio's SSRC and sequence numbers (so it is
        no loss), but its timestamp is its event's start, repeated, not a sampling
        instant, so it says nothing of jitter (A.8)."""
        if not self._started:
            self._started = True
            self._init_seq(seq)
        else:
            udelta = (seq - self._max_seq) & 0xFFFF
            if udelta < _MAX_DROPOUT:
                if seq < self._max_seq:
                    self._cycles += _RTP_SEQ_MOD  # wrapped
                self._max_seq = seq
            elif udelta <= _RTP_SEQ_MOD - _MAX_MISORDER:
                # A.1: a very large jump; believe it when the next packet confirms it.
                if seq == self._bad_seq:
                    self._earlier_expected += self.expected
                    self._earlier_received += self.received
                    self._init_seq(seq)
                    self._timed = False  # a new run: its first packet is no jitter sample
                else:
                    self._bad_seq = (seq + 1) & 0xFFFF
                    return False
            # else: duplicate or reordered packet, counted as received (A.3)
            if timing and self._timed:
                # A.8: D(i-1, i) = (Rj - Ri) - (Sj - Si) in clock units; the timestamp
                # difference is taken modulo 2^32 so wrap-around does not look like jitter.
                dts = (timestamp - self._last_ts) & 0xFFFFFFFF
                if dts >= 1 << 31:
                    dts -= 1 << 32
                d = abs((arrival - self._last_arrival) * self.clock_rate - dts)
                if d <= _TIME_BASE_JUMP_SECONDS * self.clock_rate:
                    self._jitter += (d - self._jitter) / 16
        if timing:
            self._timed = True
            self._last_arrival = arrival
            self._last_ts = timestamp
        self.received += 1
        self.bytes += size
        return True

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received (A.1)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """A.3: packets expected so far."""
        return self.extended_max - self._base_seq + 1 if self._started else 0

    @property
    def total_expected(self) -> int:
        """Packets expected over every sequence run of this source (A.1 restarts
        included), for the call's totals; :attr:`expected` restarts with the run."""
        return self._earlier_expected + self.expected

    @property
    def total_received(self) -> int:
        """Packets received over every sequence run of this source."""
        return self._earlier_received + self.received

    @property
    def lost(self) -> int:
        """A.3: cumulative packets lost (negative with duplicates)."""
        return self.expected - self.received

    @property
    def loss_percent(self) -> float:
        """Cumulative loss in percent of expected (0 when nothing is expected)."""
        expected = self.expected
        return 100.0 * max(self.lost, 0) / expected if expected else 0.0

    @property
    def jitter(self) -> float:
        """A.8 interarrival jitter in RTP clock units."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self._jitter / self.clock_rate

    def sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember the source's last SR (its NTP time, our arrival time) for LSR/DLSR."""
        self._last_sr_ntp = ntp_timestamp
        self._last_sr_at = now

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """The RFC 3550 §6.4.1 report block about this source, and start a new interval."""
        block = report_block(
            ssrc,
            extended_max=self.extended_max,
            expected=self.expected,
            received=self.received,
            expected_prior=self._expected_prior,
            received_prior=self._received_prior,
            jitter=self._jitter,
            last_sr_ntp=self._last_sr_ntp,
            last_sr_at=self._last_sr_at,
            now=now,
        )
        self._expected_prior = self.expected
        self._received_prior = self.received
        return block


# -- E-model --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """Equipment impairment ``ie`` and packet-loss robustness ``bpl`` (ITU-T G.113
    Appendix I), on the narrowband R scale (Ro = 93.2, G.107) or, for ``wideband``
    codecs, the wideband scale (Ro = 129, G.107.1); ``lookahead_ms`` is the codec's own
    algorithmic delay on top of the packet time; ``cited`` is False when ``ie`` or
    ``bpl`` is our assumption rather than a value from an ITU-T table."""

    ie: float
    bpl: float
    wideband: bool = False
    lookahead_ms: float = 0.0
    cited: bool = True


CODEC_IMPAIRMENTS: Final = {
    # G.113 Appendix I: G.711 Ie = 0, Bpl = 25.1 with Appendix I concealment.
    "pcmu": CodecImpairment(0.0, 25.1),
    "pcma": CodecImpairment(0.0, 25.1),
    # G.113 (wideband values): G.722 at 64 kbit/s Ie,wb = 13. Bpl with concealment is
    # not tabulated for our PLC; 20 is our assumption (between G.711 with and without).
    "g722": CodecImpairment(13.0, 20.0, wideband=True, lookahead_ms=1.5, cited=False),
    # Opus is not in G.113: Ie,wb 10 and Bpl 30 (its own PLC and FEC) are estimates for
    # wideband speech at 24 kbit/s; 6.5 ms is the encoder's lookahead (RFC 6716 §2).
    "opus": CodecImpairment(10.0, 30.0, wideband=True, lookahead_ms=6.5, cited=False),
}

MOS_CITED: Final = "g107"  # E-model with Ie and Bpl from ITU-T G.113 Appendix I
MOS_ASSUMED: Final = "g107-assumed"  # E-model with an assumed Ie or Bpl (see above)

_RO_NARROW: Final = 93.2  # G.107 default Ro - Is
_RO_WIDE: Final = 129.0  # G.107.1


def mouth_to_ear_delay_ms(
    codec: str,
    *,
    ptime_ms: float = 20.0,
    jitter_buffer_ms: float = 0.0,
    rtt_ms: float | None = None,
    default_network_ms: float = 20.0,
) -> float:
    """One-way delay for the E-model: packetization + codec lookahead + jitter buffer +
    half the RTT (or ``default_network_ms`` when no RTT is known)."""
    network = rtt_ms / 2 if rtt_ms is not None else default_network_ms
    lookahead = CODEC_IMPAIRMENTS[codec.lower()].lookahead_ms
    return ptime_ms + lookahead + jitter_buffer_ms + network


def r_factor(codec: str, loss_percent: float, delay_ms: float, burst_ratio: float = 1.0) -> float:
    """The transmission rating R (G.107 §7 simplified: Is, A and the echo terms at their
    defaults). Wideband codecs are rated on the G.107.1 scale (up to 129)."""
    impairment = CODEC_IMPAIRMENTS[codec.lower()]
    ppl = min(max(loss_percent, 0.0), 100.0)
    ro = _RO_WIDE if impairment.wideband else _RO_NARROW
    cap = ro if impairment.wideband else 95.0
    # G.107 (7-29) / G.107.1: Ie,eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl).
    ie_eff = impairment.ie + (cap - impairment.ie) * ppl / (ppl / burst_ratio + impairment.bpl)
    # Delay impairment Id: the usual fit of G.107's Idd/Idte terms for a well-echo-
    # cancelled path (Cole and Rosenbluth, 2001).
    d = max(delay_ms, 0.0)
    id_ = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    return ro - id_ - ie_eff


def mos_from_r(r: float) -> float:
    """G.107 Annex B: MOS (CQE) from a narrowband-scale R (0-100)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6


def mos_method(codec: str) -> str:
    """How :func:`estimate_mos` rates ``codec``: :data:`MOS_CITED` or :data:`MOS_ASSUMED`."""
    return MOS_CITED if CODEC_IMPAIRMENTS[codec.lower()].cited else MOS_ASSUMED


def estimate_mos(
    codec: str, loss_percent: float, delay_ms: float = 40.0, burst_ratio: float = 1.0
) -> float:
    """Estimated MOS for a call: ``loss_percent`` after the jitter buffer (late packets
    count as lost), ``delay_ms`` one way (see :func:`mouth_to_ear_delay_ms`)."""
    r = r_factor(codec, loss_percent, delay_ms, burst_ratio)
    if CODEC_IMPAIRMENTS[codec.lower()].wideband:
        # Annex B is defined on the narrowband scale: a wideband R is scaled by 100/129
        # first, as usual with G.107.1, so a wideband MOS stays below 4.5 and still falls
        # with loss (it is not comparable digit for digit with a narrowband one).
        r = r * 100 / _RO_WIDE
    return mos_from_r(r)
