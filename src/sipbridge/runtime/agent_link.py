"""One call's link to its agent: endpoint choice, failover, reconnection, framing.

:class:`AgentLink` owns the call's sans-I/O agent session (native or Twilio protocol) and
its current :class:`~sipbridge.runtime.agent_client.AgentConnection`:

- :meth:`AgentLink.connect` tries the agent's endpoints (healthy ones first, round-robin,
  see :class:`~sipbridge.runtime.agent_client.EndpointHealth`) until one opens within the
  budget, then sends the session's start messages;
- :meth:`send_caller_audio` cuts caller PCM into 20 ms frames and sends each at once;
- :meth:`next_frame` is the RTP clock's source of agent audio (it also sends the mark
  echoes the session produces as audio plays out);
- :meth:`run` reads the agent until its connection ends;
- :meth:`stop` says ``stop`` and closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sipbridge.agent.events import AgentEvent
from sipbridge.agent.factory import make_session
from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits
from sipbridge.agent.session import Session
from sipbridge.runtime.agent_client import (
    AgentConnection,
    AgentUnreachable,
    Closed,
    EndpointHealth,
)
from sipbridge.store.records import AgentRecord

log = logging.getLogger("sipbridge.agent")

# Seconds of caller audio kept for the agent until its start message has gone out.
PRE_START_SECONDS = 5


class AgentLink:
    def __init__(
        self,
        call_id: str,
        agent: AgentRecord,
        health: EndpointHealth,
        on_events: Callable[[list[AgentEvent]], None],
        on_first_audio: Callable[[], None],
        *,
        caller: str | None,
        dialed: str | None,
        sip_call_id: str,
        sip_headers: dict[str, str],
        limits: AgentLimits = DEFAULT_LIMITS,
        direction: str = "inbound",
    ) -> None:
        self.agent = agent
        self._health = health
        self._on_events = on_events
        self._on_first_audio: Callable[[], None] | None = on_first_audio
        self.session: Session = make_session(
            agent.protocol, call_id, sample_rate=agent.sample_rate, limits=limits
        )
        self._caller = caller
        self._dialed = dialed
        self._sip_call_id = sip_call_id
        self._sip_headers = sip_headers
        self._direction = direction
        self.connection: AgentConnection | None = None
        self._frame_bytes = self.session.frame_bytes
        self._inbound = bytearray()
        # Called after every agent message: the media side runs its clock if it is due
        # and may send queued agent audio at once as the start of a talkspurt.
        self.on_agent_audio: Callable[[], None] | None = None
        self._dropped_earlier = 0  # caller frames dropped on connections already lost
        # A start message went out: the agent is in a call, and is told its end (stop).
        self.started = False
        # Caller audio decoded before start went out (an outbound call's callee speaks
        # at the answer, and start follows it): sent right after start, in order, up to
        # PRE_START_SECONDS of it; no agent gets audio before its start.
        self._before_start: list[bytes] = []
        self._before_start_room = self.session.sample_rate * 2 * PRE_START_SECONDS

    @property
    def sample_rate(self) -> int:
        return self.session.sample_rate

    @property
    def is_open(self) -> bool:
        return self.connection is not None and self.connection.is_open

    async def connect(self, loop: asyncio.AbstractEventLoop, budget: float) -> str:
        """Open a WebSocket to one of the agent's endpoints within ``budget`` seconds.

        Returns the URL used; raises :class:`AgentUnreachable` naming every failure.
        """
        deadline = loop.time() + budget
        urls = self._health.order(self.agent.name, list(self.agent.urls), loop.time())
        if not urls:
            raise AgentUnreachable(f"all endpoints of agent {self.agent.name} are unhealthy")
        failures: list[str] = []
        for url in urls:
            remaining = deadline - loop.time()
            if remaining <= 0:
                failures.append(f"{url}: no time left")
                break
            connection = AgentConnection(
                self.session, self._on_events, self._first_audio, on_message=self._received
            )
            try:
                await connection.open(
                    url, remaining, token=self.agent.token, ca_bundle=self.agent.ca_bundle
                )
            except AgentUnreachable as exc:
                self._health.failed(url, loop.time())
                failures.append(str(exc))
                continue
            self._health.succeeded(url)
            self.connection = connection
            return url
        raise AgentUnreachable("; ".join(failures))

    async def start(self, *, resumed: bool = False) -> None:
        """Send the session's start message(s) on the open connection."""
        assert self.connection is not None
        messages = self.session.start_messages(
            from_=self._caller,
            to=self._dialed,
            agent=self.agent.name,
            sip_call_id=self._sip_call_id,
            sip_headers=self._sip_headers,
            resumed=resumed,
            direction=self._direction,
        )
        for text in messages:
            await self.connection.send_text(text)
        self.started = True
        held, self._before_start = self._before_start, []
        for pcm in held:
            self.send_caller_audio(pcm)

    def _first_audio(self) -> None:
        if self._on_first_audio is not None:
            self._on_first_audio()
            self._on_first_audio = None

    def send_caller_audio(self, pcm: bytes) -> None:  # hot path: one call per decoded packet
        """Caller audio to the agent in 20 ms frames, each sent as soon as it is complete.

        Packets of 20 ms go straight through; other sizes (10, 30, 40 ms packets,
        concealment) are cut into 20 ms frames, holding back at most part of one frame.
        """
        if not self.started:
            if len(pcm) <= self._before_start_room:
                self._before_start.append(pcm)
                self._before_start_room -= len(pcm)
            return
        connection = self.connection
        if connection is None:
            return  # reconnecting: the caller's words in between cannot be delivered
        session = self.session
        pending = self._inbound
        size = self._frame_bytes
        if not pending and len(pcm) == size:
            connection.send_frame(session.caller_audio(pcm))
            return
        pending += pcm
        while len(pending) >= size:
            connection.send_frame(session.caller_audio(bytes(pending[:size])))
            del pending[:size]

    def next_frame(self) -> bytes | None:  # hot path: once per 20 ms
        """The agent's next 20 ms of audio, None when it has none (silence goes out)."""
        session = self.session
        frame = session.take_frame()
        if session.has_outbox:
            connection = self.connection
            if connection is not None:
                connection.flush_session()  # marks whose audio just went out
        return frame

    def frame_ready(self) -> bool:
        return self.session.frame_ready

    def _received(self) -> None:
        if self.on_agent_audio is not None:
            self.on_agent_audio()

    def send_text(self, text: str) -> None:
        if self.connection is not None:
            self.connection.send_frame(text)

    def flush(self) -> None:
        if self.connection is not None:
            self.connection.flush_session()

    async def run(self) -> Closed:
        assert self.connection is not None
        return await self.connection.run()

    @property
    def dropped_frames(self) -> int:
        """Caller audio frames not sent because the agent was not reading."""
        current = self.connection.dropped_frames if self.connection is not None else 0
        return self._dropped_earlier + current

    def lost(self) -> None:
        """The connection dropped: forget it (a reconnect opens a new one)."""
        if self.connection is not None:
            self._dropped_earlier += self.connection.dropped_frames
        self.connection = None
        self._inbound.clear()

    async def stop(self, reason: str) -> None:
        connection = self.connection
        if connection is None:
            return
        if connection.is_open and self.started:
            # A connection that never got its start (the call ended while it rang) is
            # closed without a stop: there was no call for the agent to end.
            await connection.send_text(self.session.stop_message(reason))
        await connection.close()
