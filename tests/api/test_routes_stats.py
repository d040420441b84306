from typing import Any

import httpx
import pytest

from sipbridge.store.records import CallRecord


async def stats(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/api/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_without_calls(client: httpx.AsyncClient) -> None:
    body = await stats(client)
    assert body["total"] == 0
    assert body["success_rate"] == 0
    assert body["average_duration_s"] is None
    assert body["by_hour_of_day"] == [0] * 24
    assert body["by_day_of_week"] == [0] * 7
    for key in ("failure_reasons", "by_day", "callers_by_country", "callers_by_region", "agents"):
        assert body[key] == []


async def test_stats_on_known_dataset(
    client: httpx.AsyncClient, known_calls: list[CallRecord]
) -> None:
    body = await stats(client)
    assert (body["since"], body["until"]) == (None, None)
    assert (body["total"], body["answered"], body["failed"], body["cancelled"]) == (4, 2, 1, 1)
    assert body["success_rate"] == 0.5
    assert body["average_duration_s"] == 45.0
    assert body["failure_reasons"] == [
        {"reason": "agent_unreachable", "count": 1},
        {"reason": "caller_cancelled", "count": 1},
    ]
    hours = [0] * 24
    hours[9] = hours[10] = 2
    assert body["by_hour_of_day"] == hours
    assert body["by_day_of_week"] == [2, 2, 0, 0, 0, 0, 0]  # Monday, Tuesday
    assert body["by_day"] == [
        {"date": "2025-03-03", "count": 2},
        {"date": "2025-03-04", "count": 2},
    ]
    assert body["callers_by_country"] == [
        {"country": "US", "count": 2},
        {"country": "GB", "count": 1},
    ]
    regions = {(r["country"], r["region"]): r["count"] for r in body["callers_by_region"]}
    assert regions[("GB", "London")] == 1
    assert sum(count for (country, _), count in regions.items() if country == "US") == 2
    assert body["agents"] == [
        {
            "agent": "sales",
            "calls": 2,
            "answered": 1,
            "success_rate": 0.5,
            "average_duration_s": 30.0,
            "average_time_to_first_audio_ms": 250.0,
        },
        {
            "agent": "support",
            "calls": 2,
            "answered": 1,
            "success_rate": 0.5,
            "average_duration_s": 60.0,
            "average_time_to_first_audio_ms": 500.0,
        },
    ]


async def test_stats_time_range(client: httpx.AsyncClient, known_calls: list[CallRecord]) -> None:
    body = await stats(client, since="2025-03-04T00:00:00Z", until="2025-03-04T10:00:00Z")
    assert body["since"] == "2025-03-04T00:00:00+00:00"
    assert (body["total"], body["answered"], body["cancelled"]) == (1, 1, 0)
    assert body["success_rate"] == 1.0
    assert body["by_day"] == [{"date": "2025-03-04", "count": 1}]
    assert [agent["agent"] for agent in body["agents"]] == ["sales"]
    monday = await stats(client, until="2025-03-04")  # naive: UTC
    assert monday["total"] == 2
    assert monday["by_day_of_week"][0] == 2


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "soon"}, "since"),
        ({"until": "2025-02-30"}, "until"),
        ({"since": "2025-03-05", "until": "2025-03-04"}, "until"),
        ({"since": "0001-01-01T00:00:00+14:00"}, "since"),
    ],
)
async def test_stats_bad_range_is_422(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/api/stats", params=params)
    assert response.status_code == 422, response.text
    assert ["query", field] in [error["loc"] for error in response.json()["detail"]]
