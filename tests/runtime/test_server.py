"""The server process: the CLI's serve on real sockets, OPTIONS, bad input, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.runtime import agent_client
from sipbridge.runtime import server as server_module
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Response, parse_message
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import BanRecord, CallRecord, CallStatus
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.runtime.test_call import NUMBER, UdpClient, answer_bye, records, route_to
from tests.runtime.test_call_access import (
    CARRIER_IP,
    STRANGER_IP,
    Client,
    hang_up,
    with_authorization,
)
from tests.runtime.test_call_access import options as options_from
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory, loopback_settings
from tests.support.sipp import free_udp_port


def options(port: int, call_id: str = "opt-1") -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def stream_options(port: int, context: ssl.SSLContext | None = None) -> Response:
    """OPTIONS over a new TCP (or, with ``context``, TLS) connection; the final response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
        local = sock.getsockname()[1]
        request = options(local, f"opt-{'tls' if context else 'tcp'}").replace(
            b"SIP/2.0/UDP", b"SIP/2.0/TLS" if context else b"SIP/2.0/TCP"
        )
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65535)
            assert chunk, data
            data += chunk
        message = parse_message(data)
        assert isinstance(message, Response)
        return message


def test_serve_subprocess_answers_options_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real entry point (uvloop, as in production): UDP, TCP and TLS listeners."""
    port = free_udp_port()
    tls_port = free_udp_port()
    low = random.randrange(40000, 59000, 2)
    ca, cert, key = make_ca_and_cert(tmp_path)
    env = {**os.environ, "SIPBRIDGE_DB": f"sqlite:///{tmp_path / 'serve.db'}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipbridge",
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(port),
            "--tls-port",
            str(tls_port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--rtp-ports",
            f"{low}-{low + 20}",
            "--http-port",
            "0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            deadline = time.monotonic() + 20
            response = None
            while response is None and time.monotonic() < deadline:
                sock.sendto(b"\x00garbage\xff", ("127.0.0.1", port))  # must not hurt
                sock.sendto(options(sock.getsockname()[1]), ("127.0.0.1", port))
                try:
                    data, _ = sock.recvfrom(65535)
                except TimeoutError:
                    continue
                response = parse_message(data)
        assert isinstance(response, Response) and response.status == 200
        assert "INVITE" in response.headers.get_all("Allow")
        assert response.headers.get("Server") is None
        assert stream_options(port).status == 200
        context = ssl.create_default_context(cafile=str(ca))
        assert stream_options(tls_port, context).status == 200
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "listening" in out and "stopped" in out
    assert f"sip=udp:127.0.0.1:{port},tcp:127.0.0.1:{port},tls:127.0.0.1:{tls_port}" in out
    assert "Traceback" not in out, out
    assert (tmp_path / "serve.db").exists()  # embedded SQLite created and migrated


class _FirstUdpPortTaken:
    """The running loop, but the first UDP socket with port 0 gets ``port``: a kernel
    pick whose number is taken for TCP (what failed a CI run once)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self._loop = loop
        self._port: int | None = port
        self.binds: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)

    async def create_datagram_endpoint(self, factory: Any, **kwargs: Any) -> Any:
        host, port = kwargs["local_addr"]
        if port == 0 and self._port is not None:
            kwargs["local_addr"], self._port = (host, self._port), None
        transport, protocol = await self._loop.create_datagram_endpoint(factory, **kwargs)
        self.binds.append(transport.get_extra_info("sockname")[1])
        return transport, protocol


async def test_a_kernel_picked_sip_port_taken_for_tcp_is_picked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sipbridge.server")
    with socket.socket() as held:  # somebody's TCP socket on the number
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        server = SipBridgeServer(loopback_settings(tmp_path / "retry.db"))
        loop = _FirstUdpPortTaken(server.loop, taken)
        server.loop = loop  # type: ignore[assignment]
        await server.start()
        try:
            port = server.sip_address[1]
            assert loop.binds[0] == taken and port == loop.binds[-1] != taken
            assert server.streams.tcp_address == ("127.0.0.1", port)
            assert server.ua.local_port == port
            assert "event=sip_port_retry reason=tcp_port_in_use" in caplog.text
        finally:
            await server.stop()


async def test_a_configured_sip_port_taken_for_tcp_stops_start(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        server = SipBridgeServer(loopback_settings(tmp_path / "taken.db", sip_port=taken))
        with pytest.raises(OSError, match="address already in use"):
            await server.start()
        await server.stop()


async def test_shutdown_hangs_up_active_calls_with_bye(tmp_path: Path) -> None:
    settings = loopback_settings(tmp_path / "shutdown.db", rtp_ports=10)
    server = SipBridgeServer(settings)
    await server.start()
    async with EchoAgent() as agent:
        await route_to(server, agent.url)
        client = UdpClient(server.sip_address)
        try:
            client.send(client.invite("z9hG4bK-sd", "shutdown-1", 4010))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "shutdown-1", ok.to.tag))
            await asyncio.sleep(0.2)
            stopping = asyncio.ensure_future(server.stop())
            bye = await answer_bye(client)
            assert bye.to.tag == "f-shutdown-1" and bye.from_.tag == ok.to.tag
            assert str(bye.uri) == f"sip:caller@127.0.0.1:{client.port}"
            await stopping
        finally:
            client.close()
        [call] = agent.calls
        await asyncio.wait_for(call.closed.wait(), 5)
    assert call.stop == {"type": "stop", "reason": "server_shutdown"}
    again = SipBridgeServer(settings)
    await again.db.upgrade()
    try:
        [record] = await service.list_calls(again.db)
    finally:
        await again.db.close()
    assert (record.reason, record.hangup_by) == ("server_shutdown", "server")


async def test_full_rtp_range_answers_503(tmp_path: Path) -> None:
    taken = free_udp_port()  # the only even port of the range, held by someone else
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", taken))
    settings = loopback_settings(tmp_path / "full.db", rtp_low=taken, rtp_ports=1)
    server = SipBridgeServer(settings)
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            client = UdpClient(server.sip_address)
            try:
                client.send(client.invite("z9hG4bK-full", "full-1", 4012))
                response = await client.final()
            finally:
                client.close()
        assert response.status == 503
        assert response.headers.get("Retry-After") == "5"
        [record] = await records(server)
        assert record.reason == "no_rtp_port"
    finally:
        blocker.close()
        await server.stop()


async def test_global_call_limit_and_maximum_call_duration(tmp_path: Path) -> None:
    settings = loopback_settings(
        tmp_path / "limits.db", rtp_ports=20, max_calls=1, max_call_duration=2.0
    )
    server = SipBridgeServer(settings)
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            first = UdpClient(server.sip_address)
            second = UdpClient(server.sip_address)
            loop = asyncio.get_running_loop()
            try:
                first.send(first.invite("z9hG4bK-lim1", "limit-1", 4040))
                ok = await first.final()
                assert ok.status == 200 and ok.to.tag
                first.send(first.in_dialog("ACK", 1, "limit-1", ok.to.tag))
                answered = loop.time()
                second.send(second.invite("z9hG4bK-lim2", "limit-2", 4042))
                busy = await second.final()
                assert busy.status == 503
                assert busy.headers.get("Retry-After")
                assert busy.headers.get("Reason") == 'SIP ;cause=503 ;text="server_busy"'
                # At its limit the instance says so to a proxy's probes too.
                second.send(options(second.port, "limit-opt-1"))
                _assert_503(await _final_for(second, "OPTIONS"), "server_busy", "5")
                bye = await answer_bye(first, timeout=6)  # the call hits its maximum length
                assert 1.9 <= loop.time() - answered <= 4.5
                assert bye.method == "BYE"
                await _options_until(second, 200, 5)  # once the call has ended
            finally:
                first.close()
                second.close()
        found = await records(server, 2)
    finally:
        await server.stop()
    by_id = {r.sip_call_id: r for r in found}
    assert (by_id["limit-2"].reason, by_id["limit-2"].sip_code) == ("server_busy", 503)
    assert (by_id["limit-1"].reason, by_id["limit-1"].hangup_by) == ("max_duration", "server")


async def _final_for(client: UdpClient, method: str, call_id: str | None = None) -> Response:
    """The next final response to ``method`` (retransmitted answers to others skipped)."""
    while True:
        response = await client.final()
        if response.cseq.method == method and call_id in (None, response.call_id):
            return response


async def test_overload_refuses_new_calls_and_options_with_503_then_recovers(
    tmp_path: Path,
) -> None:
    """A loop that keeps running late (here: a callback hogging it for 15 ms again and
    again, as too many calls would): new INVITEs and OPTIONS get 503 and a record, the call
    already up stays up, and once the loop keeps time again calls are taken again."""
    settings = loopback_settings(tmp_path / "overload.db", rtp_ports=20)
    server = SipBridgeServer(settings)
    await server.start()
    hogging = True

    async def hog() -> None:
        while hogging:
            time.sleep(0.015)  # noqa: ASYNC251 - the overload under test
            await asyncio.sleep(0.001)

    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            first = UdpClient(server.sip_address)
            second = UdpClient(server.sip_address)
            loop = asyncio.get_running_loop()
            try:
                first.send(first.invite("z9hG4bK-ov1", "ov-1", 4050))
                ok = await first.final()
                assert ok.status == 200 and ok.to.tag
                first.send(first.in_dialog("ACK", 1, "ov-1", ok.to.tag))
                assert not server.load.overloaded
                burner = asyncio.ensure_future(hog())
                deadline = loop.time() + 6
                while not server.load.overloaded and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert server.load.overloaded
                second.send(second.invite("z9hG4bK-ov2", "ov-2", 4052))
                busy = await second.final()
                assert busy.status == 503 and busy.headers.get("Retry-After")
                assert busy.headers.get("Reason") == 'SIP ;cause=503 ;text="overload"'
                second.send(options(second.port, "ov-opt-1"))
                assert (await _final_for(second, "OPTIONS")).status == 503
                assert await _metric(server, "sipbridge_overloaded") == 1
                assert await _metric(server, "sipbridge_overload_refusals_total") == 1
                hogging = False
                await burner
                deadline = loop.time() + 6
                while server.load.overloaded and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                assert not server.load.overloaded
                second.send(options(second.port, "ov-opt-2"))
                assert (await _final_for(second, "OPTIONS")).status == 200
                second.send(second.invite("z9hG4bK-ov3", "ov-3", 4054))
                again = await _final_for(second, "INVITE", "ov-3")
                assert again.status == 200 and again.to.tag
                second.send(second.in_dialog("ACK", 1, "ov-3", again.to.tag))
                assert "ov-1" in {c.sip.invite.call_id for c in server.calls.values()}
                for client, call_id, tag in (
                    (first, "ov-1", ok.to.tag),
                    (second, "ov-3", again.to.tag),
                ):
                    client.send(client.in_dialog("BYE", 2, call_id, tag))
                    assert (await _final_for(client, "BYE")).status == 200
            finally:
                hogging = False
                first.close()
                second.close()
        found = await records(server, 3)
    finally:
        await server.stop()
    by_id = {r.sip_call_id: r for r in found}
    assert (by_id["ov-2"].reason, by_id["ov-2"].sip_code) == ("overload", 503)
    assert by_id["ov-1"].reason == "caller_hangup"
    assert by_id["ov-3"].status is CallStatus.ANSWERED


# ---------------------------------------------------------------- flood and scanner defence
# 127.0.0.2 is a trunk's network (trusted), 127.0.0.3 a stranger on the internet.


async def _bans_stored(bridge: SipBridgeServer, count: int) -> list[BanRecord]:
    for _ in range(100):
        found = await service.list_bans(bridge.db)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} stored bans, found {found}")


async def _metric(bridge: SipBridgeServer, line_start: str) -> float:
    async with httpx.AsyncClient(base_url="http://{}:{}".format(*bridge.http_address)) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{line_start} not in /metrics")


async def _count_answers(client: Client, wait: float = 0.5) -> int:
    answers = 0
    while True:
        try:
            await client.recv(wait)
        except TimeoutError:
            return answers
        answers += 1


async def _answers(client: Client, wait: float) -> list[Response]:
    found: list[Response] = []
    with contextlib.suppress(TimeoutError):
        while True:
            found.append(await client.recv(wait))
    return found


async def test_flooding_stranger_is_banned_before_parsing_and_carrier_only_throttled(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await make_bridge(unknown_sources="403", flood_rate=5.0, flood_burst=10)
    # The carrier's own rate, as low as the strangers' here (burst: 2 s of it).
    await service.add_trunk(
        bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"], max_message_rate=5
    )
    await bridge.reload_trunks()
    parsed: list[str] = []
    real_receive = bridge.ua.receive_datagram

    def counting_receive(data: bytes, source: Any, now: float) -> None:
        parsed.append(source[0])
        real_receive(data, source, now)

    bridge.ua.receive_datagram = counting_receive  # type: ignore[method-assign]
    stranger = Client(bridge.sip_address, STRANGER_IP)
    carrier = Client(bridge.sip_address, CARRIER_IP)
    try:
        with caplog.at_level(logging.WARNING, logger="sipbridge.bans"):
            for n in range(40):
                stranger.send(options_from(stranger, f"s-{n}"))
            answered = await _count_answers(stranger)
        # The burst was answered (403: not a trunk), the rest dropped unparsed.
        assert answered == 10 and parsed.count(STRANGER_IP) == 10
        assert bridge.guard.is_banned(STRANGER_IP, bridge.loop.time())
        [ban] = await _bans_stored(bridge, 1)
        assert (ban.address, ban.reason) == (STRANGER_IP, "flood")
        assert ban.expires_at is not None
        assert any(
            f"event=source_banned source={STRANGER_IP} reason=flood" in r.getMessage()
            for r in caplog.records
        )
        # Still banned a while later, whatever it sends.
        stranger.send(options_from(stranger, "s-later"))
        assert await stranger.silent()
        # The carrier floods too: its excess is dropped, it is never banned.
        for n in range(40):
            carrier.send(options_from(carrier, f"c-{n}"))
        assert await _count_answers(carrier) == 10
        assert not bridge.guard.is_banned(CARRIER_IP, bridge.loop.time())
        await asyncio.sleep(0.5)  # 2.5 tokens back at 5/s
        carrier.send(options_from(carrier, "c-after"))
        assert (await carrier.final()).status == 200
    finally:
        stranger.close()
        carrier.close()
    assert await _metric(bridge, "sipbridge_sip_banned_requests_total") == 31
    assert await _metric(bridge, "sipbridge_sip_throttled_requests_total") == 30
    assert await _metric(bridge, 'sipbridge_bans_total{reason="flood"}') == 1
    assert await _metric(bridge, "sipbridge_bans_active") == 1


async def test_a_trunk_has_its_own_default_rate_far_above_the_strangers(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(unknown_sources="403", flood_rate=5.0, flood_burst=10)
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    carrier = Client(bridge.sip_address, CARRIER_IP)
    try:
        for batch in range(6):  # 30 times the strangers' burst within about 0.1 s
            for n in range(50):
                carrier.send(options_from(carrier, f"c-{batch}-{n}"))
            await asyncio.sleep(0.02)
        assert await _count_answers(carrier) > 100  # (loopback UDP buffers may drop some)
    finally:
        carrier.close()
    assert bridge.guard.dropped_throttled == 0
    assert not bridge.guard.is_banned(CARRIER_IP, bridge.loop.time())


async def test_ack_and_bye_of_a_live_call_pass_a_trunk_over_its_rate_forged_ones_do_not(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(unknown_sources="403", flood_rate=5.0, flood_burst=10)
    await service.add_trunk(
        bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"], max_message_rate=2
    )
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        carrier = Client(bridge.sip_address, CARRIER_IP)
        try:
            carrier.send(carrier.invite("z9hG4bK-live", "live-1", 4002))
            ok = await carrier.final()
            assert ok.status == 200 and ok.to.tag
            # The trunk spends its whole burst (4) and more: the excess is dropped.
            for n in range(20):
                carrier.send(options_from(carrier, f"o-{n}"))
            answers = await _answers(carrier, 0.3)
            assert len([a for a in answers if a.cseq.method == "OPTIONS"]) < 10
            # Forged BYEs (Call-IDs nobody holds) stay under the limit: no 481.
            for n in range(10):
                carrier.send(options_from(carrier, f"p-{n}"))
            for n in range(10):
                carrier.send(carrier.in_dialog("BYE", 2, f"guess-{n}", ok.to.tag))
            answers = await _answers(carrier, 0.3)
            assert [a for a in answers if a.cseq.method == "BYE"] == []
            # The real ACK and BYE pass although the trunk is still over its rate.
            throttled = bridge.guard.dropped_throttled
            for n in range(10):
                carrier.send(options_from(carrier, f"q-{n}"))
            carrier.send(carrier.in_dialog("ACK", 1, "live-1", ok.to.tag))
            carrier.send(carrier.in_dialog("BYE", 2, "live-1", ok.to.tag))
            answers = await _answers(carrier, 0.5)
            assert [(a.status, a.call_id) for a in answers if a.cseq.method == "BYE"] == [
                (200, "live-1")
            ]
        finally:
            carrier.close()
    [record] = await records(bridge)
    assert record.reason == "caller_hangup", record.reason
    assert bridge.guard.admitted_in_dialog == 2 and bridge.guard.dropped_throttled > throttled
    assert not bridge.guard.is_banned(CARRIER_IP, bridge.loop.time())


async def test_bans_from_the_api_and_the_store_reach_the_running_server(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "TRUNK_REFRESH", 0.1)
    bridge = await make_bridge(unknown_sources="403")
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    _, key = await service.create_api_key(bridge.db, "ops")
    carrier = Client(bridge.sip_address, CARRIER_IP)
    base = "http://{}:{}".format(*bridge.http_address)
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            # A manual ban holds even for a trunk's own address, at once.
            created = await http.post("/api/bans", json={"address": "127.0.0.0/30"})
            assert created.status_code == 201
            carrier.send(options_from(carrier, "p-1"))
            assert await carrier.silent()
            lifted = await http.delete("/api/bans/127.0.0.0/30")
            assert lifted.status_code == 204
            carrier.send(options_from(carrier, "p-2"))
            assert (await carrier.final()).status == 200
        # A ban written by another instance (or the CLI) arrives with the refresh.
        await service.add_ban(bridge.db, CARRIER_IP, duration=60)
        await asyncio.sleep(0.4)
        carrier.send(options_from(carrier, "p-3"))
        assert await carrier.silent()
        await service.remove_ban(bridge.db, CARRIER_IP)
        await asyncio.sleep(0.4)
        carrier.send(options_from(carrier, "p-4"))
        assert (await carrier.final()).status == 200
    finally:
        carrier.close()


async def test_calls_to_unknown_numbers_in_a_burst_ban_an_authenticated_source(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge(unknown_number_limit=3)
    await service.add_trunk(bridge.db, "acme", username="acme", password="s3cret")
    await bridge.reload_trunks()
    client = Client(bridge.sip_address, STRANGER_IP)
    try:
        for n in range(3):
            invite = client.invite(f"z9hG4bK-u{n}", f"u-{n}", 4000).replace(
                NUMBER.encode(), b"+12025550177"
            )
            client.send(invite)
            challenge = await client.final()
            assert challenge.status == 401
            client.ack(invite, challenge)
            retry = with_authorization(
                invite,
                challenge,
                username="acme",
                password="s3cret",
                branch=f"z9hG4bK-ua{n}",
                uri="sip:+12025550177@127.0.0.1",
            )
            client.send(retry)
            not_found = await client.final()
            assert not_found.status == 404, not_found.status
            client.ack(retry, not_found)
        await records(bridge, 3)
        [ban] = await _bans_stored(bridge, 1)
        assert (ban.address, ban.reason) == (STRANGER_IP, "unknown_numbers")
        client.send(client.invite("z9hG4bK-u9", "u-9", 4000))
        answers: list[Response] = []
        with contextlib.suppress(TimeoutError):
            while True:  # (a 404 retransmitted before the ban may still come)
                answers.append(await client.recv(1.0))
        assert [a for a in answers if a.call_id == "u-9"] == []
    finally:
        client.close()


async def test_trunk_allowed_numbers(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await service.add_trunk(
        bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"], allowed_numbers=[NUMBER]
    )
    await service.add_trunk(
        bridge.db, "other", allowed_cidrs=["127.0.0.4/32"], allowed_numbers=["+12025550199"]
    )
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        carrier = Client(bridge.sip_address, CARRIER_IP)
        other = Client(bridge.sip_address, "127.0.0.4")
        try:
            other.send(other.invite("z9hG4bK-o1", "o-1", 4000))
            refused = await other.final()
            assert refused.status == 404
            assert "number_not_allowed" in (refused.headers.get("Reason") or "")
            carrier.send(carrier.invite("z9hG4bK-c1", "c-1", 4002))
            await hang_up(carrier, "c-1", await carrier.final())
        finally:
            carrier.close()
            other.close()
    found = {r.trunk: r for r in await records(bridge, 2)}
    assert found["other"].reason == "number_not_allowed" and found["other"].sip_code == 404
    assert found["other"].to_number == NUMBER
    assert found["carrier"].status is CallStatus.ANSWERED
    assert agent.calls and len(agent.calls) == 1  # the refused call never reached the agent


async def test_an_overload_with_many_calls_up_holds_new_calls_at_that_number(
    tmp_path: Path,
) -> None:
    """Once the instance was overloaded with N calls up, it takes no more than 90 % of N
    for a minute after it recovers, so a fast ramp of calls does not overload it again
    and again (the calls already up would suffer each time)."""
    server = SipBridgeServer(loopback_settings(tmp_path / "ceiling.db"))
    server.calls.update({f"c{n}": object() for n in range(20)})  # type: ignore[misc]
    t = 1000.0
    for k in range(120):  # a second of wake-ups, most 20 ms late: overloaded
        server._clock_lag(0.02, t + k / 100)
    server._clock_lag(0.02, t + 1.3)
    assert server.load.overloaded and server.ua.busy
    t += 1.3
    for second in range(4):  # good windows: the overload is over
        for k in range(100):
            server._clock_lag(0.0001, t + second + k / 100)
    t += 4
    assert not server.load.overloaded and not server.ua.busy
    assert server._at_ceiling(t)  # 20 calls up, ceiling 18
    for n in range(3):
        del server.calls[f"c{n}"]
    assert not server._at_ceiling(t)  # 17 calls: room for one more
    server.calls["again"] = object()  # type: ignore[assignment]
    assert server._at_ceiling(t)
    assert not server._at_ceiling(t + 61)  # a minute later the ceiling is gone
    assert server._ceiling is None
    server.calls.clear()
    await server.db.close()


async def test_a_loopback_address_advertised_on_all_interfaces_is_warned_at_start(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listening on 0.0.0.0 with no outward route and a host name that resolves to
    127.0.0.1: the server would advertise 127.0.0.1 to callers elsewhere. It says so."""
    monkeypatch.setattr(
        server_module.ServeSettings, "advertised_ip", property(lambda s: "127.0.0.1")
    )
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        await make_bridge(sip_host="0.0.0.0")
    [warning] = [r.getMessage() for r in caplog.records if "loopback_advertised" in r.getMessage()]
    assert "127.0.0.1" in warning and "--public-ip" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        await make_bridge()  # 127.0.0.1 on purpose: nothing to warn about
    assert not [r for r in caplog.records if "loopback_advertised" in r.getMessage()]


async def test_without_libopus_opus_is_left_out_of_the_offer_or_refused_when_named(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No libopus: the default codec list drops Opus with a warning, so an Opus-only
    caller gets 488 and a record (it got 500 and a traceback); naming opus in --codecs
    refuses to start with the install hint."""
    monkeypatch.setattr(server_module, "opus_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        bridge = await make_bridge()
    assert bridge.settings.codecs == ("pcmu", "pcma", "g722")
    assert any("codec_unavailable" in r.getMessage() for r in caplog.records)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            head, _, body = client.invite("z9hG4bK-opus", "opus-only", 40000).partition(b"\r\n\r\n")
            body = body.replace(b"RTP/AVP 0\r\n", b"RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n")
            head = head.rsplit(b"Content-Length:", 1)[0] + f"Content-Length: {len(body)}".encode()
            client.send(head + b"\r\n\r\n" + body)
            final = await client.final()
        finally:
            client.close()
    assert final.status == 488
    [record] = await records(bridge)
    assert record.sip_code == 488
    with pytest.raises(ValueError, match=r"--codecs names opus .*apt-get install libopus0"):
        await make_bridge(codecs=("opus", "pcmu"))


# ---------------------------------------------------------------- drain and honest 503s


def _media_port(answer: Response) -> int:
    match = re.search(rb"m=audio (\d+) ", answer.body)
    assert match, answer.body
    return int(match.group(1))


def _rtp(seq: int) -> bytes:
    """One 20 ms PCMU packet (RFC 3550 §5.1 header, payload type 0)."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\xff" * 160


class _Media:
    """The test caller's RTP socket: sends a packet, reads what the server sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.seq = 0

    async def exchange(self, server_port: int) -> bytes:
        """Send one packet to the server's RTP port; the next packet it sends us."""
        self.seq += 1
        self.sock.sendto(_rtp(self.seq), ("127.0.0.1", server_port))
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.sock, 2048), 5)

    def close(self) -> None:
        self.sock.close()


async def _readyz(bridge: SipBridgeServer) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url="http://{}:{}".format(*bridge.http_address)) as http:
        response = await http.get("/readyz", timeout=5)
    return response.status_code, response.json()


async def _answered(client: UdpClient, call_id: str, media: _Media) -> Response:
    """An INVITE from ``client`` answered 200 and ACKed."""
    client.send(client.invite(f"z9hG4bK-{call_id}", call_id, media.port))
    ok = await _final_for(client, "INVITE", call_id)
    assert ok.status == 200 and ok.to.tag, ok
    client.send(client.in_dialog("ACK", 1, call_id, ok.to.tag))
    return ok


def _assert_503(response: Response, reason: str, retry_after: str) -> None:
    assert response.status == 503, response
    assert response.headers.get("Retry-After") == retry_after
    assert response.headers.get("Reason") == f'SIP ;cause=503 ;text="{reason}"'


async def test_drain_refuses_new_calls_and_options_while_the_call_up_goes_on_to_its_bye(
    tmp_path: Path,
) -> None:
    """The drain a Kamailio dispatcher routes around: new INVITEs and OPTIONS get 503
    (Retry-After, Reason), /readyz says draining, and the call already up keeps its media
    until the caller's BYE ends it; then the drain is done at once."""
    settings = loopback_settings(tmp_path / "drain.db", rtp_ports=20)
    server = SipBridgeServer(settings)
    await server.start()
    media = _Media()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            first = UdpClient(server.sip_address)
            second = UdpClient(server.sip_address)
            try:
                ok = await _answered(first, "dr-1", media)
                rtp_port = _media_port(ok)
                await media.exchange(rtp_port)
                draining = asyncio.ensure_future(server.drain(60))
                await asyncio.sleep(0)  # the drain starts at once
                assert server.draining and not draining.done()
                second.send(second.invite("z9hG4bK-dr2", "dr-2", 4060))
                _assert_503(await _final_for(second, "INVITE", "dr-2"), "draining", "30")
                second.send(options(second.port, "dr-opt"))
                _assert_503(await _final_for(second, "OPTIONS"), "draining", "30")
                status, body = await _readyz(server)
                assert status == 503 and body["draining"] is True
                assert await _metric(server, "sipbridge_draining") == 1
                # The call up goes on: its media flows both ways through the drain.
                for _ in range(3):
                    await media.exchange(rtp_port)
                assert not draining.done() and not agent.calls[0].closed.is_set()
                first.send(first.in_dialog("BYE", 2, "dr-1", ok.to.tag))
                assert (await _final_for(first, "BYE")).status == 200
                assert await asyncio.wait_for(draining, 10) == "calls_ended"
            finally:
                first.close()
                second.close()
        found = await records(server, 2)
    finally:
        media.close()
        await server.stop()
    by_id = {r.sip_call_id: r for r in found}
    assert (by_id["dr-2"].status, by_id["dr-2"].reason, by_id["dr-2"].sip_code) == (
        CallStatus.FAILED,
        "draining",
        503,
    )
    assert (by_id["dr-1"].reason, by_id["dr-1"].hangup_by) == ("caller_hangup", "caller")
    # One count per record, the refused INVITE too: the metric and the table agree.
    registry = server.metrics.registry
    calls = "sipbridge_calls_total"
    assert registry.get_sample_value(calls, {"status": "failed", "reason": "draining"}) == 1
    assert registry.get_sample_value(calls, {"status": "answered", "reason": "caller_hangup"}) == 1


async def _seeded(db_url: str, agent_url: str) -> None:
    """The agent and number in the store of a server that serve() will start."""
    db = Database(db_url)
    try:
        await db.upgrade()
        await service.add_agent(db, "echo", agent_url, voice_enabled=True)
        await service.add_number(db, NUMBER, "echo")
    finally:
        await db.close()


async def _stored_calls(db_url: str) -> dict[str, CallRecord]:
    db = Database(db_url)
    try:
        return {r.sip_call_id: r for r in await service.list_calls(db)}
    finally:
        await db.close()


async def _options_until(client: UdpClient, status: int, timeout: float = 20) -> Response:
    """OPTIONS every 0.2 s until one is answered ``status`` (a server starting up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    step = 0
    while loop.time() < deadline:
        step += 1
        client.send(options(client.port, f"up-{step}"))
        with contextlib.suppress(TimeoutError):
            response = await client.recv(0.2)
            if response.status == status:
                return response
    raise AssertionError(f"no OPTIONS answered {status} within {timeout} s")


@pytest.mark.parametrize("second_signal", [False, True])
async def test_serve_hangs_up_what_the_drain_leaves_at_its_timeout_or_a_second_signal(
    tmp_path: Path, second_signal: bool
) -> None:
    """serve() drains at the first SIGTERM; the call still up when ``drain_timeout``
    passes (or at once on a second signal, here SIGINT: Ctrl-C twice) gets our BYE and a
    ``server_shutdown`` record, and serve() returns."""
    port = free_udp_port()
    settings = dataclasses.replace(
        loopback_settings(tmp_path / "serve-drain.db", rtp_ports=20),
        sip_port=port,
        drain_timeout=300.0 if second_signal else 1.5,
    )
    requests = server_module.ShutdownRequests(settings.drain_timeout)
    media = _Media()
    async with EchoAgent() as agent:
        await _seeded(settings.db, agent.url)
        serving = asyncio.ensure_future(server_module.serve(settings, requests))
        client = UdpClient(("127.0.0.1", port))
        loop = asyncio.get_running_loop()
        try:
            await _options_until(client, 200)
            ok = await _answered(client, "sd-1", media)
            requests.received(signal.SIGTERM)
            assert requests.drain.is_set() and not requests.stop.is_set()
            client.send(client.invite("z9hG4bK-sd2", "sd-2", 4062))
            _assert_503(await _final_for(client, "INVITE", "sd-2"), "draining", "30")
            signalled = loop.time()
            if second_signal:
                requests.received(signal.SIGINT)
                assert requests.stop.is_set()
            bye = await answer_bye(client, timeout=15)
            assert bye.from_.tag == ok.to.tag
            if not second_signal:
                assert loop.time() - signalled >= 1.0  # not before the drain timeout
            await asyncio.wait_for(serving, 15)
        finally:
            client.close()
            media.close()
            if not serving.done():
                requests.received(signal.SIGTERM)
                requests.received(signal.SIGTERM)
                await asyncio.wait_for(serving, 15)
    found = await _stored_calls(settings.db)
    assert (found["sd-1"].reason, found["sd-1"].hangup_by) == ("server_shutdown", "server")
    assert (found["sd-2"].reason, found["sd-2"].sip_code) == ("draining", 503)


def test_signals_drain_first_and_stop_on_the_second(caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C drains too, and says how to stop at once; with a drain timeout of 0 the
    first signal stops (the behaviour before drains existed)."""
    requests = server_module.ShutdownRequests(300.0)
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        requests.received(signal.SIGINT)
        assert requests.drain.is_set() and not requests.stop.is_set()
        requests.received(signal.SIGTERM)
        assert requests.stop.is_set()
    assert [r.getMessage() for r in caplog.records] == [
        "event=signal signal=SIGINT action=drain: press Ctrl-C again to stop at once",
        "event=signal signal=SIGTERM action=stop",
    ]
    at_once = server_module.ShutdownRequests(0.0)
    at_once.received(signal.SIGTERM)
    assert at_once.stop.is_set() and not at_once.drain.is_set()


async def test_serve_subprocess_drains_on_sigterm_and_exits_0_when_the_call_ends(
    tmp_path: Path,
) -> None:
    """The real entry point: SIGTERM starts the drain (OPTIONS and new INVITEs 503), the
    call up ends by the caller's BYE, and the process exits 0 with every record written."""
    port = free_udp_port()
    low = random.randrange(40000, 59000, 2)
    db_url = f"sqlite:///{tmp_path / 'serve-drain.db'}"
    media = _Media()
    async with EchoAgent() as agent:
        await _seeded(db_url, agent.url)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipbridge",
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(port),
            "--rtp-ports",
            f"{low}-{low + 20}",
            "--http-port",
            "0",
            env={**os.environ, "SIPBRIDGE_DB": db_url, "SIPBRIDGE_DRAIN_TIMEOUT": "120"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output = asyncio.ensure_future(proc.communicate())
        client = UdpClient(("127.0.0.1", port))
        try:
            await _options_until(client, 200)
            ok = await _answered(client, "sp-1", media)
            rtp_port = _media_port(ok)
            await media.exchange(rtp_port)
            proc.send_signal(signal.SIGTERM)
            _assert_503(await _options_until(client, 503), "draining", "30")
            client.send(client.invite("z9hG4bK-sp2", "sp-2", 4064))
            _assert_503(await _final_for(client, "INVITE", "sp-2"), "draining", "30")
            await media.exchange(rtp_port)  # the call up still has its media
            client.send(client.in_dialog("BYE", 2, "sp-1", ok.to.tag))
            assert (await _final_for(client, "BYE")).status == 200
            out, _ = await asyncio.wait_for(output, 20)
        finally:
            client.close()
            media.close()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "event=drain_started active=1 timeout=120" in text
    assert "event=drain_done outcome=calls_ended active=0" in text
    assert "Traceback" not in text, text
    found = await _stored_calls(db_url)
    assert (found["sp-1"].reason, found["sp-2"].reason) == ("caller_hangup", "draining")


async def test_no_reachable_agent_makes_options_and_invites_503_until_a_back_off_ends(
    tmp_path: Path,
) -> None:
    """Every endpoint of every voice agent in its failure back-off: OPTIONS and new
    INVITEs get 503 ``unhealthy`` (the INVITE's record says why in a ``refusal`` event)
    and /readyz says so; when the back-off ends a call may probe the agent again."""
    settings = loopback_settings(tmp_path / "agents-down.db", rtp_ports=20)
    server = SipBridgeServer(settings)
    await server.start()
    client = UdpClient(server.sip_address)
    loop = asyncio.get_running_loop()
    try:
        url = f"ws://127.0.0.1:{free_udp_port()}"  # nobody listens
        await route_to(server, url)
        await server.refresh()  # the periodic refresh reads the agents
        client.send(options(client.port, "ah-opt-1"))
        assert (await _final_for(client, "OPTIONS")).status == 200
        for _ in range(agent_client.FAILURES_BEFORE_COOLDOWN):  # what failed calls report
            server.agent_health.failed(url, loop.time())
        down_at = loop.time()
        client.send(options(client.port, "ah-opt-2"))
        _assert_503(await _final_for(client, "OPTIONS"), "unhealthy", "5")
        client.send(client.invite("z9hG4bK-ah1", "ah-1", 4070))
        _assert_503(await _final_for(client, "INVITE", "ah-1"), "unhealthy", "5")
        status, body = await _readyz(server)
        assert status == 503 and body["agents"] == "unreachable"
        assert await _metric(server, "sipbridge_unhealthy") == 1
        [record] = await records(server)
        assert (record.reason, record.sip_code) == ("unhealthy", 503)
        detail = await service.get_call(server.db, record.id)
        assert [(e.kind, e.data) for e in detail.events] == [
            ("refusal", {"cause": "no_agent_reachable"})
        ]
        # The back-off (1 s) ends: the heartbeat notices, probes are answered 200 again.
        step = 2
        while True:
            step += 1
            client.send(options(client.port, f"ah-opt-{step}"))
            if (await _final_for(client, "OPTIONS")).status == 200:
                break
            assert loop.time() - down_at < 10, "still 503 long after the back-off"
            await asyncio.sleep(0.1)
        assert loop.time() - down_at >= agent_client.FIRST_COOLDOWN_SECONDS - 0.05
        assert (await _readyz(server))[0] == 200
        assert await _metric(server, "sipbridge_unhealthy") == 0
    finally:
        client.close()
        await server.stop()


async def test_an_unreachable_database_makes_options_and_invites_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic refresh finds the store unreachable: OPTIONS and new INVITEs get 503
    ``unhealthy`` (no query per probe); the next refresh that works ends it."""
    settings = loopback_settings(tmp_path / "db-down.db", rtp_ports=20)
    server = SipBridgeServer(settings)
    await server.start()
    client = UdpClient(server.sip_address)
    queries = 0

    async def unreachable(db: Database) -> list[Any]:
        nonlocal queries
        queries += 1
        raise OSError("connection refused")

    try:
        with monkeypatch.context() as patch:
            patch.setattr(service, "list_trunks", unreachable)
            await server.refresh()
            assert not server.db_ok
            for step in range(5):
                client.send(options(client.port, f"db-opt-{step}"))
                _assert_503(await _final_for(client, "OPTIONS"), "unhealthy", "5")
            assert queries == 1  # the probes asked nothing of the store
            client.send(client.invite("z9hG4bK-db1", "db-1", 4072))
            _assert_503(await _final_for(client, "INVITE", "db-1"), "unhealthy", "5")
        await server.refresh()
        assert server.db_ok
        client.send(options(client.port, "db-opt-ok"))
        assert (await _final_for(client, "OPTIONS")).status == 200
        [record] = await records(server)
        assert (record.reason, record.sip_code) == ("unhealthy", 503)
        detail = await service.get_call(server.db, record.id)
        assert [e.data for e in detail.events] == [{"cause": "database_unreachable"}]
    finally:
        client.close()
        await server.stop()
