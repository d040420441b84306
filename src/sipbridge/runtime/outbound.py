"""Outbound calls: ``POST /api/calls`` and ``sipbridge dial`` place a call through a trunk
and bridge the callee to an agent once answered.

:func:`place_call` checks the request (numbers, trunk, agent, codecs, the instance's
refusals) and starts an :class:`OutboundCall`; its id is returned at once and its outcome
goes to its record. The call:

1. opens an RTP port and offers the trunk's codecs (``--codecs`` narrowed to the trunk's
   ``codecs``) in an INVITE to the trunk's ``host`` (sip/outbound.py: digest on 401/407,
   CANCEL at the ring timeout);
2. ends as ``busy`` (486/600), ``no_answer`` (ring timeout, 408/480/487), ``rejected``
   (another final status) or ``failed`` (no response: ``trunk_timeout``; a TCP/TLS
   connection that would not open: ``trunk_unreachable``, at once; refused
   credentials: ``auth_failed``, ``server_shutdown``...) without an answer;
3. on the 2xx (ACKed by the UA core): applies the callee's SDP answer (the 2xx's, else
   a 183's early one), starts the media, opens the agent's WebSocket and sends ``start``
   with ``"direction": "outbound"``; from there on it is bridged exactly like an inbound
   call (runtime/call.py), the callee in the caller's place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipbridge.numbers import InvalidField, normalize_e164
from sipbridge.runtime.agent_client import AgentUnreachable
from sipbridge.runtime.agent_link import AgentLink
from sipbridge.runtime.call import Call, EndCause
from sipbridge.runtime.media import PortsExhausted, RtpEndpoint, open_rtp_endpoint
from sipbridge.sdp.crypto import CryptoAttribute
from sipbridge.sdp.negotiate import (
    Negotiated,
    NoCommonCodec,
    SrtpMismatch,
    build_offer,
)
from sipbridge.sdp.session import SdpError, parse_sdp
from sipbridge.sip.calls import InboundCall, OutboundAnswered, OutboundEnded, OutboundProgress
from sipbridge.sip.framing import Transport
from sipbridge.sip.outbound import DialRequest, OutboundInvite, extra_headers
from sipbridge.sip.registration import RegistrarTarget, parse_registrar
from sipbridge.sip.ua import ALLOW, SUPPORTED
from sipbridge.store import service
from sipbridge.store.records import AgentRecord, CallEvent, CallRecord, CallStatus, utcnow
from sipbridge.store.service import NotFound

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = [
    "DEFAULT_RING_TIMEOUT",
    "MAX_RING_TIMEOUT",
    "DialParams",
    "DialRefused",
    "OutboundCall",
    "place_call",
]

log = logging.getLogger("sipbridge.call")

DEFAULT_RING_TIMEOUT = 30.0  # seconds of ringing before CANCEL
MAX_RING_TIMEOUT = 300.0
# After early media, packets handled up to this long before the 200 are taken as sent
# with it: the 200 may be read after the first RTP packets that followed it (a loop
# pass; over TLS two packets, 20-40 ms, came first in a loopback test).
ANSWER_SLACK = 0.1
# The outcome statuses of sip/outbound.py's OutboundOutcome in the record.
_STATUSES = {
    "busy": CallStatus.BUSY,
    "no_answer": CallStatus.NO_ANSWER,
    "rejected": CallStatus.REJECTED,
    "failed": CallStatus.FAILED,
}


@dataclass(frozen=True)
class DialParams:
    """A call to place: ``to`` (the callee) and ``from_`` (our caller ID) as numbers
    (E.164, or national in ``--default-region``), the ``agent`` to bridge, the ``trunk``
    to dial through, extra ``headers`` for the INVITE, the ring timeout in seconds."""

    to: str
    from_: str
    agent: str
    trunk: str
    headers: dict[str, str] = field(default_factory=dict)
    ring_timeout: float = DEFAULT_RING_TIMEOUT


class DialRefused(Exception):
    """A call that cannot be placed: ``status`` is the HTTP answer (404 unknown trunk or
    agent, 409 agent not voice-enabled, 422 bad input or a trunk that cannot dial, 503
    the instance refuses new calls, with ``retry_after``), ``reason`` a word for it."""

    def __init__(self, status: int, reason: str, detail: str, retry_after: int | None = None):
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


def _number(text: str, field_name: str, region: str | None) -> str:
    try:
        return normalize_e164(text, region)
    except InvalidField as exc:
        raise DialRefused(422, "invalid_number", f"{field_name}: {exc.detail}") from None


async def place_call(server: SipBridgeServer, params: DialParams) -> OutboundCall:
    """Check ``params`` and start the call; DialRefused saying why it cannot be placed."""
    region = server.settings.default_region
    to = _number(params.to, "to", region)
    from_ = _number(params.from_, "from", region)
    if not 1 <= params.ring_timeout <= MAX_RING_TIMEOUT:
        raise DialRefused(
            422, "bad_ring_timeout", f"ring_timeout must be 1 to {MAX_RING_TIMEOUT:.0f} s"
        )
    try:
        headers = extra_headers(params.headers.items())
    except ValueError as exc:
        raise DialRefused(422, "bad_header", str(exc)) from None
    await server.reload_trunks()  # a trunk added a moment ago can be dialled through
    trunk = server.trunks.get(params.trunk)
    if trunk is None:
        raise DialRefused(404, "unknown_trunk", f"no trunk named {params.trunk!r}")
    if not trunk.host:
        raise DialRefused(422, "trunk_without_host", f"trunk {trunk.name} has no host to call")
    try:
        target = parse_registrar(trunk.host)
    except ValueError as exc:
        raise DialRefused(422, "bad_trunk_host", str(exc)) from None
    if target.transport is Transport.TCP and not server.settings.tcp:
        raise DialRefused(422, "tcp_disabled", f"trunk {trunk.name} needs SIP over TCP")
    if target.transport is Transport.TLS and server.ua.tls_port is None:
        raise DialRefused(422, "tls_not_configured", f"trunk {trunk.name} needs SIP over TLS")
    if not server.codecs_for(trunk.name):
        raise DialRefused(
            422, "no_common_codec", f"trunk {trunk.name}'s codecs are not among --codecs"
        )
    try:
        agent = await service.get_agent(server.db, params.agent)
    except NotFound:
        raise DialRefused(404, "unknown_agent", f"no agent named {params.agent!r}") from None
    if not agent.voice_enabled:
        raise DialRefused(409, "agent_not_voice_enabled", f"agent {agent.name} takes no calls")
    refusal = server.refusal_for_new_call(trunk.name)
    if refusal is not None:
        reason, retry_after = refusal
        raise DialRefused(503, reason, "the server takes no new calls now", retry_after)
    call = OutboundCall(
        server,
        to=to,
        from_=from_,
        agent=agent,
        trunk=trunk.name,
        credentials=(trunk.username, trunk.password),
        target=target,
        headers=headers,
        ring_timeout=params.ring_timeout,
    )
    server.add_call(call)
    return call


class OutboundCall(Call):
    """One call we place; the server forwards its UA events to :meth:`on_outbound_event`
    until the answer, then the in-dialog ones as for any :class:`Call`."""

    def __init__(
        self,
        server: SipBridgeServer,
        *,
        to: str,
        from_: str,
        agent: AgentRecord,
        trunk: str,
        credentials: tuple[str | None, str | None],
        target: RegistrarTarget,
        headers: tuple[tuple[str, str], ...],
        ring_timeout: float,
    ) -> None:
        port = target.port or (5061 if target.transport is Transport.TLS else 5060)
        record = CallRecord(
            id=uuid.uuid4().hex,
            sip_call_id=f"{secrets.token_hex(16)}@sipbridge",
            from_number=from_,
            to_number=to,
            agent=agent.name,
            received_at=utcnow(),
            status=CallStatus.RINGING,
            source=f"{target.host}:{port}",
            trunk=trunk,
            direction="outbound",
        )
        self._init(server, record, (target.host, port), target.address)
        self._agent = agent
        self._target = target
        self._credentials = credentials
        self._headers = headers
        self._ring_timeout = ring_timeout
        self.attempt: OutboundInvite | None = None
        self._dialog: InboundCall | None = None
        self._outcome: asyncio.Future[OutboundAnswered | OutboundEnded] = (
            server.loop.create_future()
        )
        self._answer_seen_at = 0.0  # when the 200 was handled (loop time)
        self._early_media = False  # a provisional response carried SDP
        # Our SDES keys when the offer is SRTP (a trunk that requires it), one per suite.
        self._offered_crypto: list[CryptoAttribute] = []
        # The agent's WebSocket, opened while the callee's phone rings (_dial).
        self._agent_ready: asyncio.Future[str] | None = None

    # -- events from the SIP side ------------------------------------------------

    def on_outbound_event(self, event: OutboundProgress | OutboundAnswered | OutboundEnded) -> None:
        if isinstance(event, OutboundProgress):
            if event.status == 100:
                return  # the trunk got the INVITE; the record keeps what the callee did
            self._early_media = self._early_media or event.early_media
            self._event("progress", status=event.status, early_media=event.early_media or None)
            self._call_events.append(
                CallEvent(
                    self.id,
                    utcnow(),
                    "progress",
                    {"status": event.status, "early_media": event.early_media},
                )
            )
            return
        if not self._outcome.done():
            if isinstance(event, OutboundAnswered):
                self._answer_seen_at = self.server.loop.time()
            self._outcome.set_result(event)
        elif isinstance(event, OutboundAnswered):
            self.server.ua.hangup(event.call, self.server.loop.time())  # we gave up already
            self.server.flush()

    # -- the call ------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._dial():
                await self._bridge()
        except Exception:
            log.exception("call=%s internal error", self.id)
            self.record.reason = self.record.reason or "internal_error"
            self._hangup_sip()
        finally:
            await self._teardown()

    def _dial_request(self, offer: bytes) -> DialRequest:
        server, target = self.server, self._target
        ua = server.ua
        ipv6 = ":" in target.host
        host = (ua.local_host_v6 or ua.local_host) if ipv6 else ua.local_host
        bracketed = f"[{host}]" if ":" in host else host
        transport = target.transport
        port = ua.tls_port or 5061 if transport is Transport.TLS else ua.local_port
        contact = f"sip:{bracketed}:{port}"
        if transport is not Transport.UDP:
            contact += f";transport={transport.name.lower()}"
        username, password = self._credentials
        return DialRequest(
            call_id=self.record.sip_call_id,
            target=self._request_uri(),
            from_uri=target.uri(self.record.from_number),
            destination=target.address,
            contact=contact,
            via_host=host,
            via_port=port,
            sdp=offer,
            ring_timeout=self._ring_timeout,
            username=username,
            password=password,
            headers=self._headers,
            session_expires=server.settings.session_expires or None,
            min_se=server.settings.min_se,
            allow=ALLOW,
            supported=SUPPORTED,
            trunk=self.trunk,
        )

    def _request_uri(self) -> str:
        """The INVITE's Request-URI: the number at the trunk's host."""
        remote = self._target.uri()  # sip:host[:port][;transport=...]
        return remote.replace("sip:", f"sip:{self.record.to_number}@", 1)

    def _endpoint_factory(self, chosen: Negotiated) -> Callable[[], RtpEndpoint]:
        """The call's RTP endpoint, its PCM to and from the agent's link."""
        link = AgentLink(
            self.id,
            self._agent,
            self.server.agent_health,
            self._on_agent_events,
            self._on_first_audio,
            caller=self.record.from_number,
            dialed=self.record.to_number,
            sip_call_id=self.record.sip_call_id,
            sip_headers=dict(self._headers),
            limits=self.server.settings.agent_limits,
            direction="outbound",
        )
        self.link = link
        return lambda: self._make_endpoint(chosen, link, None)

    async def _dial(self) -> bool:
        """The INVITE until its outcome; True when answered and bridged to the agent."""
        server, loop = self.server, self.server.loop
        self._media_ipv6 = ":" in self._target.host
        media_address = server.media_address(self._media_ipv6)
        if media_address is None:
            return self._failed("address_family", "no media address of the trunk's family")
        bind_host, self._media_address = media_address
        chosen = self._placeholder_stream(self._media_ipv6)
        try:
            self.media, self.rtp_port = await open_rtp_endpoint(
                loop, server.rtp_ports, bind_host, self._endpoint_factory(chosen)
            )
        except PortsExhausted:
            return self._failed("no_rtp_port", "the RTP port range is full")
        # Until the answer is applied, what arrives is kept raw (media/session.py hold):
        # neither ringback nor the callee's first words played with the wrong codec/key.
        self.media.session.hold()
        self._sdp_session = server.new_sdp_session_id()
        self._srtp_policy = self._policy_for_call()  # the trunk's: SAVP when required
        self._offered_crypto = self._offer_keys()
        offer = build_offer(
            self._codecs,
            self._media_address,
            self.rtp_port,
            session_id=self._sdp_session,
            version=self._sdp_version,
            crypto=self._offered_crypto,
        ).serialize()
        self.attempt = server.ua.dial(self._dial_request(offer), self.id, loop.time())
        server.flush()
        self._event(
            "dialing",
            to=self.record.to_number,
            trunk=self.trunk,
            target=self.record.source,
            ring_timeout=self._ring_timeout,
        )
        waiting: set[asyncio.Future[Any]] = {self._outcome, self._ended}
        if self.link is not None:
            # The agent's WebSocket opens while the callee's phone rings, as an inbound
            # call's does while ours rings: the callee's "hello" does not wait for a
            # handshake, and an agent that cannot be reached cancels the call before
            # anyone answers into silence. Its start goes out at the answer.
            self._agent_ready = asyncio.ensure_future(
                self.link.connect(loop, server.settings.agent_connect_timeout)
            )
            waiting.add(self._agent_ready)
        while True:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            agent = self._agent_ready
            if agent is None or agent not in waiting or not agent.done():
                break
            waiting.discard(agent)
            problem = agent.exception()
            if problem is None or self._outcome.done() or self._ended.done():
                continue
            if not isinstance(problem, AgentUnreachable):
                raise problem
            server.ua.cancel_dial(self.attempt, loop.time())
            server.flush()
            self._event("agent_unreachable", detail=str(problem))
            return self._failed("agent_unreachable", "the agent could not be reached")
        if not self._outcome.done():  # shutdown (or a transfer's caller gone) while ringing
            server.ua.cancel_dial(self.attempt, loop.time())
            server.flush()
            cause = self._ended.result()
            if cause in (EndCause.CALLER_HANGUP, EndCause.OPERATOR_HANGUP):
                self.record.status = CallStatus.CANCELLED
                self.record.reason = cause.value
                if cause is EndCause.OPERATOR_HANGUP:
                    self.record.hangup_by = "operator"
                self._event("cancelled", reason=cause.value)
                return False
            return self._failed(cause.value, "the call ended while ringing")
        outcome = self._outcome.result()
        if isinstance(outcome, OutboundEnded):
            status = _STATUSES[outcome.outcome.value]
            self.record.status = status
            self.record.reason = outcome.reason
            self.record.sip_code = outcome.status
            self._event(
                "not_answered",
                status=status.value,
                sip_code=outcome.status,
                reason=outcome.reason,
                detail=outcome.detail or None,
            )
            if outcome.detail:  # why, in the record too (the dashboard's timeline)
                data = {"reason": outcome.reason, "detail": outcome.detail}
                self._call_events.append(CallEvent(self.id, utcnow(), "failure", data))
            return False
        return await self._answered(outcome, offer)

    async def _answered(self, event: OutboundAnswered, offer: bytes) -> bool:
        """The callee answered (ACKed already): apply its SDP answer, start the media,
        connect the agent."""
        server, loop = self.server, self.server.loop
        assert self.media is not None
        self.sip = event.call
        self._dialog = event.call
        self.sip_source = event.call.source
        self.record.answered_at = utcnow()
        self._answered_at = loop.time()
        self._confirmed = True
        self.record.status = CallStatus.ANSWERED
        self.record.sip_code = 200
        server.records.submit(self.record, status=CallStatus.ACTIVE)
        self.sip.local_sdp = offer
        if self._ended.done():
            return True  # a BYE came already: _bridge ends it
        offered = self._offered_crypto
        try:
            if not event.answer:
                raise SdpError("neither the 2xx nor a 183 carried an SDP answer")
            chosen, ours = self._answer_to_offer(parse_sdp(event.answer), offered)
            chosen = await self._resolve(chosen)
        except (SdpError, NoCommonCodec, SrtpMismatch, ValueError) as exc:
            reason = "no_sdp_answer" if not event.answer else "bad_sdp_answer"
            self._event(reason, detail=str(exc))
            self.record.status = CallStatus.FAILED
            self._finish(EndCause.NO_SDP_ANSWER if not event.answer else EndCause.BAD_SDP_ANSWER)
            return True
        media = self.media.session
        if chosen.codec != media.codec or chosen.payload_type != media.payload_type:
            media.set_codec(chosen)
        if ours is not None and chosen.srtp is not None:
            self._srtp_as_offerer(ours, chosen.srtp)
            self._settle_offer(ours)
        media.update_remote((chosen.remote_address, chosen.remote_port))
        # The callee's first packets, sent with its 200, are played now (the agent gets
        # them after its start). With early media signalled (a 1xx with SDP) what came
        # well before the 200 was ringback or an announcement, and is dropped; without,
        # nothing could be sent before the answer, so all of it is the callee's.
        since = self._answer_seen_at - ANSWER_SLACK if self._early_media else float("-inf")
        self.media.release(since)
        media.sending = chosen.direction in ("sendrecv", "sendonly")
        self._on_hold = chosen.direction in ("sendonly", "inactive")
        self.record.codec = chosen.codec
        self._media_since = loop.time()
        self.media.start(server.media_clock)
        self._event(
            "answered",
            codec=chosen.codec,
            rtp_port=self.rtp_port,
            srtp=ours.suite.value if ours is not None else "off",
        )
        return await self._joined()

    def _settle_offer(self, ours: CryptoAttribute) -> None:
        """Our description from now on (a refresh re-INVITE offers it again): the offer
        with the one key the answer accepted, so a refresh cannot switch suites under a
        running session; changed, so its version goes up (RFC 3264 §8)."""
        assert self.rtp_port is not None
        self._sdp_version += 1
        self.sip.local_sdp = build_offer(
            self._codecs,
            self._media_address,
            self.rtp_port,
            session_id=self._sdp_session,
            version=self._sdp_version,
            crypto=[ours],
        ).serialize()

    async def _joined(self) -> bool:
        """The callee's media flows: connect the agent and send ``start``."""
        server, loop = self.server, self.server.loop
        assert self.media is not None and self.link is not None
        connect = self._agent_ready
        if connect is None or (
            connect.done() and (connect.exception() is not None or not self.link.is_open)
        ):
            # Not opened while ringing, or lost since: open it now.
            connect = asyncio.ensure_future(
                self.link.connect(loop, server.settings.agent_connect_timeout)
            )
        pending: set[asyncio.Future[Any]] = {connect, self._ended}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done():  # the callee hung up (or shutdown) meanwhile
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError, AgentUnreachable):
                await connect
            return True
        try:
            url = connect.result()
        except AgentUnreachable as exc:
            self._event("agent_unreachable", detail=str(exc))
            self.record.status = CallStatus.FAILED
            self.record.reason = "agent_unreachable"
            self._hangup_sip()
            return False
        self._event("agent_connected", url=url, protocol=self._agent.protocol)
        await self.link.start()
        self.link.on_agent_audio = self.media.agent_audio
        return True

    def _failed(self, reason: str, detail: str) -> bool:
        self.record.status = CallStatus.FAILED
        self.record.reason = reason
        self._event("failed", reason=reason, detail=detail)
        return False

    # -- endings -------------------------------------------------------------

    def hang_up(self) -> bool:
        """An operator ends the call (``POST /api/calls/{id}/hangup``, the dashboard's Live
        calls page): answered, with our BYE; still ringing, with CANCEL (the record says
        ``cancelled``, reason ``operator_hangup``)."""
        if self._dialog is None and not self._outcome.done() and not self._ended.done():
            self._event("operator_hangup")
            self._finish(EndCause.OPERATOR_HANGUP)
            return True
        return super().hang_up()

    async def _teardown(self) -> None:
        agent = self._agent_ready
        if agent is not None:
            if not agent.done():
                # Unanswered while the agent's WebSocket was still opening: no connection
                # may outlive the call.
                agent.cancel()
            # Awaited either way: a failure nobody read (the call ended unanswered first)
            # is no "exception was never retrieved" at exit.
            with contextlib.suppress(asyncio.CancelledError, AgentUnreachable):
                await agent
        await super()._teardown()

    def _hangup_sip(self) -> None:
        if self._dialog is not None:
            super()._hangup_sip()
        elif self.attempt is not None:
            self.server.ua.cancel_dial(self.attempt, self.server.loop.time())
            self.server.flush()

    def _reject(
        self, status: int, reason: str, *, detail: str | None = None, retry_after: int | None = None
    ) -> None:
        # Nothing to answer: we are the caller.
        self._failed(reason, detail or f"status {status}")
