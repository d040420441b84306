"""Stored registrations: each instance's last known state per trunk (SQLite and PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import pytest

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import InstanceState

T0 = datetime(2026, 12, 9, 10, 0, tzinfo=UTC)


async def test_save_replace_list(db: Database) -> None:
    await service.add_trunk(db, "carrier", host="192.0.2.10", username="acct", register=True)
    await service.register_instance(db, "sip-a", "192.0.2.1:5060")
    await service.save_registration(
        db,
        "carrier",
        "sip-b",
        state="failing",
        registered_until=None,
        last_status=403,
        last_reason="Forbidden\r\nX-Evil: 1",
        next_attempt=T0 + timedelta(minutes=5),
        failures=2,
    )
    await service.save_registration(
        db,
        "carrier",
        "sip-a",
        state="registering",
        registered_until=None,
        last_status=None,
        last_reason=None,
        next_attempt=None,
        failures=0,
    )
    # The same key again replaces the row.
    await service.save_registration(
        db,
        "carrier",
        "sip-a",
        state="registered",
        registered_until=T0 + timedelta(hours=1),
        last_status=200,
        last_reason="ok",
        next_attempt=T0 + timedelta(minutes=30),
        failures=0,
    )
    rows = await service.list_registrations(db)
    assert [(r.trunk, r.instance, r.state) for r in rows] == [
        ("carrier", "sip-a", "registered"),
        ("carrier", "sip-b", "failing"),
    ]
    a, b = rows
    assert a.registered_until == T0 + timedelta(hours=1)
    assert a.instance_state is InstanceState.RUNNING
    assert b.instance_state is None  # no row in instances
    assert b.last_status == 403 and b.failures == 2
    assert "\r" not in (b.last_reason or "") and "\n" not in (b.last_reason or "")
    data = a.to_json()
    assert data["instance"] == "sip-a" and data["instance_state"] == "running"
    assert data["registered_until"] == (T0 + timedelta(hours=1)).isoformat()


async def test_removed_with_the_trunk(db: Database) -> None:
    await service.add_trunk(db, "carrier", host="192.0.2.10", username="acct", register=True)
    await service.add_trunk(db, "other", host="192.0.2.11", username="acct", register=True)
    for trunk in ("carrier", "other"):
        await service.save_registration(
            db,
            trunk,
            "sip-a",
            state="registered",
            registered_until=T0,
            last_status=200,
            last_reason="ok",
            next_attempt=T0,
            failures=0,
        )
    await service.remove_trunk(db, "carrier")
    assert [r.trunk for r in await service.list_registrations(db)] == ["other"]


async def test_bad_state(db: Database) -> None:
    with pytest.raises(InvalidField, match="state"):
        await service.save_registration(
            db,
            "carrier",
            "sip-a",
            state="bound",
            registered_until=None,
            last_status=None,
            last_reason=None,
            next_attempt=None,
            failures=0,
        )
