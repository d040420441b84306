"""SIP, SIPS, tel and other URIs (RFC 3261 §19.1, RFC 3966): parsing and escaping."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipbridge.sip import grammar
from sipbridge.sip.errors import SipParseError

__all__ = ["Uri"]


@dataclass(slots=True)
class Uri:
    """A SIP/SIPS URI (RFC 3261 §19.1), a tel URI (RFC 3966) or any other absolute URI.

    ``user``, ``password``, parameter and header names/values are stored unescaped
    (``sip:%75ser@h`` has user ``"user"``; §19.1.4 makes them equivalent) and escaped
    again by ``str()``. ``host`` is stored without IPv6 brackets. Parameter names are
    lower-cased; a parameter without a value maps to None.

    For tel URIs the number is in ``user`` and ``host`` is "". For schemes we do not
    know, the whole scheme-specific part is kept, unparsed, in ``host`` (the UA answers
    416 for those, RFC 3261 §8.2.2.1).
    """

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Uri:
        """Parse a URI as it appears in a Request-URI or between ``<`` and ``>``."""
        m = grammar.SCHEME_RE.match(text)
        if m is None or text[m.end() : m.end() + 1] != ":":
            raise SipParseError(f"invalid URI {text!r}")
        scheme = m.group().lower()
        rest = text[m.end() + 1 :]
        if scheme in ("sip", "sips"):
            return cls._parse_sip(scheme, rest)
        if scheme == "tel":
            return cls._parse_tel(rest)
        if grammar.OPAQUE_RE.fullmatch(rest) is None:
            raise SipParseError(f"invalid URI {text!r}")
        return cls(scheme, host=rest)

    @classmethod
    def _parse_sip(cls, scheme: str, rest: str) -> Uri:
        # RFC 3261 §19.1.1: sip:user:password@host:port;uri-parameters?headers. The user
        # part may hold ";" "?" "/" (user-unreserved) but never a bare "@", and neither
        # parameters nor headers may hold one, so the first "@" ends the userinfo.
        user = password = None
        at = rest.find("@")
        if at >= 0:
            user_text, colon, password_text = rest[:at].partition(":")
            if grammar.USER_RE.fullmatch(user_text) is None:
                raise SipParseError(f"invalid user part {user_text!r}")
            user = grammar.unescape(user_text)
            if colon:
                if grammar.PASSWORD_RE.fullmatch(password_text) is None:
                    raise SipParseError("invalid password in URI")
                password = grammar.unescape(password_text)
            rest = rest[at + 1 :]
        rest, question, headers_text = rest.partition("?")
        hostport, *param_texts = rest.split(";")
        host, port = grammar.parse_hostport(hostport)
        params = _parse_uri_params(param_texts)
        headers: dict[str, str] = {}
        if question:
            for header in headers_text.split("&"):
                name, equal, value = header.partition("=")
                if (
                    not name
                    or not equal
                    or grammar.HEADER_CHARS_RE.fullmatch(name) is None
                    or grammar.HEADER_CHARS_RE.fullmatch(value) is None
                ):
                    raise SipParseError(f"invalid URI header {header!r}")
                headers[grammar.unescape(name)] = grammar.unescape(value)
        return cls(scheme, user, password, host, port, params, headers)

    @classmethod
    def _parse_tel(cls, rest: str) -> Uri:
        # RFC 3966 §3: telephone-subscriber = number *( ";" par ), same paramchar set.
        number, *param_texts = rest.split(";")
        if grammar.TEL_NUMBER_RE.fullmatch(number) is None:
            raise SipParseError(f"invalid telephone number {number!r}")
        return cls("tel", number, None, "", None, _parse_uri_params(param_texts), {})

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{self._params_text()}"
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.host}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(grammar.escape(self.user, grammar.USER_SAFE))
            if self.password is not None:
                out += [":", grammar.escape(self.password, grammar.PASSWORD_SAFE)]
            out.append("@")
        out.append(grammar.format_host(self.host))
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(self._params_text())
        if self.headers:
            safe = grammar.HEADER_SAFE
            out.append("?")
            out.append(
                "&".join(
                    f"{grammar.escape(k, safe)}={grammar.escape(v, safe)}"
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def _params_text(self) -> str:
        safe = grammar.PARAM_SAFE
        return "".join(
            f";{grammar.escape(k, safe)}"
            if v is None
            else f";{grammar.escape(k, safe)}={grammar.escape(v, safe)}"
            for k, v in self.params.items()
        )


def _parse_uri_params(texts: list[str]) -> dict[str, str | None]:
    # RFC 3261 §19.1.1: uri-parameter = pname [ "=" pvalue ], both 1*paramchar.
    params: dict[str, str | None] = {}
    for text in texts:
        name, equal, value = text.partition("=")
        if grammar.PARAM_CHARS_RE.fullmatch(name) is None or (
            equal and grammar.PARAM_CHARS_RE.fullmatch(value) is None
        ):
            raise SipParseError(f"invalid URI parameter {text!r}")
        params.setdefault(
            grammar.unescape(name).lower(), grammar.unescape(value) if equal else None
        )
    return params
