"""RFC 3261 §17 transactions, driven by a fake clock: no sleeping."""

from __future__ import annotations

import pytest

from sipbridge.sip.framing import StreamAddress, Transport
from sipbridge.sip.message import Request, Response, make_response, parse_message
from sipbridge.sip.transaction import (
    T1,
    T2,
    TIMER_B,
    TIMER_D,
    TIMER_F,
    TIMER_H,
    TIMER_I,
    TIMER_J,
    TIMER_K,
    TIMER_L,
    TIMER_M,
    InviteClientState,
    InviteClientTransaction,
    InviteServerState,
    InviteServerTransaction,
    NonInviteClientState,
    NonInviteClientTransaction,
    NonInviteServerState,
    NonInviteServerTransaction,
    TransactionKey,
    TransactionOutcome,
)

SRC = ("127.0.0.1", 5070)

INVITE = (
    b"INVITE sip:+12025550101@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-inv-1;rport\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:+12025550101@127.0.0.1>\r\n"
    b"Call-ID: tx-test-1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)

BYE = (
    b"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bye-1\r\n"
    b"From: <sip:+12025550101@127.0.0.1>;tag=b1\r\n"
    b"To: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"Call-ID: tx-test-1\r\n"
    b"CSeq: 2 BYE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def statuses(outbox: list[tuple[bytes, tuple[str, int]]]) -> list[int]:
    out = []
    for data, _ in outbox:
        message = parse_message(data)
        out.append(message.status if isinstance(message, Response) else 0)
    return out


def run_timers(tx: object, until: float, start: float = 0.0) -> list[float]:
    """Fire the transaction's timers up to ``until``; return when each fired."""
    fired = []
    now = start
    while True:
        deadline = tx.deadline  # type: ignore[attr-defined]
        if deadline is None or deadline > until:
            return fired
        now = deadline
        tx.on_timer(now)  # type: ignore[attr-defined]
        fired.append(now)


class TestKey:
    def test_ack_matches_invite(self) -> None:
        invite = request(INVITE)
        ack = request(INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"))
        assert TransactionKey.for_request(invite) == TransactionKey.for_request(ack)

    def test_cancel_is_its_own_transaction(self) -> None:
        invite = request(INVITE)
        cancel = request(
            INVITE.replace(b"INVITE sip", b"CANCEL sip").replace(b"1 INVITE", b"1 CANCEL")
        )
        assert TransactionKey.for_request(invite) != TransactionKey.for_request(cancel)

    def test_rfc2543_branch_uses_legacy_fields(self) -> None:
        old = request(INVITE.replace(b";branch=z9hG4bK-inv-1", b";branch=12345"))
        key = TransactionKey.for_request(old)
        assert key.branch.startswith("2543:")
        again = request(INVITE.replace(b";branch=z9hG4bK-inv-1", b";branch=12345"))
        assert TransactionKey.for_request(again) == key

    def test_response_key_matches_request_we_sent(self) -> None:
        bye = request(BYE)
        response = make_response(bye, 200)
        assert TransactionKey.for_response(response) == TransactionKey.for_request(bye)


class TestInviteServer:
    def test_2xx_retransmitted_t1_to_t2_until_ack(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, outbox, now=0.0)
        tx.send_response(make_response(invite, 100), 0.0)
        tx.send_response(make_response(invite, 200, to_tag="x"), 0.0)
        assert tx.state is InviteServerState.ACCEPTED
        fired = run_timers(tx, until=9.0)
        # 0.5, 1.5, 3.5, 7.5 (interval 0.5, 1, 2, 4 capped at T2)
        assert fired == [0.5, 1.5, 3.5, 7.5]
        assert statuses(outbox) == [100, 200, 200, 200, 200, 200]
        tx.ack_received()
        outbox.clear()
        fired = run_timers(tx, until=TIMER_L + 1, start=9.0)
        assert outbox == []
        assert fired == [TIMER_L]
        assert tx.state is InviteServerState.TERMINATED
        assert tx.outcome is TransactionOutcome.NORMAL

    def test_2xx_without_ack_times_out(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, outbox, now=10.0)
        tx.send_response(make_response(invite, 200, to_tag="x"), 10.0)
        run_timers(tx, until=100.0, start=10.0)
        assert tx.state is InviteServerState.TERMINATED
        assert tx.outcome is TransactionOutcome.ACK_TIMEOUT
        # intervals capped at T2 after reaching it
        assert len(outbox) > 8

    def test_retransmitted_invite_repeats_provisional_then_is_absorbed(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, outbox, now=0.0)
        tx.send_response(make_response(invite, 180, to_tag="x"), 0.0)
        tx.receive_retransmission()
        assert statuses(outbox) == [180, 180]
        tx.send_response(make_response(invite, 200, to_tag="x"), 0.1)
        tx.receive_retransmission()  # RFC 6026: absorbed in Accepted
        assert statuses(outbox) == [180, 180, 200]

    def test_non_2xx_timer_g_and_h(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, outbox, now=0.0)
        tx.send_response(make_response(invite, 486, to_tag="x"), 0.0)
        assert tx.state is InviteServerState.COMPLETED
        fired = run_timers(tx, until=TIMER_H + 1)
        assert fired[:4] == [T1, 3 * T1, 7 * T1, 7 * T1 + T2]
        assert fired[-1] == TIMER_H
        assert tx.outcome is TransactionOutcome.ACK_TIMEOUT
        assert tx.state is InviteServerState.TERMINATED

    def test_non_2xx_ack_confirms_then_timer_i(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, outbox, now=0.0)
        tx.send_response(make_response(invite, 404, to_tag="x"), 0.0)
        tx.receive_retransmission()
        assert statuses(outbox) == [404, 404]
        tx.receive_ack(0.2)
        assert tx.state is InviteServerState.CONFIRMED
        assert tx.deadline == pytest.approx(0.2 + TIMER_I)
        tx.on_timer(0.2 + TIMER_I)
        assert tx.state is InviteServerState.TERMINATED
        assert tx.outcome is TransactionOutcome.NORMAL

    def test_no_response_after_final(self) -> None:
        invite = request(INVITE)
        tx = InviteServerTransaction(invite, SRC, [], now=0.0)
        tx.send_response(make_response(invite, 404, to_tag="x"), 0.0)
        with pytest.raises(RuntimeError):
            tx.send_response(make_response(invite, 200, to_tag="x"), 0.0)


class TestNonInviteServer:
    def test_retransmission_answered_from_transaction_until_timer_j(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        bye = request(BYE)
        tx = NonInviteServerTransaction(bye, SRC, outbox)
        tx.receive_retransmission()  # Trying: discarded
        assert outbox == []
        tx.send_response(make_response(bye, 200), 1.0)
        tx.receive_retransmission()
        assert statuses(outbox) == [200, 200]
        assert tx.deadline == pytest.approx(1.0 + TIMER_J)
        tx.on_timer(1.0 + TIMER_J - 0.1)
        assert tx.state is NonInviteServerState.COMPLETED
        tx.on_timer(1.0 + TIMER_J)
        assert tx.state is NonInviteServerState.TERMINATED

    def test_provisional_then_final(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        bye = request(BYE)
        tx = NonInviteServerTransaction(bye, SRC, outbox)
        tx.send_response(make_response(bye, 100), 0.0)
        assert tx.state is NonInviteServerState.PROCEEDING
        tx.receive_retransmission()
        assert statuses(outbox) == [100, 100]
        tx.send_response(make_response(bye, 200), 0.0)
        with pytest.raises(RuntimeError):
            tx.send_response(make_response(bye, 200), 0.0)


class TestNonInviteClient:
    def test_timer_e_doubles_to_t2_and_timer_f_times_out(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        tx = NonInviteClientTransaction(request(BYE), SRC, outbox, now=0.0)
        assert len(outbox) == 1
        fired = run_timers(tx, until=TIMER_F + 1)
        assert fired[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
        assert fired[-1] == TIMER_F
        assert tx.state is NonInviteClientState.TERMINATED
        assert tx.outcome is TransactionOutcome.TIMEOUT
        assert tx.final_status is None
        # one send at creation plus one per Timer E firing before F
        assert len(outbox) == 1 + len(fired) - 1

    def test_final_response_completes_then_timer_k(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        bye = request(BYE)
        tx = NonInviteClientTransaction(bye, SRC, outbox, now=0.0)
        assert tx.receive_response(make_response(bye, 100), 0.1) is False
        assert tx.state is NonInviteClientState.PROCEEDING
        tx.on_timer(0.5)  # Timer E in Proceeding: next at T2
        assert tx.deadline == pytest.approx(0.5 + T2)
        assert tx.receive_response(make_response(bye, 200), 0.6) is True
        assert tx.receive_response(make_response(bye, 200), 0.7) is False  # absorbed
        assert tx.final_status == 200
        assert tx.deadline == pytest.approx(0.6 + TIMER_K)
        tx.on_timer(0.6 + TIMER_K)
        assert tx.state is NonInviteClientState.TERMINATED
        assert tx.outcome is TransactionOutcome.NORMAL


REINVITE = (
    b"INVITE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-reinv-1\r\n"
    b"Route: <sip:proxy.example.com;lr>\r\n"
    b"From: <sip:+12025550101@127.0.0.1>;tag=b1\r\n"
    b"To: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"Call-ID: tx-test-1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


class TestInviteClient:
    """RFC 3261 §17.1.1 (our re-INVITE), with RFC 6026's Accepted state."""

    def test_timer_a_doubles_without_cap_and_timer_b_times_out(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        tx = InviteClientTransaction(request(REINVITE), SRC, outbox, now=0.0)
        assert len(outbox) == 1
        fired = run_timers(tx, until=TIMER_B + 1)
        assert fired == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5, TIMER_B]
        assert len(outbox) == 7  # the first send and six retransmissions
        assert tx.state is InviteClientState.TERMINATED
        assert tx.outcome is TransactionOutcome.TIMEOUT

    def test_provisional_stops_retransmissions(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, SRC, outbox, now=0.0)
        assert tx.receive_response(make_response(reinvite, 100), 0.1) is False
        assert tx.state is InviteClientState.PROCEEDING
        assert run_timers(tx, until=TIMER_B + 1) == [TIMER_B]
        assert len(outbox) == 1

    def test_non_2xx_is_acked_by_the_transaction(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, SRC, outbox, now=0.0)
        outbox.clear()
        assert tx.receive_response(make_response(reinvite, 491), 0.2) is True
        assert tx.state is InviteClientState.COMPLETED and tx.final_status == 491
        [(data, addr)] = outbox
        ack = request(data)
        assert addr == SRC and ack.method == "ACK"
        assert ack.vias[0].branch == "z9hG4bK-reinv-1"  # same transaction (§17.1.1.3)
        assert str(ack.cseq) == "7 ACK"
        assert ack.headers.get_all("Route") == ["<sip:proxy.example.com;lr>"]
        assert ack.uri == reinvite.uri and ack.to.tag == "a1"
        # a retransmitted final response: the ACK again, nothing for the TU
        assert tx.receive_response(make_response(reinvite, 491), 0.7) is False
        assert len(outbox) == 2
        assert run_timers(tx, until=0.2 + TIMER_D + 1) == [pytest.approx(0.2 + TIMER_D)]
        assert tx.state is InviteClientState.TERMINATED
        assert tx.outcome is TransactionOutcome.NORMAL

    def test_2xx_and_its_retransmissions_go_up_until_timer_m(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, SRC, outbox, now=0.0)
        outbox.clear()
        assert tx.receive_response(make_response(reinvite, 200), 0.2) is True
        assert tx.state is InviteClientState.ACCEPTED
        assert outbox == []  # the ACK of a 2xx is the UA core's (§13.2.2.4)
        assert tx.receive_response(make_response(reinvite, 200), 0.7) is True
        assert run_timers(tx, until=TIMER_M + 1) == [pytest.approx(0.2 + TIMER_M)]
        assert tx.terminated

    def test_no_timer_a_and_no_timer_d_over_a_stream(self) -> None:
        stream = StreamAddress("127.0.0.1", 5070, Transport.TCP)
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, stream, outbox, now=0.0)
        assert run_timers(tx, until=TIMER_B + 1) == [TIMER_B]
        tx = InviteClientTransaction(reinvite, stream, outbox, now=0.0)
        tx.receive_response(make_response(reinvite, 486), 0.1)
        assert tx.deadline == pytest.approx(0.1)  # Timer D is zero on a reliable transport

    def test_a_transport_error_in_calling_ends_it_with_no_timer_left(self) -> None:
        # §17.1.1.2: a fatal transport error in Calling: Terminated, the TU told.
        stream = StreamAddress("127.0.0.1", 5070, Transport.TCP)
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, stream, outbox, now=0.0)
        tx.transport_error()
        assert tx.terminated and tx.outcome is TransactionOutcome.TRANSPORT_ERROR
        assert tx.deadline is None and run_timers(tx, until=TIMER_B + 1) == []

    def test_a_transport_error_past_calling_changes_nothing(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        reinvite = request(REINVITE)
        tx = InviteClientTransaction(reinvite, SRC, outbox, now=0.0)
        tx.receive_response(make_response(reinvite, 180), 0.1)
        tx.transport_error()
        assert tx.state is InviteClientState.PROCEEDING
        assert tx.outcome is TransactionOutcome.NORMAL


class TestReliableTransport:
    """RFC 3261 §17.1.2.2, §17.2.1: no Timer E / Timer G on TCP and TLS; the 2xx is
    still retransmitted until its ACK (§13.3.1.4, every transport)."""

    STREAM = StreamAddress("127.0.0.1", 5070, Transport.TCP)

    def test_no_timer_e_over_a_stream(self) -> None:
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        tx = NonInviteClientTransaction(request(BYE), self.STREAM, outbox, now=0.0)
        fired = run_timers(tx, until=TIMER_F + 1)
        assert fired == [TIMER_F] and len(outbox) == 1
        assert tx.outcome is TransactionOutcome.TIMEOUT

    def test_no_timer_g_but_2xx_retransmissions_over_a_stream(self) -> None:
        invite = request(INVITE)
        outbox: list[tuple[bytes, tuple[str, int]]] = []
        tx = InviteServerTransaction(invite, self.STREAM, outbox, now=0.0)
        tx.send_response(make_response(invite, 486, to_tag="x"), 0.0)
        run_timers(tx, until=10.0)
        assert statuses(outbox) == [486]
        outbox.clear()
        tx = InviteServerTransaction(invite, self.STREAM, outbox, now=0.0)
        tx.send_response(make_response(invite, 200, to_tag="x"), 0.0)
        run_timers(tx, until=2.0)
        assert statuses(outbox) == [200, 200, 200]  # at 0, 0.5 and 1.5 s
