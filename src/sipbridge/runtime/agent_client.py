"""WebSocket connections to agents: sipbridge is the client.

:class:`AgentConnection` wraps one ``websockets`` client connection around the call's
sans-I/O agent session (native or Twilio protocol): frames from the agent are fed to the
session, whose events go to the call, and whatever the session wants to say back (mark
echoes, transfer results) is sent at once. Caller audio is written straight to the
transport, without a queue of ours: :meth:`AgentConnection.send_frame` builds the masked
frame itself (RFC 6455 §5.2, §5.3) with a masking key from a pool filled by one
``os.urandom`` call per 1,024 frames (still the strong source §5.3 asks for, without a
getrandom system call per frame) and the C ``apply_mask`` of ``websockets``.

Back-pressure: an agent that stops reading makes the kernel's socket buffer and then the
transport's buffer grow. Above :data:`WRITE_BUFFER_CAP` bytes waiting, caller audio for
that agent is dropped (counted in :attr:`AgentConnection.dropped_frames`); when the buffer
has stayed above the cap for :data:`STALLED_SECONDS`, the connection is aborted and the
call handles it like any lost agent connection (one reconnection, else ``agent_lost``).

:class:`EndpointHealth` is shared by all calls of a server: it orders an agent's URLs
round-robin over the healthy ones and takes an endpoint that keeps failing out of
rotation for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    WebSocketException,
)
from websockets.protocol import State

from sipbridge.agent.events import AgentEvent
from sipbridge.agent.session import Session

try:  # the C speedup websockets ships; its pure-Python twin otherwise
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - wheels ship the speedup
    from websockets.utils import apply_mask

log = logging.getLogger("sipbridge.agent")

# An endpoint that failed this many times in a row is skipped for COOLDOWN seconds.
FAILURES_BEFORE_COOLDOWN = 3
COOLDOWN_SECONDS = 30.0
MAX_MESSAGE_BYTES = 2**22
# Bytes waiting to be written to one agent above which its caller audio is dropped (about
# 16 s of 8 kHz PCM16 in native frames), and how long that may last before the connection
# is given up.
WRITE_BUFFER_CAP = 256 * 1024
STALLED_SECONDS = 5.0

_OPCODE_TEXT = 0x81  # FIN + text (RFC 6455 §5.2)
_OPCODE_BINARY = 0x82  # FIN + binary
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class _MaskKeys:
    """Client masking keys (RFC 6455 §5.3: unpredictable, from a strong source) handed
    out 4 bytes at a time from one ``os.urandom`` block."""

    _BLOCK = 4096

    def __init__(self) -> None:
        self._block = os.urandom(self._BLOCK)
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos >= self._BLOCK:
            self._block = os.urandom(self._BLOCK)
            pos = 0
        self._pos = pos + 4
        return self._block[pos : pos + 4]


_MASK_KEYS = _MaskKeys()


def masked_frame(first_byte: int, payload: bytes, key: bytes) -> bytes:
    """One client-to-server frame (RFC 6455 §5.2): FIN and opcode in ``first_byte``, the
    mask bit, the length, the masking key and the masked payload."""
    length = len(payload)
    if length < 126:
        header = bytes((first_byte, 0x80 | length))
    elif length < 65536:
        header = _HEADER_16.pack(first_byte, 0xFE, length)
    else:
        header = _HEADER_64.pack(first_byte, 0xFF, length)
    return header + key + apply_mask(payload, key)


class AgentUnreachable(Exception):
    """No WebSocket to the agent could be opened in time."""


@dataclass
class _EndpointState:
    failures: int = 0
    skip_until: float = 0.0


@dataclass
class EndpointHealth:
    """Round-robin over an agent's healthy endpoints, with a cooldown for failing ones."""

    _states: dict[str, _EndpointState] = field(default_factory=dict)
    _next: dict[str, int] = field(default_factory=dict)

    def order(self, agent: str, urls: list[str], now: float) -> list[str]:
        """The URLs to try for a new call, best first; cooled-down endpoints are left out."""
        if not urls:
            return []
        start = self._next.get(agent, 0) % len(urls)
        self._next[agent] = start + 1
        rotated = urls[start:] + urls[:start]
        return [url for url in rotated if self._state(url).skip_until <= now]

    def succeeded(self, url: str) -> None:
        state = self._state(url)
        state.failures = 0
        state.skip_until = 0.0

    def failed(self, url: str, now: float) -> None:
        state = self._state(url)
        state.failures += 1
        if state.failures >= FAILURES_BEFORE_COOLDOWN:
            state.skip_until = now + COOLDOWN_SECONDS
            log.warning("event=agent_endpoint_down url=%s cooldown_s=%g", url, COOLDOWN_SECONDS)

    def _state(self, url: str) -> _EndpointState:
        state = self._states.get(url)
        if state is None:
            state = self._states[url] = _EndpointState()
        return state


@dataclass(frozen=True)
class Closed:
    """How the agent's connection ended: ``clean`` when the agent closed it normally."""

    clean: bool
    detail: str


def ssl_context(url: str, ca_bundle: str | None) -> ssl.SSLContext | None:
    """Certificate-verifying TLS for wss:// (with the agent's own CA bundle if given)."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class AgentConnection:
    """One call's connection to its agent.

    Use :meth:`open` (raises :class:`AgentUnreachable`), then :meth:`send_frame`;
    :meth:`run` reads until the connection ends and says how; :meth:`close` ends it.
    """

    def __init__(
        self,
        session: Session,
        on_events: Callable[[list[AgentEvent]], None],
        on_first_audio: Callable[[], None] | None = None,
        *,
        on_message: Callable[[], None] | None = None,
    ) -> None:
        self.session = session
        self._on_message = on_message
        self.url: str | None = None
        self._on_events = on_events
        self._on_first_audio = on_first_audio
        self._ws: ClientConnection | None = None
        self._closed = False
        self.dropped_frames = 0  # caller audio not sent: the agent was not reading
        self._over_cap_since: float | None = None

    async def open(
        self,
        url: str,
        timeout: float,
        *,
        token: str | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        headers: dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {}
        context = ssl_context(url, ca_bundle)
        if context is not None:
            kwargs["ssl"] = context
        try:
            self._ws = await asyncio.wait_for(
                connect(
                    url,
                    additional_headers=headers,
                    compression=None,  # audio does not compress; deflate costs CPU and latency
                    open_timeout=None,
                    max_size=MAX_MESSAGE_BYTES,
                    ping_interval=20,
                    ping_timeout=20,
                    user_agent_header=None,  # no software name on the wire
                    **kwargs,
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise AgentUnreachable(f"no WebSocket to {url} within {timeout:g} s") from exc
        except (OSError, WebSocketException, ValueError, ssl.SSLError) as exc:
            raise AgentUnreachable(f"cannot connect to {url}: {exc}") from exc
        self.url = url
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._closed

    def send_frame(self, frame: str | bytes) -> None:
        """Send one frame now (hot path for caller audio: never awaits); see the module
        docstring for the framing and for what happens when the agent does not read."""
        ws = self._ws
        if ws is None or self._closed:
            return
        if ws.protocol.state is not State.OPEN:
            self._closed = ws.protocol.state is not State.CONNECTING
            return
        transport = ws.transport
        if transport.get_write_buffer_size() > WRITE_BUFFER_CAP:
            self._agent_not_reading(transport)
            return
        self._over_cap_since = None
        if isinstance(frame, bytes):
            transport.write(masked_frame(_OPCODE_BINARY, frame, _MASK_KEYS.take()))
        else:
            transport.write(masked_frame(_OPCODE_TEXT, frame.encode(), _MASK_KEYS.take()))

    def _agent_not_reading(self, transport: asyncio.WriteTransport) -> None:
        self.dropped_frames += 1
        now = time.monotonic()
        if self._over_cap_since is None:
            self._over_cap_since = now
            log.warning(
                "event=agent_not_reading url=%s buffered=%d note=dropping caller audio",
                self.url,
                transport.get_write_buffer_size(),
            )
        elif now - self._over_cap_since >= STALLED_SECONDS:
            log.warning("event=agent_stalled url=%s stalled_s=%g", self.url, STALLED_SECONDS)
            self._closed = True
            transport.abort()  # run() ends with the connection lost

    async def send_text(self, text: str) -> None:
        """Send a control message, waiting for the transport to accept it."""
        if self._ws is None or self._closed:
            return
        try:
            await self._ws.send(text)
        except ConnectionClosed:
            self._closed = True

    def flush_session(self) -> None:
        """Send whatever the session has to say (mark echoes, transfer results...)."""
        for text in self.session.data_to_send():
            self.send_frame(text)

    async def run(self) -> Closed:
        """Read frames until the connection ends."""
        assert self._ws is not None
        session = self.session
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    events = session.receive_text(message)
                else:
                    events = session.receive_binary(message)
                    if self._on_first_audio is not None:
                        self._on_first_audio()
                        self._on_first_audio = None
                if events:
                    self._on_events(events)
                self.flush_session()
                if self._on_message is not None:
                    self._on_message()
        except ConnectionClosedOK as exc:
            self._closed = True
            return Closed(True, f"agent closed the connection ({exc})")
        except ConnectionClosed as exc:
            self._closed = True
            return Closed(False, f"agent connection lost ({exc})")
        self._closed = True
        return Closed(True, "agent closed the connection")

    async def close(self) -> None:
        if self._ws is None:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError, WebSocketException, OSError):
            await asyncio.wait_for(self._ws.close(), 2.0)
