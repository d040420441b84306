import pytest

from sipbridge.numbers import InvalidNumber, caller_number, dialed_number, normalize_e164


@pytest.mark.parametrize(
    "text",
    [
        "+1 (202) 555-0101",
        "+12025550101",
        "tel:+1-202-555-0101",
        "TEL:+1.202.555.0101",
        "tel:+1-202-555-0101;ext=12",
        "  +1 202 555 0101  ",
    ],
)
def test_normalize_e164_accepts_common_formats(text: str) -> None:
    assert normalize_e164(text) == "+12025550101"


def test_normalize_e164_other_countries() -> None:
    assert normalize_e164("+44 20 7946 0958") == "+442079460958"
    assert normalize_e164("+49 30 901820") == "+4930901820"


def test_normalize_e164_default_region() -> None:
    assert normalize_e164("(202) 555-0101", default_region="US") == "+12025550101"
    assert normalize_e164("020 7946 0958", default_region="GB") == "+442079460958"


@pytest.mark.parametrize(
    "text",
    ["abc", "", "   ", "tel:", "12025550101", "+1202555010", "+999123456", "+1 202 555 01011"],
)
def test_normalize_e164_rejects_invalid(text: str) -> None:
    with pytest.raises(InvalidNumber):
        normalize_e164(text)


def test_invalid_number_message_and_type() -> None:
    with pytest.raises(ValueError) as info:
        normalize_e164("abc")
    assert isinstance(info.value, InvalidNumber)
    assert str(info.value) == ("'abc' is not a valid phone number (use E.164, e.g. +12025550101)")
    assert info.value.text == "abc"


@pytest.mark.parametrize(
    ("ruri", "expected"),
    [
        ("+12025550101", "+12025550101"),
        ("12025550101", "+12025550101"),
        ("0012025550101", "+12025550101"),
        ("+1-202-555-0101", "+12025550101"),
        ("+1 (202) 555.0101", "+12025550101"),
        ("+12025550101;npdi;rn=+12025550000", "+12025550101"),
        ("12025550101;user=phone", "+12025550101"),
        ("%2B12025550101", "+12025550101"),
        ("442079460958", "+442079460958"),
    ],
)
def test_dialed_number_from_request_uri(ruri: str, expected: str) -> None:
    assert dialed_number(ruri, None) == expected


def test_dialed_number_prefers_request_uri() -> None:
    assert dialed_number("+12025550101", "+12025550199") == "+12025550101"


@pytest.mark.parametrize("ruri", [None, "", "s", "bob", "+", "1", "+1abc"])
def test_dialed_number_falls_back_to_to_user(ruri: str | None) -> None:
    assert dialed_number(ruri, "12025550199") == "+12025550199"


@pytest.mark.parametrize(
    ("ruri", "to_user"),
    [(None, None), ("bob", "alice"), ("", ""), ("123", None), ("+999", "00")],
)
def test_dialed_number_none_when_nothing_is_a_number(ruri: str | None, to_user: str | None) -> None:
    assert dialed_number(ruri, to_user) is None


def test_caller_number() -> None:
    assert caller_number("+1 202 555 0101") == "+12025550101"
    assert caller_number("12025550101") == "+12025550101"
    assert caller_number("004930901820") == "+4930901820"
    assert caller_number("anonymous") == "anonymous"
    assert caller_number("Restricted") == "Restricted"
    assert caller_number(None) is None
    assert caller_number("") is None
