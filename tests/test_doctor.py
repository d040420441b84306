"""``sipbridge.doctor``: each check against real sockets, real agents (ws and wss with a
local CA), real databases (SQLite and PostgreSQL, one left at an old revision) and real
certificates made with ``openssl``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from sipbridge import doctor
from sipbridge.codecs import opus as opus_module
from sipbridge.config import ServeSettings
from sipbridge.doctor import (
    Check,
    certificate_not_after,
    check_advertised_address,
    check_agent_url,
    check_codecs,
    check_database,
    check_numbers,
    check_ports,
    check_rtp_ports,
    check_tls,
    check_trunks,
)
from sipbridge.listen import Listener
from sipbridge.store.db import Database
from sipbridge.store.records import AgentRecord, NumberRecord, TrunkRecord
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.support.agents import EchoAgent, SilentTcpServer

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def agent(name: str = "bot", url: str = "ws://127.0.0.1:1/", **fields: Any) -> AgentRecord:
    fields.setdefault("voice_enabled", True)
    return AgentRecord(name=name, urls=[url], created_at=T0, **fields)


def trunk(name: str = "carrier", cidrs: list[str] | None = None, **fields: Any) -> TrunkRecord:
    values: dict[str, Any] = {
        "host": None,
        "username": None,
        "password": None,
        "register": False,
        "max_calls": None,
        "codecs": [],
    }
    values.update(fields)
    return TrunkRecord(name=name, allowed_cidrs=cidrs or [], created_at=T0, **values)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def only(checks: list[Check], status: str) -> list[Check]:
    return [check for check in checks if check.status == status]


# ----------------------------------------------------------------------------- ports


def test_port_in_use_is_a_problem_naming_the_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        listeners = [
            Listener("SIP over UDP", "127.0.0.1", port, "--sip-host", "--sip-port", udp=True),
            Listener("SIP over TCP", "127.0.0.1", port, "--sip-host", "--sip-port"),
            Listener("HTTP", "127.0.0.1", 0, "--http-host", "--http-port"),
        ]
        checks = check_ports(listeners, "127.0.0.1", closed_port())
    assert [c.status for c in checks] == ["ok", "problem", "ok"]
    problem = checks[1]
    assert f"port {port} is already in use" in problem.message
    assert "sipbridge answers" not in problem.message  # nothing answers /healthz
    assert problem.fix is not None and "--sip-port" in problem.fix


@contextlib.contextmanager
def fake_healthz() -> Iterator[int]:
    """A listening socket answering ``/healthz`` as sipbridge does, on a thread."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status":"ok"}' if self.path == "/healthz" else b"{}"
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_running_sipbridge_is_named_as_the_likely_holder() -> None:
    with fake_healthz() as port:
        listeners = [Listener("HTTP", "0.0.0.0", port, "--http-host", "--http-port")]
        [check] = check_ports(listeners, "0.0.0.0", port)
        assert doctor.sipbridge_answers("127.0.0.1", port)
    assert check.status == "problem"
    assert f"port {port} is already in use" in check.message
    assert f"a sipbridge answers /healthz on 127.0.0.1:{port}" in check.message
    assert check.fix is not None and "stop the running sipbridge" in check.fix


def test_rtp_ports_in_use_are_a_warning_naming_them() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    low = base - base % 2
    settings = ServeSettings(sip_host="127.0.0.1", rtp_port_min=low, rtp_port_max=low + 40)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", low))
        check = check_rtp_ports(settings)
    assert check.status == "warning"
    assert f"RTP ports {low} of --rtp-ports {low}-{low + 40}" in check.message
    assert check_rtp_ports(settings).status == "ok"
    assert doctor._rtp_sample(10000, 20000)[0] == 10000
    assert doctor._rtp_sample(10000, 20000)[-1] == 19998
    assert doctor._rtp_sample(10001, 10005) == [10002, 10004]


# ------------------------------------------------------------------- advertised address


def test_private_address_with_public_trunks_is_a_warning_with_the_fix() -> None:
    private = ServeSettings(sip_host="0.0.0.0", public_ip="10.1.2.3")
    check = check_advertised_address(private, [trunk(cidrs=["203.0.113.0/24"])])
    assert check.status == "warning"
    assert "private address 10.1.2.3" in check.message and "carrier" in check.message
    assert check.fix is not None and "--public-ip" in check.fix
    # Trunks on private networks only (a PBX on the LAN): nothing to say.
    assert check_advertised_address(private, [trunk(cidrs=["10.0.0.0/8"])]).status == "ok"
    loopback = ServeSettings(sip_host="127.0.0.1")
    assert check_advertised_address(loopback, []).status == "ok"
    assert check_advertised_address(loopback, [trunk(cidrs=["0.0.0.0/0"])]).status == "warning"
    public = ServeSettings(sip_host="0.0.0.0", public_ip="203.0.113.10")
    assert check_advertised_address(public, [trunk(cidrs=["198.51.100.0/24"])]).status == "ok"


# ------------------------------------------------------------------------- database


async def test_database_behind_head_is_a_problem_and_is_not_migrated(db_url: str) -> None:
    old = Database(db_url)
    try:
        await old.upgrade("0005")
    finally:
        await old.close()
    check, database = await check_database(db_url)
    assert database is not None
    await database.close()
    assert check.status == "problem"
    assert "at revision 0005, behind the latest revision" in check.message
    assert check.fix is not None and check.fix.startswith("sipbridge db upgrade")
    again = Database(db_url)
    try:
        assert await again.current_revision() == "0005"  # doctor only looked
        await again.upgrade()
    finally:
        await again.close()
    check, database = await check_database(db_url)
    assert database is not None
    await database.close()
    assert check.status == "ok" and "latest revision" in check.message


async def test_unreachable_database_and_missing_file(tmp_path: Path) -> None:
    url = f"postgresql://sb:secret@127.0.0.1:{closed_port()}/sb"
    check, database = await check_database(url)
    assert database is None and check.status == "problem"
    assert "cannot reach the database" in check.message and "secret" not in check.message
    check, database = await check_database(f"sqlite:///{tmp_path / 'none.db'}")
    assert database is None and check.status == "problem"
    assert "does not exist yet" in check.message
    assert not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------- agents


async def test_echo_agent_passes_with_its_token() -> None:
    seen: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        seen.append(ws.request.headers.get("Authorization"))
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/agent"
        check = await check_agent_url(agent(url=url, token="s3cret"), url, 2.0)
    assert check.status == "ok", check
    assert "handshake succeeded" in check.message and "with its token" in check.message
    assert seen == ["Bearer s3cret"]


async def test_agent_url_with_nothing_listening() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/"
    check = await check_agent_url(agent(url=url), url, 2.0)
    assert check.status == "problem"
    assert "nothing accepts connections at 127.0.0.1:" in check.message
    assert "Connection refused" in check.message
    assert check.fix is not None and "sipbridge agent update bot --url" in check.fix


async def test_agent_that_refuses_the_handshake() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "forbidden\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never reached")

    async with serve(handler, "127.0.0.1", 0, process_request=refuse) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        check = await check_agent_url(agent(url=url, token="old"), url, 2.0)
    assert check.status == "problem"
    assert "refused the WebSocket handshake with HTTP 403" in check.message
    assert check.fix == "check the agent's token: sipbridge agent update bot --token SECRET"


async def test_port_that_is_no_websocket_server_times_out() -> None:
    async with SilentTcpServer() as silent:
        check = await check_agent_url(agent(url=silent.url), silent.url, 0.5)
    assert check.status == "problem"
    assert "no WebSocket handshake within 0.5 s" in check.message


async def test_wss_certificate_not_in_the_ca_bundle(tmp_path: Path, ca_bundle: Path) -> None:
    ca, cert, key = make_ca_and_cert(tmp_path)
    server_ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ssl.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=server_ssl) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"wss://127.0.0.1:{port}/"
        wrong = await check_agent_url(agent(url=url, ca_bundle=str(ca_bundle)), url, 2.0)
        system = await check_agent_url(agent(url=url), url, 2.0)
        right = await check_agent_url(agent(url=url, ca_bundle=str(ca)), url, 2.0)
    assert wrong.status == "problem"
    assert "the TLS certificate is not valid" in wrong.message
    assert "self-signed" in wrong.message or "unable to get local issuer" in wrong.message
    assert wrong.fix is not None and "sipbridge agent update bot --ca-bundle PEM" in wrong.fix
    assert str(ca_bundle) in wrong.fix
    assert system.status == "problem" and system.fix is not None
    assert "public CA" in system.fix
    assert right.status == "ok" and "TLS certificate valid" in right.message


async def test_agents_are_checked_concurrently() -> None:
    async with SilentTcpServer() as silent:
        agents = [agent(f"a{i}", silent.url) for i in range(4)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        checks = await asyncio.gather(*(check_agent_url(a, silent.url, 0.5) for a in agents))
        elapsed = loop.time() - started
    assert [c.status for c in checks] == ["problem"] * 4
    assert elapsed < 1.5  # four 0.5 s timeouts at once, not one after the other


# ----------------------------------------------------------- numbers, agents, trunks


def test_numbers_routed_to_missing_or_voice_disabled_agents() -> None:
    agents = [agent("bot"), agent("mute", voice_enabled=False), agent("idle")]
    numbers = [
        NumberRecord("+12025550101", "bot"),
        NumberRecord("+12025550102", None),
        NumberRecord("+12025550103", "mute"),
        NumberRecord("2025550104", "bot"),
    ]
    checks = check_numbers(numbers, agents)
    by_subject = {c.subject: c for c in checks}
    assert by_subject["+12025550101"].status == "ok"
    gone = by_subject["+12025550102"]
    assert gone.status == "problem" and "routed to no existing agent" in gone.message
    assert gone.fix == "sipbridge number update +12025550102 --agent NAME"
    mute = by_subject["+12025550103"]
    assert mute.status == "problem" and "not voice-enabled" in mute.message
    assert mute.fix is not None and "sipbridge agent update mute --voice" in mute.fix
    national = by_subject["2025550104"]
    assert national.status == "problem" and "not in E.164 form" in national.message
    assert national.fix is not None and "sipbridge number remove 2025550104" in national.fix
    idle = by_subject["idle"]
    assert idle.status == "info" and "has no number" in idle.message
    # With a single voice-enabled agent the fix names it.
    fix = check_numbers([NumberRecord("+12025550102", None)], [agent("bot")])[0].fix
    assert fix == "sipbridge number update +12025550102 --agent bot"


def test_no_agents_or_numbers_are_problems() -> None:
    checks = check_numbers([], [])
    assert [(c.id, c.status) for c in checks] == [("agents", "problem"), ("numbers", "problem")]


def test_trunk_without_access_rule_is_a_problem() -> None:
    checks = check_trunks(
        [
            trunk("open"),
            trunk("cidr", ["192.0.2.0/24"]),
            trunk("digest", username="u", password="p"),
        ]
    )
    assert [c.status for c in checks] == ["problem", "ok", "ok"]
    assert "has no access rule" in checks[0].message
    assert checks[0].fix is not None and "sipbridge trunk add open --allow CIDR" in checks[0].fix
    [none] = check_trunks([])
    assert none.status == "warning" and "only 127.0.0.1 and ::1 may call" in none.message


def test_registering_trunks_are_admitted_by_address() -> None:
    # Its credentials are ours, for the registrar: they admit no call (operations.md).
    registering = {"username": "u", "password": "p", "register": True}
    checks = check_trunks(
        [
            trunk("by-address", host="192.0.2.10:5070;transport=tcp", **registering),
            trunk("by-name", host="sip.carrier.example", **registering),
            trunk("by-name-cidrs", ["203.0.113.0/24"], host="sip.carrier.example", **registering),
        ]
    )
    assert [c.status for c in checks] == ["ok", "problem", "ok"]
    assert checks[0].message == (
        "trunk by-address admits calls by networks 192.0.2.10/32; "
        "registers with 192.0.2.10:5070;transport=tcp"
    )
    assert "no allowed network" in checks[1].message
    assert "digest" not in checks[2].message


# ------------------------------------------------------------------- codecs and TLS


def test_opus_without_libopus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus_module, "_lib", None)
    monkeypatch.setattr(opus_module.ctypes.util, "find_library", lambda name: None)
    named = check_codecs(ServeSettings(codecs=("opus", "pcmu")))
    assert named.status == "problem"
    assert "--codecs names opus" in named.message
    assert named.fix is not None and "apt-get install libopus0" in named.fix
    default = check_codecs(ServeSettings())
    assert default.status == "warning" and "offering pcmu,pcma,g722" in default.message
    assert check_codecs(ServeSettings(codecs=("pcmu",))).status == "ok"


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def self_signed(folder: Path, days: int) -> tuple[str, str]:
    openssl(
        folder,
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=sip.example"),
        *("-days", str(days), "-keyout", f"key{days}.pem", "-out", f"cert{days}.pem"),
    )
    return str(folder / f"cert{days}.pem"), str(folder / f"key{days}.pem")


def expired(folder: Path) -> tuple[str, str]:
    """A certificate valid in January 2020 only (``openssl ca`` takes explicit dates)."""
    (folder / "ca.cnf").write_text(
        "[ ca ]\ndefault_ca = CA_default\n[ CA_default ]\ndatabase = index.txt\n"
        "new_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\n"
        "[ any ]\ncommonName = supplied\n"
    )
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("01\n")
    openssl(
        folder,
        *("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=old.example"),
        *("-keyout", "old.key", "-out", "old.csr"),
    )
    openssl(
        folder,
        *("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "old.key"),
        *("-in", "old.csr", "-out", "old.pem", "-notext"),
        *("-startdate", "20200101000000Z", "-enddate", "20200201000000Z"),
    )
    return str(folder / "old.pem"), str(folder / "old.key")


def test_tls_certificate_expired_expiring_valid_and_mismatched(tmp_path: Path) -> None:
    old_cert, old_key = expired(tmp_path)
    [check] = check_tls(old_cert, old_key)
    assert check.status == "problem" and "expired on 2020-02-01 00:00 UTC" in check.message
    assert check.fix is not None and "renew" in check.fix
    soon_cert, soon_key = self_signed(tmp_path, 5)
    [check] = check_tls(soon_cert, soon_key)
    assert check.status == "warning" and "(in 4 day(s))" in check.message
    good_cert, good_key = self_signed(tmp_path, 90)
    [check] = check_tls(good_cert, good_key)
    assert check.status == "ok" and "valid until" in check.message
    [mismatch] = check_tls(good_cert, soon_key)
    assert mismatch.status == "problem" and "do not load" in mismatch.message
    missing = check_tls(str(tmp_path / "nope.pem"), good_key)
    assert [c.status for c in missing] == ["problem"] and "cannot be read" in missing[0].message
    assert check_tls(None, None) == []
    # The DER reading agrees with OpenSSL's.
    end = subprocess.run(
        ["openssl", "x509", "-in", good_cert, "-noout", "-enddate"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    der = doctor._first_certificate(good_cert)
    parsed = datetime.strptime(end.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z")
    assert certificate_not_after(der) == parsed.replace(tzinfo=UTC)
    assert certificate_not_after(der) - datetime.now(UTC) > timedelta(days=89)


# ------------------------------------------------------------------------------ all


@pytest.fixture
async def echo_agent() -> AsyncIterator[EchoAgent]:
    async with EchoAgent() as agent_server:
        yield agent_server


async def test_run_checks_on_a_clean_setup(tmp_path: Path, echo_agent: EchoAgent) -> None:
    from sipbridge.cli.serve_command import listeners
    from sipbridge.store import service

    url = f"sqlite:///{tmp_path / 'ok.db'}"
    database = Database(url)
    try:
        await database.upgrade()
        await service.add_agent(database, "echo", [echo_agent.url])
        await service.add_number(database, "+12025550101", "echo")
        await service.add_trunk(database, "local", allowed_cidrs=["127.0.0.1/32"])
    finally:
        await database.close()
    settings = ServeSettings(
        sip_host="127.0.0.1", sip_port=0, http_port=0, db=url, codecs=("pcmu", "pcma")
    )
    checks = await doctor.run_checks(settings, listeners(settings), timeout=2.0)
    assert only(checks, "problem") == [] and only(checks, "warning") == []
    ids = [c.id for c in checks]
    for expected in ("port", "rtp_ports", "codecs", "advertised_address", "database"):
        assert expected in ids
    assert {c.id for c in checks if c.status == "ok"} >= {"agent_url", "number", "trunk"}


def test_check_json_has_the_documented_fields() -> None:
    check = Check("port", "problem", "m", "f", "s")
    assert check.to_json() == {
        "id": "port",
        "subject": "s",
        "status": "problem",
        "message": "m",
        "fix": "f",
    }
    assert doctor.problems([check, Check("x", "warning", "w")]) == 1


async def test_a_real_running_sipbridge_is_named_as_the_holder(make_bridge: Any) -> None:
    bridge = await make_bridge()
    sip_host, sip_port = bridge.sip_address
    http_host, http_port = bridge.http_address
    listeners = [
        Listener("SIP over UDP", sip_host, sip_port, "--sip-host", "--sip-port", udp=True),
        Listener("HTTP", http_host, http_port, "--http-host", "--http-port"),
    ]
    # In a thread: the server answers /healthz on this test's event loop.
    checks = await asyncio.to_thread(check_ports, listeners, http_host, http_port)
    assert [c.status for c in checks] == ["problem", "problem"]
    for check in checks:
        assert "already in use" in check.message
        assert f"a sipbridge answers /healthz on {http_host}:{http_port}" in check.message


async def test_database_at_a_revision_this_version_does_not_know(tmp_path: Path) -> None:
    from sqlalchemy import text

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    database = Database(url)
    try:
        await database.upgrade()
        async with database.engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await database.close()
    check, opened = await check_database(url)
    assert opened is not None
    await opened.close()
    assert check.status == "problem"
    assert "at revision 9999, which this sipbridge does not know" in check.message
