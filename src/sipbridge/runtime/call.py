"""The call orchestrator: one :class:`Call` per INVITE, joining dialog, media and agent.

A call goes through these steps (each failure ends it with a SIP error and a
call record that names the reason):

1. route the dialed number to an agent (404 / 480);
2. negotiate the codec and SRTP from the SDP offer (488);
3. open an RTP port (503 when the range is full);
4. send 180 Ringing and open the agent's WebSocket (503 after the connect budget);
5. send ``start`` to the agent, then 200 OK with our SDP answer;
6. bridge audio until the caller's BYE, the agent's hangup or close, or shutdown;
7. ``stop`` to the agent, BYE when we end it, free the port, write the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import socket
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from sipbridge.agent.events import (
    AgentEvent,
    AudioCleared,
    AudioDropped,
    HangupRequested,
    InvalidMessage,
    LimitReached,
    Metadata,
    RateExceeded,
    SendDtmf,
    Transcript,
    TransferCancel,
    TransferComplete,
    TransferRequested,
    UnknownMessage,
)
from sipbridge.agent.handover import Handover, HandoverState, Step, TransferMethod
from sipbridge.agent.transfers import transfer_refusal
from sipbridge.codecs import get_codec
from sipbridge.config import is_ip_address
from sipbridge.media.dtmf import DigitPressed, DtmfError, parse_dtmf_info
from sipbridge.media.session import MediaSession
from sipbridge.numbers import caller_number
from sipbridge.router import route
from sipbridge.rtp.srtp import SrtpSession
from sipbridge.runtime.agent_client import AgentUnreachable, Closed
from sipbridge.runtime.agent_link import AgentLink
from sipbridge.runtime.media import PortsExhausted, RtpEndpoint, open_rtp_endpoint
from sipbridge.runtime.recordings import CallRecording
from sipbridge.sdp.crypto import CryptoAttribute, answer_crypto, answered_crypto, offer_crypto
from sipbridge.sdp.negotiate import (
    Negotiated,
    NoCommonCodec,
    SrtpMismatch,
    SrtpPolicy,
    build_answer,
    build_offer,
    negotiate,
)
from sipbridge.sdp.session import SdpError, SessionDescription, parse_sdp
from sipbridge.sip.calls import InboundCall
from sipbridge.sip.message import Request
from sipbridge.sip.proxy import SOURCE_HEADER
from sipbridge.store.records import CallEvent, CallRecord, CallStatus, RecordingInfo, utcnow
from sipbridge.wiretext import clean, clean_opt

if TYPE_CHECKING:
    from sipbridge.runtime.bridge import TransferLeg
    from sipbridge.runtime.server import SipBridgeServer

log = logging.getLogger("sipbridge.call")
# Never passed on to the agent: it is between a trusted proxy and us (sip/proxy.py).
_SOURCE_HEADER = SOURCE_HEADER.lower()
# Call failures on our side (not the caller's choice or a wrong number): logged at WARNING.
_FAILURE_REASONS = frozenset(
    {
        "agent_unreachable",
        "agent_lost",
        "agent_protocol_error",
        "no_rtp_port",
        "overload",
        "server_busy",
        "trunk_busy",
        "trunk_timeout",
        "trunk_unreachable",
        "unhealthy",
    }
)

MEDIA_WATCH_SECONDS = 1.0
# Retry-After of a call refused because the database stopped answering its lookup: as for
# the other unhealthy refusals (TRUNK_BUSY_RETRY_AFTER, runtime/refusals.py).
UNHEALTHY_RETRY_AFTER = 5
# How long the end of a call waits for its recording's file to be finished before the
# record is written without it (it is written again with it once the file is done).
RECORDING_FINISH_SECONDS = 5.0
# How long we keep playing queued agent audio after the agent asked to hang up
# beyond the queued duration itself.
PLAYOUT_GRACE = 0.5
# Timeline steps stored with a call's record (ringing, agent connected, clear, agent DTMF).
MAX_TIMELINE_EVENTS = 100


class EndCause(enum.Enum):
    """Why an answered call ends; the value is the record's reason."""

    CALLER_HANGUP = "caller_hangup"
    CALLEE_HANGUP = "callee_hangup"  # the far end of an outbound call sent BYE
    AGENT_HANGUP = "agent_hangup"
    AGENT_DISCONNECTED = "agent_disconnected"
    AGENT_LOST = "agent_lost"
    AGENT_PROTOCOL_ERROR = "agent_protocol_error"
    TRANSFERRED = "transferred"
    # The target of a bridged transfer hung up (the caller's record says transferred).
    TARGET_HANGUP = "target_hangup"
    # A warm transfer's target leg that the agent called off (transfer_cancel).
    TRANSFER_CANCELLED = "transfer_cancelled"
    ACK_TIMEOUT = "ack_timeout"
    SESSION_EXPIRED = "session_expired"  # RFC 4028 §10: the caller's refresh never came
    SESSION_REFRESH_FAILED = "session_refresh_failed"  # ours got 408/481 or no answer
    # Delayed offer (RFC 3261 §13.2.1): the ACK of our offer carried no answer, or one
    # we cannot use.
    NO_SDP_ANSWER = "no_sdp_answer"
    BAD_SDP_ANSWER = "bad_sdp_answer"
    MEDIA_TIMEOUT = "media_timeout"
    MAX_DURATION = "max_duration"
    SERVER_SHUTDOWN = "server_shutdown"
    OPERATOR_HANGUP = "operator_hangup"  # the dashboard's hang-up button


class Call:
    """One inbound call. The server creates it on IncomingCall and runs :meth:`run` as a task;
    it forwards the UA's later events to :meth:`on_cancel`, :meth:`on_confirmed`,
    :meth:`on_remote_bye`, :meth:`on_ack_timeout` and :meth:`on_reinvite`.
    """

    def __init__(self, server: SipBridgeServer, sip: InboundCall) -> None:
        invite = sip.invite
        record = CallRecord(
            id=sip.id,
            # Wire text is made storable, encodable and one-line (wiretext.py) before it
            # reaches the agent, the store or the logs.
            sip_call_id=clean(invite.call_id),
            from_number=clean_opt(
                caller_number(invite.from_.uri.user, server.settings.default_region)
            ),
            to_number=None,
            agent=None,
            received_at=utcnow(),
            status=CallStatus.RINGING,  # until answered, rejected or cancelled
            # The real source (a trusted proxy's X-Sipbridge-Source, sip/proxy.py).
            source=f"{sip.origin[0]}:{sip.origin[1]}",
            trunk=sip.trunk,
        )
        self._init(server, record, sip.origin, sip.source)
        self.sip = sip

    def _init(
        self,
        server: SipBridgeServer,
        record: CallRecord,
        origin: tuple[str, int],
        sip_source: tuple[str, int] | None,
    ) -> None:
        """What every call has, inbound or outbound (runtime/outbound.py): ``origin`` is
        the far end's address (the guard's), ``sip_source`` where its signalling is (a
        TCP/TLS connection kept open while the call lasts)."""
        self.server = server
        self.record = record
        self.id = record.id
        self.trunk = record.trunk
        self.origin = origin
        self.sip_source = sip_source
        # Phone-side codecs: --codecs, narrowed to the trunk's own list when it has one.
        self._codecs = server.codecs_for(record.trunk)
        self._cancelled = asyncio.Event()
        self._ended: asyncio.Future[EndCause] = server.loop.create_future()
        self._agent_hangup = False
        self._dropped_audio = 0
        self.media: RtpEndpoint | None = None
        self.rtp_port: int | None = None
        self.link: AgentLink | None = None
        self._record_audio = False  # the number's or agent's ``record``
        self.recording: CallRecording | None = None
        self._reader: asyncio.Future[Closed] | None = None
        self._reconnected = False
        self._handover: Handover | None = None  # the agent's transfer, if any
        self._transfer_headers: dict[str, str] = {}
        self._leg: TransferLeg | None = None  # the target's leg of a bridged transfer
        # Set when the caller is joined to the target's leg: the agent leaves.
        self._handed_over: asyncio.Future[None] = server.loop.create_future()
        self._call_events: list[CallEvent] = []
        self._timeline_events = 0  # of _call_events, those from _store_event
        self._hangup_task: asyncio.Future[None] | None = None
        self._received_at = server.loop.time()
        self._answered_at: float | None = None
        self._sdp_session = 0
        self._sdp_version = 0
        self._on_hold = False
        self._confirmed = False  # the ACK for our 2xx arrived
        self._media_since = 0.0  # when the caller's RTP was last due to start (answer, unhold)
        self._srtp_policy = SrtpPolicy.OPTIONAL  # set in _setup from the trunk or the server
        # Our SDP address and the caller's media family (set in _setup from the offer).
        self._media_address = server.settings.advertised_ip
        self._media_ipv6 = False
        self._remote_name: tuple[str, str] | None = None  # an SDP c= name and its address
        self._local_crypto: CryptoAttribute | None = None  # our SRTP key, as answered
        # Delayed offer: the ACK's body (the caller's answer to the offer in our 2xx).
        self._ack_answer: asyncio.Future[bytes] = server.loop.create_future()

    # -- events from the SIP side ------------------------------------------------

    def on_cancel(self) -> None:
        self._cancelled.set()

    def on_confirmed(self, ack: Request | None = None) -> None:
        self._confirmed = True
        if not self._ack_answer.done():
            self._ack_answer.set_result(ack.body if ack is not None else b"")
        # The caller's RTP may wait for the dialog to be confirmed: count from here.
        self._media_since = max(self._media_since, self.server.loop.time())
        self._event("confirmed")

    def on_remote_bye(self) -> None:
        outbound = self.record.direction == "outbound"
        self._finish(EndCause.CALLEE_HANGUP if outbound else EndCause.CALLER_HANGUP)

    def on_ack_timeout(self) -> None:
        self._finish(EndCause.ACK_TIMEOUT)

    def on_shutdown(self) -> None:
        self._cancelled.set()
        self._finish(EndCause.SERVER_SHUTDOWN)

    def hang_up(self) -> bool:
        """An operator ends the call (the dashboard's Live calls page): our BYE, reason
        ``operator_hangup``, ``hangup_by`` "operator". False when the call is not answered
        yet (it is ringing: it ends by itself) or already ending."""
        if self.record.answered_at is None or self._ended.done():
            return False
        self._event("operator_hangup")
        self._finish(EndCause.OPERATOR_HANGUP)
        return True

    def on_session_expired(self, reason: str) -> None:
        """RFC 4028: the session timer ran out; the call ends with our BYE."""
        self._event(reason)
        if reason == EndCause.SESSION_REFRESH_FAILED.value:
            self._finish(EndCause.SESSION_REFRESH_FAILED)
        else:
            self._finish(EndCause.SESSION_EXPIRED)

    def on_refresh_answer(self, body: bytes) -> None:
        """The caller's answer to the offer of our refresh re-INVITE (our current SDP): it
        may move its media or change direction (RFC 3264 §8). One we cannot use changes
        nothing (the re-INVITE is over; the old session goes on)."""
        if self.media is None:
            return
        try:
            answer = parse_sdp(body)
            chosen = negotiate(answer, [self.media.session.codec, *self._codecs], self._srtp_policy)
            chosen = self._same_family(chosen)
        except (SdpError, NoCommonCodec) as exc:
            self._event("refresh_answer_ignored", error=str(exc))
            return
        media = self.media.session
        theirs, ours = chosen.srtp, self._local_crypto
        if media.srtp is not None and theirs is not None and ours is not None:
            if (theirs.tag, theirs.suite) != (ours.tag, ours.suite) or theirs.key == ours.key:
                # RFC 4568 §7.1.3: not the one line we offered (or our own key back).
                self._event("refresh_answer_ignored", error="the answer's a=crypto is not ours")
                return
            # RFC 4568 §7.1.4: the answerer may pick a new key for its direction;
            # an unchanged one keeps its session (SrtpSession.update).
            media.srtp.update(ours.suite.value, ours.key, theirs.key, theirs.window_size)
        media.update_remote((chosen.remote_address, chosen.remote_port))
        media.sending = chosen.direction in ("sendrecv", "sendonly")

    def on_reinvite(self, request: Request) -> None:
        """A new offer in the dialog (RFC 3264 §8): hold/unhold, a new address or port, or
        another codec. Answered at once; the agent connection is not touched."""
        ua, now = self.server.ua, self.server.loop.time()
        if self.media is None or self.rtp_port is None:
            self.server.ua.reject_reinvite(self.sip, 491, now)  # RFC 3261 §14.2: not ready
            self.server.flush()
            return
        if not request.body:
            # An offerless re-INVITE (session refresh): offer our current SDP again;
            # the peer's answer arrives in the ACK, which changes nothing here.
            ua.answer_reinvite(self.sip, self.sip.local_sdp, now)
            self.server.flush()
            self._event("session_refresh", method="INVITE")
            return
        answer = self._new_offer(request, "reinvite")
        if answer is None:
            ua.reject_reinvite(self.sip, 488, now)
        else:
            ua.answer_reinvite(self.sip, answer, now)
        self.server.flush()

    def on_update(self, request: Request) -> None:
        """An UPDATE with an offer (RFC 3311 §5.2): answered at once like a re-INVITE's
        offer, by the same negotiation; the dialog does not change."""
        ua, now = self.server.ua, self.server.loop.time()
        if self.media is None or self.rtp_port is None:
            ua.reject_update(self.sip, 491, now)  # no answer of ours to build on yet
            self.server.flush()
            return
        answer = self._new_offer(request, "update")
        if answer is None:
            ua.reject_update(self.sip, 488, now)
        else:
            ua.answer_update(self.sip, answer, now)
        self.server.flush()

    def _new_offer(self, request: Request, kind: str) -> bytes | None:
        """Apply an in-dialog offer (re-INVITE or UPDATE) to the media and return our
        answer; None when it is not acceptable (answer 488; the session goes on as it
        was, RFC 3261 §14.2)."""
        assert self.media is not None and self.rtp_port is not None
        try:
            offer = parse_sdp(request.body)
            # Keep the codec if it is still offered: no needless switch mid-call.
            codecs = [self.media.session.codec, *self._codecs]
            chosen = negotiate(offer, codecs, self._srtp_policy)
            chosen = self._same_family(chosen)
        except (SdpError, NoCommonCodec) as exc:
            self._event(f"{kind}_rejected", error=str(exc))
            return None
        media = self.media.session
        if chosen.codec != media.codec or chosen.payload_type != media.payload_type:
            media.set_codec(chosen)
            self.record.codec = chosen.codec
        media.srtp = self._srtp_session(chosen, media.srtp)
        self.record.srtp = media.srtp.suite if media.srtp is not None else None
        media.update_remote((chosen.remote_address, chosen.remote_port))
        media.sending = chosen.direction in ("sendrecv", "sendonly")
        on_hold = chosen.direction in ("sendonly", "inactive")  # the caller sends nothing
        if self._on_hold and not on_hold:
            self._media_since = self.server.loop.time()  # the silence clock restarts
        self._on_hold = on_hold

        def answer(version: int) -> bytes:
            assert self.rtp_port is not None
            return build_answer(
                offer,
                chosen,
                self._media_address,
                self.rtp_port,
                session_id=self._sdp_session,
                version=version,
                crypto=self._local_crypto,
            ).serialize()

        body = answer(self._sdp_version)
        if body != self.sip.local_sdp:
            # RFC 3264 §8: a changed description carries the next version number.
            self._sdp_version += 1
            body = answer(self._sdp_version)
        self._event(
            kind,
            remote=f"{chosen.remote_address}:{chosen.remote_port}",
            codec=chosen.codec,
            direction=chosen.direction,
            srtp=self._local_crypto.suite.value if self._local_crypto else "off",
        )
        return body

    def _same_family(self, chosen: Negotiated) -> Negotiated:
        """A re-INVITE's media address, usable on the call's socket: of its family
        (RFC 3264 §8.3.1 lets an offer move the media, but our socket stays), and an IP
        address (a domain name only when it is the one resolved at set-up). SdpError
        otherwise (488)."""
        if (chosen.remote_type == "IP6") != self._media_ipv6:
            raise SdpError(f"the call's media is {'IPv6' if self._media_ipv6 else 'IPv4'}")
        if is_ip_address(chosen.remote_address):
            return chosen
        if self._remote_name is not None and chosen.remote_address == self._remote_name[0]:
            return dataclasses.replace(chosen, remote_address=self._remote_name[1])
        raise SdpError(f"a new media host name {chosen.remote_address!r} in a re-INVITE")

    async def _resolve(self, chosen: Negotiated) -> Negotiated:
        """The offer's media address as an IP address: a domain name in ``c=`` (RFC 4566
        §5.7) resolved in the family its address type names. SdpError when it does not
        resolve."""
        name = chosen.remote_address
        if is_ip_address(name):
            return chosen
        family = socket.AF_INET6 if chosen.remote_type == "IP6" else socket.AF_INET
        try:
            infos = await self.server.loop.getaddrinfo(
                name, chosen.remote_port, family=family, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise SdpError(f"cannot resolve the media host {name!r}: {exc}") from None
        if not infos:
            raise SdpError(f"cannot resolve the media host {name!r}")
        address = str(infos[0][4][0])
        self._remote_name = (name, address)
        return dataclasses.replace(chosen, remote_address=address)

    def on_info(self, request: Request) -> None:
        """SIP INFO DTMF (application/dtmf-relay, application/dtmf)."""
        content_type = request.headers.get("Content-Type") or ""
        try:
            digit = parse_dtmf_info(content_type, request.body)
        except DtmfError as exc:
            self._event("info_ignored", error=str(exc))
            return
        if digit is not None:
            self._caller_dtmf(digit)

    # -- the call ------------------------------------------------------------

    async def run(self) -> None:
        try:
            answered = await self._setup()
            if answered:
                await self._bridge()
        except Exception:
            log.exception(
                "call=%s event=internal_error",
                self.id,
                extra={"call_id": self.id, "event": "internal_error"},
            )
            self.record.reason = self.record.reason or "internal_error"
            self._reject(500, "internal_error")
            self._hangup_sip()
        finally:
            await self._teardown()

    async def _setup(self) -> bool:
        invite = self.sip.invite
        # A call relayed by a trusted proxy names the proxy too (sip/proxy.py).
        sip_proxy = self.sip.source if self.sip.relayed_from is not None else None
        self._event(
            "received",
            from_=self.record.from_number,
            uri=clean(str(invite.uri)),
            source=self.record.source,
            proxy=None if sip_proxy is None else f"{sip_proxy[0]}:{sip_proxy[1]}",
            trunk=self.record.trunk,
        )
        try:
            result = await route(
                self.server.db,
                *self.server.dialed_users(self.sip.trunk, invite),
                self.server.settings.default_region,
            )
        except (SQLAlchemyError, OSError) as exc:
            # The database went away since the last refresh (which would have refused
            # the call before it began): 503 as from an unhealthy instance (RFC 3261
            # §21.5.4), so the trunk retries elsewhere; never a 500 and a traceback.
            self.server.database_failed(exc)
            self._call_events.append(
                CallEvent(self.sip.id, utcnow(), "refusal", {"cause": "database_unreachable"})
            )
            self._reject(
                503,
                "unhealthy",
                detail=f"database_unreachable: {str(exc) or type(exc).__name__}",
                retry_after=UNHEALTHY_RETRY_AFTER,
            )
            return False
        self.record.to_number = clean_opt(result.number)
        self._record_audio = result.record
        if result.agent is not None:
            self.record.agent = result.agent.name
        if self._cancelled.is_set():
            return self._was_cancelled()
        if not result.ok:
            self._reject(result.status, result.reason)
            return False
        assert result.agent is not None

        self._srtp_policy = self._policy_for_call()
        offer: SessionDescription | None = None
        if not invite.body:
            # Delayed offer (RFC 3261 §13.2.1): our offer goes in the 200, the caller's
            # answer comes in the ACK. Until then the media waits on a placeholder stream.
            # (SRTP required: the offer is RTP/SAVP with our keys, _answer_with_offer.)
            chosen = self._placeholder_stream()
        else:
            try:
                offer = parse_sdp(invite.body)
                chosen = negotiate(offer, self._codecs, self._srtp_policy)
            except SdpError as exc:
                self._reject(488, "bad_sdp", detail=str(exc))
                return False
            except SrtpMismatch as exc:
                self._reject(488, exc.reason, detail=str(exc))
                return False
            except NoCommonCodec as exc:
                self._reject(488, "no_common_codec", detail=str(exc))
                return False
        # The media sockets take the family of the caller's media address (a dual-stack
        # server serves IPv4 and IPv6 callers); a server on one address of the other
        # family cannot answer it.
        self._media_ipv6 = chosen.remote_type == "IP6"
        media_address = self.server.media_address(self._media_ipv6)
        if media_address is None:
            family = "IPv6" if self._media_ipv6 else "IPv4"
            self._reject(488, "address_family", detail=f"no {family} media address")
            return False
        bind_host, self._media_address = media_address
        try:
            chosen = await self._resolve(chosen)
        except SdpError as exc:
            self._reject(488, "bad_sdp", detail=str(exc))
            return False
        if self._cancelled.is_set():
            return self._was_cancelled()
        self.record.codec = chosen.codec
        srtp = self._srtp_session(chosen, None)
        self.record.srtp = srtp.suite if srtp is not None else None

        invite_headers = {
            clean(name): clean(value)
            for name, value in invite.headers.items()
            # X-Sipbridge-Source is between the proxy and us (and forged by anyone else).
            if name.lower().startswith("x-") and name.lower() != _SOURCE_HEADER
        }
        link = AgentLink(
            self.id,
            result.agent,
            self.server.agent_health,
            self._on_agent_events,
            self._on_first_audio,
            caller=self.record.from_number,
            dialed=self.record.to_number,
            sip_call_id=self.record.sip_call_id,
            sip_headers=invite_headers,
            limits=self.server.settings.agent_limits,
        )
        self.link = link
        try:
            self.media, self.rtp_port = await open_rtp_endpoint(
                self.server.loop,
                self.server.rtp_ports,
                bind_host,
                lambda: self._make_endpoint(chosen, link, srtp),
            )
        except PortsExhausted:
            self._reject(503, "no_rtp_port", retry_after=5)
            return False

        self.server.ua.ring(self.sip, self.server.loop.time())
        self.server.flush()
        self._event("ringing", agent=result.agent.name)
        self._store_event("ringing", agent=result.agent.name)

        connect_started = self.server.loop.time()
        connect = asyncio.ensure_future(
            link.connect(self.server.loop, self.server.settings.agent_connect_timeout)
        )
        cancelled = asyncio.ensure_future(self._cancelled.wait())
        await asyncio.wait({connect, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        cancelled.cancel()
        if self._cancelled.is_set():
            connect.cancel()
            with contextlib.suppress(asyncio.CancelledError, AgentUnreachable):
                await connect
            return self._was_cancelled()
        try:
            url = connect.result()
        except AgentUnreachable as exc:
            self._reject(503, "agent_unreachable", detail=str(exc), retry_after=10)
            return False
        self.server.metrics.agent_connect_seconds.observe(self.server.loop.time() - connect_started)
        self._event("agent_connected", url=url, protocol=result.agent.protocol)
        self._store_event("agent_connected", protocol=result.agent.protocol)
        if offer is None:
            return await self._answer_with_offer(link)
        await link.start()
        if self._cancelled.is_set():
            return self._was_cancelled()
        if not link.is_open:
            self._reject(503, "agent_unreachable", detail="agent closed before the answer")
            return False

        self._sdp_session = self.server.new_sdp_session_id()
        answer = build_answer(
            offer,
            chosen,
            self._media_address,
            self.rtp_port,
            session_id=self._sdp_session,
            version=self._sdp_version,
            crypto=self._local_crypto,
        )
        self.server.ua.answer(self.sip, answer.serialize(), self.server.loop.time())
        self.server.flush()
        self.record.answered_at = utcnow()
        self._answered_at = self.server.loop.time()
        self.server.metrics.setup_seconds.observe(self._answered_at - self._received_at)
        self.record.status = CallStatus.ANSWERED  # how it ends, once it does
        self.record.sip_code = 200
        # The store shows the call in progress (a background write: no waiting here).
        self.server.records.submit(self.record, status=CallStatus.ACTIVE)
        self.media.session.sending = chosen.direction in ("sendrecv", "sendonly")
        self._on_hold = chosen.direction in ("sendonly", "inactive")
        self._media_since = self._answered_at
        self.media.start(self.server.media_clock)
        self._start_recording()
        link.on_agent_audio = self.media.agent_audio
        self._event(
            "answered",
            codec=chosen.codec,
            rtp_port=self.rtp_port,
            srtp=srtp.suite if srtp is not None else "off",
        )
        return True

    def _placeholder_stream(self, ipv6: bool | None = None) -> Negotiated:
        """The media stream of a call whose offer is ours, until the answer arrives: our
        first codec, nowhere to send (the media clock is not started before the answer),
        in the family of the caller's signalling address (or ``ipv6``'s)."""
        name = self._codecs[0]
        info = get_codec(name)
        if ipv6 is None:
            host = self.sip.source[0]
            ipv6 = ":" in host and not host.lower().startswith("::ffff:")
        return Negotiated(
            payload_type=info.static_payload_type if info.static_payload_type is not None else 96,
            codec=name,
            clock_rate=info.clock_rate,
            telephone_event_pt=None,
            remote_address="::" if ipv6 else "0.0.0.0",
            remote_port=9,  # RFC 4566 §5.14's discard port: nothing is sent yet
            direction="sendrecv",
            ptime=None,
            remote_type="IP6" if ipv6 else "IP4",
        )

    async def _answer_with_offer(self, link: AgentLink) -> bool:
        """Delayed offer (RFC 3261 §13.2.1, RFC 3264 §5): the 200 carries our offer (every
        configured codec, telephone-event); the ACK carries the caller's answer. The media
        and the agent's ``start`` begin when it arrives; an ACK without an answer, or with
        one we cannot use, ends the call with BYE (``no_sdp_answer``, ``bad_sdp_answer``)."""
        assert self.media is not None and self.rtp_port is not None
        loop = self.server.loop
        self._sdp_session = self.server.new_sdp_session_id()
        offered = self._offer_keys()
        # The caller may send media as soon as it has our offer, before its ACK (and its
        # answer) is handled: kept raw until then (media/session.py hold).
        self.media.session.hold()
        offer = build_offer(
            self._codecs,
            self._media_address,
            self.rtp_port,
            session_id=self._sdp_session,
            version=self._sdp_version,
            crypto=offered,
        )
        self.server.ua.answer(self.sip, offer.serialize(), loop.time())
        self.server.flush()
        self.record.answered_at = utcnow()
        self._answered_at = loop.time()
        self.server.metrics.setup_seconds.observe(self._answered_at - self._received_at)
        self.record.status = CallStatus.ANSWERED
        self.record.sip_code = 200
        self.server.records.submit(self.record, status=CallStatus.ACTIVE)
        self._event("offered", rtp_port=self.rtp_port, codecs=",".join(self._codecs))
        waiting: set[asyncio.Future[Any]] = {self._ack_answer, self._ended}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self._ended.done():
            return True  # the caller's BYE or the ACK timeout: _bridge ends it
        body = self._ack_answer.result()
        if not body:
            self._event("no_sdp_answer", detail="the ACK carries no SDP answer")
            self._finish(EndCause.NO_SDP_ANSWER)
            return True
        try:
            answer = parse_sdp(body)
            chosen, ours = self._answer_to_offer(answer, offered)
        except (SdpError, NoCommonCodec, ValueError) as exc:
            self._event("bad_sdp_answer", detail=str(exc))
            self._finish(EndCause.BAD_SDP_ANSWER)
            return True
        media = self.media.session
        if chosen.codec != media.codec or chosen.payload_type != media.payload_type:
            media.set_codec(chosen)
        if ours is not None and chosen.srtp is not None:
            self._srtp_as_offerer(ours, chosen.srtp)
        media.update_remote((chosen.remote_address, chosen.remote_port))
        self.media.release(float("-inf"))  # all of it came after our offer
        media.sending = chosen.direction in ("sendrecv", "sendonly")
        self._on_hold = chosen.direction in ("sendonly", "inactive")
        self.record.codec = chosen.codec
        # From now on our description is the stream agreed on (a refresh re-INVITE offers
        # it); it changed from the offer, so its version goes up (RFC 3264 §8).
        self._sdp_version += 1
        self.sip.local_sdp = build_answer(
            answer,
            chosen,
            self._media_address,
            self.rtp_port,
            session_id=self._sdp_session,
            version=self._sdp_version,
            crypto=self._local_crypto,
        ).serialize()
        await link.start()
        if self._ended.done():
            return True
        self._media_since = loop.time()
        self.media.start(self.server.media_clock)
        self._start_recording()
        link.on_agent_audio = self.media.agent_audio
        self._event(
            "answered",
            codec=chosen.codec,
            rtp_port=self.rtp_port,
            offer="ours",
            srtp=ours.suite.value if ours is not None else "off",
        )
        return True

    def _start_recording(self) -> None:
        """A recorded call (its number's or agent's ``record``): from the media's start,
        the endpoint hands both sides to the recording writer (runtime/recordings.py)."""
        if not self._record_audio or self.media is None or self.link is None:
            return
        tap = self.server.recordings.begin(
            self.sip.id,
            self.link.sample_rate,
            self.server.loop.time(),
            self.record.answered_at or utcnow(),
        )
        self.recording = self.media.recording = tap
        self._event("recording", path=tap.path, rate=tap.rate)

    async def _finish_recording(self, tap: CallRecording) -> None:
        """The recording's file finished and in the record; when the writer takes longer
        than :data:`RECORDING_FINISH_SECONDS`, the record goes without it and is written
        again once the file is done."""
        finished = asyncio.ensure_future(self.server.recordings.finish(tap))
        try:
            info = await asyncio.wait_for(asyncio.shield(finished), RECORDING_FINISH_SECONDS)
        except TimeoutError:
            log.warning("call=%s event=recording_finish_late path=%s", self.sip.id, tap.path)

            def late(future: asyncio.Future[RecordingInfo | None]) -> None:
                if not future.cancelled() and future.exception() is None:
                    self.record.recording = future.result()
                    if self.record.recording is not None:
                        self.server.records.submit(self.record)

            finished.add_done_callback(late)
            return
        except Exception:
            log.exception("call=%s event=recording_failed path=%s", self.sip.id, tap.path)
            return
        self.record.recording = info
        if info is not None:
            self._event(
                "recorded",
                path=info.path,
                duration_s=info.duration_s,
                bytes=info.bytes,
                dropped_ms=info.dropped_ms or None,
            )

    def _make_endpoint(
        self, chosen: Negotiated, link: AgentLink, srtp: SrtpSession | None
    ) -> RtpEndpoint:
        return RtpEndpoint(
            MediaSession(chosen, link.sample_rate, srtp=srtp),
            on_audio=link.send_caller_audio,
            next_frame=link.next_frame,
            frame_ready=link.frame_ready,
            on_dtmf=self._caller_dtmf,
        )

    def _policy_for_call(self) -> SrtpPolicy:
        """The trunk's SRTP setting, or the server's ``--srtp`` for calls from no trunk."""
        trunk = self.server.trunks.get(self.trunk) if self.trunk else None
        mode = trunk.srtp if trunk is not None else self.server.settings.srtp
        try:
            return SrtpPolicy(mode)
        except ValueError:
            log.warning(
                "call=%s event=srtp_setting_unknown srtp=%r: using required",
                self.id,
                mode,
                extra={"call_id": self.id, "event": "srtp_setting_unknown"},
            )
            return SrtpPolicy.REQUIRED  # fail closed

    def _srtp_session(self, chosen: Negotiated, current: SrtpSession | None) -> SrtpSession | None:
        """Our answer's key and the SRTP session for ``chosen`` (RFC 4568 §7.1.2); on a
        re-INVITE (``current`` set) a changed caller key replaces the inbound direction
        only. Our key is kept while the suite stays (§7.1.4 lets an answerer keep it); a
        new suite, or SRTP switched on again, gets a fresh key: libsrtp would start a new
        session at index 0, and reusing a key there could repeat keystream."""
        offered = chosen.srtp
        if offered is None:
            self._local_crypto = None
            return None
        local = self._local_crypto
        keep = local is not None and local.suite is offered.suite and current is not None
        self._local_crypto = answer_crypto(offered, local.key if keep and local else None)
        key, suite = self._local_crypto.key, offered.suite.value
        if current is None:
            return SrtpSession(suite, key, offered.key, offered.window_size)
        current.update(suite, key, offered.key, offered.window_size)
        return current

    def _offer_keys(self) -> list[CryptoAttribute]:
        """Our SDES keys for an offer of ours (outbound, delayed offer): one per suite
        under ``required`` SRTP (RFC 4568 §7.1.1), else none and the offer is plain RTP
        (an offer has no "SRTP if you can" without RFC 5939; SAVP to a peer without SRTP
        would cost the call)."""
        return offer_crypto() if self._srtp_policy is SrtpPolicy.REQUIRED else []

    def _answer_to_offer(
        self, answer: SessionDescription, offered: list[CryptoAttribute]
    ) -> tuple[Negotiated, CryptoAttribute | None]:
        """The stream the answer to our offer chose (in the call's address family) and
        our key of the tag it took: an SRTP offer wants an RTP/SAVP answer with one of
        our tags (RFC 4568 §7.1.3), a plain offer a plain answer. SdpError,
        NoCommonCodec (SrtpMismatch) or ValueError when it is no usable answer."""
        policy = SrtpPolicy.REQUIRED if offered else SrtpPolicy.OFF
        chosen = self._same_family(negotiate(answer, self._codecs, policy))
        ours = answered_crypto(offered, chosen.srtp) if chosen.srtp is not None else None
        return chosen, ours

    def _srtp_as_offerer(self, ours: CryptoAttribute, theirs: CryptoAttribute) -> None:
        """SRTP for an answer to our offer (RFC 4568 §7.1.3): we send with our key of the
        tag the answer took (``answered_crypto``), the far end with its own."""
        assert self.media is not None
        self.media.session.srtp = SrtpSession(
            ours.suite.value, ours.key, theirs.key, theirs.window_size
        )
        self._local_crypto = ours
        self.record.srtp = ours.suite.value

    def _caller_dtmf(self, digit: DigitPressed) -> None:
        """One caller key press → one ``dtmf`` message to the agent."""
        self._event("dtmf", digit=digit.digit, duration_ms=digit.duration_ms)
        link = self.link
        if link is not None and self.record.answered_at is not None:
            link.send_text(link.session.caller_dtmf(digit.digit, digit.duration_ms))
            self._call_events.append(
                CallEvent(
                    self.id,
                    utcnow(),
                    "dtmf",
                    {"digit": digit.digit, "duration_ms": digit.duration_ms},
                )
            )

    async def _bridge(self) -> None:
        link = self.link
        assert link is not None
        watchdog = asyncio.ensure_future(self._watch_media())
        try:
            while not self._ended.done():
                reader = self._reader = asyncio.ensure_future(link.run())
                waiting: set[asyncio.Future[Any]] = {reader, self._ended, self._handed_over}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self._ended.done():
                    break
                if self._handed_over.done():
                    await self._agent_leaves()
                    await asyncio.wait({self._ended})
                    break
                closed = reader.result()
                self._event("agent_closed", clean=closed.clean, detail=closed.detail)
                if closed.clean or self._agent_hangup:
                    # The agent ended it: play out what it sent, then hang up.
                    await self._play_out()
                    self._finish(
                        EndCause.AGENT_HANGUP if self._agent_hangup else EndCause.AGENT_DISCONNECTED
                    )
                elif not await self._reconnect():
                    self._finish(EndCause.AGENT_LOST)
        finally:
            watchdog.cancel()
        cause = self._ended.result()
        if cause not in (EndCause.CALLER_HANGUP, EndCause.CALLEE_HANGUP):
            self._hangup_sip()
        self.record.reason = cause.value
        self.record.hangup_by = {
            EndCause.CALLER_HANGUP: "caller",
            EndCause.CALLEE_HANGUP: "callee",
            EndCause.AGENT_HANGUP: "agent",
            EndCause.AGENT_DISCONNECTED: "agent",
            EndCause.TRANSFERRED: "agent",
            EndCause.OPERATOR_HANGUP: "operator",
            EndCause.TARGET_HANGUP: "target",
        }.get(cause, "server")
        self._end_leg(cause)
        session = link.session
        self._event(
            "ended",
            reason=cause.value,
            hangup_by=self.record.hangup_by,
            protocol_errors=_counts(session.protocol_errors),
            dropped=_counts(session.dropped),
        )
        if session.protocol_errors or session.dropped:
            self._call_events.append(
                CallEvent(
                    self.id,
                    utcnow(),
                    "agent_limits",
                    {
                        "protocol_errors": dict(session.protocol_errors),
                        "dropped": dict(session.dropped),
                    },
                )
            )

    async def _agent_leaves(self) -> None:
        """A bridged transfer took the caller: ``stop`` (reason ``transferred``) to the
        agent, its connection closed; the call goes on between caller and target."""
        link = self.link
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        if link is not None:
            await link.stop(EndCause.TRANSFERRED.value)

    def _end_leg(self, cause: EndCause) -> None:
        """The caller's call is over: a bridged (or still ringing) target's leg ends too;
        the record of a bridged call says ``transferred``, ``hangup_by`` who ended it."""
        leg, handover = self._leg, self._handover
        if leg is None or handover is None:
            return
        if handover.warm and handover.state in (HandoverState.DIALING, HandoverState.CONSULTING):
            # The caller (or the agent, or shutdown) ended the call during the
            # consultation: the target's leg goes with it.
            self._transfer_event(handover.target, "cancelled", leg=leg.id, by=self.record.hangup_by)
        if handover.state is HandoverState.BRIDGED:
            self.record.reason = EndCause.TRANSFERRED.value
            self._transfer_event(
                handover.target,
                "ended",
                leg=leg.id,
                by=self.record.hangup_by,
                ended=cause.value,
            )
        if cause is not EndCause.TARGET_HANGUP:
            # The far end of this call (the callee of an outbound one too) is the target
            # leg's "caller".
            hung_up = cause in (EndCause.CALLER_HANGUP, EndCause.CALLEE_HANGUP)
            leg.end_leg(EndCause.CALLER_HANGUP if hung_up else cause)

    async def _reconnect(self) -> bool:
        """The agent's connection dropped mid-call: one new connection (any healthy
        endpoint, same connect budget) with ``resumed: true`` in ``start``."""
        link = self.link
        if link is None or self._reconnected:
            return False
        self._reconnected = True
        link.lost()
        self.server.metrics.agent_reconnects.inc()
        try:
            url = await link.connect(self.server.loop, self.server.settings.agent_connect_timeout)
            await link.start(resumed=True)
        except AgentUnreachable as exc:
            self._event("agent_reconnect_failed", detail=str(exc))
            return False
        self._event("agent_reconnected", url=url)
        return True

    async def _watch_media(self) -> None:
        """Hang up when the caller's RTP stops for ``media_timeout`` while not on hold, or
        when the call has lasted ``max_call_duration``."""
        timeout = self.server.settings.media_timeout
        limit = self.server.settings.max_call_duration
        loop = self.server.loop
        answered = self._answered_at if self._answered_at is not None else loop.time()
        while not self._ended.done():
            await asyncio.sleep(MEDIA_WATCH_SECONDS)
            now = loop.time()
            if now - answered >= limit:
                self._event("max_duration", limit_s=limit)
                self._finish(EndCause.MAX_DURATION)
                return
            media = self.media
            if media is None or self._on_hold or not self._confirmed:
                # Before the ACK, the ACK timeout (64*T1, RFC 3261 §13.3.1.4) decides:
                # a 2xx that never reached the caller is an ack_timeout, not a silence.
                continue
            last = max(media.session.last_packet_at or 0.0, self._media_since)
            if now - last >= timeout:
                self._event("media_timeout", silent_s=round(now - last, 1))
                self._finish(EndCause.MEDIA_TIMEOUT)

    async def _play_out(self) -> None:
        """Wait until queued agent audio has gone out (bounded by its duration)."""
        link = self.link
        if link is None or self.media is None:
            return
        session = link.session
        budget = session.pending_audio_ms / 1000 + PLAYOUT_GRACE
        loop = self.server.loop
        deadline = loop.time() + budget
        while session.has_audio and loop.time() < deadline and not self._ended.done():
            await asyncio.sleep(0.02)
        # One more frame period so the last packet is on the wire.
        await asyncio.sleep(0.02)

    def _on_agent_events(self, events: list[AgentEvent]) -> None:
        for event in events:
            if isinstance(event, HangupRequested):
                self._agent_hangs_up(event.after_playout)
            elif isinstance(event, AudioCleared):
                self._event("agent_clear", dropped_bytes=event.dropped_bytes)
                self._store_event("agent_clear", dropped_bytes=event.dropped_bytes)
            elif isinstance(event, TransferRequested):
                self._transfer(event.target, event.headers, event.mode)
            elif isinstance(event, TransferComplete):
                self._warm_step(complete=True)
            elif isinstance(event, TransferCancel):
                self._warm_step(complete=False)
            elif isinstance(event, SendDtmf):
                self._agent_dtmf(event)
            elif isinstance(event, Transcript):
                self._call_events.append(
                    CallEvent(
                        self.id,
                        utcnow(),
                        "transcript",
                        {"role": event.role, "text": event.text, "final": event.final},
                    )
                )
            elif isinstance(event, Metadata):
                self._call_events.append(CallEvent(self.id, utcnow(), "metadata", event.data))
            elif isinstance(event, AudioDropped):
                if self._dropped_audio == 0:
                    self._event("agent_audio_dropped", bytes=event.bytes, note="buffer cap reached")
                self._dropped_audio += event.bytes
            elif isinstance(event, UnknownMessage):
                self._event("agent_unknown_message", type=event.type)
            elif isinstance(event, InvalidMessage):
                self._event(
                    "agent_invalid_message",
                    kind=event.kind,
                    error=event.reason,
                    note="more of this kind are counted, not logged",
                )
            elif isinstance(event, LimitReached):
                self._event(
                    "agent_limit_reached",
                    kind=event.kind,
                    limit=event.detail,
                    note="the excess is dropped and counted",
                )
            elif isinstance(event, RateExceeded):
                self._event(
                    "agent_protocol_error",
                    error="message rate exceeded",
                    rate=event.rate,
                    burst=event.burst,
                )
                self._finish(EndCause.AGENT_PROTOCOL_ERROR)

    def _agent_dtmf(self, event: SendDtmf) -> None:
        """Digits for the caller, within the per-call DTMF caps."""
        media, link = self.media, self.link
        if media is None or link is None:
            return
        refused = link.session.admit_dtmf(len(event.digits), media.session.dtmf_pending)
        if refused is not None:
            if refused:
                self._on_agent_events(refused)
            return
        sent = media.session.send_dtmf(event.digits, event.duration_ms)
        self._event("agent_dtmf", digits=event.digits, sent=sent)
        self._store_event("agent_dtmf", digits=event.digits, sent=sent)

    def _agent_hangs_up(self, after_playout: bool) -> None:
        if self._agent_hangup:
            return
        self._agent_hangup = True
        self._event("agent_hangup", after_playout=after_playout)
        if after_playout:
            self._hangup_task = asyncio.ensure_future(self._hangup_after_playout())
        else:
            if self.link is not None:
                self.link.session.clear_audio()
            self._finish(EndCause.AGENT_HANGUP)

    def _transfer(self, target: str, headers: dict[str, str], mode: str = "blind") -> None:
        """A transfer, if the agent's transfer policy allows the target and headers
        (sipbridge.agent.transfers): REFER to the caller's side first (RFC 3515); when it
        is refused or fails, the target dialled through the caller's trunk and bridged
        (agent/handover.py, runtime/bridge.py). A warm one (``mode`` warm) dials at once
        and puts the agent on the target's leg (:meth:`_start_warm`)."""
        allow = self.link.agent.transfer_allow if self.link is not None else []
        refusal = transfer_refusal(target, headers, allow, self.record.to_number)
        if refusal is not None:
            reason, _, detail = refusal.partition(": ")
            self._event("transfer_refused", target=target, reason=reason, detail=detail)
            self._transfer_event(target, "refused", reason=reason, detail=detail)
            self._transfer_result("failed", None)
            return
        ua, now = self.server.ua, self.server.loop.time()
        if self._handover is not None and self._handover.active:
            self._transfer_event(target, "refused", reason="transfer_pending")
            self._transfer_result("failed", None)
            return
        if mode == "warm":
            self._start_warm(target, headers)
            return
        if not ua.refer(self.sip, target, now, headers):
            self._transfer_event(target, "failed", reason="refer_not_sent")
            self._transfer_result("failed", None)
            return
        from sipbridge.runtime.bridge import BridgeUnavailable, trunk_target

        try:
            trunk_target(self.server, self.trunk)
            can_bridge = True
        except BridgeUnavailable:
            can_bridge = False
        self._handover = Handover(target, can_bridge)
        self._transfer_headers = headers
        self.server.flush()
        self._event("transfer", target=target)
        self._transfer_event(target, "requested")

    def _start_warm(self, target: str, headers: dict[str, str]) -> None:
        """A warm transfer: no REFER; the target dialled through the caller's trunk at
        once (the same checks as the bridge), the caller put aside (silence, its audio
        goes nowhere) and the agent's media on the target's leg once it answers."""
        from sipbridge.runtime.bridge import BridgeUnavailable, trunk_target

        if self.link is not None and self.link.session.protocol == "twilio":
            # Twilio's Media Streams have no consultation leg; its stream is the caller's.
            self._transfer_event(target, "refused", method="warm", reason="warm_unsupported")
            self._transfer_result("failed", None, reason="warm_unsupported")
            return
        try:
            trunk_target(self.server, self.trunk)
            can_bridge = True
        except BridgeUnavailable:
            can_bridge = False
        handover = Handover(target, can_bridge, method=TransferMethod.WARM)
        self._handover = handover
        self._transfer_headers = headers
        self._event("transfer", target=target, mode="warm")
        self._transfer_event(target, "requested")
        self._take(handover.start_bridge())

    def _warm_step(self, *, complete: bool) -> None:
        """``transfer_complete`` / ``transfer_cancel`` from the agent."""
        handover = self._handover
        name = "transfer_complete" if complete else "transfer_cancel"
        if handover is None or not handover.warm or not handover.active:
            step = Step.NONE
        else:
            step = handover.complete() if complete else handover.cancel()
        if step is Step.NONE:
            # Nothing to complete (not consulting yet, or over) or to cancel: said in
            # the log and the record; the transfer, if any, goes on.
            state = handover.state.value if handover is not None else None
            self._event("transfer_step_ignored", message=name, state=state)
            self._store_event("transfer_step_ignored", message=name, state=state)
            return
        self._take(step)

    def _detach_caller(self) -> None:
        """The caller is put aside during a warm transfer: it hears silence (the media
        clock sends nothing of the agent's), its audio and key presses go nowhere; the
        agent's queued audio for it is dropped (its marks answered ``cleared``)."""
        assert self.media is not None
        self.media.rewire(on_audio=_discard, next_frame=_nothing, frame_ready=_not_ready)
        link = self.link
        if link is not None:
            link.on_agent_audio = None
            link.session.clear_audio()
            link.flush()

    def _back_to_caller(self) -> None:
        """The end of a warm transfer's consultation without the join: the agent's media
        is the caller's again (what it queued for the target is dropped)."""
        link, leg = self.link, self._leg
        if leg is not None:
            leg.relay()  # the leg's clock no longer takes the agent's frames
        if link is None or self.media is None:
            return
        link.session.clear_audio()
        self.media.rewire(
            on_audio=link.send_caller_audio,
            next_frame=link.next_frame,
            frame_ready=link.frame_ready,
            on_dtmf=self._caller_dtmf,
        )
        link.on_agent_audio = self.media.agent_audio

    def _transfer_event(self, target: str | None, status: str, **fields: object) -> None:
        """One step of a transfer in the call's stored events (its timeline)."""
        data: dict[str, object] = {"target": target, "status": status}
        handover = self._handover
        if handover is not None and "method" not in fields:
            data["method"] = handover.method.value
        data.update({key: value for key, value in fields.items() if value is not None})
        self._call_events.append(CallEvent(self.id, utcnow(), "transfer", data))

    def on_refer_completed(self, status: int | None) -> None:
        handover = self._handover
        if handover is None:
            return
        step = handover.refer_answered(status)
        if step is Step.REPORT_ACCEPTED:
            self._transfer_event(handover.target, "accepted", sip_code=status)
        elif step is not Step.NONE:
            reason = "refer_timeout" if status is None else "refer_rejected"
            self._transfer_event(
                handover.target, "failed", method="refer", sip_code=status, reason=reason
            )
        self._take(step)

    def on_notify(self, status: int | None, terminated: bool) -> None:
        """REFER progress (RFC 3515 §2.4.5): a final sipfrag ends the REFER."""
        handover = self._handover
        if handover is None:
            return
        step = handover.notified(status)
        if step is Step.END_CALL:
            self._transfer_event(handover.target, "completed", sip_code=status)
        elif step is not Step.NONE:
            self._transfer_event(
                handover.target, "failed", method="refer", sip_code=status, reason="refer_failed"
            )
        self._take(step)

    def _take(self, step: Step) -> None:
        """Do what the transfer's state machine says (agent/handover.py)."""
        handover = self._handover
        assert handover is not None
        if step is Step.REPORT_ACCEPTED:
            self._transfer_result("accepted", handover.sip_code)
        elif step is Step.END_CALL:
            self._event("transferred", sip_code=handover.sip_code)
            self._finish(EndCause.TRANSFERRED)  # RFC 5589 §6: the transferor hangs up
        elif step is Step.REPORT_FAILED:
            # Only the bridge reports failure here (a REFER's failure falls back to it).
            self._transfer_event(
                handover.target,
                "failed",
                method=TransferMethod.BRIDGE.value
                if handover.method is TransferMethod.REFER
                else handover.method.value,
                sip_code=handover.sip_code,
                reason=handover.reason,
            )
            if handover.warm:
                self._back_to_caller()
                self._transfer_result(
                    "failed", handover.sip_code, leg="caller", reason=handover.reason
                )
            else:
                self._transfer_result("failed", handover.sip_code)
        elif step is Step.DIAL:
            self._dial_target()
            if handover.warm and handover.state is HandoverState.DIALING:
                self._detach_caller()
                self._transfer_result("dialing", None, leg="target")
        elif step is Step.CONSULT:
            self._consult()
        elif step is Step.HAND_OVER:
            self._join_target()
        elif step is Step.RETURN:
            leg = self._leg
            if leg is not None:
                leg.end_leg(EndCause.TRANSFER_CANCELLED)  # CANCEL while it rings, else BYE
            self._back_to_caller()
            self._transfer_event(handover.target, "cancelled", leg=leg.id if leg else None)
            self._event("transfer_cancelled", target=handover.target)
            self._transfer_result("cancelled", None, leg="caller")
        elif step is Step.REPORT_ENDED:
            self._back_to_caller()
            leg = self._leg
            self._transfer_event(
                handover.target,
                "ended",
                leg=leg.id if leg else None,
                by="target",
                reason=handover.reason,
            )
            self._event("transfer_target_ended", target=handover.target)
            self._transfer_result("ended", None, leg="caller", reason=handover.reason)

    def _dial_target(self) -> None:
        """Place the target's leg through the caller's trunk (runtime/bridge.py)."""
        from sipbridge.runtime.bridge import (
            BridgeUnavailable,
            TransferLeg,
            leg_destination,
            trunk_target,
        )

        handover = self._handover
        assert handover is not None and self.link is not None and self.media is not None
        server = self.server
        try:
            trunk = trunk_target(server, self.trunk)
            request_uri, number = leg_destination(handover.target, trunk)
        except BridgeUnavailable as exc:
            self._take(handover.leg_failed(None, exc.reason))
            return
        refusal = server.refusal_for_new_call(self.trunk)
        if refusal is not None:
            self._take(handover.leg_failed(None, refusal[0]))
            return
        assert self.trunk is not None
        record = server.trunks[self.trunk]
        ours = self.record.from_number if self.record.direction == "outbound" else None
        leg = TransferLeg(
            server,
            self,
            request_uri=request_uri,
            number=number,
            from_=ours or self.record.to_number,
            agent=self.link.agent,
            trunk=self.trunk,
            credentials=(record.username, record.password),
            target=trunk,
            headers=tuple(self._transfer_headers.items()),
            sample_rate=self.media.session.agent_rate,
        )
        self._leg = leg
        server.add_call(leg)
        self._event("transfer_dialing", target=handover.target, leg=leg.id)
        self._transfer_event(handover.target, "dialing", leg=leg.id)

    def on_leg_answered(self, leg: TransferLeg) -> None:
        """The target answered: the caller's media goes to and from its leg, the agent
        leaves (``stop`` with reason ``transferred``); or, in a warm transfer, the agent's
        media goes to and from it until the agent completes or cancels."""
        handover = self._handover
        if handover is None or leg is not self._leg or self.media is None:
            return
        if self._ended.done():
            leg.end_leg(EndCause.CALLER_HANGUP)
            return
        self._take(handover.leg_answered())

    def _consult(self) -> None:
        """Warm: the agent talks to the target on its leg; the caller waits."""
        handover, leg, link = self._handover, self._leg, self.link
        assert handover is not None and leg is not None
        if link is None or leg.media is None:
            return
        leg.media.rewire(
            on_audio=link.send_caller_audio,
            next_frame=link.next_frame,
            frame_ready=link.frame_ready,
        )
        link.on_agent_audio = leg.media.agent_audio
        self._transfer_event(handover.target, "consulting", leg=leg.id, sip_code=200)
        self._event("transfer_consulting", target=handover.target, leg=leg.id)
        self._transfer_result("consulting", 200, leg="target")

    def _join_target(self) -> None:
        """The caller's media goes to and from the target's leg (through its queues,
        media/relay.py); the agent leaves."""
        handover, leg = self._handover, self._leg
        assert handover is not None and leg is not None and self.media is not None
        leg.relay()
        self.media.rewire(
            on_audio=leg.to_target.push,
            next_frame=leg.to_caller.pop,
            frame_ready=leg.to_caller.ready,
        )
        if self.link is not None:
            self.link.on_agent_audio = None
        if handover.warm:
            self._transfer_event(handover.target, "completed", leg=leg.id, sip_code=200)
            self._event("transfer_completed", target=handover.target, leg=leg.id)
            self._transfer_result("completed", 200)
        else:
            self._transfer_event(handover.target, "bridged", leg=leg.id, sip_code=200)
            self._event("transfer_bridged", target=handover.target, leg=leg.id)
        if not self._handed_over.done():
            self._handed_over.set_result(None)

    def on_leg_ended(self, leg: TransferLeg) -> None:
        """The target's leg is over: before its answer, the transfer failed (the agent is
        told and goes on with the caller); after it, the caller's call ends too."""
        handover = self._handover
        if handover is None or leg is not self._leg or self._ended.done():
            return
        if handover.state is HandoverState.DIALING:
            self._take(handover.leg_failed(leg.record.sip_code, leg.record.reason or "failed"))
        elif handover.state is HandoverState.CONSULTING:
            self._take(handover.leg_ended())
        elif handover.state is HandoverState.BRIDGED:
            self._finish(EndCause.TARGET_HANGUP)

    def _transfer_result(
        self,
        status: str,
        sip_code: int | None,
        *,
        leg: str | None = None,
        reason: str | None = None,
    ) -> None:
        self._event("transfer_result", status=status, sip_code=sip_code, leg=leg, reason=reason)
        if self.link is not None:
            self.link.session.transfer_result(status, sip_code, leg=leg, reason=reason)
            self.link.flush()

    def _on_first_audio(self) -> None:
        self.record.first_audio_at = utcnow()
        if self._answered_at is not None:
            delay = self.server.loop.time() - self._answered_at
            self.server.metrics.agent_first_audio_seconds.observe(delay)
            self._event("agent_first_audio", after_ms=round(delay * 1000))

    async def _hangup_after_playout(self) -> None:
        await self._play_out()
        self._finish(EndCause.AGENT_HANGUP)

    # -- endings -------------------------------------------------------------

    def _finish(self, cause: EndCause) -> None:
        if not self._ended.done():
            self._ended.set_result(cause)

    def _was_cancelled(self) -> bool:
        self.record.status = CallStatus.CANCELLED
        self.record.reason = "caller_cancelled"
        self.record.sip_code = 487
        self.record.hangup_by = "caller"
        self._event("cancelled")
        return False

    def _reject(
        self, status: int, reason: str, *, detail: str | None = None, retry_after: int | None = None
    ) -> None:
        if self.sip.final_status is not None:
            return
        headers = [("Reason", f'SIP ;cause={status} ;text="{reason}"')]  # RFC 3326
        if retry_after is not None:
            headers.append(("Retry-After", str(retry_after)))
        self.server.ua.reject(self.sip, status, self.server.loop.time(), headers=headers)
        self.server.flush()
        self.record.status = CallStatus.FAILED
        self.record.reason = reason
        self.record.sip_code = status
        self._event("rejected", status=status, reason=reason, detail=detail)

    def _hangup_sip(self) -> None:
        self.server.ua.hangup(self.sip, self.server.loop.time())
        self.server.flush()

    async def _teardown(self) -> None:
        if self.media is not None:
            self.media.close()
            self.media.recording = None
        if self.recording is not None:
            await self._finish_recording(self.recording)
        if self.rtp_port is not None:
            self.server.rtp_ports.release(self.rtp_port)
        if self.link is not None and not self._handed_over.done():
            await self.link.stop(self.record.reason or "ended")
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._dropped_audio:
            self._event("agent_audio_dropped_total", bytes=self._dropped_audio)
        self.record.ended_at = utcnow()
        metrics = self.server.metrics
        unread = self.link.dropped_frames if self.link is not None else 0
        if unread:
            self._event("caller_audio_not_sent", frames=unread, note="agent was not reading")
            metrics.caller_audio_dropped_frames.inc(unread)
        if self.media is not None:
            stats = self.media.stats
            quality = self.media.quality()
            for name, value in dataclasses.asdict(quality).items():
                setattr(self.record, name, value)
            metrics.rtp_packets.labels("in").inc(stats.packets_in)
            metrics.rtp_packets.labels("out").inc(stats.packets_out)
            metrics.rtp_packets_dropped.inc(stats.dropped_in)
            metrics.media_frames_skipped.inc(self.media.frames_skipped)
            if quality.packets_lost is not None:
                metrics.rtp_packets_lost.inc(quality.packets_lost)
            if quality.jitter_ms is not None:
                metrics.rtp_jitter_seconds.observe(quality.jitter_ms / 1000)
            if quality.mos is not None:
                metrics.call_mos.labels(self.record.codec or "", quality.mos_method or "").observe(
                    quality.mos
                )
            for response in self.media.session.turns.samples:
                metrics.agent_response_seconds.observe(response)
            srtp = self.media.session.srtp
            if srtp is not None:
                srtp_stats = srtp.stats
                metrics.srtp_dropped.labels("auth_failure").inc(srtp_stats.auth_failures)
                metrics.srtp_dropped.labels("replay").inc(srtp_stats.replays)
                metrics.srtp_dropped.labels("malformed").inc(srtp_stats.malformed)
            self._event(
                "media",
                packets_in=stats.packets_in,
                packets_out=stats.packets_out,
                dropped_in=stats.dropped_in,
                lost=quality.packets_lost,
                loss_pct=quality.loss_percent,
                jitter_ms=quality.jitter_ms,
                rtt_ms=quality.rtt_ms,
                concealed_ms=quality.concealed_ms,
                mos=quality.mos,
                mos_method=quality.mos_method,
                turns=quality.turns,
                response_p50_ms=quality.response_p50_ms,
                response_max_ms=quality.response_max_ms,
                srtp_auth_failures=srtp.stats.auth_failures if srtp else None,
                srtp_replays=srtp.stats.replays if srtp else None,
            )
        if self._dropped_audio:
            metrics.agent_audio_dropped_bytes.inc(self._dropped_audio)
        if self.record.status.is_open:  # ended before any answer or rejection
            self.record.status = CallStatus.FAILED
            self.record.reason = self.record.reason or "internal_error"
        if self.link is not None:
            session = self.link.session
            for kind, count in session.dropped.items():
                metrics.agent_messages_dropped.labels(kind).inc(count)
            errors = sum(session.protocol_errors.values())
            if errors:
                metrics.agent_protocol_errors.inc(errors)
        metrics.calls.labels(self.record.status.value, self.record.reason or "").inc()
        self.server.call_finished(self, self._call_events)

    def _store_event(self, kind: str, **data: object) -> None:
        """A step of the call's timeline kept with its record (the dashboard's call
        page); at most MAX_TIMELINE_EVENTS of them (an agent clearing its audio on every
        caller word must not grow the record without bound)."""
        if self._timeline_events >= MAX_TIMELINE_EVENTS:
            return
        self._timeline_events += 1
        self._call_events.append(CallEvent(self.sip.id, utcnow(), kind, dict(data)))

    def _event(self, name: str, **fields: object) -> None:
        """One log record per call event: the text ``call=<id> event=<name> key=value
        ...``, and the same as structured fields (``call_id``, ``event``, ``fields``: the
        JSON log format's keys, logs.py); at WARNING when the call failed on our side
        (ERROR for an internal error). Fields that are None are left out."""
        shown = {key.rstrip("_"): value for key, value in fields.items() if value is not None}
        reason = shown.get("reason")
        if reason == "internal_error":
            level = logging.ERROR
        elif reason in _FAILURE_REASONS:
            level = logging.WARNING
        else:
            level = logging.INFO
        if not log.isEnabledFor(level):
            return
        parts = [f"call={self.id}", f"event={name}"]
        parts.extend(f"{key}={value}" for key, value in shown.items())
        log.log(
            level,
            " ".join(parts),
            extra={"call_id": self.id, "event": name, "fields": shown},
        )


def _discard(_pcm: bytes) -> None:
    """The caller's audio while it waits for a warm transfer: heard by no one."""


def _nothing() -> bytes | None:
    return None


def _not_ready() -> bool:
    return False


def _counts(counts: dict[str, int]) -> str | None:
    """``kind:count,...`` for a log line, None when there is nothing."""
    return ",".join(f"{kind}:{count}" for kind, count in counts.items()) or None
