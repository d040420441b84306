"""SIP traces in the store (service/traces.py): switched on for a number or a trunk with an
end, switched on again (a new end), listed, switched off, ended ones purged; bad input."""

from datetime import UTC, datetime, timedelta

import pytest

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import TraceRecord
from sipbridge.store.service import NotFound

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


async def test_trace_a_number_and_a_trunk(db: Database) -> None:
    number = await service.add_trace(db, number="(202) 555-0101", default_region="US", now=T0)
    assert number == TraceRecord("number", "+12025550101", T0, T0 + timedelta(hours=1))
    trunk = await service.add_trace(db, trunk="carrier", duration=60, now=T0 + timedelta(1))
    assert (trunk.kind, trunk.value) == ("trunk", "carrier")
    assert trunk.expires_at == T0 + timedelta(days=1, seconds=60)
    # Newest first; at T0 + 1 day the number's trace has ended.
    assert await service.list_traces(db, now=T0) == [trunk, number]
    assert await service.list_traces(db, now=T0 + timedelta(days=1)) == [trunk]
    everything = await service.list_traces(db, include_expired=True, now=T0 + timedelta(3))
    assert everything == [trunk, number]
    assert trunk.to_json() == {
        "kind": "trunk",
        "value": "carrier",
        "created_at": "2026-03-02T12:00:00+00:00",
        "expires_at": "2026-03-02T12:01:00+00:00",
    }


async def test_tracing_again_sets_the_new_end(db: Database) -> None:
    await service.add_trace(db, number="+12025550101", duration=60, now=T0)
    later = T0 + timedelta(minutes=5)
    again = await service.add_trace(db, number="+12025550101", duration=600, now=later)
    assert again.expires_at == later + timedelta(seconds=600)
    assert await service.list_traces(db, include_expired=True, now=later) == [again]


async def test_switch_off_and_purge(db: Database) -> None:
    await service.add_trace(db, number="+12025550101", now=T0)
    await service.add_trace(db, trunk="carrier", duration=10, now=T0)
    assert await service.remove_trace(db, number="+1 202 555 0101") == ("number", "+12025550101")
    with pytest.raises(NotFound, match=r"no trace of number \+12025550101"):
        await service.remove_trace(db, number="+12025550101")
    with pytest.raises(NotFound, match="no trace of trunk other"):
        await service.remove_trace(db, trunk="other")
    assert await service.purge_expired_traces(db, now=T0 + timedelta(seconds=5)) == 0
    assert await service.purge_expired_traces(db, now=T0 + timedelta(seconds=10)) == 1
    assert await service.list_traces(db, include_expired=True) == []


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({}, "number", "give either a number or a trunk"),
        ({"number": "+12025550101", "trunk": "x"}, "number", "give either a number or a trunk"),
        ({"number": "not a number"}, "number", ""),
        ({"trunk": "bad name!"}, "name", "invalid trunk name"),
        ({"number": "+12025550101", "duration": 0}, "duration", "above 0"),
        ({"number": "+12025550101", "duration": 8 * 86400}, "duration", "at most 604800"),
        ({"number": "+12025550101", "duration": True}, "duration", "above 0"),
    ],
)
async def test_bad_input(db: Database, kwargs: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(InvalidField) as info:
        await service.add_trace(db, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field and message in str(info.value)
    assert await service.list_traces(db, include_expired=True) == []
