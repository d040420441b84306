"""deploy/cluster/run-local.sh: Kamailio and two instances on one PostgreSQL database,
started and stopped by the script (docs/scaling.md, "Trying it on one machine")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import InstanceState
from tests.support.cluster import KAMAILIO, answers_options
from tests.support.ports import free_ports
from tests.support.sipp import free_udp_port

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cluster" / "run-local.sh"

pytestmark = pytest.mark.requires("kamailio")


async def test_run_local_starts_and_stops_a_cluster(tmp_path: Path, database_url: str) -> None:
    proxy = free_udp_port()
    sip_base = free_ports(3)  # instances on sip_base + 1 and + 2
    http_base = free_ports(3)
    rtp_base = random.randrange(40000, 59000, 200)
    assert KAMAILIO is not None
    env = {
        **os.environ,
        "PROXY_PORT": str(proxy),
        "SIP_BASE": str(sip_base),
        "HTTP_BASE": str(http_base),
        "RTP_BASE": str(rtp_base),
        "RTP_PORTS_EACH": "20",
        "INSTANCE_TIMEOUT": "5",
        "SIPBRIDGE": f"{sys.executable} -m sipbridge",
        "KAMAILIO": KAMAILIO,
        "RUN_DIR": str(tmp_path / "run"),
    }
    process = await asyncio.create_subprocess_exec(
        "bash",
        str(SCRIPT),
        database_url,
        "2",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, cleaned up below
    )
    db = Database(database_url)
    try:
        await answers_options(proxy, 30)
        for port in (sip_base + 1, sip_base + 2):
            await answers_options(port, 30)

        async def both_running() -> bool:
            with contextlib.suppress(Exception):  # the schema may not be there yet
                rows = await service.list_instances(db)
                return sorted((i.id, i.state) for i in rows) == [
                    ("local-1", InstanceState.RUNNING),
                    ("local-2", InstanceState.RUNNING),
                ]
            return False

        deadline = time.monotonic() + 20
        while not await both_running():
            assert time.monotonic() < deadline, "the two instances never registered"
            await asyncio.sleep(0.2)
        rows = {i.id: i for i in await service.list_instances(db)}
        assert rows["local-1"].sip_address == f"127.0.0.1:{sip_base + 1}"
        listing = (tmp_path / "run" / "dispatcher.list").read_text()
        assert listing.splitlines() == [
            f"1 sip:127.0.0.1:{sip_base + 1} 0 0",
            f"1 sip:127.0.0.1:{sip_base + 2} 0 0",
        ]

        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err.decode(errors="replace")
        rows = {i.id: i for i in await service.list_instances(db)}
        assert {i.state for i in rows.values()} == {InstanceState.STOPPED}
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        await db.close()
