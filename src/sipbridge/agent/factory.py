"""Choosing the session class by the agent's protocol (``sipbridge agent add --protocol``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from sipbridge.agent.limits import DEFAULT_LIMITS, AgentLimits
from sipbridge.agent.protocol import AgentSession
from sipbridge.agent.session import Session
from sipbridge.agent.twilio import TwilioSession

__all__ = ["PROTOCOLS", "make_session"]

PROTOCOLS: Final = ("native", "twilio")
NATIVE_SAMPLE_RATES: Final = (8000, 16000)


def make_session(
    protocol: str,
    call_id: str,
    *,
    sample_rate: int = 8000,
    cap_seconds: float = 60.0,
    account_sid: str | None = None,
    stream_sid: str | None = None,
    call_sid: str | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    limits: AgentLimits = DEFAULT_LIMITS,
) -> Session:
    """A new session for one call.

    ``native`` sessions use ``sample_rate`` (8000 or 16000). ``twilio`` sessions are always
    8000 Hz (``sample_rate`` is ignored: read ``session.sample_rate``) and take the
    Twilio-only keywords, which are refused for ``native``. Raises ValueError for an
    unknown protocol, rate or keyword.
    """
    if protocol == "native":
        if sample_rate not in NATIVE_SAMPLE_RATES:
            raise ValueError(f"native agents take {NATIVE_SAMPLE_RATES} Hz, not {sample_rate}")
        given = [
            name
            for name, value in (
                ("account_sid", account_sid),
                ("stream_sid", stream_sid),
                ("call_sid", call_sid),
                ("custom_parameters", custom_parameters),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{', '.join(given)}: only for the twilio protocol")
        return AgentSession(
            call_id, sample_rate=sample_rate, cap_seconds=cap_seconds, limits=limits
        )
    if protocol == "twilio":
        return TwilioSession(
            call_id,
            account_sid=account_sid,
            stream_sid=stream_sid,
            call_sid=call_sid,
            custom_parameters=custom_parameters,
            cap_seconds=cap_seconds,
            limits=limits,
        )
    raise ValueError(f"unknown agent protocol {protocol!r}; expected one of {PROTOCOLS}")
