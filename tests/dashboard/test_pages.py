"""The reading pages over HTTP: Conversations (filters, keyset pages, CSV), a call, Metrics
and Live calls (dashboard/pages.py)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from sipbridge.api.app import create_app
from sipbridge.dashboard import pages
from sipbridge.dashboard.pages import timeline, transcript
from sipbridge.runtime.live import LiveCall
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallDetail, CallEvent, CallRecord, CallStatus, RecordingInfo
from tests.api.conftest import T0, call, known_dataset
from tests.dashboard.conftest import Browser, make_browser


def _rows(html: str) -> list[str]:
    """The call ids linked from the Conversations table, in order."""
    return re.findall(r'href="/calls/([^"]+)"', html)


async def _store(db: Database, records: list[CallRecord]) -> None:
    for record in records:
        await service.save_call(db, record)


async def test_conversations_newest_first_with_every_column(
    db: Database, signed_in: Browser
) -> None:
    await _store(db, known_dataset())
    page = await signed_in.get("/calls")
    assert page.status_code == 200
    assert _rows(page.text) == ["c4", "c3", "c2", "c1"]
    for text in ("+12025550101", "+442079460000", "support", "sales", "1:00", "pcmu"):
        assert text in page.text
    # A failure reason is shown in plain words (the code on hover).
    assert "no agent endpoint answered" in page.text
    assert 'title="agent_unreachable"' in page.text


async def test_filter_by_a_number_typed_as_a_person_would(db: Database, signed_in: Browser) -> None:
    await _store(db, known_dataset())
    for typed in ("12025550101", "+1 (202) 555-0101", "202-555-0101"):  # --default-region US
        page = await signed_in.get("/calls", params={"number": typed})
        assert page.status_code == 200, typed
        assert _rows(page.text) == ["c1"], typed
    page = await signed_in.get("/calls", params={"number": "+44 20 7946 0000"})
    assert _rows(page.text) == ["c2"]
    bad = await signed_in.get("/calls", params={"number": "12"})
    assert bad.status_code == 422
    assert 'aria-invalid="true"' in bad.text and "is not a valid phone number" in bad.text


async def test_filter_by_agent_status_reason_and_days(db: Database, signed_in: Browser) -> None:
    await _store(db, known_dataset())

    async def ids(**params: str) -> list[str]:
        page = await signed_in.get("/calls", params=params)
        assert page.status_code == 200, page.text
        return _rows(page.text)

    assert await ids(agent="sales") == ["c4", "c3"]
    assert await ids(status="failed") == ["c2"]
    assert await ids(reason="caller_cancelled") == ["c4"]
    assert await ids(since="2025-03-04") == ["c4", "c3"]
    assert await ids(until="2025-03-03") == ["c2", "c1"]  # the end day is included
    assert await ids(since="2025-03-03", until="2025-03-03", agent="support") == ["c2", "c1"]
    bad = await signed_in.get("/calls", params={"since": "2025-03-05", "until": "2025-03-01"})
    assert bad.status_code == 422 and "must not be before the start date" in bad.text
    bad = await signed_in.get("/calls", params={"status": "nope"})
    assert bad.status_code == 422
    # htmx asks for the results only.
    fragment = await signed_in.http.get(
        "/calls", params={"agent": "sales"}, headers={"HX-Request": "true", "HX-Target": "results"}
    )
    assert fragment.text.lstrip().startswith('<section id="results"')
    assert _rows(fragment.text) == ["c4", "c3"]


async def test_keyset_pages_walk_every_call_once(db: Database, signed_in: Browser) -> None:
    await _store(
        db, [call(f"p{i:03d}", T0 + timedelta(minutes=i), agent="support") for i in range(120)]
    )
    seen: list[str] = []
    url: str | None = "/calls?agent=support"
    while url is not None:
        page = await signed_in.get(url)
        seen += _rows(page.text)
        match = re.search(r'href="(/calls\?[^"]*cursor=[^"]+)" rel="next"', page.text)
        url = match.group(1).replace("&amp;", "&") if match else None
    assert seen == [f"p{i:03d}" for i in reversed(range(120))]


async def test_csv_export_of_the_filtered_set(db: Database, signed_in: Browser) -> None:
    await _store(db, known_dataset())
    response = await signed_in.get("/calls.csv", params={"number": "12025550188"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["id"] for row in rows] == ["c4", "c3"]
    bad = await signed_in.get("/calls.csv", params={"number": "x"})
    assert bad.status_code == 422 and "number" in bad.text


def _detail() -> CallDetail:
    record = call(
        "d1",
        T0,
        answer_after=1,
        first_audio_after=0.5,
        duration=20,
        reason="caller_hangup",
        sip_code=200,
    )
    record.hangup_by = "caller"
    record.source = "127.0.0.1:5070"
    at = T0.replace

    def event(seconds: float, kind: str, data: dict[str, Any]) -> CallEvent:
        return CallEvent("d1", T0 + timedelta(seconds=seconds), kind, data)

    events = [
        event(0.01, "ringing", {"agent": "support"}),
        event(0.2, "agent_connected", {"protocol": "native"}),
        event(
            2.0, "transcript", {"role": "agent", "text": "Hello, how can I help?", "final": True}
        ),
        event(4.0, "transcript", {"role": "caller", "text": "I need my balance", "final": True}),
        event(5.0, "dtmf", {"digit": "5", "duration_ms": 100}),
        event(6.0, "agent_clear", {"dropped_bytes": 320}),
        event(7.0, "metadata", {"intent": "balance"}),
    ]
    del at
    return CallDetail(record=record, events=events)


def test_timeline_and_transcript_in_time_order() -> None:
    detail = _detail()
    steps = [(round(step["offset"], 2), step["what"]) for step in timeline(detail)]
    assert steps == [
        (0.0, "received"),
        (0.01, "ringing"),
        (0.2, "agent connected"),
        (1.0, "answered"),
        (1.5, "first agent audio"),
        (5.0, "caller pressed"),
        (6.0, "agent cleared its audio"),
        (21.0, "ended"),
    ]
    assert timeline(detail)[-1]["detail"] == "hung up by caller"
    turns = transcript(detail)
    assert [(turn["role"], turn["text"]) for turn in turns] == [
        ("agent", "Hello, how can I help?"),
        ("caller", "I need my balance"),
    ]


def test_timeline_of_an_outbound_call_shows_progress_and_why_it_failed() -> None:
    record = call("o1", T0, status=CallStatus.FAILED, reason="trunk_unreachable")
    record.ended_at = T0 + timedelta(seconds=0.3)
    events = [
        CallEvent(
            "o1", T0 + timedelta(seconds=0.1), "progress", {"status": 183, "early_media": True}
        ),
        CallEvent(
            "o1",
            T0 + timedelta(seconds=0.2),
            "failure",
            {"reason": "trunk_unreachable", "detail": "connect failed: Connection refused"},
        ),
    ]
    steps = [(step["what"], step["detail"]) for step in timeline(CallDetail(record, events))]
    assert steps[1:3] == [
        ("callee's side answered", "SIP 183, early media"),
        ("failed", "trunk_unreachable: connect failed: Connection refused"),
    ]


async def test_call_page(db: Database, signed_in: Browser) -> None:
    detail = _detail()
    await service.write_call(db, detail.record, detail.events)
    page = await signed_in.get("/calls/d1")
    assert page.status_code == 200
    text = page.text
    for expected in (
        "Hello, how can I help?",
        "I need my balance",
        "agent connected",
        "hung up by caller",
        "d1@test",  # the SIP Call-ID
        "127.0.0.1:5070",
        "&#34;intent&#34;: &#34;balance&#34;",  # metadata, escaped
        "Time to first agent audio",
    ):
        assert expected in text, expected
    assert text.index("Hello, how can I help?") < text.index("I need my balance")
    assert (await signed_in.get("/calls/nope")).status_code == 404


async def test_failure_reason_in_plain_words_with_the_fix(db: Database, signed_in: Browser) -> None:
    record = call(
        "f1",
        T0,
        status=CallStatus.FAILED,
        reason="agent_not_voice_enabled",
        sip_code=480,
    )
    record.ended_at = T0 + timedelta(milliseconds=5)
    await service.save_call(db, record)
    page = await signed_in.get("/calls/f1")
    assert "the number&#39;s agent is not voice-enabled" in page.text
    assert "enable it on the Agents page" in page.text
    assert "SIP 480" in page.text
    assert "answered SIP 480 (agent_not_voice_enabled)" in page.text  # the timeline's end


async def test_metrics_totals_charts_and_tables(db: Database, signed_in: Browser) -> None:
    await _store(db, known_dataset())
    page = await signed_in.get("/stats", params={"since": "2025-03-03", "until": "2025-03-04"})
    assert page.status_code == 200
    text = page.text
    assert re.search(r'id="total-calls">4<', text)
    assert re.search(r'id="answered-calls">2<', text)
    assert re.search(r'id="success-rate">50.0 %<', text)
    assert text.count('<svg class="chart') == 5  # over time, reasons, heat map, countries, agents
    assert "<title>agent_unreachable: 1 calls</title>" in text
    assert "Mon 09:00-09:59: 1 calls" in text  # the heat map cell of c1
    assert "<td>03-03</td><td>2</td>" in text  # the table beside the daily chart
    # A preset range ending now: no calls of 2025 in it.
    recent = await signed_in.get("/stats", params={"range": "24h"})
    assert recent.status_code == 200 and re.search(r'id="total-calls">0<', recent.text)
    assert "Calls per hour" in recent.text
    bad = await signed_in.get("/stats", params={"since": "nope"})
    assert bad.status_code == 422


class FakeLive:
    """The LiveCalls interface over a list (runtime/live.py is tested with a real server)."""

    closing = False
    owner = "here:5060"

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.calls = [
            LiveCall(
                "l1",
                "+12025550101",
                "+12025550199",
                "support",
                None,
                "pcmu",
                "active",
                now - timedelta(seconds=30),
                now - timedelta(seconds=29),
                29.0,
            ),
            LiveCall(
                "l2",
                "+12025550102",
                "+12025550199",
                "support",
                None,
                None,
                "ringing",
                now,
                None,
                0.0,
            ),
        ]
        self.hung_up: list[str] = []

    def snapshot(self) -> list[LiveCall]:
        return list(self.calls)

    def hang_up(self, call_id: str) -> bool | None:
        found = [c for c in self.calls if c.id == call_id]
        if not found:
            return None
        if found[0].state != "active":
            return False
        self.hung_up.append(call_id)
        return True


async def test_live_calls_page_and_hang_up(app: FastAPI, signed_in: Browser) -> None:
    page = await signed_in.get("/live")
    assert "this application has no SIP server" in page.text
    live = FakeLive()
    app.state.dashboard.live = live
    page = await signed_in.get("/live")
    assert 'data-call="l1"' in page.text and 'data-call="l2"' in page.text
    assert page.text.count(">Hang up</button>") == 1  # a ringing call has none
    assert (await signed_in.post("/live/l2/hangup")).status_code == 409
    assert (await signed_in.post("/live/nope/hangup")).status_code == 404
    response = await signed_in.post("/live/l1/hangup")
    assert response.status_code == 200 and live.hung_up == ["l1"]
    assert (await signed_in.http.post("/live/l1/hangup")).status_code == 403  # no CSRF token


async def test_live_calls_of_other_instances_from_the_store(
    app: FastAPI, db: Database, signed_in: Browser
) -> None:
    app.state.dashboard.live = FakeLive()
    mine = call("mine", T0, status=CallStatus.ACTIVE, answer_after=1)
    mine.owner = "here:5060"
    theirs = call("theirs", T0, status=CallStatus.RINGING, from_number="+12025550177")
    theirs.owner = "there:5060"
    ended = call("ended", T0, answer_after=1, duration=5)
    ended.owner = "there:5060"
    await _store(db, [mine, theirs, ended])
    page = await signed_in.get("/live")
    assert "On other instances" in page.text
    assert _rows(page.text) == ["theirs"]  # linked to its record; no hang-up button
    assert "there:5060" in page.text


async def test_live_events_stream(
    app: FastAPI, signed_in: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = FakeLive()
    app.state.dashboard.live = live
    # httpx's ASGI transport reads a whole response: the stream ends after its first event.
    monkeypatch.setattr(pages, "LIVE_STREAM_MAX", -1.0)
    async with signed_in.http.stream("GET", "/live/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "" and any(item.startswith("event: calls") for item in lines):
                break
    data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
    assert 'data-call="l1"' in data and "+12025550102" in data


async def test_text_from_the_wire_is_escaped_everywhere(db: Database, signed_in: Browser) -> None:
    hostile = '<script>alert("x")</script>'
    record = call("x1", T0, answer_after=1, duration=3, reason="caller_hangup", sip_code=200)
    record.sip_call_id = hostile
    record.agent = hostile
    events = [
        CallEvent("x1", T0 + timedelta(seconds=2), "transcript", {"role": "agent", "text": hostile})
    ]
    await service.write_call(db, record, events)
    for url in ("/calls", "/calls/x1", "/stats?since=2025-03-03&until=2025-03-03"):
        page = await signed_in.get(url)
        assert page.status_code == 200, url
        assert "<script>alert" not in page.text, url
        assert "&lt;script&gt;alert" in page.text, url


async def test_call_page_plays_the_recording_from_the_recordings_folder(
    db: Database, api_key: str, tmp_path: Path
) -> None:
    """A recorded call's page has a player whose source the signed-in session can fetch
    (the same lookup as /api/calls/{id}/recording: only files in the recordings folder);
    without a session, or for a call without recording, nothing is served."""
    folder = tmp_path / "recordings"
    folder.mkdir()
    wav = folder / "r1.wav"
    wav.write_bytes(b"RIFF" + bytes(40) + b"\x01\x00" * 800)
    detail = _detail()
    detail.record.recording = RecordingInfo(
        path=str(wav), format="wav", sample_rate=8000, channels=2, bytes=1644, duration_s=0.1
    )
    await service.write_call(db, detail.record, detail.events)
    app = create_app(db, default_region="US", recordings_dir=folder)
    async with make_browser(app) as http:
        browser = Browser(http)
        assert (await browser.get("/calls/d1/recording")).status_code in (303, 401)
        await browser.sign_in(api_key)
        page = await browser.get("/calls/d1")
        assert '<audio controls preload="none" src="/calls/d1/recording"' in page.text
        assert "left the caller, right the agent" in page.text
        audio = await browser.get("/calls/d1/recording")
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        assert audio.content == wav.read_bytes()
        ranged = await http.get("/calls/d1/recording", headers={"Range": "bytes=0-3"})
        assert ranged.status_code == 206 and ranged.content == b"RIFF"
        # A stored path outside the folder is never served.
        detail.record.recording.path = str(tmp_path / "elsewhere.wav")
        (tmp_path / "elsewhere.wav").write_bytes(b"RIFF")
        await service.write_call(db, detail.record, [])
        assert (await browser.get("/calls/d1/recording")).status_code == 404
        assert "<audio" not in (await browser.get("/calls/nope")).text
