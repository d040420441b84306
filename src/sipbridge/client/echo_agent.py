"""The built-in echo agent of ``sipbridge demo``: a native-protocol agent
(docs/agent-protocol.md) that sends every caller frame straight back, so a test call hears
itself and can measure the round trip through the server and the agent.

:class:`EchoAgent` is a WebSocket server on 127.0.0.1 (an ephemeral port unless one is
given); ``on_event(kind, detail)`` is told about each connection (``connected``), ``start``,
each key press (``dtmf``) and ``stop``, which ``sipbridge demo`` prints as steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["EchoAgent", "EchoCall"]

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass
class EchoCall:
    """What the agent saw of one call."""

    start: dict[str, Any] | None = None
    frames: int = 0
    digits: str = ""
    stop: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


class EchoAgent:
    """``async with EchoAgent() as agent:`` serves on :attr:`url` until the block ends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, on_event: OnEvent | None = None):
        self.host = host
        self.port = port
        self.on_event = on_event
        self.calls: list[EchoCall] = []
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> EchoAgent:
        self._server = await serve(self._handle, self.host, self.port, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"ws://{host}:{port}/echo"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _tell(self, kind: str, detail: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(kind, detail)

    async def _handle(self, ws: ServerConnection) -> None:
        call = EchoCall()
        self.calls.append(call)
        self._tell("connected", {})
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    call.frames += 1
                    await ws.send(message)  # the echo: PCM16 back at the same rate
                    continue
                try:
                    event = json.loads(message)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                kind = event.get("type")
                call.events.append(event)
                if kind == "start":
                    call.start = event
                    self._tell("start", event)
                elif kind == "dtmf":
                    call.digits += str(event.get("digit", ""))
                    self._tell("dtmf", event)
                elif kind == "stop":
                    call.stop = event
                    self._tell("stop", event)
        except ConnectionClosed:
            pass
