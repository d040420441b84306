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


def _wire_number(user: str | None) -> str | None:
    """Read a SIP URI user part as an international number; E.164 or None."""
    if not user:
        return None
    candidate = unquote(user).split(";", 1)[0]
    candidate = _SEPARATORS.sub("", candidate)
    if candidate.startswith("+"):
        candidate = candidate[1:]
    elif candidate.startswith("00"):
        candidate = candidate[2:]
    if not _DIGITS.fullmatch(candidate):
        return None
    try:
        parsed = phonenumbers.parse("+" + candidate, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def dialed_number(request_uri_user: str | None, to_user: str | None) -> str | None:
    """The number a caller dialed, in E.164, or None.

    Taken from the Request-URI user part, falling back to the To user part when the
    Request-URI does not carry a number. Separators and ``;params`` are stripped; digits
    without ``+`` (or with a ``00`` international prefix) are read as international.
    """
    number = _wire_number(request_uri_user)
    if number is not None:
        return number
    return _wire_number(to_user)


def caller_number(user: str | None) -> str | None:
    """The caller's number from the From user part.

    E.164 when the user part reads as a number, the raw user part otherwise (for example
    ``"anonymous"``), None when there is no user part.
    """
    if not user:
        return None
    number = _wire_number(user)
    return number if number is not None else user
