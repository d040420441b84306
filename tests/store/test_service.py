import asyncio
import dataclasses
import errno
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import pytest

from sipbridge.numbers import InvalidField, InvalidNumber
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus
from sipbridge.store.service import UNSET, AlreadyExists, NotFound, NumberRoute
from sipbridge.store.service import agents as agents_service

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


# ---------------------------------------------------------------- agents


async def test_add_and_get_agent(db: Database) -> None:
    before = datetime.now(UTC)
    agent = await service.add_agent(db, "support", "wss://agent.example/ws")
    assert agent.name == "support"
    assert agent.url == "wss://agent.example/ws"
    assert agent.voice_enabled is True
    assert agent.created_at.tzinfo is UTC
    assert before - timedelta(seconds=1) <= agent.created_at <= datetime.now(UTC)
    assert await service.get_agent(db, "support") == agent


async def test_add_agent_voice_disabled(db: Database) -> None:
    agent = await service.add_agent(db, "textonly", "ws://localhost:9000", voice_enabled=False)
    assert agent.voice_enabled is False
    assert (await service.get_agent(db, "textonly")).voice_enabled is False


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://agent.example/ws", "must start with ws:// or wss://"),
        ("agent.example", "must start with ws:// or wss://"),
        ("ws://", "no host"),
        ("wss://host:notaport/x", "bad port"),
    ],
)
async def test_add_agent_rejects_bad_url(db: Database, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await service.add_agent(db, "bot", url)
    assert await service.list_agents(db) == []


@pytest.mark.parametrize("name", ["", " bot", "bot bot", "-bot", "a" * 101, "bot/1"])
async def test_add_agent_rejects_bad_name(db: Database, name: str) -> None:
    with pytest.raises(ValueError, match="invalid agent name"):
        await service.add_agent(db, name, "ws://x")


async def test_add_agent_duplicate(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    with pytest.raises(AlreadyExists, match="agent 'bot' already exists"):
        await service.add_agent(db, "bot", "ws://b")
    assert (await service.get_agent(db, "bot")).url == "ws://a"


async def test_concurrent_duplicate_agents(db: Database) -> None:
    results = await asyncio.gather(
        *(service.add_agent(db, "bot", f"ws://h{i}") for i in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if isinstance(r, BaseException))


async def test_list_agents_sorted(db: Database) -> None:
    await service.add_agent(db, "zeta", "ws://z")
    await service.add_agent(db, "alpha", "ws://a")
    assert [a.name for a in await service.list_agents(db)] == ["alpha", "zeta"]


async def test_get_agent_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match="agent 'ghost' not found"):
        await service.get_agent(db, "ghost")


async def test_remove_agent_orphans_numbers(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    await service.add_agent(db, "other", "ws://b")
    await service.add_number(db, "+12025550101", "bot")
    await service.add_number(db, "+12025550102", "bot")
    await service.add_number(db, "+12025550103", "other")
    assert await service.remove_agent(db, "bot") == 2
    assert [a.name for a in await service.list_agents(db)] == ["other"]
    numbers = {n.number: n.agent for n in await service.list_numbers(db)}
    assert numbers == {"+12025550101": None, "+12025550102": None, "+12025550103": "other"}
    route = await service.lookup_number(db, "+12025550101")
    assert route == NumberRoute(number="+12025550101", agent=None)
    # the name is free again, and a new agent does not inherit the orphans
    await service.add_agent(db, "bot", "ws://c")
    assert (await service.lookup_number(db, "+12025550101")) == NumberRoute("+12025550101", None)


async def test_remove_agent_without_numbers(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    assert await service.remove_agent(db, "bot") == 0


async def test_remove_agent_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await service.remove_agent(db, "ghost")


async def test_add_agent_full(db: Database) -> None:
    agent = await service.add_agent(
        db,
        "multi",
        ["wss://a.example/ws", "wss://b.example/ws", "wss://a.example/ws"],
        protocol="twilio",
        token="s3cret",
        sample_rate=16000,
    )
    assert agent.urls == ["wss://a.example/ws", "wss://b.example/ws"]  # duplicates dropped
    assert agent.url == "wss://a.example/ws"
    assert (agent.protocol, agent.token, agent.sample_rate) == ("twilio", "s3cret", 16000)
    assert agent.updated_at is None
    assert await service.get_agent(db, "multi") == agent
    data = agent.to_json()
    assert data["has_token"] is True and "token" not in data
    assert "s3cret" not in repr(data)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"urls": []}, "urls"),
        ({"urls": ["ws://a", "http://b"]}, "urls"),
        ({"urls": [f"ws://h{i}" for i in range(11)]}, "urls"),
        ({"urls": [42]}, "urls"),
        ({"urls": "ws://a b"}, "urls"),
        ({"protocol": "sip"}, "protocol"),
        ({"sample_rate": 44100}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"token": ""}, "token"),
        ({"token": "a\nb"}, "token"),
        ({"token": "x" * 1025}, "token"),
        ({"voice_enabled": "yes"}, "voice_enabled"),
    ],
)
async def test_add_agent_rejects_bad_fields(
    db: Database, kwargs: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {"urls": "ws://a"} | kwargs
    with pytest.raises(InvalidField, match=rf"^{field}: ") as info:
        await service.add_agent(db, "bot", **values)  # type: ignore[arg-type]
    assert info.value.field == field
    assert await service.list_agents(db) == []


async def test_update_agent(db: Database) -> None:
    created = await service.add_agent(db, "bot", "ws://a", token="t1")
    unchanged = await service.update_agent(db, "bot")
    assert unchanged == created  # nothing to change: updated_at stays None

    updated = await service.update_agent(
        db, "bot", urls=["wss://b", "wss://c"], protocol="twilio", sample_rate=16000
    )
    assert updated.urls == ["wss://b", "wss://c"]
    assert (updated.protocol, updated.sample_rate, updated.token) == ("twilio", 16000, "t1")
    assert updated.voice_enabled is True
    assert updated.updated_at is not None and updated.updated_at >= created.created_at
    assert await service.get_agent(db, "bot") == updated

    assert (await service.update_agent(db, "bot", token=UNSET)).token == "t1"
    assert (await service.update_agent(db, "bot", token="t2")).token == "t2"
    assert (await service.update_agent(db, "bot", token=None)).token is None
    assert (await service.update_agent(db, "bot", voice_enabled=False)).voice_enabled is False
    assert (await service.get_agent(db, "bot")).voice_enabled is False


async def test_add_agent_with_ca_bundle(db: Database, ca_bundle: Path) -> None:
    agent = await service.add_agent(db, "tls", "wss://agent.example/ws", ca_bundle=str(ca_bundle))
    assert agent.ca_bundle == str(ca_bundle)
    assert (await service.get_agent(db, "tls")).ca_bundle == str(ca_bundle)
    assert agent.to_json()["ca_bundle"] == str(ca_bundle)
    plain = await service.add_agent(db, "plain", "wss://agent.example/ws")
    assert plain.ca_bundle is None
    # Routing hands the bundle to the runtime.
    await service.add_number(db, "+12025550101", "tls")
    route = await service.lookup_number(db, "+12025550101")
    assert route is not None and route.agent is not None
    assert route.agent.ca_bundle == str(ca_bundle)


async def test_ca_bundle_stored_as_absolute_path(
    db: Database, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ca_bundle.parent)
    agent = await service.add_agent(db, "bot", "wss://a", ca_bundle=ca_bundle.name)
    assert agent.ca_bundle == str(ca_bundle)
    assert os.path.isabs(agent.ca_bundle)


async def test_ca_bundle_accepted_with_ws_urls_only(db: Database, ca_bundle: Path) -> None:
    # Unused until a wss:// URL is set, but accepted so URLs and bundle change in any order.
    agent = await service.add_agent(db, "bot", "ws://a", ca_bundle=str(ca_bundle))
    assert agent.ca_bundle == str(ca_bundle)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"this is not a certificate\n", "no certificate could be loaded"),
        (b"", "no certificate could be loaded"),
        ("dir", "not a file"),
    ],
)
async def test_add_agent_rejects_bad_ca_bundle(
    db: Database,
    tmp_path: Path,
    content: bytes | str | None,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One message whatever the failure (an API-key holder learns nothing about the
    server's files); the reason is in the operator's log."""
    path = tmp_path / "bundle.pem"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with (
        caplog.at_level(logging.WARNING, logger="sipbridge.store"),
        pytest.raises(InvalidField) as info,
    ):
        await service.add_agent(db, "bot", "wss://a", ca_bundle=str(path))
    assert info.value.field == "ca_bundle"
    assert str(info.value) == (
        f"ca_bundle: {path} is not a readable PEM CA bundle (a file holding at least one "
        "certificate that sipbridge can read)"
    )
    assert any(message in r.getMessage() for r in caplog.records)
    assert await service.list_agents(db) == []


async def test_add_agent_rejects_private_key_as_ca_bundle(db: Database, ca_bundle: Path) -> None:
    key = ca_bundle.parent / "ca-key.pem"
    with pytest.raises(InvalidField, match=r"^ca_bundle: .*is not a readable PEM CA bundle"):
        await service.add_agent(db, "bot", "wss://a", ca_bundle=str(key))


@pytest.mark.parametrize("value", ["", "   ", "a\x00b", "bad\npath", 42])
async def test_add_agent_rejects_bad_ca_bundle_value(db: Database, value: object) -> None:
    with pytest.raises(InvalidField, match=r"^ca_bundle: "):
        await service.add_agent(db, "bot", "wss://a", ca_bundle=value)  # type: ignore[arg-type]


async def test_add_agent_rejects_too_long_ca_bundle_path(db: Database) -> None:
    with pytest.raises(InvalidField, match=r"^ca_bundle: path longer than 1024"):
        await service.add_agent(db, "bot", "wss://a", ca_bundle="/" + "x" * 1024)


async def test_add_agent_rejects_unreadable_ca_bundle(
    db: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "locked.pem"
    path.write_text("unreadable before its content matters")
    path.chmod(0)

    def refuse(file: str, *args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(errno.EACCES, "Permission denied", file)

    # root reads files whatever their mode (CI runs as root): refuse the read as the
    # kernel would for anyone else.
    monkeypatch.setattr(agents_service, "open", refuse, raising=False)
    with (
        caplog.at_level(logging.WARNING, logger="sipbridge.store"),
        pytest.raises(InvalidField, match=r"^ca_bundle: .*is not a readable PEM CA bundle"),
    ):
        await service.add_agent(db, "bot", "wss://a", ca_bundle=str(path))
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


async def test_update_agent_ca_bundle(db: Database, ca_bundle: Path, tmp_path: Path) -> None:
    await service.add_agent(db, "bot", "wss://a", token="t")
    updated = await service.update_agent(db, "bot", ca_bundle=str(ca_bundle))
    assert updated.ca_bundle == str(ca_bundle)
    assert updated.updated_at is not None
    assert (await service.update_agent(db, "bot", ca_bundle=UNSET)).ca_bundle == str(ca_bundle)
    assert (await service.update_agent(db, "bot", protocol="twilio")).ca_bundle == str(ca_bundle)

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidField, match=r"^ca_bundle: .*is not a readable PEM CA bundle"):
        await service.update_agent(db, "bot", ca_bundle=str(garbage))
    with pytest.raises(InvalidField, match=r"^ca_bundle: .*is not a readable PEM CA bundle"):
        await service.update_agent(db, "bot", ca_bundle=str(tmp_path / "missing.pem"))
    assert (await service.get_agent(db, "bot")).ca_bundle == str(ca_bundle)  # unchanged

    cleared = await service.update_agent(db, "bot", ca_bundle=None)
    assert cleared.ca_bundle is None
    assert cleared.token == "t"
    assert (await service.get_agent(db, "bot")).ca_bundle is None


async def test_update_agent_errors(db: Database) -> None:
    with pytest.raises(NotFound, match="agent 'ghost' not found"):
        await service.update_agent(db, "ghost", protocol="native")
    await service.add_agent(db, "bot", "ws://a")
    with pytest.raises(InvalidField, match=r"^urls: "):
        await service.update_agent(db, "bot", urls=[])
    with pytest.raises(InvalidField, match=r"^sample_rate: "):
        await service.update_agent(db, "bot", sample_rate=11025)
    assert (await service.get_agent(db, "bot")).urls == ["ws://a"]


# --------------------------------------------------------------- numbers


async def test_add_number_normalizes(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    record = await service.add_number(db, "+1 (202) 555-0101", "bot")
    assert record.number == "+12025550101"
    assert record.agent == "bot"
    assert [(n.number, n.agent) for n in await service.list_numbers(db)] == [
        ("+12025550101", "bot")
    ]


async def test_add_number_invalid(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    with pytest.raises(InvalidNumber):
        await service.add_number(db, "abc", "bot")
    assert await service.list_numbers(db) == []


async def test_add_number_unknown_agent(db: Database) -> None:
    with pytest.raises(NotFound, match="agent 'ghost' not found"):
        await service.add_number(db, "+12025550101", "ghost")
    assert await service.list_numbers(db) == []


async def test_add_number_duplicate_in_any_format(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    await service.add_agent(db, "other", "ws://b")
    await service.add_number(db, "+12025550101", "bot")
    with pytest.raises(AlreadyExists, match=r"number \+12025550101 already exists"):
        await service.add_number(db, "tel:+1-202-555-0101", "other")
    assert (await service.list_numbers(db))[0].agent == "bot"


async def test_list_numbers_sorted(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    for number in ("+442079460958", "+12025550101", "+4930901820"):
        await service.add_number(db, number, "bot")
    assert [n.number for n in await service.list_numbers(db)] == [
        "+12025550101",
        "+442079460958",
        "+4930901820",
    ]


async def test_remove_number(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    await service.add_number(db, "+12025550101", "bot")
    assert await service.remove_number(db, "+1 202-555-0101") == "+12025550101"
    assert await service.list_numbers(db) == []
    with pytest.raises(NotFound, match=r"number \+12025550101 not found"):
        await service.remove_number(db, "+12025550101")


async def test_remove_number_invalid_text(db: Database) -> None:
    with pytest.raises(InvalidNumber):
        await service.remove_number(db, "abc")


async def test_remove_number_stored_but_no_longer_valid(db: Database) -> None:
    # simulate a row written under older phonenumbers metadata
    from sipbridge.store.models import PhoneNumber

    async with db.sessionmaker() as session, session.begin():
        session.add(PhoneNumber(number="+999123", agent_id=None))
    assert await service.remove_number(db, "+999123") == "+999123"
    assert await service.list_numbers(db) == []


async def test_lookup_number(db: Database) -> None:
    agent = await service.add_agent(db, "bot", "ws://a", voice_enabled=False)
    await service.add_number(db, "+12025550101", "bot")
    route = await service.lookup_number(db, "+12025550101")
    assert route == NumberRoute(number="+12025550101", agent=agent)
    assert await service.lookup_number(db, "+12025550199") is None


async def test_lookup_number_is_one_query(db: Database) -> None:
    from sqlalchemy import event

    await service.add_agent(db, "bot", "ws://a")
    await service.add_number(db, "+12025550101", "bot")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        route = await service.lookup_number(db, "+12025550101")
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)
    assert route is not None and route.agent is not None
    assert len(statements) == 1
    assert "JOIN" in statements[0].upper()


async def test_add_number_default_region(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    with pytest.raises(InvalidNumber, match="set a default region") as info:
        await service.add_number(db, "(202) 555-0101", "bot")
    assert info.value.field == "number"
    record = await service.add_number(db, "(202) 555-0101", "bot", default_region="us")
    assert record.number == "+12025550101"
    assert record.created_at is not None and record.created_at.tzinfo is UTC
    # international numbers ignore the region
    record = await service.add_number(db, "+44 20 7946 0958", "bot", default_region="US")
    assert record.number == "+442079460958"


async def test_add_number_bad_region(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    with pytest.raises(InvalidField, match=r"^default_region: 'XX' is not a known region"):
        await service.add_number(db, "2025550101", "bot", default_region="XX")


async def test_get_number(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    added = await service.add_number(db, "+12025550101", "bot")
    assert await service.get_number(db, "202-555-0101", default_region="US") == added
    with pytest.raises(NotFound, match=r"number \+12025550102 not found"):
        await service.get_number(db, "+12025550102")
    with pytest.raises(InvalidNumber):
        await service.get_number(db, "abc")


async def test_update_number(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    other = await service.add_agent(db, "other", "ws://b")
    added = await service.add_number(db, "+12025550101", "bot")
    moved = await service.update_number(db, "+1 202 555 0101", "other")
    assert (moved.number, moved.agent, moved.created_at) == (
        "+12025550101",
        "other",
        added.created_at,
    )
    route = await service.lookup_number(db, "+12025550101")
    assert route == NumberRoute("+12025550101", other)

    detached = await service.update_number(db, "+12025550101", None)
    assert detached.agent is None
    assert await service.lookup_number(db, "+12025550101") == NumberRoute("+12025550101", None)

    with pytest.raises(NotFound, match="agent 'ghost' not found"):
        await service.update_number(db, "+12025550101", "ghost")
    with pytest.raises(NotFound, match="not found"):
        await service.update_number(db, "+12025550199", "bot")
    with pytest.raises(InvalidNumber):
        await service.update_number(db, "nope", "bot")


async def test_list_numbers_by_agent(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    await service.add_agent(db, "other", "ws://b")
    await service.add_number(db, "+12025550102", "bot")
    await service.add_number(db, "+12025550101", "bot")
    await service.add_number(db, "+12025550103", "other")
    assert [n.number for n in await service.list_numbers(db, agent="bot")] == [
        "+12025550101",
        "+12025550102",
    ]
    assert [n.number for n in await service.list_numbers(db, agent="other")] == ["+12025550103"]
    assert await service.list_numbers(db, agent="ghost") == []


async def test_remove_number_default_region(db: Database) -> None:
    await service.add_agent(db, "bot", "ws://a")
    await service.add_number(db, "+12025550101", "bot")
    assert await service.remove_number(db, "(202) 555-0101", default_region="US") == "+12025550101"


async def test_lookup_number_carries_agent_settings(db: Database) -> None:
    await service.add_agent(
        db, "bot", ["wss://a", "wss://b"], protocol="twilio", token="t", sample_rate=16000
    )
    await service.add_number(db, "+12025550101", "bot")
    route = await service.lookup_number(db, "+12025550101")
    assert route is not None and route.agent is not None
    assert route.agent.urls == ["wss://a", "wss://b"]
    assert (route.agent.url, route.agent.protocol, route.agent.token) == ("wss://a", "twilio", "t")
    assert route.agent.sample_rate == 16000


# ----------------------------------------------------------------- calls


def make_call(call_id: str, received_at: datetime, **overrides: object) -> CallRecord:
    values: dict[str, object] = {
        "id": call_id,
        "sip_call_id": f"{call_id}@trunk",
        "from_number": "+12025550100",
        "to_number": "+12025550101",
        "agent": "bot",
        "received_at": received_at,
    }
    values.update(overrides)
    return CallRecord(**values)  # type: ignore[arg-type]


async def test_save_and_list_call_round_trip(db: Database) -> None:
    call = make_call(
        "c1",
        T0,
        answered_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=31, milliseconds=250),
        status=CallStatus.ANSWERED,
        reason="caller_hangup",
        sip_code=200,
        codec="PCMA",
        hangup_by="caller",
        source="198.51.100.1:5060",
        trunk="carrier",
    )
    await service.save_call(db, call)
    assert call.caller_country is None  # the record passed in is left alone
    [loaded] = await service.list_calls(db)
    assert loaded == dataclasses.replace(call, caller_country="US", caller_region="Washington D.C.")
    assert loaded.duration_s == 30.25
    assert loaded.received_at.tzinfo is UTC


async def test_duration_column_stored(db: Database) -> None:
    from sqlalchemy import select

    from sipbridge.store.models import Call

    await service.save_call(
        db, make_call("c1", T0, answered_at=T0, ended_at=T0 + timedelta(seconds=5))
    )
    async with db.sessionmaker() as session:
        assert await session.scalar(select(Call.duration_s)) == 5.0


async def test_save_call_upserts(db: Database) -> None:
    call = make_call("c1", T0, status=CallStatus.FAILED, reason="agent_unreachable")
    await service.save_call(db, call)
    call.status = CallStatus.ANSWERED
    call.answered_at = T0 + timedelta(seconds=1)
    call.ended_at = T0 + timedelta(seconds=11)
    call.reason = "agent_hangup"
    await service.save_call(db, call)
    calls = await service.list_calls(db)
    assert len(calls) == 1
    assert calls[0].status is CallStatus.ANSWERED
    assert calls[0].reason == "agent_hangup"
    assert calls[0].duration_s == 10.0


async def test_list_calls_newest_first_and_limit(db: Database) -> None:
    for i in range(5):
        await service.save_call(db, make_call(f"c{i}", T0 + timedelta(minutes=i)))
    assert [c.id for c in await service.list_calls(db)] == ["c4", "c3", "c2", "c1", "c0"]
    assert [c.id for c in await service.list_calls(db, limit=2)] == ["c4", "c3"]
    with pytest.raises(ValueError, match="limit"):
        await service.list_calls(db, limit=0)


async def test_list_calls_by_number(db: Database) -> None:
    await service.save_call(db, make_call("in", T0, to_number="+12025550101"))
    await service.save_call(
        db,
        make_call(
            "out",
            T0 + timedelta(seconds=1),
            from_number="+12025550101",
            to_number="+12025550199",
        ),
    )
    await service.save_call(
        db,
        make_call("other", T0 + timedelta(seconds=2), from_number="+1", to_number="+12025550188"),
    )
    assert [c.id for c in await service.list_calls(db, number="+1 (202) 555-0101")] == [
        "out",
        "in",
    ]
    assert [c.id for c in await service.list_calls(db, number="+12025550188")] == ["other"]
    assert await service.list_calls(db, number="+12025550177") == []


async def test_list_calls_by_raw_caller(db: Database) -> None:
    await service.save_call(db, make_call("anon", T0, from_number="anonymous"))
    await service.save_call(db, make_call("known", T0))
    assert [c.id for c in await service.list_calls(db, number="anonymous")] == ["anon"]


async def test_records_survive_reopening(db_url: str) -> None:
    first = Database(db_url)
    await first.upgrade()
    await service.add_agent(first, "bot", "wss://a.example")
    await service.add_number(first, "+12025550101", "bot")
    await service.save_call(first, make_call("c1", T0))
    await first.close()

    second = Database(db_url)
    try:
        await second.upgrade()
        assert [a.name for a in await service.list_agents(second)] == ["bot"]
        route = await service.lookup_number(second, "+12025550101")
        assert route is not None and route.agent is not None
        assert route.agent.url == "wss://a.example"
        [call] = await service.list_calls(second)
        assert call.id == "c1" and call.received_at == T0
    finally:
        await second.close()
