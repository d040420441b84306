"""Prometheus metrics, health and readiness served by a running server."""

from __future__ import annotations

import asyncio

import httpx

from sipbridge.runtime.metrics import Metrics
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.guard import GuardLimits, SourceGuard
from tests.runtime.test_call import UdpClient, records, route_to
from tests.support.agents import EchoAgent


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")


def test_guard_counts_are_exposed_without_per_packet_calls() -> None:
    metrics = Metrics()
    guard = SourceGuard(GuardLimits(rate=1.0, burst=1))
    clock = [0.0]
    metrics.watch_guard(guard, lambda: clock[0])
    guard.admit("192.0.2.1", 0.0)
    guard.admit("192.0.2.1", 0.0)  # over the rate: banned, dropped
    guard.admit("192.0.2.1", 0.0)  # banned: dropped
    guard.ban("198.51.100.0/24", "manual", 0.0, duration=10.0)
    value = metrics.registry.get_sample_value
    assert value("sipbridge_sip_banned_requests_total") == 2
    assert value("sipbridge_sip_throttled_requests_total") == 0
    assert value("sipbridge_bans_active") == 2
    clock[0] = 11.0  # the manual ban has ended
    assert value("sipbridge_bans_active") == 1


def test_each_server_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.rtp_packets.labels("in").inc(5)
    assert b.registry.get_sample_value("sipbridge_rtp_packets_total", {"direction": "in"}) in (
        None,
        0.0,
    )
    assert a.registry.get_sample_value("sipbridge_rtp_packets_total", {"direction": "in"}) == 5


async def test_metrics_health_and_readiness_over_http(bridge: SipBridgeServer) -> None:
    base = "http://{}:{}".format(*bridge.http_address)
    async with EchoAgent(greeting=b"\x01\x00" * 800) as agent:
        await route_to(bridge, agent.url)
        client = UdpClient(bridge.sip_address)
        try:
            client.send(client.invite("z9hG4bK-m1", "metrics-1", 4020))
            ok = await client.final()
            assert ok.status == 200 and ok.to.tag
            client.send(client.in_dialog("ACK", 1, "metrics-1", ok.to.tag))
            async with httpx.AsyncClient(base_url=base) as http:
                during = (await http.get("/metrics")).text
            await asyncio.sleep(0.3)
            client.send(client.in_dialog("BYE", 2, "metrics-1", ok.to.tag))
            assert (await client.final()).status == 200
            client.send(
                client.invite("z9hG4bK-m2", "metrics-2", 4022).replace(
                    b"+12025550101@", b"+12025550199@"
                )
            )
            assert (await client.final()).status == 404
            client.send(b"\x00junk")
        finally:
            client.close()
        found = await records(bridge, 2)
    answered = next(r for r in found if r.sip_call_id == "metrics-1")
    assert answered.first_audio_at is not None  # the greeting
    assert sample(during, "sipbridge_active_calls") == 1.0
    async with httpx.AsyncClient(base_url=base) as http:
        metrics = (await http.get("/metrics")).text
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
        bridge.draining = True
        not_ready = await http.get("/readyz")
        bridge.draining = False
    assert sample(metrics, "sipbridge_active_calls") == 0.0
    assert sample(metrics, 'sipbridge_calls_total{reason="caller_hangup",status="answered"}') == 1
    assert sample(metrics, 'sipbridge_calls_total{reason="unknown_number",status="failed"}') == 1
    assert sample(metrics, "sipbridge_call_setup_seconds_count") == 1
    # No caller RTP in this call: no MOS was measured, so none is observed.
    assert "sipbridge_call_mos_count" not in metrics
    assert sample(metrics, "sipbridge_agent_connect_seconds_count") == 1
    assert sample(metrics, "sipbridge_agent_first_audio_seconds_count") == 1
    assert sample(metrics, 'sipbridge_rtp_packets_total{direction="out"}') >= 10
    assert sample(metrics, 'sipbridge_sip_requests_rejected_total{status="dropped"}') == 1
    assert health.status_code == 200
    assert ready.status_code == 200
    assert not_ready.status_code == 503
    assert "server" not in {k.lower() for k in health.headers}  # no software name
