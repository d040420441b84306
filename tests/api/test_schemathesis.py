"""Property-based run of the ``schemathesis`` CLI against a real uvicorn server.

The server runs in a thread on 127.0.0.1 (a free port) with a fresh SQLite database and
an API key; schemathesis generates requests from ``/openapi.json`` (valid and invalid)
and checks that no answer is a 5xx and that every status code, content type, header and
body matches the document. Bounded to well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from sipbridge.api import create_app
from sipbridge.runtime.outbound import DialParams, DialRefused
from sipbridge.store import service
from sipbridge.store.db import Database

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
MAX_EXAMPLES = "25"
TIMEOUT_S = 90


def schemathesis_cli() -> str:
    local = Path(sys.executable).parent / "schemathesis"
    found = str(local) if local.exists() else shutil.which("schemathesis")
    assert found, "the schemathesis CLI is missing (pip install -e '.[test]')"
    return found


async def prepare(url: str) -> str:
    db = Database(url)
    try:
        await db.upgrade()
        _record, secret = await service.create_api_key(db, "schemathesis")
    finally:
        await db.close()
    return secret


class ThreadedServer:
    """uvicorn on an already bound socket, in its own thread and event loop."""

    def __init__(self, url: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.db = Database(url)
        # POST /api/calls needs a SIP server; this one knows no trunk (its body is checked)
        # and has no call in progress (POST /api/calls/{id}/hangup: 404).
        app = create_app(self.db, dial=_no_such_trunk, live=_NoCalls())  # type: ignore[arg-type]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # uvicorn's own loop factory (uvloop when installed), as `sipbridge serve` runs it;
        # a plain asyncio loop in a thread made this run ten times slower.
        with asyncio.Runner(loop_factory=self.server.config.get_loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        try:
            await self.server.serve(sockets=[self.sock])
        finally:
            await self.db.close()

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


class _NoCalls:
    """The live call table of a server with no call up."""

    def hang_up(self, call_id: str) -> bool | None:
        return None


async def _no_such_trunk(params: DialParams) -> str:
    raise DialRefused(404, "unknown_trunk", f"no trunk named {params.trunk!r}")


def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schemathesis.db'}"
    key = asyncio.run(prepare(url))
    command = [
        schemathesis_cli(),
        "run",
        "--header",
        f"Authorization: Bearer {key}",
        "--max-examples",
        MAX_EXAMPLES,
        "--generation-database",
        "none",
        "--checks",
        CHECKS,
        "--request-timeout",
        "10",
        "--no-color",
    ]
    seed = os.environ.get("SIPBRIDGE_SCHEMATHESIS_SEED")
    if seed:
        command += ["--seed", seed]
    started = time.monotonic()
    with ThreadedServer(url) as server:
        command.append(f"http://127.0.0.1:{server.port}/openapi.json")
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "passed" in output
    assert time.monotonic() - started < TIMEOUT_S
