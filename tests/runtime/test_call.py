"""Whole calls on real sockets: SIPp (and a raw UDP client) → sipbridge → a WebSocket agent."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import socket
import time
from pathlib import Path

import pytest
import websockets.asyncio.server

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import parse_rtp_header
from sipbridge.rtp.rtcp import SenderReport, SourceDescription, parse_compound
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallRecord, CallStatus
from tests.support.agents import EchoAgent, SilentTcpServer
from tests.support.pcap import udp_payloads
from tests.support.settings import BridgeFactory
from tests.support.sipp import (
    SIPP_SHARE,
    cancel_scenario,
    expect_error_scenario,
    prack_scenario,
    run_sipp,
    wait_for_bye_scenario,
)
from tests.support.sniff import LoopbackSniffer

NUMBER = "+12025550101"
SERVICE = "12025550101"  # dialed without '+', as many trunks send it


async def route_to(server: SipBridgeServer, url: str, *, voice: bool = True) -> None:
    await service.add_agent(server.db, "echo", url, voice_enabled=voice)
    await service.add_number(server.db, NUMBER, "echo")


async def records(
    server: SipBridgeServer, count: int = 1, timeout: float = 10.0
) -> list[CallRecord]:
    deadline = time.monotonic() + timeout
    while True:
        # Idle first, then read: a call's row exists (ringing) before its final write.
        idle = not server.calls and not server.pending_tasks
        found = await service.list_calls(server.db)
        if len(found) >= count and idle:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} call records, found {found}")
        await asyncio.sleep(0.05)


def sipp_ok(result: object) -> None:
    assert result.returncode == 0, (result.returncode, result.errors, result.stderr[-2000:])  # type: ignore[attr-defined]


# ---------------------------------------------------------------- SIPp calls


@pytest.mark.sipp
@pytest.mark.requires("sipp", "root")
async def test_sipp_call_audio_echoes_back_bit_exact(
    bridge: SipBridgeServer, tmp_path: Path
) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        sniffer = LoopbackSniffer(
            range(bridge.settings.rtp_port_min, bridge.settings.rtp_port_max + 1)
        )
        sniffer.start()
        try:
            result = await run_sipp(
                bridge.sip_address, tmp_path, service=SERVICE, builtin="uac_pcap", timeout=30
            )
        finally:
            sniffer.stop()
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)

    # The record of an answered call hung up by the caller.
    assert record.status is CallStatus.ANSWERED
    assert record.reason == "caller_hangup" and record.hangup_by == "caller"
    assert record.sip_code == 200 and record.codec == "pcma"
    assert record.to_number == NUMBER and record.agent == "echo"
    assert record.duration_s is not None and 8.0 < record.duration_s < 12.0

    # The agent got a start, exactly the caller's audio as PCM16, then a stop.
    assert call.start is not None and call.start["to"] == NUMBER
    assert call.stop == {"type": "stop", "reason": "caller_hangup"}
    # uac_pcap then plays dtmf_2833_1.pcap: exactly one key press reaches the agent.
    dtmf = [t for t in call.texts if t.get("type") == "dtmf"]
    assert len(dtmf) == 1 and dtmf[0]["digit"] == "1" and dtmf[0]["duration_ms"] > 0
    sent_payloads = []
    for packet in udp_payloads(SIPP_SHARE / "g711a.pcap"):
        pt, *_rest, start, end = parse_rtp_header(packet)
        assert pt == 8
        sent_payloads.append(packet[start:end])
    pcma = get_codec("pcma").decoder()
    expected_pcm = b"".join(pcma.decode(p) for p in sent_payloads)
    assert all(len(frame) == 320 for frame in call.audio)
    got = b"".join(call.audio)
    assert got[: len(expected_pcm)] == expected_pcm
    # After SIPp's audio ends (a DTMF digit and a pause follow), the agent keeps getting a
    # continuous frame sequence: concealment fading out, then silence.
    tail = got[len(expected_pcm) :]
    assert len(tail) >= 320 * 25
    assert tail[-3200:] == bytes(3200)

    # What came back on the RTP stream: one SSRC, continuous numbering, and the
    # caller's own A-law frames (G.711 round trip is bit-exact), in order.
    rtp = [p for p in sniffer.packets if p.src[1] != p.dst[1] and p.src[1] % 2 == 0]
    assert rtp, "no RTP from sipbridge"
    # Only the call's own port: another test run on the machine may use the same range.
    port = collections.Counter(p.src[1] for p in rtp).most_common(1)[0][0]
    ours = [p for p in rtp if p.src[1] == port]
    # RTCP from the odd port next to it: a sender report for our stream (RFC 3550 §6.4.1)
    rtcp = [p for p in sniffer.packets if p.src[1] == ours[0].src[1] + 1]
    assert rtcp, "no RTCP from sipbridge"
    [report, sdes] = parse_compound(rtcp[0].payload)
    assert isinstance(report, SenderReport) and isinstance(sdes, SourceDescription)
    headers = [parse_rtp_header(p.payload) for p in ours]
    assert {h[3] for h in headers} == {headers[0][3]}
    seqs = [h[1] for h in headers]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    assert headers[0][4] is True  # marker on the first packet
    returned = [p.payload[h[5] : h[6]] for p, h in zip(ours, headers, strict=True)]
    assert {len(p) for p in returned} == {160}  # 20 ms packets, whatever the caller's ptime
    silence = get_codec("pcma").encoder().encode(bytes(320))
    voiced = [p for p in returned if p != silence]
    # SIPp sends 30 ms packets; the agent got (and echoed) 20 ms frames.
    stream = b"".join(sent_payloads)
    expected = [stream[i : i + 160] for i in range(0, len(stream), 160)]
    expected = [p for p in expected if p != silence]
    assert voiced[: len(expected)] == expected
    # paced at 20 ms: about 50 packets a second for the whole call
    span = ours[-1].at - ours[0].at
    assert abs(len(ours) - span / 0.020) < 0.05 * len(ours)
    assert report.ssrc == headers[0][3]
    # Quality figures of a clean loopback call, kept with the record.
    assert record.packets_in == len(sent_payloads) and record.packets_lost == 0
    assert record.loss_percent == 0.0 and record.jitter_ms is not None
    assert record.mos is not None and record.mos > 4.0
    # The same MOS in the per-call histogram, under the call's codec and method.
    labels = {"codec": "pcma", "method": "g107"}
    registry = bridge.metrics.registry
    assert registry.get_sample_value("sipbridge_call_mos_count", labels) == 1
    assert registry.get_sample_value("sipbridge_call_mos_sum", labels) == pytest.approx(record.mos)


@pytest.mark.sipp
@pytest.mark.requires("sipp")
async def test_sipp_caller_requiring_100rel_gets_a_reliable_180_and_its_prack_200(
    bridge: SipBridgeServer, tmp_path: Path
) -> None:
    """RFC 3262 with a real UAC: SIPp requires 100rel, reads the 180's RSeq and PRACKs it;
    the PRACK is answered 200 before the INVITE's 200 (the agent's handshake is held
    0.5 s so the order is fixed), and the call is answered and recorded as usual."""
    started = asyncio.Event()

    async def slow(connection: object, request: object) -> None:
        await asyncio.sleep(0.5)

    async def agent(ws: websockets.asyncio.server.ServerConnection) -> None:
        await ws.recv()
        started.set()
        async for _ in ws:
            pass

    async with websockets.asyncio.server.serve(
        agent, "127.0.0.1", 0, process_request=slow, compression=None
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        await route_to(bridge, f"ws://127.0.0.1:{port}/agent")
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=prack_scenario(), timeout=20
        )
        sipp_ok(result)
        [record] = await records(bridge)
    assert started.is_set()
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"


@pytest.mark.sipp
async def test_sipp_unknown_number_404(bridge: SipBridgeServer, tmp_path: Path) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service="12025550199", scenario=expect_error_scenario(404)
        )
    sipp_ok(result)
    [record] = await records(bridge)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.FAILED,
        "unknown_number",
        404,
    )
    assert record.to_number == "+12025550199"
    assert agent.calls == []


@pytest.mark.sipp
async def test_sipp_agent_down_503(
    bridge: SipBridgeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipbridge.call")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await route_to(bridge, f"ws://127.0.0.1:{port}/")
    result = await run_sipp(
        bridge.sip_address, tmp_path, service=SERVICE, scenario=expect_error_scenario(503)
    )
    sipp_ok(result)
    [record] = await records(bridge)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.FAILED,
        "agent_unreachable",
        503,
    )
    # rejected before any answer: nothing measured, so no quality figure (not MOS 4.38)
    assert record.mos is None and record.mos_method is None and record.jitter_ms is None
    assert record.concealed_ms is None and record.packets_lost is None
    # a failure on our side is a warning, not an INFO line lost among the others
    rejected = [r for r in caplog.records if "event=rejected" in r.getMessage()]
    assert [r.levelno for r in rejected] == [logging.WARNING]


@pytest.mark.sipp
async def test_sipp_agent_handshake_hangs_503_after_budget(
    bridge: SipBridgeServer, tmp_path: Path
) -> None:
    async with SilentTcpServer() as silent:
        await route_to(bridge, silent.url)
        started = time.monotonic()
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=expect_error_scenario(503)
        )
        elapsed = time.monotonic() - started
    sipp_ok(result)
    assert 1.8 < elapsed < 6  # the connect budget is 2 s in this fixture
    [record] = await records(bridge)
    assert record.reason == "agent_unreachable"


@pytest.mark.sipp
async def test_sipp_no_common_codec_488(bridge: SipBridgeServer, tmp_path: Path) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        g729 = ("18", "      a=rtpmap:18 G729/8000\n")
        result = await run_sipp(
            bridge.sip_address,
            tmp_path,
            service=SERVICE,
            scenario=expect_error_scenario(488, formats=g729),
        )
    sipp_ok(result)
    [record] = await records(bridge)
    assert (record.reason, record.sip_code) == ("no_common_codec", 488)
    assert agent.calls == []


@pytest.mark.sipp
async def test_sipp_agent_not_voice_enabled_480(bridge: SipBridgeServer, tmp_path: Path) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url, voice=False)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=expect_error_scenario(480)
        )
    sipp_ok(result)
    [record] = await records(bridge)
    assert (record.reason, record.sip_code) == ("agent_not_voice_enabled", 480)


@pytest.mark.sipp
async def test_sipp_cancel_before_answer_487(bridge: SipBridgeServer, tmp_path: Path) -> None:
    async with SilentTcpServer() as silent:  # keeps the call ringing
        await route_to(bridge, silent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=cancel_scenario()
        )
    sipp_ok(result)
    [record] = await records(bridge)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.CANCELLED,
        "caller_cancelled",
        487,
    )
    assert record.answered_at is None


@pytest.mark.sipp
async def test_sipp_agent_hangup_plays_out_then_sends_bye(
    bridge: SipBridgeServer, tmp_path: Path
) -> None:
    greeting = bytes(range(256)) * 62 + bytes(128)  # 16,000 bytes: one second at 8 kHz
    async with EchoAgent(greeting=greeting, hangup_after_greeting=True) as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address, tmp_path, service=SERVICE, scenario=wait_for_bye_scenario()
        )
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    assert (record.status, record.reason, record.hangup_by) == (
        CallStatus.ANSWERED,
        "agent_hangup",
        "agent",
    )
    assert record.duration_s is not None and record.duration_s >= 0.95  # the greeting played
    assert call.stop == {"type": "stop", "reason": "agent_hangup"}
    assert call.start is not None
    assert call.start["sip_headers"] == {"X-Customer-Id": "4711"}
    assert call.start["from"] == "+15005550006"
    assert call.start["media_format"] == {
        "encoding": "pcm_s16le",
        "sample_rate": 8000,
        "channels": 1,
        "frame_ms": 20,
    }


# ---------------------------------------------------------------- raw UDP client


class UdpClient:
    """A raw SIP caller on UDP from ``host`` (127.0.0.1, or ::1 for IPv6: then its
    headers bracket the address, RFC 3261 §19.1.1, and its SDP says IN IP6)."""

    header_host = "127.0.0.1"  # the address as written in SIP headers
    sdp_address = "IN IP4 127.0.0.1"  # the SDP o= and c= address

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.header_host = f"[{host}]" if ":" in host else host
        self.sdp_address = f"IN {'IP6' if ':' in host else 'IP4'} {host}"

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.target)

    async def recv(self, timeout: float = 5.0) -> Response:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), timeout)
        message = parse_message(data)
        assert isinstance(message, Response), data
        return message

    async def final(self, timeout: float = 8.0) -> Response:
        while True:
            response = await self.recv(timeout)
            if response.status >= 200:
                return response

    def invite(self, branch: str, call_id: str, rtp_port: int, *, dtmf: bool = False) -> bytes:
        sdp = (
            f"v=0\r\no=- 1 1 {self.sdp_address}\r\ns=-\r\nc={self.sdp_address}\r\nt=0 0\r\n"
            + (
                f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
                if dtmf
                else f"m=audio {rtp_port} RTP/AVP 0\r\n"
            )
        ).encode()
        host = self.header_host
        return (
            f"INVITE sip:{NUMBER}@{host} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{self.port};branch={branch};rport\r\n"
            f"From: <sip:+15005550006@{host}>;tag=f-{call_id}\r\n"
            f"To: <sip:{NUMBER}@{host}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:caller@{host}:{self.port}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        ).encode() + sdp

    def in_dialog(self, method: str, cseq: int, call_id: str, to_tag: str) -> bytes:
        host = self.header_host
        return (
            f"{method} sip:{host} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{self.port};branch=z9hG4bK{method}{cseq};rport\r\n"
            f"From: <sip:+15005550006@{host}>;tag=f-{call_id}\r\n"
            f"To: <sip:{NUMBER}@{host}>;tag={to_tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def close(self) -> None:
        self.sock.close()


async def test_retransmitted_invite_makes_one_call(bridge: SipBridgeServer) -> None:
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        try:
            invite = client.invite("z9hG4bK-retrans", "retrans-1", rtp.getsockname()[1])
            client.send(invite)
            client.send(invite)  # retransmission before any answer
            await asyncio.sleep(0.05)
            client.send(invite)
            ok = await client.final()
            assert ok.status == 200
            client.send(invite)  # after the 200: absorbed, no new call
            tag = ok.to.tag
            assert tag
            client.send(client.in_dialog("ACK", 1, "retrans-1", tag))
            await asyncio.sleep(0.3)
            client.send(client.in_dialog("BYE", 2, "retrans-1", tag))
            bye_ok = await client.final()
            assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
            found = await records(bridge)
        finally:
            client.close()
            rtp.close()
    assert len(found) == 1
    assert len(agent.calls) == 1


async def test_reject_480_carries_reason_header(bridge: SipBridgeServer) -> None:
    await route_to(bridge, "ws://127.0.0.1:9/", voice=False)
    client = UdpClient(bridge.sip_address)
    try:
        client.send(client.invite("z9hG4bK-480", "reason-1", 4000))
        response = await client.final()
    finally:
        client.close()
    assert response.status == 480
    assert response.headers.get("Reason") == 'SIP ;cause=480 ;text="agent_not_voice_enabled"'
    for name in ("Server", "User-Agent"):
        assert response.headers.get(name) is None


async def test_an_internal_error_is_a_500_a_record_and_an_error_line(
    bridge: SipBridgeServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of ours while setting a call up: the caller gets 500, the call its record,
    and the log an ERROR line (not INFO among the call lines)."""
    from sipbridge.runtime.call import Call

    async def broken(self: Call) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Call, "_setup", broken)
    caplog.set_level(logging.INFO, logger="sipbridge.call")
    await route_to(bridge, "ws://127.0.0.1:9/")
    client = UdpClient(bridge.sip_address)
    try:
        client.send(client.invite("z9hG4bK-500", "internal-1", 4000))
        response = await client.final()
    finally:
        client.close()
    assert response.status == 500
    [record] = await records(bridge)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.FAILED,
        "internal_error",
        500,
    )
    rejected = [r for r in caplog.records if "event=rejected" in r.getMessage()]
    assert [r.levelno for r in rejected] == [logging.ERROR]


async def test_agent_bad_frames_do_not_end_the_call(bridge: SipBridgeServer) -> None:
    junk: list[str | bytes] = ["{not json", json.dumps({"type": "mystery"}), b"\x01\x02\x03"]
    async with EchoAgent(extra_messages=junk) as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-junk", "junk-1", 4002))
            ok = await client.final()
            assert ok.status == 200
            assert ok.to.tag
            client.send(client.in_dialog("ACK", 1, "junk-1", ok.to.tag))
            await asyncio.sleep(0.5)
            assert bridge.calls  # still up
            client.send(client.in_dialog("BYE", 2, "junk-1", ok.to.tag))
            assert (await client.final()).status == 200
        finally:
            client.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"


async def test_records_survive_restart(bridge: SipBridgeServer, tmp_path: Path) -> None:
    client = UdpClient(bridge.sip_address)
    try:
        client.send(client.invite("z9hG4bK-nr", "restart-1", 4004))
        assert (await client.final()).status == 404
    finally:
        client.close()
    await records(bridge)
    await bridge.stop()
    again = SipBridgeServer(bridge.settings)
    await again.start()
    try:
        [record] = await service.list_calls(again.db)
        assert record.sip_call_id == "restart-1" and record.reason == "unknown_number"
    finally:
        await again.stop()
        bridge.db = again.db  # the fixture's stop() closes it again harmlessly


async def test_invite_refused_by_sip_core_still_gets_a_record(bridge: SipBridgeServer) -> None:
    client = UdpClient(bridge.sip_address)
    try:
        invite = client.invite("z9hG4bK-415", "ct-1", 4006).replace(
            b"Content-Type: application/sdp", b"Content-Type: application/unknownformat"
        )
        client.send(invite)
        response = await client.final()
    finally:
        client.close()
    assert response.status == 415
    assert response.headers.get("Accept") == "application/sdp"
    [record] = await records(bridge)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.FAILED,
        "unsupported_media_type",
        415,
    )
    assert record.to_number == NUMBER and record.sip_call_id == "ct-1"


async def answer_bye(client: UdpClient, timeout: float = 5.0) -> Request:
    """Wait for the server's BYE and answer it 200."""
    loop = asyncio.get_running_loop()
    while True:
        data = await asyncio.wait_for(loop.sock_recv(client.sock, 65535), timeout)
        message = parse_message(data)
        if isinstance(message, Request) and message.method == "BYE":
            break
    client.send(response_to(message, "200 OK"))
    return message


def response_to(request: Request, status: str) -> bytes:
    """Our test caller's answer ``status`` (e.g. ``"202 Accepted"``) to a request of the
    server's: its Via, From, To, Call-ID and CSeq echoed (RFC 3261 §8.2.6.2)."""
    return (
        f"SIP/2.0 {status}\r\n"
        + "".join(f"Via: {v}\r\n" for v in request.headers.get_all("Via"))
        + f"From: {request.headers.get('From')}\r\nTo: {request.headers.get('To')}\r\n"
        f"Call-ID: {request.call_id}\r\nCSeq: {request.cseq.seq} {request.method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_agent_closing_socket_ends_call_after_playout(bridge: SipBridgeServer) -> None:
    greeting = b"\x10\x00" * 4000  # half a second
    async with EchoAgent(greeting=greeting, close_after_greeting=True) as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-close", "close-1", 4008))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "close-1", ok.to.tag))
            bye = await answer_bye(client)
        finally:
            client.close()
    assert bye.from_.tag == ok.to.tag
    [record] = await records(bridge)
    assert (record.reason, record.hangup_by) == ("agent_disconnected", "agent")
    assert record.duration_s is not None and record.duration_s >= 0.45


async def test_reinvite_moves_media_and_keeps_the_call(bridge: SipBridgeServer) -> None:
    loop = asyncio.get_running_loop()
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (first, second):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-re1", "re-1", first.getsockname()[1]))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "re-1", ok.to.tag))
            await asyncio.wait_for(loop.sock_recv(first, 2048), 2)  # media flows to the SDP port
            reinvite = client.invite("z9hG4bK-re2", "re-1", second.getsockname()[1])
            reinvite = reinvite.replace(b"CSeq: 1 INVITE", b"CSeq: 2 INVITE").replace(
                f"To: <sip:{NUMBER}@127.0.0.1>\r\n".encode(),
                f"To: <sip:{NUMBER}@127.0.0.1>;tag={ok.to.tag}\r\n".encode(),
            )
            client.send(reinvite)
            again = await client.final()
            assert again.status == 200 and again.cseq.seq == 2
            assert again.body == ok.body  # same answer: nothing changed on our side
            client.send(client.in_dialog("ACK", 2, "re-1", ok.to.tag))
            packet = await asyncio.wait_for(loop.sock_recv(second, 2048), 2)
            assert parse_rtp_header(packet)[0] == 0
            assert bridge.calls  # still up, agent still connected
            assert len(agent.calls) == 1 and not agent.calls[0].closed.is_set()
            client.send(client.in_dialog("BYE", 3, "re-1", ok.to.tag))
            assert (await client.final()).status == 200
        finally:
            client.close()
            first.close()
            second.close()
    [record] = await records(bridge)
    assert record.reason == "caller_hangup"


# ---------------------------------------------------------------- hostile text


HOSTILE_USERS = [
    ("%FF%FE", "%FF%FE"),  # not UTF-8: the agent's start failed to encode, no record
    ("%00", "%00"),  # NUL: PostgreSQL refused the record of an answered call
    ("x%0D%0A2026-12-06%2021%3A00%3A00,000%20WARNING%20forged", "x%0D%0A2026-12-06 21:00:00,000"),
    ("%1B%5B2J", "%1B[2J"),
    ("%E2%80%AE1010", "%E2%80%AE1010"),
    ("%ED%A0%80", "%ED%A0%80"),
]


async def test_hostile_wire_text_still_gives_every_call_its_record(
    make_bridge: BridgeFactory, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """From users that are not UTF-8, hold NUL, line breaks, escape sequences or bidi
    overrides, an X- header with raw non-UTF-8 bytes: every call is bridged,
    the agent's start message is valid UTF-8 JSON, and each call has its record, on SQLite
    and PostgreSQL."""
    bridge = await make_bridge(db=db_url)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            with caplog.at_level(logging.INFO):
                for n, (user, _) in enumerate(HOSTILE_USERS):
                    call_id = f"hostile-{n}"
                    invite = client.invite(f"z9hG4bK-h{n}", call_id, 4100 + 2 * n)
                    invite = invite.replace(
                        b"From: <sip:+15005550006@", f"From: <sip:{user}@".encode()
                    )
                    invite = invite.replace(
                        f"Call-ID: {call_id}\r\n".encode(),
                        f"Call-ID: {call_id}\r\nX-Junk: a\xfe\xffb\r\n".encode("latin-1"),
                    )
                    client.send(invite)
                    final = await client.final()
                    assert final.status == 200, (user, final.status)
                    tag = final.to.tag
                    assert tag is not None
                    # in_dialog's branch is per method: unique here, or the server
                    # rightly takes the next call's BYE for a retransmission (§17.2.3)
                    for method, cseq in (("ACK", 1), ("BYE", 2)):
                        request = client.in_dialog(method, cseq, final.call_id, tag)
                        branch = f"branch=z9hG4bK{method}{cseq}".encode()
                        client.send(request.replace(branch, branch + f"-{n}".encode()))
                    assert (await client.final()).status == 200
        finally:
            client.close()
    stored = {r.sip_call_id: r for r in await records(bridge, len(HOSTILE_USERS))}
    assert len(stored) == len(HOSTILE_USERS)
    for n, (_, prefix) in enumerate(HOSTILE_USERS):
        record = stored[f"hostile-{n}"]
        assert record.from_number is not None and record.from_number.startswith(prefix)
        assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    starts = [call.start for call in agent.calls]
    assert len(starts) == len(HOSTILE_USERS)
    for start in starts:
        assert start is not None and start["sip_headers"]["X-Junk"] == "a%FE%FFb"
        json.dumps(start, ensure_ascii=False).encode("utf-8")
    # Our own records (alembic's migration lines, when another test left its logger at
    # INFO, carry their docstrings' line breaks: no wire text is in them).
    for record in caplog.records:
        if not record.name.startswith("sipbridge"):
            continue
        message = record.getMessage()
        assert "\n" not in message and "\x1b" not in message and "\x00" not in message
    assert not [r for r in caplog.records if "record_write_failed" in r.getMessage()]


async def test_a_malformed_invite_gets_400_and_a_record(bridge: SipBridgeServer) -> None:
    """A call attempt whose INVITE does not parse still leaves exactly one record."""
    client = UdpClient(bridge.sip_address)
    try:
        invite = client.invite("z9hG4bK-bad", "bad-1", 4200)
        client.send(invite.replace(b"Call-ID: bad-1", b"Call-ID: bad-1\xff x"))
        loop = asyncio.get_running_loop()
        answer = await asyncio.wait_for(loop.sock_recv(client.sock, 65535), 5)
        assert answer.startswith(b"SIP/2.0 400 ")  # echoes the broken Call-ID: raw bytes
    finally:
        client.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.FAILED and record.reason == "malformed_request"
    assert record.sip_code == 400 and record.sip_call_id == "bad-1%FF x"
    assert record.from_number == "+15005550006"
