import pytest

from sipbridge.numbers import (
    InvalidField,
    InvalidNumber,
    caller_location,
    caller_number,
    dialed_number,
    normalize_e164,
    normalize_region,
    read_number,
)


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
    assert str(info.value) == (
        "number: 'abc' is not a valid phone number (use E.164, e.g. +12025550101, "
        "or set a default region such as US for national formats)"
    )
    assert info.value.text == "abc"
    assert info.value.field == "number"
    assert isinstance(info.value, InvalidField)
    with pytest.raises(InvalidNumber) as info:
        normalize_e164("+1202555010")
    assert str(info.value) == (
        "number: '+1202555010' is not a valid phone number (use E.164, e.g. +12025550101)"
    )


def test_normalize_region() -> None:
    assert normalize_region(None) is None
    assert normalize_region(" us ") == "US"
    assert normalize_region("gb") == "GB"
    for bad in ("XX", "", "USA"):
        with pytest.raises(InvalidField, match=r"^default_region: ") as info:
            normalize_region(bad)
        assert info.value.field == "default_region"
    with pytest.raises(InvalidField, match=r"^default_region: "):
        normalize_e164("2025550101", default_region="XX")


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+12025550100", ("US", "Washington D.C.")),
        ("+14155550100", ("US", "San Francisco, CA")),
        ("+442079460958", ("GB", "London")),
        ("+33123456789", ("FR", None)),  # only the country is known
        ("+80012345678", (None, None)),  # non-geographic (international freephone)
        ("+19995550100", (None, None)),  # not a valid number
        ("+", (None, None)),
        ("anonymous", (None, None)),
        ("12025550100", (None, None)),  # not E.164
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_caller_location(number: str | None, expected: tuple[str | None, str | None]) -> None:
    assert caller_location(number) == expected


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
    [(None, None), ("bob", "alice"), ("", ""), ("+123", None), ("+999", "+1abc")],
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


@pytest.mark.parametrize(
    ("ruri", "region", "expected"),
    [
        ("2025550101", None, "2025550101"),  # kept as received: no invented +20...
        ("2025550101", "US", "+12025550101"),
        ("(202) 555-0101", "US", "+12025550101"),
        ("12025550101", "US", "+12025550101"),
        ("12025550101", None, "+12025550101"),
        ("02079460958", "GB", "+442079460958"),
        ("+2025550101", "US", "+2025550101"),  # with +: international, as sent
        ("123", None, "123"),
    ],
)
def test_dialed_number_bare_digits(ruri: str, region: str | None, expected: str) -> None:
    assert dialed_number(ruri, None, region) == expected
    assert dialed_number("s", ruri, region) == expected


def test_dialed_number_prefers_a_number_in_the_to_user_to_bare_digits() -> None:
    assert dialed_number("2025550101", "+12025550199") == "+12025550199"


def test_caller_number_bare_digits() -> None:
    assert caller_number("2025550101") == "2025550101"
    assert caller_number("2025550101", "US") == "+12025550101"


def test_read_number() -> None:
    assert read_number("12025550104") == "+12025550104"
    assert read_number("+1 202 555 0104") == "+12025550104"
    assert read_number("tel:+1-202-555-0104") == "+12025550104"
    assert read_number("2025550104", "us") == "+12025550104"
    with pytest.raises(InvalidNumber) as info:
        read_number("2025550104")
    assert "default region" in str(info.value)
    with pytest.raises(InvalidNumber):
        read_number("foo", "US")
    with pytest.raises(InvalidField, match=r"^default_region"):
        read_number("2025550104", "XX")
