"""SIP transactions over an unreliable transport (RFC 3261 §17, RFC 6026).

Each transaction is a small state machine driven from outside: the UA core
feeds it requests or responses and the current time ``now``, and asks it for
its next deadline with :attr:`deadline`. When that time has come, the caller
invokes :meth:`on_timer`. Bytes to send are appended to the ``outbox`` list
given at construction, as ``(data, address)`` pairs; the caller drains it.
Nothing here reads a clock or touches a socket.

The INVITE server transaction, the non-INVITE server transaction, the non-INVITE client
transaction and the INVITE client transaction (our re-INVITE, and the INVITE of an
outbound call: sip/outbound.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sipbridge.sip.framing import transport_of
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request, Response

Address = tuple[str, int]
Outbox = list[tuple[bytes, Address]]

# RFC 3261 §17.1.1.1 and Table 4: timer values for UDP.
T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMER_H = 64 * T1  # wait time for ACK receipt after a non-2xx final response
TIMER_L = 64 * T1  # RFC 6026 §8.7: how long the Accepted state lasts
TIMER_J = 64 * T1  # non-INVITE server: wait for request retransmissions
TIMER_F = 64 * T1  # non-INVITE client: transaction timeout
TIMER_I = T4  # INVITE server: wait for ACK retransmissions
TIMER_K = T4  # non-INVITE client: wait for response retransmissions
TIMER_B = 64 * T1  # INVITE client: transaction timeout
TIMER_D = 32.0  # INVITE client: wait for final response retransmissions (unreliable)
TIMER_M = 64 * T1  # RFC 6026 §8.4: INVITE client, how long the Accepted state lasts


class InviteServerState(enum.Enum):
    """RFC 3261 §17.2.1 Figure 7, with the Accepted state of RFC 6026 §7.1."""

    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class NonInviteServerState(enum.Enum):
    """RFC 3261 §17.2.2 Figure 8."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class NonInviteClientState(enum.Enum):
    """RFC 3261 §17.1.2 Figure 6."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class InviteClientState(enum.Enum):
    """RFC 3261 §17.1.1 Figure 5, with the Accepted state of RFC 6026 §7.2."""

    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class TransactionOutcome(enum.Enum):
    """Why a transaction ended, for the UA core to act on."""

    NORMAL = "normal"
    ACK_TIMEOUT = "ack_timeout"  # no ACK for our final response (Timer H / L)
    TIMEOUT = "timeout"  # client transaction got no final response (Timer F / B)
    TRANSPORT_ERROR = "transport_error"  # the request could not be sent (§17.1.1.2)


@dataclass(frozen=True, slots=True)
class TransactionKey:
    """RFC 3261 §17.2.3 matching key.

    For RFC 3261 branches (magic cookie ``z9hG4bK``) the key is the branch, the
    sent-by of the top Via and the method, ACK being folded into INVITE. Older
    peers (RFC 2543) get a key built from the fields §17.2.3 lists instead.
    """

    branch: str
    sent_by: str
    method: str

    @classmethod
    def for_request(cls, request: Request) -> TransactionKey:
        via = request.vias[0]
        method = "INVITE" if request.method == "ACK" else request.method
        sent_by = f"{via.host.lower()}:{via.port or 5060}"
        branch = via.branch or ""
        if branch.startswith("z9hG4bK"):
            return cls(branch, sent_by, method)
        # RFC 3261 §17.2.3: RFC 2543 compatibility matching. The To tag is left
        # out because the ACK for a non-2xx carries the tag our response added.
        legacy = "|".join(
            (
                str(request.uri),
                request.from_.tag or "",
                request.call_id,
                str(request.cseq.seq),
                str(via),
            )
        )
        return cls("2543:" + legacy, sent_by, method)

    @classmethod
    def for_response(cls, response: Response) -> TransactionKey:
        """Client-side key (RFC 3261 §17.1.3): branch of the top Via and CSeq method."""
        via = response.vias[0]
        method = response.cseq.method
        sent_by = f"{via.host.lower()}:{via.port or 5060}"
        return cls(via.branch or "", sent_by, method)


class _Watched:
    """What every transaction shares with the UA's timer heap: ``watch`` is called with
    the transaction whenever its deadline may have changed (RFC-independent bookkeeping);
    None: nobody is watching."""

    watch: Callable[[Any], None] | None = None

    def _changed(self) -> None:
        if self.watch is not None:
            self.watch(self)


class _Retransmitting(_Watched):
    """A transaction with a retransmission timer and an end timer: due at the earlier."""

    _retransmit_at: float | None
    _end_at: float | None

    @property
    def deadline(self) -> float | None:
        times = [t for t in (self._retransmit_at, self._end_at) if t is not None]
        return min(times) if times else None


class InviteServerTransaction(_Retransmitting):
    """INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1).

    Created when a new INVITE arrives; it sends 100 Trying at once so the
    caller's INVITE retransmissions stop. The caller then hands it responses
    with :meth:`send_response`, forwards retransmitted INVITEs to
    :meth:`receive_retransmission` and ACKs for a non-2xx response to
    :meth:`receive_ack`, and calls :meth:`on_timer` when :attr:`deadline` is
    reached. :meth:`ack_received` is called by the UA core when the ACK for a
    2xx arrives (that ACK is a separate transaction, RFC 3261 §17.1.1.3).

    The 2xx retransmissions of RFC 3261 §13.3.1.4 belong to the UAS core; they
    live here, in the Accepted state of RFC 6026, because their lifetime is
    exactly that state's.
    """

    def __init__(self, request: Request, source: Address, outbox: Outbox, now: float) -> None:
        self.request = request
        self.source = source
        self.state = InviteServerState.PROCEEDING
        self.outcome = TransactionOutcome.NORMAL
        self.last_response: Response | None = None
        self._outbox = outbox
        self._last_bytes = b""
        self._retransmit_at: float | None = None
        self._interval = T1
        self._end_at: float | None = None

    @property
    def final_sent(self) -> bool:
        return self.state is not InviteServerState.PROCEEDING

    def send_response(self, response: Response, now: float) -> None:
        if self.state is not InviteServerState.PROCEEDING:
            raise RuntimeError(f"cannot send {response.status} in state {self.state.name}")
        self.last_response = response
        self._last_bytes = response.serialize()
        self._outbox.append((self._last_bytes, self.source))
        if response.status < 200:
            return
        # Both branches retransmit T1, 2*T1, ... capped at T2: Timer G for a
        # non-2xx (§17.2.1, unreliable transports only), the 2xx timer of §13.3.1.4
        # for a 2xx (every transport).
        self._interval = T1
        reliable = transport_of(self.source).reliable
        self._retransmit_at = None if reliable and response.status >= 300 else now + T1
        if response.status < 300:
            self.state = InviteServerState.ACCEPTED
            self._end_at = now + TIMER_L
        else:
            self.state = InviteServerState.COMPLETED
            self._end_at = now + TIMER_H
        self._changed()

    def receive_retransmission(self) -> None:
        """A retransmitted INVITE: repeat the last response (§17.2.1).

        In the Accepted state a retransmitted INVITE is absorbed (RFC 6026
        §7.1): the 2xx keeps going out on its own timer.
        """
        if self._last_bytes and self.state in (
            InviteServerState.PROCEEDING,
            InviteServerState.COMPLETED,
        ):
            self._outbox.append((self._last_bytes, self.source))

    def receive_ack(self, now: float) -> None:
        """ACK for a non-2xx final response (same transaction, §17.2.1)."""
        if self.state is InviteServerState.COMPLETED:
            self.state = InviteServerState.CONFIRMED
            self._retransmit_at = None
            self._end_at = now + TIMER_I
            self._changed()

    @property
    def awaiting_ack(self) -> bool:
        """True while our 2xx is retransmitted for want of its ACK (RFC 3261 §13.3.1.4)."""
        return self.state is InviteServerState.ACCEPTED and self._retransmit_at is not None

    def dialog_ended(self) -> None:
        """The dialog our 2xx created is gone (the caller's BYE came before its ACK): stop
        retransmitting the 2xx, whose only purpose was to get that ACK (RFC 3261
        §13.3.1.4, RFC 6026 §8.1); the Accepted state still absorbs late ACKs and
        INVITE retransmissions until Timer L, and no ACK timeout is reported."""
        self.ack_received()

    def ack_received(self) -> None:
        """The UA core matched the ACK for our 2xx: stop retransmitting it."""
        if self.state is InviteServerState.ACCEPTED:
            self._retransmit_at = None
            self._changed()

    def on_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            if self.state is InviteServerState.COMPLETED or (
                self.state is InviteServerState.ACCEPTED and self._retransmit_at is not None
            ):
                self.outcome = TransactionOutcome.ACK_TIMEOUT
            self._terminate()
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._outbox.append((self._last_bytes, self.source))
            self._interval = min(self._interval * 2, T2)
            self._retransmit_at = now + self._interval
            self._changed()

    def _terminate(self) -> None:
        self.state = InviteServerState.TERMINATED
        self._retransmit_at = None
        self._end_at = None


class NonInviteServerTransaction(_Watched):
    """Non-INVITE server transaction (RFC 3261 §17.2.2).

    The caller sends the response with :meth:`send_response`, forwards
    retransmitted requests to :meth:`receive_retransmission` (answered from
    the transaction, never passed up again) and calls :meth:`on_timer` at
    :attr:`deadline` (Timer J).
    """

    def __init__(self, request: Request, source: Address, outbox: Outbox) -> None:
        self.request = request
        self.source = source
        self.state = NonInviteServerState.TRYING
        self.outcome = TransactionOutcome.NORMAL
        self._outbox = outbox
        self._last_bytes = b""
        self._end_at: float | None = None

    @property
    def deadline(self) -> float | None:
        return self._end_at

    def send_response(self, response: Response, now: float) -> None:
        if self.state in (NonInviteServerState.COMPLETED, NonInviteServerState.TERMINATED):
            raise RuntimeError(f"cannot send {response.status} in state {self.state.name}")
        self._last_bytes = response.serialize()
        self._outbox.append((self._last_bytes, self.source))
        if response.status < 200:
            self.state = NonInviteServerState.PROCEEDING
        else:
            self.state = NonInviteServerState.COMPLETED
            self._end_at = now + TIMER_J
            self._changed()

    def receive_retransmission(self) -> None:
        # In Trying the request is discarded; afterwards the last response is
        # repeated (§17.2.2).
        if self.state is not NonInviteServerState.TRYING and self._last_bytes:
            self._outbox.append((self._last_bytes, self.source))

    def on_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            self.state = NonInviteServerState.TERMINATED
            self._end_at = None


class NonInviteClientTransaction(_Retransmitting):
    """Non-INVITE client transaction (RFC 3261 §17.1.2), used for the BYE we send.

    The request goes out on creation. Responses matched by the UA core go to
    :meth:`receive_response`; :meth:`on_timer` runs Timers E, F and K. When
    the state becomes TERMINATED, :attr:`final_status` holds the final status
    code, or None with :attr:`outcome` TIMEOUT when Timer F fired.
    """

    def __init__(self, request: Request, destination: Address, outbox: Outbox, now: float) -> None:
        self.request = request
        self.destination = destination
        self.state = NonInviteClientState.TRYING
        self.outcome = TransactionOutcome.NORMAL
        self.final_status: int | None = None
        self.completed = False  # a final response arrived (reported once)
        self._outbox = outbox
        self._bytes = request.serialize()
        self._interval = T1
        # RFC 3261 §17.1.2.2: Timer E only on unreliable transports.
        reliable = transport_of(destination).reliable
        self._retransmit_at: float | None = None if reliable else now + T1
        self._end_at: float | None = now + TIMER_F
        self._outbox.append((self._bytes, destination))

    @property
    def terminated(self) -> bool:
        return self.state is NonInviteClientState.TERMINATED

    def receive_response(self, response: Response, now: float) -> bool:
        """Feed a matched response; True when it is the (first) final response."""
        if self.state in (NonInviteClientState.COMPLETED, NonInviteClientState.TERMINATED):
            return False  # retransmitted final response, absorbed (§17.1.2.2)
        if response.status < 200:
            self.state = NonInviteClientState.PROCEEDING
            return False
        self.state = NonInviteClientState.COMPLETED
        self.final_status = response.status
        self.completed = True
        self._retransmit_at = None
        self._end_at = now + TIMER_K
        self._changed()
        return True

    def on_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            if self.state in (NonInviteClientState.TRYING, NonInviteClientState.PROCEEDING):
                self.outcome = TransactionOutcome.TIMEOUT
            self.state = NonInviteClientState.TERMINATED
            self._retransmit_at = None
            self._end_at = None
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._outbox.append((self._bytes, self.destination))
            # Timer E doubles up to T2; in Proceeding it stays at T2 (§17.1.2.2).
            if self.state is NonInviteClientState.PROCEEDING:
                self._interval = T2
            else:
                self._interval = min(self._interval * 2, T2)
            self._retransmit_at = now + self._interval
            self._changed()


class InviteClientTransaction(_Retransmitting):
    """INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2): our re-INVITE, or an
    outbound call's INVITE.

    The request goes out on creation (Calling). Responses matched by the UA core go to
    :meth:`receive_response`, which says whether the transaction user must see it: the
    first final response, and every 2xx (a retransmitted 2xx needs our ACK again, which
    the TU sends, RFC 3261 §13.2.2.4). The ACK of a non-2xx is the transaction's own
    (§17.1.1.3), repeated for each retransmission of that response. :meth:`on_timer` runs
    Timers A, B, D and M. TERMINATED with :attr:`outcome` TIMEOUT: no final response
    within Timer B.

    RFC 3261 §17.1.1.2 runs Timer B in Calling only: a provisional response means the
    far end is working on it, and a phone may ring for minutes. ``timer_b_in_proceeding``
    keeps it running after a 1xx too, for a transaction user with no bound of its own
    (our refresh re-INVITE: a peer leaving it at 1xx must not hold the dialog). An
    outbound call's INVITE passes False; its ring timeout and CANCEL bound it (§9.1).
    """

    def __init__(
        self,
        request: Request,
        destination: Address,
        outbox: Outbox,
        now: float,
        *,
        timer_b_in_proceeding: bool = True,
    ) -> None:
        self.request = request
        self.destination = destination
        self.state = InviteClientState.CALLING
        self.outcome = TransactionOutcome.NORMAL
        self.final_status: int | None = None
        self._outbox = outbox
        self._bytes = request.serialize()
        self._ack = b""
        self._interval = T1
        self._reliable = transport_of(destination).reliable
        self._timer_b_in_proceeding = timer_b_in_proceeding
        # §17.1.1.2: Timer A only on unreliable transports; Timer B always.
        self._retransmit_at: float | None = None if self._reliable else now + T1
        self._end_at: float | None = now + TIMER_B
        self._outbox.append((self._bytes, destination))

    @property
    def terminated(self) -> bool:
        return self.state is InviteClientState.TERMINATED

    def receive_response(self, response: Response, now: float) -> bool:
        """Feed a matched response; True when the transaction user must act on it."""
        status = response.status
        state = self.state
        if state in (InviteClientState.CALLING, InviteClientState.PROCEEDING):
            self._retransmit_at = None
            if status < 200:
                self.state = InviteClientState.PROCEEDING
                if not self._timer_b_in_proceeding:
                    self._end_at = None  # §17.1.1.2: Timer B is a Calling-state timer
                self._changed()
                return False
            self.final_status = status
            if status < 300:
                # RFC 6026 §7.2: Accepted absorbs nothing; 2xx retransmissions go up.
                self.state = InviteClientState.ACCEPTED
                self._end_at = now + TIMER_M
            else:
                self.state = InviteClientState.COMPLETED
                self._ack = self._build_ack(response).serialize()
                self._outbox.append((self._ack, self.destination))
                # §17.1.1.2: Timer D, zero on reliable transports.
                self._end_at = now + (0.0 if self._reliable else TIMER_D)
            self._changed()
            return True
        if state is InviteClientState.COMPLETED and status >= 300:
            self._outbox.append((self._ack, self.destination))  # §17.1.1.2
            return False
        return state is InviteClientState.ACCEPTED and 200 <= status < 300

    def _build_ack(self, response: Response) -> Request:
        """RFC 3261 §17.1.1.3: the ACK of a non-2xx, built from the request (its
        Request-URI, top Via, Route set, Call-ID, From, CSeq number) and the response's To."""
        headers = Headers()
        headers.add("Via", str(self.request.vias[0]))
        headers.add("Max-Forwards", "70")
        for route in self.request.headers.get_all("Route"):
            headers.add("Route", route)
        headers.add("From", self.request.headers.get("From") or "")
        headers.add("To", response.headers.get("To") or "")
        headers.add("Call-ID", self.request.call_id)
        headers.add("CSeq", f"{self.request.cseq.seq} ACK")
        return Request("ACK", self.request.uri, headers, b"")

    def transport_error(self) -> None:
        """The transport could not send the request (a TCP/TLS connection that would not
        open): RFC 3261 §17.1.1.2 ends the transaction in Calling and tells the
        transaction user, which treats it as a 503 (§8.1.3.1). No-op past Calling."""
        if self.state is not InviteClientState.CALLING:
            return
        self.outcome = TransactionOutcome.TRANSPORT_ERROR
        self.state = InviteClientState.TERMINATED
        self._retransmit_at = None
        self._end_at = None
        self._changed()

    def on_timer(self, now: float) -> None:
        if self._end_at is not None and now >= self._end_at:
            if self.state in (InviteClientState.CALLING, InviteClientState.PROCEEDING):
                self.outcome = TransactionOutcome.TIMEOUT
            self.state = InviteClientState.TERMINATED
            self._retransmit_at = None
            self._end_at = None
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            self._outbox.append((self._bytes, self.destination))
            # Timer A doubles without the T2 cap of non-INVITE requests (§17.1.1.2).
            self._interval *= 2
            self._retransmit_at = now + self._interval
            self._changed()
