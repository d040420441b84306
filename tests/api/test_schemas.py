from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from sipbridge.api.schemas import (
    AgentCreate,
    AgentOut,
    AgentUpdate,
    BanCreate,
    BanOut,
    CallDetailOut,
    CallOut,
    CallStatsOut,
    InstanceOut,
    NumberOut,
    TrunkCreate,
    TrunkOut,
    TrunkUpdate,
    check_text,
    check_utc_datetime,
)
from sipbridge.store.records import (
    AgentRecord,
    BanRecord,
    CallDetail,
    CallEvent,
    CallRecord,
    InstanceRecord,
    InstanceState,
    NumberRecord,
    RegistrationRecord,
    TrunkRecord,
)
from sipbridge.store.service import CallStats

NOW = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
CALL = CallRecord(
    "c",
    "c@x",
    "+12025550101",
    None,
    "a",
    NOW,
    answered_at=NOW,
    ended_at=NOW,
    srtp="AES_CM_128_HMAC_SHA1_80",
)
TRUNK = TrunkRecord(
    "t",
    [],
    None,
    None,
    "p",
    False,
    None,
    [],
    NOW,
    allowed_numbers=["+12025550101"],
    srtp="required",
)


def aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (AgentOut, AgentRecord("a", ["ws://x"], True, NOW, token="t").to_json()),
        (NumberOut, NumberRecord("+12025550101", "a", NOW).to_json()),
        # The API adds the server's registration state to the record (routes_trunks.py).
        (
            TrunkOut,
            TrunkRecord("t", [], None, None, "p", False, None, [], NOW).to_json()
            | {"registration": None, "registrations": []},
        ),
        (
            TrunkOut,
            TRUNK.to_json()
            | {
                "registration": {
                    "state": "failing",
                    "registered_until": None,
                    "last_status": 403,
                    "last_reason": "Forbidden",
                    "next_attempt": "2026-01-02T03:04:05+00:00",
                    "failures": 1,
                },
                "registrations": [
                    RegistrationRecord(
                        "carrier",
                        "sip-a",
                        "registered",
                        NOW,
                        200,
                        "ok",
                        NOW,
                        0,
                        NOW,
                        InstanceState.RUNNING,
                    ).to_json(),
                    RegistrationRecord(
                        "carrier", "sip-b", "failing", None, None, "timeout", NOW, 3, NOW
                    ).to_json(),
                ],
            },
        ),
        (CallOut, CALL.to_json()),
        (
            InstanceOut,
            InstanceRecord("a", "127.0.0.1:5071", InstanceState.RUNNING, NOW, NOW).to_json(),
        ),
        (
            InstanceOut,
            InstanceRecord(
                "b", None, InstanceState.LOST, NOW, NOW, lost_at=NOW, lost_by="a", lost_calls=2
            ).to_json(),
        ),
        (
            CallDetailOut,
            CallDetail(
                CALL,
                [
                    CallEvent("c", NOW, "transcript", {"role": "agent", "text": "hi"}),
                    CallEvent("c", NOW, "metadata", {"k": 1}),
                    CallEvent(
                        "c",
                        NOW,
                        "transfer",
                        {"target": "tel:+19005551234", "status": "refused", "reason": "r"},
                    ),
                    CallEvent("c", NOW, "transfer", {"target": "tel:+1", "status": "requested"}),
                ],
            ).to_json(),
        ),
        (CallStatsOut, CallStats(since=None, until=NOW).to_json()),
        (BanOut, BanRecord("203.0.113.0/24", "manual", NOW).to_json()),
        (
            BanOut,
            BanRecord(
                "198.51.100.7", "flood", NOW, expires_at=NOW + timedelta(hours=1), note="n"
            ).to_json(),
        ),
    ],
)
def test_response_models_match_records(model: type[BaseModel], data: dict[str, Any]) -> None:
    """The documented shapes are exactly what the records' to_json() produce."""
    assert aliases(model) == set(data)
    assert model.model_validate(data).model_dump(mode="json", by_alias=True) == data


def test_check_text() -> None:
    assert check_text("ok é") == "ok é"
    with pytest.raises(ValueError, match="NUL"):
        check_text("a\x00")
    with pytest.raises(ValueError, match="Unicode"):
        check_text("a\udc80")


def test_check_utc_datetime() -> None:
    naive = datetime(2025, 1, 1, 12)
    assert check_utc_datetime(naive) == naive.replace(tzinfo=UTC)
    plus_two = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert check_utc_datetime(plus_two) == datetime(2025, 1, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="out of range"):
        check_utc_datetime(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))))


def test_agent_create_defaults() -> None:
    body = AgentCreate.model_validate({"name": "a", "urls": ["wss://x.example"]})
    assert (body.protocol, body.sample_rate, body.voice_enabled, body.token) == (
        "native",
        8000,
        True,
        None,
    )


def test_patch_models_tell_left_out_from_null() -> None:
    assert AgentUpdate.model_validate({}).model_fields_set == set()
    assert AgentUpdate.model_validate({"token": None}).model_fields_set == {"token"}
    with pytest.raises(ValidationError):
        AgentUpdate.model_validate({"urls": None})
    update = TrunkUpdate.model_validate({"register": True, "host": None})
    assert update.model_fields_set == {"register_", "host"}
    schema = AgentUpdate.model_json_schema()
    assert "default" not in schema["properties"]["urls"]
    assert schema["properties"]["urls"]["type"] == "array"


def test_trunk_register_alias() -> None:
    assert TrunkCreate.model_validate({"name": "t", "register": True}).register_ is True
    with pytest.raises(ValidationError):
        TrunkCreate.model_validate({"name": "t", "register_": True})


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", " 192.0.2.1 ", "2001:db8::/32", "10.1.2.3/8"])
def test_valid_cidrs(cidr: str) -> None:
    body = TrunkCreate.model_validate({"name": "t", "allowed_cidrs": [cidr]})
    assert body.allowed_cidrs == [cidr.strip()]


@pytest.mark.parametrize("cidr", ["", "10.0.0.0/33", "host.example", "1.2.3", "::/129"])
def test_invalid_cidrs(cidr: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrunkCreate.model_validate({"name": "t", "allowed_cidrs": [cidr]})
    assert caught.value.errors()[0]["loc"] == ("allowed_cidrs", 0)


def test_trunk_numbers_and_srtp_schemas() -> None:
    body = TrunkCreate.model_validate({"name": "t"})
    assert (body.allowed_numbers, body.srtp) == ([], "optional")
    body = TrunkCreate.model_validate(
        {"name": "t", "allowed_numbers": ["+12025550101"], "srtp": "off"}
    )
    assert (body.allowed_numbers, body.srtp) == (["+12025550101"], "off")
    for bad in ({"srtp": "on"}, {"allowed_numbers": "+12025550101"}, {"allowed_numbers": [""]}):
        with pytest.raises(ValidationError):
            TrunkCreate.model_validate({"name": "t", **bad})
    update = TrunkUpdate.model_validate({"srtp": "required"})
    assert update.model_fields_set == {"srtp"}
    with pytest.raises(ValidationError):
        TrunkUpdate.model_validate({"srtp": None})
    with pytest.raises(ValidationError):
        TrunkUpdate.model_validate({"allowed_numbers": None})


def test_ban_create_schema() -> None:
    body = BanCreate.model_validate({"address": "203.0.113.7"})
    assert (body.address, body.duration, body.note) == ("203.0.113.7", None, None)
    body = BanCreate.model_validate({"address": "192.0.2.0/24", "duration": 60, "note": "x"})
    assert (body.duration, body.note) == (60, "x")
    for bad in (
        {},
        {"address": ""},
        {"address": "192.0.2.1", "duration": 0},
        {"address": "192.0.2.1", "note": "x" * 256},
        {"address": "192.0.2.1", "reason": "flood"},
    ):
        with pytest.raises(ValidationError):
            BanCreate.model_validate(bad)
