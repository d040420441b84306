"""The SIP side of one outgoing test call (``sipbridge call``), sans-I/O.

:class:`ClientCall` is a UAC for one INVITE (RFC 3261 §13.2) and the dialog it creates:
the INVITE with our SDP offer, a digest retry on 401/407 (§22.2), provisional responses,
ACK of the 2xx (§13.2.2.4), BYE (§15.1), CANCEL before the answer (§9.1), and the
requests the server sends in the dialog (its BYE, session refreshes). It never reads the
clock or opens a socket. The caller does this:

1. :meth:`ClientCall.start` with ``now``: the INVITE is queued;
2. each datagram (or message framed from the TCP/TLS connection) from the server goes to
   :meth:`receive`; :meth:`handle_timer` when :meth:`get_timer` is due;
3. after each of those, send :meth:`datagrams_to_send` to the server and act on
   :meth:`events` (print them, start media on :class:`Answered`, stop it on
   :class:`Ended`);
4. :meth:`hangup` ends the call at any time (BYE once answered, CANCEL before: Ctrl-C,
   ``--duration`` over, a ring timeout); keep feeding it until :attr:`done`.

Every request goes to the one server address (the ``--server`` of the command line acts as
an outbound proxy), whatever the dialog's Contact or Record-Route name.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from sipbridge.sip.auth import Challenge, authorization, pick_challenge
from sipbridge.sip.dialog import Dialog, DialogState
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.framing import Transport
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import NameAddr, Request, Response, make_response, parse_message
from sipbridge.sip.transaction import (
    TIMER_B,
    Address,
    InviteClientState,
    InviteClientTransaction,
    NonInviteClientTransaction,
    TransactionOutcome,
)
from sipbridge.sip.uri import Uri

__all__ = [
    "ALLOW",
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

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
MAX_CHALLENGES = 2  # answered per call: one, and one more when the nonce was stale


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
    TIMEOUT = "timeout"  # no final response to the INVITE within Timer B (§17.1.1.2)


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


def _token() -> str:
    return secrets.token_hex(8)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ClientCall:
    """One outgoing call; see the module docstring for what the caller must do."""

    def __init__(
        self, config: CallConfig, *, new_token: Callable[[], str] = _token, cseq: int = 1
    ) -> None:
        self.config = config
        self.state = CallState.IDLE
        self._new_token = new_token
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self.call_id = f"{new_token()}{new_token()}"
        self.from_tag = new_token()
        self._cseq = cseq
        self.invite: Request | None = None
        self._invite_tx: InviteClientTransaction | None = None
        self._cancel_tx: NonInviteClientTransaction | None = None
        self._bye_tx: NonInviteClientTransaction | None = None
        self._challenges = 0
        self._challenge: Challenge | None = None
        self._cancel_due = False  # hang-up in Calling: CANCEL waits for a 1xx (§9.1)
        self._after_answer: Ended | None = None  # a 2xx after our CANCEL: ACK, then BYE
        self.dialog: Dialog | None = None
        self._ack: bytes = b""  # our ACK of the 2xx, repeated for each retransmission
        self._ack_cseq = 0
        self._answered_at: float | None = None

    # ---------------------------------------------------------------- driving

    @property
    def done(self) -> bool:
        """Ended, and nothing of ours is still waiting for an answer."""
        return self.state is CallState.ENDED and self._bye_tx is None

    def start(self, now: float) -> None:
        if self.state is not CallState.IDLE:
            raise RuntimeError("the call was started already")
        self.state = CallState.CALLING
        self._send_invite(now)

    def hangup(self, now: float) -> None:
        """End the call: BYE when answered, CANCEL while ringing, CANCEL at the first
        provisional response when none came yet (RFC 3261 §9.1)."""
        state = self.state
        if state is CallState.ANSWERED:
            self._send_bye(now)
        elif state is CallState.RINGING:
            self.state = CallState.CANCELLING
            self._send_cancel(now)
        elif state is CallState.CALLING:
            self.state = CallState.CANCELLING
            self._cancel_due = True

    def get_timer(self) -> float | None:
        deadlines = [
            tx.deadline
            for tx in (self._invite_tx, self._cancel_tx, self._bye_tx)
            if tx is not None and tx.deadline is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        invite = self._invite_tx
        if invite is not None and invite.deadline is not None and invite.deadline <= now:
            invite.on_timer(now)
            if invite.terminated:
                self._invite_tx = None
                if invite.outcome is TransactionOutcome.TIMEOUT and self.state in (
                    CallState.CALLING,
                    CallState.RINGING,
                    CallState.CANCELLING,
                ):
                    self._end(Ended(EndReason.TIMEOUT, now))
        for name in ("_cancel_tx", "_bye_tx"):
            tx: NonInviteClientTransaction | None = getattr(self, name)
            if tx is not None and tx.deadline is not None and tx.deadline <= now:
                tx.on_timer(now)
                if tx.terminated:
                    setattr(self, name, None)
                    if name == "_bye_tx" and self.state is CallState.HANGING_UP:
                        # §15.1.1: no answer to the BYE within Timer F: the session is over.
                        self._end(Ended(EndReason.HANGUP, now))

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out = self._outbox[:]
        self._outbox.clear()  # the transactions hold this very list
        return out

    def events(self) -> list[Event]:
        out = self._events[:]
        self._events.clear()
        return out

    # ---------------------------------------------------------------- input

    def receive(self, data: bytes, now: float) -> None:
        """One message from the server (keep-alive CRLFs are ignored; what does not parse
        is dropped: RFC 3261 §18.1.2 leaves a broken response unanswered)."""
        if not data.strip():
            return
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, Response):
            self._response(message, now)
        else:
            self._request(message, now)

    def _response(self, response: Response, now: float) -> None:
        method = response.cseq.method
        branch = response.vias[0].branch
        invite = self._invite_tx
        if method == "INVITE" and invite is not None and branch == invite.request.vias[0].branch:
            self._invite_response(invite, response, now)
        elif method == "INVITE" and 200 <= response.status < 300 and self._ack:
            # A 2xx retransmitted after its transaction ended (Timer M): ACK it again.
            self._outbox.append((self._ack, self.config.server))
        elif method == "CANCEL" and self._cancel_tx is not None:
            self._cancel_tx.receive_response(response, now)
        elif (
            method == "BYE"
            and self._bye_tx is not None
            and self._bye_tx.request.vias[0].branch == branch
            and self._bye_tx.receive_response(response, now)
        ):
            self._bye_tx = None  # a retransmitted final response is dropped unmatched
            if self.state is CallState.HANGING_UP:
                ended = self._after_answer or Ended(EndReason.HANGUP, now)
                self._end(_with_bye(ended, response.status))

    def _invite_response(self, tx: InviteClientTransaction, response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            if tx.state in (InviteClientState.CALLING, InviteClientState.PROCEEDING):
                tx.receive_response(response, now)
                self._events.append(Provisional(status, response.reason, now))
                if self.state is CallState.CALLING:
                    self.state = CallState.RINGING
                if self._cancel_due:
                    self._cancel_due = False
                    self._send_cancel(now)
            return
        if not tx.receive_response(response, now):
            return  # a retransmitted non-2xx, ACKed by the transaction
        if status < 300:
            self._answered(response, now)
            return
        # A non-2xx final response: the transaction sent its ACK (§17.1.1.3).
        if status in (401, 407) and self.state is not CallState.CANCELLING:
            if self._retry_with_credentials(response, now):
                return
            self._end(_final(EndReason.AUTH_FAILED, response, now))
            return
        if self.state is CallState.CANCELLING and status == 487:
            self._end(_final(EndReason.CANCELLED, response, now))
            return
        self._end(_final(EndReason.REJECTED, response, now))

    def _answered(self, response: Response, now: float) -> None:
        invite = self.invite
        assert invite is not None
        if self.dialog is not None:
            # A retransmitted 2xx (ours was lost): the same ACK again (§13.2.2.4).
            self._outbox.append((self._ack, self.config.server))
            return
        contacts = response.headers.get_all("Contact")
        try:
            target = NameAddr.parse(contacts[0]).uri if contacts else invite.uri
            routes = [NameAddr.parse(v) for v in response.headers.get_all("Record-Route")]
        except SipParseError:
            target, routes = invite.uri, []
        # RFC 3261 §12.1.2: the UAC's route set is the Record-Route list reversed.
        routes.reverse()
        self.dialog = Dialog(
            call_id=self.call_id,
            local_tag=self.from_tag,
            remote_tag=response.to.tag or "",
            local_party=invite.from_,
            remote_party=response.to,
            remote_target=target,
            route_set=routes,
            local_seq=invite.cseq.seq,
            remote_seq=0,
            state=DialogState.CONFIRMED,
        )
        ack, _ = self.dialog.create_ack(invite.cseq.seq, self._via())
        ack.headers.add("Content-Length", "0")
        self._ack = ack.serialize()
        self._outbox.append((self._ack, self.config.server))
        self._answered_at = now
        if self.state is CallState.CANCELLING:
            # The 2xx crossed our CANCEL (§9.1): the call is up, so it ends with a BYE.
            self._after_answer = Ended(EndReason.CANCELLED, now, response.status, response.reason)
            self._send_bye(now)
            return
        self.state = CallState.ANSWERED
        self._events.append(Answered(response.status, response.reason, response.body, now))

    def _request(self, request: Request, now: float) -> None:
        """A request of the server: in our dialog (BYE, a session refresh, INFO...), or
        not (481, RFC 3261 §12.2.2)."""
        if request.method == "ACK":
            return  # for our 2xx to a re-INVITE: nothing to do
        dialog = self.dialog
        in_dialog = (
            dialog is not None
            and request.call_id == self.call_id
            and request.to.tag == self.from_tag
            and request.from_.tag == dialog.remote_tag
        )
        if not in_dialog or dialog is None:
            self._reply(request, 481)
            return
        if not dialog.accept_remote_cseq(request.cseq.seq):
            self._reply(request, 500)  # §12.2.2: out of order
            return
        method = request.method
        if method == "BYE":
            self._reply(request, 200)
            self._events.append(RequestReceived(method, 200, now))
            if self.state in (CallState.ANSWERED, CallState.HANGING_UP):
                self._bye_tx = None
                self._end(Ended(EndReason.REMOTE_HANGUP, now))
        elif method == "INVITE":
            # A session refresh (RFC 4028) or a re-offer: our description again.
            self._reply(request, 200, body=self.config.sdp)
            self._events.append(RequestReceived(method, 200, now))
        elif method in ("UPDATE", "OPTIONS", "INFO", "NOTIFY"):
            self._reply(request, 200)
            self._events.append(RequestReceived(method, 200, now))
        else:
            self._reply(request, 501)
            self._events.append(RequestReceived(method, 501, now))

    # ---------------------------------------------------------------- outcomes

    def _end(self, ended: Ended) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self._cancel_due = False
        self._events.append(ended)

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        """RFC 3261 §22.2: the INVITE again, with a new branch and CSeq and our answer to
        the challenge; False when there is nothing to answer with, or the server refused
        the credentials we sent (a new challenge that does not say stale=true)."""
        config = self.config
        challenge = pick_challenge(
            response.headers.get_lines("WWW-Authenticate"),
            response.headers.get_lines("Proxy-Authenticate"),
        )
        if challenge is None or config.username is None or config.password is None:
            self._challenge = challenge
            return False
        refused = self._challenge is not None and not challenge.stale
        self._challenges += 1
        if refused or self._challenges > MAX_CHALLENGES:
            return False
        self._challenge = challenge
        self._events.append(AuthRetry(response.status, challenge.realm, challenge.algorithm, now))
        self._send_invite(now)
        return True

    @property
    def challenged(self) -> Challenge | None:
        """The last challenge the server sent (its realm names the trunk's), if any."""
        return self._challenge

    # ---------------------------------------------------------------- requests

    def _via(self) -> str:
        config = self.config
        return (
            f"SIP/2.0/{config.transport.value} {_host(config.local_host)}:{config.local_port}"
            f";branch=z9hG4bK{self._new_token()};rport"
        )

    def _request_uri(self) -> Uri:
        config = self.config
        uri = Uri("sip", config.number, None, config.server_host, config.server_port)
        if config.transport is not Transport.UDP:
            uri.params["transport"] = config.transport.value.lower()
        return uri

    def _contact(self) -> str:
        config = self.config
        uri = Uri("sip", config.from_user, None, config.local_host, config.local_port)
        if config.transport is not Transport.UDP:
            uri.params["transport"] = config.transport.value.lower()
        return f"<{uri}>"

    def _send_invite(self, now: float) -> None:
        """The INVITE (RFC 3261 §8.1.1, §13.2.1): a new branch and CSeq each time;
        Call-ID and From tag are the call's, credentials when challenged."""
        config = self.config
        uri = self._request_uri()
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        from_uri = Uri("sip", config.from_user, None, config.local_host)
        headers.add("From", f"<{from_uri}>;tag={self.from_tag}")
        to_uri = Uri("sip", config.number, None, config.server_host)
        headers.add("To", f"<{to_uri}>")
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self._cseq} INVITE")
        headers.add("Contact", self._contact())
        headers.add("Allow", ALLOW)
        headers.add("User-Agent", config.user_agent)
        challenge = self._challenge
        if challenge is not None and config.username is not None and config.password is not None:
            headers.add(
                challenge.answer_header,
                authorization(
                    challenge,
                    username=config.username,
                    password=config.password,
                    method="INVITE",
                    uri=str(uri),
                    nc=1,  # a new nonce each challenge: its first use
                    cnonce=self._new_token(),
                ),
            )
        headers.add("Content-Type", "application/sdp")
        headers.add("Content-Length", str(len(config.sdp)))
        self._cseq += 1
        request = Request("INVITE", uri, headers, config.sdp)
        self.invite = request
        self._invite_tx = InviteClientTransaction(request, config.server, self._outbox, now)

    def _send_cancel(self, now: float) -> None:
        """RFC 3261 §9.1: the INVITE's Request-URI, top Via (same branch), Call-ID, From,
        To and CSeq number, with the method CANCEL."""
        invite = self.invite
        assert invite is not None
        headers = Headers()
        headers.add("Via", str(invite.vias[0]))
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        headers.add("User-Agent", self.config.user_agent)
        headers.add("Content-Length", "0")
        request = Request("CANCEL", invite.uri, headers)
        self._cancel_tx = NonInviteClientTransaction(request, self.config.server, self._outbox, now)

    def _send_bye(self, now: float) -> None:
        dialog = self.dialog
        assert dialog is not None
        request, _ = dialog.create_request("BYE", self._via())
        request.headers.add("User-Agent", self.config.user_agent)
        request.headers.add("Content-Length", "0")
        self.state = CallState.HANGING_UP
        self._bye_tx = NonInviteClientTransaction(request, self.config.server, self._outbox, now)

    def _reply(self, request: Request, status: int, body: bytes = b"") -> None:
        response = make_response(request, status)
        if status == 200 and request.method in ("INVITE", "UPDATE"):
            response.headers.add("Contact", self._contact())
        if status == 501:
            response.headers.add("Allow", ALLOW)
        if body:
            response.headers.add("Content-Type", "application/sdp")
        response.headers.add("Content-Length", str(len(body)))
        response.body = body
        self._outbox.append((response.serialize(), self.config.server))

    @property
    def answered_at(self) -> float | None:
        return self._answered_at


def _final(why: EndReason, response: Response, now: float) -> Ended:
    kept = {
        name: value
        for name in ("Reason", "Retry-After", "Warning", "Min-SE", "Unsupported")
        if (value := response.headers.get(name)) is not None
    }
    return Ended(why, now, response.status, response.reason, kept)


def _with_bye(ended: Ended, status: int) -> Ended:
    return Ended(ended.why, ended.at, ended.status, ended.reason, ended.headers, status)


# The longest a call can wait for its final response (the INVITE transaction's Timer B).
ANSWER_LIMIT = TIMER_B
