"""The access policy: trunks by source network and/or digest credentials."""

from __future__ import annotations

import itertools
import re

import pytest

from sipbridge.sip.access import (
    AccessPolicy,
    Allowed,
    Challenged,
    Refused,
    TrunkAccess,
    parse_address,
)
from sipbridge.sip.auth import DigestAuthenticator, digest_response
from sipbridge.sip.guard import DEFAULT_TRUNK_MESSAGE_RATE
from sipbridge.sip.message import Request, parse_message

REALM = "sipbridge.test"
URI = "sip:+12025550101@192.0.2.1"


def make_policy(*trunks: TrunkAccess, refuse_status: int | None = None) -> AccessPolicy:
    counter = itertools.count(1)
    auth = DigestAuthenticator(REALM, b"k" * 32, new_salt=lambda: next(counter).to_bytes(8, "big"))
    policy = AccessPolicy(auth, refuse_status=refuse_status)
    policy.set_trunks(trunks)
    return policy


def request(method: str = "INVITE", authorization: str | None = None, uri: str = URI) -> Request:
    auth_line = f"Authorization: {authorization}\r\n" if authorization else ""
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:alice@203.0.113.5>;tag=a\r\n"
        f"To: <{URI}>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        f"{auth_line}Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def nonce_of(decision: object) -> str:
    assert isinstance(decision, Challenged)
    m = re.search(r'nonce="([^"]+)"', decision.headers[0][1])
    assert m is not None
    return m.group(1)


def authorization(
    nonce: str,
    *,
    username: str = "acme",
    password: str = "pw",
    algorithm: str = "SHA-256",
    method: str = "INVITE",
    uri: str = URI,
    nc: str = "00000001",
    realm: str = REALM,
) -> str:
    response = digest_response(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        nc=nc,
        cnonce="cn",
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc}, cnonce="cn"'
    )


OPEN = TrunkAccess.from_cidrs("carrier", ["203.0.113.0/24"])
NARROW = TrunkAccess.from_cidrs("carrier-pop", ["203.0.113.5/32"])
DIGEST = TrunkAccess.from_cidrs("acme", [], "acme", "pw")
BOTH = TrunkAccess.from_cidrs("strict", ["198.51.100.0/24"], "strict", "pw2")
NEITHER = TrunkAccess("nothing")


# ---------------------------------------------------------------- no trunks


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_no_trunks_admits_loopback_only(host: str) -> None:
    policy = make_policy()
    assert policy.check(request(), host, 0.0) == Allowed(None)
    assert policy.knows(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "203.0.113.5", "10.0.0.1", "2001:db8::1", "not-an-ip", ""]
)
def test_no_trunks_refuses_everyone_else(host: str) -> None:
    policy = make_policy()
    assert isinstance(policy.check(request(), host, 0.0), Refused)
    assert isinstance(policy.check(request("OPTIONS"), host, 0.0), Refused)
    assert not policy.knows(host)


def test_trunks_configured_loopback_is_nobody() -> None:
    policy = make_policy(OPEN)
    assert isinstance(policy.check(request(), "127.0.0.1", 0.0), Refused)


# ---------------------------------------------------------------- CIDR trunks


def test_cidr_trunk_admits_its_sources() -> None:
    policy = make_policy(OPEN)
    assert policy.check(request(), "203.0.113.77", 0.0) == Allowed("carrier")
    assert isinstance(policy.check(request(), "203.0.114.1", 0.0), Refused)


def test_most_specific_network_wins() -> None:
    policy = make_policy(OPEN, NARROW)
    assert policy.check(request(), "203.0.113.5", 0.0) == Allowed("carrier-pop")
    assert policy.check(request(), "203.0.113.6", 0.0) == Allowed("carrier")


def test_options_from_trunk_sources_only() -> None:
    policy = make_policy(OPEN, DIGEST)
    assert policy.check(request("OPTIONS"), "203.0.113.9", 0.0) == Allowed("carrier")
    # OPTIONS from elsewhere is never challenged, even with digest trunks around.
    assert isinstance(policy.check(request("OPTIONS"), "192.0.2.50", 0.0), Refused)


def test_ipv6_networks() -> None:
    policy = make_policy(TrunkAccess.from_cidrs("v6", ["2001:db8::/32"]))
    assert policy.check(request(), "2001:db8::5", 0.0) == Allowed("v6")
    assert policy.check(request(), "[2001:db8::5]", 0.0) == Allowed("v6")
    assert isinstance(policy.check(request(), "2001:db9::5", 0.0), Refused)
    assert isinstance(policy.check(request(), "203.0.113.5", 0.0), Refused)


def test_trunk_with_neither_matches_nothing() -> None:
    policy = make_policy(NEITHER)
    assert isinstance(policy.check(request(), "127.0.0.1", 0.0), Refused)
    assert not policy.knows("127.0.0.1")


def test_from_cidrs_accepts_host_bits_and_rejects_junk() -> None:
    trunk = TrunkAccess.from_cidrs("t", [" 10.1.2.3/8 "])
    assert [str(n) for n in trunk.networks] == ["10.0.0.0/8"]
    with pytest.raises(ValueError):
        TrunkAccess.from_cidrs("t", ["10.0.0.0/99"])


def test_parse_address() -> None:
    assert str(parse_address("::ffff:192.0.2.1")) == "192.0.2.1"
    assert str(parse_address("fe80::1%eth0")) == "fe80::1"
    assert parse_address("example.com") is None


# ---------------------------------------------------------------- digest trunks


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_digest_trunk_challenge_then_admit(algorithm: str) -> None:
    policy = make_policy(DIGEST)
    first = policy.check(request(), "192.0.2.50", 10.0)
    assert isinstance(first, Challenged) and first.reason == "auth_required"
    assert [v.split("algorithm=")[1].split(",")[0] for _, v in first.headers] == [
        "SHA-256",
        "MD5",
    ]
    header = authorization(nonce_of(first), algorithm=algorithm)
    assert policy.check(request(authorization=header), "192.0.2.50", 11.0) == Allowed("acme")


def test_wrong_password_is_challenged_again_not_stale() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    decision = policy.check(request(authorization=authorization(nonce, password="no")), "x", 1)
    assert isinstance(decision, Refused)  # "x" is no address at all
    decision = policy.check(
        request(authorization=authorization(nonce, password="no")), "192.0.2.50", 1.0
    )
    assert isinstance(decision, Challenged) and decision.reason == "auth_failed"
    assert "stale" not in decision.headers[0][1]
    assert nonce_of(decision) != nonce


def test_unknown_username_fails_like_a_wrong_password() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    header = authorization(nonce, username="root", password="pw")
    decision = policy.check(request(authorization=header), "192.0.2.50", 1.0)
    assert isinstance(decision, Challenged) and decision.reason == "auth_failed"


def test_expired_nonce_gets_stale_challenge() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    late = policy.check(request(authorization=authorization(nonce)), "192.0.2.50", 301.0)
    assert isinstance(late, Challenged) and late.reason == "auth_stale"
    assert all(value.endswith(", stale=true") for _, value in late.headers)


def test_replay_is_challenged() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    header = authorization(nonce)
    assert policy.check(request(authorization=header), "192.0.2.50", 1.0) == Allowed("acme")
    replay = policy.check(request(authorization=header), "192.0.2.99", 2.0)
    assert isinstance(replay, Challenged) and replay.reason == "auth_replayed"
    next_nc = authorization(nonce, nc="00000002")
    assert policy.check(request(authorization=next_nc), "192.0.2.50", 3.0) == Allowed("acme")


def test_digest_uri_must_name_the_request_uri() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    other = authorization(nonce, uri="sip:+19995550000@192.0.2.1")
    decision = policy.check(request(authorization=other), "192.0.2.50", 1.0)
    assert isinstance(decision, Challenged) and decision.reason == "auth_failed"
    junk = authorization(nonce, uri="not a uri")
    decision = policy.check(request(authorization=junk), "192.0.2.50", 1.0)
    assert isinstance(decision, Challenged)
    # The domain alone (SIPp's way) is fine; another host is not.
    domain = authorization(nonce, uri="sip:192.0.2.1:5060")
    assert policy.check(request(authorization=domain), "192.0.2.50", 1.0) == Allowed("acme")
    elsewhere = authorization(nonce, uri="sip:192.0.2.2", nc="00000002")
    decision = policy.check(request(authorization=elsewhere), "192.0.2.50", 1.0)
    assert isinstance(decision, Challenged) and decision.reason == "auth_failed"
    # A port or parameters added on the way do not matter.
    moved = request(
        authorization=authorization(nonce, nc="00000003"),
        uri="sip:+12025550101@192.0.2.1:5060;x=y",
    )
    assert policy.check(moved, "192.0.2.50", 1.0) == Allowed("acme")


def test_credentials_for_another_realm_are_ignored() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    header = authorization(nonce, realm="elsewhere")
    decision = policy.check(request(authorization=header), "192.0.2.50", 1.0)
    assert isinstance(decision, Challenged) and decision.reason == "auth_required"


def test_malformed_authorization_is_a_missing_one() -> None:
    policy = make_policy(DIGEST)
    decision = policy.check(request(authorization='Digest username="a'), "192.0.2.50", 0.0)
    assert isinstance(decision, Challenged) and decision.reason == "auth_required"


def test_both_cidr_and_credentials_required() -> None:
    policy = make_policy(BOTH)
    # Outside the networks: not even challenged.
    assert isinstance(policy.check(request(), "192.0.2.50", 0.0), Refused)
    inside = "198.51.100.20"
    first = policy.check(request(), inside, 0.0)
    assert isinstance(first, Challenged)
    header = authorization(nonce_of(first), username="strict", password="pw2")
    assert policy.check(request(authorization=header), inside, 1.0) == Allowed("strict")
    # Right credentials from outside the networks: refused.
    header2 = authorization(nonce_of(first), username="strict", password="pw2", nc="00000002")
    assert isinstance(policy.check(request(authorization=header2), "192.0.2.50", 1.0), Refused)
    # OPTIONS pings from inside need no credentials.
    assert policy.check(request("OPTIONS"), inside, 0.0) == Allowed("strict")


def test_options_with_valid_credentials_is_admitted() -> None:
    policy = make_policy(DIGEST)
    nonce = nonce_of(policy.check(request(), "192.0.2.50", 0.0))
    header = authorization(nonce, method="OPTIONS")
    assert policy.check(request("OPTIONS", header), "192.0.2.50", 1.0) == Allowed("acme")
    bad = authorization(nonce, method="OPTIONS", password="no", nc="00000002")
    assert isinstance(policy.check(request("OPTIONS", bad), "192.0.2.50", 1.0), Refused)


def test_refuse_status_is_the_policy_setting() -> None:
    assert make_policy().refuse_status is None
    assert make_policy(refuse_status=403).refuse_status == 403


def test_set_trunks_replaces_the_list() -> None:
    policy = make_policy(OPEN)
    assert policy.check(request(), "203.0.113.5", 0.0) == Allowed("carrier")
    policy.set_trunks([])
    assert isinstance(policy.check(request(), "203.0.113.5", 0.0), Refused)
    assert policy.check(request(), "127.0.0.1", 0.0) == Allowed(None)
    assert policy.trunks == ()


def test_message_rate_is_the_most_specific_trunks_or_none_for_strangers() -> None:
    wide = TrunkAccess.from_cidrs("wide", ["203.0.113.0/24"], max_message_rate=300.0)
    pop = TrunkAccess.from_cidrs("pop", ["203.0.113.5/32"], max_message_rate=0.0)
    policy = make_policy(wide, pop, DIGEST, BOTH)
    assert policy.message_rate("203.0.113.9") == 300.0
    assert policy.message_rate("203.0.113.5") == 0.0  # no limit
    assert policy.message_rate("::ffff:203.0.113.9") == 300.0
    assert policy.message_rate("198.51.100.7") == DEFAULT_TRUNK_MESSAGE_RATE  # unset: default
    assert policy.message_rate("192.0.2.1") is None  # a stranger: the unknown-source rate
    assert policy.message_rate("not-an-address") is None
    # Loopback while no trunk exists keeps the unknown-source rate.
    assert make_policy().message_rate("127.0.0.1") is None
