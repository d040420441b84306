"""Two ``sipbridge serve`` processes behind Kamailio (deploy/kamailio/kamailio.cfg) on one
PostgreSQL database, driven by SIPp on 127.0.0.1 (docs/scaling.md).

One test, in phases, so the processes start once (the CI budget is tight): calls spread
over both instances and are answered with audio; an instance at its ``--max-calls`` is
skipped (its probes and INVITEs get 503); ``kill -9`` of an instance with a call up: new
calls succeed on the survivor at once, and the survivor records the dead one's call as
``interrupted`` / ``instance_lost``; the dead one restarts with its id; a drain lets its
call end normally while new calls go to the other; a clean exit marks an instance
``stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus, InstanceState
from tests.support.agents import EchoAgent
from tests.support.cluster import KAMAILIO, answers_options
from tests.support.ports import free_port
from tests.support.sipp import SIPP, SIPP_SHARE, expect_error_scenario, free_udp_port

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"
NUMBER = "+12025550101"
SERVICE = "12025550101"
# Short on purpose: the whole module must stay within its CI budget.
PING_INTERVAL = 1  # Kamailio's OPTIONS probes, seconds
FR_TIMER_MS = 1000  # an instance that does not answer an INVITE: the next one after this
INSTANCE_TIMEOUT = 3.0  # seconds without a heartbeat before a peer declares an instance lost
DRAIN_TIMEOUT = 6  # a drain hangs up what is left after this (the 60 s calls SIPp leaves)

pytestmark = [pytest.mark.sipp, pytest.mark.requires("sipp", "sipp-pcap", "kamailio")]

# INVITE through the proxy; ACK and BYE follow the route set the proxy recorded (rrs,
# [routes]) to the instance's Contact ([next_url]): loose routing, RFC 3261 §16.12.
_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="call through the proxy">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="pcap/g711a.pcap"/>
    </action>
  </nop>
  <pause milliseconds="{hold_ms}"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


@dataclass
class Instance:
    name: str
    sip_port: int
    process: asyncio.subprocess.Process
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll ``check`` until true; the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - start


class Cluster:
    """The processes of one test: two instances, Kamailio, SIPp runs."""

    def __init__(self, workdir: Path, db_url: str) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.instances: dict[str, Instance] = {}
        self.kamailio: asyncio.subprocess.Process | None = None
        self.kamailio_log = workdir / "kamailio.log"
        self.proxy_port = 0
        self.sipp: list[asyncio.subprocess.Process] = []
        self.rtp_low = 30000 + (os.getpid() % 200) * 100
        pcap = workdir / "pcap"
        if not pcap.exists():
            pcap.symlink_to(SIPP_SHARE)

    async def start_instance(
        self, name: str, *, max_calls: int, extra: tuple[str, ...] = ()
    ) -> Instance:
        """Start instance ``name``; again on its port and RTP range after it ended."""
        earlier = self.instances.get(name)
        port = earlier.sip_port if earlier is not None else free_udp_port()
        index = list(self.instances).index(name) if earlier else len(self.instances)
        low = self.rtp_low + 40 * index  # disjoint RTP ranges
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sipbridge",
                "serve",
                "--sip-host",
                "127.0.0.1",
                "--sip-port",
                str(port),
                "--http-port",
                str(free_port()),
                "--rtp-ports",
                f"{low}-{low + 38}",
                "--instance-id",
                name,
                "--instance-timeout",
                str(INSTANCE_TIMEOUT),
                "--max-calls",
                str(max_calls),
                "--drain-timeout",
                str(DRAIN_TIMEOUT),
                # Not under test here: a CI machine shared with other jobs must not make
                # an instance refuse calls as overloaded (media/overload.py).
                "--overload-lag-ms",
                "1000",
                "--overload-cpu",
                "1.0",
                "--spool",
                str(self.workdir / f"{name}.spool"),
                "--log-level",
                "info",
                *extra,
                env={**os.environ, "SIPBRIDGE_DB": self.db_url},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        instance = Instance(name, port, process, log)
        self.instances[name] = instance
        return instance

    async def start_kamailio(self, ports: list[int] | None = None) -> None:
        """Kamailio in front of the instances (or of ``ports``)."""
        assert KAMAILIO is not None
        if ports is None:
            ports = [i.sip_port for i in self.instances.values()]
        listing = self.workdir / "dispatcher.list"
        listing.write_text("".join(f"1 sip:127.0.0.1:{port} 0 0\n" for port in ports))
        self.proxy_port = free_udp_port()
        with self.kamailio_log.open("wb") as out:
            # Its own configuration, port and run folder, in the foreground (-DD), logging
            # to stderr (-E): the Debian package's service plays no part.
            self.kamailio = await asyncio.create_subprocess_exec(
                KAMAILIO,
                "-DD",
                "-E",
                "-f",
                str(KAMAILIO_CFG),
                "-Y",
                str(self.workdir),
                "-A",
                f"LISTEN=udp:127.0.0.1:{self.proxy_port}",
                "-A",
                f'DISPATCHER_LIST="{listing}"',
                "-A",
                f"PING_INTERVAL={PING_INTERVAL}",
                "-A",
                f"FR_TIMER_MS={FR_TIMER_MS}",
                "-A",
                "CHILDREN=2",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                # Its own process group: Kamailio forks its workers, and a SIGKILL of the
                # main process alone would leave them running (holding the port).
                start_new_session=True,
            )
        await answers_options(self.proxy_port, 10)

    async def call(
        self,
        hold_ms: int,
        *,
        calls: int = 1,
        wait: bool = True,
        source: str = "127.0.0.1",
        scenario_text: str | None = None,
    ) -> int | None:
        """SIPp ``calls`` calls through the proxy from ``source``, each held ``hold_ms``
        (or ``scenario_text``); its exit code (0: every call succeeded), or None when
        ``wait`` is False (left running)."""
        assert SIPP is not None
        n = len(self.sipp)
        scenario = self.workdir / f"call-{n}.xml"
        scenario.write_text(scenario_text or _SCENARIO.replace("{hold_ms}", str(hold_ms)))
        process = await asyncio.create_subprocess_exec(
            SIPP,
            f"127.0.0.1:{self.proxy_port}",
            "-sf",
            str(scenario),
            "-s",
            SERVICE,
            "-m",
            str(calls),
            "-l",
            str(calls),
            "-r",
            "20",
            "-i",
            source,
            "-mi",
            source,
            "-p",
            str(free_udp_port()),
            "-mp",
            str(free_udp_port()),
            "-timeout",
            "20s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.workdir / f"sipp-{n}-errors.log"),
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.sipp.append(process)
        if not wait:
            return None
        return await asyncio.wait_for(process.wait(), 30)

    def logs(self) -> str:
        parts = [f"--- {i.name}\n{i.tail()}" for i in self.instances.values()]
        if self.kamailio_log.exists():
            parts.append("--- kamailio\n" + self.kamailio_log.read_text(errors="replace")[-3000:])
        for errors in sorted(self.workdir.glob("sipp-*-errors.log")):
            parts.append(f"--- {errors.name}\n" + errors.read_text(errors="replace")[-1500:])
        return "\n".join(parts)

    async def close(self) -> None:
        processes = [*self.sipp, *(i.process for i in self.instances.values())]
        kamailio = self.kamailio
        if kamailio is not None and kamailio.returncode is None:
            # SIGTERM: the main process stops its workers; then the whole group, in case.
            with contextlib.suppress(ProcessLookupError):
                kamailio.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kamailio.wait(), 5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(kamailio.pid, signal.SIGKILL)
            await kamailio.wait()
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for process in processes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)


async def calls_by_id(db: Database) -> dict[str, CallRecord]:
    return {c.id: c for c in await service.list_calls(db, limit=200)}


async def test_spread_max_calls_kill_restart_and_drain_behind_kamailio(
    tmp_path: Path, database_url: str
) -> None:
    db = Database(database_url)
    await db.upgrade()
    cluster = Cluster(tmp_path, database_url)
    try:
        async with EchoAgent() as agent:
            await service.add_agent(db, "echo", agent.url, voice_enabled=True)
            await service.add_number(db, NUMBER, "echo")
            # "b" takes one call at a time: the proxy must skip it when it is busy.
            a = await cluster.start_instance("a", max_calls=10)
            b = await cluster.start_instance("b", max_calls=1)
            await asyncio.gather(answers_options(a.sip_port, 30), answers_options(b.sip_port, 30))
            await cluster.start_kamailio()

            try:
                await run_phases(cluster, db, agent, a, b)
            except BaseException:
                print(cluster.logs())
                raise
    finally:
        await cluster.close()
        await db.close()


async def run_phases(
    cluster: Cluster, db: Database, agent: EchoAgent, a: Instance, b: Instance
) -> None:
    # 1. Two calls at once through the proxy: round-robin puts one on each instance, and
    #    both are answered with audio both ways.
    assert await cluster.call(1500, calls=2) == 0, "spread calls failed"

    async def idle() -> bool:
        calls = await calls_by_id(db)
        return len(calls) == 2 and not any(c.status.is_open for c in calls.values())

    await wait_for(idle, 10, "the two calls recorded as ended")
    spread = list((await calls_by_id(db)).values())
    assert sorted(c.owner or "" for c in spread) == ["a", "b"], spread
    for record in spread:
        assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
        assert record.codec == "pcma" and record.sip_code == 200
        assert (record.packets_in or 0) > 0 and (record.packets_out or 0) > 0, record
    assert len(agent.calls) == 2 and all(call.audio for call in agent.calls)

    # 2. Long calls until "b" holds one (it is then at its --max-calls) ...
    async def open_calls() -> list[CallRecord]:
        return [c for c in (await calls_by_id(db)).values() if c.status is CallStatus.ACTIVE]

    # ("b" answered the proxy's probes 503 while its one call was up: it is back in the
    # rotation at the next probe.)
    await asyncio.sleep(PING_INTERVAL * 1.5)
    for count in (1, 2, 3):
        await cluster.call(60_000, wait=False)

        async def up(count: int = count) -> bool:
            return len(await open_calls()) == count

        await wait_for(up, 10, f"{count} long call(s) active")
        if any(c.owner == "b" for c in await open_calls()):
            break
    [held_by_b] = [c for c in await open_calls() if c.owner == "b"]
    # ... then new calls skip it: its probes answer 503 (out of the rotation), and a call
    # the proxy sends there before the next probe gets 503 and goes on to "a".
    before = set(await calls_by_id(db))
    for _ in range(3):
        assert await cluster.call(300) == 0, "a call while b was full failed"

    async def ended() -> bool:
        new = [c for c in (await calls_by_id(db)).values() if c.id not in before]
        return not any(c.status.is_open for c in new)

    await wait_for(ended, 10, "the calls while b was full recorded as ended")
    new = [c for c in (await calls_by_id(db)).values() if c.id not in before]
    answered = [c for c in new if c.status is CallStatus.ANSWERED]
    assert len(answered) == 3 and {c.owner for c in answered} == {"a"}, new
    refused = [c for c in new if c.owner == "b"]
    assert all(c.reason == "server_busy" and c.sip_code == 503 for c in refused), refused

    # 3. kill -9 "b" with its call up: new calls succeed on "a" at once (the proxy fails
    #    over after FR_TIMER_MS, and its probes take "b" out within PING_INTERVAL) ...
    b.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await b.process.wait()
    before = set(await calls_by_id(db))
    for _ in range(2):
        started = time.monotonic()
        assert await cluster.call(200) == 0, "a call after the kill failed"
        assert time.monotonic() - started < FR_TIMER_MS / 1000 + 3

    async def new_ended() -> bool:
        new = [c for c in (await calls_by_id(db)).values() if c.id not in before]
        return len(new) == 2 and not any(c.status.is_open for c in new)

    await wait_for(new_ended, 10, "the calls after the kill recorded as ended")
    new = [c for c in (await calls_by_id(db)).values() if c.id not in before]
    assert {c.owner for c in new} == {"a"}, new
    assert all(c.status is CallStatus.ANSWERED for c in new), new

    # ... and "a" records the dead instance's call as lost.
    async def recorded_lost() -> bool:
        return (await calls_by_id(db))[held_by_b.id].status is CallStatus.INTERRUPTED

    await wait_for(recorded_lost, INSTANCE_TIMEOUT + 6, "b's call closed by a")
    lost_after = time.monotonic() - killed
    lost_call = (await calls_by_id(db))[held_by_b.id]
    assert lost_call.reason == "instance_lost" and lost_call.owner == "b"
    assert lost_call.hangup_by == "server" and lost_call.duration_s is not None
    rows = {i.id: i for i in await service.list_instances(db)}
    assert rows["b"].state is InstanceState.LOST
    assert (rows["b"].lost_by, rows["b"].lost_calls) == ("a", 1)
    assert rows["b"].sip_address == f"127.0.0.1:{b.sip_port}"
    assert INSTANCE_TIMEOUT - 1 < lost_after < INSTANCE_TIMEOUT + 6

    # 4. "b" comes back with the same id: running again, and the proxy's probes take it
    #    back into the rotation.
    b = await cluster.start_instance("b", max_calls=10)
    await answers_options(b.sip_port, 30)

    async def b_running() -> bool:
        return (await service.get_instance(db, "b")).state is InstanceState.RUNNING

    await wait_for(b_running, 10, "b running again")
    await asyncio.sleep(PING_INTERVAL * 1.5)

    # 5. Drain "b" with a call up: the call goes on to its normal end, new calls go to
    #    "a", and "b" exits 0 once its call has ended, its row stopped.
    for _attempt in range(3):
        before = set(await calls_by_id(db))
        await cluster.call(4000, wait=False)

        async def one_more(before: set[str] = before) -> bool:
            calls = await calls_by_id(db)
            return any(c.status is CallStatus.ACTIVE for i, c in calls.items() if i not in before)

        await wait_for(one_more, 10, "a 4 s call active")
        [draining_call] = [c for i, c in (await calls_by_id(db)).items() if i not in before]
        if draining_call.owner == "b":
            break
    assert draining_call.owner == "b", "no call reached the restarted b"
    b.process.send_signal(signal.SIGTERM)

    async def b_draining() -> bool:
        return (await service.get_instance(db, "b")).state is InstanceState.DRAINING

    await wait_for(b_draining, 3, "b's row draining")
    before = set(await calls_by_id(db))
    for _ in range(2):
        assert await cluster.call(200) == 0, "a call while b drained failed"
    assert await asyncio.wait_for(b.process.wait(), 15) == 0, b.tail()

    async def b_done() -> bool:
        return (await calls_by_id(db))[draining_call.id].status is CallStatus.ANSWERED

    await wait_for(b_done, 5, "the drained call recorded")
    ended = (await calls_by_id(db))[draining_call.id]
    assert ended.reason == "caller_hangup" and ended.hangup_by == "caller", ended
    answered = [
        c
        for i, c in (await calls_by_id(db)).items()
        if i not in before and c.status is CallStatus.ANSWERED
    ]
    assert len(answered) == 2 and {c.owner for c in answered} == {"a"}, answered
    assert (await service.get_instance(db, "b")).state is InstanceState.STOPPED

    # 6. "a" stops too (what SIPp left up is hung up at the drain timeout): every call
    #    closed, every row stopped.
    for process in cluster.sipp:
        if process.returncode is None:
            process.kill()
    a.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(a.process.wait(), DRAIN_TIMEOUT + 10) == 0
    rows = {i.id: i for i in await service.list_instances(db)}
    assert rows["a"].state is InstanceState.STOPPED
    assert not [c for c in (await calls_by_id(db)).values() if c.status.is_open]


async def test_trunk_allowlists_see_the_real_source_through_the_proxy(
    tmp_path: Path, database_url: str
) -> None:
    """An instance that trusts the proxy (--trusted-proxy) admits a trunk by the address
    the call really comes from (X-Sipbridge-Source), and refuses a stranger, although
    both reach it from the proxy's address. Loopback has room for three hosts: the proxy
    on 127.0.0.1, the trunk on 127.0.0.2, the stranger on 127.0.0.3."""
    db = Database(database_url)
    await db.upgrade()
    cluster = Cluster(tmp_path, database_url)
    try:
        async with EchoAgent() as agent:
            await service.add_agent(db, "echo", agent.url, voice_enabled=True)
            await service.add_number(db, NUMBER, "echo")
            await service.add_trunk(db, "carrier", allowed_cidrs=["127.0.0.2/32"])
            only = await cluster.start_instance(
                "only",
                max_calls=10,
                extra=("--trusted-proxy", "127.0.0.1", "--reject-unknown", "403"),
            )
            # Up before the proxy's first probe, or the proxy takes it out until the next.
            await answers_options(only.sip_port, 30)
            await cluster.start_kamailio()
            try:
                await answers_options(cluster.proxy_port, 10)
                # The proxy's own probes (no header) are answered: it keeps the instance.
                await asyncio.sleep(PING_INTERVAL * 1.5)
                assert await cluster.call(300, source="127.0.0.2") == 0, "the trunk's call"
                # A source matching no trunk: 403 (--reject-unknown 403), no call record.
                stranger = expect_error_scenario(403)
                assert await cluster.call(0, source="127.0.0.3", scenario_text=stranger) == 0

                async def recorded() -> bool:
                    calls = list((await calls_by_id(db)).values())
                    return len(calls) == 1 and not calls[0].status.is_open

                await wait_for(recorded, 10, "the trunk's call recorded")
            except BaseException:
                print(cluster.logs())
                raise
        [trunk_call] = await service.list_calls(db)
        assert trunk_call.status is CallStatus.ANSWERED and trunk_call.trunk == "carrier"
        assert (trunk_call.source or "").startswith("127.0.0.2:"), trunk_call.source
        assert trunk_call.owner == "only" and (trunk_call.packets_in or 0) > 0
        assert only.process.returncode is None
    finally:
        await cluster.close()
        await db.close()


class FakeInstance(asyncio.DatagramProtocol):
    """A UDP peer in the dispatcher list: answers OPTIONS 200 and every INVITE with
    ``status`` (486), and keeps the INVITEs it got, as bytes."""

    def __init__(self, status: bytes = b"486 Busy Here") -> None:
        self.status = status
        self.invites: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is no asyncio.DatagramTransport subclass: no isinstance.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        method = head[0].split(b" ", 1)[0]
        if method not in (b"OPTIONS", b"INVITE"):
            return
        if method == b"INVITE":
            self.invites.append(data)
        copied = [
            line
            for line in head[1:]
            if line.split(b":", 1)[0].strip().lower()
            in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")
        ]
        status = b"200 OK" if method == b"OPTIONS" else self.status
        response = b"\r\n".join([b"SIP/2.0 " + status, *copied, b"Content-Length: 0", b"", b""])
        assert self.transport is not None
        self.transport.sendto(response, addr)


async def test_the_proxy_sets_the_real_source_and_leaves_the_sdp_alone(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    transport, fake = await loop.create_datagram_endpoint(FakeInstance, local_addr=("127.0.0.1", 0))
    cluster = Cluster(tmp_path, "")
    try:
        await cluster.start_kamailio([transport.get_extra_info("sockname")[1]])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            port = sock.getsockname()[1]
            body = (
                b"v=0\r\no=- 1 1 IN IP4 192.0.2.55\r\ns=-\r\nc=IN IP4 192.0.2.55\r\n"
                b"t=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            )
            invite = (
                f"INVITE sip:12025550101@127.0.0.1:{cluster.proxy_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-src1\r\n"
                f"From: <sip:+15005550006@127.0.0.1:{port}>;tag=s1\r\n"
                "To: <sip:12025550101@127.0.0.1>\r\n"
                f"Call-ID: source-{port}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
                # A forged source: the proxy must drop it.
                "X-Sipbridge-Source: 203.0.113.66:5060;transport=udp\r\n"
                "Content-Type: application/sdp\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sock.sendto(invite, ("127.0.0.1", cluster.proxy_port))
            final = b""
            deadline = time.monotonic() + 5
            while not final.startswith(b"SIP/2.0 486") and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    final = await asyncio.wait_for(loop.sock_recv(sock, 65535), 0.5)
        assert final.startswith(b"SIP/2.0 486"), (final, cluster.logs())
        [forwarded] = fake.invites
        head, forwarded_body = forwarded.split(b"\r\n\r\n", 1)
        sources = [
            line for line in head.split(b"\r\n") if line.lower().startswith(b"x-sipbridge-source")
        ]
        assert sources == [f"X-Sipbridge-Source: 127.0.0.1:{port};transport=udp".encode()]
        assert f"Record-Route: <sip:127.0.0.1:{cluster.proxy_port};lr>".encode() in head
        assert forwarded_body == body  # the SDP untouched: media goes straight to the caller
    finally:
        transport.close()
        await cluster.close()


async def test_a_call_refused_with_503_fails_over_with_one_source_header(
    tmp_path: Path, database_url: str
) -> None:
    """An instance whose probes say 200 but which refuses an INVITE with 503 (it became
    overloaded or full between two probes): the proxy retries the next instance, and that
    request carries the real source once, as on the first try (a second copy added in the
    failure route would make the instance refuse it with 400 bad_source_header)."""
    loop = asyncio.get_running_loop()
    transport, refusing = await loop.create_datagram_endpoint(
        lambda: FakeInstance(b"503 Service Unavailable"), local_addr=("127.0.0.1", 0)
    )
    db = Database(database_url)
    await db.upgrade()
    cluster = Cluster(tmp_path, database_url)
    try:
        async with EchoAgent() as agent:
            await service.add_agent(db, "echo", agent.url, voice_enabled=True)
            await service.add_number(db, NUMBER, "echo")
            real = await cluster.start_instance(
                "real", max_calls=10, extra=("--trusted-proxy", "127.0.0.1")
            )
            await answers_options(real.sip_port, 20)
            await cluster.start_kamailio([transport.get_extra_info("sockname")[1], real.sip_port])
            try:
                await asyncio.sleep(PING_INTERVAL * 1.5)  # both destinations probed up
                # Round-robin: about every other call meets the refusing one first.
                assert await cluster.call(200, calls=4) == 0, "every call answered"

                async def recorded() -> bool:
                    calls = list((await calls_by_id(db)).values())
                    return len(calls) == 4 and not any(c.status.is_open for c in calls)

                await wait_for(recorded, 10, "four calls recorded")
            except BaseException:
                print(cluster.logs())
                raise
        assert refusing.invites, "no call was sent to the refusing instance first"
        calls = list((await calls_by_id(db)).values())
        assert {c.status for c in calls} == {CallStatus.ANSWERED}, [c.reason for c in calls]
        assert all((c.source or "").startswith("127.0.0.1:") for c in calls)
    finally:
        transport.close()
        await cluster.close()
        await db.close()
