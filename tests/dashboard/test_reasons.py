"""Reasons in plain words (dashboard/reasons.py)."""

from __future__ import annotations

from sipbridge.dashboard.reasons import explain, known_reasons
from sipbridge.runtime.call import EndCause


def test_every_ending_of_an_answered_call_has_plain_words() -> None:
    for cause in EndCause:
        explanation = explain(cause.value)
        assert explanation is not None
        assert explanation.text != cause.value.replace("_", " "), cause


def test_routing_failures_say_what_to_fix() -> None:
    plain = explain("agent_not_voice_enabled")
    assert plain is not None
    assert plain.text == "the number's agent is not voice-enabled"
    assert plain.fix == "enable it on the Agents page"
    assert explain("unknown_number").fix.startswith("add it on the Numbers page")  # type: ignore[union-attr]


def test_unknown_and_missing_reasons() -> None:
    assert explain(None) is None and explain("") is None
    unknown = explain("some_new_reason")
    assert unknown is not None and (unknown.text, unknown.fix) == ("some new reason", None)
    assert "agent_unreachable" in known_reasons()
