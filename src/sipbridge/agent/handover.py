"""The course of one transfer the agent asked for (sans-I/O): REFER first, bridging when
the caller's side will not do it; or a warm transfer, where the agent talks to the target
before the caller is joined.

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

A warm transfer (``method`` WARM) skips REFER: :meth:`Handover.start_bridge` dials at once,
the answer puts the agent on the target's leg (CONSULTING), and the agent decides:

- :meth:`Handover.complete` joins the caller to the target (HAND_OVER, as a bridge);
- :meth:`Handover.cancel` hangs the target's leg up, the agent is back with the caller
  (RETURN; also while it rings);
- :meth:`Handover.leg_failed` while it rings, :meth:`Handover.leg_ended` once it answered:
  the target is gone, the agent is told and is back with the caller::

    DIALING --answered--> CONSULTING --complete--> BRIDGED (HAND_OVER)
       |  |                  |    |
       |  | cancel   cancel  |    | the target hangs up
       |  +-----> CANCELLED <+    v
       | failed   (RETURN)      FAILED (REPORT_ENDED)
       v
     FAILED (REPORT_FAILED)
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
    CONSULTING = "consulting"  # a warm transfer: the agent talks to the target
    CANCELLED = "cancelled"  # a warm transfer the agent called off
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
    CONSULT = "consult"  # warm: the agent's media goes to and from the target's leg
    RETURN = "return"  # warm: hang the target's leg up; the agent is back with the caller
    REPORT_ENDED = "report_ended"  # warm: the target hung up; the agent is back with the caller


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
        return self.state not in (
            HandoverState.COMPLETED,
            HandoverState.FAILED,
            HandoverState.CANCELLED,
        )

    @property
    def warm(self) -> bool:
        return self.method is TransferMethod.WARM

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
        """The target answered: joined to the caller at once, or (warm) to the agent."""
        if self.state is not HandoverState.DIALING:
            return Step.NONE
        self.sip_code = 200
        if self.warm:
            self.state = HandoverState.CONSULTING
            return Step.CONSULT
        self.state = HandoverState.BRIDGED
        return Step.HAND_OVER

    def complete(self) -> Step:
        """Warm: the agent is done with the target; the caller is joined to it. Only
        while consulting (NONE otherwise: nothing to join yet, or already over)."""
        if self.state is not HandoverState.CONSULTING:
            return Step.NONE
        self.state = HandoverState.BRIDGED
        return Step.HAND_OVER

    def cancel(self) -> Step:
        """Warm: the agent calls the transfer off, while the target rings or talks."""
        if not self.warm or self.state not in (HandoverState.DIALING, HandoverState.CONSULTING):
            return Step.NONE
        self.state = HandoverState.CANCELLED
        self.reason = "cancelled"
        return Step.RETURN

    def leg_ended(self, status: int | None = None) -> Step:
        """Warm: the target's leg ended during the consultation (its BYE, a media
        timeout): the agent is back with the caller."""
        if self.state is not HandoverState.CONSULTING:
            return Step.NONE
        self.state = HandoverState.FAILED
        self.reason = "target_hangup"
        if status is not None:
            self.sip_code = status
        return Step.REPORT_ENDED

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
