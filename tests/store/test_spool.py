"""The record spool file: append + fsync, re-open, idempotent replay, the size cap, and a
line cut short by a crash."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallEvent, CallRecord, CallStatus
from sipbridge.store.spool import RecordSpool, SpoolEntry

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def entry(call_id: str, status: CallStatus = CallStatus.ANSWERED, events: int = 0) -> SpoolEntry:
    record = CallRecord(
        id=call_id,
        sip_call_id=f"sip-{call_id}",
        from_number="+15005550006",
        to_number="+12025550101",
        agent="echo",
        received_at=T0,
        answered_at=T0.replace(second=1),
        ended_at=None if status.is_open else T0.replace(second=31),
        status=status,
        reason=None if status.is_open else "caller_hangup",
        sip_code=200,
        mos=4.3,
        owner="host:5060",
        updated_at=T0.replace(second=31),
    )
    evs = [
        CallEvent(
            call_id, T0.replace(second=2 + i), "transcript", {"role": "agent", "text": f"t{i}"}
        )
        for i in range(events)
    ]
    return SpoolEntry(record, evs)


def test_append_survives_a_reopen_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "records.spool"
    spool = RecordSpool(path)
    assert spool.depth == 0 and spool.entries() == []
    first, second = entry("a", events=2), entry("b", CallStatus.RINGING)
    assert spool.append(first) and spool.append(second)
    assert spool.depth == 2 and spool.size == path.stat().st_size

    again = RecordSpool(path)  # a new process reads what the old one fsynced
    assert again.depth == 2
    assert again.entries() == [first, second]
    read = again.entries()[0]
    assert read.record.received_at == T0 and read.record.status is CallStatus.ANSWERED
    assert read.events[1].data == {"role": "agent", "text": "t1"}

    again.replace([second])
    assert RecordSpool(path).entries() == [second]
    again.clear()
    assert not path.exists() and again.depth == 0


def test_full_spool_refuses_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "records.spool"
    one = len(entry("a").to_line())
    spool = RecordSpool(path, max_bytes=one * 2 + one // 2)
    assert spool.append(entry("a")) and spool.append(entry("b"))
    size = path.stat().st_size
    assert not spool.append(entry("c"))
    assert path.stat().st_size == size and spool.depth == 2
    assert [e.record.id for e in RecordSpool(path).entries()] == ["a", "b"]


def test_a_line_cut_short_by_a_crash_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "records.spool"
    spool = RecordSpool(path)
    spool.append(entry("a"))
    with open(path, "ab") as file:  # a crash mid-write: half a line, no newline
        file.write(entry("b").to_line()[:40])
    caplog.set_level(logging.WARNING, "sipbridge.spool")
    reopened = RecordSpool(path)
    assert [e.record.id for e in reopened.entries()] == ["a"]
    assert "event=spool_entry_skipped" in caplog.text and "line=2" in caplog.text
    # Appending after the broken line keeps the new entry readable.
    assert reopened.append(entry("c"))
    assert [e.record.id for e in RecordSpool(path).entries()] == ["a", "c"]
    # Garbage that is a whole line is skipped too.
    with open(path, "ab") as file:
        file.write(b'{"v": 1, "record": {"nope": 1}}\n')
    assert [e.record.id for e in RecordSpool(path).entries()] == ["a", "c"]


async def test_replaying_the_same_entries_twice_makes_one_row_and_one_set_of_events(
    db: Database, tmp_path: Path
) -> None:
    spool = RecordSpool(tmp_path / "records.spool")
    spool.append(entry("x", CallStatus.RINGING))
    spool.append(entry("x", CallStatus.ACTIVE))
    spool.append(entry("x", CallStatus.ANSWERED, events=3))
    for _ in range(2):  # a crash after writing, before the spool was emptied
        for item in spool.entries():
            await service.write_call(db, item.record, item.events)
    [record] = await service.list_calls(db)
    assert record.status is CallStatus.ANSWERED and record.owner == "host:5060"
    detail = await service.get_call(db, "x")
    assert [e.data["text"] for e in detail.events] == ["t0", "t1", "t2"]
    # A late open snapshot never reopens a closed call.
    assert not await service.write_call(db, entry("x", CallStatus.ACTIVE).record)
    [record] = await service.list_calls(db)
    assert record.status is CallStatus.ANSWERED


def test_a_records_recording_survives_the_spool() -> None:
    """The recording written with the call's last record comes back whole from the
    spool's line (asdict turns it into JSON, the record reads it back)."""
    from sipbridge.store.records import RecordingInfo

    info = RecordingInfo("/var/lib/sipbridge/recordings/x.wav", "wav", 16000, 2, 64044, 1.0)
    record = CallRecord(
        id="r",
        sip_call_id="r@x",
        from_number=None,
        to_number=None,
        agent=None,
        received_at=datetime(2025, 3, 1, tzinfo=UTC),
        recording=info,
    )
    assert SpoolEntry.from_line(SpoolEntry(record).to_line()).record.recording == info
