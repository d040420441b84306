"""The SIP user agent core of sipbridge: a UAS that can also hang up and place calls
(RFC 3261 §8, §12-§17).

:class:`UserAgent` is sans-I/O. The runtime feeds it datagrams and time and
does what it returns:

1. ``receive_datagram(data, source, now)`` for every UDP datagram and every message
   framed from a TCP/TLS stream (:mod:`sipbridge.sip.framing`); for those, ``source``
   is the connection's :class:`~sipbridge.sip.framing.StreamAddress`, and everything
   queued for that call goes out as ``(bytes, StreamAddress)`` (same connection);
2. ``handle_timer(now)`` whenever ``get_timer()`` is due;
3. after each of those, send every ``(bytes, (host, port))`` from
   ``datagrams_to_send()`` and handle every item from ``events()``.

Events (defined in :mod:`sipbridge.sip.calls`) tell the call layer about calls
(:class:`IncomingCall`, :class:`CallCancelled`, :class:`CallConfirmed`,
:class:`ByeReceived`, ...; :class:`RequestAnswered` for in-dialog requests answered here
with nothing for the call layer to do).
The call layer answers through :meth:`UserAgent.ring`, :meth:`answer`,
:meth:`reject` and :meth:`hangup`, which queue more datagrams.

Outbound calls: :meth:`UserAgent.dial` sends an INVITE (sip/outbound.py does the UAC
work: challenges, ring timeout and CANCEL, the ACK); the call layer hears
:class:`OutboundProgress` (and :class:`OutboundChallenged`), then :class:`OutboundEnded`
or :class:`OutboundAnswered`,
whose ``call`` is the dialog, from then on handled like an answered inbound call's
(``hangup``, BYE, re-INVITE, UPDATE, session timer); :meth:`UserAgent.cancel_dial`
gives up before the answer.

Requests that are not part of a call are answered here: OPTIONS (200 with
Allow), unknown methods (501), unsupported URI schemes (416), unknown
extensions (420), unusable bodies (415), unparseable requests (400 when enough
parses, else dropped), stray in-dialog requests (481).

With an :class:`~sipbridge.sip.access.AccessPolicy` in ``access``, every request that
belongs to no admitted call (not in an existing dialog, not a CANCEL or ACK of an INVITE
transaction we hold) goes through it first: a challenge is answered 401, a refusal
with the policy's ``refuse_status`` or nothing at all, and unparseable requests from
sources the policy does not know are dropped. Without one, every source is admitted.

With a :class:`~sipbridge.sip.guard.SourceGuard` in ``guard`` (the runtime checks it for
bans and rates before parsing), the core reports what it sees: a request with a scanner
User-Agent is dropped unanswered and its source banned, failed digest authentication
counts towards the source's ban, and an untrusted source may have only so many INVITEs
waiting for our answer (503 beyond).

Behind a proxy, ``proxies`` (:class:`~sipbridge.sip.proxy.TrustedProxies`) names the
addresses whose ``X-Sipbridge-Source`` header is believed: a request from one of them is
judged, counted, recorded and logged as coming from the address the header names (its
*origin*), while every answer still goes to the proxy (``source``, along the Via). A
malformed header, or an INVITE from a trusted proxy without one, is answered 400; a
request without one is otherwise the proxy's own (its OPTIONS probes), answered as a known
source's. The runtime reads the header before parsing (``sip.proxy.admit_message``, for
the guard) and passes what it found to :meth:`UserAgent.receive_datagram`.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from sipbridge.sip.access import AccessPolicy, Allowed, Challenged
from sipbridge.sip.auth import Challenge, authorization, pick_challenge
from sipbridge.sip.calls import (
    AckTimeout,
    ByeCompleted,
    ByeReceived,
    CallCancelled,
    CallConfirmed,
    CallState,
    InboundCall,
    IncomingCall,
    InfoReceived,
    NotifyReceived,
    OutboundAnswered,
    ReferCompleted,
    RefreshAnswered,
    ReInviteReceived,
    RequestAnswered,
    RequestRejected,
    SessionExpired,
    UaEvent,
    UpdateReceived,
)
from sipbridge.sip.dialog import Dialog, DialogId, DialogState
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.framing import StreamAddress, Transport, transport_of
from sipbridge.sip.guard import Offence, SourceGuard
from sipbridge.sip.message import (
    NameAddr,
    Request,
    Response,
    build_error_response,
    make_response,
    parse_message,
)
from sipbridge.sip.outbound import DialRequest, OutboundInvite, OutboundState
from sipbridge.sip.proxy import SOURCE_HEADER, Relayed, TrustedProxies
from sipbridge.sip.registration import Registrations
from sipbridge.sip.reliable import RSEQ_MAX, ReliableProvisional, requires_100rel
from sipbridge.sip.session_timer import (
    DEFAULT_SESSION_EXPIRES,
    MIN_SE_FLOOR,
    SessionTimer,
    TimerAnswer,
    allows,
    negotiate_refresh,
    refresh_headers,
    timer_from_response,
)
from sipbridge.sip.transaction import (
    Address,
    InviteClientTransaction,
    InviteServerState,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
    TransactionKey,
    TransactionOutcome,
)

ALLOWED_METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "INFO",
    "NOTIFY",
    "UPDATE",
    "PRACK",
)
ALLOW = ", ".join(ALLOWED_METHODS)
# Option tags we implement (RFC 3261 §19.2): RFC 4028 session timers, RFC 3262 reliable
# provisional responses.
SUPPORTED_EXTENSIONS = ("timer", "100rel")
SUPPORTED = ", ".join(SUPPORTED_EXTENSIONS)
# Retry-After (seconds) of an OPTIONS 503 while the instance is busy, unless the runtime
# names another (:meth:`UserAgent.set_busy`).
BUSY_RETRY_AFTER = 5
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
ACCEPTED_BODY = "application/sdp"
# Challenge reasons that count as a failed authentication attempt of the source.
# Messages one call may have admitted past its source's rate limit (ACK, BYE, CANCEL and
# responses, see sip/guard.py): enough for every retransmission of a normal call's
# in-dialog traffic (RFC 3261 §17.1.2.2: 11 per request), bounded for whoever learnt a
# live Call-ID and forges messages from the caller's address.
IN_DIALOG_EXEMPTIONS = 64
# Challenges answered for one in-dialog request of ours (a proxy, then the far end).
MAX_IN_DIALOG_CHALLENGES = 2
_FAILED_AUTH = frozenset({"auth_failed", "auth_replayed"})


ServerTransaction = InviteServerTransaction | NonInviteServerTransaction
ClientTransaction = NonInviteClientTransaction | InviteClientTransaction
Transaction = ServerTransaction | ClientTransaction


def _token() -> str:
    return secrets.token_hex(8)


def _random() -> float:
    return secrets.randbelow(1_000_000) / 1_000_000


def glare_backoff(owns_call_id: bool, fraction: float) -> float:
    """RFC 3261 §14.1: how long to wait before retrying a re-INVITE that got 491, in
    units of 10 ms: 2.1-4 s when we own the dialog's Call-ID (we sent its INVITE), else
    0-2 s; ``fraction`` is a random number in [0, 1)."""
    low, high = (2.1, 4.0) if owns_call_id else (0.0, 2.0)
    return round(low + fraction * (high - low), 2)


@dataclass
class _ClientContext:
    """A request we sent in a call's dialog (BYE, REFER, a refresh re-INVITE or UPDATE)
    and its transaction; for a re-INVITE, the ACK of its 2xx once sent (repeated for
    each retransmitted 2xx, RFC 3261 §13.2.2.4)."""

    call: InboundCall
    transaction: ClientTransaction
    method: str
    ack: tuple[bytes, Address] | None = None
    # What the request carried, to send it again with credentials (RFC 3261 §22.2).
    extra: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    challenge: Challenge | None = None  # the challenge this request answered
    challenges: int = 0  # how many, for this request and the ones it replaced


@dataclass
class UserAgent:
    """SIP UAS core. See the module docstring for what the caller must do."""

    local_host: str
    local_port: int
    # Our host in Via and Contact for callers that reach us over IPv6 on a dual-stack
    # socket (None: ``local_host`` for everyone). Their later requests (ACK, BYE,
    # re-INVITE) must be sent to an address of their own family.
    local_host_v6: str | None = None
    max_message_size: int = 65535
    new_token: Callable[[], str] = _token
    access: AccessPolicy | None = None
    tls_port: int | None = None  # our SIP-over-TLS port, for sips: Contacts (RFC 5630)
    guard: SourceGuard | None = None
    # RFC 4028 session timers: the interval we ask for when the caller names none and
    # the shortest we accept (422 below it); None: no session timers at all.
    session_expires: int | None = DEFAULT_SESSION_EXPIRES
    min_se: int = MIN_SE_FLOOR
    # A random number in [0, 1) for the 491 back-off (RFC 3261 §14.1); tests fix it.
    random: Callable[[], float] = _random
    # Set by the runtime (:meth:`set_busy`) while the instance refuses new calls
    # (draining, at its call limit, overloaded, unhealthy): an OPTIONS probe outside a
    # dialog is answered 503 so a proxy in front routes elsewhere (RFC 3261 §11.2: the
    # answer is the one an INVITE would get).
    busy: bool = False
    # Our REGISTER clients (sip/registration.py), when trunks register: their requests go
    # out with ours, their deadlines are in get_timer, and the responses to them that
    # match none of our transactions are theirs. Their events are read by the runtime
    # from ``registrations.events()``.
    registrations: Registrations | None = None
    # The headers of that 503, built once by :meth:`set_busy` (probes are a hot path).
    _busy_headers: list[tuple[str, str]] = field(
        default_factory=lambda: [("Retry-After", str(BUSY_RETRY_AFTER))]
    )
    # Whose X-Sipbridge-Source is believed (sip/proxy.py); nobody's by default.
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    _outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    _events: list[UaEvent] = field(default_factory=list)
    _server_tx: dict[TransactionKey, ServerTransaction] = field(default_factory=dict)
    _client_tx: dict[TransactionKey, _ClientContext] = field(default_factory=dict)
    _dialogs: dict[DialogId, InboundCall] = field(default_factory=dict)
    # Early dialogs of calls whose 180 was sent reliably (RFC 3262): their PRACKs come
    # in them before the 2xx creates the dialog.
    _early: dict[DialogId, InboundCall] = field(default_factory=dict)
    # RFC 3261 §8.2.2.2: (Call-ID, From tag, CSeq) of INVITEs being handled.
    _origins: dict[tuple[str, str, int], InboundCall] = field(default_factory=dict)
    _calls_by_tx: dict[TransactionKey, InboundCall] = field(default_factory=dict)
    # Call-ID -> the live call (answered or not, or still retransmitting its final
    # response), for :meth:`in_dialog`; forgotten by :meth:`_forget_if_done`.
    _by_call_id: dict[str, InboundCall] = field(default_factory=dict)
    # Every transaction's deadline in one heap: (deadline, seq, key, client). An entry is
    # stale when its transaction is gone or has another deadline by now; transactions
    # push a new entry whenever their deadline changes (``watch``), so get_timer and
    # handle_timer cost O(log n) per timer instead of a scan of every transaction.
    _timers: list[tuple[float, int, TransactionKey, bool]] = field(default_factory=list)
    _timer_seq: Iterator[int] = field(default_factory=itertools.count)
    # Session timers (RFC 4028) in a heap of their own: (deadline, seq, call), stale when
    # the call's timer has another deadline by now.
    _call_timers: list[tuple[float, int, InboundCall]] = field(default_factory=list)
    # Outbound calls until their answer and Timer M, or their end (sip/outbound.py), by
    # Call-ID, and their deadlines in a heap: (deadline, seq, attempt), stale when the
    # attempt is gone or has another deadline by now.
    _outbound: dict[str, OutboundInvite] = field(default_factory=dict)
    _outbound_timers: list[tuple[float, int, OutboundInvite]] = field(default_factory=list)

    # ------------------------------------------------------------------ I/O side

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        # Transactions hold a reference to this very list: empty it in place.
        out = self._outbox[:]
        self._outbox.clear()
        if self.registrations is not None:
            out.extend(self.registrations.datagrams_to_send())
        return out

    def events(self) -> list[UaEvent]:
        # Outbound calls (sip/outbound.py) hold a reference to this very list.
        out = self._events[:]
        self._events.clear()
        return out

    def get_timer(self) -> float | None:
        ours = self._transaction_timer()
        if self.registrations is None:
            return ours
        theirs = self.registrations.get_timer()
        if ours is None or (theirs is not None and theirs < ours):
            return theirs
        return ours

    def _transaction_timer(self) -> float | None:
        heap = self._timers
        first: float | None = None
        while heap:
            deadline, _, key, client = heap[0]
            if self._live_deadline(key, client) == deadline:
                first = deadline
                break
            heapq.heappop(heap)  # stale
        calls = self._call_timers
        while calls:
            deadline, _, call = calls[0]
            if _timer_deadline(call) == deadline:
                first = deadline if first is None else min(first, deadline)
                break
            heapq.heappop(calls)
        dials = self._outbound_timers
        while dials:
            deadline, _, attempt = dials[0]
            if self._outbound_deadline(attempt) == deadline:
                return deadline if first is None else min(first, deadline)
            heapq.heappop(dials)
        return first

    def _outbound_deadline(self, attempt: OutboundInvite) -> float | None:
        if self._outbound.get(attempt.call_id) is not attempt:
            return None
        return attempt.deadline

    def handle_timer(self, now: float) -> None:
        if self.registrations is not None:
            self.registrations.handle_timer(now)
        self._handle_transaction_timers(now)
        calls = self._call_timers
        while calls and calls[0][0] <= now:
            deadline, _, call = heapq.heappop(calls)
            if _timer_deadline(call) == deadline:
                if call.reliable is not None and call.state is CallState.OFFERED:
                    self._reliable_due(call, now)
                else:
                    self._session_timer_due(call, now)
        dials = self._outbound_timers
        while dials and dials[0][0] <= now:
            deadline, _, attempt = heapq.heappop(dials)
            if self._outbound_deadline(attempt) == deadline:
                attempt.handle_timer(now)
                self._outbound_changed(attempt, now)

    def _handle_transaction_timers(self, now: float) -> None:
        heap = self._timers
        while heap and heap[0][0] <= now:
            deadline, _, key, client = heapq.heappop(heap)
            if self._live_deadline(key, client) != deadline:
                continue  # stale
            if client:
                ctx = self._client_tx[key]
                ctx.transaction.on_timer(now)
                if ctx.transaction.terminated:
                    del self._client_tx[key]
                    if ctx.transaction.outcome is TransactionOutcome.TIMEOUT:
                        self._client_done(ctx, None, None, now)
                continue
            tx = self._server_tx[key]
            tx.on_timer(now)
            if isinstance(tx, InviteServerTransaction):
                if tx.state is InviteServerState.TERMINATED:
                    self._invite_transaction_ended(key, tx, now)
            elif tx.state is NonInviteServerState.TERMINATED:
                del self._server_tx[key]

    def _live_deadline(self, key: TransactionKey, client: bool) -> float | None:
        if client:
            ctx = self._client_tx.get(key)
            return None if ctx is None else ctx.transaction.deadline
        tx = self._server_tx.get(key)
        return None if tx is None else tx.deadline

    def _timer_changed(self, key: TransactionKey, client: bool, tx: Transaction) -> None:
        deadline = tx.deadline
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._timer_seq), key, client))

    def _add_server_tx(self, key: TransactionKey, tx: ServerTransaction) -> None:
        self._server_tx[key] = tx
        tx.watch = functools.partial(self._timer_changed, key, False)
        self._timer_changed(key, False, tx)

    def _arm_session_timer(self, call: InboundCall) -> None:
        deadline = _timer_deadline(call)
        if deadline is not None:
            heapq.heappush(self._call_timers, (deadline, next(self._timer_seq), call))

    def _start_timer(self, call: InboundCall, answer: TimerAnswer | None, now: float) -> None:
        """A refresh was accepted (our 2xx went out): the session timer restarts."""
        if answer is None or answer.timer is None:
            return
        timer = answer.timer
        timer.refreshed_at = now
        call.timer = timer
        self._arm_session_timer(call)

    def _session_timer_due(self, call: InboundCall, now: float) -> None:
        timer = call.timer
        assert timer is not None
        if now >= timer.expire_at:
            # RFC 4028 §10: no refresh came (or ours never succeeded): the session is
            # over; the call layer sends BYE.
            call.timer = None
            reason = "session_expired"
            self._events.append(SessionExpired(call, reason))
            return
        timer.retry_at = None
        if (
            call.state is not CallState.CONFIRMED
            or (call.reinvite is not None and not call.reinvite.final_sent)
            or call.update is not None
            or call.refresh_pending is not None
        ):
            # No ACK yet, the peer's own offer is being answered, or our previous refresh
            # is still out (RFC 3261 §14.1: one INVITE at a time): try again shortly.
            timer.retry_at = now + 1.0
            self._arm_session_timer(call)
            return
        self._send_refresh(call, now)

    def _send_refresh(self, call: InboundCall, now: float) -> None:
        """Our session refresh (RFC 4028 §7.4): an UPDATE without a body when the peer
        allows UPDATE, else a re-INVITE offering our current SDP unchanged (the same
        o= version, RFC 3264 §8: nothing in the session changes)."""
        timer = call.timer
        assert timer is not None
        method = "UPDATE" if call.peer_allows_update else "INVITE"
        extra = refresh_headers(timer, self.min_se)
        if method == "INVITE":
            extra.append(("Content-Type", ACCEPTED_BODY))
        timer.refreshing = True
        call.refresh_pending = method
        body = call.local_sdp if method == "INVITE" else b""
        self._send_in_dialog(call, method, now, extra, body=body)
        self._arm_session_timer(call)

    def _refresh_answered(self, ctx: _ClientContext, response: Response | None, now: float) -> None:
        """The final response to our refresh (None: the transaction timed out)."""
        call = ctx.call
        call.refresh_pending = None
        timer = call.timer
        if timer is None or call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            return
        timer.refreshing = False
        status = None if response is None else response.status
        if response is not None and 200 <= response.status < 300:
            call.timer = timer_from_response(response.headers, timer, now)
        elif status == 491:
            # RFC 3261 §14.1 glare: the peer's offer crossed ours; retry after the back-off.
            # The caller owns the Call-ID of an inbound call; we own an outbound one's.
            timer.retry_at = now + glare_backoff(call.outbound, self.random())
        elif ctx.method == "UPDATE" and status in (405, 501):
            call.peer_allows_update = False  # it does not do UPDATE after all
            timer.retry_at = now
        elif status in (None, 408, 481):
            # RFC 3261 §12.2.1.2: the dialog is gone (or unreachable): end the call.
            call.timer = None
            self._events.append(SessionExpired(call, "session_refresh_failed"))
            return
        else:
            # Refused: no more refreshes; the session ends when its interval does.
            timer.retry_at = timer.expire_at
        self._arm_session_timer(call)

    def _add_client_tx(self, key: TransactionKey, ctx: _ClientContext) -> None:
        self._client_tx[key] = ctx
        ctx.transaction.watch = functools.partial(self._timer_changed, key, True)
        self._timer_changed(key, True, ctx.transaction)

    @property
    def active_transactions(self) -> int:
        return len(self._server_tx) + len(self._client_tx)

    @property
    def active_calls(self) -> int:
        return len(self._dialogs) + sum(
            1 for c in self._calls_by_tx.values() if c.state is CallState.OFFERED
        )

    def in_dialog(self, host: str, call_id: str) -> bool:
        """True when ``call_id`` names a live call whose INVITE came from ``host``, and
        that call may have one more message admitted past the rate limit (the
        :class:`~sipbridge.sip.guard.SourceGuard`'s ``in_dialog``; counts it)."""
        call = self._by_call_id.get(call_id)
        if call is None or call.origin[0] != host:
            return False
        if call.exempt_messages >= IN_DIALOG_EXEMPTIONS:
            return False
        call.exempt_messages += 1
        return True

    def _forget_if_done(self, call: InboundCall) -> None:
        """Drop ``call`` from the Call-ID index once it ended and its INVITE transaction
        is over (no ACK or response of it can matter any more)."""
        if (
            call.state is CallState.ENDED
            and (call.transaction is None or call.transaction.state is InviteServerState.TERMINATED)
            and self._by_call_id.get(call.invite.call_id) is call
        ):
            del self._by_call_id[call.invite.call_id]

    # ------------------------------------------------------------------ input

    def receive_datagram(
        self, data: bytes, source: Address, now: float, relayed: Relayed | None = None
    ) -> bool:
        """Handle one message; True when it was *admitted*: a request the access policy
        let in and that was not refused (in-dialog requests and ACKs of an admitted
        call's dialog included), or a response to one of our transactions. Keep-alives,
        retransmissions (their first copy was judged), unparseable input, refused and
        dropped requests are not (the runtime closes a stream from an unknown source
        that sends nothing admitted: runtime/transports.py).

        ``relayed``: what :meth:`TrustedProxies.relayed` found in ``data`` when ``source``
        is a trusted proxy (the runtime read it already for the guard); None: read here
        when ``source`` is one."""
        # RFC 5626 §4.4.1 keep-alives (CRLF) carry no message.
        if not data.strip(b"\r\n"):
            return False
        if relayed is None and self.proxies.trusts(source[0]):
            relayed = self.proxies.relayed(data)
        try:
            message = parse_message(data, self.max_message_size)
        except SipParseError as exc:
            self._parse_failed(exc, source, relayed)
            return False
        if isinstance(message, Response):
            return self._receive_response(message, now)
        return self._receive_request(message, source, now, relayed)

    def _parse_failed(self, exc: SipParseError, source: Address, relayed: Relayed | None) -> None:
        # RFC 3261 §21.4.1: answer 400 where enough of the request parsed to
        # build a response; responses and hopeless input are dropped.
        relayed_from = relayed.origin if relayed is not None else None
        origin = relayed_from or source
        # A trusted proxy is known for what it says itself (no or a malformed header).
        from_proxy = relayed is not None and relayed.origin is None
        if self.access is not None and not from_proxy and not self.access.knows(origin[0]):
            self._events.append(
                RequestRejected(
                    source, None, None, "unknown_source", access=True, relayed_from=relayed_from
                )
            )
            return
        response = None
        if exc.is_request and exc.headers is not None:
            response = build_error_response(exc.headers, exc.status_hint, exc.reason)
        if response is None:
            self._events.append(
                RequestRejected(
                    source, None, None, f"dropped: {exc.reason}", relayed_from=relayed_from
                )
            )
            return
        self._outbox.append((response.serialize(), source))
        # The method as the raw CSeq names it (the Request-Line may be what failed): an
        # INVITE is a call attempt and is recorded as one.
        assert exc.headers is not None  # a response was built from them
        cseq = exc.headers.get_lines("CSeq")
        words = cseq[0].split() if cseq else []
        method = words[1] if len(words) == 2 else None
        self._events.append(
            RequestRejected(
                source,
                method,
                exc.status_hint,
                exc.reason,
                headers=exc.headers,
                relayed_from=relayed_from,
            )
        )

    def _receive_response(self, response: Response, now: float) -> bool:
        key = TransactionKey.for_response(response)
        ctx = self._client_tx.get(key)
        if ctx is None:
            if self.registrations is not None and response.cseq.method == "REGISTER":
                return self.registrations.receive_response(response, now)
            attempt = self._outbound.get(response.call_id)
            if attempt is not None:
                attempt.receive_response(response, now)
                self._outbound_changed(attempt, now)
                return True
            return False  # RFC 3261 §17.1.3: a response matching no transaction is dropped
        tx = ctx.transaction
        if isinstance(tx, InviteClientTransaction):
            # A 401/407 was ACKed by the transaction itself (§17.1.1.3).
            if tx.receive_response(response, now) and not self._answer_challenge(
                ctx, response, now
            ):
                self._invite_response(ctx, response, now)
            return True
        if tx.receive_response(response, now) and not self._answer_challenge(ctx, response, now):
            self._client_done(ctx, response.status, response, now)
        return True

    def _invite_response(self, ctx: _ClientContext, response: Response, now: float) -> None:
        """A final response to our re-INVITE, or a retransmission of its 2xx."""
        if response.status >= 300:
            self._refresh_answered(ctx, response, now)
            return
        if ctx.ack is not None:
            self._outbox.append(ctx.ack)  # a retransmitted 2xx: the same ACK again
            return
        call = ctx.call
        if call.dialog is not None:
            # RFC 3261 §13.2.2.4: the ACK of a 2xx is the UA's, with a branch of its own.
            request, destination = call.dialog.create_ack(
                ctx.transaction.request.cseq.seq, self._via(call)
            )
            ctx.ack = (request.serialize(), self._destination(call, destination))
            self._outbox.append(ctx.ack)
        self._refresh_answered(ctx, response, now)
        if response.body and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            self._events.append(RefreshAnswered(call, response.body))

    def _receive_request(
        self, request: Request, source: Address, now: float, relayed: Relayed | None
    ) -> bool:
        relayed_from = relayed.origin if relayed is not None else None
        origin = relayed_from or source
        guard = self.guard
        if guard is not None and guard.is_scanner(request.headers.get("User-Agent")):
            # A scanner or toll-fraud tool: no answer at all, and its source is banned.
            guard.scanner(origin[0], now)
            self._events.append(
                RequestRejected(
                    source,
                    request.method,
                    None,
                    "scanner",
                    request,
                    access=True,
                    relayed_from=relayed_from,
                )
            )
            return False
        self._stamp_via(request, source)
        key = TransactionKey.for_request(request)
        tx = self._server_tx.get(key)
        if tx is not None:
            # Not admitted anew: the first copy was judged, and a refused request's
            # transaction answers its retransmissions and ACK too.
            if request.method == "ACK":
                if isinstance(tx, InviteServerTransaction):
                    if tx.state is InviteServerState.ACCEPTED:
                        # ACK for 2xx reusing the branch
                        return self._receive_ack(request, now)
                    tx.receive_ack(now)
                return False
            if request.method == tx.request.method:
                tx.receive_retransmission()
                return False
        if request.method == "ACK":
            return self._receive_ack(request, now)  # follows its dialog, header or not
        if relayed is not None and relayed.origin is None:
            problem = relayed.error
            if problem is None and request.method == "INVITE" and request.to.tag is None:
                # A new call through the proxy must say whose it is: judging it as the
                # proxy's own would let every source in or keep every trunk out.
                problem = "missing"
            if problem is not None:
                self._reply_once(
                    request, source, now, 400, phrase=f"Bad {SOURCE_HEADER} ({problem})"
                )
                self._events.append(
                    RequestRejected(
                        source, request.method, 400, "bad_source_header", request, detail=problem
                    )
                )
                return False
        trunk: str | None = None
        # The trusted proxy's own requests (its OPTIONS probes) are a known source's.
        own = relayed is not None and relayed_from is None
        if self.access is not None and not own and not self._belongs_to_a_call(request):
            admitted = self._admit(self.access, request, source, now, relayed_from)
            if admitted is None:
                return False
            trunk = admitted.trunk
        rejection = self._validate(request)
        if rejection is None:
            rejection = _check_transport(request, source)
        if rejection is not None:
            status, reason, extra = rejection
            self._reply_once(request, source, now, status, extra=extra)
            self._events.append(
                RequestRejected(
                    source,
                    request.method,
                    status,
                    reason,
                    request,
                    trunk=trunk,
                    relayed_from=relayed_from,
                )
            )
            return False
        if request.method == "CANCEL":
            self._receive_cancel(request, source, now)
        elif request.to.tag is not None:
            self._receive_in_dialog(request, source, now)
        elif request.method == "INVITE":
            return self._receive_invite(request, key, source, now, trunk, relayed_from)
        elif request.method == "OPTIONS":
            if self.busy:
                self._reply_once(request, source, now, 503, extra=self._busy_headers)
            else:
                self._reply_once(request, source, now, 200, extra=self._capabilities())
        else:  # BYE, INFO or NOTIFY outside any dialog
            self._reply_once(request, source, now, 481)
        return True

    def _belongs_to_a_call(self, request: Request) -> bool:
        """In-dialog requests of an admitted call, and a CANCEL of an INVITE we hold,
        need no admission of their own (ACKs never get this far)."""
        if request.method == "CANCEL":
            return TransactionKey(*_key_fields(request, "INVITE")) in self._server_tx
        if request.to.tag is None:
            return False
        dialog_id = DialogId(request.call_id, request.to.tag, request.from_.tag or "")
        return dialog_id in self._dialogs or dialog_id in self._early

    def _admit(
        self,
        access: AccessPolicy,
        request: Request,
        source: Address,
        now: float,
        relayed_from: Address | None,
    ) -> Allowed | None:
        """The access policy's verdict on ``request`` from its origin (``relayed_from``
        when a trusted proxy relayed it, else ``source``); None when the request was
        challenged or refused (and answered 401, the refusal status, or not at all)."""
        origin = relayed_from or source
        decision = access.check(request, origin[0], now)
        if isinstance(decision, Allowed):
            return decision
        if self.guard is not None and decision.reason in _FAILED_AUTH:
            self.guard.offence(origin[0], Offence.AUTH_FAILURE, now)
        status: int | None
        if isinstance(decision, Challenged):
            # RFC 3261 §22.2: a UAS challenges with 401 and WWW-Authenticate.
            status = 401
            self._reply_once(request, source, now, status, extra=decision.headers)
        else:
            status = access.refuse_status
            if status is not None:
                self._reply_once(request, source, now, status)
        self._events.append(
            RequestRejected(
                source,
                request.method,
                status,
                decision.reason,
                request,
                access=True,
                relayed_from=relayed_from,
            )
        )
        return None

    def _stamp_via(self, request: Request, source: Address) -> None:
        """RFC 3261 §18.2.1 ``received`` and RFC 3581 §4 ``rport`` on the top Via.

        Responses always go back to the source address, which is what rport
        asks for and what works behind NAT; the stamped Via tells the peer so.
        """
        top = request.vias[0]
        if top.host.strip("[]") != source[0] or "rport" in top.params:
            top.params["received"] = source[0]
        if "rport" in top.params:
            top.params["rport"] = str(source[1])
        request.set_vias(request.vias)

    def _validate(self, request: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
        """RFC 3261 §8.2.1-§8.2.3 checks, in the order the RFC gives them.

        Returns the status, a reason word for logs and records, and extra headers.
        """
        if request.method not in ALLOWED_METHODS:
            return 501, "method_not_implemented", [("Allow", ALLOW)]
        if request.uri.scheme.lower() not in SUPPORTED_SCHEMES:
            return 416, "unsupported_uri_scheme", []
        if request.method != "CANCEL":
            required = [
                opt for value in request.headers.get_all("Require") if (opt := value.strip())
            ]
            unknown = [
                tag
                for value in required
                for tag in (t.strip() for t in value.split(","))
                if tag and tag.lower() not in SUPPORTED_EXTENSIONS
            ]
            if unknown:
                return 420, "bad_extension", [("Unsupported", ", ".join(unknown))]
        if request.method == "INVITE" and request.body:
            content_type = (request.headers.get("Content-Type") or "").split(";")[0]
            if content_type.strip().lower() != ACCEPTED_BODY:
                return 415, "unsupported_media_type", [("Accept", ACCEPTED_BODY)]
        if request.method == "INVITE" and not _accepts_sdp(request.headers.get_all("Accept")):
            # We can only answer with SDP (RFC 4475 §3.4.1, sdp01).
            return 415, "unsupported_media_type", [("Accept", ACCEPTED_BODY)]
        if (
            request.method == "INVITE"
            and request.to.tag is None
            and not _dialog_headers_ok(request)
        ):
            # The dialog's route set and remote target come from these (RFC 3261 §12.1.1):
            # refuse now rather than fail when answering.
            return 400, "bad_dialog_headers", []
        return None

    def set_busy(self, reason: str | None, retry_after: int = BUSY_RETRY_AFTER) -> None:
        """Answer OPTIONS outside a dialog 503 while ``reason`` is set (None: 200 again),
        with ``Retry-After: retry_after`` (RFC 3261 §21.5.4) and ``reason`` in a Reason
        header (RFC 3326), as the runtime answers a new INVITE meanwhile."""
        self.busy = reason is not None
        if reason is not None:
            self._busy_headers = [
                ("Retry-After", str(retry_after)),
                ("Reason", f'SIP ;cause=503 ;text="{reason}"'),
            ]

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", ACCEPTED_BODY), ("Supported", SUPPORTED)]

    def _receive_invite(
        self,
        request: Request,
        key: TransactionKey,
        source: Address,
        now: float,
        trunk: str | None = None,
        relayed_from: Address | None = None,
    ) -> bool:
        """A new INVITE the access policy let in; False when it is refused here (482,
        503 ``source_busy``)."""
        origin = (request.call_id, request.from_.tag or "", request.cseq.seq)
        existing = self._origins.get(origin)
        if existing is not None:
            assert existing.transaction is not None  # an INVITE we received
            if existing.transaction.request.vias[0].branch == request.vias[0].branch:
                return True  # a late retransmission of an INVITE already handled
            # RFC 3261 §8.2.2.2: the same request arriving by another path.
            self._reply_once(request, source, now, 482)
            return False
        host = (relayed_from or source)[0]
        if self.guard is not None and self._source_busy(self.guard, host):
            # Per-source limit on open INVITE transactions (the ones that wait on us).
            self._reply_once(request, source, now, 503, extra=[("Retry-After", "5")])
            self._events.append(
                RequestRejected(
                    source,
                    "INVITE",
                    503,
                    "source_busy",
                    request,
                    trunk=trunk,
                    relayed_from=relayed_from,
                )
            )
            return False
        timer = self._timer_answer(request, now)
        if timer is not None and timer.status == 422:
            # RFC 4028 §9: the interval is below our Min-SE; the caller may retry with it.
            self._reply_once(request, source, now, 422, extra=timer.headers)
            self._events.append(
                RequestRejected(
                    source,
                    "INVITE",
                    422,
                    "session_interval_too_small",
                    request,
                    trunk=trunk,
                    relayed_from=relayed_from,
                )
            )
            return False
        tx = InviteServerTransaction(request, source, self._outbox, now)
        self._add_server_tx(key, tx)
        call = InboundCall(
            id=self.new_token(),
            invite=request,
            source=source,
            local_tag=self.new_token(),
            transaction=tx,
            trunk=trunk,
            pending_timer=timer,
            peer_allows_update=allows(request.headers, "UPDATE"),
            relayed_from=relayed_from,
        )
        self._origins[origin] = call
        self._calls_by_tx[key] = call
        self._by_call_id[request.call_id] = call
        # RFC 3261 §17.2.1: 100 Trying at once, without a To tag (§8.2.6.1).
        tx.send_response(make_response(request, 100), now)
        self._events.append(IncomingCall(call))
        return True

    def _timer_answer(self, request: Request, now: float) -> TimerAnswer | None:
        """The session timer a refresh request (INVITE, re-INVITE, UPDATE) gets, or None
        with session timers off."""
        if self.session_expires is None:
            return None
        return negotiate_refresh(
            request.headers,
            now,
            session_expires_default=self.session_expires,
            our_min_se=self.min_se,
        )

    def _source_busy(self, guard: SourceGuard, host: str) -> bool:
        """True when untrusted ``host`` already has its limit of unanswered INVITEs (trunk
        networks, most of the traffic, are exempt: checked first, before any counting)."""
        if guard.trusted(host):
            return False
        open_here = sum(
            1
            for call in self._calls_by_tx.values()
            if call.state is CallState.OFFERED and call.origin[0] == host
        )
        return open_here >= guard.limits.transactions_per_source

    def _receive_cancel(self, request: Request, source: Address, now: float) -> None:
        """RFC 3261 §9.2: 200 to the CANCEL, then 487 to the INVITE if still pending."""
        invite_key = TransactionKey(*_key_fields(request, "INVITE"))
        call = self._calls_by_tx.get(invite_key)
        if call is None:
            self._reply_once(request, source, now, 481)
            return
        self._reply_once(request, source, now, 200, to_tag=call.local_tag)
        tx = call.transaction
        if call.state is CallState.OFFERED and tx is not None and not tx.final_sent:
            self._send_final(call, 487, now)
            self._events.append(CallCancelled(call))

    def _receive_in_dialog(self, request: Request, source: Address, now: float) -> None:
        dialog_id = DialogId(request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self._dialogs.get(dialog_id)
        if request.method == "PRACK":
            self._receive_prack(call or self._early.get(dialog_id), request, source, now)
            return
        if call is None or call.dialog is None:
            self._reply_once(request, source, now, 481)  # RFC 3261 §12.2.2
            return
        if not call.dialog.accept_remote_cseq(request.cseq.seq):
            self._reply_once(request, source, now, 500)
            return
        if request.method == "BYE":
            self._reply_once(request, source, now, 200)
            # A BYE before the ACK: the dialog is gone, the 2xx need not reach anyone.
            if call.transaction is not None:
                call.transaction.dialog_ended()
            self._end(call)
            self._events.append(ByeReceived(call))
        elif request.method == "INVITE":
            self._receive_reinvite(call, request, source, now)
        elif request.method == "UPDATE":
            self._receive_update(call, request, source, now)
        elif request.method == "INFO":
            self._reply_once(request, source, now, 200)
            self._events.append(InfoReceived(call, request))
        elif request.method == "NOTIFY":
            self._reply_once(request, source, now, 200)
            self._events.append(NotifyReceived(call, request))
        else:  # OPTIONS inside the dialog
            self._reply_once(request, source, now, 200, extra=self._capabilities())
            self._events.append(RequestAnswered(call, request, 200))

    def _receive_prack(
        self, call: InboundCall | None, request: Request, source: Address, now: float
    ) -> None:
        """RFC 3262 §3: a PRACK naming our reliable 180 gets 200 and stops its
        retransmissions; any other gets 481 (also once our 200 has replaced the 180)."""
        reliable = call.reliable if call is not None else None
        if call is None or reliable is None:
            self._reply_once(request, source, now, 481)
            return
        if call.dialog is not None and not call.dialog.accept_remote_cseq(request.cseq.seq):
            self._reply_once(request, source, now, 500)
            return
        # A PRACK crossing our 2xx still names our 180: it is answered 200 too.
        self._reply_once(request, source, now, 200 if reliable.prack(request) else 481)

    def _reliable_due(self, call: InboundCall, now: float) -> None:
        reliable = call.reliable
        assert reliable is not None
        tx = call.transaction
        if tx is not None and call.state is CallState.OFFERED and not tx.final_sent:
            if reliable.on_timer(now) and call.provisional is not None:
                tx.send_response(call.provisional, now)
            self._arm_session_timer(call)

    def _stop_reliable(self, call: InboundCall) -> None:
        """The INVITE got its final response: no provisional response follows it."""
        if call.reliable is not None:
            call.reliable.stop()
            call.provisional = None
            self._early.pop(
                DialogId(call.invite.call_id, call.local_tag, call.invite.from_.tag or ""), None
            )

    def _receive_reinvite(
        self, call: InboundCall, request: Request, source: Address, now: float
    ) -> None:
        if call.reinvite is not None and not call.reinvite.final_sent:
            # RFC 3261 §14.2: a second INVITE while one is pending gets 500 + Retry-After.
            self._reply_once(request, source, now, 500, extra=[("Retry-After", "1")])
            return
        if call.refresh_pending == "INVITE" or call.update is not None:
            # RFC 3261 §14.2: our own re-INVITE is in progress (glare); RFC 3311 §5.2:
            # so is the offer of an UPDATE being answered.
            self._reply_once(request, source, now, 491)
            return
        timer = self._timer_answer(request, now)
        if timer is not None and timer.status == 422:
            self._reply_once(request, source, now, 422, extra=timer.headers)
            return
        call.pending_timer = timer
        key = TransactionKey.for_request(request)
        tx = InviteServerTransaction(request, source, self._outbox, now)
        self._add_server_tx(key, tx)
        tx.send_response(make_response(request, 100), now)
        call.reinvite = tx
        self._calls_by_tx[key] = call
        self._events.append(ReInviteReceived(call, request))

    def _receive_update(
        self, call: InboundCall, request: Request, source: Address, now: float
    ) -> None:
        """RFC 3311: an UPDATE without a body is a session refresh, answered here; one
        with an SDP offer goes to the call layer (:class:`UpdateReceived`), which answers
        it at once like a re-INVITE's offer, the dialog unchanged."""
        if request.body:
            content_type = (request.headers.get("Content-Type") or "").split(";")[0]
            if content_type.strip().lower() != ACCEPTED_BODY:
                self._reply_once(request, source, now, 415, extra=[("Accept", ACCEPTED_BODY)])
                return
            pending = call.reinvite is not None and not call.reinvite.final_sent
            if call.refresh_pending == "INVITE" or call.update is not None or pending:
                # RFC 3311 §5.2: an offer while one is outstanding: 491 when it is ours,
                # 500 with Retry-After when it is the peer's.
                if call.refresh_pending == "INVITE":
                    self._reply_once(request, source, now, 491)
                else:
                    self._reply_once(request, source, now, 500, extra=[("Retry-After", "1")])
                return
        timer = self._timer_answer(request, now)
        if timer is not None and timer.status == 422:
            self._reply_once(request, source, now, 422, extra=timer.headers)
            return
        if not request.body:
            extra = [
                ("Contact", f"<{self._contact_uri(call, call.invite)}>"),
                ("Supported", SUPPORTED),
            ]
            extra.extend(self._timer_headers(timer))
            self._reply_once(request, source, now, 200, extra=extra)
            self._start_timer(call, timer, now)
            self._events.append(RequestAnswered(call, request, 200))
            return
        key = TransactionKey.for_request(request)
        tx = NonInviteServerTransaction(request, source, self._outbox)
        self._add_server_tx(key, tx)
        call.update = tx
        call.pending_update_timer = timer
        self._events.append(UpdateReceived(call, request))

    def answer_update(self, call: InboundCall, sdp: bytes, now: float) -> None:
        """200 OK with ``sdp``, our answer to the pending UPDATE's offer (RFC 3311 §5.2)."""
        tx = call.update
        if tx is None:
            return
        call.update = None
        response = make_response(tx.request, 200)
        response.headers.add("Contact", f"<{self._contact_uri(call, call.invite)}>")
        response.headers.add("Supported", SUPPORTED)
        for name, value in self._timer_headers(call.pending_update_timer):
            response.headers.add(name, value)
        response.headers.add("Content-Type", ACCEPTED_BODY)
        response.body = sdp
        call.local_sdp = sdp
        tx.send_response(response, now)
        self._start_timer(call, call.pending_update_timer, now)
        call.pending_update_timer = None

    def reject_update(self, call: InboundCall, status: int, now: float) -> None:
        """An error to the pending UPDATE; the session goes on unchanged (RFC 3311 §5.2)."""
        tx = call.update
        if tx is None:
            return
        call.update = None
        call.pending_update_timer = None
        tx.send_response(make_response(tx.request, status), now)

    @staticmethod
    def _timer_headers(timer: TimerAnswer | None) -> list[tuple[str, str]]:
        return [] if timer is None else list(timer.headers)

    def _receive_ack(self, request: Request, now: float) -> bool:
        """An ACK outside any transaction we hold: True when it is one of our dialogs'."""
        dialog_id = DialogId(request.call_id, request.to.tag or "", request.from_.tag or "")
        call = self._dialogs.get(dialog_id)
        if call is None:
            return False  # RFC 3261 §17.2.3: a stray ACK is dropped, never answered
        # The ACK names the INVITE it confirms by CSeq number (RFC 3261 §13.2.2.4).
        for tx in (call.transaction, call.reinvite):
            if tx is not None and tx.request.cseq.seq == request.cseq.seq:
                tx.ack_received()
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            if call.dialog is not None:
                call.dialog.state = DialogState.CONFIRMED
            self._events.append(CallConfirmed(call, request))
            if call.hangup_pending:
                self.hangup(call, now)
        return True

    # ------------------------------------------------------------------ call layer

    def ring(self, call: InboundCall, now: float) -> None:
        """Send 180 Ringing (with our tag, so 180 and 200 share the dialog)."""
        tx = call.transaction
        if tx is None or tx.final_sent:
            return
        response = make_response(call.invite, 180, to_tag=call.local_tag)
        self._add_dialog_headers(response, call.invite, call)
        if call.reliable is None and requires_100rel(call.invite):
            # RFC 3262 §3: the caller requires it: Require/RSeq, retransmitted until PRACK.
            reliable = ReliableProvisional.start(
                1 + int(self.random() * (RSEQ_MAX // 2)), call.invite.cseq.seq, now
            )
            for name, value in reliable.headers():
                response.headers.add(name, value)
            call.reliable = reliable
            call.provisional = response
            early = DialogId(call.invite.call_id, call.local_tag, call.invite.from_.tag or "")
            self._early[early] = call
            self._arm_session_timer(call)
        tx.send_response(response, now)

    def answer(self, call: InboundCall, sdp: bytes, now: float) -> None:
        """Send 200 OK with our SDP answer and create the dialog (RFC 3261 §13.3.1.4)."""
        tx = call.transaction
        if call.state is not CallState.OFFERED or tx is None or tx.final_sent:
            raise RuntimeError(f"call {call.id} cannot be answered in state {call.state.name}")
        self._stop_reliable(call)
        response = make_response(call.invite, 200, to_tag=call.local_tag)
        self._add_dialog_headers(response, call.invite, call)
        for name, value in self._timer_headers(call.pending_timer):
            response.headers.add(name, value)
        response.headers.add("Content-Type", ACCEPTED_BODY)
        response.body = sdp
        call.local_sdp = sdp
        call.final_status = 200
        tx.send_response(response, now)
        call.dialog = Dialog.from_invite(call.invite, call.local_tag, _initial_cseq())
        call.state = CallState.ANSWERED
        self._dialogs[call.dialog.id] = call
        self._start_timer(call, call.pending_timer, now)
        call.pending_timer = None

    def answer_reinvite(self, call: InboundCall, sdp: bytes, now: float) -> None:
        """200 OK to the pending re-INVITE with ``sdp`` (our answer, RFC 3264 §8)."""
        tx = call.reinvite
        if tx is None or tx.final_sent:
            return
        response = make_response(tx.request, 200, to_tag=call.local_tag)
        self._add_dialog_headers(response, tx.request, call)
        for name, value in self._timer_headers(call.pending_timer):
            response.headers.add(name, value)
        response.headers.add("Content-Type", ACCEPTED_BODY)
        response.body = sdp
        call.local_sdp = sdp
        tx.send_response(response, now)
        self._start_timer(call, call.pending_timer, now)
        call.pending_timer = None

    def reject_reinvite(self, call: InboundCall, status: int, now: float) -> None:
        """An error to the pending re-INVITE; the call goes on unchanged (RFC 3261 §14.2)."""
        tx = call.reinvite
        if tx is None or tx.final_sent:
            return
        call.pending_timer = None
        tx.send_response(make_response(tx.request, status, to_tag=call.local_tag), now)

    def reject(
        self,
        call: InboundCall,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer the INVITE with a final error response (3xx-6xx)."""
        tx = call.transaction
        if call.state is not CallState.OFFERED or tx is None or tx.final_sent:
            return
        self._send_final(call, status, now, reason=reason, headers=headers)

    def refer(
        self, call: InboundCall, target: str, now: float, headers: dict[str, str] | None = None
    ) -> bool:
        """Blind transfer (RFC 3515): REFER the caller to ``target`` (a sip:/sips:/tel: URI,
        sent as given in Refer-To). ``headers`` are added to the REFER. False when the
        call is not answered. The outcome arrives as :class:`ReferCompleted` and then
        :class:`NotifyReceived` events carrying the transfer's progress (sipfrag)."""
        if call.state not in (CallState.ANSWERED, CallState.CONFIRMED) or call.dialog is None:
            return False
        extra = [("Refer-To", f"<{target}>"), ("Referred-By", f"<{call.dialog.local_party.uri}>")]
        extra.extend((headers or {}).items())
        try:
            self._send_in_dialog(call, "REFER", now, extra)
        except (SipParseError, ValueError):
            return False  # headers that do not make a valid request: no REFER goes out
        return True

    def _send_in_dialog(
        self,
        call: InboundCall,
        method: str,
        now: float,
        extra: Iterable[tuple[str, str]] = (),
        *,
        body: bytes = b"",
        answering: _ClientContext | None = None,
        challenge: Challenge | None = None,
    ) -> None:
        """Send ``method`` in ``call``'s dialog (a new CSeq, RFC 3261 §12.2.1.1). With
        ``answering``: that request again, with credentials for ``challenge``."""
        assert call.dialog is not None
        extra = tuple(extra)
        request, destination = call.dialog.create_request(method, self._via(call))
        destination = self._destination(call, destination)
        if method in ("REFER", "INVITE", "UPDATE"):
            # RFC 3515 §2.4.1, RFC 3261 §14.1, RFC 3311 §5.1: target refresh requests
            # carry a Contact.
            request.headers.add("Contact", f"<{self._contact_uri(call, call.invite)}>")
        if method in ("INVITE", "UPDATE"):
            request.headers.add("Allow", ALLOW)
        for name, value in extra:
            request.headers.add(name, value)
        challenges = 0
        if answering is not None and challenge is not None and call.credentials is not None:
            # RFC 3261 §22.2: the same request, a new CSeq, credentials for the challenge.
            username, password = call.credentials
            value = authorization(
                challenge,
                username=username,
                password=password,
                method=method,
                uri=str(request.uri),
                nc=1,
                cnonce=self.new_token(),
            )
            request.headers.add(challenge.answer_header, value)
            challenges = answering.challenges + 1
        request.body = body
        key = TransactionKey.for_request(request)  # parses the request: raises before sending
        tx: ClientTransaction
        if method == "INVITE":
            tx = InviteClientTransaction(request, destination, self._outbox, now)
        else:
            tx = NonInviteClientTransaction(request, destination, self._outbox, now)
        ctx = _ClientContext(call, tx, method, extra=extra, body=body)
        ctx.challenge, ctx.challenges = challenge, challenges
        self._add_client_tx(key, ctx)

    def _answer_challenge(self, ctx: _ClientContext, response: Response, now: float) -> bool:
        """Send ``ctx``'s request again with credentials for the 401/407 ``response``
        (RFC 3261 §22.2); False when it cannot or must not be answered: no credentials
        for the call, no usable challenge, the call over, or ours refused (a second
        challenge of the same realm without ``stale=true``, or too many)."""
        call = ctx.call
        if (
            response.status not in (401, 407)
            or call.credentials is None
            or call.dialog is None
            or call.state is CallState.ENDED
            or ctx.challenges >= MAX_IN_DIALOG_CHALLENGES
        ):
            return False
        challenge = pick_challenge(
            response.headers.get_lines("WWW-Authenticate"),
            response.headers.get_lines("Proxy-Authenticate"),
        )
        if challenge is None:
            return False
        previous = ctx.challenge
        if previous is not None and previous.realm == challenge.realm and not challenge.stale:
            return False  # our credentials were refused
        self._send_in_dialog(
            call, ctx.method, now, ctx.extra, body=ctx.body, answering=ctx, challenge=challenge
        )
        return True

    def _via(self, call: InboundCall) -> str:
        transport = call.transport
        port = self.local_port if transport is not Transport.TLS else self.tls_port or 5061
        return (
            f"SIP/2.0/{transport.value} {_host_for_header(self._local_host(call))}:{port}"
            f";branch=z9hG4bK{self.new_token()};rport"
        )

    def _destination(self, call: InboundCall, destination: Address) -> Address:
        if isinstance(call.source, StreamAddress):
            # Connection reuse: the call's own TCP/TLS connection; the dialog's next hop
            # when it is gone (RFC 3261 §18.1.1).
            host, source_port = call.source
            return StreamAddress(host, source_port, call.transport, target=destination)
        return destination

    def dial(self, request: DialRequest, call_id: str, now: float) -> OutboundInvite:
        """Place a call (sip/outbound.py): the INVITE goes out now; ``call_id`` names the
        call in the events (and in ``OutboundAnswered.call.id``). ValueError when
        ``request``'s Call-ID is in use here."""
        if request.call_id in self._outbound or request.call_id in self._by_call_id:
            raise ValueError(f"Call-ID {request.call_id} is in use")
        attempt = OutboundInvite(
            call_id, request, self._outbox, self._events, now, new_token=self.new_token
        )
        self._outbound[request.call_id] = attempt
        self._outbound_changed(attempt, now)
        return attempt

    def cancel_dial(self, attempt: OutboundInvite, now: float) -> None:
        """Give up an outbound call before its answer (CANCEL, RFC 3261 §9.1); its
        :class:`OutboundEnded` follows. No-op once answered or over."""
        attempt.cancel(now)
        self._outbound_changed(attempt, now)

    def connection_failed(
        self, transport: Transport, host: str, port: int, reason: str, now: float
    ) -> None:
        """The runtime could not open a TCP/TLS connection to ``host``:``port``: the
        outbound INVITEs waiting for it fail now (RFC 3261 §8.1.3.1), each with its
        :class:`OutboundEnded`."""
        for attempt in list(self._outbound.values()):
            attempt.connection_failed(transport, host, port, reason)
            self._outbound_changed(attempt, now)

    def _outbound_changed(self, attempt: OutboundInvite, now: float) -> None:
        """After any input to ``attempt``: adopt its dialog when it was just answered,
        re-arm its deadline, forget it when it is done."""
        if attempt.state is OutboundState.ANSWERED and attempt.call is None:
            self._adopt(attempt, now)
        if attempt.done:
            if self._outbound.get(attempt.call_id) is attempt:
                del self._outbound[attempt.call_id]
            return
        deadline = attempt.deadline
        if deadline is not None:
            heapq.heappush(self._outbound_timers, (deadline, next(self._timer_seq), attempt))

    def _adopt(self, attempt: OutboundInvite, now: float) -> None:
        """The answered outbound call's dialog joins ours (RFC 3261 §12.1.2): in-dialog
        requests, our BYE and the session timer work as for an inbound call."""
        dialog, response = attempt.dialog, attempt.answer
        assert dialog is not None and response is not None
        call = InboundCall(
            id=attempt.id,
            invite=attempt.invite,
            source=attempt.destination,
            local_tag=attempt.from_tag,
            transaction=None,
            state=CallState.CONFIRMED,
            dialog=dialog,
            local_sdp=attempt.dial.sdp,
            final_status=response.status,
            trunk=attempt.dial.trunk,
            peer_allows_update=allows(response.headers, "UPDATE"),
            outbound=True,
        )
        username, password = attempt.dial.username, attempt.dial.password
        if username is not None and password is not None:
            call.credentials = (username, password)  # the trunk's, for its challenges
        attempt.call = call
        self._dialogs[dialog.id] = call
        self._by_call_id[call.invite.call_id] = call
        asked = attempt.session_expires
        if asked is not None and self.session_expires is not None:
            # RFC 4028 §7.2: the 2xx's Session-Expires names the refresher (uac: us);
            # without one the far end does no timers and we may refresh ourselves.
            call.timer = timer_from_response(response.headers, SessionTimer(asked, True, now), now)
            self._arm_session_timer(call)
        self._events.append(OutboundAnswered(attempt, call, response.body or attempt.early_sdp))

    def hangup(self, call: InboundCall, now: float) -> None:
        """End an answered call with BYE (RFC 3261 §15.1.1); no-op if already ending."""
        if call.state not in (CallState.ANSWERED, CallState.CONFIRMED) or call.dialog is None:
            return
        tx = call.transaction
        if call.state is CallState.ANSWERED and tx is not None and tx.awaiting_ack:
            # RFC 3261 §15: no BYE before the ACK of our 2xx (or its timeout, §13.3.1.4);
            # the BYE goes out when either comes.
            call.hangup_pending = True
            return
        self._send_in_dialog(call, "BYE", now)
        call.state = CallState.ENDING
        call.dialog.state = DialogState.TERMINATED
        self._dialogs.pop(call.dialog.id, None)

    # ------------------------------------------------------------------ helpers

    def _send_final(
        self,
        call: InboundCall,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._stop_reliable(call)
        response = make_response(call.invite, status, reason, to_tag=call.local_tag)
        for name, value in headers:
            response.headers.add(name, value)
        call.final_status = status
        assert call.transaction is not None  # only an INVITE we received gets one
        call.transaction.send_response(response, now)
        call.state = CallState.ENDED

    def _add_dialog_headers(self, response: Response, request: Request, call: InboundCall) -> None:
        # RFC 3261 §12.1.1: dialog-creating responses copy Record-Route and
        # carry our Contact.
        for value in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
        response.headers.add("Contact", f"<{self._contact_uri(call, request)}>")
        response.headers.add("Allow", ALLOW)
        response.headers.add("Supported", SUPPORTED)

    def _local_host(self, call: InboundCall) -> str:
        """Our host for ``call``'s Via and Contact: ``local_host_v6`` for a caller whose
        source is IPv6 (not IPv4-mapped), else ``local_host``."""
        if self.local_host_v6 is not None and _is_ipv6(call.source[0]):
            return self.local_host_v6
        return self.local_host

    def _contact_uri(self, call: InboundCall, invite: Request) -> str:
        """Our Contact for a dialog over ``transport``: ``;transport=tcp`` for TCP
        (RFC 3261 §19.1.1); for TLS a sips: URI on the TLS port when the dialog is SIPS
        (RFC 3261 §12.1.1: the INVITE's Request-URI, else its top Record-Route, else its
        Contact is a SIPS URI), else a sip: URI with ``;transport=tls``. A sips: Contact
        for a dialog the caller set up with sip: URIs would make its in-dialog requests
        SIPS, which UAs that dial ``sip:...;transport=tls`` (many trunks; baresip's libre
        refuses outright) cannot send."""
        transport = call.transport
        host = _host_for_header(self._local_host(call))
        if transport is Transport.TLS:
            if _dialog_is_sips(invite):
                return f"sips:{host}:{self.tls_port or 5061}"
            return f"sip:{host}:{self.tls_port or 5061};transport=tls"
        if transport is Transport.TCP:
            return f"sip:{host}:{self.local_port};transport=tcp"
        return f"sip:{host}:{self.local_port}"

    def _reply_once(
        self,
        request: Request,
        source: Address,
        now: float,
        status: int,
        *,
        extra: Iterable[tuple[str, str]] = (),
        to_tag: str | None = None,
        phrase: str | None = None,
    ) -> None:
        """Answer a non-INVITE request (or reject an INVITE) inside a server transaction.

        The transaction keeps the response so retransmissions of the request
        are answered from it (RFC 3261 §17.2.2), never passed up again.
        """
        key = TransactionKey.for_request(request)
        if to_tag is None and request.to.tag is None and status > 100:
            to_tag = self.new_token()
        response = make_response(request, status, phrase, to_tag=to_tag)
        for name, value in extra:
            response.headers.add(name, value)
        tx: ServerTransaction
        if request.method == "INVITE":
            tx = InviteServerTransaction(request, source, self._outbox, now)
        else:
            tx = NonInviteServerTransaction(request, source, self._outbox)
        self._add_server_tx(key, tx)
        tx.send_response(response, now)

    def _invite_transaction_ended(
        self, key: TransactionKey, tx: InviteServerTransaction, now: float
    ) -> None:
        del self._server_tx[key]
        call = self._calls_by_tx.pop(key, None)
        if call is None:
            return
        if tx.outcome is TransactionOutcome.ACK_TIMEOUT and call.state is CallState.ANSWERED:
            if call.hangup_pending:
                # RFC 3261 §13.3.1.4: no ACK for 64*T1; the session ends with a BYE.
                self.hangup(call, now)
            else:
                self._events.append(AckTimeout(call))
        if call.transaction is tx:
            self._origins.pop(
                (call.invite.call_id, call.invite.from_.tag or "", call.invite.cseq.seq), None
            )
            self._forget_if_done(call)

    def _end(self, call: InboundCall) -> None:
        call.state = CallState.ENDED
        if call.dialog is not None:
            call.dialog.state = DialogState.TERMINATED
            self._dialogs.pop(call.dialog.id, None)
        self._forget_if_done(call)

    def _client_done(
        self,
        ctx: _ClientContext,
        status: int | None,
        response: Response | None = None,
        now: float = 0.0,
    ) -> None:
        if ctx.method in ("INVITE", "UPDATE"):
            if status is None or response is not None:
                self._refresh_answered(ctx, response, now)
            return
        if ctx.method == "REFER":
            self._events.append(ReferCompleted(ctx.call, status))
            return
        ctx.call.state = CallState.ENDED
        self._forget_if_done(ctx.call)
        self._events.append(ByeCompleted(ctx.call, status))


def _key_fields(request: Request, method: str) -> tuple[str, str, str]:
    key = TransactionKey.for_request(request)
    return key.branch, key.sent_by, method


def _check_transport(
    request: Request, source: Address
) -> tuple[int, str, list[tuple[str, str]]] | None:
    """A sips: Request-URI demands TLS on every hop (RFC 3261 §26.2.2, RFC 5630 §3.1.2):
    over UDP or TCP it is refused with 416 Unsupported URI Scheme, the scheme being
    unusable on the transport it came on (the caller may retry over TLS)."""
    if request.uri.scheme.lower() == "sips" and transport_of(source) is not Transport.TLS:
        return 416, "sips_without_tls", []
    return None


def _dialog_headers_ok(request: Request) -> bool:
    """Record-Route entries and the Contact parse as name-addrs with SIP or SIPS URIs;
    an INVITE carries exactly one Contact, not * (RFC 3261 §8.1.1.8): our in-dialog
    requests (BYE, REFER) are sent there."""
    try:
        values = list(request.headers.get_all("Record-Route"))
        contacts = request.headers.get_all("Contact")
        if len(contacts) != 1 or contacts[0].strip() == "*":
            return False
        values.extend(contacts)
        for value in values:
            if NameAddr.parse(value).uri.scheme.lower() not in ("sip", "sips"):
                return False
    except SipParseError:
        return False
    return True


def _dialog_is_sips(invite: Request) -> bool:
    """RFC 3261 §12.1.1: whether the dialog ``invite`` sets up is SIPS: its Request-URI,
    else its top Record-Route (when it has one), else its Contact is a SIPS URI."""
    if invite.uri.scheme.lower() == "sips":
        return True
    routes = invite.headers.get_all("Record-Route")
    if routes:
        return NameAddr.parse(routes[0]).uri.scheme.lower() == "sips"
    contacts = invite.contacts
    return bool(contacts) and contacts[0].uri.scheme.lower() == "sips"


def _accepts_sdp(values: list[str]) -> bool:
    """RFC 3261 §8.2.3: no Accept header means application/sdp is acceptable."""
    if not values:
        return True
    for value in values:
        media = value.split(";")[0].strip().lower()
        if media in ("application/sdp", "application/*", "*/*", ""):
            return True
    return False


def _initial_cseq() -> int:
    # RFC 3261 §8.1.1.5: the first CSeq is arbitrary but below 2**31.
    return secrets.randbelow(2**30)


def _is_ipv6(host: str) -> bool:
    """True for an IPv6 address that is not IPv4-mapped (``::ffff:a.b.c.d`` is an IPv4
    peer on a dual-stack socket)."""
    return ":" in host and not host.lower().startswith("::ffff:")


def _host_for_header(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _timer_deadline(call: InboundCall) -> float | None:
    """The deadline of ``call``'s own timer: the next retransmission of its reliable 180
    before the answer (RFC 3262), its session timer after it (RFC 4028); None when it has
    none (any more)."""
    if call.reliable is not None and call.state is CallState.OFFERED:
        return call.reliable.deadline
    timer = call.timer
    if timer is None or call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
        return None
    return timer.deadline
