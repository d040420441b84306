"""The transfer policy: allow patterns, the default policy, identity headers."""

import pytest

from sipbridge.agent.transfers import IDENTITY_HEADERS, normalize_pattern, transfer_refusal

DIALED = "+12025550101"  # Washington, DC


def reason(target: str, allow: list[str] | None = None, **headers: str) -> str | None:
    patterns = [normalize_pattern(p) for p in allow or []]
    refusal = transfer_refusal(target, headers, patterns, DIALED)
    return None if refusal is None else refusal.split(":")[0]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tel:+12025550123", None),  # same country
        ("tel:+1-202-555-0123", None),  # visual separators (RFC 3966)
        ("tel:+18005550123", None),  # toll free at home
        ("tel:+19005551234", "premium_rate"),
        ("tel:+19765551234", "not_a_number"),  # 976: no such area code, a known scam
        ("tel:+18765551234", "other_country"),  # +1 876 is Jamaica
        ("tel:+14165550123", "other_country"),  # +1 416 is Canada
        ("tel:+442079460000", "other_country"),
        ("tel:5551234;phone-context=example.com", "not_a_number"),
        ("sip:anything@evil.example", "sip_target"),
        ("sips:desk@pbx.example.com", "sip_target"),
    ],
)
def test_default_policy(target: str, expected: str | None) -> None:
    assert reason(target) == expected


def test_default_policy_without_a_called_number_refuses_numbers() -> None:
    refusal = transfer_refusal("tel:+12025550123", {}, [], None)
    assert refusal is not None and refusal.startswith("other_country")


def test_patterns_replace_the_default() -> None:
    allow = ["+1900555*", "pbx.example.com", "sales@*.example.org"]
    assert reason("tel:+19005551234", allow) is None  # premium, but allowed by name
    assert reason("tel:+12025550123", allow) == "not_allowed"  # the default no longer applies
    assert reason("sip:anyone@pbx.example.com", allow) is None
    assert reason("sip:anyone@PBX.Example.com:5070;transport=tcp", allow) is None
    assert reason("sip:pbx.example.com", allow) is None
    assert reason("sip:sales@eu.example.org", allow) is None
    assert reason("sip:support@eu.example.org", allow) == "not_allowed"
    assert reason("sip:anything@evil.example", allow) == "not_allowed"
    assert reason("sip:x@pbx.example.com.evil.example", allow) == "not_allowed"
    # A number pattern never lets a sip: target through, nor a host pattern a number.
    assert reason("sip:+19005551234@evil.example", ["+1*"]) == "not_allowed"
    assert reason("tel:+12025550123", ["pbx.example.com"]) == "not_allowed"
    assert reason("sip:anything@evil.example", ["*"]) is None


@pytest.mark.parametrize(
    "name",
    [
        "P-Asserted-Identity",
        "p-preferred-identity",
        "Diversion",
        "History-Info",
        "Privacy",
        "Referred-By",
        "b",
        "Remote-Party-ID",
    ],
)
def test_identity_headers_refuse_the_transfer_whatever_the_policy(name: str) -> None:
    assert name.lower() in IDENTITY_HEADERS
    assert reason("tel:+12025550123", ["*"], **{name: "<sip:boss@example.com>"}) == (
        "identity_header"
    )
    assert reason("tel:+12025550123", **{"X-Ticket": "1", "User-to-User": "56a3"}) is None


@pytest.mark.parametrize(
    ("pattern", "stored"),
    [
        ("+1202555*", "+1202555*"),
        ("tel:+1-202-555-*", "+1202555*"),
        ("PBX.Example.com", "pbx.example.com"),
        ("sip:Sales@PBX.example.com", "Sales@pbx.example.com"),
        ("*", "*"),
    ],
)
def test_normalize_pattern(pattern: str, stored: str) -> None:
    assert normalize_pattern(pattern) == stored


@pytest.mark.parametrize("pattern", ["", "+12a", "bad host", "x" * 300, "a@b@c d", "+"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        normalize_pattern(pattern)
