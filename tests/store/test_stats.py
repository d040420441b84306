import json
from datetime import UTC, datetime, timedelta

import pytest

from sipbridge.numbers import InvalidField
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus

MONDAY = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)  # a Monday


def call(
    call_id: str,
    received_at: datetime,
    status: CallStatus,
    *,
    agent: str | None = "bot",
    reason: str | None = None,
    caller: str | None = "+12025550100",
    duration: float | None = None,
    first_audio_ms: float | None = None,
) -> CallRecord:
    answered = ended = first_audio = None
    if status is CallStatus.ANSWERED:
        answered = received_at + timedelta(seconds=1)
        ended = answered + timedelta(seconds=duration or 0.0)
        if first_audio_ms is not None:
            first_audio = answered + timedelta(milliseconds=first_audio_ms)
    return CallRecord(
        id=call_id,
        sip_call_id=f"{call_id}@t",
        from_number=caller,
        to_number="+12025550101",
        agent=agent,
        received_at=received_at,
        answered_at=answered,
        ended_at=ended,
        first_audio_at=first_audio,
        status=status,
        reason=reason,
    )


CALLS = [
    # Monday 09:xx
    call(
        "a1", MONDAY, CallStatus.ANSWERED, duration=30, first_audio_ms=200, reason="caller_hangup"
    ),
    call("a2", MONDAY + timedelta(minutes=5), CallStatus.ANSWERED, duration=60, first_audio_ms=400),
    call("f1", MONDAY + timedelta(minutes=10), CallStatus.FAILED, reason="agent_unreachable"),
    # Monday 17:xx, another agent, a London caller
    call(
        "a3",
        MONDAY + timedelta(hours=8),
        CallStatus.ANSWERED,
        agent="other",
        caller="+442079460958",
        duration=15,
    ),
    call(
        "c1",
        MONDAY + timedelta(hours=8, minutes=1),
        CallStatus.CANCELLED,
        agent="other",
        reason="caller_cancelled",
        caller="+33123456789",
    ),
    # Wednesday 23:xx, no agent (unknown number), anonymous caller
    call(
        "f2",
        MONDAY + timedelta(days=2, hours=14, minutes=30),
        CallStatus.FAILED,
        agent=None,
        reason="unknown_number",
        caller="anonymous",
    ),
    call("f3", MONDAY + timedelta(days=2, hours=14, minutes=31), CallStatus.FAILED, agent=None),
    call(
        "f4",
        MONDAY + timedelta(days=2, hours=14, minutes=32),
        CallStatus.FAILED,
        reason="agent_unreachable",
    ),
]


@pytest.fixture
async def seeded(db: Database) -> Database:
    for record in CALLS:
        await service.save_call(db, record)
    return db


async def test_empty(db: Database) -> None:
    stats = await service.call_stats(db, None, None)
    data = stats.to_json()
    assert data["total"] == 0 and data["success_rate"] == 0.0
    assert data["average_duration_s"] is None
    assert data["by_hour_of_day"] == [0] * 24 and data["by_day_of_week"] == [0] * 7
    assert data["by_day"] == [] and data["agents"] == [] and data["failure_reasons"] == []
    json.dumps(data)


async def test_totals_and_reasons(seeded: Database) -> None:
    stats = await service.call_stats(seeded, None, None)
    assert (stats.total, stats.answered, stats.failed, stats.cancelled) == (8, 3, 4, 1)
    assert stats.success_rate == pytest.approx(3 / 8, abs=1e-4)
    assert stats.average_duration_s == pytest.approx(35.0)
    assert stats.failure_reasons == [
        {"reason": "agent_unreachable", "count": 2},
        {"reason": "caller_cancelled", "count": 1},
        {"reason": "unknown", "count": 1},
        {"reason": "unknown_number", "count": 1},
    ]


async def test_calls_in_progress_and_interrupted_are_not_failures(db: Database) -> None:
    for record in (
        call("r1", MONDAY, CallStatus.RINGING),
        call("c1", MONDAY, CallStatus.ACTIVE),
        call("i1", MONDAY, CallStatus.INTERRUPTED, reason="instance_restarted"),
        call("a1", MONDAY, CallStatus.ANSWERED, duration=10),
    ):
        await service.save_call(db, record)
    stats = await service.call_stats(db, None, None)
    assert (stats.total, stats.answered, stats.failed, stats.cancelled) == (4, 1, 0, 0)
    assert (stats.in_progress, stats.interrupted) == (2, 1)
    assert stats.failure_reasons == [{"reason": "instance_restarted", "count": 1}]


async def test_time_buckets(seeded: Database) -> None:
    stats = await service.call_stats(seeded, None, None)
    hours = [0] * 24
    hours[9], hours[17], hours[23] = 3, 2, 3
    assert stats.by_hour_of_day == hours
    assert stats.by_day_of_week == [5, 0, 3, 0, 0, 0, 0]  # Monday=0, Wednesday=2
    assert stats.by_day == [
        {"date": "2025-03-03", "count": 5},
        {"date": "2025-03-04", "count": 0},  # zero-filled between the first and last day
        {"date": "2025-03-05", "count": 3},
    ]


async def test_weekday_hour_heat_map_and_hourly_series(seeded: Database) -> None:
    stats = await service.call_stats(seeded, None, None)
    heat = stats.by_weekday_hour
    assert (len(heat), {len(row) for row in heat}) == (7, {24})
    assert (heat[0][9], heat[0][17], heat[2][23]) == (3, 2, 3)
    assert sum(map(sum, heat)) == 8
    # The calls span 2 days 14 hours: every hour from the first to the last, zero-filled.
    assert len(stats.by_hour) == 2 * 24 + 14 + 1
    assert stats.by_hour[0] == {"hour": "2025-03-03T09:00:00+00:00", "count": 3}
    assert stats.by_hour[8] == {"hour": "2025-03-03T17:00:00+00:00", "count": 2}
    assert stats.by_hour[-1] == {"hour": "2025-03-05T23:00:00+00:00", "count": 3}
    assert sum(point["count"] for point in stats.by_hour) == 8


async def test_no_hourly_series_beyond_a_week(db: Database) -> None:
    await service.save_call(db, call("early", MONDAY, CallStatus.ANSWERED, duration=1))
    late = MONDAY + timedelta(days=8)
    await service.save_call(db, call("late", late, CallStatus.ANSWERED, duration=1))
    stats = await service.call_stats(db)
    assert stats.by_hour == [] and len(stats.by_day) == 9


async def test_trunks(db: Database) -> None:
    for i, (trunk, status) in enumerate(
        [
            ("carrier", CallStatus.ANSWERED),
            ("carrier", CallStatus.FAILED),
            ("carrier", CallStatus.ANSWERED),
            ("backup", CallStatus.FAILED),
            (None, CallStatus.ANSWERED),
        ]
    ):
        record = call(f"t{i}", MONDAY + timedelta(minutes=i), status, duration=5)
        record.trunk = trunk
        await service.save_call(db, record)
    stats = await service.call_stats(db)
    assert stats.trunks == [
        {"trunk": "carrier", "calls": 3, "answered": 2, "success_rate": 0.6667},
        {"trunk": "backup", "calls": 1, "answered": 0, "success_rate": 0.0},
    ]


async def test_geography(seeded: Database) -> None:
    stats = await service.call_stats(seeded, None, None)
    assert stats.callers_by_country == [
        {"country": "US", "count": 5},
        {"country": "FR", "count": 1},
        {"country": "GB", "count": 1},
    ]
    assert stats.callers_by_region == [
        {"country": "US", "region": "Washington D.C.", "count": 5},
        {"country": "GB", "region": "London", "count": 1},
    ]


async def test_agents(seeded: Database) -> None:
    stats = await service.call_stats(seeded, None, None)
    assert stats.agents == [
        {
            "agent": "bot",
            "calls": 4,
            "answered": 2,
            "success_rate": 0.5,
            "average_duration_s": 45.0,
            "average_time_to_first_audio_ms": 300.0,
        },
        {
            "agent": "other",
            "calls": 2,
            "answered": 1,
            "success_rate": 0.5,
            "average_duration_s": 15.0,
            "average_time_to_first_audio_ms": None,
        },
    ]


async def test_time_range(seeded: Database) -> None:
    stats = await service.call_stats(
        seeded, MONDAY + timedelta(minutes=5), MONDAY + timedelta(hours=8, minutes=1)
    )
    assert (stats.total, stats.answered, stats.failed) == (3, 2, 1)  # a2, f1, a3
    data = stats.to_json()
    assert data["since"] == "2025-03-03T09:05:00+00:00"
    assert data["until"] == "2025-03-03T17:01:00+00:00"
    assert data["by_day"] == [{"date": "2025-03-03", "count": 3}]
    only_since = await service.call_stats(seeded, MONDAY + timedelta(days=1))
    assert only_since.total == 3
    with pytest.raises(InvalidField, match=r"^until: "):
        await service.call_stats(seeded, MONDAY, MONDAY - timedelta(days=1))


async def test_stats_json_shape(seeded: Database) -> None:
    data = (await service.call_stats(seeded)).to_json()
    assert set(data) == {
        "since",
        "until",
        "total",
        "answered",
        "failed",
        "cancelled",
        "interrupted",
        "in_progress",
        "success_rate",
        "average_duration_s",
        "failure_reasons",
        "by_hour_of_day",
        "by_day_of_week",
        "by_day",
        "callers_by_country",
        "callers_by_region",
        "agents",
        "by_weekday_hour",
        "by_hour",
        "trunks",
    }
    json.dumps(data)
