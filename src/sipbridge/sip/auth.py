"""Digest authentication (RFC 3261 §22.4, RFC 7616, RFC 8760): as a UAS, and the UAC side
of our REGISTERs (:func:`pick_challenge`, :func:`authorization`, at the end of the module's
functions).

:class:`DigestAuthenticator` is sans-I/O: it never reads the clock, ``now`` comes in
with every call. The caller (the access policy) does this:

1. a request that must be authenticated and carries no usable ``Authorization`` for our
   realm gets a 401 with the headers of :meth:`DigestAuthenticator.challenge`;
2. a request that carries one (found with :func:`find_credentials`) is checked with
   :meth:`DigestAuthenticator.verify` against the password of the user it names;
   :attr:`AuthResult.OK` lets it through, :attr:`AuthResult.STALE` gets a new challenge
   with ``stale=true``, anything else a new challenge without it.

Nonces are not stored when issued: a nonce is its issue time and a random salt, signed
with an HMAC under the server's secret, so the server knows it made it and when. It
expires after ``nonce_lifetime`` seconds. Each (nonce, nonce-count) pair is accepted once
(RFC 7616 §3.4.5 replay protection); the table of used pairs is bounded, and a nonce
pushed out of it is treated as stale from then on, never as fresh.

Only ``qop=auth`` is accepted (RFC 8760 §2.2 requires qop; without it there is no
nonce-count, hence no replay protection), with the MD5 or SHA-256 algorithm (no -sess
variants). Nothing here raises on hostile input: a header that does not parse is no
credentials at all.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuthenticator",
    "authorization",
    "digest_response",
    "find_credentials",
    "parse_algorithms",
    "parse_authorization",
    "parse_challenge",
    "pick_challenge",
]

# RFC 8760 §2.3: offered in order of preference, one challenge per algorithm. Some UACs
# read only the first challenge (SIPp 3.6 knows MD5 only): the order is a setting.
ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")
_HASHES: dict[str, str] = {"SHA-256": "sha256", "MD5": "md5"}


def parse_algorithms(text: str) -> tuple[str, ...]:
    """``"sha-256, md5"`` → ``("SHA-256", "MD5")``: the algorithms to offer, in order;
    ValueError for an unknown one or an empty list."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip().upper()
        if not name:
            continue
        if name not in _HASHES:
            raise ValueError(f"unknown digest algorithm {raw.strip()!r} (known: SHA-256, MD5)")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("the digest algorithm list is empty")
    return tuple(names)


DEFAULT_NONCE_LIFETIME = 300.0
DEFAULT_MAX_NONCES = 4096  # nonces with used counts remembered at once
MAX_COUNTS_PER_NONCE = 256  # then the client must take a new nonce
MAX_HEADER_LENGTH = 4096  # longer Authorization values are not parsed at all

_SALT_BYTES = 8
_MAC_BYTES = 16
_NONCE_BYTES = 8 + _SALT_BYTES + _MAC_BYTES

# RFC 7616 §3.4 / RFC 3261 §25.1: auth-param = token "=" ( token / quoted-string ), with
# LWS around the "=" and the commas. Single-character alternatives only: linear matching.
_PARAM_RE = re.compile(
    r"""[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"""
    r"""(?:"((?:[^"\\\r\n]|\\[^\r\n])*)"|([^ \t",]*))[ \t]*(?:,|$)"""
)
_SCHEME_RE = re.compile(r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+")
_QUOTED_PAIR_RE = re.compile(r"\\(.)")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


class AuthResult(enum.Enum):
    """What :meth:`DigestAuthenticator.verify` found."""

    OK = "ok"
    STALE = "stale"  # right password, but the nonce expired or is not ours (any more)
    REUSED = "reused"  # right password, but this (nonce, nc) was already used: a replay
    FAILED = "failed"  # wrong password, user, realm or URI, or unusable parameters


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of one ``Authorization: Digest ...`` header (RFC 7616 §3.4),
    unquoted. Missing parameters are empty strings; ``algorithm`` defaults to MD5."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str = ""
    nc: str = ""
    cnonce: str = ""
    opaque: str = ""


def _digest_params(value: str) -> dict[str, str] | None:
    """The parameters of a ``Digest`` header value (Authorization, WWW-Authenticate,
    Proxy-Authenticate: RFC 7616 §3.3-§3.4), names lower-cased, values unquoted; None when
    it is another scheme or does not parse, or a parameter is repeated."""
    if len(value) > MAX_HEADER_LENGTH:
        return None
    scheme = _SCHEME_RE.match(value)
    if scheme is None or scheme.group(1).lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = scheme.end()
    end = len(value.rstrip(" \t"))
    while pos < end:
        m = _PARAM_RE.match(value, pos)
        if m is None or m.end() == pos:
            return None
        name = m.group(1).lower()
        if name in params:
            return None  # RFC 7616 §3.4: each parameter at most once
        quoted = m.group(2)
        params[name] = _QUOTED_PAIR_RE.sub(r"\1", quoted) if quoted is not None else m.group(3)
        pos = m.end()
    return params


def parse_authorization(value: str) -> Credentials | None:
    """The credentials in one Authorization header value; None when it is not a
    well-formed Digest header (another scheme, a broken or repeated parameter, a
    missing username, realm, nonce, uri or response)."""
    params = _digest_params(value)
    if params is None:
        return None
    required = ("username", "realm", "nonce", "uri", "response")
    if any(not params.get(name) for name in required):
        return None
    return Credentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm") or "MD5",
        qop=params.get("qop", ""),
        nc=params.get("nc", ""),
        cnonce=params.get("cnonce", ""),
        opaque=params.get("opaque", ""),
    )


def find_credentials(values: Iterable[str], realm: str) -> Credentials | None:
    """The first well-formed Digest credentials for ``realm`` among the Authorization
    header values (RFC 3261 §22.4: a request may carry one per realm)."""
    for value in values:
        credentials = parse_authorization(value)
        if credentials is not None and credentials.realm == realm:
            return credentials
    return None


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1), lowercase hex: for qop=auth, or with
    ``qop=""`` the RFC 2069 form a challenge without qop asks for (RFC 2617 §3.2.2.1;
    ``nc`` and ``cnonce`` unused).

    ``algorithm`` is ``"MD5"`` or ``"SHA-256"``; KeyError for anything else.
    """
    name = _HASHES[algorithm.upper()]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    if not qop:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------- client side
#
# The UAC half (our REGISTER to a trunk's registrar, sip/registration.py): read the
# challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) and answer it with
# an Authorization or Proxy-Authorization header (RFC 3261 §22.2-§22.3).


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``Digest`` challenge (RFC 7616 §3.3), unquoted. ``qop`` holds the offered
    qop values, lower-cased (empty: an RFC 2069 challenge without qop); ``proxy`` is
    True for a Proxy-Authenticate challenge (answered with Proxy-Authorization)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str = ""
    stale: bool = False
    proxy: bool = False

    @property
    def answer_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge | None:
    """The challenge in one WWW-Authenticate (or, ``proxy``, Proxy-Authenticate) value;
    None when it is not a Digest challenge we can answer: another scheme, no realm or
    nonce, an algorithm we do not know (the -sess variants included), or qop offered
    without ``auth`` (only ``auth-int``)."""
    params = _digest_params(value)
    if params is None or not params.get("realm") or not params.get("nonce"):
        return None
    algorithm = (params.get("algorithm") or "MD5").upper()
    if algorithm not in _HASHES:
        return None
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        return None
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque", ""),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def pick_challenge(www: Iterable[str], proxy: Iterable[str]) -> Challenge | None:
    """The challenge to answer among a response's WWW-Authenticate and
    Proxy-Authenticate values: the strongest algorithm we know (SHA-256 over MD5, RFC
    8760 §2.4), the first of equals; None when none is usable."""
    found = [c for v in www if (c := parse_challenge(v)) is not None]
    found += [c for v in proxy if (c := parse_challenge(v, proxy=True)) is not None]
    if not found:
        return None
    return min(found, key=lambda c: ALGORITHMS.index(c.algorithm))


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
) -> str:
    """The Authorization (or Proxy-Authorization: :attr:`Challenge.answer_header`) value
    answering ``challenge`` for a request with ``method`` and Request-URI ``uri``:
    qop=auth with ``cnonce`` and nonce-count ``nc`` when the challenge offers qop (RFC
    7616 §3.4), else the RFC 2069 form; ``opaque`` is returned as received."""
    qop = "auth" if challenge.qop else ""
    nc_text = f"{nc:08x}"
    response = digest_response(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        nc=nc_text,
        cnonce=cnonce,
        qop=qop,
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)


class DigestAuthenticator:
    """Issues digest challenges and checks answers to them for one ``realm``.

    ``secret`` signs the nonces (keep it for the life of the process; a new secret makes
    every outstanding nonce stale). ``new_salt`` makes each nonce unique. See the module
    docstring for what the caller does with the results. ``algorithms`` are offered in
    that order and are the only ones accepted.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        nonce_lifetime: float = DEFAULT_NONCE_LIFETIME,
        max_nonces: int = DEFAULT_MAX_NONCES,
        algorithms: tuple[str, ...] = ALGORITHMS,
        new_salt: Callable[[], bytes] = lambda: secrets.token_bytes(_SALT_BYTES),
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        if nonce_lifetime <= 0 or max_nonces <= 0:
            raise ValueError("nonce_lifetime and max_nonces must be positive")
        self.realm = realm
        self.algorithms = parse_algorithms(",".join(algorithms))
        self.nonce_lifetime = nonce_lifetime
        self.max_nonces = max_nonces
        self._secret = secret
        self._new_salt = new_salt
        # nonce -> (issue time, nonce-counts used), in order of first use.
        self._used: OrderedDict[str, tuple[float, set[int]]] = OrderedDict()
        # Nonces issued at or before this time and no longer in _used may have been
        # used already: they are stale (the table forgot them to stay bounded).
        self._forgotten_until = float("-inf")

    # ------------------------------------------------------------------ nonces

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._secret, head, hashlib.sha256).digest()[:_MAC_BYTES]

    def new_nonce(self, now: float) -> str:
        salt = self._new_salt()[:_SALT_BYTES].ljust(_SALT_BYTES, b"\0")
        head = struct.pack("!q", round(now * 1000)) + salt
        return base64.urlsafe_b64encode(head + self._mac(head)).decode("ascii").rstrip("=")

    def _issued_at(self, nonce: str) -> float | None:
        """When we issued ``nonce``; None when it is not one of ours."""
        if len(nonce) != 43:  # 32 bytes in unpadded base64
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _NONCE_BYTES:
            return None
        head, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        millis: int = struct.unpack("!q", head[:8])[0]
        return millis / 1000.0

    # ------------------------------------------------------------------ challenge

    def challenge(self, now: float, *, stale: bool = False) -> list[tuple[str, str]]:
        """``WWW-Authenticate`` headers for a 401 (RFC 3261 §22.4, RFC 8760 §2.3): one
        challenge per algorithm, in the order of ``algorithms`` (SHA-256 first by
        default), sharing one fresh nonce."""
        nonce = self.new_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            (
                "WWW-Authenticate",
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, "
                f'algorithm={algorithm}, qop="auth"{tail}',
            )
            for algorithm in self.algorithms
        ]

    # ------------------------------------------------------------------ verify

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        password: str,
        now: float,
    ) -> AuthResult:
        """Check ``credentials`` (from a request with ``method``) against ``password``.

        The response is checked first, so STALE and REUSED are only ever said to a
        client that knows the password (RFC 7616 §3.3: stale means the digest itself was
        valid). An OK uses up the (nonce, nc) pair. Whether the digest-uri names the
        request's URI (RFC 7616 §3.4.6) is for the caller to check.
        """
        algorithm = credentials.algorithm.upper()
        if (
            algorithm not in self.algorithms
            or credentials.realm != self.realm
            or credentials.qop.lower() != "auth"
            or _NC_RE.fullmatch(credentials.nc) is None
            or not credentials.cnonce
        ):
            return AuthResult.FAILED
        expected = digest_response(
            algorithm=algorithm,
            username=credentials.username,
            realm=self.realm,
            password=password,
            method=method,
            uri=credentials.uri,
            nonce=credentials.nonce,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            qop="auth",
        )
        if not hmac.compare_digest(
            expected.encode("ascii"), credentials.response.lower().encode("utf-8")
        ):
            return AuthResult.FAILED
        issued = self._issued_at(credentials.nonce)
        if issued is None or not 0 <= now - issued <= self.nonce_lifetime:
            return AuthResult.STALE
        return self._use(credentials.nonce, issued, int(credentials.nc, 16), now)

    def _use(self, nonce: str, issued: float, nc: int, now: float) -> AuthResult:
        entry = self._used.get(nonce)
        if entry is None:
            if issued <= self._forgotten_until:
                return AuthResult.STALE
            entry = (issued, set())
            self._used[nonce] = entry
            self._prune(now)
        counts = entry[1]
        if nc in counts:
            return AuthResult.REUSED
        if len(counts) >= MAX_COUNTS_PER_NONCE:
            return AuthResult.STALE
        counts.add(nc)
        return AuthResult.OK

    def _prune(self, now: float) -> None:
        # Expired nonces at the front are stale anyway: forget them freely.
        while self._used:
            issued, _ = next(iter(self._used.values()))
            if now - issued <= self.nonce_lifetime:
                break
            self._used.popitem(last=False)
        while len(self._used) > self.max_nonces:
            _, (issued, _) = self._used.popitem(last=False)
            self._forgotten_until = max(self._forgotten_until, issued)

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have used counts remembered (bounded by ``max_nonces``)."""
        return len(self._used)
