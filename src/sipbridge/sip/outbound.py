"""An outbound call's INVITE, from the first request to the answer or the end (UAC, sans-I/O).

:class:`OutboundInvite` is the UAC side of RFC 3261 §13.2 for one call we place through a
trunk: it sends the INVITE (and its retransmissions, through an
:class:`~sipbridge.sip.transaction.InviteClientTransaction`), answers a 401/407 challenge
with the trunk's credentials, a 422 with a longer Session-Expires, sends CANCEL when the
ring timeout passes (§9.1), ACKs the 2xx (§13.2.2.4) and builds the dialog (§12.1.2).
Nothing here reads the clock or opens a socket. The UA core drives it
(:meth:`sipbridge.sip.ua.UserAgent.dial`); whoever drives it does this:

1. create it with :class:`DialRequest` and ``now``: the INVITE is queued in ``outbox``;
2. every response whose Call-ID is :attr:`OutboundInvite.call_id` goes to
   :meth:`~OutboundInvite.receive_response`; :meth:`~OutboundInvite.handle_timer` when
   :attr:`~OutboundInvite.deadline` is due; :meth:`~OutboundInvite.cancel` to give up
   before the answer (shutdown, a hang-up);
3. after each, send what is in ``outbox`` and read ``events``: an
   :class:`~sipbridge.sip.calls.OutboundProgress` per provisional response (100 Trying
   included), an :class:`~sipbridge.sip.calls.OutboundChallenged` per challenge answered,
   then exactly one of :class:`~sipbridge.sip.calls.OutboundEnded` or, when :attr:`state`
   became ANSWERED, the driver's own ``OutboundAnswered`` (it adopts :attr:`dialog`);
4. keep feeding it until :attr:`done`: after the answer, 2xx retransmissions are ACKed
   again until Timer M (RFC 6026 §7.2).

Races: a 2xx after our CANCEL (the callee picked up as we gave up) is ACKed and ended
with BYE at once (RFC 3261 §15: the dialog exists, only BYE ends it); so is a 2xx from a
second fork (another To tag) after the answer. Neither changes the outcome; the answer to
such a BYE is :attr:`OutboundInvite.bye_status` once :attr:`~OutboundInvite.byes_pending`
is False.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Iterable
from dataclasses import InitVar, dataclass, field

from sipbridge.sip.auth import Challenge, authorization, pick_challenge
from sipbridge.sip.calls import (
    InboundCall,
    OutboundChallenged,
    OutboundEnded,
    OutboundProgress,
    UaEvent,
)
from sipbridge.sip.dialog import Dialog
from sipbridge.sip.framing import StreamAddress, Transport, transport_of
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request, Response
from sipbridge.sip.session_timer import min_se as response_min_se
from sipbridge.sip.transaction import (
    T1,
    Address,
    InviteClientTransaction,
    NonInviteClientTransaction,
    TransactionOutcome,
)
from sipbridge.sip.uri import Uri

__all__ = [
    "CANCEL_WAIT",
    "RESERVED_HEADERS",
    "DialRequest",
    "OutboundInvite",
    "OutboundOutcome",
    "OutboundState",
    "outcome_of",
]

# RFC 3261 §9.1: after our CANCEL, wait this long for the INVITE's final response.
CANCEL_WAIT = 64 * T1
MAX_CHALLENGES = 2  # challenges answered per call (a proxy and then the far end)
# Headers the caller of dial() may not set: they make the request what it is (RFC 3261
# §8.1.1) or are ours to compute.
RESERVED_HEADERS = frozenset(
    {
        "via",
        "v",
        "from",
        "f",
        "to",
        "t",
        "call-id",
        "i",
        "cseq",
        "contact",
        "m",
        "max-forwards",
        "route",
        "record-route",
        "content-type",
        "c",
        "content-length",
        "l",
        "content-encoding",
        "e",
        "authorization",
        "proxy-authorization",
        "require",
        "supported",
        "k",
        "allow",
        "session-expires",
        "x",
        "min-se",
        "expires",
    }
)


class OutboundState(enum.Enum):
    CALLING = "calling"  # INVITE out, no provisional response yet
    RINGING = "ringing"  # a provisional response came
    CANCELLING = "cancelling"  # our CANCEL is out (or waits for a 1xx, §9.1)
    ANSWERED = "answered"  # a 2xx came and was ACKed: the dialog is the driver's
    ENDED = "ended"  # over without an answer


class OutboundOutcome(enum.Enum):
    """How an outbound call attempt ended; the value is its record's status."""

    ANSWERED = "answered"
    BUSY = "busy"  # 486 Busy Here, 600 Busy Everywhere
    NO_ANSWER = "no_answer"  # our ring timeout, 408, 480, 487
    REJECTED = "rejected"  # any other final status
    FAILED = "failed"  # no final response, credentials refused, cancelled by us


def outcome_of(status: int) -> OutboundOutcome:
    """The outcome a final response to our INVITE means."""
    if 200 <= status < 300:
        return OutboundOutcome.ANSWERED
    if status in (486, 600):
        return OutboundOutcome.BUSY
    if status in (408, 480, 487):
        return OutboundOutcome.NO_ANSWER
    return OutboundOutcome.REJECTED


@dataclass(frozen=True, slots=True)
class DialRequest:
    """What to call and how.

    ``target`` is the Request-URI (``sip:+12025550101@carrier.example``), ``from_uri``
    our identity (the From), ``destination`` where requests go (a ``(host, port)`` for
    UDP, a :class:`~sipbridge.sip.framing.StreamAddress` for TCP/TLS), ``contact`` our
    Contact URI and ``via_host``/``via_port`` our Via's sent-by. ``username`` and
    ``password`` answer a digest challenge. ``headers`` are added as given (none of
    :data:`RESERVED_HEADERS`). ``sdp`` is our offer. ``ring_timeout`` (seconds) bounds the
    wait for the answer. ``session_expires``/``min_se``: RFC 4028 (None: no timers).
    ``allow`` and ``supported`` are the INVITE's Allow and Supported ("": no Supported
    header, RFC 3261 §20.37)."""

    call_id: str
    target: str
    from_uri: str
    destination: Address
    contact: str
    via_host: str
    via_port: int
    sdp: bytes
    ring_timeout: float
    username: str | None = None
    password: str | None = None
    from_display: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    session_expires: int | None = None
    min_se: int = 90
    allow: str = "INVITE, ACK, BYE, CANCEL, OPTIONS"
    supported: str = "timer"
    trunk: str | None = None  # the trunk it goes through (the call's record)

    def __post_init__(self) -> None:
        for name, _ in self.headers:
            if name.strip().lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by sipbridge itself")


def _token() -> str:
    return secrets.token_hex(8)


@dataclass(eq=False)
class OutboundInvite:
    """One outbound call until its answer (then Timer M) or its end. See the module
    docstring for what the driver does."""

    id: str  # the call's id (records, the API)
    dial: DialRequest
    outbox: list[tuple[bytes, Address]]
    events: list[UaEvent]
    now: InitVar[float]
    new_token: Callable[[], str] = _token
    state: OutboundState = OutboundState.CALLING
    # The INVITE out now (a new one per challenge answered), its transaction.
    invite: Request = field(init=False)
    transaction: InviteClientTransaction = field(init=False)
    # The answered dialog, the 2xx, the ACK of it (sent again per retransmission).
    dialog: Dialog | None = None
    answer: Response | None = None
    early_sdp: bytes = b""  # a 183's SDP answer (early media)
    call: InboundCall | None = None  # the dialog as the driver adopted it
    # Our CANCEL (when one went out), and the reason it was asked for: "no_answer" (the
    # ring timeout) or "cancelled" (the driver gave up).
    cancel_reason: str | None = None
    # The last challenge a 401/407 to our INVITE carried, answered or not (its realm
    # names whose credentials are wanted).
    challenged: Challenge | None = None
    # The final status of the latest BYE ending a dialog we did not want (a 2xx after
    # our CANCEL, or a second fork's); None: none came (yet, or ever: Timer F).
    bye_status: int | None = None
    _cancel_tx: NonInviteClientTransaction | None = None
    _cancel_until: float | None = None
    _ring_until: float | None = None
    _ack: bytes = b""
    # 2xx of dialogs we end at once (after CANCEL, other forks): their ACK and BYE.
    _stray: dict[str, tuple[bytes, NonInviteClientTransaction]] = field(default_factory=dict)
    # Transactions of INVITEs that were challenged: they ACK the 401/407 again when it is
    # retransmitted (RFC 3261 §17.1.1.2), until Timer D.
    _challenged: list[InviteClientTransaction] = field(default_factory=list)
    _from_tag: str = ""
    _cseq: int = 0
    _challenges: int = 0
    _challenge: Challenge | None = None
    _nc: int = 0
    _session_expires: int | None = None
    _provisional: bool = False

    def __post_init__(self, now: float) -> None:
        self._from_tag = self.new_token()
        self._cseq = secrets.randbelow(2**16) + 1  # RFC 3261 §8.1.1.5
        self._session_expires = self.dial.session_expires
        self._ring_until = now + self.dial.ring_timeout
        self._send_invite(now)

    # ------------------------------------------------------------------ driving

    @property
    def call_id(self) -> str:
        return self.dial.call_id

    @property
    def from_tag(self) -> str:
        return self._from_tag

    @property
    def session_expires(self) -> int | None:
        """The Session-Expires of the INVITE out (RFC 4028), None: no session timer."""
        return self._session_expires

    @property
    def destination(self) -> Address:
        return self.dial.destination

    @property
    def transport(self) -> Transport:
        return transport_of(self.dial.destination)

    @property
    def deadline(self) -> float | None:
        times = [self.transaction.deadline]
        if self.state in (OutboundState.CALLING, OutboundState.RINGING):
            times.append(self._ring_until)
        times.append(self._cancel_until)
        if self._cancel_tx is not None:
            times.append(self._cancel_tx.deadline)
        times.extend(tx.deadline for _, tx in self._stray.values())
        times.extend(tx.deadline for tx in self._challenged)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    @property
    def byes_pending(self) -> bool:
        """A BYE ending a dialog we did not want still waits for its final response."""
        return any(tx.final_status is None for _, tx in self._stray.values())

    @property
    def done(self) -> bool:
        """Nothing left to send or wait for: the driver may forget it."""
        return self.state in (OutboundState.ANSWERED, OutboundState.ENDED) and self.deadline is None

    def cancel(self, now: float, reason: str = "cancelled") -> None:
        """Give up before the answer (RFC 3261 §9.1): CANCEL once a provisional response
        came (before one, the CANCEL waits for it); the outcome follows the INVITE's
        final response. No-op once answered or over."""
        if self.state not in (OutboundState.CALLING, OutboundState.RINGING):
            return
        self.cancel_reason = reason
        self.state = OutboundState.CANCELLING
        if self._provisional:
            self._send_cancel(now)

    def connection_failed(self, transport: Transport, host: str, port: int, reason: str) -> None:
        """The TCP/TLS connection our INVITE waits for could not be opened (``reason``:
        refused, a certificate that does not verify...): RFC 3261 §8.1.3.1 treats it as a
        503, so the call fails now as ``trunk_unreachable``, not at Timer B. No-op for
        another destination, or once a response came (the connection was up then)."""
        destination = self.dial.destination
        if (
            self.state not in (OutboundState.CALLING, OutboundState.CANCELLING)
            or self._provisional
            or not isinstance(destination, StreamAddress)
            or (destination.transport, destination.target) != (transport, (host, port))
        ):
            return
        self.transaction.transport_error()
        if self.transaction.outcome is TransactionOutcome.TRANSPORT_ERROR:
            cause = "cancelled" if self.cancel_reason == "cancelled" else "trunk_unreachable"
            self._end(OutboundOutcome.FAILED, None, cause, reason)

    def handle_timer(self, now: float) -> None:
        tx = self.transaction
        if tx.deadline is not None and now >= tx.deadline:
            tx.on_timer(now)
            if tx.terminated and tx.outcome is TransactionOutcome.TIMEOUT:
                # Timer B, which runs in Calling only: not even a provisional response
                # came; the trunk is not answering (unless we gave up first).
                reason = "cancelled" if self.cancel_reason == "cancelled" else "trunk_timeout"
                self._end(OutboundOutcome.FAILED, None, reason)
        for old in list(self._challenged):
            if old.deadline is not None and now >= old.deadline:
                old.on_timer(now)
                if old.terminated:
                    self._challenged.remove(old)
        cancel = self._cancel_tx
        if cancel is not None and cancel.deadline is not None and now >= cancel.deadline:
            cancel.on_timer(now)
            if cancel.terminated:
                self._cancel_tx = None
        for tag, (_, bye) in list(self._stray.items()):
            if bye.deadline is not None and now >= bye.deadline:
                bye.on_timer(now)
                if bye.terminated:
                    del self._stray[tag]
        if self._ring_until is not None and now >= self._ring_until:
            self._ring_until = None
            self.cancel(now, "no_answer")
        if self._cancel_until is not None and now >= self._cancel_until:
            # §9.1: no final response 64*T1 after our CANCEL: the transaction is over.
            self._cancel_until = None
            if self.state is OutboundState.CANCELLING:
                self._end(self._cancel_outcome(), None, self.cancel_reason or "cancelled")

    def receive_response(self, response: Response, now: float) -> None:
        """A response with our Call-ID: to the INVITE, the CANCEL or a BYE of ours."""
        method = response.cseq.method
        branch = response.vias[0].branch if response.vias else None
        if method == "CANCEL":
            if self._cancel_tx is not None and branch == self._branch(self._cancel_tx.request):
                self._cancel_tx.receive_response(response, now)
            return
        if method == "BYE":
            for _, bye in self._stray.values():
                if branch == self._branch(bye.request) and bye.receive_response(response, now):
                    self.bye_status = response.status
            return
        if method != "INVITE":
            return
        if branch != self._branch(self.invite):
            for old in self._challenged:
                if branch == self._branch(old.request):
                    old.receive_response(response, now)  # its ACK again, if a 401/407
            return
        if not self.transaction.receive_response(response, now):
            if response.status < 200:
                self._provisional_response(response, now)
            return
        status = response.status
        if 200 <= status < 300:
            self._two_hundred(response, now)
            return
        if self.state is OutboundState.ANSWERED or self.state is OutboundState.ENDED:
            return
        if status in (401, 407) and self._answer_challenge(response, now):
            return
        if status == 422 and self._longer_session(response, now):
            return
        if self.state is OutboundState.CANCELLING and status == 487:
            reason = self.cancel_reason or "cancelled"
            self._end(self._cancel_outcome(), status, reason, response=response)
        elif status in (401, 407):
            self._end(OutboundOutcome.FAILED, status, "auth_failed", response=response)
        else:
            outcome = outcome_of(status)
            self._end(outcome, status, outcome.value, response=response)

    # ------------------------------------------------------------------ responses

    def _provisional_response(self, response: Response, now: float) -> None:
        self._provisional = True
        early = False
        if response.status != 100:
            # §9.1: a 100 counts as a provisional response for CANCEL, not as ringing.
            early = bool(response.body) and _is_sdp(response)
            if early:
                self.early_sdp = response.body
            if self.state is OutboundState.CALLING:
                self.state = OutboundState.RINGING
        self.events.append(OutboundProgress(self, response.status, early, response.reason))
        if self.state is OutboundState.CANCELLING and self._cancel_tx is None:
            self._send_cancel(now)

    def _two_hundred(self, response: Response, now: float) -> None:
        tag = response.to.tag or ""
        if self.dialog is not None and tag == self.dialog.remote_tag:
            # §13.2.2.4: a retransmitted 2xx gets the same ACK again.
            self.outbox.append((self._ack, self.next_hop(self.dialog)))
            return
        if tag in self._stray:
            ack, _ = self._stray[tag]
            self.outbox.append((ack, self.destination))
            return
        if self.state is OutboundState.CALLING or self.state is OutboundState.RINGING:
            self.dialog = Dialog.from_response(self.invite, response)
            self.answer = response
            self._ack = self._ack_for(self.dialog)
            self.outbox.append((self._ack, self.next_hop(self.dialog)))
            self.state = OutboundState.ANSWERED
            self._ring_until = None
            return
        # RFC 3261 §15: a 2xx after our CANCEL, or a second fork's: the dialog exists;
        # ACK it and end it with BYE (§13.2.2.4 for both forks' 2xx).
        dialog = Dialog.from_response(self.invite, response)
        ack = self._ack_for(dialog)
        self.outbox.append((ack, self.next_hop(dialog)))
        bye, _ = dialog.create_request("BYE", self._via())
        bye_tx = NonInviteClientTransaction(bye, self.next_hop(dialog), self.outbox, now)
        self._stray[tag] = (ack, bye_tx)
        if self.state is OutboundState.CANCELLING:
            reason = "answered_after_cancel"
            self._end(self._cancel_outcome(), response.status, reason, response=response)

    def _cancel_outcome(self) -> OutboundOutcome:
        if self.cancel_reason == "no_answer":
            return OutboundOutcome.NO_ANSWER
        return OutboundOutcome.FAILED

    def _end(
        self,
        outcome: OutboundOutcome,
        status: int | None,
        reason: str,
        detail: str = "",
        *,
        response: Response | None = None,
    ) -> None:
        if self.state is OutboundState.ENDED or self.state is OutboundState.ANSWERED:
            return
        self.state = OutboundState.ENDED
        self._ring_until = None
        self._cancel_until = None
        self.events.append(OutboundEnded(self, outcome, status, reason, detail, response))

    def _answer_challenge(self, response: Response, now: float) -> bool:
        """A new INVITE with credentials for the response's challenge; False when it
        cannot or must not be answered (no credentials, nothing usable, ours refused:
        a second challenge of the same realm without ``stale=true``)."""
        dial = self.dial
        challenge = pick_challenge(
            response.headers.get_lines("WWW-Authenticate"),
            response.headers.get_lines("Proxy-Authenticate"),
        )
        if challenge is not None:
            self.challenged = challenge
        if challenge is None or dial.username is None or dial.password is None:
            return False
        previous = self._challenge
        if previous is not None and previous.realm == challenge.realm and not challenge.stale:
            return False
        self._challenges += 1
        if self._challenges > MAX_CHALLENGES or self.state is OutboundState.CANCELLING:
            return False
        self._challenge = challenge
        self._nc = 0
        self.events.append(OutboundChallenged(self, response.status, challenge))
        self._send_invite(now)
        return True

    def _longer_session(self, response: Response, now: float) -> bool:
        """RFC 4028 §7.4: a 422 names the Min-SE the far end wants; ask again with it,
        once."""
        wanted = response_min_se(response.headers)
        asked = self._session_expires
        if wanted is None or asked is None or wanted <= asked or wanted > 86400:
            return False
        if self.state is OutboundState.CANCELLING:
            return False
        self._session_expires = wanted
        self._send_invite(now)
        return True

    # ------------------------------------------------------------------ requests

    def _via(self) -> str:
        dial = self.dial
        host = f"[{dial.via_host}]" if ":" in dial.via_host else dial.via_host
        return (
            f"SIP/2.0/{self.transport.value} {host}:{dial.via_port}"
            f";branch=z9hG4bK{self.new_token()};rport"
        )

    def next_hop(self, dialog: Dialog) -> Address:
        """Where the dialog's requests go (RFC 3261 §12.2.1.1: its first route, else the
        remote target); over TCP/TLS on the connection the INVITE went out on while it
        lasts (RFC 3261 §18.1.1), as the UA core does for inbound calls."""
        hop = dialog.next_hop
        destination = self.destination
        if isinstance(destination, StreamAddress):
            host, port = destination
            return StreamAddress(host, port, destination.transport, target=hop)
        return hop

    @staticmethod
    def _branch(request: Request) -> str | None:
        return request.vias[0].branch

    def _send_invite(self, now: float) -> None:
        """The INVITE (RFC 3261 §8.1.1, §13.2.1), anew after a challenge or a 422: same
        Call-ID and From tag, the next CSeq, a new branch."""
        dial = self.dial
        self._cseq += 1
        headers = Headers()
        headers.add("Via", self._via())
        headers.add("Max-Forwards", "70")
        display = f'"{_quoted(dial.from_display)}" ' if dial.from_display else ""
        headers.add("From", f"{display}<{dial.from_uri}>;tag={self._from_tag}")
        headers.add("To", f"<{dial.target}>")
        headers.add("Call-ID", dial.call_id)
        headers.add("CSeq", f"{self._cseq} INVITE")
        headers.add("Contact", f"<{dial.contact}>")
        headers.add("Allow", dial.allow)
        if dial.supported:
            headers.add("Supported", dial.supported)
        if self._session_expires is not None:
            # RFC 4028 §7.1: no refresher named: the far end picks (§9).
            headers.add("Session-Expires", str(self._session_expires))
            headers.add("Min-SE", str(dial.min_se))
        for name, value in dial.headers:
            headers.add(name, value)
        challenge = self._challenge
        if challenge is not None and dial.username is not None and dial.password is not None:
            self._nc += 1
            headers.add(
                challenge.answer_header,
                authorization(
                    challenge,
                    username=dial.username,
                    password=dial.password,
                    method="INVITE",
                    uri=dial.target,
                    nc=self._nc,
                    cnonce=self.new_token(),
                ),
            )
        headers.add("Content-Type", "application/sdp")
        if self._cseq > 1 and hasattr(self, "transaction"):
            self._challenged.append(self.transaction)
        self.invite = Request("INVITE", Uri.parse(dial.target), headers, dial.sdp)
        self._provisional = False
        self.transaction = InviteClientTransaction(
            self.invite, self.destination, self.outbox, now, timer_b_in_proceeding=False
        )

    def _send_cancel(self, now: float) -> None:
        """RFC 3261 §9.1: the INVITE's Request-URI, Call-ID, From, To and CSeq number, and
        its top Via alone (the same branch: it matches the INVITE's server transaction)."""
        invite = self.invite
        headers = Headers()
        headers.add("Via", str(invite.vias[0]))
        headers.add("Max-Forwards", "70")
        for name in ("From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq.seq} CANCEL")
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("Content-Length", "0")
        request = Request("CANCEL", invite.uri, headers, b"")
        self._cancel_tx = NonInviteClientTransaction(request, self.destination, self.outbox, now)
        self._cancel_until = now + CANCEL_WAIT

    def _ack_for(self, dialog: Dialog) -> bytes:
        """RFC 3261 §13.2.2.4: the ACK of a 2xx is a request of the dialog with the
        INVITE's CSeq number, its own branch, and the INVITE's credentials."""
        ack, _ = dialog.create_ack(self.invite.cseq.seq, self._via())
        for name in ("Authorization", "Proxy-Authorization"):
            for value in self.invite.headers.get_all(name):
                ack.headers.add(name, value)
        ack.headers.add("Content-Length", "0")
        return ack.serialize()


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _is_sdp(response: Response) -> bool:
    content_type = (response.headers.get("Content-Type") or "").split(";")[0]
    return content_type.strip().lower() == "application/sdp"


def header_problem(name: str, value: str) -> str | None:
    """Why (``name``, ``value``) cannot be an extra header of an outbound INVITE (None: it
    can): a token name (RFC 3261 §25.1) not set by sipbridge itself, a one-line value."""
    if not name or any(c in name for c in ' \t\r\n:()<>@,;\\"/[]?={}'):
        return f"{name!r} is not a header name"
    if name.strip().lower() in RESERVED_HEADERS:
        return f"{name!r} is set by sipbridge itself"
    if any(c in value for c in "\r\n\x00"):
        return f"the value of {name} must be one line"
    return None


def extra_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``headers`` checked by :func:`header_problem`; ValueError naming the first bad one."""
    checked = []
    for name, value in headers:
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(problem)
        checked.append((name, value))
    return tuple(checked)
