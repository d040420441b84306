"""The reading pages: sign-in and sign-out, Conversations (with CSV export), a call,
Metrics and Live calls (server-sent events, hang-up)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from sipbridge.api.routes_calls import csv_stream, recording_file
from sipbridge.dashboard import charts
from sipbridge.dashboard.reasons import known_reasons
from sipbridge.dashboard.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SignInNeeded,
    cookie_flags,
    dashboard_of,
    read_form,
    redirect,
    render,
    safe_next,
    signed_in,
)
from sipbridge.numbers import InvalidNumber, read_number
from sipbridge.store import service
from sipbridge.store.records import ApiKeyRecord, CallDetail, CallRecord, CallStatus, as_utc
from sipbridge.store.service import CallFilter, InvalidField, NotFound

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
SignedIn = Annotated[ApiKeyRecord, Depends(signed_in)]
PAGE_SIZE: Final = 50
LIVE_INTERVAL: Final = 1.0  # seconds between two Live calls updates
LIVE_STREAM_MAX: Final = 300.0  # a stream ends after this long; EventSource reconnects
RANGES: Final = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
RANGES_LONG: Final = {"90d": timedelta(days=90)}


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------ sign-in


@router.get("/")
async def home(request: Request) -> Response:
    return redirect(request, "/calls")


@router.get("/login")
async def login_page(request: Request, next: str = "/calls") -> Response:
    try:
        await signed_in(request)
    except SignInNeeded:
        return render(request, "login.html", {"next": safe_next(next), "error": None})
    return redirect(request, safe_next(next))  # already signed in


@router.post("/login")
async def login(request: Request) -> Response:
    """An API key becomes a session cookie. Failures per source address are slowed down
    (security.SignInThrottle): 429 with Retry-After while the source must wait."""
    form = await read_form(request)
    dashboard = dashboard_of(request)
    source, now = _client(request), dashboard.clock()
    target = safe_next(form.get("next"))
    wait = dashboard.throttle.retry_after(source, now)
    if wait > 0:
        seconds = max(1, round(wait))
        return render(
            request,
            "login.html",
            {"next": target, "error": f"Too many failed sign-ins: wait {seconds} s."},
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )
    presented = form.get("key").strip()
    record = await service.verify_api_key(dashboard.db, presented) if presented else None
    if record is None:
        dashboard.throttle.failed(source, now)
        return render(
            request,
            "login.html",
            {
                "next": target,
                "error": "That is not a valid API key (create one with sipbridge apikey create).",
            },
            status_code=401,
        )
    dashboard.throttle.succeeded(source)
    response = redirect(request, target)
    value = dashboard.signer.issue(service.api_key_hash(presented), dashboard.wall_clock())
    flags = cookie_flags(request)
    response.set_cookie(SESSION_COOKIE, value, max_age=int(dashboard.signer.lifetime), **flags)
    # A new CSRF nonce with the new session (no token from before sign-in stays valid).
    response.set_cookie(CSRF_COOKIE, dashboard.signer.new_nonce(), **flags)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await read_form(request)
    response = redirect(request, "/login")
    flags = cookie_flags(request)
    response.delete_cookie(SESSION_COOKIE, **flags)
    response.delete_cookie(CSRF_COOKIE, **flags)
    return response


# ------------------------------------------------------------------ conversations


def _date(text: str, field: str, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = f"{text!r} is not a date (YYYY-MM-DD)"
        return None


def call_filter(request: Request, errors: dict[str, str]) -> tuple[CallFilter, dict[str, str]]:
    """The Conversations filters from the query string: the number read like the CLI's
    ``calls --number`` (any format, national with ``--default-region``), dates as whole
    UTC days (``until`` included). Bad values go into ``errors`` by field."""
    query = request.query_params
    values = {
        name: query.get(name, "").strip()
        for name in ("number", "agent", "status", "reason", "since", "until")
    }
    flt = CallFilter()
    if values["number"]:
        try:
            flt.number = read_number(values["number"], dashboard_of(request).default_region)
        except InvalidNumber as exc:
            errors["number"] = (
                f"{values['number']!r} is not a phone number: write it with its country code "
                "(e.g. +1 202 555 0101)"
                if exc.hint_region
                else exc.detail
            )
        except ValueError as exc:
            errors["number"] = str(exc)
    flt.agent = values["agent"] or None
    if values["status"]:
        if values["status"] in {status.value for status in CallStatus}:
            flt.status = values["status"]
        else:
            errors["status"] = f"{values['status']!r} is not a call status"
    flt.reason = values["reason"] or None
    since = _date(values["since"], "since", errors)
    until = _date(values["until"], "until", errors)
    if since is not None:
        flt.since = datetime(since.year, since.month, since.day, tzinfo=UTC)
    if until is not None:
        flt.until = datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1)
    if flt.since and flt.until and flt.until <= flt.since:
        errors["until"] = "must not be before the start date"
    return flt, values


@router.get("/calls")
async def conversations(request: Request, key: SignedIn) -> Response:
    dashboard = dashboard_of(request)
    errors: dict[str, str] = {}
    flt, values = call_filter(request, errors)
    cursor = request.query_params.get("cursor") or None
    calls: list[CallRecord] = []
    next_cursor: str | None = None
    if not errors:
        try:
            calls, next_cursor = await service.list_calls_page(
                dashboard.db, flt, limit=PAGE_SIZE, cursor=cursor
            )
        except InvalidField as exc:
            errors[exc.field] = exc.detail
    filters = {name: value for name, value in values.items() if value}
    context = {
        "calls": calls,
        "values": values,
        "errors": errors,
        "filters_query": urlencode(filters),
        "next_query": urlencode({**filters, "cursor": next_cursor}) if next_cursor else None,
        "first_page": cursor is not None,
        "agents": [agent.name for agent in await service.list_agents(dashboard.db)],
        "statuses": [status.value for status in CallStatus],
        "reasons": known_reasons(),
    }
    fragment = request.headers.get("hx-target") == "results"
    return render(
        request,
        "_calls_results.html" if fragment else "calls.html",
        context,
        status_code=422 if errors else 200,
    )


@router.get("/calls.csv")
async def conversations_csv(request: Request, key: SignedIn) -> Response:
    """The filtered calls as CSV: the same columns and escaping as ``/api/calls.csv``."""
    errors: dict[str, str] = {}
    flt, _ = call_filter(request, errors)
    if errors:
        return Response(
            "\n".join(f"{field}: {text}" for field, text in errors.items()) + "\n",
            status_code=422,
            media_type="text/plain; charset=utf-8",
        )
    records = service.iter_calls(dashboard_of(request).db, flt)
    first = await anext(records, None)
    return StreamingResponse(
        csv_stream(first, records),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="calls.csv"'},
    )


# ------------------------------------------------------------------ one call


def timeline(detail: CallDetail) -> list[dict[str, Any]]:
    """Every step of the call in time order, with its offset from the call's arrival:
    received, ringing, agent connected, answered, first agent audio, DTMF both ways,
    clears, transfers, ended (with who hung up)."""
    record = detail.record
    start = as_utc(record.received_at)
    steps: list[tuple[datetime, str, str]] = [(start, "received", f"from {record.source}")]
    if record.answered_at is not None:
        steps.append((as_utc(record.answered_at), "answered", record.codec or ""))
    if record.first_audio_at is not None:
        steps.append((as_utc(record.first_audio_at), "first agent audio", ""))
    for event in detail.events:
        data, at = event.data, as_utc(event.at)
        if event.kind == "ringing":
            steps.append((at, "ringing", f"agent {data.get('agent', '')}"))
        elif event.kind == "agent_connected":
            steps.append((at, "agent connected", f"{data.get('protocol', '')} protocol"))
        elif event.kind == "dtmf":
            steps.append((at, "caller pressed", str(data.get("digit", ""))))
        elif event.kind == "agent_dtmf":
            steps.append((at, "agent sent DTMF", str(data.get("digits", ""))))
        elif event.kind == "agent_clear":
            steps.append((at, "agent cleared its audio", "barge-in"))
        elif event.kind == "transfer":
            what = f"{data.get('status', '')} {data.get('target') or ''}".strip()
            steps.append((at, "transfer", what))
        elif event.kind == "refusal":
            steps.append((at, "refused", str(data.get("cause", ""))))
        elif event.kind == "progress":
            media = ", early media" if data.get("early_media") else ""
            steps.append((at, "callee's side answered", f"SIP {data.get('status', '')}{media}"))
        elif event.kind == "failure":
            steps.append((at, "failed", f"{data.get('reason', '')}: {data.get('detail', '')}"))
    if record.ended_at is not None:
        if record.hangup_by:
            how = f"hung up by {record.hangup_by}"
        elif record.answered_at is None and record.sip_code:
            how = f"answered SIP {record.sip_code} ({record.reason or 'no reason'})"
        else:
            how = ""
        steps.append((as_utc(record.ended_at), "ended", how))
    steps.sort(key=lambda step: step[0])
    return [
        {"at": at, "offset": (at - start).total_seconds(), "what": what, "detail": detail_text}
        for at, what, detail_text in steps
    ]


def transcript(detail: CallDetail) -> list[dict[str, Any]]:
    start = as_utc(detail.record.received_at)
    turns = []
    for event in detail.events:
        if event.kind != "transcript":
            continue
        role = str(event.data.get("role") or "agent")
        turns.append(
            {
                "role": "caller" if role in ("user", "caller") else role,
                "text": str(event.data.get("text") or ""),
                "final": bool(event.data.get("final", True)),
                "at": as_utc(event.at),
                "offset": (as_utc(event.at) - start).total_seconds(),
            }
        )
    return turns


@router.get("/calls/{call_id}")
async def call_page(request: Request, call_id: str, key: SignedIn) -> Response:
    try:
        detail = await service.get_call(dashboard_of(request).db, call_id[:64])
    except NotFound:
        return render(request, "not_found.html", {"what": f"call {call_id}"}, status_code=404)
    metadata = [
        {"at": as_utc(event.at), "data": json.dumps(event.data, indent=2, ensure_ascii=False)}
        for event in detail.events
        if event.kind == "metadata"
    ]
    context = {
        "call": detail.record,
        "quality": detail.record.quality(),
        "timeline": timeline(detail),
        "transcript": transcript(detail),
        "metadata": metadata,
        "transfers": detail.transfers(),
    }
    return render(request, "call.html", context)


@router.get("/calls/{call_id}/recording")
async def call_recording(request: Request, call_id: str, key: SignedIn) -> Response:
    """The call page's player: the recording's WAV (``Range`` works, so it seeks), from
    the same lookup as ``/api/calls/{id}/recording``."""
    try:
        path = await recording_file(
            dashboard_of(request).db, call_id[:64], request.app.state.recordings_dir
        )
    except NotFound:
        return render(
            request, "not_found.html", {"what": f"a recording of {call_id}"}, status_code=404
        )
    return FileResponse(path, media_type="audio/wav", filename=f"{path.stem}.wav")


# ------------------------------------------------------------------ metrics


def _range(request: Request, errors: dict[str, str]) -> tuple[str, datetime, datetime]:
    """The Metrics range: a preset (``24h``, ``7d``, ``30d``, ``90d``) ending now, or
    ``since``/``until`` dates (whole UTC days, ``until`` included)."""
    query = request.query_params
    now = datetime.now(UTC)
    since_text, until_text = query.get("since", ""), query.get("until", "")
    if since_text or until_text:
        since_day = _date(since_text, "since", errors)
        until_day = _date(until_text, "until", errors)
        if not errors:
            until = (
                datetime.combine(until_day, datetime.min.time(), UTC) + timedelta(days=1)
                if until_day
                else now
            )
            since = (
                datetime.combine(since_day, datetime.min.time(), UTC)
                if since_day
                else until - timedelta(days=30)
            )
            if since < until:
                return "custom", since, until
            errors["until"] = "must not be before the start date"
    preset = query.get("range", "7d")
    span = {**RANGES, **RANGES_LONG}.get(preset)
    if span is None:
        preset, span = "7d", RANGES["7d"]
    return preset, now - span, now


@router.get("/stats")
async def metrics_page(request: Request, key: SignedIn) -> Response:
    errors: dict[str, str] = {}
    preset, since, until = _range(request, errors)
    stats = await service.call_stats(dashboard_of(request).db, since, until)
    hourly = until - since <= timedelta(days=1)
    if hourly:
        counts = {point["hour"]: point["count"] for point in stats.by_hour}
        first = since.replace(minute=0, second=0, microsecond=0)
        series = []
        moment = first
        while moment < until:
            series.append((moment.strftime("%H:00"), counts.get(moment.isoformat(), 0)))
            moment += timedelta(hours=1)
        series_label, label_every = "Calls per hour (UTC)", 3
    else:
        counts = {point["date"]: point["count"] for point in stats.by_day}
        series = []
        day = since.date()
        while day <= (until - timedelta(microseconds=1)).date():
            series.append((day.strftime("%m-%d"), counts.get(day.isoformat(), 0)))
            day += timedelta(days=1)
        series_label = "Calls per day (UTC)"
        label_every = max(1, len(series) // 10)
    reasons = [(item["reason"], item["count"]) for item in stats.failure_reasons]
    countries = [(item["country"], item["count"]) for item in stats.callers_by_country[:15]]
    trunks = [(item["trunk"], item["calls"]) for item in stats.trunks]
    agents_chart = [(item["agent"], item["calls"]) for item in stats.agents[:20]]
    context = {
        "stats": stats,
        "preset": preset,
        "since": since,
        "until": until,
        "errors": errors,
        "since_value": request.query_params.get("since", ""),
        "until_value": request.query_params.get("until", ""),
        "series": series,
        "series_label": series_label,
        "series_chart": charts.column_chart(series, title=series_label, label_every=label_every),
        "reasons_chart": charts.bar_list(reasons, title="Failure reasons") if reasons else None,
        "heat_chart": charts.heat_map(stats.by_weekday_hour, title="Peak calling times (UTC)"),
        "countries_chart": (
            charts.bar_list(countries, title="Callers by country") if countries else None
        ),
        "agents_chart": charts.bar_list(agents_chart, title="Calls per agent")
        if agents_chart
        else None,
        "trunks_chart": charts.bar_list(trunks, title="Calls per trunk") if trunks else None,
        "weekdays": charts.WEEKDAYS,
        "ranges": [*RANGES, *RANGES_LONG],
    }
    return render(request, "metrics.html", context, status_code=422 if errors else 200)


# ------------------------------------------------------------------ live calls


async def elsewhere(request: Request) -> list[CallRecord]:
    """The calls in progress the store knows of that this instance does not handle (other
    instances sharing the database), newest first, at most 200 of each state."""
    dashboard = dashboard_of(request)
    owner = dashboard.live.owner if dashboard.live is not None else None
    found: list[CallRecord] = []
    for state in (CallStatus.ACTIVE, CallStatus.RINGING):
        page, _ = await service.list_calls_page(
            dashboard.db, CallFilter(status=state.value), limit=200
        )
        found += [record for record in page if record.owner != owner]
    return found


@router.get("/live")
async def live_page(request: Request, key: SignedIn) -> Response:
    live = dashboard_of(request).live
    context = {"calls": live.snapshot() if live else [], "elsewhere": await elsewhere(request)}
    return render(request, "live.html", context)


@router.get("/live/events")
async def live_events(request: Request, key: SignedIn) -> Response:
    """Server-sent events: ``calls`` (the table's rows as HTML) every second."""
    dashboard = dashboard_of(request)
    live = dashboard.live
    template = dashboard.env.get_template("_live_rows.html")
    csrf = dashboard.signer.csrf_token(request.cookies.get(CSRF_COOKIE, ""))

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        started = dashboard.clock()
        while live is not None and not live.closing:
            html = template.render(calls=live.snapshot(), csrf=csrf)
            data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
            yield f"event: calls\n{data}\n"
            if dashboard.clock() - started > LIVE_STREAM_MAX or await request.is_disconnected():
                return
            await asyncio.sleep(LIVE_INTERVAL)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/live/{call_id}/hangup")
async def live_hangup(request: Request, call_id: str, key: SignedIn) -> Response:
    await read_form(request)
    live = dashboard_of(request).live
    result = None if live is None else live.hang_up(call_id)
    if result is None:
        message, status_code = "That call is not in progress on this server.", 404
    elif not result:
        message, status_code = "That call is not answered yet, or already ending.", 409
    else:
        message, status_code = "Hanging up.", 200
    if request.headers.get("hx-request") == "true":
        return render(request, "_flash.html", {"message": message}, status_code=status_code)
    context = {
        "calls": live.snapshot() if live else [],
        "elsewhere": await elsewhere(request),
        "message": message,
    }
    return render(request, "live.html", context, status_code=status_code)
