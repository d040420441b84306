"""Reliable provisional responses (RFC 3262), the sans-I/O state of one INVITE."""

from __future__ import annotations

import pytest

from sipbridge.sip.message import Request, parse_message
from sipbridge.sip.reliable import (
    GIVE_UP_AFTER,
    ReliableProvisional,
    parse_rack,
    requires_100rel,
)
from sipbridge.sip.transaction import T1


def request(extra: str, method: str = "INVITE") -> Request:
    message = parse_message(
        (
            f"{method} sip:+12025550101@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-r\r\n"
            "From: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:b@127.0.0.1>\r\n"
            f"Call-ID: c\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


@pytest.mark.parametrize(
    ("extra", "required"),
    [
        ("Require: 100rel\r\n", True),
        ("Require: timer, 100REL\r\n", True),
        ("Require: timer\r\nRequire: 100rel\r\n", True),
        ("Supported: 100rel\r\n", False),  # our choice: unreliable, as for anyone
        ("", False),
    ],
)
def test_requires_100rel(extra: str, required: bool) -> None:
    assert requires_100rel(request(extra)) is required


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("776656 1 INVITE", (776656, 1, "INVITE")),
        ("  5\t2 invite ", (5, 2, "INVITE")),
        ("5 INVITE", None),
        ("x 1 INVITE", None),
        ("", None),
        ("12345678901 1 INVITE", None),
    ],
)
def test_parse_rack(value: str, parsed: tuple[int, int, str] | None) -> None:
    assert parse_rack(value) == parsed


def test_retransmits_at_t1_doubling_until_64_t1() -> None:
    reliable = ReliableProvisional.start(7, 1, 100.0)
    assert reliable.headers() == [("Require", "100rel"), ("RSeq", "7")]
    sends = []
    now = 100.0
    while (due := reliable.deadline) is not None:
        assert not reliable.on_timer(due - 0.001)  # not before its time
        now = due
        assert reliable.on_timer(now)
        sends.append(round(now - 100.0, 3))
    assert sends == [T1, 3 * T1, 7 * T1, 15 * T1, 31 * T1, 63 * T1]  # then 127*T1: past 64*T1
    assert sends[-1] < GIVE_UP_AFTER
    assert not reliable.on_timer(now + GIVE_UP_AFTER)  # given up


def test_a_matching_prack_stops_it_and_others_do_not() -> None:
    reliable = ReliableProvisional.start(7, 3, 0.0)
    assert not reliable.prack(request("RAck: 8 3 INVITE\r\n", "PRACK"))  # other RSeq
    assert not reliable.prack(request("RAck: 7 2 INVITE\r\n", "PRACK"))  # other INVITE
    assert not reliable.prack(request("RAck: 7 3 BYE\r\n", "PRACK"))
    assert not reliable.prack(request("", "PRACK"))
    assert reliable.deadline == T1
    assert reliable.prack(request("RAck: 7 3 INVITE\r\n", "PRACK"))
    assert reliable.deadline is None and not reliable.on_timer(10.0)
    assert reliable.prack(request("RAck: 7 3 INVITE\r\n", "PRACK"))  # again: still 200


def test_stop_ends_retransmissions_but_a_crossing_prack_matches() -> None:
    reliable = ReliableProvisional.start(9, 1, 0.0)
    reliable.stop()
    assert reliable.deadline is None and not reliable.on_timer(T1)
    assert reliable.prack(request("RAck: 9 1 INVITE\r\n", "PRACK"))


def test_rseq_range() -> None:
    with pytest.raises(ValueError):
        ReliableProvisional.start(0, 1, 0.0)
    with pytest.raises(ValueError):
        ReliableProvisional.start(2**31, 1, 0.0)
