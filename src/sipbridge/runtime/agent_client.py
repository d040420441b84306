"""The WebSocket connection to an agent: sipbridge is the client.

Wraps a ``websockets`` client connection around the sans-I/O
:class:`~sipbridge.agent.protocol.AgentSession`: frames from the agent are fed
to the session, whose events go to the call; caller audio goes out as binary
frames without any buffering of ours (``websockets`` writes straight to the
transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from sipbridge.agent.protocol import AgentEvent, AgentSession

log = logging.getLogger("sipbridge.agent")


class AgentUnreachable(Exception):
    """The agent's WebSocket could not be opened in time."""


class AgentConnection:
    """One call's connection to its agent.

    Use :meth:`open` (raises :class:`AgentUnreachable`), then :meth:`send_text`
    / :meth:`send_audio`; :meth:`run` reads until the agent closes and returns
    the close reason; :meth:`close` ends it.
    """

    def __init__(
        self,
        url: str,
        session: AgentSession,
        on_events: Callable[[list[AgentEvent]], None],
        on_first_audio: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.session = session
        self._on_events = on_events
        self._on_first_audio = on_first_audio
        self._ws: ClientConnection | None = None
        self._closed = False

    async def open(self, timeout: float) -> None:
        try:
            self._ws = await asyncio.wait_for(
                connect(
                    self.url,
                    compression=None,  # audio does not compress; deflate costs CPU and latency
                    open_timeout=None,
                    max_size=2**22,
                    ping_interval=20,
                    ping_timeout=20,
                    user_agent_header=None,
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise AgentUnreachable(f"no WebSocket to {self.url} within {timeout:g} s") from exc
        except (OSError, WebSocketException, ValueError) as exc:
            raise AgentUnreachable(f"cannot connect to {self.url}: {exc}") from exc

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._closed

    async def send_text(self, text: str) -> None:
        if self._ws is None or self._closed:
            return
        try:
            await self._ws.send(text)
        except ConnectionClosed:
            self._closed = True

    def send_audio(self, pcm: bytes) -> None:
        """Send one caller frame (hot path: called from the RTP callback, never awaits).

        ``websockets`` writes the frame to the transport at once; when the
        agent reads too slowly the transport buffers, which its own flow
        control bounds (``write_limit``).
        """
        ws = self._ws
        if ws is None or self._closed:
            return
        ws.protocol.send_binary(pcm)
        for data in ws.protocol.data_to_send():
            ws.transport.write(data)

    async def run(self) -> str:
        """Read frames until the agent closes; return a short description of why."""
        assert self._ws is not None
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    events = self.session.receive_text(message)
                else:
                    events = self.session.receive_binary(message)
                    if self._on_first_audio is not None:
                        self._on_first_audio()
                        self._on_first_audio = None
                if events:
                    self._on_events(events)
        except ConnectionClosed as exc:
            self._closed = True
            return f"agent connection lost ({exc})"
        self._closed = True
        return "agent closed the connection"

    async def close(self) -> None:
        if self._ws is None:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError, WebSocketException, OSError):
            await asyncio.wait_for(self._ws.close(), 2.0)
