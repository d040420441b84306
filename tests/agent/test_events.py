import dataclasses
import typing

import pytest

from sipbridge.agent import events
from sipbridge.agent.events import (
    AgentEvent,
    AudioCleared,
    HangupRequested,
    SendDtmf,
    Transcript,
    TransferRequested,
)


def test_defaults() -> None:
    assert HangupRequested() == HangupRequested(after_playout=True)
    assert SendDtmf("1") == SendDtmf("1", 100)
    assert Transcript("caller", "hi") == Transcript("caller", "hi", final=True)
    assert TransferRequested("tel:+15551234567").headers == {}
    assert TransferRequested("tel:+15551234567").mode == "blind"


def test_events_are_frozen() -> None:
    event = AudioCleared(640)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.dropped_bytes = 0  # type: ignore[misc]


def test_union_lists_every_event_class() -> None:
    classes = {
        obj
        for name in events.__all__
        if isinstance(obj := getattr(events, name), type) and dataclasses.is_dataclass(obj)
    }
    assert set(typing.get_args(AgentEvent)) == classes
    assert len(classes) == 13


def test_dtmf_constants() -> None:
    assert events.DTMF_DIGITS == "0123456789*#ABCD"
    assert (events.MIN_DTMF_DURATION_MS, events.MAX_DTMF_DURATION_MS) == (40, 2000)
