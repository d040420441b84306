"""The calls the UA core tracks and the events it reports to the call layer (sans-I/O).

:class:`InboundCall` is one INVITE we received and the dialog it leads to (or, with
``outbound`` set, the dialog of an INVITE we sent, once answered: from then on both
directions are handled alike; the INVITE itself is sip/outbound.py's); the event
dataclasses are what :meth:`sipbridge.sip.ua.UserAgent.events` returns. Kept apart from
the UA's state machines so the runtime and tests can name them without the core.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipbridge.sip.dialog import Dialog
from sipbridge.sip.framing import Transport, transport_of
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request, Response
from sipbridge.sip.reliable import ReliableProvisional
from sipbridge.sip.session_timer import SessionTimer, TimerAnswer
from sipbridge.sip.transaction import (
    Address,
    InviteServerTransaction,
    NonInviteServerTransaction,
)

if TYPE_CHECKING:
    from sipbridge.sip.auth import Challenge
    from sipbridge.sip.outbound import OutboundInvite, OutboundOutcome

__all__ = [
    "AckTimeout",
    "ByeCompleted",
    "ByeReceived",
    "CallCancelled",
    "CallConfirmed",
    "CallState",
    "InboundCall",
    "IncomingCall",
    "InfoReceived",
    "NotifyReceived",
    "OutboundAnswered",
    "OutboundChallenged",
    "OutboundEnded",
    "OutboundProgress",
    "ReInviteReceived",
    "ReferCompleted",
    "RefreshAnswered",
    "RequestAnswered",
    "RequestRejected",
    "SessionExpired",
    "UaEvent",
    "UpdateReceived",
    "sipfrag_status",
]


class CallState(enum.Enum):
    OFFERED = "offered"  # INVITE received, no final response yet
    ANSWERED = "answered"  # 2xx sent, ACK not yet received
    CONFIRMED = "confirmed"  # ACK received
    ENDING = "ending"  # our BYE is out
    ENDED = "ended"


@dataclass(eq=False)
class InboundCall:
    """One INVITE we received and the dialog it leads to; or, ``outbound``, the dialog of
    an INVITE we sent, from its 2xx on (``invite`` is our INVITE, ``source`` the address
    it went to, ``transaction`` None: the INVITE's client transaction stays with
    :class:`~sipbridge.sip.outbound.OutboundInvite`, which ACKs 2xx retransmissions)."""

    id: str
    invite: Request
    source: Address
    local_tag: str
    transaction: InviteServerTransaction | None
    state: CallState = CallState.OFFERED
    dialog: Dialog | None = None
    local_sdp: bytes = b""
    final_status: int | None = None
    reinvite: InviteServerTransaction | None = None  # the latest in-dialog INVITE
    trunk: str | None = None  # the trunk the access policy admitted it from
    # Messages of this call admitted past its source's rate limit (sip/guard.py).
    exempt_messages: int = 0
    # hangup() came while our 2xx still waited for its ACK: the BYE goes out with the
    # ACK or at the ACK timeout (RFC 3261 §13.3.1.4, §15).
    hangup_pending: bool = False
    # RFC 4028 session timer: the running one (None: none, or the call is over) and the
    # one the pending INVITE / re-INVITE / UPDATE's 2xx will start.
    timer: SessionTimer | None = None
    pending_timer: TimerAnswer | None = None
    update: NonInviteServerTransaction | None = None  # an UPDATE with an offer (RFC 3311)
    pending_update_timer: TimerAnswer | None = None
    # Our re-INVITE or refresh UPDATE is out (RFC 3261 §14.1: no second one meanwhile;
    # a peer's re-INVITE meanwhile is glare, 491).
    refresh_pending: str | None = None
    # The INVITE's Allow names UPDATE: our refreshes go as UPDATE (RFC 4028 §7.1).
    peer_allows_update: bool = False
    # The INVITE came through a trusted proxy (``source``) from this address, its
    # X-Sipbridge-Source (sip/proxy.py); None: straight from ``source``.
    relayed_from: Address | None = None
    # RFC 3262: our 180 sent reliably (the caller required 100rel), kept to match a PRACK
    # (retransmitted until the PRACK or the final response), and the response itself for
    # those retransmissions.
    reliable: ReliableProvisional | None = None
    provisional: Response | None = None
    outbound: bool = False
    # (username, password) answering a far end that challenges our in-dialog requests
    # (BYE, refreshes, REFER: RFC 3261 §22.2); an outbound call's trunk credentials.
    credentials: tuple[str, str] | None = None

    @property
    def origin(self) -> Address:
        """Where the INVITE really came from: the trunk or caller the access policy, the
        guard, the record and the logs see (``source`` is the hop our answers go to)."""
        return self.relayed_from or self.source

    @property
    def transport(self) -> Transport:
        """The INVITE's transport: a TCP/TLS call's ``source`` is its connection's
        :class:`~sipbridge.sip.framing.StreamAddress` (RFC 3261 §18.2.2)."""
        return transport_of(self.source)


@dataclass(frozen=True)
class IncomingCall:
    call: InboundCall


@dataclass(frozen=True)
class CallCancelled:
    """The caller sent CANCEL before our final answer; 487 already went out."""

    call: InboundCall


@dataclass(frozen=True)
class CallConfirmed:
    """The ACK for our 2xx arrived; ``request`` is that ACK (its body is the caller's SDP
    answer when our 2xx carried the offer, RFC 3261 §13.2.1)."""

    call: InboundCall
    request: Request | None = None


@dataclass(frozen=True)
class AckTimeout:
    """No ACK for our 2xx within 64*T1 (RFC 3261 §13.3.1.4): the call must end with BYE."""

    call: InboundCall


@dataclass(frozen=True)
class ByeReceived:
    call: InboundCall


@dataclass(frozen=True)
class ByeCompleted:
    """Our BYE got its final response (``status``), or none (``status`` is None)."""

    call: InboundCall
    status: int | None


@dataclass(frozen=True)
class ReInviteReceived:
    """An in-dialog INVITE (RFC 3261 §14.2). The call layer must answer it with
    :meth:`UserAgent.answer_reinvite` or :meth:`UserAgent.reject_reinvite`."""

    call: InboundCall
    request: Request


@dataclass(frozen=True)
class UpdateReceived:
    """An in-dialog UPDATE with an SDP offer (RFC 3311 §5.2). The call layer must answer it
    with :meth:`UserAgent.answer_update` or :meth:`UserAgent.reject_update`, at once.
    (An UPDATE without a body, a session refresh, is answered by the UA core.)"""

    call: InboundCall
    request: Request


@dataclass(frozen=True)
class RefreshAnswered:
    """The 2xx to our refresh re-INVITE carried ``body``, the peer's answer to our offer
    (RFC 3264 §8): the call layer applies it (a new address, the direction). Already ACKed."""

    call: InboundCall
    body: bytes


@dataclass(frozen=True)
class SessionExpired:
    """The session timer ran out (RFC 4028 §10): the peer's refresh never came
    (``session_expired``), or our refresh failed for good (``session_refresh_failed``:
    timeout, 408 or 481). The call layer must end the call with BYE."""

    call: InboundCall
    reason: str


@dataclass(frozen=True)
class InfoReceived:
    """An in-dialog INFO (RFC 6086), already answered 200; DTMF relay travels this way."""

    call: InboundCall
    request: Request


@dataclass(frozen=True)
class RequestAnswered:
    """An in-dialog request the UA core answered by itself (``status``): OPTIONS, or an
    UPDATE without a body refreshing the session (RFC 4028 §7.4). Nothing to do; for
    whoever shows the call's progress."""

    call: InboundCall
    request: Request
    status: int


@dataclass(frozen=True)
class ReferCompleted:
    """Our REFER (RFC 3515) got its final response ``status``, or none (``status`` None)."""

    call: InboundCall
    status: int | None


@dataclass(frozen=True)
class NotifyReceived:
    """An in-dialog NOTIFY, already answered 200. For a REFER's implicit subscription
    (RFC 3515 §2.4.4) ``sipfrag_status`` is the status line of the body."""

    call: InboundCall
    request: Request

    @property
    def sipfrag_status(self) -> int | None:
        return sipfrag_status(self.request.body)

    @property
    def terminated(self) -> bool:
        state = self.request.headers.get("Subscription-State") or ""
        return state.split(";")[0].strip().lower() == "terminated"


@dataclass(frozen=True)
class OutboundProgress:
    """A provisional response to an outbound call's INVITE (100, 180, 183...) with its
    reason phrase; ``early_media``: it carried an SDP answer (RFC 3261 §13.2.1: early
    media, played to nobody)."""

    attempt: OutboundInvite
    status: int
    early_media: bool
    reason: str = ""


@dataclass(frozen=True)
class OutboundChallenged:
    """A 401/407 to an outbound call's INVITE (``status``) was answered: the INVITE went
    out again with credentials for ``challenge`` (RFC 3261 §22.2). A challenge that is not
    answered ends the call instead (:class:`OutboundEnded`, ``auth_failed``)."""

    attempt: OutboundInvite
    status: int
    challenge: Challenge


@dataclass(frozen=True)
class OutboundAnswered:
    """An outbound call was answered: its 2xx is ACKed and ``call`` is the dialog, handled
    from now on like an answered inbound call's (BYE, re-INVITE, UPDATE, session timer).
    ``answer`` is the callee's SDP answer: the 2xx's body, else the early one of a 183
    (b"" when neither had one: the call layer hangs up)."""

    attempt: OutboundInvite
    call: InboundCall
    answer: bytes


@dataclass(frozen=True)
class OutboundEnded:
    """An outbound call ended unanswered: ``outcome`` (busy, no answer, rejected, failed),
    the final status (None: no final response) and a reason word for the record."""

    attempt: OutboundInvite
    outcome: OutboundOutcome
    status: int | None
    reason: str
    detail: str = ""  # more for the operator (why a connection failed)
    # The final response that ended it (its phrase, Reason, Retry-After, Warning...);
    # None when none did (a timeout, a failed connection).
    response: Response | None = None


@dataclass(frozen=True)
class RequestRejected:
    """A request answered with an error by the UA core itself (or dropped: status None).

    ``request`` is the parsed request when it parsed (so a rejected INVITE can still
    get a call record). ``access`` is True when the access policy refused or challenged
    it (no call record for those: they are what scanners send); ``trunk`` is the trunk
    a request refused after admission came from. ``source`` is the transport source (a
    trusted proxy, for a relayed request: then ``relayed_from`` is the original source,
    :attr:`origin` either way); ``detail`` says more about ``reason`` for the log.
    """

    source: Address
    method: str | None
    status: int | None
    reason: str
    request: Request | None = None
    access: bool = False
    trunk: str | None = None
    # A request that did not parse: the header fields that did (its Call-ID, From, To),
    # so a malformed INVITE still gets a call record.
    headers: Headers | None = None
    relayed_from: Address | None = None
    detail: str | None = None

    @property
    def origin(self) -> Address:
        """Where the request really came from (see :attr:`InboundCall.origin`)."""
        return self.relayed_from or self.source


UaEvent = (
    IncomingCall
    | CallCancelled
    | CallConfirmed
    | AckTimeout
    | ByeReceived
    | ByeCompleted
    | ReInviteReceived
    | UpdateReceived
    | RefreshAnswered
    | SessionExpired
    | InfoReceived
    | ReferCompleted
    | NotifyReceived
    | RequestAnswered
    | RequestRejected
    | OutboundProgress
    | OutboundChallenged
    | OutboundAnswered
    | OutboundEnded
)


def sipfrag_status(body: bytes) -> int | None:
    """The status code of a message/sipfrag body's status line (RFC 3420), e.g.
    ``SIP/2.0 180 Ringing`` → 180; None when the body is not a response fragment."""
    line = body.split(b"\n", 1)[0].strip()
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].upper().startswith(b"SIP/") or not parts[1].isdigit():
        return None
    status = int(parts[1])
    return status if 100 <= status <= 699 else None
