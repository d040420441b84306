"""docs/providers.md: every ``sipbridge`` command in its ``sh`` blocks is one the CLI takes.

The guide tells a new user what to type for Twilio and Telnyx; a renamed option or an
address the trunk validation refuses would leave them with an error on their first step.
The management commands run in order against a scratch database; ``serve`` lines are
checked against ``serve --help``.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.store import service
from sipbridge.store.db import Database

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "providers.md"


def guide_commands() -> list[list[str]]:
    """The guide's commands as argument lists, variable assignments first (``A=b cmd``)."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.strip()
            if line and "sipbridge " in line:
                commands.append(shlex.split(line))
    return commands


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SIPBRIDGE_") and not name.startswith("SIPBRIDGE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / "config"))


def test_guide_commands_run(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'guide.db'}"
    runner = CliRunner()
    commands = guide_commands()
    assert len(commands) >= 7  # serve, agent, number, two Twilio, three Telnyx, updates
    serve_help = runner.invoke(app, ["serve", "--help"], terminal_width=200).stdout
    ran = 0
    for words in commands:
        env = {"SIPBRIDGE_DB": db_url}
        while "=" in words[0]:
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words[0] == "sipbridge", words
        args = words[1:]
        if args[0] == "serve":
            for option in (a for a in args if a.startswith("--")):
                assert option in serve_help, f"serve has no {option}"
            continue
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 0, (args, result.output)
        ran += 1
    assert ran >= 6

    async def read_back() -> dict[str, tuple[list[str], str, bool, str | None]]:
        async with Database(db_url) as db:
            return {
                t.name: (t.allowed_cidrs, t.srtp, t.register, t.password)
                for t in await service.list_trunks(db)
            }

    trunks = asyncio.run(read_back())
    assert set(trunks) == {"twilio", "telnyx", "telnyx-reg"}
    assert "54.172.60.0/23" in trunks["twilio"][0] and trunks["twilio"][1] == "required"
    assert trunks["telnyx"][0] == ["192.76.120.10/32", "64.16.250.10/32"]
    assert trunks["telnyx"][1] == "required"
    assert trunks["telnyx-reg"][2:] == (True, "the-password")
