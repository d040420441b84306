"""SIP over TCP and TLS on real sockets: SIPp over TCP (``-t t1``), a Python ``ssl`` UA for
TLS (SIPp 3.6.1 here has no TLS), and the connection limits and timeouts."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import parse_rtp_header
from sipbridge.runtime import transports
from sipbridge.sip.auth import digest_response
from sipbridge.sip.framing import StreamFramer, Transport, transport_of
from sipbridge.sip.message import Request, Response, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.runtime.test_call import NUMBER, SERVICE, records, route_to, sipp_ok
from tests.runtime.test_call_media import align
from tests.runtime.test_call_srtp import (
    NEEDS_BARESIP,
    SUITE,
    baresip_config,
    read_wav,
    run_baresip,
    speech_file,
)
from tests.support.agents import EchoAgent
from tests.support.pcap import udp_payloads
from tests.support.ports import free_ports
from tests.support.settings import BridgeFactory
from tests.support.sipp import SIPP_SHARE, free_udp_port, run_sipp, wait_for_bye_scenario
from tests.support.sniff import LoopbackSniffer


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "certs"
    folder.mkdir()
    return make_ca_and_cert(folder)


def tls_settings(certs: tuple[Path, Path, Path]) -> dict[str, Any]:
    _ca, cert, key = certs
    return {"tls_port": 0, "tls_cert": str(cert), "tls_key": str(key)}


class StreamClient:
    """A SIP UA on one TCP or TLS connection: writes requests, reads framed messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, via: str):
        self.reader = reader
        self.writer = writer
        self.via = via  # "TCP" or "TLS"
        self.framer = StreamFramer()
        self.queue: collections.deque[bytes] = collections.deque()
        self.port = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(
        cls,
        target: tuple[str, int],
        *,
        context: ssl.SSLContext | None = None,
        source: str = "127.0.0.1",
    ) -> StreamClient:
        reader, writer = await asyncio.open_connection(
            target[0], target[1], ssl=context, local_addr=(source, 0)
        )
        return cls(reader, writer, "TLS" if context is not None else "TCP")

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def message(self, timeout: float = 5.0) -> Request | Response:
        while not self.queue:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("closed by the server")
            messages, _ = self.framer.feed(data)
            self.queue.extend(messages)
        return parse_message(self.queue.popleft())

    async def final(self) -> Response:
        while True:
            message = await self.message()
            if isinstance(message, Response) and message.status >= 200:
                return message

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection within ``timeout``."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True
        return True

    def invite(self, call_id: str, *, scheme: str = "sip", contact: str | None = None) -> bytes:
        sdp = (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 9 RTP/AVP 0\r\n"
        )
        contact = contact or f"<{scheme}:caller@127.0.0.1:{self.port};transport=tcp>"
        return (
            f"INVITE {scheme}:{NUMBER}@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.via} 127.0.0.1:{self.port};branch=z9hG4bK-{call_id}\r\n"
            f"From: <{scheme}:+15005550006@127.0.0.1>;tag=f-{call_id}\r\n"
            f"To: <{scheme}:{NUMBER}@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: {contact}\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        ).encode() + sdp

    def in_dialog(
        self, method: str, cseq: int, call_id: str, to_tag: str, scheme: str = "sip"
    ) -> bytes:
        return (
            f"{method} {scheme}:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.via} 127.0.0.1:{self.port};branch=z9hG4bK{method}{cseq}\r\n"
            f"From: <{scheme}:+15005550006@127.0.0.1>;tag=f-{call_id}\r\n"
            f"To: <{scheme}:{NUMBER}@127.0.0.1>;tag={to_tag}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def options(self, n: int = 1) -> bytes:
        return (
            f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.via} 127.0.0.1:{self.port};branch=z9hG4bK-opt{n}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=o{n}\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: options-{n}-{self.port}\r\nCSeq: {n} OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def ok_to(self, request: Request) -> bytes:
        lines = "".join(f"Via: {v}\r\n" for v in request.headers.get_all("Via"))
        return (
            f"SIP/2.0 200 OK\r\n{lines}From: {request.headers.get('From')}\r\n"
            f"To: {request.headers.get('To')}\r\nCall-ID: {request.call_id}\r\n"
            f"CSeq: {request.headers.get('CSeq')}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def client_context(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    return context


# ---------------------------------------------------------------- SIPp over TCP


@pytest.mark.sipp
@pytest.mark.requires("sipp", "root")
async def test_sipp_uac_pcap_call_over_tcp(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    bridge = await make_bridge()
    assert bridge.streams.tcp_address == bridge.sip_address  # one port number, both
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        sniffer = LoopbackSniffer(
            range(bridge.settings.rtp_port_min, bridge.settings.rtp_port_max + 1)
        )
        sniffer.start()
        try:
            result = await run_sipp(
                bridge.sip_address,
                tmp_path,
                service=SERVICE,
                builtin="uac_pcap",
                timeout=30,
                extra=("-t", "t1"),
            )
        finally:
            sniffer.stop()
        sipp_ok(result)
        [record] = await records(bridge)
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.ANSWERED,
        "caller_hangup",
        200,
    )
    assert record.codec == "pcma" and record.to_number == NUMBER
    assert record.source is not None and record.source.startswith("127.0.0.1:")
    # The caller's audio reached the agent exactly...
    sent = []
    for packet in udp_payloads(SIPP_SHARE / "g711a.pcap"):
        *_rest, start, end = parse_rtp_header(packet)
        sent.append(packet[start:end])
    pcma = get_codec("pcma").decoder()
    expected_pcm = b"".join(pcma.decode(p) for p in sent)
    assert b"".join(call.audio)[: len(expected_pcm)] == expected_pcm
    # ...and the echo went back to SIPp as RTP: the caller's own A-law frames.
    ours = [p for p in sniffer.packets if p.src[1] != p.dst[1] and p.src[1] % 2 == 0]
    assert ours, "no RTP from sipbridge"
    silence = get_codec("pcma").encoder().encode(bytes(320))
    returned = []
    for p in ours:
        *_rest, start, end = parse_rtp_header(p.payload)
        if p.payload[start:end] != silence:
            returned.append(p.payload[start:end])
    stream = b"".join(sent)
    expected = [stream[i : i + 160] for i in range(0, len(stream), 160)]
    expected = [p for p in expected if p != silence]
    assert returned[:50] == expected[:50]
    assert not bridge.streams.connections  # SIPp closed its connection at the end


@pytest.mark.sipp
async def test_agent_hangup_sends_bye_over_the_callers_tcp_connection(
    make_bridge: BridgeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = await make_bridge()
    connects: list[object] = []
    original = bridge.streams._connect

    async def spy(key: Any) -> None:
        connects.append(key)
        await original(key)

    monkeypatch.setattr(bridge.streams, "_connect", spy)
    async with EchoAgent(greeting=bytes(3200), hangup_after_greeting=True) as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address,
            tmp_path,
            service=SERVICE,
            scenario=wait_for_bye_scenario(),
            extra=("-t", "t1"),
        )
        sipp_ok(result)  # SIPp got our BYE and answered it
        [record] = await records(bridge)
    assert (record.status, record.reason, record.hangup_by) == (
        CallStatus.ANSWERED,
        "agent_hangup",
        "agent",
    )
    assert connects == []  # the BYE went over the caller's connection, no new one


# ---------------------------------------------------------------- TLS and TCP by hand


async def test_tls_call_with_sips_contact_and_our_bye_on_the_same_connection(
    make_bridge: BridgeFactory, certs: tuple[Path, Path, Path]
) -> None:
    bridge = await make_bridge(**tls_settings(certs))
    tls = bridge.tls_address
    assert tls is not None and tls[1] != 0 and tls[1] != bridge.sip_address[1]
    async with EchoAgent(greeting=bytes(3200), hangup_after_greeting=True) as agent:
        await route_to(bridge, agent.url)
        client = await StreamClient.open(tls, context=client_context(certs[0]))
        try:
            client.send(client.invite("tls-1", scheme="sips"))
            ok = await client.final()
            assert ok.status == 200
            [contact] = ok.contacts
            assert str(contact.uri) == f"sips:127.0.0.1:{tls[1]}"  # RFC 5630
            assert ok.to.tag
            client.send(client.in_dialog("ACK", 1, "tls-1", ok.to.tag, scheme="sips"))
            bye = await client.message()  # the agent hung up: our BYE, same connection
            assert isinstance(bye, Request) and bye.method == "BYE"
            assert bye.vias[0].transport.upper() == "TLS"
            assert bye.vias[0].port == tls[1]
            client.send(client.ok_to(bye))
            [record] = await records(bridge)
        finally:
            await client.close()
    assert (record.status, record.reason) == (CallStatus.ANSWERED, "agent_hangup")


async def test_tcp_call_contact_and_caller_bye(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = await StreamClient.open(bridge.sip_address)
        try:
            client.send(client.invite("tcp-1"))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            [contact] = ok.contacts
            port = bridge.sip_address[1]
            assert str(contact.uri) == f"sip:127.0.0.1:{port};transport=tcp"
            client.send(client.in_dialog("ACK", 1, "tcp-1", ok.to.tag))
            client.send(b"\r\n\r\n")  # a keep-alive ping on the way: answered with a pong
            assert await asyncio.wait_for(client.reader.readexactly(2), 5) == b"\r\n"
            client.send(client.in_dialog("BYE", 2, "tcp-1", ok.to.tag))
            bye_ok = await client.final()
            assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"
            [record] = await records(bridge)
        finally:
            await client.close()
    assert (record.status, record.reason) == (CallStatus.ANSWERED, "caller_hangup")


async def test_bye_opens_a_new_connection_when_the_callers_is_gone(
    make_bridge: BridgeFactory,
) -> None:
    """RFC 3261 §18.1.1: the caller's connection closed; our BYE goes to its Contact over
    a new TCP connection."""
    bridge = await make_bridge()
    byes: asyncio.Queue[Request] = asyncio.Queue()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = StreamFramer()
        while data := await reader.read(65536):
            for raw in framer.feed(data)[0]:
                message = parse_message(raw)
                assert isinstance(message, Request)
                await byes.put(message)
                writer.write(StreamClient.ok_to(None, message))  # type: ignore[arg-type]

    contact_server = await asyncio.start_server(listener, "127.0.0.1", 0)
    contact_port = contact_server.sockets[0].getsockname()[1]
    try:
        async with EchoAgent(greeting=bytes(16000), hangup_after_greeting=True) as agent:
            await route_to(bridge, agent.url)
            client = await StreamClient.open(bridge.sip_address)
            contact = f"<sip:caller@127.0.0.1:{contact_port};transport=tcp>"
            client.send(client.invite("gone-1", contact=contact))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "gone-1", ok.to.tag))
            await asyncio.sleep(0.1)
            await client.close()  # before the agent's hangup (after 1 s of greeting)
            bye = await asyncio.wait_for(byes.get(), 10)
            assert bye.method == "BYE" and bye.call_id == "gone-1"
            assert bye.vias[0].transport.upper() == "TCP"
            [record] = await records(bridge)
    finally:
        contact_server.close()
    assert record.reason == "agent_hangup"


async def test_sips_uri_over_tcp_is_refused_416(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    client = await StreamClient.open(bridge.sip_address)
    try:
        client.send(client.invite("sips-tcp", scheme="sips"))
        response = await client.final()
    finally:
        await client.close()
    assert response.status == 416
    assert not bridge.calls


async def test_tls_1_1_client_is_refused(
    make_bridge: BridgeFactory, certs: tuple[Path, Path, Path]
) -> None:
    bridge = await make_bridge(**tls_settings(certs))
    assert bridge.streams.ssl_context is not None
    assert bridge.streams.ssl_context.minimum_version is ssl.TLSVersion.TLSv1_2
    tls = bridge.tls_address
    assert tls is not None
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(StreamClient.open(tls, context=old), 5)
    # TLS 1.2 works with the same (unverified) settings otherwise.
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    client = await StreamClient.open(tls, context=old)
    client.send(client.options())
    assert (await client.final()).status == 200
    await client.close()


# ---------------------------------------------------------------- limits


async def test_connection_limit_per_source(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    assert bridge.settings.max_connections_per_source == 32
    clients = [await StreamClient.open(bridge.sip_address) for _ in range(32)]
    extra: StreamClient | None = None
    other: StreamClient | None = None
    try:
        for _ in range(100):  # every accept has reached the server
            if bridge.streams.per_source.get("127.0.0.1") == 32:
                break
            await asyncio.sleep(0.01)
        extra = await StreamClient.open(bridge.sip_address)
        assert await extra.closed(5)  # the 33rd is closed at once
        clients[-1].send(clients[-1].options())  # the 32 others still work
        assert (await clients[-1].final()).status == 200
        other = await StreamClient.open(bridge.sip_address, source="127.0.0.5")
        assert not await other.closed(0.3)  # another source has its own budget
        assert bridge.streams.per_source["127.0.0.0/24"] == 1  # counted per /24
        await clients[0].close()
        for _ in range(100):
            if bridge.streams.per_source.get("127.0.0.1") == 31:
                break
            await asyncio.sleep(0.01)
        again = await StreamClient.open(bridge.sip_address)  # room again
        clients.append(again)
        again.send(again.options(2))
        assert (await again.final()).status == 200
    finally:
        for client in [*clients[1:], extra, other]:
            if client is not None:
                await client.close()


async def test_framing_garbage_closes_only_that_connection(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    good = await StreamClient.open(bridge.sip_address)
    bad = await StreamClient.open(bridge.sip_address)
    noise = await StreamClient.open(bridge.sip_address)
    try:
        # A request without Content-Length: 400, then the connection closes.
        request = bad.options().replace(b"Content-Length: 0\r\n", b"")
        bad.send(request)
        response = await bad.message()
        assert isinstance(response, Response) and response.status == 400
        assert await bad.closed(5)
        noise.send(b"\x00\xff garbage \r\n\r\n")
        assert await noise.closed(5)
        good.send(good.options())
        assert (await good.final()).status == 200
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", 0))
            udp.setblocking(False)
            udp.sendto(good.options(3).replace(b"/TCP", b"/UDP"), bridge.sip_address)
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(udp, 65535), 5)
        finally:
            udp.close()
        reply = parse_message(data)
        assert isinstance(reply, Response) and reply.status == 200
    finally:
        for client in (good, bad, noise):
            await client.close()


async def test_incomplete_message_and_idle_connection_time_out(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transports, "INCOMPLETE_TIMEOUT", 0.4)
    monkeypatch.setattr(transports, "IDLE_TIMEOUT", 0.8)
    bridge = await make_bridge()
    slow = await StreamClient.open(bridge.sip_address)
    idle = await StreamClient.open(bridge.sip_address)
    pinging = await StreamClient.open(bridge.sip_address)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        slow.send(slow.options()[:40])  # and never the rest
        assert await slow.closed(3)
        assert 0.3 < loop.time() - started < 2.5
        assert not await idle.closed(0.2)  # idle, but not for long enough yet
        # Pings every 0.3 s keep a connection open past the idle timeout.
        for _ in range(6):
            pinging.send(b"\r\n\r\n")
            assert await asyncio.wait_for(pinging.reader.readexactly(2), 3) == b"\r\n"
            await asyncio.sleep(0.3)
        assert await idle.closed(3)
        pinging.send(pinging.options())
        assert (await pinging.final()).status == 200
    finally:
        for client in (slow, idle, pinging):
            await client.close()


async def test_no_tcp_listener_with_tcp_off(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(tcp=False)
    assert bridge.streams.tcp_address is None and bridge.tls_address is None
    with pytest.raises(OSError):
        await StreamClient.open(bridge.sip_address)


async def test_banned_source_is_disconnected_and_cannot_connect(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    open_client = await StreamClient.open(bridge.sip_address, source="127.0.0.6")
    try:
        bridge.guard.ban("127.0.0.6", "manual", bridge.loop.time(), duration=60.0)
        parsed: list[object] = []
        real_receive = bridge.ua.receive_datagram

        def counting_receive(data: bytes, source: Any, now: float) -> None:
            parsed.append(source)
            real_receive(data, source, now)

        bridge.ua.receive_datagram = counting_receive  # type: ignore[method-assign]
        # A message on a connection opened before the ban is dropped unparsed, and the
        # connection is closed...
        open_client.send(open_client.options())
        assert await open_client.closed(5)
        assert parsed == []
        # ... and a new connection is closed at once.
        refused = await StreamClient.open(bridge.sip_address, source="127.0.0.6")
        assert await refused.closed(5)
        other = await StreamClient.open(bridge.sip_address)  # loopback: no trunk configured
        other.send(other.options())
        assert (await other.final()).status == 200
        assert len(parsed) == 1
        await other.close()
    finally:
        await open_client.close()


async def test_a_trusted_proxys_connection_outlives_the_bans_of_sources_behind_it(
    make_bridge: BridgeFactory,
) -> None:
    """A proxy's TCP connection carries many real sources (sip/proxy.py): a banned one's
    requests on it are dropped unparsed but the connection stays, another source's are
    answered, and the proxy is a known peer (no unknown-source timeout); a ban of the
    proxy's own address changes nothing."""
    bridge = await make_bridge(trusted_proxies=("127.0.0.1",), unknown_connection_timeout=0.3)
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=["127.0.0.2/32"])
    await bridge.reload_trunks()
    now = bridge.loop.time()
    bridge.guard.ban("127.0.0.9", "manual", now, duration=60.0)
    bridge.guard.ban("127.0.0.1", "manual", now, duration=60.0)  # the proxy: no effect
    proxy = await StreamClient.open(bridge.sip_address)
    try:

        def relayed(data: bytes, host: str) -> bytes:
            header = f"\r\nX-Sipbridge-Source: {host}:5062;transport=tcp"
            head, blank, body = data.partition(b"\r\n\r\n")
            return head + header.encode() + blank + body

        parsed: list[object] = []
        real_receive = bridge.ua.receive_datagram

        def counting_receive(data: bytes, source: Any, now: float, relayed: Any = None) -> bool:
            parsed.append(relayed.origin)
            return real_receive(data, source, now, relayed)

        bridge.ua.receive_datagram = counting_receive  # type: ignore[method-assign]
        proxy.send(relayed(proxy.options(), "127.0.0.9"))  # banned: dropped unparsed
        await asyncio.sleep(0.5)  # past the unknown-source timeout
        assert not await proxy.closed(0.1)
        proxy.send(relayed(proxy.options(2), "127.0.0.2"))
        assert (await proxy.final()).status == 200
        assert parsed == [("127.0.0.2", 5062)]
    finally:
        await proxy.close()


async def test_a_connection_flood_is_banned_like_a_message_flood(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(flood_rate=5.0, flood_burst=10)
    source = "127.0.0.8"
    clients = [await StreamClient.open(bridge.sip_address, source=source) for _ in range(14)]
    outcomes = [await client.closed(0.2) for client in clients]
    for client in clients:
        await client.close()
    # The burst of connections is accepted (and then idles), the rest refused at once.
    assert outcomes[:10] == [False] * 10 and all(outcomes[11:]), outcomes
    [ban] = [b for b in bridge.guard.bans(bridge.loop.time()) if b.address == source]
    assert ban.reason == "flood"


# ---------------------------------------------------------------- baresip over TLS


@NEEDS_BARESIP
async def test_baresip_calls_over_tls_with_srtp(
    make_bridge: BridgeFactory,
    certs: tuple[Path, Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An independent SIP stack over TLS: baresip 1.0 (libre's SIP and TLS) dials
    ``;transport=tls`` with SRTP mandatory, the realistic combination (signalling and
    media both encrypted); the echo agent hears it and baresip hears the echo.

    baresip 1.0 has no setting to make libre verify the server certificate (it loads
    ``sip_cafile`` but accepts any certificate), so this proves interoperation, not
    verification (the ``ssl`` client tests above verify against the CA)."""
    caplog.set_level(logging.INFO, "sipbridge.call")
    bridge = await make_bridge(**tls_settings(certs))
    tls = bridge.tls_address
    assert tls is not None
    received: list[tuple[Request | Response, Any]] = []  # every SIP message and its source
    real_receive = bridge.receive

    def spy(data: bytes, source: Any) -> None:
        with contextlib.suppress(Exception):
            received.append((parse_message(data), source))
        real_receive(data, source)

    monkeypatch.setattr(bridge, "receive", spy)
    source = tmp_path / "in.wav"
    speech = speech_file(source)
    folder = tmp_path / "baresip"
    baresip_config(folder, free_udp_port(), free_ports(10), source)
    with (folder / "config").open("a") as config:
        config.write(f"sip_cafile {certs[0]}\n")
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        # -s: baresip's SIP trace, which names the transport of every message it sends.
        log = await run_baresip(
            folder, f"sip:{SERVICE}@{tls[0]}:{tls[1]};transport=tls", "-s", server=bridge
        )

        # The INVITE came over TLS, from a connection to our TLS port, and nothing came
        # over UDP or TCP: one TLS connection for the whole dialog.
        invites = [(m, s) for m, s in received if isinstance(m, Request) and m.method == "INVITE"]
        assert invites, log[-3000:]
        invite, via = invites[0]
        assert transport_of(via) is Transport.TLS
        assert invite.vias[0].transport.upper() == "TLS"
        assert f"TLS {via[0]}:{via[1]} -> {tls[0]}:{tls[1]}" in log  # baresip's own account
        assert {s for _m, s in received} == {via}
        assert all(transport_of(s) is Transport.TLS for _m, s in received)
        methods = [m.method for m, _s in received if isinstance(m, Request)]
        # Our 2xx Contact follows the dialog's scheme (RFC 3261 §12.1.1): sip: with
        # ;transport=tls here. A sips: one stopped this call: libre sends in-dialog
        # requests to sip: URIs only, so baresip could neither ACK nor BYE.
        assert f"Contact: <sip:127.0.0.1:{tls[1]};transport=tls>" in log, log[-3000:]
        [record] = await records(bridge, timeout=20)
        [call] = agent.calls
    assert "Call established" in log, log[-3000:]
    assert f"SRTP is Enabled (cryptosuite={SUITE})" in log
    assert {"INVITE", "ACK", "BYE"} <= set(methods), methods
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup", record
    assert record.source == f"{via[0]}:{via[1]}"  # the TLS connection's peer
    assert record.codec == "pcmu" and record.srtp == SUITE
    assert "srtp_auth_failures=0 srtp_replays=0" in caplog.text

    # The agent got baresip's audio (TLS signalling, SRTP media both decrypted), and
    # baresip decoded the echo (its dump of what it decoded holds the speech).
    pcmu = get_codec("pcmu")
    encoder, decoder = pcmu.encoder(), pcmu.decoder()
    frames = [speech[i : i + 160].tobytes() for i in range(0, len(speech), 160)]
    reference = np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames), "<i2")
    score, _lag = align(reference, np.frombuffer(b"".join(call.audio), "<i2"))
    assert score > 0.99, score
    [dump] = (folder / "snd").glob("dump-*-dec.wav")
    score, _lag = align(reference, read_wav(dump).astype(np.float64))
    assert score > 0.95, score


# ---------------------------------------------------------------- connection slots


async def test_unknown_sources_idle_connection_is_closed_a_trunks_is_not(
    make_bridge: BridgeFactory,
) -> None:
    """A source matching no trunk must send an admitted request within
    ``unknown_connection_timeout`` of its accept: bytes, keep-alives and requests the
    access policy drops do not count. A trunk's idle connection keeps the idle timeout."""
    bridge = await make_bridge(unknown_connection_timeout=0.5)
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=["127.0.0.1/32"])
    await bridge.reload_trunks()
    loop = asyncio.get_running_loop()
    started = loop.time()
    idle = await StreamClient.open(bridge.sip_address, source="127.0.0.20")
    chatty = await StreamClient.open(bridge.sip_address, source="127.0.0.21")
    trunk = await StreamClient.open(bridge.sip_address)
    try:
        for n in range(4):  # keep-alives and a refused OPTIONS (dropped: unknown source)
            chatty.send(b"\r\n\r\n")
            assert await asyncio.wait_for(chatty.reader.readexactly(2), 3) == b"\r\n"
            chatty.send(chatty.options(n + 1))
            await asyncio.sleep(0.1)
        assert await idle.closed(3) and await chatty.closed(3)
        assert 0.4 < loop.time() - started < 3.0
        assert not await trunk.closed(1.0)  # twice the unknown timeout: still open
        trunk.send(trunk.options())
        assert (await trunk.final()).status == 200
    finally:
        for client in (idle, chatty, trunk):
            await client.close()


async def test_an_admitted_request_keeps_an_unknown_sources_connection(
    make_bridge: BridgeFactory,
) -> None:
    """A digest trunk's caller matches no network: its authenticated request (the UA
    core admits it) keeps its connection past the unknown-source timeout; the challenge
    alone does not."""
    bridge = await make_bridge(unknown_connection_timeout=0.5)
    await service.add_trunk(bridge.db, "acme", username="acme", password="pw")
    await bridge.reload_trunks()
    client = await StreamClient.open(bridge.sip_address, source="127.0.0.22")
    try:
        request = client.options()
        client.send(request)  # with no credentials: dropped (unknown source)
        await asyncio.sleep(0.1)
        [connection] = bridge.streams.connections.values()
        assert not connection.known and not connection.admitted
        # The same OPTIONS with valid credentials is admitted (AccessPolicy.check).
        challenge = bridge.access.authenticator.challenge(bridge.loop.time())[0][1]
        nonce = challenge.split('nonce="')[1].split('"')[0]
        uri = "sip:127.0.0.1"
        response = digest_response(
            algorithm="SHA-256",
            username="acme",
            realm="sipbridge.test",
            password="pw",
            method="OPTIONS",
            uri=uri,
            nonce=nonce,
            nc="00000001",
            cnonce="x",
        )
        authorization = (
            f'Authorization: Digest username="acme", realm="sipbridge.test", '
            f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=SHA-256, '
            'qop=auth, nc=00000001, cnonce="x"\r\n'
        )
        client.send(
            client.options(2).replace(b"Content-Length", authorization.encode() + b"Content-Length")
        )
        assert (await client.final()).status == 200
        assert connection.admitted
        assert not await client.closed(1.0)
    finally:
        await client.close()


def test_source_group_counts_a_v4_24_and_a_v6_64_once() -> None:
    assert transports.source_group("203.0.113.7") == "203.0.113.0/24"
    assert transports.source_group("203.0.113.250") == "203.0.113.0/24"
    assert transports.source_group("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert transports.source_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert transports.source_group("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert transports.source_group("not-an-address") == "not-an-address"


def test_connection_cap_leaves_half_the_fd_limit() -> None:
    assert transports.connection_cap(1024) == 480  # (1024 - 64 reserved) / 2
    assert transports.connection_cap(20000) == transports.MAX_CONNECTIONS
    assert transports.connection_cap(10) == 16


def test_fd_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    calls: list[tuple[int, int]] = []

    def setrlimit(kind: int, limits: tuple[int, int]) -> None:
        assert kind == resource.RLIMIT_NOFILE
        calls.append(limits)

    assert transports.raise_fd_limit(lambda kind: (1024, 4096), setrlimit) == 4096
    assert calls == [(4096, 4096)]
    # Already at the hard limit: nothing to do.
    assert transports.raise_fd_limit(lambda kind: (4096, 4096), setrlimit) == 4096
    assert len(calls) == 1

    def refuse(kind: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    assert transports.raise_fd_limit(lambda kind: (1024, 4096), refuse) == 1024
    unlimited = resource.RLIM_INFINITY
    assert transports.raise_fd_limit(lambda kind: (1024, unlimited), setrlimit) == 65536
    assert calls[-1] == (65536, unlimited)


async def test_start_up_line_says_the_fd_limit_and_the_connection_cap(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sipbridge.runtime import server as server_module

    caplog.set_level(logging.INFO, "sipbridge.server")
    monkeypatch.setattr(server_module, "raise_fd_limit", lambda: 1024)
    bridge = await make_bridge()
    assert bridge.streams.max_connections == 480 and bridge.streams.max_unknown == 360
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("listening")]
    assert "fd_limit=1024 max_connections=480 max_unknown_connections=360" in line
    # which database this server uses (a relative default once made a second, empty one)
    assert f" db={bridge.settings.db} " in line  # as given (sqlite:///...), as the CLI says it
    # 1000 calls need 2000 RTP/RTCP sockets: more than 1024 allows.
    [warning] = [r for r in caplog.records if "event=fd_limit_low" in r.getMessage()]
    assert warning.levelno == logging.WARNING


def test_refusal_log_counts_per_source_and_window() -> None:
    refusals = transports.RefusalLog(60.0, max_sources=2)
    assert refusals.refused("192.0.2.1", "per_source", 100.0)  # a window starts
    assert refusals.window_end == 160.0
    for now in range(101, 130):
        assert not refusals.refused("192.0.2.1", "per_source", float(now))
    assert not refusals.refused("192.0.2.1", "banned", 130.0)
    assert not refusals.refused("192.0.2.2", "full", 131.0)
    assert not refusals.refused("192.0.2.3", "full", 132.0)  # beyond max_sources
    assert refusals.flush() == [
        ("192.0.2.1", 31, "per_source:30,banned:1"),
        ("192.0.2.2", 1, "full:1"),
        ("others", 1, "full:1"),
    ]
    assert refusals.window_end is None and refusals.flush() == []
    assert refusals.refused("192.0.2.1", "full", 200.0)  # the next window


async def test_refused_connections_are_logged_once_per_source_and_window(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transports, "REFUSAL_LOG_WINDOW", 0.5)
    caplog.set_level(logging.INFO, "sipbridge.transports")
    bridge = await make_bridge(max_connections_per_source=2)
    clients = [await StreamClient.open(bridge.sip_address, source="127.0.0.30") for _ in range(12)]
    try:
        outcomes = [await client.closed(0.1) for client in clients]
        assert outcomes == [False] * 2 + [True] * 10
        await asyncio.sleep(0.8)  # the window has ended
        lines = [r.getMessage() for r in caplog.records if "connection_refused" in r.getMessage()]
        [line] = lines
        assert "source=127.0.0.30 count=10 reasons=per_source:10" in line
        assert all(r.levelno == logging.INFO for r in caplog.records if r.getMessage() == line)
    finally:
        for client in clients:
            await client.close()


async def test_tls_handshakes_hold_slots_like_connections(
    make_bridge: BridgeFactory, certs: tuple[Path, Path, Path]
) -> None:
    """TCP connections to the TLS port that never start their handshake are judged and
    counted at their accept: the per-source cap refuses the next at once, and an unknown
    source's stalled handshake ends with the unknown-source timeout (not 10 s)."""
    bridge = await make_bridge(
        max_connections_per_source=2, unknown_connection_timeout=0.5, **tls_settings(certs)
    )
    tls = bridge.tls_address
    assert tls is not None
    loop = asyncio.get_running_loop()
    stalled: list[StreamClient] = []
    try:
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*tls, local_addr=("127.0.0.40", 0))
            stalled.append(StreamClient(reader, writer, "TCP"))
        started = loop.time()
        assert await stalled[2].closed(1.0)  # the third: refused at once
        for _ in range(100):
            if bridge.streams.per_source.get("127.0.0.0/24") == 2:
                break
            await asyncio.sleep(0.01)
        assert bridge.streams.per_source["127.0.0.0/24"] == 2 == bridge.streams.unknown
        assert await stalled[0].closed(3) and await stalled[1].closed(3)
        assert loop.time() - started < 3.0
        for _ in range(100):
            if not bridge.streams.connections:
                break
            await asyncio.sleep(0.01)
        assert bridge.streams.total == 0 and bridge.streams.unknown == 0
        # A TLS client from a known source still gets through.
        client = await StreamClient.open(tls, context=client_context(certs[0]))
        stalled.append(client)
        client.send(client.options())
        assert (await client.final()).status == 200
    finally:
        for client in stalled:
            await client.close()


def test_client_context_and_connect_errors(certs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    # --tls-ca adds the CA to the system's; a file without a certificate is refused.
    ca, _cert, _key = certs
    context = transports.client_ssl_context(str(ca))
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert any("sipbridge test CA" in str(c.get("subject")) for c in context.get_ca_certs())
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(ssl.SSLError):
        transports.client_ssl_context(str(empty))
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate"
    assert transports.connect_error(verify) == (
        "tls certificate verify failed: self-signed certificate"
    )
    refused = ConnectionRefusedError(111, "Connection refused")
    assert transports.connect_error(refused) == "connect failed: Connection refused"
    assert transports.connect_error(TimeoutError()) == "connect timeout"
