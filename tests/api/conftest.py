"""Fixtures for the API tests: an app on the ``db`` fixture (tests/conftest.py) and clients.

``client`` carries a valid API key; ``anon`` carries none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from sipbridge.api import create_app
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus

# A Monday, 09:00 UTC
T0 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)


@pytest.fixture
async def api_key(db: Database) -> str:
    _record, secret = await service.create_api_key(db, "tests")
    return secret


@pytest.fixture
def app(db: Database) -> FastAPI:
    return create_app(db)


def make_client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
    )


@pytest.fixture
async def client(app: FastAPI, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app, api_key) as http:
        yield http


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as http:
        yield http


def call(
    call_id: str,
    received_at: datetime,
    *,
    status: CallStatus = CallStatus.ANSWERED,
    from_number: str | None = "+12025550101",
    to_number: str | None = "+12025550199",
    agent: str | None = "support",
    answer_after: float | None = None,
    first_audio_after: float | None = None,
    duration: float | None = None,
    reason: str | None = None,
    sip_code: int | None = None,
) -> CallRecord:
    """A call record; answered calls get an answer time and an end time."""
    answered_at = None if answer_after is None else received_at + timedelta(seconds=answer_after)
    ended_at = None
    first_audio_at = None
    if answered_at is not None and duration is not None:
        ended_at = answered_at + timedelta(seconds=duration)
    if answered_at is not None and first_audio_after is not None:
        first_audio_at = answered_at + timedelta(seconds=first_audio_after)
    return CallRecord(
        id=call_id,
        sip_call_id=f"{call_id}@test",
        from_number=from_number,
        to_number=to_number,
        agent=agent,
        received_at=received_at,
        answered_at=answered_at,
        ended_at=ended_at,
        first_audio_at=first_audio_at,
        status=status,
        reason=reason,
        sip_code=sip_code,
        codec="pcmu" if status is CallStatus.ANSWERED else None,
    )


# The small known dataset of the calls and stats tests:
#   c1 Mon 09:00 US caller -> support, answered after 1 s, 60 s long, first audio 0.5 s
#   c2 Mon 10:00 GB caller -> support, failed (agent_unreachable, 503)
#   c3 Tue 09:00 US caller -> sales, answered after 2 s, 30 s long, first audio 0.25 s
#   c4 Tue 10:00 anonymous -> sales, cancelled (caller_cancelled, 487)
def known_dataset() -> list[CallRecord]:
    return [
        call(
            "c1",
            T0,
            answer_after=1,
            first_audio_after=0.5,
            duration=60,
            reason="caller_hangup",
            sip_code=200,
        ),
        call(
            "c2",
            T0 + timedelta(hours=1),
            status=CallStatus.FAILED,
            from_number="+442079460000",
            reason="agent_unreachable",
            sip_code=503,
        ),
        call(
            "c3",
            T0 + timedelta(days=1),
            from_number="+12025550102",
            to_number="+12025550188",
            agent="sales",
            answer_after=2,
            first_audio_after=0.25,
            duration=30,
            reason="agent_hangup",
            sip_code=200,
        ),
        call(
            "c4",
            T0 + timedelta(days=1, hours=1),
            status=CallStatus.CANCELLED,
            from_number="anonymous",
            to_number="+12025550188",
            agent="sales",
            reason="caller_cancelled",
            sip_code=487,
        ),
    ]


@pytest.fixture
async def known_calls(db: Database) -> list[CallRecord]:
    records = known_dataset()
    for record in records:
        await service.save_call(db, record)
    return records
