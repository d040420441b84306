"""Session timers (RFC 4028), sans-I/O: what a session refresh request asks for, what we
answer, and when the next refresh or the session's end is due.

:func:`negotiate_refresh` turns a refresh request (the initial INVITE, a re-INVITE or an
UPDATE we received) into a :class:`TimerAnswer`: a 422 with our Min-SE when the interval
is too short, else the headers of our 2xx and the :class:`SessionTimer` they set up.
:func:`timer_from_response` reads the 2xx to a refresh we sent. A :class:`SessionTimer`
only holds deadlines; the UA core (sip/ua.py) arms them in its timer heap and acts when
they are due: a refresh when we are the refresher, a BYE when the peer's refresh never
came.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipbridge.sip.headers import Headers

# RFC 4028 §4: the smallest Min-SE anyone may ask for, and the default of a request
# without one.
MIN_SE_FLOOR = 90
DEFAULT_SESSION_EXPIRES = 1800
_DELTA = re.compile(r"^\s*(\d{1,10})\s*(?:;(.*))?$")


@dataclass(frozen=True)
class SessionExpires:
    """A parsed Session-Expires value: delta-seconds and the refresher (``uac``, ``uas``
    or None when absent)."""

    seconds: int
    refresher: str | None

    @classmethod
    def parse(cls, value: str) -> SessionExpires | None:
        match = _DELTA.match(value)
        if match is None:
            return None
        refresher = None
        for param in (match.group(2) or "").split(";"):
            name, _, arg = param.partition("=")
            if name.strip().lower() == "refresher":
                word = arg.strip().lower()
                refresher = word if word in ("uac", "uas") else None
        return cls(int(match.group(1)), refresher)


def _option_tags(headers: Headers, name: str) -> set[str]:
    return {
        tag.strip().lower()
        for value in headers.get_all(name)
        for tag in value.split(",")
        if tag.strip()
    }


def supports_timer(headers: Headers) -> bool:
    """The sender lists ``timer`` in Supported or Require (RFC 4028 §3)."""
    return "timer" in _option_tags(headers, "Supported") | _option_tags(headers, "Require")


def allows(headers: Headers, method: str) -> bool:
    """``method`` is in the message's Allow header (RFC 3261 §20.5)."""
    return method.upper() in {tag.upper() for tag in _option_tags(headers, "Allow")}


def session_expires(headers: Headers) -> SessionExpires | None:
    """The Session-Expires (compact form ``x``) of a message, None when absent or bad."""
    value = headers.get("Session-Expires") or headers.get("x")
    return None if value is None else SessionExpires.parse(value)


def min_se(headers: Headers) -> int | None:
    value = headers.get("Min-SE")
    if value is None:
        return None
    match = _DELTA.match(value)
    return int(match.group(1)) if match else None


@dataclass
class SessionTimer:
    """One dialog's session timer: ``interval`` seconds from the last refresh at
    ``refreshed_at``; ``we_refresh`` says who sends the next refresh.

    :attr:`refresh_at` is when we send ours (half the interval, RFC 4028 §7.4 / §10);
    :attr:`expire_at` is when the session ends without one: for the peer's refresh, the
    interval minus max(32 s, interval/3) (§10); for ours, the whole interval.
    """

    interval: int
    we_refresh: bool
    refreshed_at: float
    refreshing: bool = False  # our refresh is on its way (its transaction is open)
    retry_at: float | None = None  # a 491's back-off (RFC 3261 §14.1)

    @property
    def refresh_at(self) -> float | None:
        if not self.we_refresh or self.refreshing:
            return None
        if self.retry_at is not None:
            return self.retry_at
        return self.refreshed_at + self.interval / 2

    @property
    def expire_at(self) -> float:
        if self.we_refresh:
            return self.refreshed_at + self.interval
        slack = max(32.0, self.interval / 3)
        if slack > self.interval / 2:
            # Only below 64 s, under the RFC's 90 s floor (a lowered --min-se, in tests):
            # the rule would end the session before the refresher's half-way refresh.
            slack = self.interval / 4
        return self.refreshed_at + self.interval - slack

    @property
    def deadline(self) -> float:
        refresh = self.refresh_at
        return self.expire_at if refresh is None else min(refresh, self.expire_at)


@dataclass(frozen=True)
class TimerAnswer:
    """What to answer a refresh request with: ``status`` 422 (with ``headers`` carrying
    our Min-SE) or 200 (``headers`` to add to the 2xx, ``timer`` to start once sent)."""

    status: int
    headers: list[tuple[str, str]]
    timer: SessionTimer | None = None


def negotiate_refresh(
    request: Headers, now: float, *, session_expires_default: int, our_min_se: int
) -> TimerAnswer:
    """Our answer to a request that may carry Session-Expires and Min-SE (RFC 4028 §9),
    we being its UAS.

    A Session-Expires below our Min-SE is refused with 422 when the caller supports
    timer (it can retry), else raised to it (a proxy put it there). The refresher is the
    one the request names, else the caller when it supports timer (§9: a UAC that
    supports it and states no preference refreshes), else us. ``Require: timer`` goes in
    the 2xx when the caller supports the extension (§9).
    """
    supported = supports_timer(request)
    asked = session_expires(request)
    floor = max(our_min_se, min_se(request) or 0)
    if asked is not None:
        interval = asked.seconds
        if interval < our_min_se:
            if supported:
                return TimerAnswer(422, [("Min-SE", str(our_min_se))])
            interval = our_min_se
        interval = max(interval, floor)
    else:
        interval = max(session_expires_default, floor)
    if not supported:
        refresher = "uas"
    elif asked is not None and asked.refresher is not None:
        refresher = asked.refresher
    else:
        refresher = "uac"
    headers = [("Session-Expires", f"{interval};refresher={refresher}")]
    if supported:
        headers.append(("Require", "timer"))
    return TimerAnswer(200, headers, SessionTimer(interval, refresher == "uas", now))


def refresh_headers(timer: SessionTimer, our_min_se: int) -> list[tuple[str, str]]:
    """The headers of a refresh we send (RFC 4028 §7.4): the current interval with us
    (the request's UAC) as refresher, and our Min-SE."""
    return [
        ("Session-Expires", f"{timer.interval};refresher=uac"),
        ("Min-SE", str(our_min_se)),
        ("Supported", "timer"),
    ]


def timer_from_response(response: Headers, timer: SessionTimer, now: float) -> SessionTimer:
    """The timer after a 2xx to a refresh we sent (RFC 4028 §7.2): the response's interval
    and refresher (``uac`` is us, the refresh's sender), or, without Session-Expires (a
    peer that does not do timers), the same interval with us still refreshing."""
    answered = session_expires(response)
    if answered is None:
        return SessionTimer(timer.interval, True, now)
    return SessionTimer(answered.seconds, answered.refresher != "uas", now)
