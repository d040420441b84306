"""MediaSession, sans-I/O: bytes and a fake clock in, PCM and packets out."""

from __future__ import annotations

import random

import pytest

from sipbridge.codecs import get_codec
from sipbridge.media.dtmf import encode_event
from sipbridge.media.session import (
    FRAME_SECONDS,
    HELD_PACKETS,
    REBIND_SILENCE_SECONDS,
    MediaSession,
    SourceState,
)
from sipbridge.rtp.packet import RtpPacket
from sipbridge.rtp.rtcp import ReceiverReport, ReportBlock, parse_compound, serialize_compound
from sipbridge.sdp.negotiate import Negotiated

CALLER = ("127.0.0.1", 40000)
SDP = ("127.0.0.1", 30000)
ULAW = get_codec("pcmu")


def session(codec: str = "pcmu", pt: int = 0, agent_rate: int = 8000) -> MediaSession:
    clock = get_codec(codec).clock_rate
    negotiated = Negotiated(pt, codec, clock, 101, SDP[0], SDP[1], "sendrecv", None)
    return MediaSession(negotiated, agent_rate, rng=random.Random(1))


def tone(level: int) -> bytes:
    return bytes([0, level]) * 160


def rtp(seq: int, level: int = 0x10, ssrc: int = 77, ts: int | None = None) -> bytes:
    payload = ULAW.encoder().encode(tone(level))
    return RtpPacket(
        0, seq & 0xFFFF, (seq * 160 if ts is None else ts) & 0xFFFFFFFF, ssrc, payload=payload
    ).serialize()


def decoded(level: int) -> bytes:
    return ULAW.decoder().decode(ULAW.encoder().encode(tone(level)))


def test_caller_packets_in_order_go_to_the_agent_at_once_bit_exact() -> None:
    media = session()
    media.start(0.0)
    out = [media.receive_rtp(rtp(n), CALLER, n * 0.02) for n in range(5)]
    assert out == [decoded(0x10)] * 5
    assert media.remote == CALLER  # symmetric RTP: learned from the first packet
    assert media.source_state is SourceState.LOCKED
    assert media.stats.packets_in == 5 and media.stats.refused_source == 0


def test_held_packets_are_played_at_release_from_the_given_time_on() -> None:
    # The answer to our offer is awaited: the far end's first packets are kept raw, then
    # played in order once it is applied; those before ``since`` (ringback) are dropped.
    media = session()
    media.hold()
    assert [media.receive_rtp(rtp(n, 0x20 + n), CALLER, n * 0.02) for n in range(4)] == [b""] * 4
    assert media.stats.packets_in == 0 and media.source_state is SourceState.LEARNING
    media.update_remote(CALLER)
    played = media.release(since=0.04)  # the packets at 0.04 and 0.06
    assert played == decoded(0x22) + decoded(0x23)
    assert media.stats.packets_in == 2 and media.stats.dropped_in == 2
    assert media.remote == CALLER and media.source_state is SourceState.LOCKED
    # Released: the next packet plays at once, after them.
    assert media.receive_rtp(rtp(4, 0x24), CALLER, 0.08) == decoded(0x24)


def test_holding_keeps_only_the_newest_packets() -> None:
    media = session()
    media.hold()
    for n in range(HELD_PACKETS + 5):
        media.receive_rtp(rtp(n, n), CALLER, n * 0.02)
    assert media.stats.dropped_in == 5
    played = media.release(since=float("-inf"))
    assert played == b"".join(decoded(n) for n in range(5, HELD_PACKETS + 5))
    assert media.release(since=0.0) == b""  # nothing held any more


def test_rejects_garbage_other_payload_types_and_counts_them() -> None:
    media = session()
    media.start(0.0)
    assert media.receive_rtp(b"\x80\x00", CALLER, 0.0) == b""
    comfort_noise = RtpPacket(13, 1, 0, 77, payload=b"\x40").serialize()
    assert media.receive_rtp(comfort_noise, CALLER, 0.0) == b""
    assert media.stats.dropped_in == 2 and media.stats.packets_in == 0
    assert media.source_state is SourceState.LEARNING  # garbage teaches no source


def test_a_gap_is_concealed_on_the_tick_and_counted_as_concealment() -> None:
    media = session()
    media.start(0.0)
    media.receive_rtp(rtp(0), CALLER, 0.0)
    media.receive_rtp(rtp(1), CALLER, 0.02)
    # packet 2 never comes; 3 is there
    assert media.poll(0.055) == b""  # 2 is waited for one frame past its time
    pcm = media.receive_rtp(rtp(3), CALLER, 0.06)
    assert len(pcm) == 640  # 20 ms concealed + packet 3 (overlap-added, G.711 App. I)
    assert media.stats.concealed_ms == 20
    quality = media.quality()
    assert quality.packets_lost == 1


def test_trailing_silence_after_the_caller_stops_is_not_concealment() -> None:
    media = session()
    media.start(0.0)
    for n in range(10):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    agent_audio = b"".join(media.poll(0.2 + k * 0.02) for k in range(100))  # 2 s, no packet
    assert len(agent_audio) >= 95 * 320  # the agent keeps getting a continuous stream
    assert agent_audio[-3200:] == bytes(3200)  # faded to digital silence
    assert media.stats.concealed_ms == 0


def test_an_underrun_followed_by_the_late_stream_counts_as_concealment() -> None:
    media = session()
    media.start(0.0)
    for n in range(3):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    media.poll(0.10)  # packet 3 is late: 40 ms of underrun concealed so far
    media.poll(0.12)
    # packets 3 and 4 arrive late together; 3's time was concealed, 4 plays
    media.receive_rtp(rtp(3), CALLER, 0.125)
    media.receive_rtp(rtp(4), CALLER, 0.126)
    media.receive_rtp(rtp(5), CALLER, 0.127)
    assert media.stats.concealed_ms > 0


def test_concealment_stops_running_once_faded_out() -> None:
    media = session()
    media.start(0.0)
    media.receive_rtp(rtp(0), CALLER, 0.0)
    calls = 0
    decoder = media._decoder
    original = decoder.conceal

    def counting(samples: int) -> bytes:
        nonlocal calls
        calls += 1
        return original(samples)

    decoder.conceal = counting  # type: ignore[method-assign]
    for k in range(1, 200):
        media.poll(k * 0.02)
    assert calls <= 8  # about 120 ms of concealment, then plain silence


def test_silence_suppression_gap_is_neither_loss_nor_concealment() -> None:
    media = session()
    media.start(0.0)
    for n in range(5):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    # RFC 3551 §4.1: sequence continues, timestamp jumps by 1 s of silence
    for n in range(5, 10):
        media.receive_rtp(rtp(n, ts=(n + 50) * 160), CALLER, 1.0 + (n - 5) * 0.02)
    media.poll(1.2)
    assert media.quality().packets_lost == 0
    assert media.stats.concealed_ms == 0


# -- strict RTP -------------------------------------------------------------------------


def talking_caller(media: MediaSession, packets: int = 20) -> float:
    media.start(0.0)
    for n in range(packets):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    return packets * 0.02


@pytest.mark.parametrize("ssrc", [77, 1234])  # the caller's SSRC, and a new one
@pytest.mark.parametrize("source", [("127.0.0.1", 40002), ("127.0.0.2", 40000)])
def test_an_injected_burst_mid_call_neither_plays_nor_moves_the_media(
    ssrc: int, source: tuple[str, int]
) -> None:
    media = session()
    now = talking_caller(media)
    injected = decoded(0x7F)
    heard = b""
    # 500 packets (10 s of audio) as a burst, interleaved with the caller still talking;
    # the attacker even continues the caller's sequence numbers.
    for k in range(500):
        heard += media.receive_rtp(rtp(20 + k, 0x7F, ssrc=ssrc), source, now + k * 0.001)
        if k % 20 == 0:
            heard += media.receive_rtp(rtp(20 + k // 20, 0x10), CALLER, now + k * 0.001)
    assert injected not in [heard[i : i + 320] for i in range(0, len(heard), 320)]
    assert media.remote == CALLER
    assert media.stats.refused_source == 500
    assert media.stats.source_changes == 0


def test_a_burst_while_the_caller_is_quiet_needs_its_ssrc_and_sequence() -> None:
    media = session()
    now = talking_caller(media) + 2 * REBIND_SILENCE_SECONDS  # the caller went quiet
    other = ("127.0.0.9", 5000)
    # a new SSRC, or the caller's SSRC with sequence numbers far off, or time going back
    assert media.receive_rtp(rtp(20, 0x7F, ssrc=999), other, now) == b""
    assert media.receive_rtp(rtp(5000, 0x7F), other, now) == b""
    assert media.receive_rtp(rtp(20, 0x7F, ts=19 * 160 - 8000), other, now) == b""
    assert media.receive_rtp(rtp(20, 0x7F, ts=19 * 160 + 8000 * 60), other, now) == b""
    assert media.remote == CALLER
    assert media.stats.refused_source == 4


def test_a_nat_rebinding_continues_the_stream_from_a_new_source() -> None:
    media = session()
    now = talking_caller(media)
    rebound = ("127.0.0.1", 40100)
    # while the caller still talks from its old source, the new one is refused
    media.receive_rtp(rtp(20), CALLER, now)
    assert media.receive_rtp(rtp(21), rebound, now + 0.02) == b""
    # after the old source has been silent for a second, the continuation is accepted
    later = now + REBIND_SILENCE_SECONDS + 0.05
    assert media.receive_rtp(rtp(70), rebound, later) != b"" or media.remote == rebound
    assert media.remote == rebound
    assert media.rtcp_remote == ("127.0.0.1", 40101)
    assert media.stats.source_changes == 1
    # and now the old source is the stranger
    assert media.receive_rtp(rtp(71), CALLER, later + 0.02) == b""


def test_dtmf_only_from_the_learned_source() -> None:
    media = session()
    talking_caller(media)
    event = RtpPacket(101, 30, 5000, 77, marker=True, payload=encode_event(1, True, 10, 800))
    media.receive_rtp(event.serialize(), ("127.0.0.1", 666), 1.0)
    assert media.digits == []
    media.receive_rtp(event.serialize(), CALLER, 1.0)
    assert [d.digit for d in media.digits] == ["1"]


def test_a_reinvite_with_a_new_address_learns_again() -> None:
    media = session()
    talking_caller(media)
    media.update_remote(SDP)  # same SDP address (hold/unhold): keep the learned source
    assert media.source_state is SourceState.LOCKED and media.remote == CALLER
    media.update_remote(("127.0.0.5", 7000))
    assert media.source_state is SourceState.LEARNING
    assert media.remote == ("127.0.0.5", 7000)
    media.receive_rtp(rtp(21), ("127.0.0.5", 7002), 1.0)
    assert media.remote == ("127.0.0.5", 7002)


def test_rtcp_only_from_the_callers_host() -> None:
    media = session()
    rr = serialize_compound([ReceiverReport(ssrc=77, reports=())])
    media.start(0.0)
    media.receive_rtcp(rr, ("127.0.0.1", 40001), 0.0, 1e9)  # before any RTP: refused
    assert media.stats.refused_rtcp == 1
    talking_caller(media)
    media.receive_rtcp(rr, ("127.0.0.3", 40001), 1.0, 1e9)  # another host
    media.receive_rtcp(b"garbage", ("127.0.0.1", 40001), 1.0, 1e9)
    assert media.stats.refused_rtcp == 3
    media.receive_rtcp(rr, ("127.0.0.1", 41001), 1.0, 1e9)  # NAT-mapped port: learned
    assert media.rtcp_remote == ("127.0.0.1", 41001)
    media.receive_rtcp(rr, ("127.0.0.1", 40001), 1.0, 1e9)  # then no other port
    assert media.stats.refused_rtcp == 4


def test_an_ipv6_caller_is_learned_as_its_socket_reports_it() -> None:
    """IPv6 sockets give (host, port, flowinfo, scope_id): the learned source is kept in
    that form, so each later packet matches it with one comparison; another flowinfo
    with the same host and port is still the caller, another port is not."""
    negotiated = Negotiated(0, "pcmu", 8000, 101, "::1", 30000, "sendrecv", None)
    media = MediaSession(negotiated, 8000, rng=random.Random(1))
    assert media.rtcp_remote == ("::1", 30001)
    caller = ("::1", 40000, 0, 0)
    media.start(0.0)
    out = [media.receive_rtp(rtp(n), caller, n * 0.02) for n in range(20)]
    assert out == [decoded(0x10)] * 20
    assert media.remote == caller and media.rtcp_remote == ("::1", 40001, 0, 0)
    assert media.receive_rtp(rtp(20), ("::1", 40000, 7, 0), 0.4) == decoded(0x10)
    assert media.receive_rtp(rtp(21), ("::1", 40002, 0, 0), 0.42) == b""
    assert media.stats.refused_source == 1 and media.stats.source_changes == 0
    event = RtpPacket(101, 22, 5000, 77, marker=True, payload=encode_event(1, True, 10, 800))
    media.receive_rtp(event.serialize(), ("::1", 40000, 0, 0), 0.44)
    assert [d.digit for d in media.digits] == ["1"]
    rr = serialize_compound([ReceiverReport(ssrc=77, reports=())])
    media.receive_rtcp(rr, ("::1", 40001, 0, 0), 0.5, 1e9)
    media.receive_rtcp(rr, ("::1", 40001, 3, 0), 0.5, 1e9)  # another flowinfo: same port
    media.receive_rtcp(rr, ("::1", 40003, 0, 0), 0.5, 1e9)
    assert media.stats.refused_rtcp == 1


def test_rtcp_report_gives_the_round_trip_time() -> None:
    media = session()
    talking_caller(media)
    report = parse_compound(media.rtcp_report(1.0, 1_000_000.0) or b"")[0]
    lsr = (report.ntp_timestamp >> 16) & 0xFFFFFFFF  # type: ignore[attr-defined]
    block = ReportBlock(media.ssrc, 0, 0, 0, 0, lsr, 65536 // 10)  # held 100 ms
    rr = serialize_compound([ReceiverReport(ssrc=77, reports=(block,))])
    media.receive_rtcp(rr, ("127.0.0.1", 40001), 1.3, 1_000_000.3)
    assert media.stats.rtt_ms == pytest.approx(200, abs=2)


# -- agent → caller ---------------------------------------------------------------------


def test_tick_sends_agent_audio_then_cached_silence() -> None:
    media = session()
    media.start(0.0)
    first = media.tick(0.0, tone(0x20))
    second = media.tick(0.02, None)
    third = media.tick(0.04, None)
    packets = [RtpPacket.parse(p[0]) for p in (first, second, third)]
    assert packets[0].payload == ULAW.encoder().encode(tone(0x20))
    assert packets[1].payload == packets[2].payload == ULAW.encoder().encode(bytes(320))
    assert packets[1].payload is not None and media.talking is False
    assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 160, 320]
    assert media.timeline == pytest.approx(3 * FRAME_SECONDS)


def test_a_talkspurt_starts_with_the_marker_bit() -> None:
    media = session()
    media.start(0.0)
    markers = []
    for k, frame in enumerate([None, None, tone(1), tone(1), None, tone(2)]):
        markers.append(RtpPacket.parse(media.tick(k * 0.02, frame)[0]).marker)
    assert markers == [True, False, True, False, False, True]


def test_hold_sends_nothing_but_time_runs() -> None:
    media = session()
    media.start(0.0)
    before = RtpPacket.parse(media.tick(0.0, None)[0])
    media.sending = False
    assert media.tick(0.02, tone(3)) == []
    media.sending = True
    after = RtpPacket.parse(media.tick(0.04, tone(3))[0])
    assert after.sequence == before.sequence + 1
    assert after.timestamp == before.timestamp + 320
    assert after.marker


def test_skip_moves_rtp_time_and_the_timeline() -> None:
    media = session()
    media.start(0.0)
    a = RtpPacket.parse(media.tick(0.0, tone(1))[0])
    media.skip(7)
    b = RtpPacket.parse(media.tick(0.3, tone(1))[0])
    assert b.timestamp - a.timestamp == 8 * 160 and b.sequence == a.sequence + 1
    assert media.timeline == pytest.approx(9 * FRAME_SECONDS)
    media.skip(0)
    assert media.timeline == pytest.approx(9 * FRAME_SECONDS)


def test_dtmf_events_replace_audio_frames() -> None:
    media = session()
    media.start(0.0)
    assert media.send_dtmf("5", 40)
    assert media.sending_dtmf
    sent = []
    for k in range(12):
        sent += [RtpPacket.parse(p) for p in media.tick(k * 0.02, tone(4))]
    events = [p for p in sent if p.payload_type == 101]
    assert sent[0].payload_type == 101 and len(events) >= 4
    assert sum(1 for p in events if p.payload[1] & 0x80) == 3  # three end packets
    assert sent[-1].payload_type == 0 and not media.sending_dtmf


def test_no_dtmf_without_telephone_event() -> None:
    negotiated = Negotiated(0, "pcmu", 8000, None, SDP[0], SDP[1], "sendrecv", None)
    media = MediaSession(negotiated, 8000)
    assert not media.send_dtmf("1")


def test_codec_change_keeps_ssrc_and_sequence() -> None:
    media = session()
    media.start(0.0)
    a = RtpPacket.parse(media.tick(0.0, None)[0])
    media.set_codec(Negotiated(9, "g722", 8000, 101, SDP[0], SDP[1], "sendrecv", None))
    b = RtpPacket.parse(media.tick(0.02, None)[0])
    assert b.ssrc == a.ssrc and b.sequence == a.sequence + 1 and b.payload_type == 9
    assert len(b.payload) == 160  # G.722 silence is encoded (the codec keeps state)


def test_rtcp_comes_due_every_few_seconds() -> None:
    media = session()
    media.start(0.0)
    assert 2.5 <= media.rtcp_due <= 7.5
    media.rtcp_report(media.rtcp_due, 1e9)
    assert media.rtcp_due > 2.5


def test_response_time_per_turn_from_caller_speech_to_the_agents_talkspurt() -> None:
    import numpy as np

    media = session()
    media.start(0.0)
    rng = np.random.default_rng(3)
    now = 0.0
    for n in range(100):  # 0.4 s of quiet line, then 1.6 s of speech-like audio
        level = 0.0 if n < 20 else 3000 * (1.5 + np.sin(2 * np.pi * 4 * n / 50))
        pcm = np.clip(rng.normal(0, 1, 160) * level, -32768, 32767).astype("<i2").tobytes()
        payload = ULAW.encoder().encode(pcm)
        media.receive_rtp(RtpPacket(0, n, n * 160, 77, payload=payload).serialize(), CALLER, now)
        media.tick(now, None)
        now += 0.02
    for n in range(100, 125):  # the caller is quiet for half a second
        media.receive_rtp(rtp(n, 0), CALLER, now)
        media.tick(now, None)
        now += 0.02
    media.tick(now, tone(0x20))  # the agent answers
    quality = media.quality()
    assert quality.turns == 1
    assert quality.response_p50_ms is not None and 500 <= quality.response_p50_ms <= 600
    assert quality.response_max_ms == quality.response_p50_ms


def test_nothing_measured_is_null_not_a_perfect_score() -> None:
    media = session()
    media.start(0.0)
    for k in range(50):
        media.tick(k * 0.02, None)  # we send, the caller never does
    quality = media.quality()
    assert quality.packets_out == 50 and quality.packets_in == 0
    assert quality.mos is None and quality.jitter_ms is None and quality.mos_method is None
    assert quality.loss_percent is None and quality.packets_lost is None
    assert quality.concealed_ms is None


def test_a_codec_change_keeps_the_whole_calls_figures() -> None:
    media = session()
    media.start(0.0)
    for n in range(50):
        if n not in (10, 11):  # two lost with PCMU
            media.receive_rtp(rtp(n), CALLER, n * 0.02)
    media.set_codec(Negotiated(8, "pcma", 8000, 101, SDP[0], SDP[1], "sendrecv", None))
    alaw = get_codec("pcma").encoder()
    for n in range(50, 100):
        if n == 70:
            continue  # one lost with PCMA
        payload = alaw.encode(tone(0x10))
        packet = RtpPacket(8, n, n * 160, 77, payload=payload).serialize()
        media.receive_rtp(packet, CALLER, n * 0.02)
    quality = media.quality()
    assert quality.packets_in == 97
    assert quality.packets_lost == 3
    assert quality.loss_percent == pytest.approx(3.0)  # 3 of 100 expected (50 + 50)
    assert quality.mos is not None and quality.mos_method == "g107"


def test_a_new_ssrc_and_time_base_keep_the_audio_flowing() -> None:
    """A PBX re-anchoring the call's media mid-call: the same source, then a new SSRC with
    new sequence numbers and timestamps, then a jump of that stream's timestamps. Every
    packet reaches the agent at once, in order; the record counts the whole call without
    loss and without a jitter spike."""
    media = session()
    media.start(0.0)
    heard = []
    for n in range(50):
        heard.append(media.receive_rtp(rtp(n, 0x10), CALLER, n * 0.02))
    for k in range(50):  # new SSRC, sequence and time base
        n = 50 + k
        packet = rtp(40000 + k, 0x20, ssrc=0xABCDEF, ts=7_000_000 + 160 * k)
        heard.append(media.receive_rtp(packet, CALLER, n * 0.02))
    for k in range(50):  # the same SSRC jumps 100 s of RTP time ahead
        n = 100 + k
        packet = rtp(40050 + k, 0x30, ssrc=0xABCDEF, ts=7_000_000 + 800_000 + 160 * (50 + k))
        heard.append(media.receive_rtp(packet, CALLER, n * 0.02))
        assert media.poll(n * 0.02 + 0.01) == b""  # nothing concealed between packets
    assert heard == [decoded(0x10)] * 50 + [decoded(0x20)] * 50 + [decoded(0x30)] * 50
    assert media.stats.refused_source == 0 and media.stats.concealed_ms == 0
    quality = media.quality()
    assert quality.packets_in == 150 and quality.packets_lost == 0
    assert quality.jitter_ms is not None and quality.jitter_ms < 1.0
    assert quality.mos is not None and quality.mos > 4.3


def test_dtmf_events_in_the_audio_sequence_are_not_loss() -> None:
    """RFC 4733 §2.1: a key press takes sequence numbers of the caller's stream. They are
    received packets, not lost audio; their repeated timestamps are not jitter."""
    media = session()
    media.start(0.0)
    for n in range(20):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    for k in range(7):  # one key, 140 ms: updates, then the end packet three times
        end = k >= 4
        payload = encode_event(1, end, 10, 160 * min(k + 1, 5))
        event = RtpPacket(101, 20 + k, 20 * 160, 77, marker=k == 0, payload=payload)
        media.receive_rtp(event.serialize(), CALLER, (20 + k) * 0.02)
    for n in range(27, 60):
        media.receive_rtp(rtp(n), CALLER, n * 0.02)
    assert [d.digit for d in media.digits] == ["1"]
    quality = media.quality()
    assert quality.packets_lost == 0 and quality.loss_percent == 0.0
    assert quality.jitter_ms is not None and quality.jitter_ms < 1.0
    assert quality.mos is not None and quality.mos > 4.3
