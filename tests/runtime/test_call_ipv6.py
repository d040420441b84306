"""Whole calls over IPv6 (issue 11): SIP and RTP on ::1 end to end, and a dual-stack
server (``--sip-host ::``) still taking IPv4 callers, media included."""

from __future__ import annotations

import asyncio
import socket

import numpy as np

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import RtpPacket
from sipbridge.sdp.session import parse_sdp
from sipbridge.sip.message import Response
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import UdpClient, answer_bye, records, route_to
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory

ULAW = get_codec("pcmu")
PACKETS = 50  # one second of caller audio
# Caller frames that must come back in the agent's echo: on a loaded machine a frame may
# be concealed, or wait for the next talkspurt's start.
ECHOED = PACKETS * 8 // 10


class RtpListener(asyncio.DatagramProtocol):
    """The caller's RTP socket: every packet it gets, and where from."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.sources: list[tuple[str, int]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(RtpPacket.parse(data))
        self.sources.append(addr)


def heard_frames(audio: list[bytes], sent: list[bytes]) -> int:
    """How many of the caller's frames reached the agent bit-exact (G.711); a frame the
    jitter buffer waited too long for on a loaded machine may be concealed instead."""
    heard = b"".join(audio)
    return sum(1 for payload in sent if ULAW.decoder().decode(payload) in heard)


async def talk(
    client: UdpClient, rtp_host: str, call_id: str, **invite: bool
) -> tuple[Response, int, RtpListener, list[bytes]]:
    """INVITE from ``client`` with its media on ``rtp_host`` → 200 (checked by the
    caller) → ACK → one second of caller RTP to our answer's address. Returns our 200,
    the RTP port it answered with, what the caller's RTP socket got and the payloads it
    sent."""
    loop = asyncio.get_running_loop()
    transport, listener = await loop.create_datagram_endpoint(RtpListener, local_addr=(rtp_host, 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        client.send(client.invite(f"z9hG4bK-{call_id}", call_id, port, **invite))
        ok = await client.final()
        assert ok.status == 200 and ok.to.tag, ok
        client.send(client.in_dialog("ACK", 1, call_id, ok.to.tag))
        answer = parse_sdp(ok.body)
        [media] = answer.media
        address = answer.connection_for(media)
        assert address is not None
        rng = np.random.default_rng(11)
        sent = []
        for n in range(PACKETS):
            pcm = (rng.normal(0, 2000, 160)).astype("<i2").tobytes()
            payload = ULAW.encoder().encode(pcm)
            sent.append(payload)
            packet = RtpPacket(0, 500 + n, n * 160, 0xC0FFEE, n == 0, payload)
            transport.sendto(packet.serialize(), (address, media.port))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # the echo of the last frames comes back
    finally:
        transport.close()
    return ok, media.port, listener, sent


async def test_a_whole_call_over_ipv6_loopback(make_bridge: BridgeFactory) -> None:
    """SIP over UDP to a server bound on ::1; our 200 OK's Contact is bracketed and its
    SDP says IN IP6 ::1; the caller's RTP reaches the (echo) agent and the agent's audio
    comes back to the caller's IPv6 socket; BYE; the record has the codec and quality."""
    bridge = await make_bridge(sip_host="::1")
    host, sip_port = bridge.sip_address
    assert host == "::1"
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(("::1", sip_port), host="::1")
        try:
            ok, port, listener, sent = await talk(client, "::1", "v6-call")
            contact = ok.headers.get("Contact") or ""
            assert contact == f"<sip:[::1]:{sip_port}>"  # RFC 3261 §19.1.1 brackets
            text = ok.body.decode()
            assert "\r\no=- " in text and " IN IP6 ::1\r\n" in text  # o= (RFC 4566 §5.2)
            assert "\r\nc=IN IP6 ::1\r\n" in text  # c= (RFC 4566 §5.7)
            [call] = bridge.calls.values()
            assert call.media is not None
            stats = call.media.stats
            assert stats.packets_in == PACKETS and stats.refused_source == 0
            client.send(client.in_dialog("BYE", 2, "v6-call", ok.to.tag))
            bye_ok = await client.final()
            assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
        finally:
            client.close()
        [record] = await records(bridge)
        await asyncio.wait_for(agent.calls[0].closed.wait(), 5)
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.codec == "pcmu" and record.sip_code == 200
    assert record.source is not None and record.source.startswith("::1:")
    assert record.packets_in == PACKETS and record.packets_lost == 0
    assert record.jitter_ms is not None and record.mos is not None and record.mos > 4.0

    # The caller's audio reached the agent, bit-exact through G.711.
    assert heard_frames(agent.calls[0].audio, sent) >= PACKETS - 5
    # The agent's audio (its echo) came back to the caller's IPv6 socket from our port.
    assert {addr[:2] for addr in listener.sources} == {("::1", port)}
    returned = [p.payload for p in listener.packets if p.payload_type == 0]
    assert sum(1 for p in sent if p in returned) >= ECHOED


async def test_a_dual_stack_server_takes_an_ipv4_caller(make_bridge: BridgeFactory) -> None:
    """``--sip-host ::``: SIP from 127.0.0.1 arrives v4-mapped on the dual-stack socket;
    the media socket follows the caller's IN IP4 offer (an IPv6 socket could not be
    reached at the IPv4 address the answer gives), and audio flows both ways. The offer
    names its media host (``localhost``, RFC 4566 §5.7): it is resolved as IPv4."""
    bridge = await make_bridge(sip_host="::", public_ip="127.0.0.1")
    sip_port = bridge.sip_address[1]
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(("127.0.0.1", sip_port))
        client.sdp_address = "IN IP4 localhost"
        try:
            ok, port, listener, sent = await talk(client, "127.0.0.1", "dual-1")
            [call] = bridge.calls.values()
            assert call.media is not None and call.media.session.remote[0] == "127.0.0.1"
            answer_sdp = call.sip.local_sdp or b""
            assert b"c=IN IP4 127.0.0.1\r\n" in answer_sdp
            client.send(client.in_dialog("BYE", 2, "dual-1", ok.to.tag))
            assert (await client.final()).status == 200
        finally:
            client.close()
        [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.packets_in == PACKETS and record.mos is not None
    assert heard_frames(agent.calls[0].audio, sent) >= PACKETS - 5
    assert {addr[:2] for addr in listener.sources} == {("127.0.0.1", port)}
    returned = [p.payload for p in listener.packets]
    assert sum(1 for p in sent if p in returned) >= ECHOED


async def test_agent_hangup_sends_bye_to_an_ipv6_caller(make_bridge: BridgeFactory) -> None:
    """Our in-dialog BYE goes to the caller's bracketed IPv6 Contact."""
    bridge = await make_bridge(sip_host="::1")
    async with EchoAgent(
        echo=False, greeting=b"\x10\x00" * 800, hangup_after_greeting=True
    ) as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(("::1", bridge.sip_address[1]), host="::1")
        rtp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rtp.bind(("::1", 0))
        try:
            client.send(client.invite("z9hG4bK-v6-bye", "v6-bye", rtp.getsockname()[1]))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "v6-bye", ok.to.tag))
            bye = await answer_bye(client, timeout=6)
            assert bye.method == "BYE" and str(bye.uri) == f"sip:caller@[::1]:{client.port}"
            assert (bye.headers.get("Via") or "").startswith("SIP/2.0/UDP [::1]:")
        finally:
            client.close()
            rtp.close()
        [record] = await records(bridge)
    assert record.reason == "agent_hangup" and record.hangup_by == "agent"


async def test_our_bye_reaches_a_contact_named_by_host_on_a_dual_stack_socket(
    make_bridge: BridgeFactory,
) -> None:
    """A Contact with a host name (``localhost``) is resolved in the SIP socket's family:
    on the dual-stack ``::`` socket an IPv4-only name becomes its v4-mapped address
    (AI_V4MAPPED), which the socket can reach; the agent's hang-up BYE gets there."""
    bridge = await make_bridge(sip_host="::", public_ip="127.0.0.1")
    async with EchoAgent(
        echo=False, greeting=b"\x10\x00" * 800, hangup_after_greeting=True
    ) as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(("127.0.0.1", bridge.sip_address[1]), host="localhost")
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        try:
            client.send(client.invite("z9hG4bK-name-bye", "name-bye", rtp.getsockname()[1]))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "name-bye", ok.to.tag))
            bye = await answer_bye(client, timeout=6)
            assert bye.method == "BYE" and str(bye.uri) == f"sip:caller@localhost:{client.port}"
        finally:
            client.close()
            rtp.close()
        [record] = await records(bridge)
    assert record.reason == "agent_hangup" and record.hangup_by == "agent"
