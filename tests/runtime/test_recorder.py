"""Call records that survive the database and the process (runtime/recorder.py): calls
made while the database refuses writes all land once it recovers, /readyz says so
meanwhile, and a killed instance's open calls are closed as interrupted at its restart."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from sipbridge.runtime.recorder import RecordWriter, failure_reason
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import db as db_module
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus, utcnow
from sipbridge.store.spool import RecordSpool
from tests.conftest import POSTGRES_ENV, _asyncpg_dsn
from tests.runtime.test_call import UdpClient, route_to
from tests.runtime.test_server import options
from tests.support.agents import EchoAgent
from tests.support.settings import loopback_settings
from tests.support.sipp import free_udp_port

CALLS = 3


async def start_server(tmp_path: Path, db_url: str, instance: str = "inst-a") -> SipBridgeServer:
    settings = dataclasses.replace(
        loopback_settings(tmp_path / "unused.db", agent_connect_timeout=2.0),
        db=db_url,
        instance_id=instance,
        spool_path=str(tmp_path / "records.spool"),
    )
    server = SipBridgeServer(settings)
    server.records.retry_backoff(0.2, 0.5)
    await server.start()
    return server


async def call_and_hang_up(server: SipBridgeServer, call_id: str) -> None:
    """One answered call from a raw UDP caller, hung up by the caller."""
    client = UdpClient(server.sip_address)
    try:
        started = time.monotonic()
        client.send(client.invite(f"z9hG4bK-{call_id}", call_id, 4010))
        ok = await client.final()
        assert ok.status == 200 and ok.to.tag, ok
        # A database refusing writes never delays the answer.
        assert time.monotonic() - started < 2.0
        client.send(client.in_dialog("ACK", 1, call_id, ok.to.tag))
        await asyncio.sleep(0.2)
        client.send(client.in_dialog("BYE", 2, call_id, ok.to.tag))
        assert (await client.final()).status == 200
    finally:
        client.close()


async def readyz(server: SipBridgeServer) -> tuple[int, dict[str, Any]]:
    host, port = server.http_address
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{host}:{port}/readyz", timeout=5)
    return response.status_code, response.json()


def metric(server: SipBridgeServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def sqlite_locked(db_url: str) -> AsyncIterator[None]:
    """Another connection holds ``BEGIN EXCLUSIVE`` on the SQLite file (at most 15 s)."""
    path = make_url(db_url).database
    assert path
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(15)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    holder = asyncio.ensure_future(asyncio.to_thread(hold))
    assert await asyncio.to_thread(locked.wait, 5)
    try:
        yield
    finally:
        release.set()
        await holder


@contextlib.asynccontextmanager
async def postgres_read_only(db_url: str, server: SipBridgeServer) -> AsyncIterator[None]:
    """New sessions of the test database are read-only; the server's pool is emptied, so
    its next connections are those (as after a fail-over to a standby)."""
    import asyncpg

    name = make_url(db_url).database
    admin = await asyncpg.connect(_asyncpg_dsn(os.environ[POSTGRES_ENV]))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await server.db.engine.dispose()
        try:
            yield
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            await server.db.engine.dispose()
    finally:
        await admin.close()


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def sqlite_read_only(server: SipBridgeServer) -> AsyncIterator[None]:
    """The server's new SQLite connections refuse writes (``attempt to write a readonly
    database``, as for a file or folder made read-only, which root ignores); its pool is
    emptied so that its next connections are those."""
    from sqlalchemy import event

    engine = server.db.engine.sync_engine

    def read_only(connection: Any, _record: Any) -> None:
        connection.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", read_only)
    await server.db.engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", read_only)
        await server.db.engine.dispose()


async def test_calls_while_the_database_refuses_writes_all_land_once_it_recovers(
    db_url: str, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite locked by another process (``BEGIN EXCLUSIVE``), PostgreSQL read-only."""
    # SQLite waits this long for a lock before "database is locked" (5 s in production).
    monkeypatch.setattr(db_module, "_SQLITE_BUSY_TIMEOUT_MS", 100)
    reason = "locked" if backend == "sqlite" else "read_only"
    await _calls_during_an_outage(tmp_path, db_url, reason)


async def test_calls_while_sqlite_is_read_only_all_land_once_it_is_writable(
    tmp_path: Path,
) -> None:
    await _calls_during_an_outage(tmp_path, f"sqlite:///{tmp_path / 'ro.db'}", "read_only")


async def _calls_during_an_outage(tmp_path: Path, db_url: str, reason: str) -> None:
    """Calls made while the database refuses writes (``reason``) are answered, spooled,
    /readyz says so, and every record lands once the database takes writes again."""
    server = await start_server(tmp_path, db_url)
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            assert (await readyz(server))[0] == 200
            await call_and_hang_up(server, "before-outage")
            if reason == "locked":
                outage = sqlite_locked(db_url)
            elif db_url.startswith("sqlite"):
                outage = sqlite_read_only(server)
            else:
                outage = postgres_read_only(db_url, server)
            async with outage:
                for n in range(CALLS):
                    await call_and_hang_up(server, f"during-{n}")

                async def spooled() -> bool:
                    return server.records.spool.depth > 0 and not server.records.pending

                await wait_for(spooled, 10, "records in the spool")
                status, body = await readyz(server)
                assert status == 503, body
                assert body["record_writes"] == f"failing: {reason}", body
                assert body["record_spool_depth"] > 0
                assert metric(server, "sipbridge_record_spool_depth") > 0
                failures = metric(
                    server, "sipbridge_call_record_write_failures_total", reason=reason
                )
                assert failures >= 1

            async def recovered() -> bool:
                return (await readyz(server))[0] == 200 and server.records.spool.depth == 0

            await wait_for(recovered, 10, "/readyz ready and the spool replayed")
        status, body = await readyz(server)
        assert body["record_writes"] == "ok" and body["record_spool_depth"] == 0, body
        assert not server.records.spool.path.exists()

        calls = await service.list_calls(server.db, limit=100)
        assert sorted(c.sip_call_id for c in calls) == sorted(
            ["before-outage", *(f"during-{n}" for n in range(CALLS))]
        )
        assert all(c.status is CallStatus.ANSWERED for c in calls), calls
        assert all(c.reason == "caller_hangup" and c.owner == "inst-a" for c in calls)
        # The counters agree with the table: one closed write per row, none dropped.
        closed = sum(
            metric(server, "sipbridge_call_records_written_total", state="closed", via=via)
            for via in ("direct", "spool")
        )
        assert closed == len(calls) == CALLS + 1
        assert metric(server, "sipbridge_call_records_written_total", state="closed", via="spool")
        assert metric(server, "sipbridge_call_records_spooled_total") >= CALLS
        assert metric(
            server, "sipbridge_calls_total", status="answered", reason="caller_hangup"
        ) == (CALLS + 1)
        assert metric(server, "sipbridge_record_spool_depth") == 0
    finally:
        await server.stop()


async def test_postgresql_refusing_connections_loses_no_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database unreachable: calls fail (no route can be read), yet each gets its one
    row once PostgreSQL lets the server in again."""
    import asyncpg

    from tests.conftest import create_postgres_database, drop_postgres_database, postgres_server_url

    server_url = postgres_server_url()
    assert server_url is not None
    db_url = await create_postgres_database(server_url)
    name = make_url(db_url).database
    server = await start_server(tmp_path, db_url)
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        try:
            client = UdpClient(server.sip_address)
            try:
                for n in range(CALLS):
                    client.send(client.invite(f"z9hG4bK-down{n}", f"down-{n}", 4012))
                    assert (await client.final()).status >= 400
            finally:
                client.close()

            async def spooled() -> bool:
                return server.records.spool.depth >= CALLS and not server.records.pending

            await wait_for(spooled, 10, "records in the spool")
            status, body = await readyz(server)
            # "unavailable" (connection refused); the pooled connections the termination
            # cut may first fail in other ways ("error").
            assert status == 503 and body["record_writes"].startswith("failing: "), body
            assert body["database"] is False
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

        async def recovered() -> bool:
            return (await readyz(server))[0] == 200 and server.records.spool.depth == 0

        await wait_for(recovered, 10, "/readyz ready and the spool replayed")
        calls = await service.list_calls(server.db, limit=100)
        assert sorted(c.sip_call_id for c in calls) == [f"down-{n}" for n in range(CALLS)]
        assert all(c.status is CallStatus.FAILED for c in calls)
    finally:
        await admin.close()
        await server.stop()
        await drop_postgres_database(server_url, db_url)


async def test_a_call_that_meets_postgresql_gone_gets_503_and_its_record_not_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stops between two refreshes of the trunk list: the next call's number
    lookup fails. It is refused 503 (Retry-After, Reason unhealthy) at once, the instance
    becomes unhealthy without waiting for the refresh, and the call keeps its record;
    before, it was a 500 `internal_error` with a 60-line traceback."""
    import asyncpg

    from sipbridge.runtime import server as server_module
    from tests.conftest import create_postgres_database, drop_postgres_database, postgres_server_url

    monkeypatch.setattr(server_module, "TRUNK_REFRESH", 3600.0)  # no refresh notices first
    server_url = postgres_server_url()
    assert server_url is not None
    db_url = await create_postgres_database(server_url)
    name = make_url(db_url).database
    settings = dataclasses.replace(
        loopback_settings(tmp_path / "unused.db", agent_connect_timeout=2.0),
        db=db_url,
        instance_timeout=3600.0,
        spool_path=str(tmp_path / "records.spool"),
    )
    server = SipBridgeServer(settings)
    server.records.retry_backoff(0.2, 0.5)
    await server.start()
    admin = await asyncpg.connect(_asyncpg_dsn(server_url))
    try:
        await route_to(server, "ws://127.0.0.1:9/")
        assert server.unhealthy(server.loop.time()) is None
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        try:
            client = UdpClient(server.sip_address)
            try:
                client.send(client.invite("z9hG4bK-gone", "gone-1", 4016))
                response = await client.final()
            finally:
                client.close()
            assert response.status == 503, response
            assert response.headers.get("Retry-After") == "5"
            assert response.headers.get("Reason") == 'SIP ;cause=503 ;text="unhealthy"'
            assert server.unhealthy(server.loop.time()) == "database_unreachable"

            async def spooled() -> bool:
                return server.records.spool.depth >= 1 and not server.records.pending

            await wait_for(spooled, 10, "the record in the spool")
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

        async def landed() -> bool:
            return server.records.spool.depth == 0 and not server.records.pending

        await wait_for(landed, 10, "the spool replayed")
        [call] = await service.list_calls(server.db, limit=10)
        assert (call.sip_call_id, call.status, call.reason, call.sip_code) == (
            "gone-1",
            CallStatus.FAILED,
            "unhealthy",
            503,
        )
        detail = await service.get_call(server.db, call.id)
        refusals = [e.data for e in detail.events if e.kind == "refusal"]
        assert refusals == [{"cause": "database_unreachable"}]
        assert "internal error" not in caplog.text and "Traceback" not in caplog.text
    finally:
        await admin.close()
        await server.stop()
        await drop_postgres_database(server_url, db_url)


# ---------------------------------------------------------------- the writer alone


class _FlakyStore:
    """A store that refuses the first ``failures`` writes, then takes them."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[CallRecord] = []

    async def __call__(self, _db: Database, record: CallRecord, _events: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        self.written.append(record)
        return True


def _record(call_id: str, status: CallStatus) -> CallRecord:
    return CallRecord(call_id, call_id, None, None, None, utcnow(), status=status)


async def test_writer_spools_in_order_and_replays_with_backoff(tmp_path: Path) -> None:
    from sipbridge.runtime.metrics import Metrics

    store = _FlakyStore(failures=2)
    metrics = Metrics()
    writer = RecordWriter(
        Database("sqlite://"), RecordSpool(tmp_path / "r.spool"), metrics, "me", write=store
    )
    writer.retry_backoff(0.05, 0.1)
    await writer.start()
    try:
        writer.submit(_record("a", CallStatus.RINGING))
        await asyncio.sleep(0.01)
        writer.submit(_record("a", CallStatus.ANSWERED))  # behind the spooled one
        writer.submit(_record("b", CallStatus.FAILED))
        deadline = time.monotonic() + 5
        while len(store.written) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await writer.close(1.0)
    # The spooled ringing snapshot of "a" merged with its later answered one: the store
    # never sees "a" go back to ringing.
    assert [(r.id, r.status) for r in store.written] == [
        ("a", CallStatus.ANSWERED),
        ("b", CallStatus.FAILED),
    ]
    assert all(r.owner == "me" and r.updated_at is not None for r in store.written)
    assert writer.healthy and writer.spool.depth == 0
    assert (
        metrics.registry.get_sample_value(
            "sipbridge_call_record_write_failures_total", {"reason": "unavailable"}
        )
        == 2
    )


async def test_writer_drops_with_an_error_when_the_spool_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sipbridge.runtime.metrics import Metrics

    store = _FlakyStore(failures=10**6)
    metrics = Metrics()
    writer = RecordWriter(
        Database("sqlite://"),
        RecordSpool(tmp_path / "r.spool", max_bytes=4096),
        metrics,
        "me",
        write=store,
    )
    writer.retry_backoff(10, 10)
    caplog.set_level(logging.ERROR, "sipbridge.records")
    await writer.start()
    for n in range(20):
        writer.submit(_record(f"c{n}", CallStatus.FAILED))
        await asyncio.sleep(0.005)
    await writer.close(1.0)
    dropped = metrics.registry.get_sample_value(
        "sipbridge_call_records_dropped_total", {"reason": "spool_full"}
    )
    assert dropped is not None and dropped > 0
    assert writer.spool.depth + dropped == 20
    assert "event=record_dropped reason=spool_full" in caplog.text


def test_failure_reasons() -> None:
    assert failure_reason(sqlite3.OperationalError("database is locked")) == "locked"
    assert (
        failure_reason(Exception("cannot execute INSERT in a read-only transaction")) == "read_only"
    )
    assert failure_reason(ConnectionRefusedError(111, "Connection refused")) == "unavailable"
    assert failure_reason(ValueError("bad")) == "error"


# ---------------------------------------------------------------- a killed process


async def test_killed_instance_closes_its_open_calls_as_interrupted_at_restart(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'crash.db'}"
    database = Database(db_url)
    await database.upgrade()
    # Another instance sharing the database has a call up: not ours to close.
    other = _record("other-call", CallStatus.ACTIVE)
    other.owner, other.updated_at = "inst-b", utcnow()
    await service.write_call(database, other)
    async with EchoAgent() as agent:
        await service.add_agent(database, "echo", agent.url, voice_enabled=True)
        await service.add_number(database, "+12025550101", "echo")
        await database.close()
        port = free_udp_port()
        low = random.randrange(40000, 59000, 2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sipbridge",
            "serve",
            "--sip-host",
            "127.0.0.1",
            "--sip-port",
            str(port),
            "--rtp-ports",
            f"{low}-{low + 20}",
            "--http-port",
            "0",
            "--instance-id",
            "inst-a",
            env={**os.environ, "SIPBRIDGE_DB": db_url},
            stdout=asyncio.subprocess.PIPE,  # a few KiB of log: well under a pipe's buffer
            stderr=subprocess.STDOUT,
        )
        clients: list[UdpClient] = []
        try:
            await _wait_for_options(port)
            for n in range(2):
                client = UdpClient(("127.0.0.1", port))
                clients.append(client)
                client.send(client.invite(f"z9hG4bK-crash{n}", f"crash-{n}", 4014))
                ok = await client.final()
                assert ok.status == 200 and ok.to.tag
                client.send(client.in_dialog("ACK", 1, f"crash-{n}", ok.to.tag))
            database = Database(db_url)
            try:

                async def both_active() -> bool:
                    calls = await service.list_calls(database)
                    return sum(c.status is CallStatus.ACTIVE for c in calls) == 3

                await wait_for(both_active, 10, "the two calls active in the store")
            finally:
                await database.close()
            proc.kill()  # SIGKILL with both calls up: nothing gets to close them
        finally:
            for client in clients:
                client.close()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == -9, out.decode(errors="replace")

    settings = dataclasses.replace(loopback_settings(tmp_path / "crash.db"), instance_id="inst-a")
    server = SipBridgeServer(settings)
    await server.start()
    try:
        calls = {c.sip_call_id: c for c in await service.list_calls(server.db)}
    finally:
        await server.stop()
    for n in range(2):
        call = calls[f"crash-{n}"]
        assert call.status is CallStatus.INTERRUPTED and call.owner == "inst-a"
        assert call.reason == "instance_restarted" and call.hangup_by == "server"
        assert call.ended_at == call.updated_at and call.answered_at is not None
        assert call.duration_s is not None and call.duration_s >= 0
    assert calls["other-call"].status is CallStatus.ACTIVE  # inst-b's: untouched


async def _wait_for_options(port: int) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sock.sendto(options(sock.getsockname()[1]), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.3)
                return
        raise AssertionError("the server did not answer OPTIONS within 20 s")


async def test_close_keeps_a_write_the_store_did_not_finish_in_the_spool(tmp_path: Path) -> None:
    from sipbridge.runtime.metrics import Metrics

    started = asyncio.Event()

    async def hanging(_db: Database, _record: CallRecord, _events: Any) -> bool:
        started.set()
        await asyncio.sleep(60)  # a database that does not answer
        return True

    writer = RecordWriter(
        Database("sqlite://"), RecordSpool(tmp_path / "r.spool"), Metrics(), "me", write=hanging
    )
    await writer.start()
    writer.submit(_record("slow", CallStatus.ANSWERED))
    writer.submit(_record("next", CallStatus.FAILED))
    await asyncio.wait_for(started.wait(), 5)
    assert writer.pending == 2
    await writer.close(0.2)
    assert [e.record.id for e in RecordSpool(tmp_path / "r.spool").entries()] == ["slow", "next"]


async def test_unhealthy_without_a_spool_entry_recovers_by_a_probe_write(tmp_path: Path) -> None:
    """A record dropped (the spool full) leaves nothing to replay: an empty write tells
    when the store takes writes again, so /readyz does not wait for the next call."""
    from sipbridge.runtime.metrics import Metrics

    store = _FlakyStore(failures=1)
    probes: list[bool] = []
    refusing = [True]

    async def probe(_db: Database) -> None:
        probes.append(True)
        if refusing[0]:
            raise OSError("connection refused")

    writer = RecordWriter(
        Database("sqlite://"),
        RecordSpool(tmp_path / "r.spool", max_bytes=4096),
        Metrics(),
        "me",
        write=store,
        probe=probe,
    )
    writer.retry_backoff(0.05, 0.1)
    await writer.start()
    try:
        big = _record("big", CallStatus.FAILED)
        big.reason = "x" * 5000  # larger than the spool: dropped
        writer.submit(big)
        deadline = time.monotonic() + 5
        while not probes and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert probes and not writer.healthy and writer.spool.depth == 0
        refusing[0] = False
        while not writer.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert writer.healthy
    finally:
        await writer.close(1.0)


async def test_a_database_that_hangs_delays_no_call_and_shutdown_spools_the_records(
    tmp_path: Path,
) -> None:
    """Record writes that never finish: calls are answered and hung up as usual, and the
    records still waiting at shutdown are kept in the spool."""
    hung = asyncio.Event()

    async def hanging(_db: Database, _record: CallRecord, _events: Any) -> bool:
        hung.set()
        await asyncio.sleep(60)
        return True

    settings = dataclasses.replace(
        loopback_settings(tmp_path / "hang.db", agent_connect_timeout=2.0), instance_id="inst-h"
    )
    server = SipBridgeServer(settings)
    server.records = RecordWriter(
        server.db, RecordSpool(settings.spool_file), server.metrics, "inst-h", write=hanging
    )
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            for n in range(2):
                await call_and_hang_up(server, f"hang-{n}")
        assert hung.is_set() and server.records.pending
    finally:
        await server.stop()
    entries = RecordSpool(settings.spool_file).entries()
    finals = {e.record.sip_call_id: e.record for e in entries if not e.record.status.is_open}
    assert set(finals) == {"hang-0", "hang-1"}
    assert all(r.status is CallStatus.ANSWERED and r.owner == "inst-h" for r in finals.values())
