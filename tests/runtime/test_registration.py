"""Registration with a real registrar: SIPp as the trunk's registrar on 127.0.0.1, UDP and
TCP (digest challenge verified by SIPp, refresh, un-register at shutdown, 403)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from sipbridge.cli import app
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import InstanceState, RegistrationRecord
from tests.runtime.test_call import NUMBER, UdpClient, records, route_to
from tests.support.settings import BridgeFactory
from tests.support.sipp import start_uas, uas_done

pytestmark = pytest.mark.requires("sipp")

PASSWORD = "hunter2"

_RESPONSE_HEAD = """
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]"""

# recv REGISTER, 401 with a challenge, recv REGISTER with valid credentials (SIPp checks
# them: verifyauth), 200 granting 4 s; the refresh 2 s later (credentials again, with the
# next nonce-count), 200; then the un-REGISTER with Expires: 0 at shutdown, 200.
REGISTRAR = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar">
  <recv request="REGISTER"/>
  <send>
    <![CDATA[

      SIP/2.0 401 Unauthorized{_RESPONSE_HEAD}
      WWW-Authenticate: Digest realm="sipp.test", nonce="[pid]n[call_number]", qop="auth"
      Content-Length: 0

    ]]>
  </send>
  <recv request="REGISTER" crlf="true">
    <action>
      <verifyauth assign_to="valid" username="acct" password="{PASSWORD}"/>
    </action>
  </recv>
  <nop test="valid" next="first_ok"/>
  <send next="end">
    <![CDATA[

      SIP/2.0 403 Forbidden{_RESPONSE_HEAD}
      Content-Length: 0

    ]]>
  </send>
  <label id="first_ok"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK{_RESPONSE_HEAD}
      [last_Contact:];expires=4
      Content-Length: 0

    ]]>
  </send>
  <recv request="REGISTER" timeout="10000">
    <action>
      <verifyauth assign_to="refresh_valid" username="acct" password="{PASSWORD}"/>
      <ereg regexp="Expires: 3600" search_in="msg" check_it="true" assign_to="asked"/>
    </action>
  </recv>
  <nop test="refresh_valid" next="refresh_ok"/>
  <send next="end">
    <![CDATA[

      SIP/2.0 403 Forbidden{_RESPONSE_HEAD}
      Content-Length: 0

    ]]>
  </send>
  <label id="refresh_ok"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK{_RESPONSE_HEAD}
      [last_Contact:];expires=60
      Content-Length: 0

    ]]>
  </send>
  <recv request="REGISTER" timeout="20000">
    <action>
      <ereg regexp="Expires: 0" search_in="msg" check_it="true" assign_to="gone"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK{_RESPONSE_HEAD}
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
  <Reference variables="asked,gone"/>
</scenario>
"""

FORBIDDEN = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar refusing">
  <recv request="REGISTER"/>
  <send>
    <![CDATA[

      SIP/2.0 403 Forbidden{_RESPONSE_HEAD}
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


async def wait_for_state(
    bridge: SipBridgeServer, state: str, timeout: float = 10.0
) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        registration = bridge.registration_sync.view("carrier")
        if registration is not None and registration["state"] == state:
            return registration
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"registration is {registration}, not {state}")
        await asyncio.sleep(0.05)


async def wait_for_stored(db: Database, state: str, timeout: float = 5.0) -> RegistrationRecord:
    """The trunk's registration as the server wrote it to the store, once in ``state``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await service.list_registrations(db)
        if rows and rows[0].state == state:
            return rows[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"stored registrations are {rows}, none {state}")
        await asyncio.sleep(0.05)


_keys = 0


async def api_key(bridge: SipBridgeServer) -> str:
    global _keys
    _keys += 1
    _, key = await service.create_api_key(bridge.db, f"ops{_keys}")
    return key


async def api_trunk(bridge: SipBridgeServer) -> dict[str, object]:
    key = await api_key(bridge)
    base = "http://{}:{}".format(*bridge.http_address)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        one = (await http.get("/api/trunks/carrier")).json()
        listed = (await http.get("/api/trunks")).json()
    assert listed[0]["registration"] == one["registration"]
    return dict(one)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_register_challenge_refresh_unregister(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sipbridge.server")
    registrar, port = await start_uas(tmp_path, REGISTRAR, transport=transport, timeout="40s")
    bridge = await make_bridge()
    try:
        host = f"127.0.0.1:{port}" + (";transport=tcp" if transport == "tcp" else "")
        await service.add_trunk(
            bridge.db, "carrier", host=host, username="acct", password=PASSWORD, register=True
        )
        await bridge.refresh()
        registered = await wait_for_state(bridge, "registered")
        assert registered["last_status"] == 200 and registered["registered_until"]
        assert "trunk=carrier event=registration_ok status=200 expires=4" in caplog.text
        # The refresh comes at half the 4 s granted; the second 200 grants 60 s.
        deadline = asyncio.get_running_loop().time() + 10
        while "expires=60" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.05)
        trunk = await api_trunk(bridge)
        assert trunk["registration"]["state"] == "registered"  # type: ignore[index]
        metrics = bridge.metrics.registry.get_sample_value(
            "sipbridge_trunk_registered", {"trunk": "carrier"}
        )
        assert metrics == 1
        stored = await wait_for_stored(bridge.db, "registered")
        assert stored.instance == bridge.settings.owner_id and stored.last_status == 200
        assert stored.registered_until is not None
        shown = trunk["registrations"]
        assert isinstance(shown, list) and shown[0]["instance"] == stored.instance
    finally:
        await bridge.stop()  # un-REGISTER with Expires: 0
    assert await uas_done(registrar, tmp_path, 10) == 0
    assert "trunk=carrier event=unregistered status=200" in caplog.text
    # The server's last words in the store: the binding is gone.
    async with Database(bridge.settings.db) as db:
        (last,) = await service.list_registrations(db)
    assert (last.state, last.last_status, last.registered_until) == ("unregistered", 200, None)
    assert last.instance_state is InstanceState.STOPPED


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_forbidden_registration_is_failing(
    make_bridge: BridgeFactory,
    tmp_path: Path,
    transport: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sipbridge.server")
    registrar, port = await start_uas(tmp_path, FORBIDDEN, transport=transport, timeout="40s")
    bridge = await make_bridge()
    host = f"127.0.0.1:{port}" + (";transport=tcp" if transport == "tcp" else "")
    await service.add_trunk(
        bridge.db, "carrier", host=host, username="acct", password=PASSWORD, register=True
    )
    await bridge.refresh()
    failing = await wait_for_state(bridge, "failing")
    assert failing["last_status"] == 403 and failing["last_reason"] == "Forbidden"
    assert failing["registered_until"] is None and failing["next_attempt"]
    trunk = await api_trunk(bridge)
    shown = trunk["registration"]
    assert isinstance(shown, dict)
    assert shown["state"] == "failing" and shown["last_status"] == 403
    assert "trunk=carrier event=registration_failed status=403 reason=Forbidden" in caplog.text
    registry = bridge.metrics.registry
    assert registry.get_sample_value("sipbridge_trunk_registered", {"trunk": "carrier"}) == 0
    assert (
        registry.get_sample_value(
            "sipbridge_registration_failures_total", {"trunk": "carrier", "status": "403"}
        )
        == 1
    )
    assert await uas_done(registrar, tmp_path, 10) == 0
    # The CLI asks the running server for what only it knows.
    server = "http://{}:{}".format(*bridge.http_address)
    args = ["trunk", "list", "--db", bridge.settings.db, "--server", server]
    env = {"SIPBRIDGE_API_KEY": await api_key(bridge)}
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[-1] == "REGISTRATION"
    assert "failing 403 Forbidden, retry 20" in row
    # Without --server: each instance's last state, as it wrote it to the database.
    await wait_for_stored(bridge.db, "failing")
    args = ["trunk", "list", "--db", bridge.settings.db]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split()[-1] == "REGISTRATION"
    assert f"{bridge.settings.owner_id}: failing 403 Forbidden, retry 20" in row


@pytest.mark.parametrize("username", ["acct", "4930123456"])
async def test_calls_to_the_registered_contact_route_by_the_to_header(
    make_bridge: BridgeFactory, username: str
) -> None:
    # The registrar (a socket that never answers) sends calls for our binding to
    # sip:<username>@us: the number is in the To header. A username of digits must not be
    # read as the dialed number (+4930123456 would be 404 unknown_number).
    registrar = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    registrar.bind(("127.0.0.1", 0))
    bridge = await make_bridge()
    client = UdpClient(bridge.sip_address)
    try:
        await route_to(bridge, "ws://127.0.0.1:9/", voice=False)  # 480: routed to NUMBER
        await service.add_trunk(
            bridge.db,
            "carrier",
            host=f"127.0.0.1:{registrar.getsockname()[1]}",
            username=username,
            password=PASSWORD,
            register=True,
            allowed_cidrs=["127.0.0.1/32"],
        )
        await bridge.refresh()
        invite = client.invite("z9hG4bK-reg-1", "reg-call-1", 4000).replace(
            f"INVITE sip:{NUMBER}@".encode(), f"INVITE sip:{username}@".encode()
        )
        client.send(invite)
        response = await client.final()
        found = await records(bridge)
    finally:
        client.close()
        registrar.close()
    assert response.status == 480
    assert found[0].to_number == NUMBER and found[0].trunk == "carrier"
