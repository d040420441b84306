"""Prometheus metrics of one sipbridge process.

One :class:`Metrics` object per server, on its own registry (so tests and several servers
in one process do not share counters). Nothing here is touched per RTP packet: media
counters are added once per call, from the call's totals, when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipbridge.sip.guard import SourceGuard

# Call setup and agent timings are mostly well under a second; the tail matters.
_FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_JITTER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)
# E-model MOS (ITU-T G.107): 4.41 is a clean narrowband call; below 3.6 many users are
# dissatisfied, below 3.1 nearly all (G.107 Annex B's user satisfaction bands).
_MOS_BUCKETS = (1.0, 2.0, 2.6, 3.1, 3.6, 4.0, 4.2, 4.3, 4.4, 4.5)


class Metrics:
    """The server's metrics; :attr:`asgi_app` serves them at ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.active_calls = Gauge(
            "sipbridge_active_calls", "Calls in progress (ringing or answered).", registry=r
        )
        self.calls = Counter(
            "sipbridge_calls",
            "Call attempts by final status and reason: one per call record, including "
            "INVITEs refused before a call began (overload, draining, busy, unhealthy, "
            "malformed, not allowed).",
            ["status", "reason"],
            registry=r,
        )
        self.setup_seconds = Histogram(
            "sipbridge_call_setup_seconds",
            "Time from INVITE received to 200 OK sent.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.agent_connect_seconds = Histogram(
            "sipbridge_agent_connect_seconds",
            "Time to open the agent's WebSocket.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.agent_first_audio_seconds = Histogram(
            "sipbridge_agent_first_audio_seconds",
            "Time from answer to the agent's first audio.",
            buckets=_FAST_BUCKETS,
            registry=r,
        )
        self.media_clock_lag_seconds = Histogram(
            "sipbridge_media_clock_lag_seconds",
            "How late each wake-up of the shared media clock ran (every call's send time "
            "is late by as much).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.agent_response_seconds = Histogram(
            "sipbridge_agent_response_seconds",
            "Per turn: end of the caller's speech to the agent's first audio after it, "
            "measured at the bridge (added when a call ends).",
            buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=r,
        )
        self.overloaded = Gauge(
            "sipbridge_overloaded",
            "1 while new calls are refused with 503 because the instance cannot keep up.",
            registry=r,
        )
        self.trunk_registered = Gauge(
            "sipbridge_trunk_registered",
            "1 while the trunk's registration is in state registered (its last REGISTER "
            "succeeded; trunks with register=true).",
            ["trunk"],
            registry=r,
        )
        self.registration_failures = Counter(
            "sipbridge_registration_failures",
            "Failed REGISTER attempts by trunk and final status (timeout: no answer).",
            ["trunk", "status"],
            registry=r,
        )
        self.draining = Gauge(
            "sipbridge_draining",
            "1 while the instance drains (after SIGTERM): new calls get 503, the calls up "
            "go on until they end or --drain-timeout passes.",
            registry=r,
        )
        self.unhealthy = Gauge(
            "sipbridge_unhealthy",
            "1 while new calls get 503 because the database is unreachable or no agent "
            "endpoint can be reached (every one in its failure back-off).",
            registry=r,
        )
        self.overload_refusals = Counter(
            "sipbridge_overload_refusals",
            "New calls (INVITEs) refused with 503 because of overload.",
            registry=r,
        )
        self.lost_instances = Counter(
            "sipbridge_lost_instances",
            "Peer instances this instance declared lost (no heartbeat for "
            "--instance-timeout) and whose open calls it closed.",
            registry=r,
        )
        self.lost_instance_calls = Counter(
            "sipbridge_lost_instance_calls",
            "Open calls of lost peer instances this instance closed as interrupted.",
            registry=r,
        )
        self.recording_dropped_seconds = Counter(
            "sipbridge_recording_dropped_seconds",
            "Audio left out of call recordings because the recording writer was behind "
            "(silence in the files).",
            registry=r,
        )
        self.media_frames_skipped = Counter(
            "sipbridge_media_frames_skipped",
            "20 ms frames skipped in RTP time after a stall of the media clock "
            "(beyond what is caught up).",
            registry=r,
        )
        self.rtp_packets = Counter(
            "sipbridge_rtp_packets",
            "RTP packets, by direction (in: from callers, out: to callers).",
            ["direction"],
            registry=r,
        )
        self.rtp_packets_dropped = Counter(
            "sipbridge_rtp_packets_dropped",
            "Packets received on call RTP ports that were not audio of the call.",
            registry=r,
        )
        self.rtp_packets_lost = Counter(
            "sipbridge_rtp_packets_lost",
            "Caller RTP packets lost (sequence gaps, RFC 3550 A.3).",
            registry=r,
        )
        self.rtp_jitter_seconds = Histogram(
            "sipbridge_rtp_jitter_seconds",
            "Interarrival jitter of the caller's RTP at the end of each call (RFC 3550 A.8).",
            buckets=_JITTER_BUCKETS,
            registry=r,
        )
        self.call_mos = Histogram(
            "sipbridge_call_mos",
            "Estimated MOS of each call with caller audio, at its end (E-model, G.107; "
            "method 'g107-assumed' for G.722 and Opus). Calls without caller RTP are not "
            "observed.",
            ["codec", "method"],
            buckets=_MOS_BUCKETS,
            registry=r,
        )
        self.sip_rejected = Counter(
            "sipbridge_sip_requests_rejected",
            "SIP requests answered with an error or dropped by the SIP core, by status.",
            ["status"],
            registry=r,
        )
        self.agent_reconnects = Counter(
            "sipbridge_agent_reconnects",
            "Agent WebSocket connections re-opened after dropping mid-call.",
            registry=r,
        )
        self.agent_audio_dropped_bytes = Counter(
            "sipbridge_agent_audio_dropped_bytes",
            "Agent audio bytes dropped because the playout buffer cap was reached.",
            registry=r,
        )
        self.agent_messages_dropped = Counter(
            "sipbridge_agent_messages_dropped",
            "Agent requests dropped by a per-call cap, by kind (transcript, metadata, "
            "dtmf); added when a call ends.",
            ["kind"],
            registry=r,
        )
        self.agent_protocol_errors = Counter(
            "sipbridge_agent_protocol_errors",
            "Agent messages ignored as invalid (bad JSON, wrong fields...); added when a "
            "call ends.",
            registry=r,
        )
        self.caller_audio_dropped_frames = Counter(
            "sipbridge_caller_audio_dropped_frames",
            "Caller audio frames not sent to an agent that was not reading (its "
            "connection's write buffer over the cap); added when a call ends.",
            registry=r,
        )
        self.srtp_dropped = Counter(
            "sipbridge_srtp_packets_dropped",
            "Caller SRTP packets dropped (RFC 3711): failed authentication, replay, "
            "malformed; added when a call ends.",
            ["reason"],
            registry=r,
        )
        self.bans = Counter(
            "sipbridge_bans",
            "Sources banned automatically (flood, auth_failures, unknown_numbers, scanner).",
            ["reason"],
            registry=r,
        )
        # Call records (runtime/recorder.py): every record is written, spooled (the
        # database refused it; written later from the spool) or, with a full spool,
        # dropped. Closed records written = final rows in the table from this process.
        self.call_records_written = Counter(
            "sipbridge_call_records_written",
            "Call record writes the store took, by state (open: ringing/active, closed: "
            "final) and path (direct, or replayed from the spool).",
            ["state", "via"],
            registry=r,
        )
        self.call_records_spooled = Counter(
            "sipbridge_call_records_spooled",
            "Call record writes kept in the local spool because the store refused them "
            "(or older ones were waiting there).",
            registry=r,
        )
        self.call_record_write_failures = Counter(
            "sipbridge_call_record_write_failures",
            "Failed call record writes, by reason (locked, read_only, unavailable, error).",
            ["reason"],
            registry=r,
        )
        self.call_records_dropped = Counter(
            "sipbridge_call_records_dropped",
            "Call record writes lost: the spool was full (spool_full) or not writable "
            "(spool_error).",
            ["reason"],
            registry=r,
        )
        self.record_spool_depth = Gauge(
            "sipbridge_record_spool_depth",
            "Call record writes waiting in the spool for the store.",
            registry=r,
        )
        self.asgi_app = make_asgi_app(registry=r)

    def watch_guard(self, guard: SourceGuard, now: Callable[[], float]) -> None:
        """Expose the guard's own counts (kept without any per-packet metrics call):
        requests dropped from banned sources, requests dropped over a trusted source's
        rate, and the bans in force."""
        self.registry.register(_GuardCollector(guard, now))


class _GuardCollector(Collector):
    def __init__(self, guard: SourceGuard, now: Callable[[], float]) -> None:
        self.guard = guard
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "sipbridge_sip_banned_requests",
            "SIP datagrams dropped before parsing because their source is banned.",
            value=self.guard.dropped_banned,
        )
        yield CounterMetricFamily(
            "sipbridge_sip_throttled_requests",
            "SIP datagrams dropped because a trusted (trunk) source exceeded the rate limit.",
            value=self.guard.dropped_throttled,
        )
        yield GaugeMetricFamily(
            "sipbridge_bans_active",
            "Source addresses and networks banned right now.",
            value=len(self.guard.bans(self.now())),
        )
