"""The SIP side of one outgoing test call (``sipbridge call``), sans-I/O.

:class:`ClientCall` is a thin adapter over the server's own UA core: the INVITE is placed
by :meth:`~sipbridge.sip.ua.UserAgent.dial` (sip/outbound.py: digest retry on 401/407,
CANCEL, ACK of the 2xx, RFC 3261 §13.2), and the answered dialog is the UA core's (its
BYE, the server's in-dialog requests, challenges to our BYE: §12-§15). This module only
turns the core's events into the client's (:class:`Provisional`, :class:`AuthRetry`,
:class:`Answered`, :class:`RequestReceived`, :class:`Ended`), answers the server's offers
with our description, and keeps the call's state for the runner. It never reads the clock
or opens a socket. The caller does this:

1. :meth:`ClientCall.start` with ``now``: the INVITE is queued;
2. each datagram (or message framed from the TCP/TLS connection) from the server goes to
   :meth:`receive`; :meth:`handle_timer` when :meth:`get_timer` is due;
3. after each of those, send :meth:`datagrams_to_send` to the server and act on
   :meth:`events` (print them, start media on :class:`Answered`, stop it on
   :class:`Ended`);
4. :meth:`hangup` ends the call at any time (BYE once answered, CANCEL before: Ctrl-C,
   ``--duration`` over, a ring timeout); keep feeding it until :attr:`done`.

Every request goes to the one server address (the ``--server`` of the command line acts as
an outbound proxy), whatever the dialog's Contact or Record-Route name. No session timer
of our own (RFC 4028): the INVITE does not say ``Supported: timer``, so the server
refreshes, and its refreshes are answered.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from sipbridge.sip.auth import Challenge
from sipbridge.sip.calls import (
    ByeCompleted,
    ByeReceived,
    InboundCall,
    IncomingCall,
    InfoReceived,
    NotifyReceived,
    OutboundAnswered,
    OutboundChallenged,
    OutboundEnded,
    OutboundProgress,
    ReInviteReceived,
    RequestAnswered,
    RequestRejected,
    UaEvent,
    UpdateReceived,
)
from sipbridge.sip.framing import Transport
from sipbridge.sip.message import Response
from sipbridge.sip.outbound import DialRequest, OutboundInvite
from sipbridge.sip.transaction import TIMER_B, Address
from sipbridge.sip.ua import ALLOW, UserAgent
from sipbridge.sip.uri import Uri

__all__ = [
    "ANSWER_LIMIT",
    "Answered",
    "AuthRetry",
    "CallConfig",
    "CallState",
    "ClientCall",
    "EndReason",
    "Ended",
    "Provisional",
    "RequestReceived",
]

# The longest a call can wait for its final response (the INVITE transaction's Timer B).
ANSWER_LIMIT = TIMER_B


class CallState(enum.Enum):
    """Where the call is; transitions are in :class:`ClientCall` only."""

    IDLE = "idle"  # start() not called yet
    CALLING = "calling"  # INVITE out, nothing back yet
    RINGING = "ringing"  # a provisional response came (RFC 3261 §13.2.2.1)
    CANCELLING = "cancelling"  # hang-up before the answer: CANCEL out (or due at the 1xx)
    ANSWERED = "answered"  # 2xx acknowledged: the dialog is confirmed
    HANGING_UP = "hanging_up"  # our BYE is out
    ENDED = "ended"


class EndReason(enum.Enum):
    """Why the call ended, for the report and the exit code."""

    HANGUP = "hangup"  # we ended an answered call (our BYE)
    REMOTE_HANGUP = "remote_hangup"  # the server sent BYE
    REJECTED = "rejected"  # a final non-2xx response (``status``)
    AUTH_FAILED = "auth_failed"  # 401/407 and no credentials, or ours were refused
    CANCELLED = "cancelled"  # we hung up before the answer (CANCEL, then 487)
    TIMEOUT = "timeout"  # no final response to the INVITE (§17.1.1.2 Timer B, §9.1)


@dataclass(frozen=True, slots=True)
class CallConfig:
    """One call: where to, from whom, over which transport, with which offer.

    ``server`` is where every request goes (a ``StreamAddress`` for TCP/TLS carries the
    transport); ``local_host``/``local_port`` are our address as the server reaches it
    (Via, Contact); ``sdp`` is the offer (RFC 3264 §5)."""

    number: str
    server_host: str
    server_port: int
    server: Address
    transport: Transport
    local_host: str
    local_port: int
    sdp: bytes
    from_user: str = "sipbridge"
    username: str | None = None
    password: str | None = None
    user_agent: str = "sipbridge-call"


@dataclass(frozen=True, slots=True)
class Provisional:
    """A 1xx response to the INVITE (100 Trying, 180 Ringing, 183 Session Progress)."""

    status: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class AuthRetry:
    """The server challenged the INVITE; it is sent again with our credentials."""

    status: int
    realm: str
    algorithm: str
    at: float


@dataclass(frozen=True, slots=True)
class Answered:
    """The 2xx came and was acknowledged: ``sdp`` is the server's answer (RFC 3264)."""

    status: int
    reason: str
    sdp: bytes
    at: float


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request of the server in our dialog, answered already (``status``)."""

    method: str
    status: int
    at: float


@dataclass(frozen=True, slots=True)
class Ended:
    """The call is over. For :attr:`EndReason.REJECTED` (and AUTH_FAILED, CANCELLED)
    ``status``/``reason`` are the final response's; ``headers`` keeps its Reason,
    Retry-After and Warning values (RFC 3326, §20.33, §20.43) for the explanation.
    ``bye_status`` is the answer to our BYE (None: none came, or no BYE was sent)."""

    why: EndReason
    at: float
    status: int | None = None
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    bye_status: int | None = None


Event = Provisional | AuthRetry | Answered | RequestReceived | Ended

# The final response's headers an explanation may quote.
_KEPT = ("Reason", "Retry-After", "Warning", "Min-SE", "Unsupported")


def _token() -> str:
    return secrets.token_hex(8)


class ClientCall:
    """One outgoing call; see the module docstring for what the caller must do."""

    def __init__(self, config: CallConfig, *, new_token: Callable[[], str] = _token) -> None:
        self.config = config
        self.state = CallState.IDLE
        self.call_id = f"{new_token()}{new_token()}"
        self._ua = UserAgent(
            config.local_host,
            config.local_port,
            new_token=new_token,
            tls_port=config.local_port,  # our Via and Contact over TLS
            session_expires=None,
        )
        self._events: list[Event] = []
        self._attempt: OutboundInvite | None = None
        self._call: InboundCall | None = None  # the dialog, once answered
        self._crossed: Ended | None = None  # a 2xx after our CANCEL: ends when BYE did
        self._answered_at: float | None = None

    # ---------------------------------------------------------------- driving

    @property
    def done(self) -> bool:
        """Ended, and nothing of ours is still waiting for an answer."""
        return self.state is CallState.ENDED

    @property
    def answered_at(self) -> float | None:
        return self._answered_at

    @property
    def cancel_sent(self) -> bool:
        """We gave up before the answer (CANCEL asked for, RFC 3261 §9.1)."""
        return self._attempt is not None and self._attempt.cancel_reason is not None

    @property
    def challenged(self) -> Challenge | None:
        """The last challenge the server sent (its realm names the trunk's), if any."""
        return self._attempt.challenged if self._attempt is not None else None

    def start(self, now: float) -> None:
        if self.state is not CallState.IDLE:
            raise RuntimeError("the call was started already")
        self.state = CallState.CALLING
        self._attempt = self._ua.dial(self._dial_request(), self.call_id, now)
        self._pump(now)

    def hangup(self, now: float) -> None:
        """End the call: BYE when answered, CANCEL while ringing, CANCEL at the first
        provisional response when none came yet (RFC 3261 §9.1)."""
        if self.state is CallState.ANSWERED and self._call is not None:
            self.state = CallState.HANGING_UP
            self._ua.hangup(self._call, now)
        elif self.state in (CallState.CALLING, CallState.RINGING) and self._attempt is not None:
            self.state = CallState.CANCELLING
            self._ua.cancel_dial(self._attempt, now)
        self._pump(now)

    def get_timer(self) -> float | None:
        return self._ua.get_timer()

    def handle_timer(self, now: float) -> None:
        self._ua.handle_timer(now)
        self._pump(now)

    def receive(self, data: bytes, now: float) -> None:
        """One message from the server (keep-alive CRLFs are ignored; what does not parse
        is dropped: RFC 3261 §18.1.2 leaves a broken response unanswered)."""
        self._ua.receive_datagram(data, self.config.server, now)
        self._pump(now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        server = self.config.server
        return [(data, server) for data, _ in self._ua.datagrams_to_send()]

    def events(self) -> list[Event]:
        out = self._events[:]
        self._events.clear()
        return out

    # ---------------------------------------------------------------- the core's events

    def _pump(self, now: float) -> None:
        for event in self._ua.events():
            self._on(event, now)
        crossed = self._crossed
        attempt = self._attempt
        if crossed is not None and attempt is not None and not attempt.byes_pending:
            # RFC 3261 §15: the dialog of the 2xx that crossed our CANCEL is over.
            self._crossed = None
            self._end(_with_bye(crossed, attempt.bye_status))

    def _on(self, event: UaEvent, now: float) -> None:
        if isinstance(event, OutboundProgress):
            self._events.append(Provisional(event.status, event.reason, now))
            if self.state is CallState.CALLING:
                self.state = CallState.RINGING
        elif isinstance(event, OutboundChallenged):
            challenge = event.challenge
            self._events.append(AuthRetry(event.status, challenge.realm, challenge.algorithm, now))
        elif isinstance(event, OutboundAnswered):
            answer = event.attempt.answer
            assert answer is not None
            self._call = event.call
            self._answered_at = now
            self.state = CallState.ANSWERED
            self._events.append(Answered(answer.status, answer.reason, event.answer, now))
        elif isinstance(event, OutboundEnded):
            self._unanswered(event, now)
        elif isinstance(event, ByeCompleted):
            self._end(Ended(EndReason.HANGUP, now, bye_status=event.status))
        elif isinstance(event, ByeReceived):
            self._events.append(RequestReceived("BYE", 200, now))
            self._end(Ended(EndReason.REMOTE_HANGUP, now))
        elif isinstance(event, ReInviteReceived):
            # A session refresh (RFC 4028) or a re-offer: our description again.
            self._ua.answer_reinvite(event.call, self.config.sdp, now)
            self._events.append(RequestReceived("INVITE", 200, now))
        elif isinstance(event, UpdateReceived):
            self._ua.answer_update(event.call, self.config.sdp, now)  # RFC 3311 §5.2
            self._events.append(RequestReceived("UPDATE", 200, now))
        elif isinstance(event, InfoReceived | NotifyReceived):
            self._events.append(RequestReceived(event.request.method, 200, now))
        elif isinstance(event, RequestAnswered):
            self._events.append(RequestReceived(event.request.method, event.status, now))
        elif isinstance(event, RequestRejected):
            request = event.request
            if request is not None and event.status and request.call_id == self.call_id:
                self._events.append(RequestReceived(request.method, event.status, now))
        elif isinstance(event, IncomingCall):
            # A new call to us: we take none, only our one dialog exists (RFC 3261 §12.2.2).
            self._ua.reject(event.call, 481, now)

    def _unanswered(self, event: OutboundEnded, now: float) -> None:
        """The INVITE ended without an answer we keep."""
        response = event.response
        if event.reason == "answered_after_cancel" and response is not None:
            # The 2xx crossed our CANCEL (§9.1): ACKed and ended with BYE by the core.
            self._crossed = Ended(EndReason.CANCELLED, now, response.status, response.reason)
            return
        if response is None:
            self._end(Ended(EndReason.TIMEOUT, now))  # Timer B, or no 487 after our CANCEL
        elif event.reason == "auth_failed":
            self._end(_final(EndReason.AUTH_FAILED, response, now))
        elif self.state is CallState.CANCELLING and response.status == 487:
            self._end(_final(EndReason.CANCELLED, response, now))
        else:
            self._end(_final(EndReason.REJECTED, response, now))

    def _end(self, ended: Ended) -> None:
        if self.state is not CallState.ENDED:
            self.state = CallState.ENDED
            self._events.append(ended)

    # ---------------------------------------------------------------- the INVITE

    def _dial_request(self) -> DialRequest:
        """The INVITE (RFC 3261 §8.1.1, §13.2.1): to the number at the server, our Contact
        on the transport in use, credentials for a challenge."""
        config = self.config
        target = Uri("sip", config.number, None, config.server_host, config.server_port)
        contact = Uri("sip", config.from_user, None, config.local_host, config.local_port)
        if config.transport is not Transport.UDP:
            target.params["transport"] = contact.params["transport"] = (
                config.transport.value.lower()
            )
        return DialRequest(
            call_id=self.call_id,
            target=str(target),
            from_uri=str(Uri("sip", config.from_user, None, config.local_host)),
            destination=config.server,
            contact=str(contact),
            via_host=config.local_host,
            via_port=config.local_port,
            sdp=config.sdp,
            # The runner cancels first (CallOptions.answer_timeout); this is the backstop.
            ring_timeout=ANSWER_LIMIT,
            username=config.username,
            password=config.password,
            headers=(("User-Agent", config.user_agent),),
            allow=ALLOW,
            supported="",
        )


def _final(why: EndReason, response: Response, now: float) -> Ended:
    kept = {name: value for name in _KEPT if (value := response.headers.get(name)) is not None}
    return Ended(why, now, response.status, response.reason, kept)


def _with_bye(ended: Ended, status: int | None) -> Ended:
    return Ended(ended.why, ended.at, ended.status, ended.reason, ended.headers, status)
