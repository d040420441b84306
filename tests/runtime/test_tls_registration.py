"""Registration over TLS with a real registrar: Kamailio (tls, auth, registrar, usrloc) on
127.0.0.1 with a certificate from a test CA, digest authentication with a fixed password.

sipbridge trusts the CA through ``--tls-ca`` and registers over TLS (Kamailio's
``ul.dump`` shows the binding); a call to the registered user, sent by SIPp to Kamailio
over UDP, is looked up and relayed over our TLS connection and reaches the agent. Without
the CA the registrar's certificate does not verify: the registration is failing with that
reason, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_agent_client import make_ca_and_cert
from tests.runtime.test_call import SERVICE, records, route_to, sipp_ok
from tests.runtime.test_registration import wait_for_state
from tests.support.agents import EchoAgent
from tests.support.cluster import KAMAILIO
from tests.support.ports import free_port
from tests.support.settings import BridgeFactory
from tests.support.sipp import free_udp_port, run_sipp, wait_for_bye_scenario

pytestmark = pytest.mark.requires("kamailio", "openssl", "sipp", "sipp-pcap")

PASSWORD = "s3cret-tls"
KAMCMD = "/usr/sbin/kamcmd"

# A registrar, and a proxy to the contacts it holds. REGISTER: the source address kept as
# the binding's received address (fix_nated_register), so calls for it go back over the
# connection the REGISTER came on; digest with a fixed password (pv_www_authenticate).
# An INVITE for a registered user, and its ACK (SIPp sends it to us, without a route set):
# lookup, then relay; our BYE (sent back on the TLS connection) to its Request-URI.
_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{udp_port}
listen=tls:127.0.0.1:{tls_port}
enable_tls=yes
tcp_accept_aliases=no

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "tls.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "nathelper.so"

modparam("ctl", "binrpc", "unix:{ctl}")
modparam("tls", "config", "{tls_cfg}")
modparam("nathelper", "received_avp", "$avp(RECEIVED)")
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("registrar", "max_expires", 3600)

request_route {{
	if (is_method("REGISTER")) {{
		if (!pv_www_authenticate("$td", "{password}", "0")) {{
			www_challenge("$td", "0");
			exit;
		}}
		if ($au != "{user}") {{
			sl_send_reply("403", "Forbidden");
			exit;
		}}
		consume_credentials();
		fix_nated_register();
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	if (has_totag()) {{
		lookup("location");  # SIPp's ACK to the user; our BYE to SIPp's contact as it is
		xlog("L_INFO", "relay $rm to $ru via $du\n");
		t_relay();
		exit;
	}}
	if (!lookup("location")) {{
		if (!is_method("ACK")) {{
			sl_send_reply("404", "Not Found");
		}}
		exit;
	}}
	xlog("L_INFO", "relay $rm to $ru via $du\\n");
	t_relay();
}}
"""

_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


@dataclass
class Registrar:
    udp_port: int
    tls_port: int
    ctl: Path
    log: Path

    def bindings(self) -> str:
        """``ul.dump`` through kamcmd: the location table."""
        result = subprocess.run(
            [KAMCMD, "-s", f"unix:{self.ctl}", "ul.dump"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout + result.stderr


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "certs"
    folder.mkdir()
    return make_ca_and_cert(folder)


@pytest.fixture
async def registrar(tmp_path: Path, certs: tuple[Path, Path, Path]) -> AsyncIterator[Registrar]:
    """Kamailio in the foreground (-DD -E), its certificate signed by the test CA."""
    assert KAMAILIO is not None
    _ca, cert, key = certs
    workdir = tmp_path / "kamailio"
    workdir.mkdir()
    found = Registrar(free_udp_port(), free_port(), workdir / "ctl", workdir / "log")
    (workdir / "tls.cfg").write_text(_TLS_CFG.format(key=key, cert=cert))
    (workdir / "kamailio.cfg").write_text(
        _CFG.format(
            udp_port=found.udp_port,
            tls_port=found.tls_port,
            ctl=found.ctl,
            tls_cfg=workdir / "tls.cfg",
            password=PASSWORD,
            user=SERVICE,
        )
    )
    with found.log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            KAMAILIO,
            "-DD",
            "-E",
            "-f",
            str(workdir / "kamailio.cfg"),
            "-Y",
            str(workdir),
            "-m",
            "32",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # listening on TLS
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", found.tls_port)
                writer.close()
                break
            except OSError:
                if process.returncode is not None or asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(found.log.read_text(errors="replace")[-3000:]) from None
                await asyncio.sleep(0.05)
        yield found
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
            if process.returncode is None:
                process.kill()
                await process.wait()


async def add_trunk(bridge: SipBridgeServer, registrar: Registrar) -> None:
    await service.add_trunk(
        bridge.db,
        "carrier",
        host=f"127.0.0.1:{registrar.tls_port};transport=tls",
        username=SERVICE,
        password=PASSWORD,
        register=True,
    )
    await bridge.refresh()


async def test_registers_over_tls_and_takes_a_call_on_that_connection(
    registrar: Registrar,  # before make_bridge: stopped after our un-REGISTER
    make_bridge: BridgeFactory,
    certs: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    ca, cert, key = certs
    bridge = await make_bridge(tls_port=0, tls_cert=str(cert), tls_key=str(key), tls_ca=str(ca))
    # The agent greets and hangs up: a short call, our BYE straight to SIPp's contact.
    async with EchoAgent(greeting=bytes(3200), hangup_after_greeting=True) as agent:
        await route_to(bridge, agent.url)
        await add_trunk(bridge, registrar)
        registered = await wait_for_state(bridge, "registered")
        assert registered["last_status"] == 200
        # The registrar holds our contact, over TLS, received from our connection.
        bindings = await asyncio.to_thread(registrar.bindings)
        tls_port = bridge.streams.tls_address
        assert tls_port is not None
        assert f"sip:{SERVICE}@127.0.0.1:{tls_port[1]};transport=tls" in bindings, bindings
        assert "Received: sip:127.0.0.1:" in bindings, bindings
        # A call to the registered user: SIPp -> Kamailio (UDP) -> us over TLS.
        result = await run_sipp(
            ("127.0.0.1", registrar.udp_port),
            tmp_path,
            service=SERVICE,
            scenario=wait_for_bye_scenario(),
            timeout=20,
        )
        sipp_ok(result)
        assert agent.connected.is_set()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.trunk == "carrier"
    log = registrar.log.read_text(errors="replace")
    assert "relay INVITE to sip:" in log and ";transport=tls via sip:127.0.0.1:" in log
    # The relay went to the connection our REGISTER opened (its source port), not to a
    # new connection to our TLS listener.
    assert f"via sip:127.0.0.1:{tls_port[1]}" not in log


async def test_registrar_certificate_that_does_not_verify_is_failing(
    registrar: Registrar, make_bridge: BridgeFactory, certs: tuple[Path, Path, Path]
) -> None:
    _ca, cert, key = certs
    # No --tls-ca: the registrar's certificate is signed by a CA nobody trusts.
    bridge = await make_bridge(tls_port=0, tls_cert=str(cert), tls_key=str(key))
    started = asyncio.get_running_loop().time()
    await add_trunk(bridge, registrar)
    failing = await wait_for_state(bridge, "failing", timeout=5)
    assert asyncio.get_running_loop().time() - started < 5  # at once, not after Timer F
    assert failing["last_status"] is None
    reason = str(failing["last_reason"])
    assert reason.startswith("tls certificate verify failed:"), reason
    assert "unable to get local issuer certificate" in reason or "self" in reason, reason
    assert failing["next_attempt"] is not None
    assert f"sip:{SERVICE}@" not in await asyncio.to_thread(registrar.bindings)
