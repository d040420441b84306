"""E.164 phone number handling (thin layer over ``phonenumbers``).

Two flavours of parsing live here:

* :func:`normalize_e164` is strict and meant for numbers typed by an operator (CLI, API):
  the result must be a *valid* number for its region.
* :func:`dialed_number` / :func:`caller_number` are lenient and meant for the user part of
  SIP URIs coming off the wire: anything that is a *possible* number is accepted, because
  carriers send all sorts of formats and we would rather look a number up than reject it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

import phonenumbers
from phonenumbers import geocoder

__all__ = [
    "InvalidField",
    "InvalidNumber",
    "caller_location",
    "caller_number",
    "dialed_number",
    "normalize_e164",
    "normalize_region",
    "read_number",
]

# Visual separators allowed in phone numbers (RFC 3966 "visual-separator" plus spaces).
_SEPARATORS = re.compile(r"[\s\-.()]")
_DIGITS = re.compile(r"\d+")


class InvalidField(ValueError):
    """Bad input for one named field; ``str(exc)`` is ``"<field>: <detail>"``.

    The CLI prints it after ``error:`` and exits 2; the REST API answers 422 naming
    ``exc.field``.
    """

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


class InvalidNumber(InvalidField):
    """Raised when a text cannot be read as a valid phone number."""

    def __init__(self, text: str, field: str = "number", *, hint_region: bool = False) -> None:
        self.text = text
        self.hint_region = hint_region
        hint = "use E.164, e.g. +12025550101"
        if hint_region:
            hint += ", or set a default region such as US for national formats"
        super().__init__(field, f"{text!r} is not a valid phone number ({hint})")


def normalize_region(region: str | None) -> str | None:
    """``region`` as an upper-case ISO 3166 code known to ``phonenumbers`` (None stays None).

    Raises :class:`InvalidField` (field ``default_region``) for an unknown code.
    """
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidField(
            "default_region", f"{region!r} is not a known region code (use e.g. US, GB, DE)"
        )
    return code


def _strip_tel_scheme(text: str) -> str:
    stripped = text.strip()
    if stripped[:4].lower() == "tel:":
        stripped = stripped[4:]
    # tel URI parameters (";ext=12", ";phone-context=...") are not part of the number.
    return stripped.split(";", 1)[0].strip()


def normalize_e164(text: str, default_region: str | None = None) -> str:
    """Return ``text`` as an E.164 string (``+12025550101``).

    Accepts the usual human formats (``+1 (202) 555-0101``, ``tel:+1-202-555-0101``).
    Without a leading ``+`` the number is read in ``default_region`` (ISO 3166 code such as
    ``"US"``); with no region such a number is rejected. The number must be valid according
    to ``phonenumbers.is_valid_number``, otherwise :class:`InvalidNumber` is raised.
    """
    region = normalize_region(default_region)
    candidate = _strip_tel_scheme(text)
    hint_region = region is None and not candidate.startswith("+")
    if not candidate:
        raise InvalidNumber(text)
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(text, hint_region=hint_region) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber(text, hint_region=hint_region)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=8192)
def caller_location(number: str | None) -> tuple[str | None, str | None]:
    """``(country, region)`` of an E.164 caller number, each None when unknown.

    ``country`` is the ISO 3166 alpha-2 code (``"US"``); ``region`` the English geocoder
    description (``"Washington D.C."``, ``"London"``), None when ``phonenumbers`` only knows
    the country. Anything that is not an E.164 number (``"anonymous"``) gives ``(None, None)``.
    """
    if not number or not number.startswith("+"):
        return None, None
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None, None
    country = phonenumbers.region_code_for_number(parsed)
    if not country or country in (phonenumbers.UNKNOWN_REGION, "001"):  # 001: non-geographic
        return None, None
    description = geocoder.description_for_number(parsed, "en") or None
    if description is not None and description == geocoder.country_name_for_number(parsed, "en"):
        description = None
    return country, description


def _wire_number(user: str | None, region: str | None = None) -> str | None:
    """Read a SIP URI user part as a number; E.164 or None.

    With ``+`` or ``00`` the number is international and kept when *possible*. Bare digits
    are read in ``region`` first (national format), then as international without ``+``
    (``12025550101``, as many carriers send it); either reading must give a *valid*
    number, so ``2025550101`` without a region is not turned into ``+20...``.
    """
    if not user:
        return None
    candidate = _SEPARATORS.sub("", unquote(user).split(";", 1)[0])
    if candidate.startswith("+"):
        digits, international = candidate[1:], True
    elif candidate.startswith("00"):
        digits, international = candidate[2:], True
    else:
        digits, international = candidate, False
    if not _DIGITS.fullmatch(digits):
        return None
    readings: list[tuple[str, str | None]] = [("+" + digits, None)]
    if not international and region is not None:
        readings.insert(0, (digits, region))
    for text, reading_region in readings:
        try:
            parsed = phonenumbers.parse(text, reading_region)
        except phonenumbers.NumberParseException:
            continue
        usable = (
            phonenumbers.is_possible_number(parsed)
            if international
            else phonenumbers.is_valid_number(parsed)
        )
        if usable:
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def _digits_as_received(user: str | None) -> str | None:
    """A user part of bare digits (separators and ``;params`` dropped), else None."""
    if not user:
        return None
    candidate = _SEPARATORS.sub("", unquote(user).split(";", 1)[0])
    return candidate if _DIGITS.fullmatch(candidate) else None


def read_number(text: str, default_region: str | None = None) -> str:
    """``text`` read the way numbers off the wire are (:func:`dialed_number`), for a
    filter typed by an operator: E.164, or :class:`InvalidNumber`."""
    region = normalize_region(default_region)
    number = _wire_number(_strip_tel_scheme(text), region)
    if number is None:
        bare = not _strip_tel_scheme(text).startswith("+")
        raise InvalidNumber(text, hint_region=region is None and bare)
    return number


def dialed_number(
    request_uri_user: str | None, to_user: str | None, default_region: str | None = None
) -> str | None:
    """The number a caller dialed, or None.

    Taken from the Request-URI user part, falling back to the To user part when the
    Request-URI does not carry a number. Separators and ``;params`` are stripped. E.164
    when a number reads as one (national formats in ``default_region``); bare digits that
    do not are kept as received (``2025550101`` without a region), never given an
    invented ``+``.
    """
    for user in (request_uri_user, to_user):
        number = _wire_number(user, default_region)
        if number is not None:
            return number
    return _digits_as_received(request_uri_user) or _digits_as_received(to_user)


def caller_number(user: str | None, default_region: str | None = None) -> str | None:
    """The caller's number from the From user part.

    E.164 when the user part reads as a number (national formats in ``default_region``),
    the raw user part otherwise (``"anonymous"``, or bare digits that are no valid
    number), None when there is no user part.
    """
    if not user:
        return None
    number = _wire_number(user, default_region)
    return number if number is not None else user
