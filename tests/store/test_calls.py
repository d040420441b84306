import base64
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.models import Call
from sipbridge.store.records import QUALITY_FIELDS, CallEvent, CallRecord, CallStatus
from sipbridge.store.service import CallFilter, NotFound

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_call(call_id: str, received_at: datetime = T0, **overrides: object) -> CallRecord:
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


# ----------------------------------------------------------------- writing


async def test_save_call_computes_columns(db: Database) -> None:
    await service.save_call(
        db,
        make_call(
            "c1",
            datetime(2025, 3, 1, 23, 59, 59, tzinfo=UTC),
            from_number="+442079460958",
            answered_at=datetime(2025, 3, 2, 0, 0, 0, 500000, tzinfo=UTC),
            first_audio_at=datetime(2025, 3, 2, 0, 0, 1, tzinfo=UTC),
            ended_at=datetime(2025, 3, 2, 0, 1, 0, tzinfo=UTC),
            status=CallStatus.ANSWERED,
        ),
    )
    async with db.sessionmaker() as session:
        row = (await session.scalars(select(Call))).one()
    assert (row.caller_country, row.caller_region) == ("GB", "London")
    assert (row.received_day, row.received_hour) == (date(2025, 3, 1), 23)
    assert row.first_audio_ms == pytest.approx(500.0)
    detail = await service.get_call(db, "c1")
    assert detail.record.first_audio_at == datetime(2025, 3, 2, 0, 0, 1, tzinfo=UTC)
    assert detail.record.setup_ms == pytest.approx(1500.0)
    assert detail.record.time_to_first_audio_ms == pytest.approx(500.0)


async def test_media_figures_and_response_times_round_trip(db: Database) -> None:
    figures = {
        "packets_in": 1500,
        "packets_out": 1501,
        "bytes_in": 240000,
        "bytes_out": 240160,
        "packets_lost": 3,
        "loss_percent": 0.2,
        "jitter_ms": 1.25,
        "rtt_ms": 12.5,
        "concealed_ms": 60,
        "mos": 4.31,
        "mos_method": "g107",
        "turns": 4,
        "response_p50_ms": 812.5,
        "response_max_ms": 1460.0,
    }
    assert set(figures) == set(QUALITY_FIELDS)
    await service.save_call(db, make_call("q1", **figures))
    record = (await service.get_call(db, "q1")).record
    assert {name: getattr(record, name) for name in QUALITY_FIELDS} == figures
    assert record.quality() == figures


async def test_save_call_keeps_given_location(db: Database) -> None:
    await service.save_call(db, make_call("c1", caller_country="FR", caller_region=None))
    await service.save_call(db, make_call("c2", from_number="anonymous"))
    await service.save_call(db, make_call("c3", from_number=None))
    records = {c.id: c for c in await service.list_calls(db)}
    assert (records["c1"].caller_country, records["c1"].caller_region) == ("FR", None)
    assert (records["c2"].caller_country, records["c2"].caller_region) == (None, None)
    assert records["c3"].caller_country is None


async def test_call_events_and_detail(db: Database) -> None:
    events = [
        CallEvent("c1", T0 + timedelta(seconds=3), "metadata", {"intent": "billing", "n": [1]}),
        CallEvent("c1", T0 + timedelta(seconds=2), "transcript", {"role": "caller", "text": "a"}),
        CallEvent("c1", T0 + timedelta(seconds=2), "transcript", {"role": "agent", "text": "b"}),
    ]
    # events can come before the call record (they are written while the call runs)
    await service.save_call_events(db, "c1", events[:1])
    await service.save_call_events(db, "c1", events[1:])
    await service.save_call_events(db, "c1", [])
    await service.save_call_events(db, "other", [CallEvent("other", T0, "dtmf", {"d": "1"})])
    await service.save_call(db, make_call("c1", answered_at=T0 + timedelta(seconds=1)))

    detail = await service.get_call(db, "c1")
    # ordered by time, then by insertion
    assert [(e.kind, e.data.get("text")) for e in detail.events] == [
        ("transcript", "a"),
        ("transcript", "b"),
        ("metadata", None),
    ]
    assert detail.events[2].data == {"intent": "billing", "n": [1]}
    assert detail.events[0].at.tzinfo is UTC
    data = detail.to_json()
    assert [t["text"] for t in data["transcript"]] == ["a", "b"]
    assert data["metadata"] == [
        {"at": "2025-03-01T12:00:03+00:00", "data": {"intent": "billing", "n": [1]}}
    ]
    assert [p["event"] for p in data["timeline"]] == ["received", "answered"]


async def test_get_call_not_found(db: Database) -> None:
    await service.save_call_events(db, "ghost", [CallEvent("ghost", T0, "dtmf", {})])
    with pytest.raises(NotFound, match="call 'ghost' not found"):
        await service.get_call(db, "ghost")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (CallEvent("other", T0, "dtmf", {}), "call_id"),
        (CallEvent("c1", T0, "", {}), "kind"),
        (CallEvent("c1", T0, "k" * 33, {}), "kind"),
        (CallEvent("c1", T0, "dtmf", ["x"]), "data"),  # type: ignore[arg-type]
        (CallEvent("c1", T0, "dtmf", {"x": object()}), "data"),
    ],
)
async def test_save_call_events_rejects(db: Database, event: CallEvent, field: str) -> None:
    with pytest.raises(InvalidField, match=rf"^{field}: "):
        await service.save_call_events(db, "c1", [event])


# ----------------------------------------------------------------- listing


async def _seed(db: Database) -> None:
    calls = [
        make_call("a", T0, status=CallStatus.ANSWERED, reason="caller_hangup"),
        make_call("b", T0 + timedelta(minutes=1), agent="other", reason="agent_unreachable"),
        make_call(
            "c",
            T0 + timedelta(minutes=2),
            from_number="+12025550101",
            to_number="+12025550199",
            status=CallStatus.CANCELLED,
            reason="caller_cancelled",
        ),
        make_call("d", T0 + timedelta(minutes=3), to_number="+12025550188", agent=None),
    ]
    for call in calls:
        await service.save_call(db, call)


async def _ids(db: Database, **filters: object) -> list[str]:
    page, cursor = await service.list_calls_page(db, CallFilter(**filters))  # type: ignore[arg-type]
    assert cursor is None
    return [c.id for c in page]


async def test_list_calls_page_filters(db: Database) -> None:
    await _seed(db)
    assert await _ids(db) == ["d", "c", "b", "a"]
    assert await _ids(db, number="+1 (202) 555-0101") == ["c", "b", "a"]  # caller or callee
    assert await _ids(db, number="+12025550188") == ["d"]
    assert await _ids(db, agent="other") == ["b"]
    assert await _ids(db, status="cancelled") == ["c"]
    assert await _ids(db, status="failed") == ["d", "b"]
    assert await _ids(db, reason="caller_hangup") == ["a"]
    assert await _ids(db, since=T0 + timedelta(minutes=1)) == ["d", "c", "b"]
    assert await _ids(db, until=T0 + timedelta(minutes=1)) == ["a"]
    naive = datetime(2025, 3, 1, 12, 1)  # naive: taken as UTC
    assert await _ids(db, since=naive, until=naive + timedelta(minutes=2)) == ["c", "b"]
    assert await _ids(db, agent="bot", status="failed", number="+12025550100") == []


async def test_list_calls_page_bad_input(db: Database) -> None:
    with pytest.raises(InvalidField, match=r"^status: 'engaged' is not one of"):
        await service.list_calls_page(db, CallFilter(status="engaged"))
    with pytest.raises(InvalidField, match=r"^until: "):
        await service.list_calls_page(db, CallFilter(since=T0, until=T0))
    for limit in (0, 1001, True):
        with pytest.raises(InvalidField, match=r"^limit: "):
            await service.list_calls_page(db, CallFilter(), limit=limit)
    bad_cursors = [
        "???",
        "bm90IGpzb24",
        base64.urlsafe_b64encode(b'["x", "y"]').decode(),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(b"[1]").decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        # forged: dates out of range once moved to UTC, ids the database cannot compare
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+05:00", "c1"]').decode(),
        base64.urlsafe_b64encode(b'["9999-12-31T23:59:59-05:00", "c1"]').decode(),
        base64.urlsafe_b64encode(b'["2025-03-01T12:00:00+00:00", "c\\u0000"]').decode(),
        base64.urlsafe_b64encode(b'["2025-03-01T12:00:00+00:00", "\\ud800"]').decode(),
        base64.urlsafe_b64encode(
            ('["2025-03-01T12:00:00+00:00", "' + "x" * 300 + '"]').encode()
        ).decode(),
    ]
    for cursor in bad_cursors:
        with pytest.raises(InvalidField, match=r"^cursor: "):
            await service.list_calls_page(db, CallFilter(), cursor=cursor)


async def test_pagination_walks_every_call_once(db: Database) -> None:
    # 23 calls, several sharing a received_at: ties are broken by id
    expected = []
    for i in range(23):
        call = make_call(f"call-{i:02d}", T0 + timedelta(seconds=i // 3))
        await service.save_call(db, call)
        expected.append(call.id)
    expected.sort(key=lambda cid: (int(cid[5:]) // 3, cid), reverse=True)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page, cursor = await service.list_calls_page(db, CallFilter(), limit=5, cursor=cursor)
        pages += 1
        seen.extend(c.id for c in page)
        if cursor is None:
            break
        assert len(page) == 5
        assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert seen == expected
    assert pages == 5

    # exactly a page full: no cursor to an empty page
    page, cursor = await service.list_calls_page(db, CallFilter(), limit=23)
    assert len(page) == 23 and cursor is None

    # with a filter
    page, cursor = await service.list_calls_page(
        db, CallFilter(until=T0 + timedelta(seconds=2)), limit=4
    )
    assert [c.id for c in page] == ["call-05", "call-04", "call-03", "call-02"]
    assert cursor is not None
    page, cursor = await service.list_calls_page(
        db, CallFilter(until=T0 + timedelta(seconds=2)), limit=4, cursor=cursor
    )
    assert [c.id for c in page] == ["call-01", "call-00"] and cursor is None


async def test_iter_calls(db: Database) -> None:
    for i in range(7):
        await service.save_call(db, make_call(f"c{i}", T0 + timedelta(minutes=i)))
    await service.save_call(db, make_call("x", T0, agent="other"))
    ids = [c.id async for c in service.iter_calls(db, CallFilter(agent="bot"), page_size=3)]
    assert ids == [f"c{i}" for i in reversed(range(7))]
    assert [c.id async for c in service.iter_calls(db, CallFilter(agent="nobody"))] == []


async def test_records_with_unstorable_text_are_stored_cleaned_and_cut(db: Database) -> None:
    """NUL (PostgreSQL refuses it), lone surrogates (not UTF-8) and text longer than its
    column (PostgreSQL refuses it) never cost a record: escaped and cut, on both backends."""
    call = make_call(
        "u1",
        sip_call_id="c" * 300,
        from_number="\x00\udcff" + "9" * 300,
        to_number="+1\u202e",
        reason="r\r\n",
    )
    await service.save_call(db, call)
    record = (await service.get_call(db, "u1")).record
    assert record.sip_call_id == "c" * 255
    assert record.from_number is not None and record.from_number.startswith("%00%FF999")
    assert len(record.from_number) == 255
    assert record.to_number == "+1%E2%80%AE" and record.reason == "r%0D%0A"
    events = [
        CallEvent("u1", T0, "transcript", {"role": "caller", "text": "a\x00b\udcff"}),
        CallEvent("u1", T0, "metadata", {"k\x00": ["\x1b[2J"]}),
    ]
    await service.save_call_events(db, "u1", events)
    stored = (await service.get_call(db, "u1")).events
    assert [e.data for e in stored] == [
        {"role": "caller", "text": "a%00b%FF"},
        {"k%00": ["%1B[2J"]},
    ]


def _open_call(call_id: str, owner: str, status: CallStatus, at: datetime) -> CallRecord:
    return CallRecord(
        id=call_id,
        sip_call_id=f"{call_id}@t",
        from_number=None,
        to_number=None,
        agent=None,
        received_at=at,
        answered_at=at + timedelta(seconds=1) if status is CallStatus.ACTIVE else None,
        status=status,
        owner=owner,
        updated_at=at + timedelta(seconds=30),
    )


async def test_close_interrupted_closes_only_the_owners_open_calls(db: Database) -> None:
    t0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    for record in (
        _open_call("a-ring", "a", CallStatus.RINGING, t0),
        _open_call("a-up", "a", CallStatus.ACTIVE, t0),
        _open_call("a-done", "a", CallStatus.ANSWERED, t0),
        _open_call("b-up", "b", CallStatus.ACTIVE, t0),
    ):
        await service.write_call(db, record)
    assert sorted(await service.close_interrupted(db, "a")) == ["a-ring", "a-up"]
    calls = {c.id: c for c in await service.list_calls(db)}
    up = calls["a-up"]
    assert up.status is CallStatus.INTERRUPTED and up.reason == "instance_restarted"
    assert up.ended_at == t0 + timedelta(seconds=30) and up.duration_s == 29.0
    assert calls["a-ring"].status is CallStatus.INTERRUPTED and calls["a-ring"].duration_s is None
    assert calls["a-done"].status is CallStatus.ANSWERED
    assert calls["b-up"].status is CallStatus.ACTIVE  # another instance's call
    assert await service.close_interrupted(db, "a") == []
    # The call's own end, replayed from a spool after that, still lands with its events.
    final = _open_call("a-up", "a", CallStatus.ANSWERED, t0)
    event = CallEvent("a-up", t0, "transcript", {"role": "agent", "text": "hi"})
    assert await service.write_call(db, final, [event])
    detail = await service.get_call(db, "a-up")
    assert detail.record.status is CallStatus.ANSWERED and len(detail.events) == 1


async def test_probe_call_write_fails_while_sqlite_is_locked(tmp_path: Path) -> None:
    import sqlite3

    from sipbridge.store import db as db_module

    path = tmp_path / "probe.db"
    database = Database(f"sqlite:///{path}")
    try:
        await database.upgrade()
        await service.probe_call_write(database)
        await database.engine.dispose()
        lock = sqlite3.connect(path, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            old = db_module._SQLITE_BUSY_TIMEOUT_MS
            db_module._SQLITE_BUSY_TIMEOUT_MS = 50
            try:
                with pytest.raises(Exception, match="locked"):
                    await service.probe_call_write(database)
            finally:
                db_module._SQLITE_BUSY_TIMEOUT_MS = old
        finally:
            lock.close()
        await service.probe_call_write(database)
    finally:
        await database.close()
