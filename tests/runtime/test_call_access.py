"""Who may call, on real sockets: trunks by source address (several 127.x addresses stand
in for the internet), digest authentication, max_calls, unknown sources, SIPp's auth."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from pathlib import Path

import pytest

from sipbridge.runtime import server as server_module
from sipbridge.sip.auth import digest_response
from sipbridge.sip.message import Response
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import NUMBER, SERVICE, UdpClient, records, route_to, sipp_ok
from tests.support.agents import EchoAgent
from tests.support.settings import BridgeFactory
from tests.support.sipp import challenged_bye, run_sipp

CARRIER_IP = "127.0.0.2"  # a trunk's signalling address
STRANGER_IP = "127.0.0.3"  # anyone else


class Client(UdpClient):
    """The test suite's raw UDP client, from a chosen loopback address."""

    def __init__(self, target: tuple[str, int], host: str) -> None:
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.host = host

    async def silent(self, wait: float = 0.6) -> bool:
        """True when nothing arrives within ``wait`` seconds."""
        try:
            await self.recv(wait)
        except TimeoutError:
            return True
        return False

    def ack(self, invite: bytes, response: Response) -> None:
        """ACK for a non-2xx final response: the INVITE's branch and CSeq number
        (RFC 3261 §17.1.1.3)."""
        head = invite.split(b"\r\n\r\n", 1)[0].decode()
        request_uri = head.split(" ", 2)[1]
        via = re.search(r"^Via: .*$", head, re.M)
        from_ = re.search(r"^From: .*$", head, re.M)
        call_id = re.search(r"^Call-ID: .*$", head, re.M)
        seq = response.cseq.seq
        assert via and from_ and call_id
        self.send(
            (
                f"ACK {request_uri} SIP/2.0\r\n{via.group()}\r\n{from_.group()}\r\n"
                f"To: {response.headers.get('To')}\r\n{call_id.group()}\r\n"
                f"CSeq: {seq} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )


def with_authorization(
    invite: bytes,
    challenge: Response,
    *,
    username: str,
    password: str,
    algorithm: str = "SHA-256",
    branch: str,
    cseq: int = 2,
    uri: str = f"sip:{NUMBER}@127.0.0.1",
) -> bytes:
    """The INVITE again, answering the challenge for ``algorithm`` (a new branch and
    CSeq, RFC 3261 §22.2)."""
    [value] = [
        v for v in challenge.headers.get_lines("WWW-Authenticate") if f"algorithm={algorithm}" in v
    ]
    realm = re.search(r'realm="([^"]*)"', value)
    nonce = re.search(r'nonce="([^"]*)"', value)
    assert realm and nonce
    response = digest_response(
        algorithm=algorithm,
        username=username,
        realm=realm.group(1),
        password=password,
        method="INVITE",
        uri=uri,
        nonce=nonce.group(1),
        nc="00000001",
        cnonce="0a4f113b",
    )
    authorization = (
        f'Authorization: Digest username="{username}", realm="{realm.group(1)}", '
        f'nonce="{nonce.group(1)}", uri="{uri}", response="{response}", '
        f'algorithm={algorithm}, cnonce="0a4f113b", qop=auth, nc=00000001'
    )
    out = re.sub(rb"branch=[^;\r\n]+", f"branch={branch}".encode(), invite, count=1)
    return out.replace(b"CSeq: 1 INVITE", f"CSeq: {cseq} INVITE\r\n{authorization}".encode())


async def hang_up(client: Client, call_id: str, ok: Response, cseq: int = 1) -> None:
    assert ok.status == 200 and ok.to.tag
    client.send(client.in_dialog("ACK", cseq, call_id, ok.to.tag))
    await asyncio.sleep(0.1)
    client.send(client.in_dialog("BYE", cseq + 1, call_id, ok.to.tag))
    bye_ok = await client.final()
    assert bye_ok.status == 200 and bye_ok.cseq.method == "BYE"


def options(client: Client, call_id: str) -> bytes:
    return (
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {client.host}:{client.port};branch=z9hG4bK{call_id};rport\r\n"
        "From: <sip:ping@127.0.0.1>;tag=p1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


# ---------------------------------------------------------------- no trunk


async def test_no_trunk_loopback_only_and_a_warning_at_start(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        bridge = await make_bridge()
    assert any(
        "no trunk configured: accepting calls from 127.0.0.1 and ::1 only" in r.getMessage()
        for r in caplog.records
    )
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = Client(bridge.sip_address, "127.0.0.1")
        try:
            client.send(client.invite("z9hG4bK-lo", "lo-1", 4000))
            await hang_up(client, "lo-1", await client.final())
        finally:
            client.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.trunk is None
    assert record.source is not None and record.source.startswith("127.0.0.1:")


# ---------------------------------------------------------------- source networks


async def test_unknown_source_gets_no_answer_at_all(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    stranger = Client(bridge.sip_address, STRANGER_IP)
    try:
        stranger.send(stranger.invite("z9hG4bK-s1", "s-1", 4000))
        stranger.send(options(stranger, "s-2"))
        stranger.send(b"GARBAGE / SIP/9.9\r\n\r\n")
        stranger.send(stranger.in_dialog("BYE", 2, "s-3", "sometag"))
        assert await stranger.silent()
    finally:
        stranger.close()
    assert await service.list_calls(bridge.db) == []  # scanners fill no table
    assert bridge.metrics.sip_rejected.labels("dropped")._value.get() == 4


async def test_unknown_source_403_with_the_setting(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge(unknown_sources="403")
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    stranger = Client(bridge.sip_address, STRANGER_IP)
    try:
        stranger.send(stranger.invite("z9hG4bK-s1", "s-1", 4000))
        forbidden = await stranger.final()
        stranger.send(options(stranger, "s-2"))
        forbidden_options = await stranger.final()
    finally:
        stranger.close()
    assert forbidden.status == 403 and forbidden.cseq.method == "INVITE"
    assert forbidden_options.status == 403
    for name in ("Server", "User-Agent", "WWW-Authenticate"):
        assert forbidden.headers.get(name) is None


async def test_cidr_trunk_call_goes_through_with_trunk_in_the_record(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=["127.0.0.2/31"])
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        carrier = Client(bridge.sip_address, CARRIER_IP)
        try:
            carrier.send(options(carrier, "ping-1"))
            pong = await carrier.final()
            assert pong.status == 200 and "INVITE" in (pong.headers.get("Allow") or "")
            carrier.send(carrier.invite("z9hG4bK-c1", "c-1", 4002))
            await hang_up(carrier, "c-1", await carrier.final())
        finally:
            carrier.close()
        # 127.0.0.1 is nobody once trunks exist
        local = Client(bridge.sip_address, "127.0.0.1")
        try:
            local.send(local.invite("z9hG4bK-l1", "l-1", 4004))
            assert await local.silent()
        finally:
            local.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.trunk == "carrier"
    assert record.source == f"{CARRIER_IP}:{carrier.port}"
    [call] = agent.calls
    assert call.start is not None and call.start["to"] == NUMBER


async def test_trunks_are_refreshed_from_the_store(
    make_bridge: BridgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "TRUNK_REFRESH", 0.1)
    bridge = await make_bridge()
    client = Client(bridge.sip_address, CARRIER_IP)
    try:
        client.send(options(client, "r-1"))
        assert await client.silent(0.3)  # no trunk yet: only 127.0.0.1
        await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
        await asyncio.sleep(0.4)
        client.send(options(client, "r-2"))
        assert (await client.final(2)).status == 200
        await service.remove_trunk(bridge.db, "carrier")
        await asyncio.sleep(0.4)
        client.send(options(client, "r-3"))
        assert await client.silent(0.3)
    finally:
        client.close()


# ---------------------------------------------------------------- digest


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
async def test_digest_trunk_401_then_authenticated_call(
    make_bridge: BridgeFactory, algorithm: str
) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "acme", username="acme", password="s3cret pass")
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = Client(bridge.sip_address, STRANGER_IP)
        try:
            invite = client.invite("z9hG4bK-d1", "d-1", 4006)
            client.send(invite)
            challenge = await client.final()
            assert challenge.status == 401
            values = challenge.headers.get_lines("WWW-Authenticate")
            assert [re.search(r"algorithm=([\w-]+)", v).group(1) for v in values] == [  # type: ignore[union-attr]
                "SHA-256",
                "MD5",
            ]
            assert all('realm="sipbridge.test"' in v and 'qop="auth"' in v for v in values)
            client.ack(invite, challenge)
            retry = with_authorization(
                invite,
                challenge,
                username="acme",
                password="s3cret pass",
                algorithm=algorithm,
                branch="z9hG4bK-d2",
            )
            client.send(retry)
            ok = await client.final()
            await hang_up(client, "d-1", ok, cseq=2)
            # The same credentials again (a replay, even on a new transaction): refused.
            client.send(retry.replace(b"z9hG4bK-d2", b"z9hG4bK-d3").replace(b"d-1", b"d-9"))
            replayed = await client.final()
            assert replayed.status == 401
        finally:
            client.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.trunk == "acme"
    assert record.sip_call_id == "d-1"


async def test_wrong_password_stays_rejected(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "acme", username="acme", password="right")
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = Client(bridge.sip_address, STRANGER_IP)
        try:
            invite = client.invite("z9hG4bK-w1", "w-1", 4008)
            client.send(invite)
            challenge = await client.final()
            assert challenge.status == 401
            client.ack(invite, challenge)
            for attempt in range(3):
                retry = with_authorization(
                    invite,
                    challenge,
                    username="acme",
                    password=f"guess{attempt}",
                    branch=f"z9hG4bK-w{attempt + 2}",
                    cseq=attempt + 2,
                )
                client.send(retry)
                again = await client.final()
                assert again.status == 401
                assert "stale" not in (again.headers.get("WWW-Authenticate") or "")
                client.ack(retry, again)
                challenge = again
        finally:
            client.close()
        assert agent.calls == []
    assert await service.list_calls(bridge.db) == []


async def test_both_cidr_and_digest_required(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await service.add_trunk(
        bridge.db, "strict", allowed_cidrs=[f"{CARRIER_IP}/32"], username="u", password="p"
    )
    await bridge.reload_trunks()
    stranger = Client(bridge.sip_address, STRANGER_IP)
    carrier = Client(bridge.sip_address, CARRIER_IP)
    try:
        stranger.send(stranger.invite("z9hG4bK-b1", "b-1", 4010))
        assert await stranger.silent()
        carrier.send(carrier.invite("z9hG4bK-b2", "b-2", 4012))
        assert (await carrier.final()).status == 401
        carrier.send(options(carrier, "b-3"))
        assert (await carrier.final()).status == 200  # health pings need no credentials
    finally:
        stranger.close()
        carrier.close()


# ---------------------------------------------------------------- max_calls


async def test_max_calls_per_trunk_gives_503_with_retry_after(make_bridge: BridgeFactory) -> None:
    bridge = await make_bridge()
    await service.add_trunk(bridge.db, "small", allowed_cidrs=[f"{CARRIER_IP}/32"], max_calls=1)
    await service.add_trunk(bridge.db, "other", allowed_cidrs=[f"{STRANGER_IP}/32"])
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        client = Client(bridge.sip_address, CARRIER_IP)
        other = Client(bridge.sip_address, STRANGER_IP)
        try:
            client.send(client.invite("z9hG4bK-m1", "m-1", 4014))
            first = await client.final()
            assert first.status == 200 and first.to.tag
            client.send(client.in_dialog("ACK", 1, "m-1", first.to.tag))
            client.send(client.invite("z9hG4bK-m2", "m-2", 4016))
            busy = await client.final()
            assert busy.status == 503 and busy.cseq.method == "INVITE"
            assert busy.headers.get("Retry-After") == "5"
            # another trunk is not limited by this one
            other.send(other.invite("z9hG4bK-o1", "o-1", 4018))
            await hang_up(other, "o-1", await other.final())
            # once the first call ends, the trunk has room again
            client.send(client.in_dialog("BYE", 2, "m-1", first.to.tag))
            assert (await client.final()).status == 200
            for _ in range(50):
                if not bridge.calls:
                    break
                await asyncio.sleep(0.05)
            client.send(client.invite("z9hG4bK-m3", "m-3", 4020))
            await hang_up(client, "m-3", await client.final())
        finally:
            client.close()
            other.close()
    found = {r.sip_call_id: r for r in await records(bridge, 4)}
    assert (found["m-2"].status, found["m-2"].reason, found["m-2"].sip_code) == (
        CallStatus.FAILED,
        "trunk_busy",
        503,
    )
    assert found["m-2"].trunk == "small" and found["o-1"].trunk == "other"
    assert found["m-1"].status is CallStatus.ANSWERED and found["m-3"].trunk == "small"


# ---------------------------------------------------------------- behind a proxy

PROXY_IP = "127.0.0.1"  # stands in for Kamailio (--trusted-proxy 127.0.0.1)
TRUNK_BEHIND = (CARRIER_IP, 5099)  # the trunk's real source, relayed by the proxy
STRANGER_BEHIND = ("127.0.0.9", 5099)  # someone else relayed by the same proxy


def relay(data: bytes, origin: tuple[str, int]) -> bytes:
    """``data`` as the proxy forwards it: with X-Sipbridge-Source naming ``origin`` at the
    end of the header section (Kamailio's ``append_hf``)."""
    head, blank, body = data.partition(b"\r\n\r\n")
    header = f"\r\nX-Sipbridge-Source: {origin[0]}:{origin[1]};transport=udp"
    return head + header.encode() + blank + body


class ProxyClient(Client):
    """The proxy's socket relaying one real source's requests (responses come back to it
    along the Via)."""

    def __init__(self, target: tuple[str, int], origin: tuple[str, int]) -> None:
        super().__init__(target, PROXY_IP)
        self.origin = origin

    def send(self, data: bytes) -> None:
        super().send(relay(data, self.origin))


async def test_a_trunk_behind_a_trusted_proxy_is_admitted_and_a_stranger_refused(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sipbridge.server"):
        bridge = await make_bridge(trusted_proxies=(PROXY_IP,))
    [listening] = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert listening.endswith(f" trusted_proxies={PROXY_IP}")
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        probe = Client(bridge.sip_address, PROXY_IP)  # the proxy's own OPTIONS probe
        trunk = ProxyClient(bridge.sip_address, TRUNK_BEHIND)
        stranger = ProxyClient(bridge.sip_address, STRANGER_BEHIND)
        try:
            probe.send(options(probe, "probe-1"))
            assert (await probe.final()).status == 200
            trunk.send(trunk.invite("z9hG4bK-t1", "t-1", 4030))
            await hang_up(trunk, "t-1", await trunk.final())  # ACK and BYE relayed too
            stranger.send(stranger.invite("z9hG4bK-x1", "x-1", 4032))
            stranger.send(options(stranger, "x-2"))
            assert await stranger.silent()
        finally:
            probe.close()
            trunk.close()
            stranger.close()
    [record] = await records(bridge)
    assert (record.sip_call_id, record.status, record.trunk) == (
        "t-1",
        CallStatus.ANSWERED,
        "carrier",
    )
    assert record.source == f"{CARRIER_IP}:{TRUNK_BEHIND[1]}"  # the real source
    [call] = agent.calls
    assert call.start is not None
    assert not any(name.lower() == "x-sipbridge-source" for name in call.start["sip_headers"])
    assert bridge.guard.bans(bridge.loop.time()) == []


async def test_a_broad_trusted_network_is_warned_about_at_start(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
        await make_bridge(trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    [line] = [r.getMessage() for r in caplog.records if "trusted_proxy_broad" in r.getMessage()]
    assert line.startswith("event=trusted_proxy_broad networks=10.0.0.0/8: ")


async def test_the_header_from_anyone_but_a_trusted_proxy_is_ignored(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await make_bridge(trusted_proxies=(PROXY_IP,))
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    forger = Client(bridge.sip_address, STRANGER_IP)  # claims to relay the trunk
    try:
        with caplog.at_level(logging.DEBUG, logger="sipbridge.server"):
            forger.send(relay(forger.invite("z9hG4bK-f1", "f-1", 4034), TRUNK_BEHIND))
            assert await forger.silent()
    finally:
        forger.close()
    messages = [r.getMessage() for r in caplog.records]
    assert (
        f"event=source_header_ignored source={STRANGER_IP}:{forger.port}: not a trusted proxy"
        in messages
    )
    assert any(
        f"event=request_rejected source={STRANGER_IP}:{forger.port} method=INVITE" in m
        and "reason=unknown_source" in m
        for m in messages
    )
    assert await service.list_calls(bridge.db) == []


async def test_a_malformed_header_from_the_proxy_gets_400_and_a_record(
    make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bridge = await make_bridge(trusted_proxies=(PROXY_IP,))
    await service.add_trunk(bridge.db, "carrier", allowed_cidrs=[f"{CARRIER_IP}/32"])
    await bridge.reload_trunks()
    proxy = Client(bridge.sip_address, PROXY_IP)
    try:
        invite = proxy.invite("z9hG4bK-b1", "b-1", 4036)
        broken = invite.replace(b"\r\n\r\n", b"\r\nX-Sipbridge-Source: 127.0.0.2\r\n\r\n", 1)
        with caplog.at_level(logging.WARNING, logger="sipbridge.server"):
            proxy.send(broken)
            response = await proxy.final()
            proxy.ack(broken, response)
    finally:
        proxy.close()
    assert response.status == 400
    assert response.reason == "Bad X-Sipbridge-Source (not ip:port[;transport=udp|tcp|tls])"
    [record] = await records(bridge)
    assert (record.sip_call_id, record.status, record.reason, record.sip_code) == (
        "b-1",
        CallStatus.FAILED,
        "bad_source_header",
        400,
    )
    [line] = [r.getMessage() for r in caplog.records if "bad_source_header" in r.getMessage()]
    assert f"proxy={PROXY_IP}:{proxy.port}" in line and "detail=not_ip:port" in line


# ---------------------------------------------------------------- SIPp


_AUTH_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="digest call">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
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
      m=audio [media_port] RTP/AVP 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      [authentication]
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="500"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:+15005550006@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@pytest.mark.sipp
@pytest.mark.requires("sipp")
async def test_sipp_digest_authentication(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    """SIPp's own digest code: SIPp 3.6 knows MD5 only and reads only the first
    challenge, so MD5 is offered first here (``--auth-algorithms md5,sha-256``)."""
    bridge = await make_bridge(auth_algorithms=("MD5", "SHA-256"))
    await service.add_trunk(bridge.db, "sipp", username="sippuser", password="sipppass")
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        result = await run_sipp(
            bridge.sip_address,
            tmp_path,
            service=SERVICE,
            scenario=_AUTH_SCENARIO,
            extra=("-au", "sippuser", "-ap", "sipppass"),
        )
    sipp_ok(result)
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.trunk == "sipp"
    assert record.reason == "caller_hangup"


@pytest.mark.sipp
@pytest.mark.requires("sipp")
async def test_sipp_wrong_password_gets_no_call(make_bridge: BridgeFactory, tmp_path: Path) -> None:
    bridge = await make_bridge(auth_algorithms=("MD5",))
    await service.add_trunk(bridge.db, "sipp", username="sippuser", password="sipppass")
    await bridge.reload_trunks()
    result = await run_sipp(
        bridge.sip_address,
        tmp_path,
        service=SERVICE,
        scenario=_AUTH_SCENARIO,
        extra=("-au", "sippuser", "-ap", "wrong"),
        timeout=5,
    )
    assert result.returncode != 0  # a second 401 where the scenario expects 200
    assert await service.list_calls(bridge.db) == []


# The same caller, answered; then it challenges our BYE and checks the digest of the next.
_CHALLENGES_OUR_BYE = (
    _AUTH_SCENARIO[: _AUTH_SCENARIO.index('  <pause milliseconds="500"/>')]
    + challenged_bye("sippuser", "sipppass")
    + "</scenario>\n"
)


@pytest.mark.sipp
@pytest.mark.requires("sipp")
async def test_a_trunk_that_challenges_our_bye_gets_its_credentials(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    # RFC 3261 §22.2 on an inbound call: the trunk's username and password answer a
    # challenge to our in-dialog request (a PBX authenticates both ways).
    bridge = await make_bridge(auth_algorithms=("MD5", "SHA-256"))
    await service.add_trunk(bridge.db, "sipp", username="sippuser", password="sipppass")
    await bridge.reload_trunks()
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        sipp = asyncio.ensure_future(
            run_sipp(
                bridge.sip_address,
                tmp_path,
                service=SERVICE,
                scenario=_CHALLENGES_OUR_BYE,
                extra=("-au", "sippuser", "-ap", "sipppass"),
            )
        )
        deadline = asyncio.get_running_loop().time() + 10
        while not any(call.hang_up() for call in list(bridge.calls.values())):
            assert asyncio.get_running_loop().time() < deadline and not sipp.done()
            await asyncio.sleep(0.05)
        result = await sipp
    sipp_ok(result)  # SIPp verified the digest of our second BYE
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.hangup_by == "operator"
