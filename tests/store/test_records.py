import json
from datetime import UTC, datetime, timedelta, timezone

from sipbridge.store.records import (
    AgentRecord,
    ApiKeyRecord,
    BanRecord,
    CallDetail,
    CallEvent,
    CallRecord,
    CallStatus,
    NumberRecord,
    RecordingInfo,
    TrunkRecord,
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
    assert [s.value for s in CallStatus if s.is_open] == ["ringing", "active"]
    assert not CallStatus.INTERRUPTED.is_open and CallStatus("interrupted").value == "interrupted"
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
        "trunk": None,
        "direction": "inbound",
        "srtp": None,
        "caller_country": None,
        "caller_region": None,
        "first_audio_at": None,
        "setup_ms": 2000.0,
        "time_to_first_audio_ms": None,
        "packets_in": None,
        "packets_out": None,
        "bytes_in": None,
        "bytes_out": None,
        "packets_lost": None,
        "loss_percent": None,
        "jitter_ms": None,
        "rtt_ms": None,
        "concealed_ms": None,
        "mos": None,
        "mos_method": None,
        "turns": None,
        "response_p50_ms": None,
        "response_max_ms": None,
        "owner": None,
        "updated_at": None,
        "recording": None,
    }
    json.dumps(data)  # serializable as is
    assert datetime.fromisoformat(data["received_at"]) == T0
    assert call.quality() is None


def test_quality_figures_round_trip_as_one_object() -> None:
    call = make_call(packets_in=500, packets_lost=25, loss_percent=4.76, jitter_ms=3.2, mos=3.9)
    quality = call.quality()
    assert quality is not None
    assert quality["mos"] == 3.9 and quality["loss_percent"] == 4.76
    assert quality["rtt_ms"] is None
    assert call.to_json()["jitter_ms"] == 3.2


def test_to_json_unanswered() -> None:
    data = make_call(sip_code=486, reason="busy").to_json()
    assert data["answered_at"] is None and data["ended_at"] is None
    assert data["duration_s"] is None
    assert data["status"] == "failed"


def test_agent_and_number_records() -> None:
    agent = AgentRecord("bot", "wss://a.example/ws", True, datetime(2025, 1, 1))
    assert agent.urls == ["wss://a.example/ws"]  # a single URL as a str still works
    assert agent.url == "wss://a.example/ws"
    assert agent.created_at.tzinfo is UTC
    assert agent.to_json() == {
        "name": "bot",
        "urls": ["wss://a.example/ws"],
        "protocol": "native",
        "sample_rate": 8000,
        "voice_enabled": True,
        "has_token": False,
        "ca_bundle": None,
        "transfer_allow": [],
        "record": False,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": None,
    }
    assert NumberRecord("+12025550101", None).to_json() == {
        "number": "+12025550101",
        "agent": None,
        "record": None,
        "created_at": None,
    }
    number = NumberRecord("+12025550101", "bot", datetime(2025, 1, 2))
    assert number.to_json()["created_at"] == "2025-01-02T00:00:00+00:00"


def test_agent_record_urls_and_token() -> None:
    agent = AgentRecord(
        name="bot",
        urls=["wss://a", "wss://b"],
        voice_enabled=False,
        created_at=T0,
        protocol="twilio",
        token="secret",
        sample_rate=16000,
        updated_at=datetime(2025, 3, 2),
    )
    assert agent.url == "wss://a"
    data = agent.to_json()
    assert data["urls"] == ["wss://a", "wss://b"]
    assert data["has_token"] is True
    assert "secret" not in json.dumps(data)
    assert data["updated_at"] == "2025-03-02T00:00:00+00:00"


def test_agent_record_ca_bundle_is_shown() -> None:
    agent = AgentRecord("bot", ["wss://a"], True, T0, ca_bundle="/etc/sipbridge/ca.pem")
    assert agent.ca_bundle == "/etc/sipbridge/ca.pem"
    assert agent.to_json()["ca_bundle"] == "/etc/sipbridge/ca.pem"  # a path, not a secret


def test_trunk_and_api_key_records() -> None:
    trunk = TrunkRecord(
        name="carrier",
        allowed_cidrs=["203.0.113.0/24"],
        host="sip.example.com",
        username="user",
        password="pw",
        register=True,
        max_calls=10,
        codecs=["pcmu"],
        created_at=datetime(2025, 1, 1),
    )
    data = trunk.to_json()
    assert data == {
        "name": "carrier",
        "allowed_cidrs": ["203.0.113.0/24"],
        "host": "sip.example.com",
        "username": "user",
        "has_password": True,
        "register": True,
        "max_calls": 10,
        "codecs": ["pcmu"],
        "allowed_numbers": [],
        "srtp": "optional",
        "max_message_rate": None,
        "created_at": "2025-01-01T00:00:00+00:00",
    }
    assert "pw" not in json.dumps(data)
    key = ApiKeyRecord("ci", "sb_abcde", datetime(2025, 1, 1))
    assert key.to_json() == {
        "name": "ci",
        "prefix": "sb_abcde",
        "created_at": "2025-01-01T00:00:00+00:00",
        "last_used_at": None,
    }


def test_ban_record() -> None:
    ban = BanRecord("203.0.113.0/24", "manual", datetime(2025, 1, 1), note="abuse desk")
    assert ban.to_json() == {
        "address": "203.0.113.0/24",
        "reason": "manual",
        "note": "abuse desk",
        "created_at": "2025-01-01T00:00:00+00:00",
        "expires_at": None,
    }
    timed = BanRecord("198.51.100.7", "flood", T0, expires_at=T0 + timedelta(hours=1))
    assert timed.to_json()["expires_at"] == (T0 + timedelta(hours=1)).isoformat()


def test_setup_and_first_audio_times() -> None:
    call = make_call(
        answered_at=T0 + timedelta(milliseconds=1500),
        first_audio_at=T0 + timedelta(milliseconds=1750),
        ended_at=T0 + timedelta(seconds=9),
        status=CallStatus.ANSWERED,
    )
    assert call.setup_ms == 1500.0
    assert call.time_to_first_audio_ms == 250.0
    assert make_call().setup_ms is None
    assert make_call().time_to_first_audio_ms is None
    assert make_call(answered_at=T0).time_to_first_audio_ms is None
    data = call.to_json()
    assert data["first_audio_at"] == "2025-03-01T12:00:01.750000+00:00"
    assert (data["setup_ms"], data["time_to_first_audio_ms"]) == (1500.0, 250.0)


def test_call_detail_to_json() -> None:
    call = make_call(
        answered_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=20),
        status=CallStatus.ANSWERED,
    )
    events = [
        CallEvent("c1", T0 + timedelta(seconds=2), "transcript", {"role": "caller", "text": "hi"}),
        CallEvent("c1", T0 + timedelta(seconds=3), "metadata", {"intent": "billing"}),
        CallEvent(
            "c1",
            T0 + timedelta(seconds=4),
            "transcript",
            {"role": "agent", "text": "hello", "final": False},
        ),
        CallEvent("c1", T0 + timedelta(seconds=5), "dtmf", {"digit": "1"}),
    ]
    data = CallDetail(call, events).to_json()
    assert data["id"] == "c1"
    assert data["timeline"] == [
        {"event": "received", "at": "2025-03-01T12:00:00+00:00"},
        {"event": "answered", "at": "2025-03-01T12:00:01+00:00"},
        {"event": "ended", "at": "2025-03-01T12:00:20+00:00"},
    ]
    assert data["transcript"] == [
        {"at": "2025-03-01T12:00:02+00:00", "role": "caller", "text": "hi", "final": True},
        {"at": "2025-03-01T12:00:04+00:00", "role": "agent", "text": "hello", "final": False},
    ]
    assert data["metadata"] == [{"at": "2025-03-01T12:00:03+00:00", "data": {"intent": "billing"}}]
    assert data["quality"] is None
    json.dumps(data)
    assert events[0].to_json() == {
        "at": "2025-03-01T12:00:02+00:00",
        "kind": "transcript",
        "data": {"role": "caller", "text": "hi"},
    }
    unanswered = CallDetail(make_call()).to_json()
    assert [point["event"] for point in unanswered["timeline"]] == ["received"]
    assert unanswered["transcript"] == [] and unanswered["metadata"] == []


def test_utc_helpers() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert as_utc(datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == datetime(
        2025, 1, 1, tzinfo=UTC
    )


def test_recording_info_round_trips_and_survives_the_spool_form() -> None:
    """A call's recording: its JSON back into the record (the spool and the store give a
    dict); anything unreadable is no recording rather than an error."""
    info = RecordingInfo("/r/2025-03-01/c1.wav", "wav", 8000, 2, 32044, 1.0, dropped_ms=20)
    call = make_call(recording=info.to_json())
    assert call.recording == info
    assert call.to_json()["recording"]["duration_s"] == 1.0
    assert RecordingInfo.from_json({"path": "/x.wav"}) is None
    assert RecordingInfo.from_json("garbage") is None
    assert make_call(recording={"bytes": "many"}).recording is None
