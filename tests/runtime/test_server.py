"""The server process: the CLI's serve on real sockets, OPTIONS, bad input, shutdown."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Response, parse_message
from sipbridge.store import service
from tests.runtime.test_call import UdpClient, answer_bye, records, route_to
from tests.support.agents import EchoAgent
from tests.support.settings import loopback_settings
from tests.support.sipp import free_udp_port


def options(port: int, call_id: str = "opt-1") -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_serve_subprocess_answers_options_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_udp_port()
    low = random.randrange(40000, 59000, 2)
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
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "listening" in out and "stopped" in out
    assert (tmp_path / "serve.db").exists()  # embedded SQLite created and migrated


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
                bye = await answer_bye(first, timeout=6)  # the call hits its maximum length
                assert 1.9 <= loop.time() - answered <= 4.5
                assert bye.method == "BYE"
            finally:
                first.close()
                second.close()
        found = await records(server, 2)
    finally:
        await server.stop()
    by_id = {r.sip_call_id: r for r in found}
    assert (by_id["limit-2"].reason, by_id["limit-2"].sip_code) == ("server_busy", 503)
    assert (by_id["limit-1"].reason, by_id["limit-1"].hangup_by) == ("max_duration", "server")
