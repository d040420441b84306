import csv
import dataclasses
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.api import create_app
from sipbridge.api.routes_calls import CSV_COLUMNS, csv_cell
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallEvent, CallRecord, CallStatus, RecordingInfo
from tests.api.conftest import T0, call, make_client


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["items"]]


async def get_page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/api/calls", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def error_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


async def test_list_calls_empty(client: httpx.AsyncClient) -> None:
    assert await get_page(client) == {"items": [], "next_cursor": None}


async def test_list_calls_newest_first_with_all_fields(
    client: httpx.AsyncClient, known_calls: list[CallRecord]
) -> None:
    page = await get_page(client)
    assert ids(page) == ["c4", "c3", "c2", "c1"]
    assert page["next_cursor"] is None
    c1 = page["items"][-1]
    assert c1["status"] == "answered"
    assert c1["received_at"] == "2025-03-03T09:00:00+00:00"
    assert c1["duration_s"] == 60.0
    assert c1["setup_ms"] == 1000.0
    assert c1["time_to_first_audio_ms"] == 500.0
    assert c1["caller_country"] == "US"
    assert c1["agent"] == "support"
    assert page["items"][0]["caller_country"] is None  # "anonymous"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"number": "+12025550188"}, ["c4", "c3"]),
        ({"number": "+1 202 555 0101"}, ["c1"]),
        ({"number": "+442079460000"}, ["c2"]),
        ({"number": "anonymous"}, ["c4"]),
        ({"agent": "support"}, ["c2", "c1"]),
        ({"agent": "nobody"}, []),
        ({"status": "answered"}, ["c3", "c1"]),
        ({"status": "cancelled"}, ["c4"]),
        ({"reason": "agent_unreachable"}, ["c2"]),
        ({"agent": "sales", "status": "answered"}, ["c3"]),
        ({"since": "2025-03-04T00:00:00Z"}, ["c4", "c3"]),
        ({"until": "2025-03-03T10:00:00+00:00"}, ["c1"]),  # until is exclusive
        ({"since": "2025-03-03T10:00:00", "until": "2025-03-04T09:00:01Z"}, ["c3", "c2"]),
        ({"since": "2025-03-03T11:00:00+01:00", "until": "2025-03-03T12:00:00+01:00"}, ["c2"]),
    ],
)
async def test_list_calls_filters(
    client: httpx.AsyncClient,
    known_calls: list[CallRecord],
    params: dict[str, str],
    expected: list[str],
) -> None:
    assert ids(await get_page(client, **params)) == expected


async def test_cursor_pagination_across_pages(client: httpx.AsyncClient, db: Database) -> None:
    # 23 calls, some sharing a received_at (the id breaks the tie)
    records = [
        call(f"p{i:02d}", T0 + timedelta(minutes=i // 2), status=CallStatus.FAILED)
        for i in range(23)
    ]
    for record in records:
        await service.save_call(db, record)
    expected = [r.id for r in sorted(records, key=lambda r: (r.received_at, r.id), reverse=True)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor is not None:
            params["cursor"] = cursor
        page = await get_page(client, **params)
        pages += 1
        seen += ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == expected


async def test_cursor_pagination_keeps_filters(client: httpx.AsyncClient, db: Database) -> None:
    for i in range(6):
        status = CallStatus.FAILED if i % 2 else CallStatus.CANCELLED
        await service.save_call(db, call(f"f{i}", T0 + timedelta(minutes=i), status=status))
    first = await get_page(client, status="failed", limit=2)
    assert ids(first) == ["f5", "f3"]
    second = await get_page(client, status="failed", limit=2, cursor=first["next_cursor"])
    assert ids(second) == ["f1"]
    assert second["next_cursor"] is None


async def test_exact_page_size_has_no_next_cursor(
    client: httpx.AsyncClient, known_calls: list[CallRecord]
) -> None:
    page = await get_page(client, limit=4)
    assert len(page["items"]) == 4
    assert page["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "engaged"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01"}, "until"),
        ({"since": "2025-03-04T00:00:00Z", "until": "2025-03-03T00:00:00Z"}, "until"),
        ({"since": "2025-03-04T00:00:00Z", "until": "2025-03-04T00:00:00Z"}, "until"),
        ({"since": "9999-12-31T23:00:00-14:00"}, "since"),
        ({"cursor": "garbage!"}, "cursor"),
        ({"cursor": "WyJ4Il0"}, "cursor"),  # base64 of ["x"]
        ({"cursor": "x" * 600}, "cursor"),
        # forged: a date out of range once moved to UTC (was a 500 with two tracebacks)
        ({"cursor": "WyI5OTk5LTEyLTMxVDIzOjU5OjU5LTA1OjAwIiwgImMxIl0"}, "cursor"),
        ({"agent": "a\x00b"}, "agent"),
        ({"number": "1" * 65}, "number"),
    ],
)
async def test_list_calls_bad_query_is_422(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    assert ["query", field] in error_locs(await client.get("/api/calls", params=params))


async def test_call_detail_with_timeline_transcript_metadata(
    client: httpx.AsyncClient, db: Database, known_calls: list[CallRecord]
) -> None:
    await service.save_call_events(
        db,
        "c1",
        [
            CallEvent(
                "c1", T0 + timedelta(seconds=2), "transcript", {"role": "agent", "text": "Hi"}
            ),
            CallEvent("c1", T0 + timedelta(seconds=3), "metadata", {"intent": "billing"}),
            CallEvent(
                "c1",
                T0 + timedelta(seconds=4),
                "transcript",
                {"role": "caller", "text": "Hello", "final": False},
            ),
            CallEvent("c1", T0 + timedelta(seconds=5), "dtmf", {"digit": "5"}),
        ],
    )
    response = await client.get("/api/calls/c1")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["id"] == "c1"
    assert detail["codec"] == "pcmu"
    assert detail["reason"] == "caller_hangup"
    assert detail["timeline"] == [
        {"event": "received", "at": "2025-03-03T09:00:00+00:00"},
        {"event": "answered", "at": "2025-03-03T09:00:01+00:00"},
        {"event": "first_audio", "at": "2025-03-03T09:00:01.500000+00:00"},
        {"event": "ended", "at": "2025-03-03T09:01:01+00:00"},
    ]
    assert detail["transcript"] == [
        {"at": "2025-03-03T09:00:02+00:00", "role": "agent", "text": "Hi", "final": True},
        {"at": "2025-03-03T09:00:04+00:00", "role": "caller", "text": "Hello", "final": False},
    ]
    assert detail["metadata"] == [
        {"at": "2025-03-03T09:00:03+00:00", "data": {"intent": "billing"}}
    ]
    assert detail["quality"] is None


async def test_call_detail_of_failed_call(
    client: httpx.AsyncClient, known_calls: list[CallRecord]
) -> None:
    detail = (await client.get("/api/calls/c2")).json()
    assert detail["timeline"] == [{"event": "received", "at": "2025-03-03T10:00:00+00:00"}]
    assert (detail["status"], detail["reason"], detail["sip_code"]) == (
        "failed",
        "agent_unreachable",
        503,
    )
    assert detail["caller_country"] == "GB"
    assert detail["transcript"] == []
    assert detail["metadata"] == []


async def test_unknown_call_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/calls/nope")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_csv_export(client: httpx.AsyncClient, known_calls: list[CallRecord]) -> None:
    response = await client.get("/api/calls.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = read_csv(response.text)
    assert [row["id"] for row in rows] == ["c4", "c3", "c2", "c1"]
    c1 = rows[-1]
    assert c1["from_number"] == "+12025550101"  # a number stays a number
    assert c1["duration_s"] == "60.0"
    assert c1["answered_at"] == "2025-03-03T09:00:01+00:00"
    assert rows[0]["answered_at"] == ""  # null is an empty cell


async def test_csv_export_uses_filters(
    client: httpx.AsyncClient, known_calls: list[CallRecord]
) -> None:
    response = await client.get(
        "/api/calls.csv", params={"agent": "sales", "since": "2025-03-04T09:30:00Z"}
    )
    assert [row["id"] for row in read_csv(response.text)] == ["c4"]
    empty = await client.get("/api/calls.csv", params={"status": "answered", "agent": "x"})
    assert empty.text.strip() == ",".join(CSV_COLUMNS)


async def test_csv_export_bad_filter_is_422_before_streaming(client: httpx.AsyncClient) -> None:
    assert ["query", "status"] in error_locs(
        await client.get("/api/calls.csv", params={"status": "nope"})
    )
    assert ["query", "until"] in error_locs(
        await client.get(
            "/api/calls.csv", params={"since": "2025-01-02T00:00:00", "until": "2025-01-01"}
        )
    )


async def test_csv_export_many_rows(client: httpx.AsyncClient, db: Database) -> None:
    for i in range(1203):  # more than one service page and one CSV batch
        await service.save_call(
            db, call(f"m{i:04d}", T0 + timedelta(seconds=i), status=CallStatus.FAILED)
        )
    rows = read_csv((await client.get("/api/calls.csv")).text)
    assert len(rows) == 1203
    assert rows[0]["id"] == "m1202"
    assert rows[-1]["id"] == "m0000"


async def test_csv_neutralizes_formulas(client: httpx.AsyncClient, db: Database) -> None:
    await service.save_call(
        db, call("evil", T0, status=CallStatus.FAILED, from_number='=HYPERLINK("x")')
    )
    row = read_csv((await client.get("/api/calls.csv")).text)[0]
    assert row["from_number"] == '\'=HYPERLINK("x")'


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (True, "true"),
        (503, "503"),
        (1.5, "1.5"),
        ("+12025550101", "+12025550101"),
        ("-3.25", "-3.25"),
        ("+1 202", "'+1 202"),
        ("=1+1", "'=1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("\tx", "'\tx"),
        ("plain", "plain"),
    ],
)
def test_csv_cell(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


async def test_calls_in_progress_are_listed_and_filtered(
    client: httpx.AsyncClient, db: Database
) -> None:
    ringing = call("r1", T0)
    ringing.status, ringing.owner, ringing.updated_at = CallStatus.RINGING, "host:5060", T0
    active = call("a1", T0 + timedelta(minutes=1))
    active.status = CallStatus.ACTIVE
    interrupted = call("i1", T0 + timedelta(minutes=2))
    interrupted.status, interrupted.reason = CallStatus.INTERRUPTED, "instance_restarted"
    for record in (ringing, active, interrupted):
        await service.write_call(db, record)
    page = await get_page(client)
    assert [(item["id"], item["status"]) for item in page["items"]] == [
        ("i1", "interrupted"),
        ("a1", "active"),
        ("r1", "ringing"),
    ]
    assert page["items"][2]["owner"] == "host:5060"
    assert page["items"][2]["updated_at"] == T0.isoformat()
    assert ids(await get_page(client, status="active")) == ["a1"]
    assert ids(await get_page(client, status="interrupted")) == ["i1"]
    csv_rows = read_csv((await client.get("/api/calls.csv")).text)
    assert {row["status"] for row in csv_rows} == {"ringing", "active", "interrupted"}


# ---------------------------------------------------------------- recordings


async def test_recording_download_and_its_404s(db: Database, api_key: str, tmp_path: Path) -> None:
    """``/api/calls/{id}/recording``: the file as audio/wav (streamed, Range works); 404
    for a call without a recording, a missing file, and a path outside the server's
    recordings folder; the record shows it, the CSV gives its path."""
    folder = tmp_path / "recordings"
    inside = folder / "2025-03-03" / "rec.wav"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"RIFF secret")
    info = RecordingInfo(str(inside), "wav", 8000, 2, inside.stat().st_size, 0.32)
    await service.save_call(
        db, dataclasses.replace(call("rec", T0, answer_after=1, duration=5), recording=info)
    )
    stray = RecordingInfo(str(folder / ".." / "elsewhere.wav"), "wav", 8000, 2, 11, 0.0)
    await service.save_call(
        db, dataclasses.replace(call("stray", T0, answer_after=1, duration=5), recording=stray)
    )
    await service.save_call(db, call("plain", T0, answer_after=1, duration=5))
    app = create_app(db, recordings_dir=folder)
    async with make_client(app, api_key) as client, make_client(app) as anon:
        response = await client.get("/api/calls/rec/recording")
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        assert "rec.wav" in response.headers["content-disposition"]
        assert response.content == inside.read_bytes()
        part = await client.get("/api/calls/rec/recording", headers={"Range": "bytes=4-7"})
        assert part.status_code == 206 and part.content == bytes(range(4))
        assert (await anon.get("/api/calls/rec/recording")).status_code == 401
        detail = (await client.get("/api/calls/rec")).json()
        assert detail["recording"] == info.to_json()
        assert (await client.get("/api/calls/plain")).json()["recording"] is None
        rows = read_csv((await client.get("/api/calls.csv")).text)
        assert {row["id"]: row["recording"] for row in rows}["rec"] == str(inside)
        for call_id, words in (
            ("plain", "has no recording"),
            ("stray", "not in this server's folder"),
            ("ghost", "not found"),
        ):
            response = await client.get(f"/api/calls/{call_id}/recording")
            assert response.status_code == 404 and words in response.json()["detail"]
        inside.unlink()
        response = await client.get("/api/calls/rec/recording")
        assert response.status_code == 404 and "not on this server" in response.json()["detail"]
    schema = app.openapi()["paths"]["/api/calls/{call_id}/recording"]["get"]["responses"]
    assert "audio/wav" in schema["200"]["content"] and "404" in schema
