"""Transfers that sipbridge completes itself: the target's leg and the media relay.

A warm transfer uses the same leg: while the agent consults, the leg's endpoint is wired to
the agent's link instead of the queues (runtime/call.py ``Call._consult``) and the
caller's endpoint to nothing; :meth:`TransferLeg.relay` puts the queues back for the join.

When the caller's side refuses or fails a REFER (agent/handover.py decides), the call
dials the target through the caller's trunk as a :class:`TransferLeg`, an outbound call
(runtime/outbound.py: digest, ring timeout, its own record) without an agent. When it
answers, the caller's RTP endpoint is re-wired (``RtpEndpoint.rewire``) from the agent's
link to the leg's queues, and the agent gets ``stop`` with reason ``transferred``:

    caller RTP -> caller MediaSession (caller's codec) -> PCM -> FrameQueue -> leg's clock
      -> leg MediaSession (target's codec) -> target RTP, and the same the other way.

Both MediaSessions run at the agent's PCM rate, so each leg keeps the codec it negotiated
and a difference is transcoded through PCM by the codec chain each call already has; the
relay itself only copies bytes (media/relay.py). A BYE from either side ends both legs:
the caller's call hangs the leg up, the leg tells the caller's call when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sipbridge.media.relay import FrameQueue
from sipbridge.media.session import MediaSession
from sipbridge.runtime.call import EndCause
from sipbridge.runtime.media import RtpEndpoint
from sipbridge.runtime.outbound import DEFAULT_RING_TIMEOUT, OutboundCall
from sipbridge.sdp.negotiate import Negotiated
from sipbridge.sip.errors import SipError
from sipbridge.sip.framing import Transport
from sipbridge.sip.message import Uri
from sipbridge.sip.registration import RegistrarTarget, parse_registrar
from sipbridge.store.records import AgentRecord, CallEvent, CallStatus, utcnow

if TYPE_CHECKING:
    from sipbridge.runtime.server import SipBridgeServer

__all__ = ["BridgeUnavailable", "LegOwner", "TransferLeg", "leg_destination", "trunk_target"]

log = logging.getLogger("sipbridge.call")

_SEPARATORS = re.compile(r"[-.()]")


class BridgeUnavailable(Exception):
    """The target's leg cannot be placed; ``reason`` is a word, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class LegOwner(Protocol):
    """The call a :class:`TransferLeg` belongs to (runtime/call.py ``Call``)."""

    id: str

    def on_leg_answered(self, leg: TransferLeg) -> None: ...

    def on_leg_ended(self, leg: TransferLeg) -> None: ...


def trunk_target(server: SipBridgeServer, trunk: str | None) -> RegistrarTarget:
    """Where a call on ``trunk`` can dial: its ``host``; BridgeUnavailable otherwise."""
    record = server.trunks.get(trunk) if trunk is not None else None
    if record is None or not record.host:
        raise BridgeUnavailable(
            "bridge_unavailable", "the call came from no trunk with a host to dial through"
        )
    try:
        target = parse_registrar(record.host)
    except ValueError as exc:
        raise BridgeUnavailable("bridge_unavailable", str(exc)) from None
    if target.transport is Transport.TCP and not server.settings.tcp:
        raise BridgeUnavailable("bridge_unavailable", f"trunk {trunk} needs SIP over TCP")
    if target.transport is Transport.TLS and server.ua.tls_port is None:
        raise BridgeUnavailable("bridge_unavailable", f"trunk {trunk} needs SIP over TLS")
    if record.srtp == "required":
        raise BridgeUnavailable("bridge_unavailable", f"trunk {trunk} requires SRTP")
    return target


def leg_destination(target: str, trunk: RegistrarTarget) -> tuple[str, str | None]:
    """The Request-URI and the dialled user of a transfer ``target`` sent through
    ``trunk``: a ``tel:`` number at the trunk's host (RFC 3966 §5.1.4 visual separators
    dropped), a ``sip:`` URI as given (the trunk is its outbound proxy), a ``sips:`` one
    only through a TLS trunk. BridgeUnavailable otherwise."""
    try:
        uri = Uri.parse(target)
    except (SipError, ValueError):
        raise BridgeUnavailable("bad_target", "the target is not a URI") from None
    if uri.scheme == "tel":
        number = _SEPARATORS.sub("", uri.user or "")
        if not number:
            raise BridgeUnavailable("bad_target", "a tel: target without a number")
        return trunk.uri().replace("sip:", f"sip:{number}@", 1), number
    if uri.scheme == "sips" and trunk.transport is not Transport.TLS:
        raise BridgeUnavailable("bad_target", "a sips: target needs a trunk over TLS")
    if uri.scheme in ("sip", "sips"):
        plain = dataclasses.replace(uri, headers={})  # RFC 3261 §19.1.5: not in a R-URI
        return str(plain), uri.user
    raise BridgeUnavailable("bad_target", f"{uri.scheme}: targets cannot be dialled")


class TransferLeg(OutboundCall):
    """The target's leg of a bridged transfer: an outbound call with no agent, its PCM to
    and from two :class:`FrameQueue` (``to_target``: the caller's audio, ``to_caller``:
    the target's). Its record is its own (``direction`` outbound, the agent that
    transferred, a ``transfer_leg`` event naming the caller's call)."""

    def __init__(
        self,
        server: SipBridgeServer,
        owner: LegOwner,
        *,
        request_uri: str,
        number: str | None,
        from_: str | None,
        agent: AgentRecord,
        trunk: str,
        credentials: tuple[str | None, str | None],
        target: RegistrarTarget,
        headers: tuple[tuple[str, str], ...],
        sample_rate: int,
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
    ) -> None:
        super().__init__(
            server,
            to=number or "",
            from_=from_ or "",
            agent=agent,
            trunk=trunk,
            credentials=credentials,
            target=target,
            headers=headers,
            ring_timeout=ring_timeout,
        )
        self.record.to_number = number
        self.record.from_number = from_
        self.record.sip_call_id = f"{secrets.token_hex(16)}@sipbridge"
        self.owner = owner
        self._request = request_uri
        self._rate = sample_rate
        frame_bytes = sample_rate // 50 * 2  # 20 ms of PCM16
        self.to_target = FrameQueue(frame_bytes)
        self.to_caller = FrameQueue(frame_bytes)
        self._call_events.append(
            CallEvent(self.id, utcnow(), "transfer_leg", {"call": owner.id, "target": request_uri})
        )

    def _request_uri(self) -> str:
        return self._request

    def relay(self) -> None:
        """The leg's media to and from its queues again (after a warm transfer's
        consultation, where it was the agent's)."""
        if self.media is not None:
            self.media.rewire(
                on_audio=self.to_caller.push,
                next_frame=self.to_target.pop,
                frame_ready=self.to_target.ready,
            )

    def _endpoint_factory(self, chosen: Negotiated) -> Callable[[], RtpEndpoint]:
        def endpoint() -> RtpEndpoint:
            return RtpEndpoint(
                MediaSession(chosen, self._rate),
                on_audio=self.to_caller.push,
                next_frame=self.to_target.pop,
                frame_ready=self.to_target.ready,
            )

        return endpoint

    async def _joined(self) -> bool:
        self.owner.on_leg_answered(self)
        return True

    def end_leg(self, cause: EndCause) -> None:
        """The caller's side is over (its BYE, a media timeout, shutdown): end this leg
        too, with CANCEL while it rings."""
        self._finish(cause)

    async def run(self) -> None:
        try:
            if await self._dial():
                await self._until_end()
        except Exception:
            log.exception("call=%s internal error", self.id)
            self.record.reason = self.record.reason or "internal_error"
            self._hangup_sip()
        finally:
            with contextlib.suppress(Exception):
                self.owner.on_leg_ended(self)
            await self._teardown()

    async def _until_end(self) -> None:
        watchdog = asyncio.ensure_future(self._watch_media())
        try:
            cause = await self._ended
        finally:
            watchdog.cancel()
        if cause is not EndCause.CALLEE_HANGUP:
            self._hangup_sip()
        self.record.reason = cause.value
        self.record.hangup_by = {
            EndCause.CALLEE_HANGUP: "callee",
            EndCause.CALLER_HANGUP: "caller",
        }.get(cause, "server")
        if self.record.status is CallStatus.ANSWERED:
            relayed = {
                "to_target_frames": self.to_target.frames_out,
                "to_caller_frames": self.to_caller.frames_out,
                "dropped_bytes": self.to_target.dropped_bytes + self.to_caller.dropped_bytes,
            }
            self._call_events.append(CallEvent(self.id, utcnow(), "relay", relayed))
        self._event("ended", reason=cause.value, hangup_by=self.record.hangup_by)
