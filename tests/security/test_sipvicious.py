"""The SIPVicious tools (PyPI ``sipvicious`` 0.3.x) against a running server on 127.0.0.1.

What they send (read from their source and checked here through tests/support/scanners.py):

* ``svmap``: one OPTIONS per host and port (``-m`` changes the method), waits for answers
  and fingerprints the software from ``Server`` / ``User-Agent``;
* ``svwar``: a probe to a random extension to learn the "no such user" answer, then one
  request per extension (REGISTER by default, ``-m INVITE``; CANCEL after 180) and lists
  the extensions answered differently; it stops when a whole answer goes missing;
* ``svcrack``: REGISTER (``-m INVITE``) for one username, then answers each 401 with the
  next password of its range (MD5 only: it reads the first challenge), and reports a
  password on 200.

Every request carries ``User-Agent: friendly-scanner`` (no option changes it), except in
compact mode (``-c``), which sends no User-Agent at all: the disguised runs below. Exit
codes: 0 nothing to report, 30 no answer, 40 found something.

Addresses: the server on 127.0.0.1; 127.0.0.2 is a trunk's network (a carrier, trusted),
every other 127.0.0.x is the internet.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sipbridge.config import ServeSettings
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from tests.runtime.test_call_access import Client
from tests.runtime.test_metrics import sample
from tests.support.agents import EchoAgent
from tests.support.scanners import ToolRun, run_tool
from tests.support.settings import loopback_settings
from tests.support.tap import SourceTap

CARRIER = "127.0.0.2"  # inside the "carrier" trunk's network
ATTACKER = "127.0.0.3"
NUMBERS = ("+12025550100", "+12025550101")  # routed to an agent
SCAN_RANGE = "12025550090-12025550110"  # holds both numbers, dialled without '+'
USERNAME = "1001"  # the digest trunk's credentials
PASSWORD = "4321"
GUESSES = "4300-4399"  # svcrack's range: the password is its 22nd guess

# Limits that never trigger: the same server without its defence, for control runs.
NO_DEFENCE: dict[str, Any] = {
    "scanner_user_agents": (),
    "auth_failure_limit": 10**6,
    "unknown_number_limit": 10**6,
    "flood_rate": 1e6,
    "flood_burst": 10**6,
}

Bridge = tuple[SipBridgeServer, SourceTap]
BridgeFactory = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def make_bridge(tmp_path: Path) -> AsyncIterator[BridgeFactory]:
    """A server with a CIDR trunk (the carrier), a digest trunk (a PBX calling from
    anywhere) and two numbers routed to an echo agent. MD5 is offered first, so that
    svcrack (MD5 only) can answer the challenges: the strongest attack it can make."""
    started: list[SipBridgeServer] = []
    async with EchoAgent() as agent:

        async def make(**overrides: Any) -> Bridge:
            settings = loopback_settings(
                tmp_path / f"calls-{len(started)}.db",
                agent_connect_timeout=2.0,
                auth_algorithms=("MD5", "SHA-256"),
                **overrides,
            )
            server = SipBridgeServer(settings)
            await server.start()
            started.append(server)
            await service.add_trunk(server.db, "carrier", allowed_cidrs=[f"{CARRIER}/32"])
            await service.add_trunk(server.db, "pbx", username=USERNAME, password=PASSWORD)
            await server.reload_trunks()
            await service.add_agent(server.db, "echo", agent.url)
            for number in NUMBERS:
                await service.add_number(server.db, number, "echo")
            return server, SourceTap(server)

        try:
            yield make
        finally:
            for server in started:
                await server.stop()


def stranger() -> str:
    """A fresh internet address for a run that must not inherit another run's ban."""
    return f"127.0.0.{random.randrange(10, 250)}"


def banned_for(server: SipBridgeServer, host: str) -> str | None:
    now = server.loop.time()
    reasons = [b.reason for b in server.guard.bans(now) if b.address == host]
    assert len(reasons) <= 1
    return reasons[0] if reasons else None


async def metrics(server: SipBridgeServer) -> str:
    async with httpx.AsyncClient(base_url="http://{}:{}".format(*server.http_address)) as http:
        return (await http.get("/metrics")).text


async def api_bans(server: SipBridgeServer) -> list[dict[str, Any]]:
    """``GET /api/bans``, once the server has stored its bans (a background write)."""
    _, secret = await service.create_api_key(server.db, f"test-{random.getrandbits(32)}")
    base = "http://{}:{}".format(*server.http_address)
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        for _ in range(100):
            response = await http.get("/api/bans")
            assert response.status_code == 200, response.text
            bans: list[dict[str, Any]] = response.json()
            if bans or not server.pending_tasks:
                return bans
            await asyncio.sleep(0.05)
    return bans


async def gets_nothing(server: SipBridgeServer, host: str) -> bool:
    """A clean INVITE (no scanner User-Agent) from ``host`` gets no answer at all."""
    client = Client(server.sip_address, host)
    try:
        client.send(client.invite(f"z9hG4bK-later-{host}", f"later-{host}", 4000))
        return await client.silent(1.0)
    finally:
        client.close()


def explain(run: ToolRun) -> str:
    return f"{run.tool} exit {run.returncode}, sent {run.methods}:\n{run.output[-3000:]}"


# ---------------------------------------------------------------- svmap


async def test_svmap_finds_no_sipbridge(
    make_bridge: BridgeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sipbridge.bans")
    server, tap = await make_bridge()
    target = server.sip_address

    # Control: from the carrier's address (compact mode, so no scanner User-Agent) the
    # tool works and finds the server, but nothing names the software.
    control = await run_tool("svmap", target, ["-c"], source=CARRIER, workdir=tmp_path)
    assert control.results == {"{}:{}".format(*target): "unknown"}, explain(control)

    # The scanner from the internet: not found, and its address banned at once.
    attack = await run_tool("svmap", target, [], source=ATTACKER, workdir=tmp_path)
    assert attack.user_agents == ["friendly-scanner"] and attack.methods == {"OPTIONS": 1}
    assert attack.results == {} and attack.returncode == 30, explain(attack)
    assert "found nothing" in attack.output
    assert tap[ATTACKER].answered == []
    assert banned_for(server, ATTACKER) == "scanner"
    assert await gets_nothing(server, ATTACKER)

    # Disguised (no User-Agent), from a fresh address: still nothing to find. One
    # OPTIONS is no offence, so no ban: it simply gets no answer.
    disguised_source = stranger()
    disguised = await run_tool("svmap", target, ["-c"], source=disguised_source, workdir=tmp_path)
    assert disguised.user_agents == [""], explain(disguised)
    assert disguised.results == {} and disguised.returncode == 30, explain(disguised)
    assert tap[disguised_source].answered == []

    text = await metrics(server)
    assert sample(text, 'sipbridge_bans_total{reason="scanner"}') == 1
    assert sample(text, "sipbridge_bans_active") == 1
    assert sample(text, "sipbridge_sip_banned_requests_total") >= 1  # the later INVITE
    [logged] = [r.getMessage() for r in caplog.records if "event=source_banned" in r.getMessage()]
    assert logged.startswith(f"event=source_banned source={ATTACKER} reason=scanner until=")
    assert [(b["address"], b["reason"]) for b in await api_bans(server)] == [(ATTACKER, "scanner")]


# ---------------------------------------------------------------- svwar


async def test_svwar_finds_no_numbers(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    server, tap = await make_bridge()
    target = server.sip_address
    scan = ["-m", "INVITE", "-e", SCAN_RANGE, "--maximumtime", "2"]

    # Control: from the carrier (trusted, disguised) the INVITE scan finds exactly the
    # routed numbers, so the numbers are there to be found.
    control = await run_tool("svwar", target, ["-c", *scan], source=CARRIER, workdir=tmp_path)
    assert set(control.results) == {n.lstrip("+") for n in NUMBERS}, explain(control)

    # From the internet with its own User-Agent: banned on the first INVITE, nothing found.
    attack = await run_tool("svwar", target, scan, source=ATTACKER, workdir=tmp_path)
    assert attack.user_agents == ["friendly-scanner"]
    assert attack.results == {}, explain(attack)
    assert tap[ATTACKER].reached_core == 1 and tap[ATTACKER].answered == []
    assert banned_for(server, ATTACKER) == "scanner"
    assert await gets_nothing(server, ATTACKER)

    # Disguised: every INVITE from the internet gets the same 401 (the digest trunk could
    # be calling), so the tool cannot tell numbers apart and gives up at once.
    disguised_source = stranger()
    disguised = await run_tool(
        "svwar", target, ["-c", *scan], source=disguised_source, workdir=tmp_path
    )
    assert disguised.user_agents == [""]
    assert disguised.results == {}, explain(disguised)
    assert disguised.methods.get("INVITE", 0) <= 2, explain(disguised)
    finals = {line for line in tap[disguised_source].answered if not line.startswith(b"SIP/2.0 1")}
    assert finals <= {b"SIP/2.0 401 Unauthorized"}, finals
    # ... and with "--force" it still finds nothing.
    forced = await run_tool(
        "svwar", target, ["-c", "--force", *scan], source=disguised_source, workdir=tmp_path
    )
    assert forced.results == {}, explain(forced)


# ---------------------------------------------------------------- svcrack


def crack_args() -> list[str]:
    # INVITE: a REGISTER (the default) is never challenged, so the tool would only wait.
    # The Request-URI names a routed number, so a right password would place a call.
    return ["-m", "INVITE", "-u", USERNAME, "-r", GUESSES, "--maximumtime", "2"]


def guesses_that_reached_the_core(tap: SourceTap, host: str) -> int:
    return sum(b"\r\nAuthorization:" in data for data in tap[host].core_data)


async def test_svcrack_is_banned_on_its_first_request(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    server, tap = await make_bridge()
    target = server.sip_address
    run = await run_tool(
        "svcrack",
        target,
        [*crack_args(), "--requesturi", f"sip:{NUMBERS[1]}@127.0.0.1"],
        source=ATTACKER,
        workdir=tmp_path,
    )
    assert run.user_agents == ["friendly-scanner"]
    assert run.results == {} and run.returncode == 30, explain(run)  # "no server response"
    assert banned_for(server, ATTACKER) == "scanner"
    assert tap[ATTACKER].reached_core == 1 and tap[ATTACKER].answered == []
    assert guesses_that_reached_the_core(tap, ATTACKER) == 0
    # Later requests from that address get nothing; the same from elsewhere gets its 401.
    assert await gets_nothing(server, ATTACKER)
    assert not await gets_nothing(server, stranger())


async def test_svcrack_disguised_is_banned_for_failed_authentication(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """Compact mode (no User-Agent): the failed digest answers ban it after
    ``auth_failure_limit`` guesses, long before the right password comes up."""
    server, tap = await make_bridge()
    target = server.sip_address
    args = ["-c", *crack_args(), "--requesturi", f"sip:{NUMBERS[1].lstrip('+')}@127.0.0.1"]
    run = await run_tool("svcrack", target, args, source=ATTACKER, workdir=tmp_path)
    assert run.user_agents == [""]
    assert run.results == {}, explain(run)
    assert banned_for(server, ATTACKER) == "auth_failures"
    guesses = guesses_that_reached_the_core(tap, ATTACKER)
    assert guesses == server.settings.auth_failure_limit, explain(run)
    # Its guesses were all refused with a new challenge; after the ban, silence.
    finals = {line for line in tap[ATTACKER].answered if not line.startswith(b"SIP/2.0 1")}
    assert finals == {b"SIP/2.0 401 Unauthorized"}
    assert run.sent > tap[ATTACKER].reached_core  # it kept going, into the void
    assert await gets_nothing(server, ATTACKER)
    text = await metrics(server)
    assert sample(text, 'sipbridge_bans_total{reason="auth_failures"}') == 1
    assert (
        sample(text, "sipbridge_sip_banned_requests_total") >= run.sent - tap[ATTACKER].reached_core
    )


async def test_svcrack_control_without_the_defence_reaches_the_password(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """The same disguised attack against a server whose limits never trigger: the tool's
    22nd guess is accepted (the server goes on with the call: 488, since svcrack's INVITE
    has no SDP, which the tool does not recognise as success). So the ban above is what
    stops it."""
    server, tap = await make_bridge(**NO_DEFENCE)
    target = server.sip_address
    args = ["-c", *crack_args(), "--requesturi", f"sip:{NUMBERS[1].lstrip('+')}@127.0.0.1"]
    run = await run_tool("svcrack", target, args, source=ATTACKER, workdir=tmp_path)
    assert banned_for(server, ATTACKER) is None
    finals = [line for line in tap[ATTACKER].answered if not line.startswith(b"SIP/2.0 1")]
    accepted = [line for line in finals if line != b"SIP/2.0 401 Unauthorized"]
    assert accepted, explain(run)
    # It got there by guessing in order, far beyond what the default limit allows.
    position = int(PASSWORD) - int(GUESSES.split("-")[0]) + 1
    assert guesses_that_reached_the_core(tap, ATTACKER) >= position
    assert position > ServeSettings().auth_failure_limit
