"""Call statistics over a time range."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from sipbridge.store.db import Database
from sipbridge.store.models import Call
from sipbridge.store.records import CallStatus, as_utc
from sipbridge.store.service.calls import _range

__all__ = ["HOURLY_SPAN", "CallStats", "call_stats"]

HOURLY_SPAN = timedelta(days=7)


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _average(total: float | None, count: int) -> float | None:
    return None if not count or total is None else round(total / count, 3)


@dataclass
class CallStats:
    """Figures over a time range (see :func:`call_stats`); all times UTC."""

    since: datetime | None
    until: datetime | None
    total: int = 0
    answered: int = 0
    failed: int = 0
    cancelled: int = 0
    interrupted: int = 0  # the instance handling them ended (crash); closed at its restart
    in_progress: int = 0  # ringing or active right now: neither success nor failure yet
    average_duration_s: float | None = None
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)
    by_hour_of_day: list[int] = field(default_factory=lambda: [0] * 24)
    by_day_of_week: list[int] = field(default_factory=lambda: [0] * 7)
    by_day: list[dict[str, Any]] = field(default_factory=list)
    callers_by_country: list[dict[str, Any]] = field(default_factory=list)
    callers_by_region: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    # [weekday][hour] (Monday first, UTC): the peak-times heat map
    by_weekday_hour: list[list[int]] = field(default_factory=lambda: [[0] * 24 for _ in range(7)])
    # every hour from the first to the last with calls, when they are at most
    # HOURLY_SPAN apart (else empty: by_day is the series to draw)
    by_hour: list[dict[str, Any]] = field(default_factory=list)
    trunks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Answered calls / all calls (0.0 when there are none)."""
        return _ratio(self.answered, self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else as_utc(self.since).isoformat(),
            "until": None if self.until is None else as_utc(self.until).isoformat(),
            "total": self.total,
            "answered": self.answered,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "interrupted": self.interrupted,
            "in_progress": self.in_progress,
            "success_rate": self.success_rate,
            "average_duration_s": self.average_duration_s,
            "failure_reasons": self.failure_reasons,
            "by_hour_of_day": self.by_hour_of_day,
            "by_day_of_week": self.by_day_of_week,
            "by_day": self.by_day,
            "callers_by_country": self.callers_by_country,
            "callers_by_region": self.callers_by_region,
            "agents": self.agents,
            "by_weekday_hour": self.by_weekday_hour,
            "by_hour": self.by_hour,
            "trunks": self.trunks,
        }


@dataclass
class _AgentTotals:
    calls: int = 0
    answered: int = 0
    duration_sum: float = 0.0
    duration_count: int = 0
    audio_sum: float = 0.0
    audio_count: int = 0


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


async def call_stats(
    db: Database, since: datetime | None = None, until: datetime | None = None
) -> CallStats:
    """Statistics over calls received in ``[since, until)`` (None: unbounded).

    Three GROUP BY queries over the range (status/agent/reason, UTC day/hour, caller
    country/region), on columns computed when the call was written, so the SQL is the same
    on SQLite and PostgreSQL; the rest is folded in Python over at most a few thousand
    groups.
    """
    conditions = _range(since, until)
    answered_value = CallStatus.ANSWERED.value
    by_outcome = (
        select(
            Call.agent_name,
            Call.trunk,
            Call.status,
            Call.reason,
            func.count(),
            func.sum(Call.duration_s),
            func.count(Call.duration_s),
            func.sum(Call.first_audio_ms),
            func.count(Call.first_audio_ms),
        )
        .where(*conditions)
        .group_by(Call.agent_name, Call.trunk, Call.status, Call.reason)
    )
    by_time = (
        select(Call.received_day, Call.received_hour, func.count())
        .where(*conditions)
        .group_by(Call.received_day, Call.received_hour)
    )
    by_place = (
        select(Call.caller_country, Call.caller_region, func.count())
        .where(*conditions, Call.caller_country.is_not(None))
        .group_by(Call.caller_country, Call.caller_region)
    )
    async with db.sessionmaker() as session:
        outcome_rows = (await session.execute(by_outcome)).all()
        time_rows = (await session.execute(by_time)).all()
        place_rows = (await session.execute(by_place)).all()

    stats = CallStats(since=since, until=until)
    reasons: dict[str, int] = {}
    agents: dict[str, _AgentTotals] = {}
    trunks: dict[str, list[int]] = {}  # name: [calls, answered]
    duration_sum, duration_count = 0.0, 0
    for agent, trunk, status, reason, count, d_sum, d_count, a_sum, a_count in outcome_rows:
        count = int(count)
        stats.total += count
        if trunk is not None:
            trunk_totals = trunks.setdefault(trunk, [0, 0])
            trunk_totals[0] += count
            if status == answered_value:
                trunk_totals[1] += count
        totals = agents.setdefault(agent, _AgentTotals()) if agent is not None else None
        if totals is not None:
            totals.calls += count
        if status == answered_value:
            stats.answered += count
            duration_sum += float(d_sum or 0.0)
            duration_count += int(d_count)
            if totals is not None:
                totals.answered += count
                totals.duration_sum += float(d_sum or 0.0)
                totals.duration_count += int(d_count)
                totals.audio_sum += float(a_sum or 0.0)
                totals.audio_count += int(a_count)
            continue
        if CallStatus(status).is_open:
            stats.in_progress += count
            continue
        if status == CallStatus.CANCELLED.value:
            stats.cancelled += count
        elif status == CallStatus.INTERRUPTED.value:
            stats.interrupted += count
        else:
            stats.failed += count
        key = reason or "unknown"
        reasons[key] = reasons.get(key, 0) + count
    stats.average_duration_s = _average(duration_sum, duration_count)
    stats.failure_reasons = [
        {"reason": reason, "count": count}
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    ]
    stats.agents = [
        {
            "agent": name,
            "calls": totals.calls,
            "answered": totals.answered,
            "success_rate": _ratio(totals.answered, totals.calls),
            "average_duration_s": _average(totals.duration_sum, totals.duration_count),
            "average_time_to_first_audio_ms": _average(totals.audio_sum, totals.audio_count),
        }
        for name, totals in sorted(agents.items(), key=lambda item: (-item[1].calls, item[0]))
    ]

    stats.trunks = [
        {
            "trunk": name,
            "calls": calls,
            "answered": answered,
            "success_rate": _ratio(answered, calls),
        }
        for name, (calls, answered) in sorted(
            trunks.items(), key=lambda item: (-item[1][0], item[0])
        )
    ]

    days: dict[date, int] = {}
    hours: dict[datetime, int] = {}
    for day, hour, count in time_rows:
        if day is None or hour is None:  # rows written without the computed columns
            continue
        the_day = _as_date(day)
        count = int(count)
        days[the_day] = days.get(the_day, 0) + count
        stats.by_hour_of_day[int(hour)] += count
        stats.by_day_of_week[the_day.weekday()] += count
        stats.by_weekday_hour[the_day.weekday()][int(hour)] += count
        start = datetime(the_day.year, the_day.month, the_day.day, int(hour), tzinfo=UTC)
        hours[start] = hours.get(start, 0) + count
    if hours and max(hours) - min(hours) <= HOURLY_SPAN:
        first_hour, last_hour = min(hours), max(hours)
        span = int((last_hour - first_hour) / timedelta(hours=1))
        stats.by_hour = [
            {
                "hour": (first_hour + timedelta(hours=i)).isoformat(),
                "count": hours.get(first_hour + timedelta(hours=i), 0),
            }
            for i in range(span + 1)
        ]
    if days:
        first, last = min(days), max(days)
        stats.by_day = [
            {
                "date": (first + timedelta(days=i)).isoformat(),
                "count": days.get(first + timedelta(days=i), 0),
            }
            for i in range((last - first).days + 1)
        ]

    countries: dict[str, int] = {}
    regions: list[dict[str, Any]] = []
    for country, region, count in place_rows:
        if country is None:
            continue
        countries[country] = countries.get(country, 0) + int(count)
        if region is not None:
            regions.append({"country": country, "region": region, "count": int(count)})
    stats.callers_by_country = [
        {"country": country, "count": count}
        for country, count in sorted(countries.items(), key=lambda item: (-item[1], item[0]))
    ]
    stats.callers_by_region = sorted(
        regions, key=lambda item: (-item["count"], item["country"], item["region"])
    )
    return stats
