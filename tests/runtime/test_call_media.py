"""End-to-end media with real peers: G.722 and Opus both ways, codec negotiation, SIP INFO
DTMF, the media timeout, hold/unhold and a codec change by re-INVITE.

The codec round trips use SIPp as the caller: the test encodes a speech-like signal, writes
the RTP into a pcap (``tests.support.pcap.write_rtp_pcap``), SIPp replays it with
``play_pcap_audio`` (it sends the UDP payloads as they are, whatever the payload type) and
hangs up; an echo agent sends the audio back, and what sipbridge sends to SIPp is captured
on the loopback interface (root only, like the bit-exact test in test_call.py). The other
tests drive raw SIP and RTP from UDP sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sipbridge.codecs import get_codec
from sipbridge.codecs.opus import OpusDecoder, OpusEncoder
from sipbridge.rtp.packet import RtpPacket, parse_rtp_header
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sdp.session import MediaDescription, parse_sdp
from sipbridge.sip import transaction
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallRecord, CallStatus
from tests.runtime.test_agent_link import RtpListener
from tests.runtime.test_call import NUMBER, SERVICE, UdpClient, answer_bye, records, sipp_ok
from tests.support.agents import AgentCall, EchoAgent, ScriptedAgent
from tests.support.pcap import write_rtp_pcap
from tests.support.require import require
from tests.support.settings import BridgeFactory
from tests.support.sipp import play_pcap_scenario, run_sipp
from tests.support.sniff import LoopbackSniffer

SECONDS = 1.5  # of caller speech
CALLER_SSRC = 0x5EED1234
AS_ROOT = pytest.mark.requires("sipp", "root")  # SIPp's pcap play and the loopback sniffer
NEEDS_OPUS = pytest.mark.requires("libopus")

G722_OFFER = ("9", "      a=rtpmap:9 G722/8000\n")
PCMU_OFFER = ("0", "      a=rtpmap:0 PCMU/8000\n")
OPUS_OFFER = ("111", "      a=rtpmap:111 opus/48000/2\n      a=fmtp:111 useinbandfec=1\n")


async def route_to(server: SipBridgeServer, url: str, sample_rate: int = 8000) -> None:
    await service.add_agent(server.db, "echo", url, sample_rate=sample_rate)
    await service.add_number(server.db, NUMBER, "echo")


# ---------------------------------------------------------------- signals


def speech_like(rate: int, seconds: float = SECONDS) -> np.ndarray:
    """A voiced, speech-like test signal as int16 at ``rate``: harmonics of a gliding
    100-200 Hz pitch up to 3.4 kHz with two formant humps and a syllabic envelope.
    The same analytic signal at every rate, so it is the reference at any agent rate."""
    t = np.arange(int(rate * seconds)) / rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 1.3 * t) + 15 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    signal = np.zeros_like(t)
    for k in range(1, 25):
        f = k * pitch
        gain = np.where(f < 3400, 1.0 / k, 0.0)
        gain *= 1 + 1.5 * np.exp(-(((f - 700) / 300) ** 2)) + np.exp(-(((f - 1800) / 400) ** 2))
        signal += gain * np.sin(k * phase)
    signal *= np.minimum(1, t / 0.05) * (0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t - np.pi / 2))
    return (signal / np.max(np.abs(signal)) * 9000).astype(np.int16)


def frames(pcm: np.ndarray, samples: int) -> list[bytes]:
    return [pcm[i : i + samples].astype("<i2").tobytes() for i in range(0, len(pcm), samples)]


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def align(reference: np.ndarray, got: np.ndarray) -> tuple[float, int]:
    """The best normalized cross-correlation of ``reference`` with a window of ``got``
    (over every lag at which it fits) and that lag, in samples."""
    ref = reference.astype(np.float64)
    sig = got.astype(np.float64)
    n = len(ref)
    if len(sig) < n:
        sig = np.concatenate([sig, np.zeros(n - len(sig))])
    size = 1 << (len(sig) + n).bit_length()
    dots = np.fft.irfft(np.fft.rfft(sig, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = len(sig) - n + 1
    energy = np.concatenate([[0.0], np.cumsum(sig**2)])
    windows = energy[n : n + lags] - energy[:lags]
    ncc = dots[:lags] / np.sqrt(np.dot(ref, ref) * np.maximum(windows, 1e-9))
    lag = int(np.argmax(ncc))
    return float(ncc[lag]), lag


def spectral_similarity(reference: np.ndarray, got: np.ndarray, lag: int, rate: int) -> float:
    """Correlation of the short-time magnitude spectra (20 ms Hann frames, 50 % overlap)
    of ``reference`` and ``got`` from ``lag`` on: what a listener hears, blind to the phase
    a parametric codec such as Opus does not keep. A 50 ms misalignment of this signal
    scores about 0.79, a steady 150 Hz voice about 0.72, noise 0.3."""
    n = min(len(reference), len(got) - lag)
    width = rate // 50
    window = np.hanning(width)

    def spectra(x: np.ndarray) -> np.ndarray:
        starts = range(0, n - width, width // 2)
        return np.array([np.abs(np.fft.rfft(x[s : s + width] * window)) for s in starts])

    a = spectra(reference[:n].astype(np.float64)).ravel()
    b = spectra(got[lag : lag + n].astype(np.float64)).ravel()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def rtp_stream(payloads: list[bytes], payload_type: int, step: int) -> list[bytes]:
    """Caller RTP: one SSRC, consecutive sequence numbers, the timestamp ``step`` apart."""
    return [
        RtpPacket(payload_type, 1000 + i, 50000 + i * step, CALLER_SSRC, i == 0, p).serialize()
        for i, p in enumerate(payloads)
    ]


# ---------------------------------------------------------------- SIPp round trips


@dataclass
class Sent:
    """What sipbridge sent to the caller from the call's RTP port, as sniffed, in order."""

    headers: list[tuple[int, int, int, int, bool, int, int]]
    payloads: list[bytes]
    times: list[float]


async def sipp_round_trip(
    bridge: SipBridgeServer,
    tmp_path: Path,
    formats: tuple[str, str],
    packets: list[bytes],
    agent_rate: int,
) -> tuple[CallRecord, AgentCall, Sent]:
    """SIPp offers ``formats``, plays ``packets`` (20 ms apart) and hangs up; an echo agent
    at ``agent_rate`` sends the caller's audio back. Returns the record, the agent's view
    and the RTP sipbridge sent to SIPp."""
    write_rtp_pcap(tmp_path / "caller.pcap", packets, ("127.0.0.1", 16000), ("127.0.0.1", 16002))
    pause_ms = int(len(packets) * 20 + 700)  # the echo of the last frame has come back
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url, sample_rate=agent_rate)
        sniffer = LoopbackSniffer(
            range(bridge.settings.rtp_port_min, bridge.settings.rtp_port_max + 1)
        )
        sniffer.start()
        port = asyncio.ensure_future(rtp_port_of_the_call(bridge))
        try:
            result = await run_sipp(
                bridge.sip_address,
                tmp_path,
                service=SERVICE,
                scenario=play_pcap_scenario(formats, "caller.pcap", pause_ms),
                timeout=15,
            )
        finally:
            sniffer.stop()
            port.cancel()
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    assert port.done() and not port.cancelled(), "the call never got an RTP port"
    sent = Sent([], [], [])
    # Only our call's RTP port: other programs on this machine (SIPp, other servers) may
    # send from ports in the sniffed range too.
    for packet in sniffer.packets:
        if packet.src[1] != port.result():
            continue
        data = packet.payload
        header = parse_rtp_header(data)
        sent.headers.append(header)
        sent.payloads.append(data[header[5] : header[6]])
        sent.times.append(packet.at)
    assert sent.headers, "no RTP from sipbridge"
    assert sniffer.dropped == 0, f"the sniffer fell behind: {sniffer.dropped} frames dropped"
    return record, call, sent


async def rtp_port_of_the_call(bridge: SipBridgeServer) -> int:
    while True:
        for call in bridge.calls.values():
            if call.rtp_port is not None:
                return call.rtp_port
        await asyncio.sleep(0.005)


def check_stream(sent: Sent, payload_type: int, step: int) -> None:
    """One SSRC and payload type, consecutive numbers, ``step`` clock units per packet,
    paced at 20 ms."""
    assert {h[3] for h in sent.headers} == {sent.headers[0][3]}
    assert {h[0] for h in sent.headers} == {payload_type}
    pairs = list(itertools.pairwise(sent.headers))
    gaps = [(a[1], b[1]) for a, b in pairs if (b[1] - a[1]) % 65536 != 1]
    assert gaps == [], f"sequence gaps in {len(sent.headers)} packets: {gaps}"
    assert all((b[2] - a[2]) % 2**32 == step for a, b in pairs)
    span = sent.times[-1] - sent.times[0]
    assert abs(len(sent.times) - 1 - span / 0.020) < 0.05 * len(sent.times)


@pytest.mark.sipp
@AS_ROOT
async def test_g722_both_ways_with_sipp(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """SIPp plays G.722 (PT 9) from a pcap made here; a 16 kHz echo agent; G.722 back."""
    bridge = await make_bridge()
    source = speech_like(16000)
    encoder = get_codec("g722").encoder(16000)
    payloads = [encoder.encode(f) for f in frames(source, 320)]
    assert {len(p) for p in payloads} == {160}
    record, call, sent = await sipp_round_trip(
        bridge, tmp_path, G722_OFFER, rtp_stream(payloads, 9, 160), 16000
    )

    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.codec == "g722"
    assert call.start is not None and call.start["media_format"]["sample_rate"] == 16000
    # Caller → agent: 20 ms frames at 16 kHz, exactly the caller's G.722 decoded (no
    # resampling at 16 kHz), which is the source within the codec's fidelity.
    assert call.audio and {len(f) for f in call.audio} == {640}
    got = b"".join(call.audio)
    decoder = get_codec("g722").decoder(16000)
    expected = b"".join(decoder.decode(p) for p in payloads)
    assert got[: len(expected)] == expected, (record.packets_lost, record.concealed_ms)
    ncc, lag = align(source, samples(got))
    assert ncc > 0.9 and lag < 100, (ncc, lag)

    # Agent → caller: G.722, 160 octets and 160 clock units (8 kHz RTP clock) per 20 ms,
    # decoding to the source again after the echo's delay.
    check_stream(sent, 9, 160)
    assert {len(p) for p in sent.payloads} == {160}
    back = get_codec("g722").decoder(16000)
    returned = samples(b"".join(back.decode(p) for p in sent.payloads))
    ncc, lag = align(source, returned)
    assert ncc > 0.9, (ncc, lag)
    assert spectral_similarity(source, returned, lag, 16000) > 0.95


@pytest.mark.sipp
@AS_ROOT
@NEEDS_OPUS
@pytest.mark.parametrize("agent_rate", [16000, 8000])
async def test_opus_both_ways_with_sipp(
    make_bridge: BridgeFactory, tmp_path: Path, agent_rate: int
) -> None:
    """SIPp plays Opus (PT 111, 48 kHz RTP clock) from a pcap made here; an echo agent at
    16 or 8 kHz; Opus back. Opus keeps the sound, not the waveform: the caller's audio is
    checked bit-exact against a plain libopus decode and by waveform correlation (the codec
    alone scores about 0.89 on this signal); the round trip, encoded twice, by its
    spectrum (the codec chain alone scores 0.99, a 50 ms misalignment 0.79)."""
    bridge = await make_bridge()
    source48 = speech_like(48000)
    encoder = OpusEncoder(48000, bitrate=32000)
    payloads = [encoder.encode(f) for f in frames(source48, 960)]
    record, call, sent = await sipp_round_trip(
        bridge, tmp_path, OPUS_OFFER, rtp_stream(payloads, 111, 960), agent_rate
    )

    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.codec == "opus"
    assert call.start is not None and call.start["media_format"]["sample_rate"] == agent_rate
    frame_bytes = agent_rate // 50 * 2
    assert call.audio and {len(f) for f in call.audio} == {frame_bytes}
    got = b"".join(call.audio)
    decoder = OpusDecoder(agent_rate)
    expected = b"".join(decoder.decode(p) for p in payloads)
    clean = (record.packets_lost, record.concealed_ms)
    assert got[: len(expected)] == expected, clean  # decoded straight at the agent's rate
    reference = speech_like(agent_rate)
    ncc, lag = align(reference, samples(got))
    assert ncc > 0.85 and lag < agent_rate // 50, (ncc, lag)
    assert spectral_similarity(reference, samples(got), lag, agent_rate) > 0.98

    # Agent → caller: Opus at 48 kHz RTP clock, 960 units per 20 ms packet.
    check_stream(sent, 111, 960)
    probe = OpusDecoder(48000)
    assert {probe.packet_samples(p) for p in sent.payloads} == {960}
    back = OpusDecoder(16000)
    returned = samples(b"".join(back.decode(p) for p in sent.payloads))
    source16 = speech_like(16000)
    ncc, lag = align(source16, returned)
    assert ncc > 0.5, (ncc, lag)
    assert spectral_similarity(source16, returned, lag, 16000) > 0.95


@pytest.mark.sipp
@AS_ROOT
async def test_a_new_ssrc_and_time_base_mid_call_keep_the_audio_flowing(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """SIPp plays a caller whose media is re-anchored twice mid-call, as a PBX does: a
    second SSRC with its own sequence numbers and time base, then a 100 s jump of that
    stream's timestamps. The agent hears all of it, bit-exact, with no gap between the
    parts; the record counts the whole call without loss or a jitter spike."""
    bridge = await make_bridge()
    source = speech_like(8000, seconds=3.0)
    encoder = get_codec("pcmu").encoder()
    payloads = [encoder.encode(f) for f in frames(source, 160)]
    third = len(payloads) // 3
    packets = []
    for i, payload in enumerate(payloads):
        if i < third:  # the first stream
            header = (1000 + i, 50000 + 160 * i, CALLER_SSRC)
        elif i < 2 * third:  # a new SSRC, sequence and time base
            header = (40000 + i, 7_000_000 + 160 * i, 0x0BADF00D)
        else:  # the same SSRC, its time base 100 s ahead
            header = (40000 + i, 7_800_000 + 160 * i, 0x0BADF00D)
        seq, ts, ssrc = header
        marker = i in (0, third, 2 * third)
        packets.append(RtpPacket(0, seq, ts, ssrc, marker, payload).serialize())
    record, call, _sent = await sipp_round_trip(bridge, tmp_path, PCMU_OFFER, packets, 8000)

    assert record.status is CallStatus.ANSWERED and record.codec == "pcmu"
    decoder = get_codec("pcmu").decoder()
    expected = b"".join(decoder.decode(p) for p in payloads)
    got = b"".join(call.audio)
    assert got[: len(expected)] == expected, (record.packets_lost, record.concealed_ms)
    assert record.packets_in == len(payloads) and record.packets_lost == 0
    assert record.jitter_ms is not None and record.jitter_ms < 10
    assert record.mos is not None and record.mos > 4.0


# ---------------------------------------------------------------- raw SIP dialogs


def sdp(port: int, formats: str, *attributes: str, version: int = 1) -> bytes:
    media = "".join(f"a={a}\r\n" for a in attributes)
    return (
        f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\n{media}"
    ).encode()


def sip_request(
    client: UdpClient,
    method: str,
    call_id: str,
    cseq: int,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    branch: str | None = None,
) -> bytes:
    to = f"<sip:{NUMBER}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    branch = branch or f"z9hG4bK-{call_id}-{method}-{cseq}-{random.getrandbits(32):x}"
    lines = [
        f"{method} sip:{NUMBER}@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{client.port};branch={branch};rport",
        f"From: <sip:+15005550006@127.0.0.1>;tag=f-{call_id}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:caller@127.0.0.1:{client.port}>",
        "Max-Forwards: 70",
    ]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def next_message(client: UdpClient, timeout: float) -> Request | Response | None:
    """The next SIP message to the client, None when nothing comes within ``timeout``."""
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(client.sock, 65535), timeout)
    except TimeoutError:
        return None
    return parse_message(data)


def audio_media(response: Response) -> MediaDescription:
    answer = parse_sdp(response.body)
    [media] = answer.media
    return media


def direction(media: MediaDescription) -> str:
    names = [name for name, _value in media.attributes]
    found = [d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if d in names]
    return found[0] if found else "sendrecv"


@dataclass
class Dialog:
    """A call from a raw UDP client, its RTP socket recording what sipbridge sends."""

    server: SipBridgeServer
    client: UdpClient
    call_id: str
    to_tag: str
    rtp: RtpListener
    rtp_port: int
    transport: asyncio.DatagramTransport
    answer: Response
    answered_at: float
    cseq: int = 1
    sdp_version: int = 1

    async def request(
        self, method: str, body: bytes = b"", content_type: str | None = None
    ) -> Response:
        self.cseq += 1
        message = sip_request(
            self.client,
            method,
            self.call_id,
            self.cseq,
            to_tag=self.to_tag,
            body=body,
            content_type=content_type,
        )
        self.client.send(message)
        response = await self.client.final()
        if method == "INVITE" and response.status >= 200:
            ack = sip_request(self.client, "ACK", self.call_id, self.cseq, to_tag=self.to_tag)
            self.client.send(ack)
        return response

    async def reinvite(self, formats: str, *attributes: str) -> Response:
        """A new offer in the dialog (ACKed); returns our final response to it."""
        self.sdp_version += 1
        body = sdp(self.rtp_port, formats, *attributes, version=self.sdp_version)
        return await self.request("INVITE", body, "application/sdp")

    def send_rtp(self, packet: bytes) -> None:
        call = next(iter(self.server.calls.values()))
        assert call.rtp_port is not None
        self.transport.sendto(packet, ("127.0.0.1", call.rtp_port))

    def received_since(self, moment: float) -> list[RtpPacket]:
        return [p for p, at in self.rtp.packets if at > moment]


@asynccontextmanager
async def dial(
    server: SipBridgeServer, call_id: str, formats: str = "0", *attributes: str
) -> AsyncIterator[Dialog]:
    """INVITE with an offer of ``formats`` → 200 → ACK."""
    loop = asyncio.get_running_loop()
    transport, rtp = await loop.create_datagram_endpoint(RtpListener, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    client = UdpClient(server.sip_address)
    try:
        offer = sdp(port, formats, *attributes)
        client.send(
            sip_request(client, "INVITE", call_id, 1, body=offer, content_type="application/sdp")
        )
        ok = await client.final()
        assert ok.status == 200 and ok.to.tag, ok
        client.send(sip_request(client, "ACK", call_id, 1, to_tag=ok.to.tag))
        yield Dialog(server, client, call_id, ok.to.tag, rtp, port, transport, ok, loop.time())
    finally:
        client.close()
        transport.close()


async def hang_up(dialog: Dialog) -> None:
    response = await dialog.request("BYE")
    assert response.status == 200 and response.cseq.method == "BYE"


ALL_FOUR = (
    "0 8 9 111",
    "rtpmap:0 PCMU/8000",
    "rtpmap:8 PCMA/8000",
    "rtpmap:9 G722/8000",
    "rtpmap:111 opus/48000/2",
    "fmtp:111 useinbandfec=1",
)


@pytest.mark.parametrize(
    ("codecs", "offer", "payload_type", "codec"),
    [
        (None, ("9", "rtpmap:9 G722/8000"), 9, "g722"),
        (None, ("111", "rtpmap:111 opus/48000/2", "fmtp:111 useinbandfec=1"), 111, "opus"),
        (None, ALL_FOUR, 0, "pcmu"),
        (("opus", "g722", "pcmu"), ALL_FOUR, 111, "opus"),
    ],
    ids=["only-g722", "only-opus", "default-prefers-pcmu", "opus-first-preference"],
)
async def test_answer_codec(
    make_bridge: BridgeFactory,
    codecs: tuple[str, ...] | None,
    offer: tuple[str, ...],
    payload_type: int,
    codec: str,
) -> None:
    if codec == "opus":
        require("libopus")
    bridge = await make_bridge(**({} if codecs is None else {"codecs": codecs}))
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, f"neg-{codec}-{payload_type}", *offer) as dialog:
            media = audio_media(dialog.answer)
            assert media.formats[0] == str(payload_type)
            assert media.formats == [str(payload_type)]  # one codec, no telephone-event offered
            rtpmap = media.rtpmap()[payload_type]
            assert (
                rtpmap
                == {
                    0: ("PCMU", 8000, None),
                    9: ("G722", 8000, None),
                    111: ("opus", 48000, 2),
                }[payload_type]
            )
            if codec == "opus":  # RFC 7587 §6.1: we want the caller's in-band FEC
                assert "useinbandfec=1" in media.fmtp()[111]
            await asyncio.sleep(0.1)
            packet = next(p for p, _ in dialog.rtp.packets)
            assert packet.payload_type == payload_type  # the media follows the answer
            await hang_up(dialog)
    [record] = await records(bridge)
    assert record.codec == codec and record.reason == "caller_hangup"


# ---------------------------------------------------------------- SIP INFO DTMF


async def test_sip_info_dtmf_reaches_the_agent_once(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "info-1") as dialog:
            # application/dtmf-relay, sent twice as one transaction (a retransmission).
            dialog.cseq += 1
            info = sip_request(
                dialog.client,
                "INFO",
                dialog.call_id,
                dialog.cseq,
                to_tag=dialog.to_tag,
                body=b"Signal=5\r\nDuration=160\r\n",
                content_type="application/dtmf-relay",
                branch="z9hG4bK-info-relay",
            )
            dialog.client.send(info)
            first = await dialog.client.final()
            dialog.client.send(info)
            again = await dialog.client.final()
            assert (first.status, first.cseq.method) == (200, "INFO")
            assert again.status == 200 and again.cseq.seq == first.cseq.seq
            plain = await dialog.request("INFO", b"7", "application/dtmf")
            assert plain.status == 200
            await asyncio.sleep(0.3)
            await hang_up(dialog)
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    dtmf = [t for t in call.texts if t.get("type") == "dtmf"]
    assert [d["digit"] for d in dtmf] == ["5", "7"]
    assert dtmf[0]["duration_ms"] == 160
    assert dtmf[1]["duration_ms"] > 0


# ---------------------------------------------------------------- media timeout


async def test_media_timeout_hangs_up_a_silent_caller(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(media_timeout=2.0)
    loop = asyncio.get_running_loop()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "mto-1") as dialog:  # and never sends RTP
            bye = await answer_bye(dialog.client, timeout=6)
            elapsed = loop.time() - dialog.answered_at
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    assert bye.method == "BYE"
    assert 1.9 <= elapsed <= 3.6, elapsed
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED
    assert (record.reason, record.hangup_by) == ("media_timeout", "server")
    assert call.stop == {"type": "stop", "reason": "media_timeout"}


async def test_a_200_never_acked_is_an_ack_timeout_and_no_bye_goes_out_before_it(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The media timeout (1 s) is shorter than the ACK timeout (64*T1, here 3 s): the
    # ACK timeout still decides, and no BYE is sent while the 200 is retransmitted
    # (RFC 3261 §13.3.1.4, §15).
    monkeypatch.setattr(transaction, "TIMER_L", 3.0)
    bridge = await make_bridge(media_timeout=1.0)
    loop = asyncio.get_running_loop()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-noack", "noack-1", 4010))
            ok = await client.final()
            answered = loop.time()
            assert ok.status == 200
            seen: list[tuple[float, str]] = []
            with contextlib.suppress(TimeoutError):
                while True:  # every message until the BYE (or 6 s of nothing)
                    data = await asyncio.wait_for(loop.sock_recv(client.sock, 65535), 6)
                    message = parse_message(data)
                    kind = message.method if isinstance(message, Request) else "200"
                    seen.append((loop.time() - answered, kind))
                    if kind == "BYE":
                        break
        finally:
            client.close()
    kinds = [kind for _, kind in seen]
    assert "BYE" in kinds and "200" in kinds
    assert kinds.index("BYE") > max(i for i, kind in enumerate(kinds) if kind == "200")
    assert seen[kinds.index("BYE")][0] >= 2.5  # at the ACK timeout, not the media timeout
    [record] = await records(bridge)
    assert record.reason == "ack_timeout", record.reason


async def test_media_timeout_spares_a_call_on_hold(make_bridge: BridgeFactory) -> None:
    """On hold (a=inactive) silence is expected; after unhold the timeout counts again,
    from the unhold on."""
    bridge = await make_bridge(media_timeout=2.0)
    loop = asyncio.get_running_loop()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "mto-hold") as dialog:
            held = await dialog.reinvite("0", "inactive")
            assert held.status == 200 and direction(audio_media(held)) == "inactive"
            message = await next_message(dialog.client, 3.5)  # well past the timeout
            assert message is None, message
            assert bridge.calls, "a call on hold was hung up"
            resumed = await dialog.reinvite("0", "sendrecv")
            unheld_at = loop.time()
            assert resumed.status == 200 and direction(audio_media(resumed)) == "sendrecv"
            await answer_bye(dialog.client, timeout=5)
            elapsed = loop.time() - unheld_at
    [record] = await records(bridge)
    assert record.reason == "media_timeout"
    assert len(agent.calls) == 1
    assert 1.9 <= elapsed <= 3.6, f"BYE {elapsed:.2f} s after the unhold"


# ---------------------------------------------------------------- hold and re-INVITE


async def test_hold_and_unhold_keep_the_call_and_the_agent(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    loop = asyncio.get_running_loop()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "hold-1") as dialog:
            await asyncio.sleep(0.2)
            assert len(dialog.rtp.packets) >= 5
            held = await dialog.reinvite("0", "sendonly")
            held_at = loop.time()
            assert held.status == 200 and direction(audio_media(held)) == "recvonly"
            await asyncio.sleep(0.5)
            assert dialog.received_since(held_at + 0.03) == []  # we stopped sending
            resumed = await dialog.reinvite("0", "sendrecv")
            resumed_at = loop.time()
            assert resumed.status == 200 and direction(audio_media(resumed)) == "sendrecv"
            await asyncio.sleep(0.3)
            after = dialog.received_since(resumed_at)
            assert len(after) >= 10  # RTP resumed
            assert bridge.calls and len(agent.calls) == 1
            assert not agent.calls[0].closed.is_set()
            await hang_up(dialog)
    packets = [p for p, _ in dialog.rtp.packets]
    assert {(p.ssrc, p.payload_type) for p in packets} == {(packets[0].ssrc, 0)}
    [record] = await records(bridge)
    assert record.reason == "caller_hangup"
    [call] = agent.calls
    assert call.start is not None and call.start["resumed"] is False  # the first start only
    assert call.stop == {"type": "stop", "reason": "caller_hangup"}
    # RFC 3550 §5.1: sequence numbers count packets sent, so the hold leaves no gap (the
    # timestamp, which follows the clock, jumps instead).
    pairs = [(a.sequence, b.sequence) for a, b in itertools.pairwise(packets)]
    gaps = [(a, b) for a, b in pairs if (b - a) % 65536 != 1]
    assert gaps == [], f"sequence gaps {gaps}"


async def test_reinvite_switches_codec_to_g722(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    loop = asyncio.get_running_loop()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "switch-1") as dialog:
            await asyncio.sleep(0.2)
            assert {p.payload_type for p, _ in dialog.rtp.packets} == {0}
            switched = await dialog.reinvite("9", "rtpmap:9 G722/8000")
            switched_at = loop.time()
            assert switched.status == 200
            media = audio_media(switched)
            assert media.formats == ["9"] and media.rtpmap()[9] == ("G722", 8000, None)
            # The caller talks G.722 now; the (8 kHz) agent still hears it.
            heard = len(agent.calls[0].audio)
            encoder = get_codec("g722").encoder(16000)
            payloads = [encoder.encode(f) for f in frames(speech_like(16000, 0.4), 320)]
            for packet in rtp_stream(payloads, 9, 160):
                dialog.send_rtp(packet)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            assert len(agent.calls[0].audio) - heard >= 15
            assert bridge.calls and len(agent.calls) == 1
            assert not agent.calls[0].closed.is_set()
            await hang_up(dialog)
    assert agent.calls[0].start is not None and agent.calls[0].start["resumed"] is False
    after = dialog.received_since(switched_at + 0.03)
    assert after and {p.payload_type for p in after} == {9}
    assert {len(p.payload) for p in after} == {160}
    assert all(b.timestamp - a.timestamp == 160 for a, b in itertools.pairwise(after))
    [record] = await records(bridge)
    assert record.codec == "g722" and record.reason == "caller_hangup"


async def test_the_agents_response_time_per_turn_is_in_the_record(
    make_bridge: BridgeFactory,
) -> None:
    """A real call: the caller says something (speech-like audio, then quiet); the agent
    answers 400 ms after the caller's audio stops reaching it. The record holds one turn
    with the response time measured at the bridge."""
    bridge = await make_bridge()
    loop = asyncio.get_running_loop()
    spoke_until = 0.0

    async def answer_after_speech(ws: Any, call: AgentCall) -> None:
        # wait until the caller's speech has reached the agent, then until 400 ms after
        while loop.time() < spoke_until + 0.4 or not spoke_until:
            await asyncio.sleep(0.01)
        await ws.send(np.full(4000, 3000, "<i2").tobytes())  # 0.5 s of audio
        await asyncio.sleep(1.0)
        await ws.send('{"type": "hangup"}')

    ulaw = get_codec("pcmu").encoder()
    rng = np.random.default_rng(7)
    async with ScriptedAgent(answer_after_speech) as agent:
        await route_to(bridge, agent.url)
        async with dial(bridge, "turn-1") as dialog:
            for n in range(120):  # 0.4 s quiet, 1.2 s of syllables, 0.8 s quiet
                level = 3000 * (1.5 + np.sin(2 * np.pi * 4 * n / 50)) if 20 <= n < 80 else 0
                pcm = np.clip(rng.normal(0, 1, 160) * level, -32768, 32767).astype("<i2")
                packet = RtpPacket(0, n, n * 160, 99, payload=ulaw.encode(pcm.tobytes()))
                dialog.send_rtp(packet.serialize())
                if n == 79:
                    spoke_until = loop.time()
                await asyncio.sleep(0.02)
            bye = await answer_bye(dialog.client, timeout=6)
            assert bye.method == "BYE"
    [record] = await records(bridge)
    assert record.turns == 1
    assert record.response_p50_ms is not None and 380 <= record.response_p50_ms <= 700
    assert record.response_max_ms == record.response_p50_ms


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
async def test_rtp_injected_into_a_live_call_reaches_neither_agent_nor_stream(
    make_bridge: BridgeFactory, attacker_host: str
) -> None:
    """A live call through the whole server: bursts of RTP from another port or another
    address (200 packets a burst, with the caller's SSRC and sequence numbers and with a
    new SSRC) while the caller talks. The agent hears only the caller, the caller keeps
    getting our stream, the attacker gets nothing."""
    bridge = await make_bridge()
    loop = asyncio.get_running_loop()
    attacker_t, attacker = await loop.create_datagram_endpoint(
        RtpListener, local_addr=(attacker_host, 0)
    )
    ulaw = get_codec("pcmu").encoder()
    caller_payload = ulaw.encode(np.full(160, 1200, "<i2").tobytes())
    injected_payload = ulaw.encode(np.full(160, -9000, "<i2").tobytes())
    try:
        async with EchoAgent(echo=False) as agent:
            await route_to(bridge, agent.url)
            async with dial(bridge, "inject-1") as dialog:
                [call] = bridge.calls.values()
                assert call.rtp_port is not None
                target = ("127.0.0.1", call.rtp_port)
                for n in range(100):
                    dialog.send_rtp(
                        RtpPacket(0, n, n * 160, 4242, payload=caller_payload).serialize()
                    )
                    if n % 10 == 5:
                        for k in range(200):
                            ssrc = 4242 if k % 2 else 777
                            forged = RtpPacket(
                                0, n + 1 + k, (n + 1 + k) * 160, ssrc, payload=injected_payload
                            )
                            attacker_t.sendto(forged.serialize(), target)
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)
                media = call.media
                assert media is not None
                refused = media.stats.refused_source
                heard_by_caller = len(dialog.rtp.packets)
                await hang_up(dialog)
        [agent_call] = agent.calls
        heard = b"".join(agent_call.audio)
        injected_pcm = get_codec("pcmu").decoder().decode(injected_payload)
        caller_pcm = get_codec("pcmu").decoder().decode(caller_payload)
        assert injected_pcm not in heard
        assert heard.count(caller_pcm) >= 95  # the caller's audio got through
        assert refused == 2000
        assert heard_by_caller >= 90  # our stream kept going to the caller
        assert not attacker.packets  # and never to the attacker
    finally:
        attacker_t.close()
