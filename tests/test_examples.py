import importlib.util
import json
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class FakeSocket:
    """Just enough of a websockets connection for the echo agent's handler."""

    id = "websocket-id"

    def __init__(self, messages: list[str | bytes]) -> None:
        self.messages = messages
        self.sent: list[str | bytes] = []

    def __aiter__(self) -> "FakeSocket":
        return self

    async def __anext__(self) -> str | bytes:
        if not self.messages:
            raise StopAsyncIteration
        return self.messages.pop(0)

    async def send(self, message: str | bytes) -> None:
        self.sent.append(message)


async def test_echo_agent_logs_the_call_id(caplog: pytest.LogCaptureFixture) -> None:
    echo = _load("echo_agent")
    start = {
        "type": "start",
        "call_id": "call-1",
        "from": "+12025550100",
        "to": "+12025550101",
        "media_format": {"sample_rate": 8000},
    }
    ws = FakeSocket([json.dumps(start), b"\x00\x00", json.dumps({"type": "stop", "reason": "x"})])
    with caplog.at_level(logging.INFO, logger="echo_agent"):
        await echo.handle(ws)
    assert "call call-1 ended: x" in caplog.text
    assert "websocket-id" not in caplog.text
    assert b"\x00\x00" in ws.sent
