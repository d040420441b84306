"""Reliable provisional responses, UAS side (RFC 3262, "100rel" and PRACK).

A caller whose INVITE says ``Require: 100rel`` will not accept our 180 unless it is sent
reliably: with ``Require: 100rel`` and an ``RSeq`` number, retransmitted until the caller
acknowledges it with a PRACK whose ``RAck`` names it. This module holds that state for
one INVITE; it never sends anything itself.

What the caller (the UA core) does:

1. :func:`requires_100rel` on the INVITE decides whether the 180 must be reliable;
2. :meth:`ReliableProvisional.start` when that 180 goes out (``headers()`` gives the
   ``Require``/``RSeq`` to put in it), then re-send the same response whenever
   :meth:`~ReliableProvisional.on_timer` returns True at :attr:`~ReliableProvisional.deadline`;
3. :meth:`~ReliableProvisional.prack` for each PRACK of the call: True means answer it
   200 (retransmissions stop), False means 481 (RFC 3262 §3: it matches no unacknowledged
   reliable provisional response);
4. :meth:`~ReliableProvisional.stop` when the INVITE gets its final response: a
   provisional response is never sent after it (a PRACK that crossed it still matches).

Our 180 carries no SDP, so RFC 3262 §3 lets the 2xx go out before the PRACK arrives.
After 64*T1 without a PRACK the retransmissions stop (§3 says the UAS SHOULD then reject
the INVITE with a 5xx; the call layer's own agent-connect timeout, a few seconds, ends an
unanswered call long before that).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipbridge.sip.message import Request
from sipbridge.sip.transaction import T1

__all__ = ["GIVE_UP_AFTER", "ReliableProvisional", "parse_rack", "requires_100rel"]

# RFC 3262 §3: retransmit at T1, doubling, for 64*T1 in all.
GIVE_UP_AFTER: Final = 64 * T1
# RFC 3262 §3: the first RSeq is chosen between 1 and 2**31 - 1.
RSEQ_MAX: Final = 2**31 - 1
# RFC 3262 §7.2: RAck = response-num LWS CSeq-num LWS Method
_RACK = re.compile(r"^\s*(\d{1,10})\s+(\d{1,10})\s+([A-Za-z0-9.!%*_+`'~-]+)\s*$")


def _option_tags(request: Request, name: str) -> set[str]:
    return {
        tag.strip().lower()
        for value in request.headers.get_all(name)
        for tag in value.split(",")
        if tag.strip()
    }


def requires_100rel(request: Request) -> bool:
    """The INVITE names ``100rel`` in Require (RFC 3262 §3: provisional responses must
    then be reliable). ``Supported: 100rel`` alone leaves the choice to us: we send them
    unreliably, as to any other caller."""
    return "100rel" in _option_tags(request, "Require")


def parse_rack(value: str) -> tuple[int, int, str] | None:
    """A RAck header value as (RSeq, CSeq number, method); None when malformed."""
    match = _RACK.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3).upper()


@dataclass(slots=True)
class ReliableProvisional:
    """One reliable provisional response of an INVITE (we send at most one: 180)."""

    rseq: int
    invite_cseq: int
    next_at: float
    give_up_at: float
    interval: float = T1
    acknowledged: bool = False
    retransmissions: int = 0

    @classmethod
    def start(cls, rseq: int, invite_cseq: int, now: float) -> ReliableProvisional:
        """The response numbered ``rseq`` went out for the INVITE of CSeq ``invite_cseq``
        at ``now``."""
        if not 1 <= rseq <= RSEQ_MAX:
            raise ValueError(f"RSeq {rseq} outside 1..2**31-1")
        return cls(rseq, invite_cseq, now + T1, now + GIVE_UP_AFTER)

    def headers(self) -> list[tuple[str, str]]:
        """The headers that make the response reliable (RFC 3262 §3, §7.1)."""
        return [("Require", "100rel"), ("RSeq", str(self.rseq))]

    @property
    def deadline(self) -> float | None:
        """When :meth:`on_timer` is due; None once acknowledged or given up."""
        if self.acknowledged or self.next_at >= self.give_up_at:
            return None
        return self.next_at

    def on_timer(self, now: float) -> bool:
        """True: send the response again now (the interval doubles each time)."""
        if self.acknowledged or now < self.next_at or self.next_at >= self.give_up_at:
            return False
        self.interval *= 2
        self.next_at = now + self.interval
        self.retransmissions += 1
        return True

    def stop(self) -> None:
        """The INVITE got its final response: no more retransmissions (a PRACK that
        crossed it still matches)."""
        self.next_at = self.give_up_at

    def prack(self, request: Request) -> bool:
        """A PRACK of this call: True when its RAck names our response (answer 200, stop
        retransmitting; a retransmitted PRACK also matches), False for 481."""
        rack = parse_rack(request.headers.get("RAck") or "")
        if rack != (self.rseq, self.invite_cseq, "INVITE"):
            return False
        self.acknowledged = True
        return True
