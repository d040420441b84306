"""The transfer state machine: REFER, then the bridge when the caller's side will not."""

from __future__ import annotations

import pytest

from sipbridge.agent.handover import Handover, HandoverState, Step, TransferMethod


def test_refer_accepted_then_completed_ends_the_call() -> None:
    handover = Handover("tel:+15551230000", can_bridge=True)
    assert handover.refer_answered(202) is Step.REPORT_ACCEPTED
    assert handover.notified(100) is Step.NONE  # progress
    assert handover.notified(180) is Step.NONE
    assert handover.notified(200) is Step.END_CALL
    assert (handover.state, handover.method, handover.sip_code) == (
        HandoverState.COMPLETED,
        TransferMethod.REFER,
        200,
    )
    assert not handover.active
    assert handover.notified(200) is Step.NONE  # a repeated report changes nothing


@pytest.mark.parametrize(
    ("status", "reason"),
    [(603, "refer_rejected"), (501, "refer_rejected"), (None, "refer_timeout")],
)
def test_refused_refer_falls_back_to_dialling(status: int | None, reason: str) -> None:
    handover = Handover("tel:+15551230000", can_bridge=True)
    assert handover.refer_answered(status) is Step.DIAL
    assert (handover.state, handover.method, handover.reason) == (
        HandoverState.DIALING,
        TransferMethod.BRIDGE,
        reason,
    )
    assert handover.notified(200) is Step.NONE  # no REFER subscription to report on
    assert handover.leg_answered() is Step.HAND_OVER
    assert (handover.state, handover.sip_code) == (HandoverState.BRIDGED, 200)
    assert handover.active  # until the bridged call ends
    assert handover.leg_answered() is Step.NONE


def test_notify_failure_falls_back_and_a_failed_leg_is_reported() -> None:
    handover = Handover("sip:sales@pbx.example.com", can_bridge=True)
    handover.refer_answered(202)
    assert handover.notified(486) is Step.DIAL
    assert handover.reason == "refer_failed"
    assert handover.leg_failed(486, "busy") is Step.REPORT_FAILED
    assert (handover.state, handover.sip_code, handover.reason) == (
        HandoverState.FAILED,
        486,
        "busy",
    )
    assert handover.leg_answered() is Step.NONE
    assert handover.leg_failed(None, "x") is Step.NONE


def test_no_trunk_to_dial_through_fails_the_transfer() -> None:
    handover = Handover("tel:+15551230000", can_bridge=False)
    assert handover.refer_answered(405) is Step.REPORT_FAILED
    assert (handover.state, handover.reason, handover.sip_code) == (
        HandoverState.FAILED,
        "bridge_unavailable",
        405,
    )
    late = Handover("tel:+15551230000", can_bridge=False)
    late.refer_answered(202)
    assert late.notified(503) is Step.REPORT_FAILED


def test_start_bridge_skips_refer_and_keeps_a_warm_method() -> None:
    handover = Handover("tel:+15551230000", can_bridge=True, method=TransferMethod.WARM)
    assert handover.start_bridge() is Step.DIAL
    assert handover.method is TransferMethod.WARM
    assert handover.refer_answered(603) is Step.NONE  # no REFER is pending
    assert handover.start_bridge() is Step.NONE


def _warm_consulting() -> Handover:
    handover = Handover("tel:+15551230000", can_bridge=True, method=TransferMethod.WARM)
    assert handover.warm
    assert handover.start_bridge() is Step.DIAL
    assert (handover.state, handover.method) == (HandoverState.DIALING, TransferMethod.WARM)
    assert handover.complete() is Step.NONE  # nothing to join while it rings
    assert handover.leg_answered() is Step.CONSULT
    assert (handover.state, handover.sip_code) == (HandoverState.CONSULTING, 200)
    assert handover.active
    return handover


def test_warm_transfer_consults_then_completes() -> None:
    handover = _warm_consulting()
    assert handover.complete() is Step.HAND_OVER
    assert (handover.state, handover.method) == (HandoverState.BRIDGED, TransferMethod.WARM)
    assert handover.complete() is Step.NONE
    assert handover.cancel() is Step.NONE  # joined: too late to call off
    assert handover.leg_ended() is Step.NONE  # the bridged call's end is the call's


def test_warm_transfer_cancelled_while_consulting_or_ringing() -> None:
    handover = _warm_consulting()
    assert handover.cancel() is Step.RETURN
    assert (handover.state, handover.reason) == (HandoverState.CANCELLED, "cancelled")
    assert not handover.active  # a new transfer may begin
    assert handover.complete() is Step.NONE
    assert handover.cancel() is Step.NONE
    ringing = Handover("tel:+15551230000", can_bridge=True, method=TransferMethod.WARM)
    ringing.start_bridge()
    assert ringing.cancel() is Step.RETURN
    assert ringing.leg_answered() is Step.NONE  # an answer racing the CANCEL: not consulted
    assert ringing.leg_failed(487, "cancelled") is Step.NONE


def test_warm_target_hanging_up_or_not_answering_returns_to_the_caller() -> None:
    handover = _warm_consulting()
    assert handover.leg_ended() is Step.REPORT_ENDED
    assert (handover.state, handover.reason) == (HandoverState.FAILED, "target_hangup")
    assert handover.complete() is Step.NONE
    busy = Handover("tel:+15551230000", can_bridge=True, method=TransferMethod.WARM)
    busy.start_bridge()
    assert busy.leg_ended() is Step.NONE  # not answered yet: leg_failed says how
    assert busy.leg_failed(486, "busy") is Step.REPORT_FAILED
    assert (busy.state, busy.sip_code, busy.method) == (
        HandoverState.FAILED,
        486,
        TransferMethod.WARM,
    )


def test_warm_transfer_needs_a_trunk_and_blind_ones_cannot_be_cancelled() -> None:
    handover = Handover("tel:+15551230000", can_bridge=False, method=TransferMethod.WARM)
    assert handover.start_bridge() is Step.REPORT_FAILED
    assert handover.reason == "bridge_unavailable"
    blind = Handover("tel:+15551230000", can_bridge=True)
    blind.refer_answered(603)
    assert blind.cancel() is Step.NONE  # a bridge fallback is not the agent's to call off
    blind.leg_answered()
    assert blind.complete() is Step.NONE
