"""Digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760) with a fake clock."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import random
import re
import struct
import time

import pytest

from sipbridge.sip.auth import (
    MAX_COUNTS_PER_NONCE,
    AuthResult,
    Credentials,
    DigestAuthenticator,
    digest_response,
    find_credentials,
    parse_algorithms,
    parse_authorization,
)

REALM = "198.51.100.7"
SECRET = b"s" * 32
URI = "sip:+12025550101@198.51.100.7"


def make_auth(**kwargs: object) -> DigestAuthenticator:
    counter = itertools.count(1)
    return DigestAuthenticator(
        REALM,
        SECRET,
        new_salt=lambda: next(counter).to_bytes(8, "big"),
        **kwargs,  # type: ignore[arg-type]
    )


def challenge_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]*))', value)
    }


def credentials(
    nonce: str,
    *,
    algorithm: str = "SHA-256",
    password: str = "secret",
    nc: str = "00000001",
    method: str = "INVITE",
    username: str = "acme",
    realm: str = REALM,
    uri: str = URI,
) -> Credentials:
    response = digest_response(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc,
        cnonce="c0ffee",
    )
    return Credentials(
        username, realm, nonce, uri, response, algorithm, qop="auth", nc=nc, cnonce="c0ffee"
    )


# ---------------------------------------------------------------- response vectors


def test_rfc2617_md5_vector() -> None:
    # RFC 2617 §3.5, the published example.
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("sha-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    # RFC 7616 §3.9.1, the published example for both algorithms.
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_sip_vector_computed_by_hand() -> None:
    # HA1 = MD5("acme:198.51.100.7:secret"), HA2 = MD5("INVITE:sip:..."), then
    # MD5(HA1:nonce:nc:cnonce:auth:HA2), written out with hashlib.
    import hashlib

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"acme:{REALM}:secret")
    ha2 = md5(f"INVITE:{URI}")
    expected = md5(f"{ha1}:abc:00000001:c0ffee:auth:{ha2}")
    assert credentials("abc", algorithm="MD5").response == expected


# ---------------------------------------------------------------- challenges


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    auth = make_auth()
    headers = auth.challenge(100.0)
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    first, second = (challenge_params(value) for _, value in headers)
    assert first["algorithm"] == "SHA-256" and second["algorithm"] == "MD5"
    assert first["realm"] == second["realm"] == REALM
    assert first["qop"] == second["qop"] == "auth"
    assert first["nonce"] == second["nonce"]
    assert "stale" not in first
    assert challenge_params(auth.challenge(100.0, stale=True)[0][1])["stale"] == "true"


def test_nonces_are_unique_and_signed() -> None:
    auth = make_auth()
    nonces = {auth.new_nonce(100.0) for _ in range(50)}
    assert len(nonces) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", n) for n in nonces)


def test_realm_is_quoted_with_escapes() -> None:
    auth = DigestAuthenticator('a "b" \\c', SECRET)
    value = auth.challenge(0.0)[0][1]
    assert value.startswith('Digest realm="a \\"b\\" \\\\c", ')


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"")
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, SECRET, nonce_lifetime=0)


# ---------------------------------------------------------------- verify


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_verify_ok_for_both_algorithms(algorithm: str) -> None:
    auth = make_auth()
    nonce = auth.new_nonce(100.0)
    result = auth.verify(
        credentials(nonce, algorithm=algorithm), method="INVITE", password="secret", now=101.0
    )
    assert result is AuthResult.OK


def test_wrong_password_fails_and_is_never_stale() -> None:
    auth = make_auth()
    nonce = auth.new_nonce(100.0)
    wrong = credentials(nonce, password="guess")
    assert auth.verify(wrong, method="INVITE", password="secret", now=101) is AuthResult.FAILED
    # Even with an expired nonce: stale is only said to a client that knows the password.
    assert auth.verify(wrong, method="INVITE", password="secret", now=1000) is AuthResult.FAILED


def test_method_is_part_of_the_digest() -> None:
    auth = make_auth()
    creds = credentials(auth.new_nonce(0.0), method="OPTIONS")
    assert auth.verify(creds, method="INVITE", password="secret", now=1) is AuthResult.FAILED


def test_replayed_nonce_count_is_refused() -> None:
    auth = make_auth()
    nonce = auth.new_nonce(0.0)
    creds = credentials(nonce)
    assert auth.verify(creds, method="INVITE", password="secret", now=1) is AuthResult.OK
    assert auth.verify(creds, method="INVITE", password="secret", now=2) is AuthResult.REUSED
    # The next count with the same nonce is a new request (RFC 7616 §3.4.5).
    again = credentials(nonce, nc="00000002")
    assert auth.verify(again, method="INVITE", password="secret", now=3) is AuthResult.OK


def test_expired_nonce_is_stale() -> None:
    auth = make_auth(nonce_lifetime=300.0)
    nonce = auth.new_nonce(1000.0)
    creds = credentials(nonce)
    assert auth.verify(creds, method="INVITE", password="secret", now=1301) is AuthResult.STALE
    fresh = credentials(auth.new_nonce(1000.0))
    assert auth.verify(fresh, method="INVITE", password="secret", now=1300) is AuthResult.OK


def test_nonce_from_the_future_is_stale() -> None:
    auth = make_auth()
    creds = credentials(auth.new_nonce(500.0))
    assert auth.verify(creds, method="INVITE", password="secret", now=499) is AuthResult.STALE


def test_foreign_or_forged_nonce_is_stale_with_the_right_password() -> None:
    other = DigestAuthenticator(REALM, b"another secret")
    foreign = credentials(other.new_nonce(0.0))
    auth = make_auth()
    assert auth.verify(foreign, method="INVITE", password="secret", now=1) is AuthResult.STALE
    for nonce in ("abc", "", "x" * 43, auth.new_nonce(0.0)[:-1] + "A", "é" * 43):
        creds = credentials(nonce)
        assert auth.verify(creds, method="INVITE", password="secret", now=1) in (
            AuthResult.STALE,
            AuthResult.OK,  # flipping the last character may leave the decoded bytes alone
        )


def test_tampered_timestamp_is_rejected() -> None:
    auth = make_auth(nonce_lifetime=300.0)
    nonce = auth.new_nonce(0.0)
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    raw[:8] = struct.pack("!q", 10_000_000)  # claim issue at t=10000 s
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    creds = credentials(forged)
    assert auth.verify(creds, method="INVITE", password="secret", now=10001) is AuthResult.STALE


@pytest.mark.parametrize(
    "change",
    [
        {"realm": "elsewhere"},
        {"algorithm": "SHA-512-256"},
        {"algorithm": "MD5-sess"},
        {"qop": ""},
        {"qop": "auth-int"},
        {"nc": "1"},
        {"nc": "0000000g"},
        {"cnonce": ""},
    ],
)
def test_unusable_parameters_fail(change: dict[str, str]) -> None:
    auth = make_auth()
    good = credentials(auth.new_nonce(0.0))
    creds = dataclasses.replace(good, **change)
    assert auth.verify(creds, method="INVITE", password="secret", now=1) is AuthResult.FAILED


def test_response_compare_ignores_hex_case() -> None:
    auth = make_auth()
    good = credentials(auth.new_nonce(0.0))
    upper = dataclasses.replace(good, response=good.response.upper())
    assert auth.verify(upper, method="INVITE", password="secret", now=1) is AuthResult.OK


def test_used_table_is_bounded_and_forgotten_nonces_stay_unusable() -> None:
    auth = make_auth(max_nonces=8)
    nonces = [auth.new_nonce(float(i)) for i in range(20)]
    for nonce in nonces:
        creds = credentials(nonce)
        assert auth.verify(creds, method="INVITE", password="secret", now=30) is AuthResult.OK
        assert auth.tracked_nonces <= 8
    # The first nonces were pushed out: they can never be replayed, only renewed.
    replay = credentials(nonces[0])
    assert auth.verify(replay, method="INVITE", password="secret", now=31) is AuthResult.STALE
    next_count = credentials(nonces[0], nc="00000002")
    assert auth.verify(next_count, method="INVITE", password="secret", now=31) is AuthResult.STALE
    # The newest are still tracked: a replay is a replay.
    recent = credentials(nonces[-1])
    assert auth.verify(recent, method="INVITE", password="secret", now=31) is AuthResult.REUSED


def test_expired_entries_are_pruned() -> None:
    auth = make_auth(nonce_lifetime=10.0)
    for i in range(5):
        creds = credentials(auth.new_nonce(float(i)))
        assert auth.verify(creds, method="INVITE", password="secret", now=i) is AuthResult.OK
    assert auth.tracked_nonces == 5
    creds = credentials(auth.new_nonce(100.0))
    assert auth.verify(creds, method="INVITE", password="secret", now=100) is AuthResult.OK
    assert auth.tracked_nonces == 1


def test_counts_per_nonce_are_bounded() -> None:
    auth = make_auth()
    nonce = auth.new_nonce(0.0)
    for nc in range(1, MAX_COUNTS_PER_NONCE + 1):
        creds = credentials(nonce, nc=f"{nc:08x}")
        assert auth.verify(creds, method="INVITE", password="secret", now=1) is AuthResult.OK
    creds = credentials(nonce, nc=f"{MAX_COUNTS_PER_NONCE + 1:08x}")
    assert auth.verify(creds, method="INVITE", password="secret", now=1) is AuthResult.STALE


# ---------------------------------------------------------------- parsing


def test_parse_full_header() -> None:
    value = (
        'Digest username="acme", realm="198.51.100.7", nonce="n1", '
        'uri="sip:+12025550101@198.51.100.7", response="abcdef", algorithm=SHA-256, '
        'qop=auth, nc=00000001, cnonce="c0ffee", opaque="op"'
    )
    assert parse_authorization(value) == Credentials(
        "acme", REALM, "n1", URI, "abcdef", "SHA-256", "auth", "00000001", "c0ffee", "op"
    )


def test_parse_escapes_commas_spacing_and_case() -> None:
    value = (
        'digest  USERNAME = "we \\"quote\\", and, commas" ,realm="r",nonce="n",'
        'uri="sip:x@y" , response="00"'
    )
    creds = parse_authorization(value)
    assert creds is not None
    assert creds.username == 'we "quote", and, commas'
    assert creds.algorithm == "MD5"  # the RFC default
    assert creds.qop == "" and creds.nc == ""


def test_parse_backslash_escape_of_backslash() -> None:
    creds = parse_authorization(
        'Digest username="a\\\\b", realm="r", nonce="n", uri="u", response="x"'
    )
    assert creds is not None and creds.username == "a\\b"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Basic dXNlcjpwYXNz",
        'Digest username="a"',  # nothing else
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
        'Digest username="a, realm="r", nonce="n", uri="u", response="x"',  # unterminated
        'Digest username="a" realm="r", nonce="n", uri="u", response="x"',  # no comma
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", =v',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x",,',
        "Digest " + "a=b, " * 2000,
        'Digest username="a\r\nX: y", realm="r", nonce="n", uri="u", response="x"',
        "Digest \x00\x01\x02",
    ],
)
def test_parse_rejects_malformed(value: str) -> None:
    assert parse_authorization(value) is None


def test_parse_never_raises_on_junk() -> None:
    rng = random.Random(7)
    alphabet = 'Digest usernamrealmnoc="\\,= \t\x00é'
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        parse_authorization(text)  # returns something or None, never raises


def test_parse_is_fast_on_hostile_input() -> None:
    hostile = 'Digest username="' + "\\a" * 1500 + ","
    started = time.perf_counter()
    for _ in range(100):
        parse_authorization(hostile)
    assert time.perf_counter() - started < 1.0


def test_find_credentials_picks_our_realm() -> None:
    other = 'Digest username="x", realm="other", nonce="n", uri="u", response="r"'
    ours = f'Digest username="acme", realm="{REALM}", nonce="n", uri="u", response="r"'
    found = find_credentials(["Basic abc", other, ours], REALM)
    assert found is not None and found.username == "acme"
    assert find_credentials([other], REALM) is None
    assert find_credentials([], REALM) is None


def test_parse_algorithms() -> None:
    assert parse_algorithms("sha-256, MD5") == ("SHA-256", "MD5")
    assert parse_algorithms("md5,md5") == ("MD5",)
    for bad in ("", " , ", "SHA-512-256", "md5-sess"):
        with pytest.raises(ValueError):
            parse_algorithms(bad)


def test_only_offered_algorithms_are_accepted() -> None:
    auth = DigestAuthenticator(REALM, SECRET, algorithms=("SHA-256",))
    [(_, only)] = auth.challenge(0.0)
    assert "algorithm=SHA-256" in only
    nonce = auth.new_nonce(0.0)
    md5 = credentials(nonce, algorithm="MD5")
    assert auth.verify(md5, method="INVITE", password="secret", now=1) is AuthResult.FAILED
    sha = credentials(nonce, algorithm="SHA-256")
    assert auth.verify(sha, method="INVITE", password="secret", now=1) is AuthResult.OK
    md5_first = DigestAuthenticator(REALM, SECRET, algorithms=("MD5", "SHA-256"))
    assert ["algorithm=MD5" in v for _, v in md5_first.challenge(0.0)] == [True, False]
