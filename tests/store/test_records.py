import json
from datetime import UTC, datetime, timedelta, timezone

from sipbridge.store.records import (
    AgentRecord,
    CallRecord,
    CallStatus,
    NumberRecord,
    as_utc,
    utcnow,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_call(**overrides: object) -> CallRecord:
    values: dict[str, object] = {
        "id": "c1",
        "sip_call_id": "abc@host",
        "from_number": "+12025550100",
        "to_number": "+12025550101",
        "agent": "bot",
        "received_at": T0,
    }
    values.update(overrides)
    return CallRecord(**values)  # type: ignore[arg-type]


def test_call_status_values() -> None:
    assert str(CallStatus.ANSWERED) == "answered"
    assert CallStatus.FAILED.value == "failed"
    assert CallStatus("cancelled") is CallStatus.CANCELLED


def test_defaults() -> None:
    call = make_call()
    assert call.status is CallStatus.FAILED
    assert call.answered_at is None and call.ended_at is None
    assert call.reason is None and call.sip_code is None and call.codec is None
    assert call.hangup_by is None and call.source is None


def test_duration() -> None:
    call = make_call(
        answered_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=43, milliseconds=500),
        status=CallStatus.ANSWERED,
    )
    assert call.duration_s == 42.5


def test_duration_none_when_not_answered_or_not_ended() -> None:
    assert make_call().duration_s is None
    assert make_call(ended_at=T0 + timedelta(seconds=3)).duration_s is None
    assert make_call(answered_at=T0).duration_s is None


def test_times_normalized_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    call = make_call(
        received_at=datetime(2025, 3, 1, 14, 0, tzinfo=plus2),
        answered_at=datetime(2025, 3, 1, 12, 0, 5),  # naive: taken as UTC
    )
    assert call.received_at == T0
    assert call.received_at.tzinfo is UTC
    assert call.answered_at == T0 + timedelta(seconds=5)
    assert call.answered_at is not None and call.answered_at.tzinfo is UTC


def test_status_coerced_from_string() -> None:
    call = make_call(status="answered")
    assert call.status is CallStatus.ANSWERED


def test_to_json() -> None:
    call = make_call(
        answered_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=12),
        status=CallStatus.ANSWERED,
        reason="caller_hangup",
        sip_code=200,
        codec="PCMU",
        hangup_by="caller",
        source="198.51.100.1:5060",
    )
    data = call.to_json()
    assert data == {
        "id": "c1",
        "sip_call_id": "abc@host",
        "from_number": "+12025550100",
        "to_number": "+12025550101",
        "agent": "bot",
        "received_at": "2025-03-01T12:00:00+00:00",
        "answered_at": "2025-03-01T12:00:02+00:00",
        "ended_at": "2025-03-01T12:00:12+00:00",
        "duration_s": 10.0,
        "status": "answered",
        "reason": "caller_hangup",
        "sip_code": 200,
        "codec": "PCMU",
        "hangup_by": "caller",
        "source": "198.51.100.1:5060",
    }
    json.dumps(data)  # serializable as is
    assert datetime.fromisoformat(data["received_at"]) == T0


def test_to_json_unanswered() -> None:
    data = make_call(sip_code=486, reason="busy").to_json()
    assert data["answered_at"] is None and data["ended_at"] is None
    assert data["duration_s"] is None
    assert data["status"] == "failed"


def test_agent_and_number_records() -> None:
    agent = AgentRecord("bot", "wss://a.example/ws", True, datetime(2025, 1, 1))
    assert agent.created_at.tzinfo is UTC
    assert agent.to_json()["created_at"] == "2025-01-01T00:00:00+00:00"
    assert NumberRecord("+12025550101", None).to_json() == {
        "number": "+12025550101",
        "agent": None,
    }


def test_utc_helpers() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert as_utc(datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == datetime(
        2025, 1, 1, tzinfo=UTC
    )
