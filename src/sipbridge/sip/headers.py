"""SIP header fields (RFC 3261 §7.3): the :class:`Headers` multi-map and header names.

Header values are kept as text (full header names, folding undone). Compact forms are
expanded and known names spelled as RFC 3261 §20 writes them (``canonical_header_name``);
list headers (Via, Contact, Route...) are split at the commas that separate elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sipbridge.sip import grammar

__all__ = ["Headers", "canonical_header_name"]

# RFC 3261 §7.3.3 and §20 (plus RFC 3265, 3515, 3892, 3841, 4028, 4474): compact forms.
_COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# The usual spelling of the header names we know, so that "cseq" or "CALL-ID" come out as
# RFC 3261 §20 writes them. Other names are kept as received.
_KNOWN_NAMES = {
    name.lower(): name
    for name in (
        *_COMPACT.values(),
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "Call-Info",
        "Content-Disposition",
        "Content-Language",
        "CSeq",
        "Date",
        "Diversion",
        "Error-Info",
        "Expires",
        "History-Info",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Min-SE",
        "Organization",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Priority",
        "Privacy",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "Reason",
        "Record-Route",
        "Replaces",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "Server",
        "Service-Route",
        "Subscription-State",
        "Timestamp",
        "Unsupported",
        "User-Agent",
        "Warning",
        "WWW-Authenticate",
    )
}

# RFC 3261 §7.3.1: headers whose grammar is a comma-separated list, so that one line may
# carry several values. Others (Date, WWW-Authenticate...) contain commas that do not
# separate anything and are never split.
_LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Contact",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Diversion",
        "Error-Info",
        "History-Info",
        "In-Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Reject-Contact",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)


# One lookup per header line: lower-cased name (compact or full) -> canonical name.
_CANONICAL = {**_KNOWN_NAMES, **_COMPACT}


def canonical_header_name(name: str) -> str:
    """The full, conventionally spelled name of a header (compact forms expanded)."""
    return _CANONICAL.get(name.lower(), name)


class Headers:
    """An ordered multi-map of header fields: (canonical name, value) in message order.

    Names are case-insensitive and compact forms are expanded on the way in. Values are the
    text after the colon with folding undone and surrounding whitespace removed.
    """

    __slots__ = ("_items", "_version")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Entries are (lower-case canonical name, canonical name, value).
        self._items: list[tuple[str, str, str]] = []
        # Bumped on every change so that messages can tell their parsed view is stale.
        self._version = 0
        for name, value in items:
            self.add(name, value)

    def _append(self, name: str, value: str) -> None:
        # The parser's path: the name is a token and the value holds no line break.
        canonical = canonical_header_name(name)
        self._items.append((canonical.lower(), canonical, value))
        self._version += 1

    @staticmethod
    def _key(name: str) -> str:
        return canonical_header_name(name).lower()

    def add(self, name: str, value: str) -> None:
        """Append a header field (after all the others)."""
        _check_field(name, value)
        self._append(name, value)

    def set(self, name: str, value: str) -> None:
        """Replace every field called ``name`` by one, where the first one was (else at
        the end)."""
        _check_field(name, value)
        self._replace(name, [value])

    def _replace(self, name: str, values: Sequence[str]) -> None:
        key = self._key(name)
        canonical = canonical_header_name(name)
        new = [(key, canonical, value) for value in values]
        items: list[tuple[str, str, str]] = []
        for item in self._items:
            if item[0] == key:
                items.extend(new)
                new = []
            else:
                items.append(item)
        items.extend(new)
        self._items = items
        self._version += 1

    def remove(self, name: str) -> None:
        """Remove every field called ``name`` (nothing happens when there is none)."""
        key = self._key(name)
        self._items = [item for item in self._items if item[0] != key]
        self._version += 1

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (for list headers, the first list element)."""
        key = self._key(name)
        for item in self._items:
            if item[0] == key:
                if key not in _LIST_HEADERS:
                    return item[2]
                elements = grammar.split_list(item[2])
                if elements:
                    return elements[0]
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list headers (Via, Contact, Route...) are split at the
        commas that separate elements, so ``Via: a, b`` gives two values."""
        key = self._key(name)
        values = [item[2] for item in self._items if item[0] == key]
        if key not in _LIST_HEADERS:
            return values
        return [element for value in values for element in grammar.split_list(value)]

    def get_lines(self, name: str) -> list[str]:
        """The values of ``name`` one per header field line, never split."""
        key = self._key(name)
        return [item[2] for item in self._items if item[0] == key]

    def items(self) -> list[tuple[str, str]]:
        """Every field as (canonical name, value), in order."""
        return [(item[1], item[2]) for item in self._items]

    def copy(self) -> Headers:
        new = Headers()
        new._items = list(self._items)
        return new

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._key(name)
        return any(item[0] == key for item in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _check_field(name: str, value: str) -> None:
    # A CR or LF in a value would let code-built values inject header lines (RFC 3261
    # §7.3.1 allows neither once folding is undone).
    if not grammar.is_token(name):
        raise ValueError(f"invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the value of {name}")
