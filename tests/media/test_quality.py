import random

import pytest

from sipbridge.media.quality import (
    CODEC_IMPAIRMENTS,
    MOS_ASSUMED,
    MOS_CITED,
    ReceiverStats,
    estimate_mos,
    mos_from_r,
    mos_method,
    mouth_to_ear_delay_ms,
    r_factor,
)
from sipbridge.rtp.rtcp import compact_ntp, ntp_timestamp


def test_clean_stream() -> None:
    stats = ReceiverStats(8000)
    for i in range(100):
        assert stats.update(1000 + i, 160 * i, 10.0 + 0.02 * i, 160)
    assert (stats.expected, stats.received, stats.lost) == (100, 100, 0)
    assert stats.loss_percent == 0.0
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.bytes == 16000
    assert stats.extended_max == 1099


def test_loss_wrap_and_duplicates() -> None:
    stats = ReceiverStats(8000)
    seqs = [(65500 + i) & 0xFFFF for i in range(100) if i % 10 != 3]  # 10 % lost
    for n, seq in enumerate(seqs):
        stats.update(seq, 160 * n, 0.02 * n)
    assert stats.expected == 100
    assert stats.lost == 10
    assert stats.loss_percent == pytest.approx(10.0)
    assert stats.extended_max == 65536 + (65500 + 99 - 65536)
    stats.update(seqs[-1], 0, 5.0)  # a duplicate counts as received (A.3)
    assert stats.lost == 9


def test_jitter_matches_rfc3550_a8() -> None:
    rng = random.Random(1)
    stats = ReceiverStats(8000)
    expected = 0.0
    last_transit = None
    for i in range(500):
        arrival = 0.02 * i + rng.uniform(0, 0.01)
        stats.update(i, 160 * i, arrival)
        transit = arrival * 8000 - 160 * i
        if last_transit is not None:
            expected += (abs(transit - last_transit) - expected) / 16
        last_transit = transit
    assert stats.jitter == pytest.approx(expected)
    assert stats.jitter_ms == pytest.approx(expected / 8)
    assert 1.0 < stats.jitter_ms < 5.0


def test_jitter_ignores_timestamp_wrap() -> None:
    stats = ReceiverStats(8000)
    for i in range(20):
        stats.update(i, (0xFFFFFF00 + 160 * i) & 0xFFFFFFFF, 0.02 * i)
    assert stats.jitter < 1e-6


def test_sequence_jump_needs_confirmation() -> None:
    stats = ReceiverStats(8000)
    stats.update(10, 0, 0.0)
    assert not stats.update(30000, 160, 0.02)
    assert stats.update(30001, 320, 0.04)  # A.1: the next packet confirms the jump
    assert (stats.expected, stats.received) == (1, 1)


def test_a_confirmed_sequence_restart_keeps_the_totals() -> None:
    stats = ReceiverStats(8000)
    for i in range(10):
        stats.update(100 + i, 160 * i, 0.02 * i)
    assert not stats.update(40000, 1600, 0.2)  # not yet believed: not counted
    for i in range(1, 11):
        assert stats.update(40000 + i, 1600 + 160 * i, 0.2 + 0.02 * i)
    assert (stats.expected, stats.received) == (10, 10)  # A.1: a new run
    assert (stats.total_expected, stats.total_received) == (20, 20)
    assert stats.jitter < 1e-6  # the restart is no jitter


def test_a_new_time_base_is_not_jitter() -> None:
    """A timestamp step of seconds between two packets 20 ms apart is the sender's new
    time base (a PBX re-anchoring media), not 100 s of network jitter."""
    stats = ReceiverStats(8000)
    for i in range(20):
        stats.update(i, 160 * i, 0.02 * i)
    for i in range(20, 40):
        stats.update(i, 8000 * 100 + 160 * i, 0.02 * i)
    assert stats.jitter_ms < 0.01
    assert (stats.expected, stats.lost) == (40, 0)


def test_report_block_intervals_and_lsr() -> None:
    stats = ReceiverStats(8000)
    for i in range(100):
        if i % 4 != 0:
            stats.update(i, 160 * i, 0.02 * i)
    ntp = ntp_timestamp(1_700_000_000.25)
    stats.sender_report(ntp, 1.0)
    block = stats.report_block(0xABCD, 1.5)
    assert block.ssrc == 0xABCD
    # Counting starts at the first packet received (seq 1): 4, 8, ..., 96 are lost.
    assert block.cumulative_lost == 24
    assert block.fraction_lost == 24 * 256 // 99
    assert block.highest_sequence == 99
    assert block.lsr == compact_ntp(ntp)
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s
    for i in range(100, 200):
        stats.update(i, 160 * i, 0.02 * i)
    second = stats.report_block(0xABCD, 3.0)
    assert second.fraction_lost == 0  # nothing lost in this interval
    assert second.cumulative_lost == 24


def test_mos_sanity() -> None:
    clean = estimate_mos("pcmu", 0.0)
    assert clean == pytest.approx(4.4, abs=0.05)
    assert estimate_mos("pcma", 0.0) == clean
    assert estimate_mos("pcmu", 5.0) < clean - 0.3
    assert estimate_mos("pcmu", 20.0) < estimate_mos("pcmu", 5.0)
    for codec in ("g722", "opus"):
        assert estimate_mos(codec, 5.0) < estimate_mos(codec, 0.0) <= 4.5
        assert estimate_mos(codec, 0.0) > 4.0
    # More delay, lower score (G.107 Id); past 177.3 ms it drops faster.
    assert estimate_mos("pcmu", 0.0, 300.0) < estimate_mos("pcmu", 0.0, 150.0) - 0.2
    assert estimate_mos("OPUS", 2.0) == estimate_mos("opus", 2.0)
    assert set(CODEC_IMPAIRMENTS) == {"pcmu", "pcma", "g722", "opus"}


def test_r_and_mos_edges() -> None:
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(120) == 4.5
    assert mos_from_r(93.2) == pytest.approx(4.41, abs=0.01)
    assert r_factor("pcmu", 0.0, 0.0) == pytest.approx(93.2)
    assert r_factor("pcmu", 100.0, 0.0) < 20
    # Bursty loss hurts more than random loss at the same rate.
    assert r_factor("pcmu", 5.0, 40.0, burst_ratio=2.0) < r_factor("pcmu", 5.0, 40.0)


def test_mouth_to_ear_delay() -> None:
    assert mouth_to_ear_delay_ms("pcmu") == 40.0
    assert mouth_to_ear_delay_ms("opus", jitter_buffer_ms=10, rtt_ms=60) == 20 + 6.5 + 10 + 30


def test_mos_method_says_which_constants_are_assumed() -> None:
    """G.711's Ie and Bpl are tabulated in G.113 Appendix I; G.722's Bpl and both Opus
    values are ours, and the record must say so."""
    assert mos_method("pcmu") == mos_method("PCMA") == MOS_CITED == "g107"
    assert mos_method("g722") == mos_method("opus") == MOS_ASSUMED == "g107-assumed"


def test_untimed_packets_count_but_are_no_jitter() -> None:
    """RFC 4733 events share the stream's sequence numbers, with repeated timestamps."""
    stats = ReceiverStats(8000)
    for i in range(10):
        stats.update(i, 160 * i, 0.02 * i)
    for i in range(10, 15):
        assert stats.update(i, 1600, 0.02 * i, timing=False)
    for i in range(15, 30):
        stats.update(i, 160 * i, 0.02 * i)
    assert (stats.expected, stats.lost) == (30, 0)
    assert stats.jitter < 1e-6
