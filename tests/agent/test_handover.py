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
