"""Store cost at size: 100,000 numbers and 1,000,000 call records, on SQLite and PostgreSQL.

Run:
    .venv/bin/python bench/bench_store.py                       # SQLite only
    .venv/bin/python bench/bench_store.py --pg postgresql+asyncpg://postgres:postgres@127.0.0.1/postgres
    (or set SIPBRIDGE_TEST_POSTGRES; --calls/--numbers to change the size)

The data is bulk-inserted with the drivers' fast paths (sqlite3 executemany in one
transaction; asyncpg COPY), generated from a fixed seed: calls spread evenly over the last
--days days (365: ~82,000 calls in the last 30 days), 70 % answered, 22 % failed, 8 %
cancelled, callers drawn from 20,000 numbers in 8 countries. Then, through the service
layer exactly as the runtime and the API call it, each figure is the median of many runs:

* lookup_number: a random routed number (what every INVITE costs);
* save_call: a new call record;
* list_calls_page: filtered by number (caller or callee) and by status, the first page
  (50 calls) and a later page (following the cursors);
* call_stats: the last 30 days (and, for information, all calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from sipbridge.numbers import caller_location
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus
from sipbridge.store.service import CallFilter

SEED = 5
AGENTS = 50
CALLERS = 20_000
BATCH = 50_000
AREAS = (202, 212, 312, 415, 617, 713, 206, 305, 404, 503)
CALLER_PREFIXES = (
    ("+1202", 7, 40),  # prefix, digits after it, weight
    ("+1415", 7, 15),
    ("+1212", 7, 15),
    ("+44207", 7, 10),
    ("+4930", 8, 8),
    ("+3314", 7, 5),
    ("+61291", 6, 4),
    ("+81355", 6, 3),
)
CALL_COLUMNS = (
    "id",
    "sip_call_id",
    "from_number",
    "to_number",
    "agent_name",
    "received_at",
    "answered_at",
    "ended_at",
    "duration_s",
    "status",
    "reason",
    "sip_code",
    "codec",
    "hangup_by",
    "source",
    "caller_country",
    "caller_region",
    "first_audio_at",
    "received_day",
    "received_hour",
    "first_audio_ms",
)
FAIL_REASONS = ("agent_unreachable", "unknown_number", "agent_missing", "no_common_codec")


def routed_numbers(count: int) -> list[str]:
    numbers: list[str] = []
    for area in AREAS:
        for exchange in range(200, 1000):
            for line in range(0, 10000, 7):
                numbers.append(f"+1{area}{exchange}{line:04d}")
                if len(numbers) == count:
                    return numbers
    raise ValueError("too many numbers")


def callers(rng: random.Random) -> list[tuple[str, str | None, str | None]]:
    weights = [w for _, _, w in CALLER_PREFIXES]
    pool = []
    for _ in range(CALLERS):
        prefix, digits, _ = rng.choices(CALLER_PREFIXES, weights)[0]
        number = prefix + "".join(str(rng.randrange(10)) for _ in range(digits))
        pool.append((number, *caller_location(number)))
    return pool


def call_rows(
    count: int, days: int, numbers: list[str], now: datetime
) -> Iterator[tuple[Any, ...]]:
    """``count`` call rows (tuples in CALL_COLUMNS order), oldest first."""
    rng = random.Random(SEED)
    pool = callers(rng)
    start = now - timedelta(days=days)
    step = timedelta(days=days) / count
    for i in range(count):
        received = start + step * i + timedelta(microseconds=rng.randrange(1000))
        to_number = numbers[rng.randrange(len(numbers))]
        agent = f"agent-{int(to_number[-6:]) % AGENTS:02d}"
        caller, country, region = pool[rng.randrange(len(pool))]
        draw = rng.random()
        answered_at = ended_at = first_audio_at = None
        duration = first_audio_ms = None
        if draw < 0.70:
            status, sip_code, codec = "answered", 200, "PCMU"
            answered_at = received + timedelta(milliseconds=rng.randrange(300, 3000))
            duration = rng.uniform(5, 600)
            ended_at = answered_at + timedelta(seconds=duration)
            first_audio_ms = float(rng.randrange(150, 1500))
            first_audio_at = answered_at + timedelta(milliseconds=first_audio_ms)
            reason = rng.choice(("caller_hangup", "agent_hangup"))
        elif draw < 0.92:
            status, sip_code, codec = "failed", 503, None
            reason = rng.choice(FAIL_REASONS)
        else:
            status, sip_code, codec, reason = "cancelled", 487, None, "caller_cancelled"
        yield (
            str(uuid.UUID(int=rng.getrandbits(128))),
            f"{i}@trunk.example",
            caller,
            to_number,
            agent,
            received,
            answered_at,
            ended_at,
            duration,
            status,
            reason,
            sip_code,
            codec,
            "caller" if status == "answered" else None,
            "192.0.2.10:5060",
            country,
            region,
            first_audio_at,
            received.date(),
            received.hour,
            first_audio_ms,
        )


def batches(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------ bulk loading


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):  # the format SQLAlchemy's SQLite DateTime stores
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if hasattr(value, "isoformat"):  # date
        return value.isoformat()
    return value


def load_sqlite(path: str, numbers: list[str], calls: int, days: int, now: datetime) -> None:
    connection = sqlite3.connect(path)
    try:
        agent_ids = dict(connection.execute("SELECT name, id FROM agents"))
        created = _sqlite_value(now)
        connection.executemany(
            "INSERT INTO phone_numbers (number, agent_id, created_at) VALUES (?, ?, ?)",
            (
                (number, agent_ids[f"agent-{int(number[-6:]) % AGENTS:02d}"], created)
                for number in numbers
            ),
        )
        placeholders = ", ".join("?" for _ in CALL_COLUMNS)
        sql = f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({placeholders})"
        for batch in batches(call_rows(calls, days, numbers, now)):
            connection.executemany(sql, ([_sqlite_value(v) for v in row] for row in batch))
        connection.commit()
        connection.execute("ANALYZE")
        connection.commit()
    finally:
        connection.close()


async def load_postgres(url: str, numbers: list[str], calls: int, days: int, now: datetime) -> None:
    import asyncpg

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        agent_ids = dict(await connection.fetch("SELECT name, id FROM agents"))
        await connection.copy_records_to_table(
            "phone_numbers",
            records=[
                (number, agent_ids[f"agent-{int(number[-6:]) % AGENTS:02d}"], now)
                for number in numbers
            ],
            columns=["number", "agent_id", "created_at"],
        )
        for batch in batches(call_rows(calls, days, numbers, now)):
            await connection.copy_records_to_table("calls", records=batch, columns=CALL_COLUMNS)
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


# -------------------------------------------------------------------- measuring


async def median_ms(
    action: Callable[[int], Awaitable[object]], runs: int, warmup: int = 3
) -> float:
    for i in range(warmup):
        await action(i)
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        await action(i)
        samples.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(samples)


async def measure(db: Database, numbers: list[str], now: datetime) -> dict[str, float]:
    rng = random.Random(SEED + 1)
    figures: dict[str, float] = {}

    picks = [numbers[rng.randrange(len(numbers))] for _ in range(1000)]

    async def lookup(i: int) -> None:
        route = await service.lookup_number(db, picks[i])
        assert route is not None and route.agent is not None

    figures["lookup_number"] = await median_ms(lookup, 1000 - 3)

    async def save(i: int) -> None:
        received = now + timedelta(seconds=i)
        await service.save_call(
            db,
            CallRecord(
                id=str(uuid.uuid4()),
                sip_call_id=f"bench-{i}@trunk",
                from_number="+12025550100",
                to_number=picks[i],
                agent="agent-01",
                received_at=received,
                answered_at=received + timedelta(seconds=1),
                first_audio_at=received + timedelta(seconds=1.3),
                ended_at=received + timedelta(seconds=40),
                status=CallStatus.ANSWERED,
                reason="caller_hangup",
                sip_code=200,
                codec="PCMU",
            ),
        )

    figures["save_call"] = await median_ms(save, 300)

    async def by_number_first(i: int) -> None:
        await service.list_calls_page(db, CallFilter(number=picks[i]), limit=50)

    figures["list number, page 1"] = await median_ms(by_number_first, 200)

    cursors = []
    for number in picks[:200]:
        _, cursor = await service.list_calls_page(db, CallFilter(number=number), limit=5)
        if cursor is not None:
            cursors.append((number, cursor))

    async def by_number_later(i: int) -> None:
        number, cursor = cursors[i % len(cursors)]
        await service.list_calls_page(db, CallFilter(number=number), limit=5, cursor=cursor)

    figures["list number, page 2 (5/page)"] = await median_ms(by_number_later, 200)

    failed = CallFilter(status="failed")

    async def by_status_first(i: int) -> None:
        await service.list_calls_page(db, failed, limit=50)

    figures["list status, page 1"] = await median_ms(by_status_first, 100)

    cursor: str | None = None
    for _ in range(99):
        _, cursor = await service.list_calls_page(db, failed, limit=50, cursor=cursor)

    async def by_status_later(i: int) -> None:
        await service.list_calls_page(db, failed, limit=50, cursor=cursor)

    figures["list status, page 100"] = await median_ms(by_status_later, 100)

    async def stats_30(i: int) -> None:
        await service.call_stats(db, now - timedelta(days=30), now)

    figures["call_stats 30 days"] = await median_ms(stats_30, 9, warmup=1)

    async def stats_all(i: int) -> None:
        await service.call_stats(db, None, None)

    figures["call_stats all calls"] = await median_ms(stats_all, 3, warmup=1)
    return figures


async def prepare(url: str) -> Database:
    db = Database(url)
    await db.upgrade()
    for i in range(AGENTS):
        await service.add_agent(db, f"agent-{i:02d}", f"wss://agent{i}.example/ws")
    return db


async def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    numbers = routed_numbers(args.numbers)
    now = datetime.now(UTC).replace(microsecond=0)
    db = await prepare(url)
    started = time.perf_counter()
    if name == "SQLite":
        await db.close()
        database = make_url(url).database
        assert database is not None
        await asyncio.to_thread(load_sqlite, database, numbers, args.calls, args.days, now)
        db = Database(url)
    else:
        await load_postgres(url, numbers, args.calls, args.days, now)
    print(
        f"{name}: loaded {args.numbers} numbers, {args.calls} calls in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    try:
        return await measure(db, numbers, now)
    finally:
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--pg", default=os.environ.get("SIPBRIDGE_TEST_POSTGRES"))
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_sqlite:
            path = Path(tmp) / "bench.db"
            results["SQLite"] = await run_backend("SQLite", f"sqlite:///{path}", args)
    if args.pg:
        import asyncpg

        server = make_url(args.pg)
        dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"sb_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = server.set(database=name).render_as_string(hide_password=False)
            results["PostgreSQL"] = await run_backend("PostgreSQL", url, args)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

    targets = {"lookup_number": 1.0, "list": 50.0, "call_stats 30 days": 500.0}
    backends = list(results)
    print()
    print("| operation (median ms) | " + " | ".join(backends) + " | target |")
    print("|---|" + "---|" * len(backends) + "---|")
    for operation in next(iter(results.values())):
        target = next((f"<= {v:g}" for k, v in targets.items() if operation.startswith(k)), "")
        cells = " | ".join(f"{results[b][operation]:.2f}" for b in backends)
        print(f"| {operation} | {cells} | {target} |")


if __name__ == "__main__":
    asyncio.run(main())
