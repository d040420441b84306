"""Fuzz the RTP and RTCP parsers, telephone-event decoding and the receive chain with atheris.

    python fuzz/fuzz_rtp.py -max_total_time=60 fuzz/corpus/rtp

An input is one or more UDP datagrams separated by ``SEPARATOR``. Each datagram goes
through ``parse_rtp_header`` and ``RtpPacket.parse`` (only RtpError; what parses
serializes and parses back the same), ``parse_compound`` (only RtcpError; what parses and
serializes parses back the same) and ``parse_event`` (only DtmfError).

The datagrams together are also one call's media stream through what
``runtime/media.py`` does with it: the first packet's payload type picks the codec (0
PCMU, 8 PCMA, 9 G.722, otherwise Opus as PT 111), packets of that type go through the
receiver statistics, the jitter buffer, the decoder with concealment and the resampler to
the agent's rate; PT 101 packets through the DTMF receiver; RTCP through the
round-trip-time arithmetic. Nothing there may raise, except DtmfError from
``DtmfReceiver.receive`` (documented: it raises on a malformed payload).
"""

from __future__ import annotations

import contextlib
import sys

from _common import instrumented, run, split

with instrumented(__name__ == "__main__"):
    from sipbridge.codecs import get_codec
    from sipbridge.media.dtmf import DtmfError, DtmfReceiver, parse_event
    from sipbridge.media.jitter import Frame, JitterBuffer
    from sipbridge.media.plc import with_concealment
    from sipbridge.media.quality import ReceiverStats
    from sipbridge.media.resample import Resampler
    from sipbridge.rtp.packet import RtpError, RtpPacket, is_rtcp, parse_rtp_header
    from sipbridge.rtp.rtcp import (
        ReceiverReport,
        RtcpError,
        SenderReport,
        SourceDescription,
        parse_compound,
        round_trip_time,
        serialize_compound,
    )

SEPARATOR = b"\xf0\x9f\x93\x9e--\xf0\x9f\x93\x9e"
MAX_DATAGRAMS = 64
CODEC_BY_PT = {0: "pcmu", 8: "pcma", 9: "g722"}
OPUS_PT = 111
DTMF_PT = 101
AGENT_RATE = 16000
# The largest PCM the chain may hand the agent for one packet: 10 s at the agent's rate.
MAX_PCM_BYTES = 2 * AGENT_RATE * 10


def check_rtp(data: bytes) -> None:
    try:
        header = parse_rtp_header(data)
    except RtpError:
        header = None
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        assert header is None, "parse_rtp_header accepted what RtpPacket.parse refused"
        return
    assert header is not None, "RtpPacket.parse accepted what parse_rtp_header refused"
    pt, seq, ts, ssrc, marker, start, end = header
    assert 0 <= start <= end <= len(data)
    assert (pt, seq, ts, ssrc, marker) == (
        packet.payload_type,
        packet.sequence,
        packet.timestamp,
        packet.ssrc,
        packet.marker,
    )
    assert packet.payload == data[start:end]
    again = RtpPacket.parse(packet.serialize())
    assert again == packet, (again, packet)


def check_rtcp(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    for packet in packets:
        if isinstance(packet, SenderReport | ReceiverReport):
            for block in packet.reports:
                round_trip_time(block, 0xE8A5_0000_0000_0000)
        elif isinstance(packet, SourceDescription):
            for ssrc, _items in packet.chunks:
                packet.cname_of(ssrc)
    try:
        wire = serialize_compound(packets)
    except RtcpError:
        return  # e.g. a body that was not a multiple of 32 bits once padding was removed
    assert parse_compound(wire) == packets


def check_event(data: bytes) -> None:
    try:
        event, end, volume, duration = parse_event(data)
    except DtmfError:
        return
    assert 0 <= event <= 255 and 0 <= volume <= 63 and 0 <= duration <= 0xFFFF
    assert isinstance(end, bool)


def check_stream(datagrams: list[bytes]) -> None:
    """The receive side of runtime/media.py, one datagram every 20 ms."""
    first = datagrams[0]
    pt0 = first[1] & 0x7F if len(first) > 1 else 0
    payload_type = pt0 if pt0 in CODEC_BY_PT else OPUS_PT
    info = get_codec(CODEC_BY_PT.get(payload_type, "opus"))
    rate = info.audio_rate_for(AGENT_RATE)
    codec_rate, clock_rate = rate, info.clock_rate
    decoder = with_concealment(info.decoder(rate), rate)
    to_agent = Resampler(rate, AGENT_RATE)
    jitter = JitterBuffer(clock_rate, min_delay_ms=20.0)
    receiver = ReceiverStats(clock_rate)
    dtmf = DtmfReceiver(clock_rate)

    def drain(now: float) -> None:  # MediaStream._drain
        while (event := jitter.pop(now)) is not None:
            if isinstance(event, Frame):
                pcm = decoder.decode(event.payload)
            else:
                samples = event.duration * codec_rate // clock_rate
                if samples <= 0:
                    continue
                if event.next_payload is not None and event.count:
                    pcm = decoder.decode_fec(event.next_payload, samples)
                else:
                    pcm = decoder.conceal(samples)
            assert len(pcm) <= MAX_PCM_BYTES, f"{len(pcm)} bytes of PCM from one packet"
            to_agent.process(pcm)

    now = 100.0
    for data in datagrams:
        now += 0.02
        if is_rtcp(data):
            check_rtcp(data)  # rtcp_received: parse, then the report arithmetic
            continue
        try:
            pt, seq, ts, ssrc, marker, start, end = parse_rtp_header(data)
        except RtpError:
            continue
        if pt == payload_type:
            receiver.update(seq, ts, now, end - start)
            jitter.push(seq, ts, data[start:end], now, ssrc=ssrc)
        elif pt == DTMF_PT:
            with contextlib.suppress(DtmfError):  # documented; see the module docstring
                dtmf.receive(data[start:end], ts, marker, now)
            continue
        else:
            continue
        drain(now)
        dtmf.poll(now)
        receiver.report_block(0x1234, now)
    # The rest of the stream after the caller went quiet.
    for _ in range(5):
        now += 0.2
        drain(now)
        dtmf.poll(now)


def check(data: bytes) -> None:
    datagrams = split(data, SEPARATOR, MAX_DATAGRAMS)
    for datagram in datagrams:
        check_rtp(datagram)
        check_rtcp(datagram)
        check_event(datagram)
        check_event(datagram[12:])  # the payload of a minimal RTP header
    check_stream(datagrams)


if __name__ == "__main__":
    run(check, "rtp")
    sys.exit(0)
