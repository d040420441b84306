"""The dashboard's sign-in machinery, without I/O: signed session cookies, CSRF tokens and
the throttle of failed sign-ins. Times come in as ``now`` (seconds, any monotonic clock).

* **Session.** Signing in with an API key gives a cookie holding the SHA-256 of that key
  (what the store indexes; never the key), a random nonce and an expiry, signed with
  HMAC-SHA-256 under the server's secret. Every request checks the signature, the expiry
  and that the key still exists, so revoking the key ends its sessions at once. No table:
  the secret is made at start-up (a restart signs everyone out).
* **CSRF** (OWASP "signed double-submit cookie"): a random nonce in its own cookie
  (HttpOnly, SameSite=Strict); every form and htmx request carries
  HMAC(secret, nonce), which a page of another site can neither read nor compute.
* **Failed sign-ins** per source address: the first :data:`FREE_FAILURES` cost nothing;
  then each one doubles the wait before the next attempt, up to :data:`MAX_WAIT` s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FREE_FAILURES",
    "MAX_WAIT",
    "Session",
    "SessionSigner",
    "SignInThrottle",
]

SESSION_LIFETIME: Final = 12 * 3600.0  # seconds; then sign in again
FREE_FAILURES: Final = 5
MAX_WAIT: Final = 300.0
FORGET_AFTER: Final = 900.0  # a source's failures are forgotten after this long without one
MAX_SOURCES: Final = 10_000  # the throttle's table is bounded (oldest dropped first)


@dataclass(frozen=True)
class Session:
    """A valid session cookie's content: whose key (its SHA-256) and until when."""

    key_hash: str
    expires: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Makes and checks session cookies and CSRF tokens under one secret.

    The caller stores :meth:`issue`'s value in the session cookie, reads it back with
    :meth:`read` (None: not signed in), and checks form tokens with :meth:`csrf_ok`.
    """

    def __init__(self, secret: bytes | None = None, lifetime: float = SESSION_LIFETIME) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        if len(self._secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self.lifetime = lifetime

    def _mac(self, purpose: str, payload: str) -> str:
        message = f"{purpose}\x00{payload}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, key_hash: str, now: float) -> str:
        """The session cookie's value for the key whose SHA-256 is ``key_hash``."""
        body = {"k": key_hash, "e": round(now + self.lifetime), "n": secrets.token_hex(8)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac('session', payload)}"

    def read(self, value: str | None, now: float) -> Session | None:
        """The session in a cookie value, or None (absent, forged, malformed, expired)."""
        if not value or len(value) > 512 or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        key_hash, expires = body.get("k"), body.get("e")
        if not isinstance(key_hash, str) or not isinstance(expires, int | float):
            return None
        if expires <= now:
            return None
        return Session(key_hash=key_hash, expires=float(expires))

    @staticmethod
    def new_nonce() -> str:
        """A CSRF cookie's value."""
        return secrets.token_urlsafe(18)

    def csrf_token(self, nonce: str) -> str:
        """The token forms carry for the CSRF cookie ``nonce``."""
        return self._mac("csrf", nonce)

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """True when ``token`` was made for ``nonce`` by this secret."""
        if not nonce or not token or len(nonce) > 64 or len(token) > 128:
            return False
        return hmac.compare_digest(token, self.csrf_token(nonce))


@dataclass
class _Failures:
    count: int
    last: float


class SignInThrottle:
    """Failed sign-ins per source address.

    Before checking a key, ask :meth:`retry_after` (seconds to wait; 0: go ahead); then
    report :meth:`failed` or :meth:`succeeded`.
    """

    def __init__(
        self,
        free: int = FREE_FAILURES,
        max_wait: float = MAX_WAIT,
        forget_after: float = FORGET_AFTER,
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self.free = free
        self.max_wait = max_wait
        self.forget_after = forget_after
        self.max_sources = max_sources
        self._table: OrderedDict[str, _Failures] = OrderedDict()

    def _wait(self, count: int) -> float:
        if count < self.free:
            return 0.0
        return float(min(self.max_wait, 2 ** (count - self.free)))

    def retry_after(self, source: str, now: float) -> float:
        """Seconds before ``source`` may try again (0.0: now)."""
        entry = self._table.get(source)
        if entry is None:
            return 0.0
        if now - entry.last >= self.forget_after:
            del self._table[source]
            return 0.0
        return max(0.0, entry.last + self._wait(entry.count) - now)

    def failed(self, source: str, now: float) -> float:
        """Count a failure; returns the wait now imposed on ``source``."""
        entry = self._table.pop(source, None)
        if entry is None or now - entry.last >= self.forget_after:
            entry = _Failures(0, now)
        entry.count += 1
        entry.last = now
        self._table[source] = entry  # most recent last
        while len(self._table) > self.max_sources:
            self._table.popitem(last=False)
        return self._wait(entry.count)

    def succeeded(self, source: str) -> None:
        self._table.pop(source, None)

    def __len__(self) -> int:
        return len(self._table)
