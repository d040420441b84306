"""An instance among its peers on one database: its row, its heartbeat, and the open calls
of a peer that died (runtime/cluster.py and its hooks in the server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from sipbridge.runtime.cluster import InstanceBeat, heartbeat_interval
from sipbridge.runtime.metrics import Metrics
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.models import Instance
from sipbridge.store.records import CallRecord, CallStatus, InstanceState
from tests.support.settings import BridgeFactory


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def ghost(db: Database, name: str = "ghost", age: float = 60.0) -> None:
    """A peer that died with one call up: its row not seen for ``age`` seconds."""
    await service.register_instance(db, name, "192.0.2.9:5060")
    now = datetime.now(UTC)
    await service.write_call(
        db,
        CallRecord(
            id=f"{name}-call",
            sip_call_id=f"{name}@test",
            from_number="+12025550101",
            to_number="+12025550199",
            agent="echo",
            received_at=now - timedelta(seconds=age + 5),
            answered_at=now - timedelta(seconds=age + 4),
            status=CallStatus.ACTIVE,
            owner=name,
            updated_at=now - timedelta(seconds=age),
        ),
    )
    async with db.sessionmaker() as session, session.begin():
        db_now = await service.database_now(session)
        await session.execute(
            update(Instance)
            .where(Instance.id == name)
            .values(seen_at=db_now - timedelta(seconds=age))
        )


def test_heartbeat_interval() -> None:
    assert heartbeat_interval(5.0, 30.0) == 5.0
    assert heartbeat_interval(5.0, 3.0) == 1.0


async def test_servers_share_the_instances_table_and_close_a_dead_peers_calls(
    make_bridge: BridgeFactory, db_url: str
) -> None:
    first = await make_bridge(db=db_url, instance_id="first", instance_timeout=1.5)
    second = await make_bridge(db=db_url, instance_id="second", instance_timeout=1.5)
    db = first.db
    rows = {i.id: i for i in await service.list_instances(db)}
    assert rows["first"].state is InstanceState.RUNNING
    assert rows["first"].sip_address == f"127.0.0.1:{first.sip_address[1]}"
    assert rows["second"].sip_address == f"127.0.0.1:{second.sip_address[1]}"
    started = rows["first"].seen_at

    await ghost(db)

    async def ghost_closed() -> bool:
        return (await service.get_instance(db, "ghost")).state is InstanceState.LOST

    await wait_for(ghost_closed, 5, "the ghost declared lost")
    lost = await service.get_instance(db, "ghost")
    assert lost.lost_by in {"first", "second"} and lost.lost_calls == 1
    detail = await service.get_call(db, "ghost-call")
    assert detail.record.status is CallStatus.INTERRUPTED
    assert detail.record.reason == "instance_lost" and detail.record.owner == "ghost"
    metrics = first if lost.lost_by == "first" else second
    assert metrics.metrics.lost_instances._value.get() == 1  # type: ignore[attr-defined]

    # The live ones keep beating (neither takes the other for dead) ...
    rows = {i.id: i for i in await service.list_instances(db)}
    assert rows["first"].seen_at > started
    assert {rows["first"].state, rows["second"].state} == {InstanceState.RUNNING}
    # ... say when they drain ...
    first.draining = True

    async def first_draining() -> bool:
        return (await service.get_instance(db, "first")).state is InstanceState.DRAINING

    await wait_for(first_draining, 3, "first draining")
    first.draining = False
    # ... and a clean exit says stopped.
    await second.stop()
    stopped = await service.get_instance(db, "first")
    assert stopped.state is not InstanceState.STOPPED
    async with Database(db_url) as check:
        assert (await service.get_instance(check, "second")).state is InstanceState.STOPPED


async def test_no_peer_is_judged_after_a_failed_heartbeat(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a database outage every heartbeat is old: the first instance back must not
    take its peers for dead before it has beaten twice in a row."""
    beat = InstanceBeat(db, "me", 30.0, Metrics())
    await beat.register("127.0.0.1:5060")
    await ghost(db)
    await beat.beat(draining=False)  # the first beat after start: nobody judged yet
    assert (await service.get_instance(db, "ghost")).state is InstanceState.RUNNING

    real = service.instance_heartbeat

    async def down(*_args: object, **_kwargs: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(service, "instance_heartbeat", down)
    await beat.beat(draining=False)  # the database is down: logged, not raised
    monkeypatch.setattr(service, "instance_heartbeat", real)
    await beat.beat(draining=False)  # back: this one only says we are alive
    assert (await service.get_instance(db, "ghost")).state is InstanceState.RUNNING
    await beat.beat(draining=False)  # two good beats in a row: now it may judge
    assert (await service.get_instance(db, "ghost")).state is InstanceState.LOST


async def test_a_database_error_never_escapes(tmp_path: object) -> None:
    broken = Database("sqlite://")  # no schema: every statement fails
    beat = InstanceBeat(broken, "me", 30.0, Metrics())
    try:
        await beat.register("127.0.0.1:5060")
        await beat.beat(draining=False)
        await beat.close_lost()
        await beat.stop(1.0)
    finally:
        await broken.close()
