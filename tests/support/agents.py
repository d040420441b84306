"""Test agents: real WebSocket servers on 127.0.0.1 speaking the native protocol."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve


@dataclass
class AgentCall:
    start: dict[str, Any] | None = None
    texts: list[dict[str, Any]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    @property
    def stop(self) -> dict[str, Any] | None:
        return next((t for t in self.texts if t.get("type") == "stop"), None)


class EchoAgent:
    """Echoes every caller frame back; optionally greets, hangs up or closes.

    ``greeting``: PCM16 bytes sent right after ``start``.
    ``hangup_after_frames``: send ``{"type":"hangup"}`` after that many caller frames.
    ``hangup_after_greeting``: send hangup right after the greeting.
    ``echo``: echo caller audio back.
    """

    def __init__(
        self,
        *,
        echo: bool = True,
        greeting: bytes = b"",
        hangup_after_frames: int | None = None,
        hangup_after_greeting: bool = False,
        extra_messages: list[str | bytes] | None = None,
        close_after_greeting: bool = False,
    ) -> None:
        self.close_after_greeting = close_after_greeting
        self.echo = echo
        self.greeting = greeting
        self.hangup_after_frames = hangup_after_frames
        self.hangup_after_greeting = hangup_after_greeting
        self.extra_messages = extra_messages or []
        self.calls: list[AgentCall] = []
        self.connected = asyncio.Event()
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> EchoAgent:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/agent"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        call = AgentCall()
        self.calls.append(call)
        self.connected.set()
        frames = 0
        try:
            async for message in ws:
                if isinstance(message, str):
                    data = json.loads(message)
                    if data.get("type") == "start":
                        call.start = data
                        for extra in self.extra_messages:
                            await ws.send(extra)
                        if self.greeting:
                            await ws.send(self.greeting)
                        if self.hangup_after_greeting:
                            await ws.send(json.dumps({"type": "hangup"}))
                        if self.close_after_greeting:
                            await ws.close()
                    else:
                        call.texts.append(data)
                    continue
                call.audio.append(message)
                frames += 1
                if self.echo:
                    await ws.send(message)
                if self.hangup_after_frames is not None and frames == self.hangup_after_frames:
                    await ws.send(json.dumps({"type": "hangup"}))
        finally:
            call.close_code = ws.close_code
            call.closed.set()


class SilentTcpServer:
    """Accepts TCP connections and never answers: a WebSocket handshake that hangs."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []

    async def _handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)

    async def __aenter__(self) -> SilentTcpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self._writers:
            writer.close()
        assert self._server is not None
        self._server.close()


class ScriptedAgent:
    """A WebSocket agent whose behaviour per connection is a coroutine written by the test:
    ``script(ws, call)`` after the connection's first (start) message has been read into
    ``call.start``. Every later message the server sends is recorded in ``call``."""

    def __init__(self, script: Any) -> None:
        self.script = script
        self.calls: list[AgentCall] = []
        self.headers: list[dict[str, str]] = []
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> ScriptedAgent:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/agent"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        call = AgentCall()
        self.calls.append(call)
        self.headers.append(dict(ws.request.headers))
        reader = asyncio.ensure_future(self._read(ws, call))
        try:
            await call_started(call)
            await self.script(ws, call)
            await reader
        finally:
            reader.cancel()
            call.close_code = ws.close_code
            call.closed.set()

    async def _read(self, ws: ServerConnection, call: AgentCall) -> None:
        async for message in ws:
            if isinstance(message, str):
                data = json.loads(message)
                if call.start is None and data.get("event") == "connected":
                    call.texts.append(data)
                elif call.start is None:
                    call.start = data
                else:
                    call.texts.append(data)
            else:
                call.audio.append(message)


async def call_started(call: AgentCall, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while call.start is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no start message from sipbridge")
        await asyncio.sleep(0.005)


async def wait_for_text(call: AgentCall, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for text in call.texts:
            if predicate(text):
                return text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no matching message; got {call.texts}")
        await asyncio.sleep(0.005)
