"""Instances sharing a database: heartbeats on the database's clock, and lost instances'
open calls closed by exactly one peer (SQLite and PostgreSQL)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.models import Instance
from sipbridge.store.records import CallRecord, CallStatus, InstanceRecord, InstanceState
from sipbridge.store.service import NotFound
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_server_url

T0 = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def call(call_id: str, owner: str, status: CallStatus, *, answered: bool = True) -> CallRecord:
    return CallRecord(
        id=call_id,
        sip_call_id=f"{call_id}@test",
        from_number="+12025550101",
        to_number="+12025550199",
        agent="echo",
        received_at=T0,
        answered_at=T0 + timedelta(seconds=1) if answered else None,
        status=status,
        owner=owner,
        updated_at=T0 + timedelta(seconds=10),
    )


async def age(db: Database, instance_id: str, seconds: float) -> None:
    """Move ``instance_id``'s last heartbeat ``seconds`` into the past."""
    async with db.sessionmaker() as session, session.begin():
        now = await service.database_now(session)
        await session.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(seen_at=now - timedelta(seconds=seconds))
        )


async def test_database_now_is_utc_and_close_to_ours(db: Database) -> None:
    async with db.sessionmaker() as session:
        now = await service.database_now(session)
    assert now.tzinfo is UTC
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


async def test_register_heartbeat_stop(db: Database) -> None:
    first = await service.register_instance(db, "a", "127.0.0.1:5071")
    assert first.previous_seen_at is None and not first.was_lost
    record = first.record
    assert (record.id, record.sip_address, record.state) == ("a", "127.0.0.1:5071", "running")
    assert record.started_at == record.seen_at == first.now
    await asyncio.sleep(0.01)
    beat = await service.instance_heartbeat(db, "a")
    assert beat.previous_seen_at == first.now and beat.now > first.now
    assert beat.record.started_at == first.now and beat.record.sip_address == "127.0.0.1:5071"
    draining = await service.instance_heartbeat(db, "a", draining=True)
    assert draining.record.state is InstanceState.DRAINING
    stopped = await service.stop_instance(db, "a")
    assert stopped.state is InstanceState.STOPPED and stopped.seen_at >= draining.now
    assert await service.list_instances(db) == [stopped]
    assert await service.get_instance(db, "a") == stopped
    assert stopped.to_json()["state"] == "stopped"
    # A restart takes the row over: running, started again.
    again = await service.register_instance(db, "a", "127.0.0.1:5072")
    assert again.record.state is InstanceState.RUNNING
    assert again.record.started_at == again.now > first.now
    assert again.record.sip_address == "127.0.0.1:5072"


async def test_list_and_get(db: Database) -> None:
    assert await service.list_instances(db) == []
    await service.register_instance(db, "b", "127.0.0.1:5072")
    await service.register_instance(db, "a", "127.0.0.1:5071")
    assert [i.id for i in await service.list_instances(db)] == ["a", "b"]
    with pytest.raises(NotFound):
        await service.get_instance(db, "c")


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "x" * 256, 7])
async def test_bad_ids(db: Database, bad: object) -> None:
    with pytest.raises(InvalidField):
        await service.register_instance(db, bad, "127.0.0.1:5060")  # type: ignore[arg-type]
    with pytest.raises(InvalidField):
        await service.close_lost_instances(db, bad, 30)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1, True, "30"])
async def test_bad_timeouts(db: Database, timeout: object) -> None:
    with pytest.raises(InvalidField):
        await service.close_lost_instances(db, "a", timeout)  # type: ignore[arg-type]


async def test_a_lost_instances_open_calls_are_closed_by_a_peer(db: Database) -> None:
    await service.register_instance(db, "a", "127.0.0.1:5071")
    await service.register_instance(db, "b", "127.0.0.1:5072")
    await service.write_call(db, call("b-active", "b", CallStatus.ACTIVE))
    await service.write_call(db, call("b-ringing", "b", CallStatus.RINGING, answered=False))
    await service.write_call(db, call("b-done", "b", CallStatus.ANSWERED))
    await service.write_call(db, call("a-active", "a", CallStatus.ACTIVE))
    # Seen recently enough: nobody is lost.
    await age(db, "b", 20)
    assert await service.close_lost_instances(db, "a", 30) == []
    await age(db, "b", 31)
    # An instance never declares itself lost.
    assert await service.close_lost_instances(db, "b", 30) == []
    [lost] = await service.close_lost_instances(db, "a", 30)
    assert lost.id == "b" and lost.calls == ["b-active", "b-ringing"]
    calls = {c.id: c for c in await service.list_calls(db)}
    active, ringing = calls["b-active"], calls["b-ringing"]
    assert active.status is CallStatus.INTERRUPTED and active.reason == "instance_lost"
    assert active.hangup_by == "server" and active.owner == "b"
    assert active.ended_at == active.updated_at and active.duration_s == 9.0
    assert ringing.status is CallStatus.INTERRUPTED and ringing.duration_s is None
    assert calls["b-done"].status is CallStatus.ANSWERED
    assert calls["a-active"].status is CallStatus.ACTIVE
    b = await service.get_instance(db, "b")
    assert (b.state, b.lost_by, b.lost_calls) == (InstanceState.LOST, "a", 2)
    assert b.lost_at is not None and b.lost_at > b.seen_at
    # Once lost, nobody closes it again.
    assert await service.close_lost_instances(db, "a", 30) == []
    # It was alive after all (a network partition): its next heartbeat says so.
    beat = await service.instance_heartbeat(db, "b")
    assert beat.was_lost and beat.record.state is InstanceState.RUNNING
    assert beat.record.lost_by is None
    # ... and the real end of a call it closes wins over instance_lost.
    end = call("b-active", "b", CallStatus.ANSWERED)
    end.reason = "caller_hangup"
    assert await service.write_call(db, end)
    assert (await service.get_call(db, "b-active")).record.reason == "caller_hangup"


async def test_stopped_and_lost_instances_are_left_alone(db: Database) -> None:
    await service.register_instance(db, "a", None)
    await service.register_instance(db, "b", "127.0.0.1:5072")
    await service.stop_instance(db, "b")
    await age(db, "b", 3600)
    assert await service.close_lost_instances(db, "a", 30) == []
    assert (await service.get_instance(db, "b")).state is InstanceState.STOPPED


async def test_draining_instances_can_be_lost(db: Database) -> None:
    await service.register_instance(db, "a", "127.0.0.1:5071")
    await service.instance_heartbeat(db, "b", draining=True)  # a row made by a heartbeat
    await age(db, "b", 60)
    [lost] = await service.close_lost_instances(db, "a", 30)
    assert lost.id == "b" and lost.calls == []
    assert (await service.get_instance(db, "b")).lost_calls == 0


async def test_the_timeout_is_on_the_database_clock(db: Database) -> None:
    """A peer whose own clock is an hour ahead still waits for the database's timeout."""
    await service.register_instance(db, "b", "127.0.0.1:5072")
    await age(db, "b", 5)
    assert await service.close_lost_instances(db, "a", 30) == []
    # ``now`` stands in for the database clock in tests only.
    async with db.sessionmaker() as session:
        now = await service.database_now(session)
    [lost] = await service.close_lost_instances(db, "a", 30, now=now + timedelta(seconds=60))
    assert lost.id == "b"


async def test_many_peers_at_once_close_a_lost_instance_once(db: Database) -> None:
    for peer in ("p1", "p2", "p3", "p4"):
        await service.register_instance(db, peer, None)
    await service.register_instance(db, "dead", "127.0.0.1:5079")
    for n in range(5):
        await service.write_call(db, call(f"c{n}", "dead", CallStatus.ACTIVE))
    await age(db, "dead", 120)

    async def reap(peer: str) -> list[service.LostInstance]:
        # SQLite takes one writer at a time: a peer that finds the database locked by
        # another simply tries again at its next heartbeat.
        for _ in range(50):
            try:
                return await service.close_lost_instances(db, peer, 30)
            except Exception:
                await asyncio.sleep(0.02)
        raise AssertionError("never got the database")

    results = await asyncio.gather(*(reap(p) for p in ("p1", "p2", "p3", "p4")))
    winners = [r for r in results if r]
    assert len(winners) == 1
    [[lost]] = winners
    assert sorted(lost.calls) == [f"c{n}" for n in range(5)]
    dead = await service.get_instance(db, "dead")
    assert dead.lost_calls == 5 and dead.lost_by in {"p1", "p2", "p3", "p4"}
    calls = await service.list_calls(db)
    assert {c.reason for c in calls} == {"instance_lost"}


def test_record_json() -> None:
    record = InstanceRecord("a", "127.0.0.1:5071", InstanceState.RUNNING, T0, T0)
    assert record.to_json() == {
        "id": "a",
        "sip_address": "127.0.0.1:5071",
        "state": "running",
        "started_at": "2026-12-07T03:00:00+00:00",
        "seen_at": "2026-12-07T03:00:00+00:00",
        "lost_at": None,
        "lost_by": None,
        "lost_calls": None,
    }
    assert InstanceState.DRAINING.is_alive and not InstanceState.LOST.is_alive


async def test_concurrent_upgrades_of_a_new_database() -> None:
    """The instances of a new cluster start together on one new PostgreSQL database: each
    migrates (one after the other, under an advisory lock), none fails. (A cluster shares
    PostgreSQL; SQLite serves one instance.)"""
    server = postgres_server_url()
    assert server is not None
    url = await create_postgres_database(server)
    databases = [Database(url) for _ in range(3)]
    try:
        # Without the lock the migrations wait for each other for good: a bounded wait.
        await asyncio.wait_for(asyncio.gather(*(d.upgrade() for d in databases)), 60)
        assert {await d.current_revision() for d in databases} == {"0015"}
    finally:
        for database in databases:
            await database.close()
        await drop_postgres_database(server, url)
