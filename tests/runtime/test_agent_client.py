"""The agent WebSocket client against real websockets servers (ws and wss with a local CA)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from sipbridge.agent.events import AgentEvent, HangupRequested
from sipbridge.agent.protocol import AgentSession
from sipbridge.runtime.agent_client import (
    COOLDOWN_SECONDS,
    FAILURES_BEFORE_COOLDOWN,
    FIRST_COOLDOWN_SECONDS,
    FRAMES_PER_TURN,
    AgentConnection,
    AgentUnreachable,
    EndpointHealth,
)
from tests.support.agents import SilentTcpServer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_port_raises_quickly() -> None:
    conn = AgentConnection(AgentSession("c1"), lambda _: None)
    with pytest.raises(AgentUnreachable, match="cannot connect"):
        await conn.open(f"ws://127.0.0.1:{closed_port()}/", 2.0)


async def test_hanging_handshake_times_out() -> None:
    async with SilentTcpServer() as silent:
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        with pytest.raises(AgentUnreachable, match=r"within 0\.3 s"):
            await conn.open(silent.url, 0.3)


async def test_audio_text_events_token_and_clean_close() -> None:
    seen: dict[str, object] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["extensions"] = ws.request.headers.get("Sec-WebSocket-Extensions")
        seen["user_agent"] = ws.request.headers.get("User-Agent")
        seen["authorization"] = ws.request.headers.get("Authorization")
        seen["start"] = await ws.recv()
        seen["audio"] = [await ws.recv(), await ws.recv()]
        await ws.send(json.dumps({"type": "mark", "name": "m1"}))
        seen["mark"] = json.loads(await ws.recv())  # nothing queued before it: echoed at once
        await ws.send(b"\x01\x00" * 160)
        await ws.send(json.dumps({"type": "hangup"}))
        await ws.close()

    events: list[AgentEvent] = []
    firsts: list[bool] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        session = AgentSession("c1")
        conn = AgentConnection(session, events.extend, lambda: firsts.append(True))
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0, token="s3cret")
        await conn.send_text('{"type":"start"}')
        conn.send_frame(b"\x00" * 320)
        conn.send_frame(b"\x02" * 320)
        closed = await asyncio.wait_for(conn.run(), 5)
        await conn.close()
    assert closed.clean
    assert seen["extensions"] is None  # permessage-deflate off for audio
    assert seen["user_agent"] is None  # no software name on the wire
    assert seen["authorization"] == "Bearer s3cret"
    assert seen["start"] == '{"type":"start"}'
    assert seen["audio"] == [b"\x00" * 320, b"\x02" * 320]
    assert seen["mark"] == {"type": "mark", "name": "m1", "status": "played"}
    assert HangupRequested(after_playout=True) in events
    assert firsts == [True]
    assert session.next_frame() == b"\x01\x00" * 160
    assert not conn.is_open
    conn.send_frame(b"\x00" * 320)  # after close: ignored, no error


async def test_dropped_connection_is_not_clean() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        ws.transport.abort()  # no close frame: the connection is lost

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        await conn.send_text("{}")
        closed = await asyncio.wait_for(conn.run(), 5)
    assert not closed.clean and "lost" in closed.detail


def make_ca_and_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A local CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=sipbridge test CA",
        "-days",
        "1",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


async def test_wss_verifies_against_the_agents_ca_bundle(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ssl.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "hangup"}))
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"wss://127.0.0.1:{port}/"
        untrusted = AgentConnection(AgentSession("c1"), lambda _: None)
        with pytest.raises(AgentUnreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await untrusted.open(url, 3.0)  # the system store does not know our CA
        events: list[AgentEvent] = []
        trusted = AgentConnection(AgentSession("c2"), events.extend)
        await trusted.open(url, 3.0, ca_bundle=str(ca))
        closed = await asyncio.wait_for(trusted.run(), 5)
    assert closed.clean and events == [HangupRequested(after_playout=True)]


def test_endpoint_health_round_robin_and_cooldown() -> None:
    health = EndpointHealth()
    urls = ["ws://a", "ws://b", "ws://c"]
    assert health.order("bot", urls, 0.0) == ["ws://a", "ws://b", "ws://c"]
    assert health.order("bot", urls, 0.0) == ["ws://b", "ws://c", "ws://a"]
    for _ in range(FAILURES_BEFORE_COOLDOWN):
        health.failed("ws://c", 10.0)
    assert health.order("bot", urls, 10.0) == ["ws://a", "ws://b"]  # c is cooling down
    assert "ws://c" in health.order("bot", urls, 10.0 + FIRST_COOLDOWN_SECONDS)  # probed
    health.failed("ws://a", 50.0)
    health.succeeded("ws://a")  # a success resets the count
    for _ in range(FAILURES_BEFORE_COOLDOWN - 1):
        health.failed("ws://a", 51.0)
    assert "ws://a" in health.order("bot", urls, 51.0)
    assert health.order("bot", [], 0.0) == []


def test_a_downed_endpoint_is_probed_after_1_s_doubling_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = EndpointHealth()
    urls = ["ws://a"]
    now = 0.0
    with caplog.at_level(logging.INFO, logger="sipbridge.agent"):
        for _ in range(FAILURES_BEFORE_COOLDOWN):
            health.failed("ws://a", now)
        waits = []
        for _ in range(8):  # every probe fails: 1, 2, 4, 8, 16, 30, 30, 30
            start = now
            while not health.order("bot", urls, now):
                now += 0.25
            waits.append(now - start)
            health.failed("ws://a", now)
            # Failures of calls already under way while down do not stretch the wait.
            health.failed("ws://a", now + 0.1)
        assert waits == [1, 2, 4, 8, 16, COOLDOWN_SECONDS, COOLDOWN_SECONDS, COOLDOWN_SECONDS]
        while not health.order("bot", urls, now):
            now += 0.25
        health.succeeded("ws://a")  # back up: the next outage starts at 1 s again
        health.succeeded("ws://a")
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "agent_endpoint_down" in m] == [
        "event=agent_endpoint_down url=ws://a retry_after_s=1"
    ]
    assert [m for m in messages if "agent_endpoint_up" in m] == [
        "event=agent_endpoint_up url=ws://a"
    ]
    for _ in range(FAILURES_BEFORE_COOLDOWN):
        health.failed("ws://a", now)
    assert health.order("bot", urls, now + FIRST_COOLDOWN_SECONDS) == urls


def test_down_until_says_when_no_endpoint_can_be_reached_and_changes_are_reported() -> None:
    """The server's health (503 to OPTIONS and INVITEs while no agent is reachable) reads
    ``down_until``; it re-reads it when told an endpoint went down or came back."""
    changes: list[None] = []
    health = EndpointHealth(on_change=lambda: changes.append(None))
    urls = ["ws://a", "ws://b"]
    assert health.down_until([], 0.0) == 0.0  # no endpoint at all: nothing is down
    assert health.down_until(urls, 0.0) == 0.0  # never tried: up
    for _ in range(FAILURES_BEFORE_COOLDOWN):
        health.failed("ws://a", 10.0)
    assert len(changes) == 1
    assert health.down_until(urls, 10.0) == 0.0  # b can still be tried
    assert health.down_until(["ws://a"], 10.0) == 10.0 + FIRST_COOLDOWN_SECONDS
    for _ in range(FAILURES_BEFORE_COOLDOWN):
        health.failed("ws://b", 10.5)
    assert health.down_until(urls, 10.5) == 10.0 + FIRST_COOLDOWN_SECONDS  # a's probe first
    assert health.down_until(urls, 11.0) == 0.0  # a may be probed now
    health.succeeded("ws://b")
    health.succeeded("ws://b")  # already up: no change to report
    assert len(changes) == 3
    assert health.down_until(urls, 10.6) == 0.0


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_masked_frames_parse_as_rfc6455_client_frames(length: int) -> None:
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from sipbridge.runtime.agent_client import _MASK_KEYS, masked_frame

    payload = bytes(i % 251 for i in range(length))
    key = _MASK_KEYS.take()
    data = masked_frame(0x82, payload, key)
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=True)  # as a server reads a client
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.BINARY and frame.fin and frame.data == payload
    assert data[1] & 0x80  # masked (RFC 6455 §5.3)


def test_masking_keys_do_not_repeat_across_a_refill() -> None:
    from sipbridge.runtime.agent_client import _MaskKeys

    keys = _MaskKeys()
    taken = [keys.take() for _ in range(3000)]  # three blocks of 1,024 keys
    assert all(len(key) == 4 for key in taken)
    assert len(set(taken)) > 2990  # 32-bit random keys: collisions are rare


async def test_an_agent_that_never_reads_gets_its_audio_dropped_then_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent accepts the connection and then never reads: the server must not buffer
    without limit. Past the cap caller audio is dropped; when it stays stuck the
    connection is aborted and reported as lost."""
    import sipbridge.runtime.agent_client as agent_client

    monkeypatch.setattr(agent_client, "STALLED_SECONDS", 0.5)
    stop = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # accept, then never read again
        await stop.wait()

    # close_timeout: the agent never reads, so its side of the close handshake would
    # wait websockets' default 10 s when the test ends.
    async with serve(handler, "127.0.0.1", 0, max_size=None, close_timeout=0.1) as server:
        port = server.sockets[0].getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        runner = asyncio.ensure_future(conn.run())
        frame = b"\x01\x02" * 160
        transport = conn._transport
        assert transport is not None
        peak = 0
        for _ in range(400):  # 8 s of caller audio, sent 50x faster than real time
            for _ in range(50):
                conn.send_frame(frame)
            peak = max(peak, transport.get_write_buffer_size())
            await asyncio.sleep(0.004)
            if runner.done():
                break
        closed = await asyncio.wait_for(runner, 5)
        stop.set()
    assert conn.dropped_frames > 0
    assert peak <= agent_client.WRITE_BUFFER_CAP + 2 * len(frame) + 14
    assert not closed.clean


async def test_fragmented_messages_reach_the_session_whole() -> None:
    events: list[AgentEvent] = []
    audio = bytes(range(256)) * 5  # 1,280 bytes: four 20 ms frames at 8 kHz

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send([audio[:100], audio[100:700], audio[700:]])  # one binary message
        await ws.send(['{"type": "ha', 'ngup"}'])  # one text message in two fragments
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        session = AgentSession("c1")
        conn = AgentConnection(session, events.extend)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        await conn.send_text("{}")
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.01)
        assert session.pending_audio_ms == 80
        assert [type(e) for e in events] == [HangupRequested]
        await conn.close()
    closed = await asyncio.wait_for(conn.run(), 5)
    assert closed.clean


async def test_invalid_utf8_text_fails_the_connection() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        # a text frame whose payload is not UTF-8, written raw (websockets would refuse)
        ws.transport.write(b"\x81\x02\xff\xfe")
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        await conn.send_text("{}")
        closed = await asyncio.wait_for(conn.run(), 5)
    assert not closed.clean


async def test_an_agent_that_stops_answering_pings_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    import sipbridge.runtime.agent_client as agent_client

    monkeypatch.setattr(agent_client, "PING_INTERVAL", 0.2)
    monkeypatch.setattr(agent_client, "PING_TIMEOUT", 0.3)
    stop = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # the agent hangs: no pong ever comes back
        await stop.wait()

    async with serve(handler, "127.0.0.1", 0, close_timeout=0.1) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        started = asyncio.get_running_loop().time()
        closed = await asyncio.wait_for(conn.run(), 5)
        elapsed = asyncio.get_running_loop().time() - started
        stop.set()
    assert not closed.clean
    assert 0.4 <= elapsed < 2.0


async def test_pings_answered_keep_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    import sipbridge.runtime.agent_client as agent_client

    monkeypatch.setattr(agent_client, "PING_INTERVAL", 0.1)
    monkeypatch.setattr(agent_client, "PING_TIMEOUT", 0.3)

    async def handler(ws: ServerConnection) -> None:
        await asyncio.sleep(1.0)  # websockets answers our pings by itself meanwhile
        await ws.close()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), lambda _: None)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        closed = await asyncio.wait_for(conn.run(), 5)
    assert closed.clean


async def test_a_burst_of_messages_is_handled_a_few_at_a_time() -> None:
    """Thousands of small messages in one read must not hold the event loop (other calls'
    audio) until all are handled: at most FRAMES_PER_TURN per turn, in order, and what
    came before the close is still handled."""
    count = 1000
    handled: list[AgentEvent] = []
    per_turn: list[int] = []

    def frame(text: str) -> bytes:
        payload = text.encode()
        assert len(payload) < 126
        return bytes((0x81, len(payload))) + payload  # server frames are not masked

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        burst = b"".join(
            frame(json.dumps({"type": "transcript", "role": "agent", "text": str(i)}))
            for i in range(count)
        )
        ws.transport.write(burst + frame('{"type":"hangup"}'))
        await ws.close()

    async def ticker(done: asyncio.Event) -> None:
        seen = 0
        while not done.is_set():
            await asyncio.sleep(0)
            per_turn.append(len(handled) - seen)
            seen = len(handled)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        conn = AgentConnection(AgentSession("c1"), handled.extend)
        await conn.open(f"ws://127.0.0.1:{port}/", 2.0)
        done = asyncio.Event()
        ticking = asyncio.ensure_future(ticker(done))
        await conn.send_text("{}")
        closed = await asyncio.wait_for(conn.run(), 5)
        done.set()
        await ticking
    assert closed.clean
    assert len(handled) == count + 1 and isinstance(handled[-1], HangupRequested)
    assert [e.text for e in handled[:-1]] == [str(i) for i in range(count)]  # type: ignore[union-attr]
    assert max(per_turn) <= 2 * FRAMES_PER_TURN, max(per_turn)
