"""The per-call SIP trace: every SIP message of the calls to or from a traced number, or of
a traced trunk's calls, written to the log at INFO under ``sipbridge.sip.trace``.

Traces are switched on and off without a restart (``sipbridge trace on/off``,
``/api/traces``): they are rows of the store (store/service/traces.py) that the server
reads with its trunks every few seconds, and at once after an API change.

Whether a call is traced is decided once, when its INVITE makes a call (or is refused
before one exists): a set lookup of its dialed number, its caller's number and its trunk
(:meth:`SipTracer.matches`). Its SIP Call-ID then joins :attr:`SipTracer.calls`. The
message path asks :attr:`SipTracer.armed` (false while no trace is in force and no traced
call is live: one attribute read per message, nothing else); only while a traced call is
live is each message's Call-ID read from its header section (``sip.trace.call_id_of``)
and looked up.

The INVITE that makes a traced call, and what the server sent for it before the call
was created (100 Trying, a 401 challenge), are written when the call is found to be
traced: the server hands over the message it is handling (:meth:`SipTracer.received`)
and what it just sent (:meth:`SipTracer.sent`). A traced Call-ID stays traced while its
call is up and ``LINGER`` seconds after (retransmissions, the ACK of a final response,
the authenticated INVITE after a 401).

Each record: the text ``call=<id> sip=in|out transport=udp source=HOST:PORT
destination=HOST:PORT <first line>`` followed by `` | `` and the whole message, secrets
masked (sip/trace.py); in JSON (``--log-format json``) the message is the short text and
the fields ``direction``, ``transport``, ``source``, ``destination``, ``sip_call_id``,
``trace`` (what matched: ``number:+1...`` or ``trunk:NAME``) and ``sip`` (the masked
message) are keys of their own.

:class:`TraceSync` is the server's side: it owns the server's :class:`SipTracer`, reads
the traces in force from the store (:meth:`TraceSync.reload`), gives the tracer our own
address per transport, and asks the tracer about each INVITE that makes a call or is
refused (:meth:`TraceSync.invite`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sipbridge.logs import TRACE_LOGGER
from sipbridge.numbers import caller_number, dialed_number
from sipbridge.sip.framing import Transport, transport_of
from sipbridge.sip.message import Request
from sipbridge.sip.trace import call_id_of, masked_text
from sipbridge.store import service
from sipbridge.store.records import TraceRecord, utcnow

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = ["LINGER", "TRACE_PURGE_INTERVAL", "SipTracer", "TraceSync", "TracedCall"]

trace_log = logging.getLogger(TRACE_LOGGER)

Address = tuple[str, int]
# Seconds a traced Call-ID stays traced after its call ended or its INVITE was refused:
# RFC 3261 §17.2.1 Timer H (64*T1 = 32 s) covers the retransmissions and the ACK.
LINGER = 32.0
# How often ended SIP traces are deleted from the store (seconds).
TRACE_PURGE_INTERVAL = 300.0


@dataclass
class TracedCall:
    """One traced SIP Call-ID: our call id (None before a call exists, e.g. after a 401),
    what matched, and until when (loop time) it stays traced once not live."""

    call_id: str | None
    matched: str
    until: float


class SipTracer:
    """The traces in force and the traced calls. ``local(transport)`` gives our own
    ``host:port`` for that transport (the other end of a logged message)."""

    def __init__(self, local: Callable[[Transport], str]) -> None:
        self.local = local
        # Traced number (E.164) / trunk name -> until (loop time).
        self.numbers: dict[str, float] = {}
        self.trunks: dict[str, float] = {}
        self.calls: dict[str, TracedCall] = {}  # SIP Call-ID -> the traced call
        self.armed = False
        self._received: tuple[bytes, Address] | None = None
        self._sent: list[tuple[bytes, Address]] = []
        # Messages of a traced Call-ID that has no call yet (after a 401), held until the
        # server has handled the message in hand (:meth:`done`): it may make the call.
        self._held: list[tuple[TracedCall, str, str, bytes, Address]] = []

    def _rearm(self) -> None:
        self.armed = bool(self.numbers or self.trunks or self.calls)

    def load(self, traces: Iterable[TraceRecord], wall: datetime, now: float) -> None:
        """The traces in force from the store (``wall``: the wall clock when read, ``now``
        the loop's): their ends turned into loop time."""
        numbers: dict[str, float] = {}
        trunks: dict[str, float] = {}
        for trace in traces:
            until = now + (trace.expires_at - wall).total_seconds()
            if until <= now:
                continue
            (numbers if trace.kind == "number" else trunks)[trace.value] = until
        changed = numbers.keys() != self.numbers.keys() or trunks.keys() != self.trunks.keys()
        self.numbers, self.trunks = numbers, trunks
        self._rearm()
        if changed:
            trace_log.info(
                "event=traces numbers=%s trunks=%s",
                ",".join(sorted(numbers)) or "-",
                ",".join(sorted(trunks)) or "-",
                extra={
                    "event": "traces",
                    "fields": {"numbers": sorted(numbers), "trunks": sorted(trunks)},
                },
            )

    def expire(self, now: float, live: Container[str]) -> None:
        """Forget the traces that ended and the traced Call-IDs past their linger whose
        call is not ``live`` (our call ids of the calls up)."""
        self.numbers = {k: v for k, v in self.numbers.items() if v > now}
        self.trunks = {k: v for k, v in self.trunks.items() if v > now}
        self.calls = {
            sip_id: traced
            for sip_id, traced in self.calls.items()
            if traced.until > now or (traced.call_id is not None and traced.call_id in live)
        }
        self._rearm()

    def matches(self, numbers: Iterable[str | None], trunk: str | None, now: float) -> str | None:
        """What makes a new call traced: ``number:<E.164>`` for one of ``numbers`` (the
        dialed and the caller's number) traced, ``trunk:<name>`` for its trunk; None."""
        for number in numbers:
            if number is not None and self.numbers.get(number, 0.0) > now:
                return f"number:{number}"
        if trunk is not None and self.trunks.get(trunk, 0.0) > now:
            return f"trunk:{trunk}"
        return None

    # -- the message path (only while armed) ------------------------------------

    def received(self, data: bytes, source: Address) -> None:
        """A message the server is handling: written when its call is traced, kept until
        the next one in case it makes a traced call."""
        self._received = (data, source)
        if self.calls:
            sip_id = call_id_of(data)
            traced = self.calls.get(sip_id) if sip_id is not None else None
            if traced is not None and sip_id is not None:
                self._write_or_hold(traced, sip_id, "in", data, source)

    def sent(self, out: list[tuple[bytes, Address]]) -> None:
        """What the server just sent: written for traced calls, kept until the next batch
        in case it answers a request that makes a traced call."""
        self._sent = out
        if self.calls:
            for data, destination in out:
                sip_id = call_id_of(data)
                traced = self.calls.get(sip_id) if sip_id is not None else None
                if traced is not None and sip_id is not None:
                    self._write_or_hold(traced, sip_id, "out", data, destination)

    def start(self, sip_id: str, call_id: str | None, matched: str, now: float) -> None:
        """Trace the SIP Call-ID ``sip_id`` (our call ``call_id``): the message being
        handled and what was just sent for it are written now, if they are its."""
        traced = self.calls.get(sip_id)
        if traced is not None:  # already traced (an INVITE after its 401): now a call
            if call_id is not None:
                traced.call_id = call_id
            traced.until = max(traced.until, now + LINGER)
            return
        traced = TracedCall(call_id, matched, now + LINGER)
        self.calls[sip_id] = traced
        self.armed = True
        received = self._received
        if received is not None and call_id_of(received[0]) == sip_id:
            self._write(traced, sip_id, "in", *received)
        for data, destination in self._sent:
            if call_id_of(data) == sip_id:
                self._write(traced, sip_id, "out", data, destination)

    def done(self) -> None:
        """The server handled what it received and sent what it had to: the messages
        held for a Call-ID without a call are written, with the call id it has now."""
        held, self._held = self._held, []
        for traced, sip_id, direction, data, peer in held:
            self._write(traced, sip_id, direction, data, peer)

    def end(self, sip_id: str, now: float) -> None:
        """The call of ``sip_id`` ended: traced ``LINGER`` seconds more."""
        traced = self.calls.get(sip_id)
        if traced is not None:
            traced.until = now + LINGER

    def _write_or_hold(
        self, traced: TracedCall, sip_id: str, direction: str, data: bytes, peer: Address
    ) -> None:
        if traced.call_id is None:
            self._held.append((traced, sip_id, direction, data, peer))
        else:
            self._write(traced, sip_id, direction, data, peer)

    def _write(
        self, traced: TracedCall, sip_id: str, direction: str, data: bytes, peer: Address
    ) -> None:
        transport = transport_of(peer)
        remote = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        local = self.local(transport)
        source, destination = (remote, local) if direction == "in" else (local, remote)
        text = masked_text(data)
        first_line = text.split("\n", 1)[0].rstrip("\r")
        call = traced.call_id or "-"
        summary = (
            f"call={call} sip={direction} transport={transport.value.lower()} "
            f"source={source} destination={destination} {first_line}"
        )
        trace_log.info(
            "%s | %s",
            summary,
            text,
            extra={
                "call_id": traced.call_id,
                "event": "sip_message",
                "summary": summary,
                "fields": {
                    "direction": direction,
                    "transport": transport.value.lower(),
                    "source": source,
                    "destination": destination,
                    "sip_call_id": sip_id,
                    "trace": traced.matched,
                    "sip": text,
                },
            },
        )


class TraceSync:
    """The SIP trace of ``server``: its :attr:`tracer`, the traces in force read from the
    store with the trunks (:meth:`reload`, also called by the API after a trace is switched
    on or off), and :meth:`invite` for each INVITE that makes a call or is refused, which
    the server calls only while ``tracer.armed``."""

    def __init__(self, server: SipBridgeServer) -> None:
        self.server = server
        self.tracer = SipTracer(self.local)
        self._purge_at = 0.0

    async def reload(self) -> None:
        """The SIP traces in force from the store; now and then the ended ones are deleted.
        Also called by the API after a trace is switched on or off."""
        server = self.server
        wall = utcnow()
        now = server.loop.time()
        if now >= self._purge_at:
            self._purge_at = now + TRACE_PURGE_INTERVAL
            await service.purge_expired_traces(server.db, wall)
        traces = await service.list_traces(server.db, now=wall)
        self.tracer.load(traces, wall, now)
        self.tracer.expire(now, server.calls)

    def local(self, transport: Transport) -> str:
        """Our ``host:port`` for ``transport``, as a trace line shows it."""
        server = self.server
        tls = server.tls_address
        host, port = tls if transport is Transport.TLS and tls is not None else server.sip_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def invite(self, invite: Request, trunk: str | None, call_id: str | None) -> None:
        """An INVITE that makes a call (``call_id``) or is refused before one exists: its
        SIP Call-ID traced from now on when its dialed or caller's number or its trunk is
        (:meth:`SipTracer.matches`), or when it already is (the INVITE after a traced 401)."""
        server = self.server
        tracer = self.tracer
        now = server.loop.time()
        region = server.settings.default_region
        matched = tracer.matches(
            (
                dialed_number(*server.dialed_users(trunk, invite), region),
                caller_number(invite.from_.uri.user, region),
            ),
            trunk,
            now,
        )
        if matched is not None or invite.call_id in tracer.calls:
            tracer.start(invite.call_id, call_id, matched or "", now)
