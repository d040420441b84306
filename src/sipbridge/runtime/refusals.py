"""Refusals and their records: the INVITEs turned away before any call existed.

A refused INVITE still leaves a failed call record (never lose a call record), is counted
once in ``sipbridge_calls_total`` like every call attempt, and is logged
(``event=refused``). :class:`RefusalRecorder` answers the instance's 503s
(:meth:`~RefusalRecorder.refuse_busy`), writes the records of INVITEs the UA core or the
server rejected, and logs and counts every request the UA core rejected
(:meth:`~RefusalRecorder.rejected`, a ``RequestRejected`` event).

Its log lines are the server's (logger ``sipbridge.server``: the ``server`` component of
``--log-levels``).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from sipbridge.numbers import caller_number, dialed_number
from sipbridge.sip.calls import InboundCall, RequestRejected
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.headers import Headers
from sipbridge.sip.message import Request
from sipbridge.sip.values import NameAddr
from sipbridge.store.records import CallEvent, CallRecord, CallStatus, utcnow
from sipbridge.wiretext import clean, clean_opt

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = ["DRAIN_RETRY_AFTER", "TRUNK_BUSY_RETRY_AFTER", "RefusalRecorder"]

log = logging.getLogger("sipbridge.server")

Address = tuple[str, int]
# Retry-After (seconds) of the 503 for a trunk at its max_calls (and the instance's
# other refusals: at --max-calls, overload, unhealthy).
TRUNK_BUSY_RETRY_AFTER = 5
# Retry-After (seconds) of the 503s of a draining instance: it will not take calls again.
DRAIN_RETRY_AFTER = 30
# Refusals of the instance (not the caller's doing) logged at WARNING.
_BUSY_REASONS = frozenset({"server_busy", "overload", "trunk_busy", "unhealthy"})
# Access reasons logged at debug only: what every scanner and every first INVITE of a
# digest trunk produces.
_QUIET_ACCESS_REASONS = frozenset({"unknown_source", "auth_required", "scanner"})


class RefusalRecorder:
    """The refusals of ``server``: the server calls :meth:`refuse_busy` for an INVITE it
    will not take, :meth:`rejected` for each ``RequestRejected`` event of the UA core, and
    :meth:`record_rejected_invite` for an INVITE it rejected itself; each refused INVITE
    gets its failed call record (through ``server.records``), its count and its log
    line."""

    def __init__(self, server: SipBridgeServer) -> None:
        self.server = server

    def refuse_busy(
        self,
        call: InboundCall,
        reason: str,
        retry_after: int = TRUNK_BUSY_RETRY_AFTER,
        *,
        cause: str | None = None,
    ) -> None:
        """503 with Retry-After (RFC 3261 §21.5.4) and a Reason header (RFC 3326), and a
        call record; ``cause`` (what is unhealthy) goes into the record's events."""
        server = self.server
        server.ua.reject(
            call,
            503,
            server.loop.time(),
            headers=[
                ("Retry-After", str(retry_after)),
                ("Reason", f'SIP ;cause=503 ;text="{reason}"'),
            ],
        )
        self.record_rejected_invite(
            call.invite,
            call.origin,
            503,
            reason,
            call.trunk,
            {"cause": cause} if cause else None,
            record_id=call.id,
        )

    def rejected(self, event: RequestRejected) -> None:
        """A request the UA core rejected (or dropped): counted and logged; a rejected
        INVITE from a source the access policy let in gets its call record, and is traced
        when its number or trunk is."""
        server = self.server
        server.metrics.sip_rejected.labels(str(event.status or "dropped")).inc()
        quiet = event.access and event.reason in _QUIET_ACCESS_REASONS
        # A trusted proxy's broken header is a configuration error worth seeing.
        level = logging.DEBUG if quiet else logging.INFO
        if event.reason == "bad_source_header":
            level = logging.WARNING
        origin = event.origin
        log.log(
            level,
            "event=request_rejected source=%s:%d method=%s status=%s reason=%s%s%s",
            origin[0],
            origin[1],
            event.method,
            event.status,
            event.reason.replace(" ", "_")[:120],
            _proxy_field(event.source, event.relayed_from, event.reason),
            f" detail={event.detail.replace(' ', '_')}" if event.detail else "",
        )
        record_id: str | None = None
        if event.method == "INVITE" and event.status and not event.access:
            if event.request is not None:
                record_id = self.record_rejected_invite(
                    event.request, origin, event.status, event.reason, event.trunk
                )
            elif event.headers is not None:
                self.record_malformed_invite(event.headers, origin, event.status)
        if server.tracer.armed and event.method == "INVITE" and event.request is not None:
            server.traces.invite(event.request, event.trunk, record_id)

    def record_rejected_invite(
        self,
        request: Request,
        source: Address,
        status: int,
        reason: str,
        trunk: str | None = None,
        refusal: dict[str, Any] | None = None,
        *,
        record_id: str | None = None,
    ) -> str:
        """A call record for an INVITE refused before any call existed; ``refusal``,
        when given, is stored as its ``refusal`` event. Returns the record's id
        (``record_id``: the id of the UA's call for the INVITE, when there is one)."""
        return self.record_refused(
            request.call_id,
            request.from_.uri.user,
            self.server.dialed_users(trunk, request),
            source,
            status,
            reason,
            trunk,
            refusal,
            record_id=record_id,
        )

    def record_malformed_invite(self, headers: Headers, source: Address, status: int) -> None:
        """A call record for an INVITE that did not parse (answered 400/505/513 by the SIP
        core): its Call-ID, From and To as far as they can be read, reason
        ``malformed_request``. Only sources the access policy knows get here."""

        def user(name: str) -> str | None:
            lines = headers.get_lines(name)
            try:
                return NameAddr.parse(lines[0]).uri.user if lines else None
            except SipParseError:
                return None

        call_ids = headers.get_lines("Call-ID")
        call_id = call_ids[0] if call_ids else "-"
        self.record_refused(
            call_id, user("From"), (None, user("To")), source, status, "malformed_request"
        )

    def record_refused(
        self,
        sip_call_id: str,
        from_user: str | None,
        dialed: tuple[str | None, str | None],
        source: Address,
        status: int,
        reason: str,
        trunk: str | None = None,
        refusal: dict[str, Any] | None = None,
        *,
        record_id: str | None = None,
    ) -> str:
        """The failed call record of an INVITE refused before any call existed; ``dialed``
        is (Request-URI user, To user), wire text made storable (wiretext.py). Returns its
        id: ``record_id``, else a new one."""
        region = self.server.settings.default_region
        now = utcnow()
        record = CallRecord(
            id=record_id or uuid.uuid4().hex,
            sip_call_id=clean(sip_call_id),
            from_number=clean_opt(caller_number(from_user, region)),
            to_number=clean_opt(dialed_number(*dialed, region)),
            agent=None,
            received_at=now,
            ended_at=now,
            status=CallStatus.FAILED,
            reason=reason,
            sip_code=status,
            source=f"{source[0]}:{source[1]}",
            trunk=trunk,
        )
        events = [] if refusal is None else [CallEvent(record.id, now, "refusal", refusal)]
        self.server.records.submit(record, events)
        # Every call attempt is counted once, as it is recorded once (runtime/call.py for
        # calls that began): the metric and the table agree.
        self.server.metrics.calls.labels(CallStatus.FAILED.value, reason).inc()
        fields: dict[str, Any] = {"status": status, "reason": reason, "source": record.source}
        if trunk is not None:
            fields["trunk"] = trunk
        log.log(
            logging.WARNING if reason in _BUSY_REASONS else logging.INFO,
            "call=%s event=refused %s",
            record.id,
            " ".join(f"{key}={value}" for key, value in fields.items()),
            extra={"call_id": record.id, "event": "refused", "fields": fields},
        )
        return record.id


def _proxy_field(source: Address, relayed_from: Address | None, reason: str) -> str:
    """`` proxy=host:port`` for a log line about a request a trusted proxy relayed (or
    whose header it broke), else nothing."""
    if relayed_from is None and reason != "bad_source_header":
        return ""
    return f" proxy={source[0]}:{source[1]}"
