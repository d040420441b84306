"""The course of one transfer the agent asked for (sans-I/O): REFER first, bridging when
the caller's side will not do it.

A blind transfer (RFC 3515) asks the caller's side to place the new call. Many carriers
and PBXs refuse REFER (405/501), decline it (603), never answer it, or accept it and then
report in their NOTIFY that the new call failed. Then sipbridge places the call itself
through the caller's trunk and relays the media between the two legs
(runtime/bridge.py): the transfer completes either way.

:class:`Handover` is the state machine; the call feeds it what happens and does what the
returned :class:`Step` says:

- :meth:`Handover.refer_answered` with the REFER's final status (None: no answer,
  RFC 3261 §17.1.2.2 Timer F);
- :meth:`Handover.notified` with each NOTIFY's sipfrag status (RFC 3515 §2.4.5);
- :meth:`Handover.leg_answered` / :meth:`Handover.leg_failed` with the outcome of the
  target's leg once :data:`Step.DIAL` was returned.

States and steps::

    REFERRING --202--> REFER_ACCEPTED --NOTIFY 2xx--> COMPLETED   (END_CALL)
        |                   |
        | 3xx-6xx, none     | NOTIFY 3xx-6xx
        v                   v
    DIALING (DIAL) ---answered---> BRIDGED (HAND_OVER)
        | failed
        v
      FAILED (REPORT_FAILED)

When the call cannot be bridged (no trunk with a ``host`` to dial through), a refused
REFER goes straight to FAILED with :attr:`Handover.reason` ``bridge_unavailable``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Handover", "HandoverState", "Step", "TransferMethod"]


class TransferMethod(enum.Enum):
    """How a transfer was carried out; the value is what the record shows."""

    REFER = "refer"  # the caller's side placed the new call (RFC 3515)
    BRIDGE = "bridge"  # we placed it and relay the media between the two legs
    WARM = "warm"  # we placed it, the agent talked to the target first, then joined


class HandoverState(enum.Enum):
    REFERRING = "referring"
    REFER_ACCEPTED = "refer_accepted"
    DIALING = "dialing"
    BRIDGED = "bridged"
    COMPLETED = "completed"
    FAILED = "failed"


class Step(enum.Enum):
    """What the call does next."""

    NONE = "none"  # nothing (a provisional status, a repeated report)
    REPORT_ACCEPTED = "report_accepted"  # tell the agent the REFER was accepted
    DIAL = "dial"  # place the target's leg through the trunk
    HAND_OVER = "hand_over"  # join the caller to the target's leg; the agent leaves
    END_CALL = "end_call"  # the caller's side completed the transfer: hang up our leg
    REPORT_FAILED = "report_failed"  # tell the agent; the call goes on with it


@dataclass
class Handover:
    """One transfer; ``can_bridge`` says whether a trunk can place the target's leg."""

    target: str
    can_bridge: bool
    method: TransferMethod = TransferMethod.REFER
    state: HandoverState = HandoverState.REFERRING
    sip_code: int | None = None  # the last final status heard of (REFER, NOTIFY, the leg)
    reason: str | None = None  # why it failed, a word

    @property
    def active(self) -> bool:
        return self.state not in (HandoverState.COMPLETED, HandoverState.FAILED)

    def refer_answered(self, status: int | None) -> Step:
        """The REFER's final response (RFC 3515 §2.4.2): 2xx accepts it; anything else,
        or none, falls back to bridging."""
        if self.state is not HandoverState.REFERRING:
            return Step.NONE
        self.sip_code = status
        if status is not None and 200 <= status < 300:
            self.state = HandoverState.REFER_ACCEPTED
            return Step.REPORT_ACCEPTED
        return self._fall_back("refer_timeout" if status is None else "refer_rejected")

    def notified(self, status: int | None) -> Step:
        """A NOTIFY's sipfrag status line (RFC 3515 §2.4.5): 1xx is progress, 2xx the new
        call answered (our leg ends, RFC 5589 §6), 3xx-6xx the new call failed."""
        if self.state is not HandoverState.REFER_ACCEPTED or status is None or status < 200:
            return Step.NONE
        self.sip_code = status
        if status < 300:
            self.state = HandoverState.COMPLETED
            return Step.END_CALL
        return self._fall_back("refer_failed")

    def leg_answered(self) -> Step:
        if self.state is not HandoverState.DIALING:
            return Step.NONE
        self.state = HandoverState.BRIDGED
        self.sip_code = 200
        return Step.HAND_OVER

    def leg_failed(self, status: int | None, reason: str) -> Step:
        if self.state is not HandoverState.DIALING:
            return Step.NONE
        self.sip_code = status
        self.reason = reason
        self.state = HandoverState.FAILED
        return Step.REPORT_FAILED

    def start_bridge(self) -> Step:
        """Skip REFER: dial the target at once (a warm transfer, or a caller's side known
        not to take REFER)."""
        if self.state is not HandoverState.REFERRING:
            return Step.NONE
        return self._fall_back(None)

    def _fall_back(self, reason: str | None) -> Step:
        if not self.can_bridge:
            self.state = HandoverState.FAILED
            self.reason = "bridge_unavailable"
            return Step.REPORT_FAILED
        if self.method is TransferMethod.REFER:
            self.method = TransferMethod.BRIDGE
        self.reason = reason
        self.state = HandoverState.DIALING
        return Step.DIAL
