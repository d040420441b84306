"""Typed header values (RFC 3261 §20, §25.1): name-addr (:class:`NameAddr`), :class:`Via`
and :class:`CSeq`, parsed from and written back to header field text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sipbridge.sip import grammar
from sipbridge.sip.errors import SipParseError
from sipbridge.sip.uri import Uri

__all__ = ["CSeq", "NameAddr", "Via"]


@dataclass(slots=True)
class NameAddr:
    """A From, To, Contact, Route or Record-Route value (RFC 3261 §20.10, §25.1).

    ``display`` is the display name with quoting undone (None when absent); ``params`` are
    the header parameters (after the URI), names lower-cased, values as written.
    ``str()`` always writes the ``name-addr`` form with ``<...>``.
    """

    display: str | None
    uri: Uri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        s = text.strip(" \t")
        if s.startswith('"'):
            m = grammar.QUOTED_STRING_RE.match(s)
            if m is None:
                raise SipParseError(f"unterminated quoted display name in {text!r}")
            display: str | None = grammar.unquote(m.group())
            lt = len(s) - len(s[m.end() :].lstrip(" \t"))  # LAQUOT = SWS "<"
            if s[lt : lt + 1] != "<":
                raise SipParseError(f"quoted display name without <URI> in {text!r}")
            return cls._parse_bracketed(display, s, lt)
        lt = s.find("<")
        if lt >= 0:
            raw = s[:lt].rstrip(" \t")
            if raw and grammar.DISPLAY_TOKENS_RE.fullmatch(raw) is None:
                # RFC 4475 §3.1.2.15 baddn: an unquoted display name holding a comma.
                raise SipParseError(f"invalid display name {raw!r}")
            return cls._parse_bracketed(raw or None, s, lt)
        # RFC 3261 §20.10 addr-spec form: the URI ends at the first ";" (what follows is
        # header parameters), and a URI containing "," "?" or ";" must be in brackets
        # (RFC 4475 §3.1.2.13 regbadct).
        semi = s.find(";")
        uri_text = (s if semi < 0 else s[:semi]).rstrip(" \t")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"URI with ? or , must be enclosed in <> in {text!r}")
        uri = Uri.parse(uri_text)
        return cls(None, uri, grammar.parse_params(s, semi) if semi >= 0 else {})

    @classmethod
    def _parse_bracketed(cls, display: str | None, s: str, lt: int) -> NameAddr:
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError(f"missing > in {s!r}")
        # RAQUOT = ">" SWS and LAQUOT = SWS "<": no whitespace inside the brackets
        # (RFC 4475 §3.1.2.14 badaspec); Uri.parse refuses it.
        uri = Uri.parse(s[lt + 1 : gt])
        return cls(display, uri, grammar.parse_params(s, gt + 1))

    def __str__(self) -> str:
        prefix = "" if self.display is None else grammar.quote(self.display) + " "
        return f"{prefix}<{self.uri}>{grammar.format_params(self.params)}"


# RFC 3261 §25.1: via-parm = sent-protocol LWS sent-by *( SEMI via-params ), where
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/"
# SWS and sent-by = host [ COLON port ] with COLON = SWS ":" SWS.
_VIA_RE = re.compile(
    rf"({grammar.TOKEN}){grammar.SWS}/{grammar.SWS}({grammar.TOKEN}){grammar.SWS}/"
    rf"{grammar.SWS}({grammar.TOKEN}){grammar.LWS}"
    rf"(\[[^\]\s]*\]|[^\s;:\[\]]+)(?:{grammar.SWS}:{grammar.SWS}([0-9]+))?"
)


@dataclass(slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): ``SIP/2.0/<transport> host[:port];params``.

    ``transport`` is upper-cased, ``host`` has no IPv6 brackets, parameter names are
    lower-cased. ``rport`` present without a value maps to None in ``params``: test
    ``"rport" in via.params`` for RFC 3581 §4.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        return self.params.get("rport")

    @classmethod
    def parse(cls, text: str) -> Via:
        s = text.strip(" \t")
        m = _VIA_RE.match(s)
        if m is None:
            raise SipParseError(f"malformed Via {text!r}")
        protocol, version, transport, host, port_text = m.groups()
        if protocol.upper() != "SIP" or version != "2.0":
            raise SipParseError(f"Via with unsupported protocol {protocol}/{version}")
        if not grammar.is_valid_host(host):
            raise SipParseError(f"invalid host in Via {host!r}")
        port: int | None = None
        if port_text is not None:
            if len(port_text) > 5 or int(port_text) > 65535:
                raise SipParseError(f"invalid port in Via {text!r}")
            port = int(port_text)
        if host.startswith("["):
            host = host[1:-1]
        return cls(transport.upper(), host, port, grammar.parse_params(s, m.end()))

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        host = grammar.format_host(self.host)
        return f"SIP/2.0/{self.transport} {host}{port}{grammar.format_params(self.params)}"


_CSEQ_RE = re.compile(rf"([0-9]+){grammar.LWS}({grammar.TOKEN})")


@dataclass(slots=True)
class CSeq:
    """A CSeq value (RFC 3261 §20.16): sequence number and method."""

    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        m = _CSEQ_RE.fullmatch(text.strip(" \t"))
        if m is None:
            raise SipParseError(f"malformed CSeq {text!r}")
        digits = m.group(1)
        # RFC 3261 §8.1.1.5: a 32-bit unsigned integer (RFC 4475 §3.1.2.4 scalar02).
        # The length check comes first: int() of thousands of digits is slow or refused.
        if len(digits) > 10 or int(digits) > 0xFFFFFFFF:
            raise SipParseError(f"CSeq number out of range: {digits[:20]}")
        return cls(int(digits), m.group(2))

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
