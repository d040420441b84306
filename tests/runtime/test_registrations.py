"""runtime/registrations.py on a started server, with a UDP socket on 127.0.0.1 as the
trunk's registrar: a registering trunk's REGISTER goes out, each answer reaches the API
view, the metrics, the log and the store; a removed trunk un-registers; a store write
the database refuses is kept and written at the next retry. (tests/runtime/
test_registration.py: the whole exchange with SIPp as a digest registrar.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sipbridge.runtime import registrations as registrations_module
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from sipbridge.store.records import RegistrationRecord
from tests.support.settings import BridgeFactory


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Un-REGISTERs this registrar leaves unanswered hold the server's stop this long."""
    monkeypatch.setattr(registrations_module, "UNREGISTER_GRACE", 0.3)


class Registrar(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 that plays the registrar: what it receives, in order."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data.decode(), addr))

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)


@pytest.fixture
async def registrar() -> AsyncIterator[Registrar]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Registrar, local_addr=("127.0.0.1", 0)
    )
    try:
        yield protocol
    finally:
        transport.close()


async def receive(registrar: Registrar) -> tuple[str, tuple[str, int]]:
    return await asyncio.wait_for(registrar.received.get(), 5)


def ok(register: str, expires: int) -> bytes:
    """A 200 OK to ``register`` granting ``expires`` seconds to its Contact."""
    wanted = ("via:", "from:", "call-id:", "cseq:")
    lines = [line for line in register.split("\r\n") if line.lower().startswith(wanted)]
    to = next(line for line in register.split("\r\n") if line.lower().startswith("to:"))
    contact = next(line for line in register.split("\r\n") if line.lower().startswith("contact:"))
    head = ["SIP/2.0 200 OK", *lines, f"{to};tag=reg1", f"{contact};expires={expires}"]
    return ("\r\n".join([*head, "Content-Length: 0", "", ""])).encode()


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.02)
    return result


async def stored(bridge: SipBridgeServer, state: str) -> RegistrationRecord:
    async def check() -> RegistrationRecord | None:
        rows = await service.list_registrations(bridge.db)
        return rows[0] if rows and rows[0].state == state else None

    found: RegistrationRecord = await until(check)
    return found


def gauge(bridge: SipBridgeServer) -> float | None:
    registry = bridge.metrics.registry
    return registry.get_sample_value("sipbridge_trunk_registered", {"trunk": "carrier"})


async def add_carrier(bridge: SipBridgeServer, registrar: Registrar) -> None:
    host = f"127.0.0.1:{registrar.port}"
    await service.add_trunk(
        bridge.db, "carrier", host=host, username="acct", password="pw", register=True
    )


async def test_a_registering_trunk_follows_its_registrar_into_api_metrics_log_and_store(
    make_bridge: BridgeFactory, registrar: Registrar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipbridge.server")
    bridge = await make_bridge()
    sync = bridge.registration_sync
    assert sync.view("carrier") is None  # not a registering trunk (yet)
    await add_carrier(bridge, registrar)
    await bridge.reload_trunks()  # configure(): the new trunk registers
    register, peer = await receive(registrar)
    assert register.startswith("REGISTER sip:127.0.0.1") and "sip:acct@" in register
    view = sync.view("carrier")
    assert view is not None and view["state"] == "registering" and view["failures"] == 0
    assert gauge(bridge) == 0
    await stored(bridge, "registering")

    registrar.sendto(ok(register, 60), peer)

    async def registered() -> bool:
        shown = sync.view("carrier")
        return shown is not None and shown["state"] == "registered"

    await until(registered)
    view = sync.view("carrier")
    assert view is not None and view["last_status"] == 200 and view["registered_until"]
    assert gauge(bridge) == 1
    assert "trunk=carrier event=registration_ok status=200 expires=60" in caplog.text
    row = await stored(bridge, "registered")
    assert row.instance == bridge.settings.owner_id and row.registered_until is not None

    # The trunk removed: its binding is removed (Expires: 0), its gauge goes.
    bridge.apply_trunks([])
    unregister, _ = await receive(registrar)
    assert unregister.startswith("REGISTER ") and "Expires: 0" in unregister
    assert gauge(bridge) is None


async def test_a_refused_store_write_is_kept_until_the_next_retry(
    make_bridge: BridgeFactory,
    registrar: Registrar,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = await make_bridge()
    sync = bridge.registration_sync
    save = service.save_registration

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("database gone")

    monkeypatch.setattr(registrations_module.service, "save_registration", refuse)
    await add_carrier(bridge, registrar)
    await bridge.reload_trunks()
    assert sync.writer is not None
    await sync.writer
    assert sync.dirty == {"carrier"}
    assert "event=registration_write_failed trunk=carrier error=database gone" in caplog.text
    assert await service.list_registrations(bridge.db) == []

    monkeypatch.setattr(registrations_module.service, "save_registration", save)
    sync.retry()  # what a trunk refresh that reached the database does
    assert sync.writer is not None
    await sync.writer
    assert not sync.dirty
    await stored(bridge, "registering")


async def test_unregister_waits_for_the_registrar_no_longer_than_its_grace(
    make_bridge: BridgeFactory, registrar: Registrar
) -> None:
    bridge = await make_bridge()
    await add_carrier(bridge, registrar)
    await bridge.reload_trunks()
    register, peer = await receive(registrar)
    registrar.sendto(ok(register, 60), peer)
    await stored(bridge, "registered")
    started = bridge.loop.time()
    await bridge.registration_sync.unregister()  # the registrar never answers this one
    assert 0.3 <= bridge.loop.time() - started < 3.0
    unregister, _ = await receive(registrar)
    assert "Expires: 0" in unregister
