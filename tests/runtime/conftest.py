"""Fixtures shared by the runtime tests."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sipbridge.config import ServeSettings
from sipbridge.runtime.server import SipBridgeServer

BridgeFactory = Callable[..., Awaitable[SipBridgeServer]]


@pytest.fixture
async def make_bridge(tmp_path: Path) -> AsyncIterator[BridgeFactory]:
    started: list[SipBridgeServer] = []

    async def make(**overrides: Any) -> SipBridgeServer:
        low = random.randrange(40000, 59000, 2)
        settings = ServeSettings(
            **{
                "sip_host": "127.0.0.1",
                "sip_port": 0,
                "http_port": 0,
                "rtp_port_min": low,
                "rtp_port_max": low + 100,
                "db": f"sqlite:///{tmp_path / 'calls.db'}",
                "agent_connect_timeout": 2.0,
                "auth_realm": "sipbridge.test",
                **overrides,
            }
        )
        server = SipBridgeServer(settings)
        await server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            await server.stop()
