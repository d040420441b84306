"""The dashboard's own requests on the 1,000,000-call data set of bench_store.py.

Run:
    .venv/bin/python bench/bench_dashboard.py                  # SQLite
    .venv/bin/python bench/bench_dashboard.py --pg postgresql+asyncpg://postgres:postgres@127.0.0.1/postgres
    (--calls/--numbers/--days to change the size)

The data is bench_store.py's (same seed, same loaders). Each figure is the median server
time of a whole dashboard request (routing, session check, queries, template rendering),
sent in-process through httpx's ASGI transport to the app ``sipbridge serve`` runs, so
no network or browser time is in it. Targets (issue 12): the Conversations page
<= 100 ms; Metrics over 30 days <= 500 ms on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_store  # bench/ is not a package: found through sys.path

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_NEXT = re.compile(r'href="(/calls\?[^"]*cursor=[^"]+)" rel="next"')
_CALL = re.compile(r'href="/calls/([0-9a-f-]{36})"')


async def median_ms(http: httpx.AsyncClient, urls: list[str], warmup: int = 2) -> float:
    for url in urls[:warmup]:
        (await http.get(url)).raise_for_status()
    samples = []
    for url in urls:
        started = time.perf_counter()
        response = await http.get(url)
        samples.append((time.perf_counter() - started) * 1000.0)
        response.raise_for_status()
    return statistics.median(samples)


async def measure(db: Database, numbers: list[str]) -> dict[str, float]:
    _record, key = await service.create_api_key(db, "bench")
    app = create_app(db)
    transport = httpx.ASGITransport(app=app)
    figures: dict[str, float] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        page = await http.get("/login")
        csrf = _CSRF.search(page.text)
        assert csrf is not None
        signed = await http.post("/login", data={"key": key, "csrf": csrf.group(1)})
        assert signed.status_code == 303, signed.text

        figures["Conversations, newest 50"] = await median_ms(http, ["/calls"] * 50)
        callers = [number.removeprefix("+") for number in numbers[:: len(numbers) // 60][:60]]
        figures["Conversations, by number (typed without +)"] = await median_ms(
            http, [f"/calls?number={n}" for n in callers]
        )
        figures["Conversations, status=failed"] = await median_ms(
            http, ["/calls?status=failed"] * 30
        )
        url, depth = "/calls?status=failed", 1
        while depth < 100:  # follow the keyset pages to page 100 (or the last one)
            found = _NEXT.search((await http.get(url)).text)
            if found is None:
                break
            url, depth = found.group(1).replace("&amp;", "&"), depth + 1
        figures[f"Conversations, status=failed, page {depth}"] = await median_ms(http, [url] * 30)
        figures["Conversations, agent + 30 days"] = await median_ms(
            http,
            [f"/calls?agent=agent-{i:02d}&since={_days_ago(30)}" for i in range(30)],
        )
        ids = _CALL.findall((await http.get("/calls")).text)
        figures["Call page"] = await median_ms(http, [f"/calls/{i}" for i in ids[:30]])
        figures["Metrics, 24 hours"] = await median_ms(http, ["/stats?range=24h"] * 9)
        figures["Metrics, 7 days"] = await median_ms(http, ["/stats?range=7d"] * 9)
        figures["Metrics, 30 days"] = await median_ms(http, ["/stats?range=30d"] * 9, warmup=1)
        figures["Metrics, 90 days"] = await median_ms(http, ["/stats?range=90d"] * 5, warmup=1)
    return figures


def _days_ago(days: int) -> str:
    return datetime.fromtimestamp(time.time() - days * 86400, UTC).date().isoformat()


async def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    numbers = bench_store.routed_numbers(args.numbers)
    now = datetime.now(UTC).replace(microsecond=0)
    db = await bench_store.prepare(url)
    started = time.perf_counter()
    if name == "SQLite":
        await db.close()
        database = make_url(url).database
        assert database is not None
        await asyncio.to_thread(
            bench_store.load_sqlite, database, numbers, args.calls, args.days, now
        )
        db = Database(url)
    else:
        await bench_store.load_postgres(url, numbers, args.calls, args.days, now)
    print(f"{name}: loaded {args.calls} calls in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        return await measure(db, numbers)
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

    targets = {"Conversations": 100.0, "Metrics, 30 days": 500.0}
    backends = list(results)
    print()
    print("| dashboard request (median ms, server time) | " + " | ".join(backends) + " | target |")
    print("|---|" + "---|" * len(backends) + "---|")
    for request in next(iter(results.values())):
        target = next((f"<= {v:g}" for k, v in targets.items() if request.startswith(k)), "")
        cells = " | ".join(f"{results[b][request]:.1f}" for b in backends)
        print(f"| {request} | {cells} | {target} |")


if __name__ == "__main__":
    asyncio.run(main())
