"""Session cookies, CSRF tokens and the failed sign-in throttle, with a fake clock
(dashboard/security.py)."""

from __future__ import annotations

import pytest

from sipbridge.dashboard.security import (
    FREE_FAILURES,
    MAX_WAIT,
    Session,
    SessionSigner,
    SignInThrottle,
)

KEY_HASH = "a" * 64


def test_session_round_trip_and_expiry() -> None:
    signer = SessionSigner(b"k" * 32, lifetime=100)
    value = signer.issue(KEY_HASH, now=1000)
    assert signer.read(value, now=1050) == Session(KEY_HASH, 1100.0)
    assert signer.read(value, now=1100) is None  # expired
    # Each session is different (a nonce), even for the same key at the same time.
    assert signer.issue(KEY_HASH, now=1000) != value


@pytest.mark.parametrize(
    "forge",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # signature changed
        lambda v: "e30" + v[v.index(".") :],  # payload {} with the old signature
        lambda v: v.replace(".", ""),
        lambda v: v + ".x",
        lambda v: "",
        lambda v: "x" * 600,
    ],
)
def test_forged_sessions_are_refused(forge: object) -> None:
    signer = SessionSigner(b"k" * 32)
    value = signer.issue(KEY_HASH, now=0)
    assert callable(forge)
    assert signer.read(forge(value), now=1) is None


def test_another_secret_refuses_the_cookie() -> None:
    value = SessionSigner(b"1" * 32).issue(KEY_HASH, now=0)
    assert SessionSigner(b"2" * 32).read(value, now=1) is None
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SessionSigner(b"short")


def test_csrf_tokens_belong_to_their_nonce() -> None:
    signer = SessionSigner(b"k" * 32)
    nonce = signer.new_nonce()
    token = signer.csrf_token(nonce)
    assert signer.csrf_ok(nonce, token)
    assert not signer.csrf_ok(signer.new_nonce(), token)
    assert not signer.csrf_ok(nonce, None) and not signer.csrf_ok(None, token)
    assert not signer.csrf_ok(nonce, token + "x")
    # A session signature is not a CSRF token (purposes are separate).
    assert not signer.csrf_ok(nonce, signer.issue(nonce, 0).split(".")[1])


def test_throttle_doubles_the_wait_after_the_free_failures() -> None:
    throttle = SignInThrottle()
    now = 0.0
    for _ in range(FREE_FAILURES - 1):
        assert throttle.failed("192.0.2.1", now) == 0
        assert throttle.retry_after("192.0.2.1", now) == 0
    waits = [throttle.failed("192.0.2.1", now + i * 1000) for i in range(0)]
    assert waits == []
    assert throttle.failed("192.0.2.1", now) == 1
    assert throttle.retry_after("192.0.2.1", now + 0.5) == 0.5
    assert throttle.retry_after("192.0.2.2", now) == 0  # per source
    assert throttle.failed("192.0.2.1", now + 1) == 2
    assert throttle.failed("192.0.2.1", now + 3) == 4
    for step in range(20):
        wait = throttle.failed("192.0.2.1", now + 10 + step)
    assert wait == MAX_WAIT
    throttle.succeeded("192.0.2.1")
    assert throttle.retry_after("192.0.2.1", now + 40) == 0


def test_throttle_forgets_old_failures_and_stays_bounded() -> None:
    throttle = SignInThrottle(free=1, forget_after=60, max_sources=3)
    throttle.failed("a", 0)
    assert throttle.retry_after("a", 0.5) == 0.5
    assert throttle.retry_after("a", 61) == 0 and len(throttle) == 0
    throttle.failed("a", 100)
    assert throttle.failed("a", 200) == 1  # the first failure was forgotten: count 1 again
    for source in "bcd":
        throttle.failed(source, 300)
    assert len(throttle) == 3 and throttle.retry_after("a", 300) == 0  # oldest dropped
