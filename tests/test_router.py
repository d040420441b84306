from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipbridge.router import RouteResult, route
from sipbridge.store import service
from sipbridge.store.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'router.db'}")
    await database.upgrade()
    await service.add_agent(database, "bot", "wss://bot.example/ws")
    await service.add_agent(database, "mute", "ws://mute.example", voice_enabled=False)
    await service.add_agent(database, "gone", "ws://gone.example")
    await service.add_number(database, "+12025550101", "bot")
    await service.add_number(database, "+12025550102", "mute")
    await service.add_number(database, "+12025550103", "gone")
    await service.remove_agent(database, "gone")
    yield database
    await database.close()


async def test_routes_to_voice_agent(db: Database) -> None:
    result = await route(db, "+12025550101", "+12025550101")
    assert result.status == 200
    assert result.reason == "ok"
    assert result.ok
    assert result.number == "+12025550101"
    assert result.agent is not None
    assert result.agent.name == "bot"
    assert result.agent.url == "wss://bot.example/ws"


@pytest.mark.parametrize("ruri", ["12025550101", "0012025550101", "+1-202-555-0101;user=phone"])
async def test_request_uri_formats(db: Database, ruri: str) -> None:
    result = await route(db, ruri, None)
    assert (result.status, result.number) == (200, "+12025550101")


async def test_falls_back_to_to_user(db: Database) -> None:
    result = await route(db, "s", "+12025550101")
    assert result.status == 200
    assert result.agent is not None and result.agent.name == "bot"


async def test_unknown_number(db: Database) -> None:
    result = await route(db, "+12025550199", None)
    assert result == RouteResult(
        number="+12025550199", agent=None, status=404, reason="unknown_number"
    )
    assert not result.ok


@pytest.mark.parametrize(("ruri", "to_user"), [(None, None), ("bob", "alice"), ("", "xyz")])
async def test_unparseable_number(db: Database, ruri: str | None, to_user: str | None) -> None:
    result = await route(db, ruri, to_user)
    assert result == RouteResult(number=None, agent=None, status=404, reason="unknown_number")


async def test_agent_missing(db: Database) -> None:
    result = await route(db, "+12025550103", None)
    assert result == RouteResult(
        number="+12025550103", agent=None, status=480, reason="agent_missing"
    )


async def test_agent_not_voice_enabled(db: Database) -> None:
    result = await route(db, "+12025550102", None)
    assert result.status == 480
    assert result.reason == "agent_not_voice_enabled"
    assert result.agent is not None and result.agent.name == "mute"


async def test_national_number_read_in_the_default_region(db: Database) -> None:
    result = await route(db, "2025550101", None, "US")
    assert (result.status, result.number) == (200, "+12025550101")


async def test_national_number_without_region_is_recorded_as_received(db: Database) -> None:
    result = await route(db, "2025550101", None)
    assert (result.status, result.reason, result.number) == (404, "unknown_number", "2025550101")


async def test_whether_a_call_is_recorded(db: Database) -> None:
    """The number's own record setting wins; without one, the agent's."""
    await service.add_agent(db, "quiet", "ws://q")
    await service.add_agent(db, "taped", "ws://t", record=True)
    await service.add_number(db, "+12025550111", "quiet")
    await service.add_number(db, "+12025550112", "taped")
    await service.add_number(db, "+12025550113", "taped", record=False)
    await service.add_number(db, "+12025550114", "quiet", record=True)
    decided = {
        number: (await route(db, number, None)).record
        for number in ("+12025550111", "+12025550112", "+12025550113", "+12025550114")
    }
    assert decided == {
        "+12025550111": False,
        "+12025550112": True,
        "+12025550113": False,
        "+12025550114": True,
    }
    await service.update_number(db, "+12025550113", record=None)  # back to the agent's
    assert (await route(db, "+12025550113", None)).record is True
