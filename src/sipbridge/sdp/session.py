"""SDP session descriptions (RFC 4566): parse and serialize.

The parser is strict about what offer/answer needs (``v=``, ``o=``, ``c=``, ``m=``) and
tolerant about the rest: LF-only line ends, blank lines and line types it does not know are
accepted (RFC 4566 §5: unknown types are ignored), and kept so that ``serialize`` gives them
back. Text is read as UTF-8 (RFC 4566 §5.1 default charset); bytes that are not UTF-8 survive
a round trip unchanged.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DIRECTIONS",
    "MediaDescription",
    "Origin",
    "SdpError",
    "SessionDescription",
    "address_type",
    "parse_sdp",
]

# RFC 4566 §6 media direction attributes; sendrecv is the default when none is present.
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")

Attribute = tuple[str, str | None]


class SdpError(ValueError):
    """The bytes are not a session description this parser can use."""


def address_type(address: str) -> str:
    """The RFC 4566 §5.7 ``<addrtype>`` of an address literal: ``IP6`` for IPv6, else
    ``IP4`` (a domain name is taken as IPv4, the common case)."""
    return "IP6" if ":" in address else "IP4"


def _find_direction(attributes: list[Attribute]) -> str | None:
    direction = None
    for name, value in attributes:
        if value is None and name in DIRECTIONS:
            direction = name
    return direction


def _format_attribute(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


@dataclass
class Origin:
    """The ``o=`` line (RFC 4566 §5.2). Session id and version are kept as the digits
    received: they are compared, never computed with, and may exceed 64 bits."""

    username: str
    session_id: str
    session_version: str
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"

    @classmethod
    def parse(cls, value: str) -> Origin:
        fields = value.split()
        if len(fields) != 6:
            raise SdpError(f"o= needs 6 fields, got {len(fields)}: {value!r}")
        return cls(*fields)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class MediaDescription:
    """One ``m=`` section (RFC 4566 §5.14) with its ``c=`` and ``a=`` lines.

    ``connection`` is the address of a media-level ``c=`` line (with any ``/ttl`` suffix of
    a multicast address), ``None`` when the section has none, and ``connection_type`` its
    ``IP4``/``IP6`` (None: from the address, see :func:`address_type`); see
    :meth:`SessionDescription.connection_for`. ``port_count`` is the ``/2`` of
    ``m=audio 49170/2 ...``. ``other`` keeps ``i=``, ``b=``, ``k=`` and unknown lines as
    (type, value) in the order received.
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    port_count: int | None = None
    other: list[tuple[str, str]] = field(default_factory=list)
    connection_type: str | None = None

    def attribute(self, name: str) -> str | None:
        """The value of the first ``a=name:value`` line, None when absent or valueless."""
        for attr, value in self.attributes:
            if attr == name:
                return value
        return None

    def rtpmap(self) -> dict[int, tuple[str, int, int | None]]:
        """``a=rtpmap`` lines (RFC 4566 §6) as payload type → (encoding name, clock rate,
        channels or None). Lines that do not parse are skipped: a peer's typo in one
        mapping should not cost the whole offer."""
        result: dict[int, tuple[str, int, int | None]] = {}
        for name, value in self.attributes:
            if name != "rtpmap" or value is None:
                continue
            pt_text, _, encoding = value.strip().partition(" ")
            parts = encoding.strip().split("/")
            try:
                pt = int(pt_text)
                clock = int(parts[1])
                channels = int(parts[2]) if len(parts) > 2 else None
            except (ValueError, IndexError):
                continue
            if parts[0] and 0 <= pt <= 127 and len(parts) <= 3:
                result.setdefault(pt, (parts[0], clock, channels))
        return result

    def fmtp(self) -> dict[int, str]:
        """``a=fmtp:<pt> <parameters>`` lines as payload type → parameter string."""
        result: dict[int, str] = {}
        for name, value in self.attributes:
            if name != "fmtp" or value is None:
                continue
            pt_text, _, params = value.strip().partition(" ")
            try:
                pt = int(pt_text)
            except ValueError:
                continue
            result.setdefault(pt, params.strip())
        return result

    @property
    def direction(self) -> str:
        """The media-level direction attribute, ``sendrecv`` when there is none. A
        session-level attribute is taken into account by
        :meth:`SessionDescription.direction_for`."""
        return _find_direction(self.attributes) or "sendrecv"

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 4566 §6), None when absent or not a number."""
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            ptime = round(float(value))
        except ValueError:
            return None
        return ptime if 0 < ptime <= 10000 else None

    def lines(self) -> list[str]:
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        result = [" ".join(["m=" + self.media, str(port), self.proto, *self.formats])]
        result.extend(f"{kind}={value}" for kind, value in self.other if kind == "i")
        if self.connection is not None:
            kind = self.connection_type or address_type(self.connection)
            result.append(f"c=IN {kind} {self.connection}")
        result.extend(f"{kind}={value}" for kind, value in self.other if kind != "i")
        result.extend(_format_attribute(name, value) for name, value in self.attributes)
        return result


@dataclass
class SessionDescription:
    """A whole session description (RFC 4566 §5).

    ``connection_type`` is the ``IP4``/``IP6`` of the session-level ``c=`` line (None: from
    the address). ``times`` holds the ``t=`` lines; ``other`` keeps the session-level
    ``i=``, ``u=``, ``e=``, ``p=``, ``b=``, ``r=``, ``z=``, ``k=`` and unknown lines in the
    order received.
    """

    origin: Origin
    session_name: str = "-"
    connection: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    times: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    version: int = 0
    other: list[tuple[str, str]] = field(default_factory=list)
    connection_type: str | None = None

    def connection_for(self, media: MediaDescription) -> str | None:
        """Where ``media`` is sent: its own ``c=`` address, else the session's
        (RFC 4566 §5.7)."""
        return media.connection if media.connection is not None else self.connection

    def connection_type_for(self, media: MediaDescription) -> str:
        """The address type (``IP4`` or ``IP6``) of where ``media`` is sent: what its
        ``c=`` line says (RFC 4566 §5.7), which matters for a domain name; ``IP4`` when
        there is no address at all."""
        if media.connection is not None:
            return media.connection_type or address_type(media.connection)
        if self.connection is not None:
            return self.connection_type or address_type(self.connection)
        return "IP4"

    def direction_for(self, media: MediaDescription) -> str:
        """The direction of ``media``: its own attribute, else the session-level one, else
        sendrecv (RFC 3264 §5.1)."""
        return _find_direction(media.attributes) or _find_direction(self.attributes) or "sendrecv"

    def serialize(self) -> bytes:
        """The description with CRLF line ends, lines in the RFC 4566 §5 order."""
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        # i= u= e= p= precede c=; b= follows it; r= z= k= follow t= (RFC 4566 §5).
        before_c = ("i", "u", "e", "p")
        lines.extend(f"{kind}={value}" for kind, value in self.other if kind in before_c)
        if self.connection is not None:
            kind = self.connection_type or address_type(self.connection)
            lines.append(f"c=IN {kind} {self.connection}")
        lines.extend(f"{kind}={value}" for kind, value in self.other if kind == "b")
        lines.extend(f"t={start} {stop}" for start, stop in self.times)
        lines.extend(
            f"{kind}={value}" for kind, value in self.other if kind not in (*before_c, "b")
        )
        lines.extend(_format_attribute(name, value) for name, value in self.attributes)
        for media in self.media:
            lines.extend(media.lines())
        return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def _parse_connection(value: str) -> tuple[str, str]:
    # RFC 4566 §5.7 (RFC 8866 §5.7): c=<nettype> <addrtype> <connection-address>
    fields = value.split()
    if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6") or not fields[2]:
        raise SdpError(f"invalid c= line: {value!r}")
    kind, address = fields[1], fields[2]
    if not _address_matches(kind, address.split("/", 1)[0]):
        raise SdpError(f"c= address {address!r} is not of type {kind}: {value!r}")
    return kind, address


def _address_matches(kind: str, address: str) -> bool:
    """An IPv6 literal only under IP6, an IPv4 literal only under IP4 (RFC 4566 §5.7
    unicast-address); a domain name under either. ``::ffff:192.0.2.1`` is IPv6."""
    if ":" in address:
        return kind == "IP6"
    if kind == "IP4":
        return True
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return True  # a domain name: resolved as IPv6 (the addrtype says so)
    return False


def _parse_media(value: str) -> MediaDescription:
    # RFC 4566 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    fields = value.split()
    if len(fields) < 3:
        raise SdpError(f"invalid m= line: {value!r}")
    port_text, _, count_text = fields[1].partition("/")
    try:
        port = int(port_text)
        count = int(count_text) if count_text else None
    except ValueError:
        raise SdpError(f"invalid port in m= line: {value!r}") from None
    if not 0 <= port <= 65535 or (count is not None and count < 1):
        raise SdpError(f"port out of range in m= line: {value!r}")
    # A format list is required, but rejected streams are sometimes sent without one.
    return MediaDescription(fields[0], port, fields[2], fields[3:], port_count=count)


def _parse_attribute(value: str) -> Attribute:
    name, colon, rest = value.partition(":")
    if not name:
        raise SdpError(f"invalid a= line: {value!r}")
    return (name, rest if colon else None)


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse a session description; raises SdpError."""
    text = data.decode("utf-8", "surrogateescape")
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines or not lines[0].startswith("v="):
        raise SdpError("a session description starts with v=")
    version_text = lines[0][2:].strip()
    if version_text != "0":
        raise SdpError(f"unsupported SDP version {version_text!r}")

    origin: Origin | None = None
    session_name: str | None = None
    connection: str | None = None
    connection_type: str | None = None
    times: list[tuple[int, int]] = []
    attributes: list[Attribute] = []
    other: list[tuple[str, str]] = []
    media: list[MediaDescription] = []
    current: MediaDescription | None = None

    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"invalid SDP line: {line!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _parse_media(value)
            media.append(current)
        elif kind == "a":
            (attributes if current is None else current.attributes).append(_parse_attribute(value))
        elif kind == "c":
            kind, address = _parse_connection(value)
            if current is None:
                connection, connection_type = address, kind
            elif current.connection is None:
                current.connection, current.connection_type = address, kind
            # RFC 4566 §5.7 allows several c= lines per media for layered multicast
            # encodings only; the first one is where unicast RTP goes.
        elif current is not None:
            current.other.append((kind, value))
        elif kind == "o":
            if origin is not None:
                raise SdpError("more than one o= line")
            origin = Origin.parse(value)
        elif kind == "s":
            session_name = value
        elif kind == "t":
            fields = value.split()
            try:
                start, stop = (int(f) for f in fields)
            except ValueError:
                raise SdpError(f"invalid t= line: {value!r}") from None
            times.append((start, stop))
        else:
            other.append((kind, value))

    if origin is None:
        raise SdpError("missing o= line")
    for m in media:
        # RFC 4566 §5.7: every active stream needs an address, its own or the session's.
        if m.port != 0 and m.connection is None and connection is None:
            raise SdpError(f"no c= line for the {m.media} stream on port {m.port}")
    return SessionDescription(
        origin=origin,
        # s= is mandatory, but some devices omit it or leave it empty; "-" is the neutral
        # name RFC 4566 §5.3 suggests.
        session_name=session_name or "-",
        connection=connection,
        media=media,
        attributes=attributes,
        times=times or [(0, 0)],
        version=0,
        other=other,
        connection_type=connection_type,
    )
