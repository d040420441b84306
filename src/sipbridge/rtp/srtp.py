"""SRTP and SRTCP protection (RFC 3711) with SDES keys (RFC 4568), over libsrtp 2.

:class:`SrtpSession` holds the two directions of one call: outbound packets are protected
with our master key, inbound ones authenticated and decrypted with the caller's. It is a
per-packet hot path, so it talks to libsrtp through pylibsrtp's cffi binding directly:
one buffer and one length cell per session, reused for every packet (pylibsrtp's
``Session`` allocates both per call and raises an exception per bad packet). A packet
that fails (bad authentication tag, replay, garbage) comes back as None and is counted in
:class:`SrtpStats`; nothing is raised and nothing is logged.

Both suites we negotiate (``AES_CM_128_HMAC_SHA1_80`` and ``_32``, RFC 4568 §6.2) use the
same master key for SRTP and SRTCP; SRTCP always carries the 80-bit tag (RFC 4568
§6.2.2), which libsrtp's profile settings give.

Inbound streams are created for any SSRC (``ssrc_any_inbound``) once a packet
authenticates, so a caller who changes SSRC keeps working while packets without the key
never create state. The replay window is libsrtp's (128 packets unless the caller's
``WSH`` asks for more, RFC 3711 §3.3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

__all__ = ["SUITES", "SrtpSession", "SrtpStats"]

# RFC 4568 §6.2 suite names → libsrtp profiles.
SUITES: Final[dict[str, int]] = {
    "AES_CM_128_HMAC_SHA1_80": lib.srtp_profile_aes128_cm_sha1_80,
    "AES_CM_128_HMAC_SHA1_32": lib.srtp_profile_aes128_cm_sha1_32,
}
# libsrtp's srtp_err_status_t values that are expected from the network.
_AUTH_FAIL: Final = 7
_REPLAY_FAIL: Final = 9
_REPLAY_OLD: Final = 10
# Largest packet we handle; SRTP adds at most 4 (SRTCP index) + 10 (tag) bytes to ours.
_MAX_PACKET: Final = 1500
_TRAILER: Final = 16 + 4
_BUFFER: Final = _MAX_PACKET + _TRAILER

_protect = lib.srtp_protect
_unprotect = lib.srtp_unprotect
_protect_rtcp = lib.srtp_protect_rtcp
_unprotect_rtcp = lib.srtp_unprotect_rtcp


@dataclass
class SrtpStats:
    """Counters of one call's SRTP (kept across re-keying)."""

    auth_failures: int = 0  # RFC 3711 §3.3 step 5: the tag did not verify
    replays: int = 0  # §3.3.2: index seen already or older than the window
    malformed: int = 0  # too short, too long, or otherwise refused by libsrtp
    protect_failures: int = 0  # ours that could not be protected (never expected)

    @property
    def dropped(self) -> int:
        return self.auth_failures + self.replays + self.malformed


def _create(profile: int, key: bytes, inbound: bool, window_size: int | None) -> Any:
    """A libsrtp session with one stream template for ``key`` (master key || salt)."""
    expected = lib.srtp_profile_get_master_key_length(
        profile
    ) + lib.srtp_profile_get_master_salt_length(profile)
    if len(key) != expected:
        raise ValueError(f"an SRTP master key and salt take {expected} bytes, not {len(key)}")
    policy = ffi.new("srtp_policy_t *")
    if lib.srtp_crypto_policy_set_from_profile_for_rtp(ffi.addressof(policy.rtp), profile):
        raise ValueError("libsrtp refused the profile")
    if lib.srtp_crypto_policy_set_from_profile_for_rtcp(ffi.addressof(policy.rtcp), profile):
        raise ValueError("libsrtp refused the profile")
    key_data = ffi.new("unsigned char[]", key)  # copied by srtp_create
    policy.key = key_data
    policy.ssrc.type = lib.ssrc_any_inbound if inbound else lib.ssrc_any_outbound
    if window_size is not None:
        policy.window_size = window_size
    handle = ffi.new("srtp_t *")
    status = lib.srtp_create(handle, policy)
    if status != lib.srtp_err_status_ok:
        raise ValueError(f"libsrtp could not create a session (status {status})")
    return ffi.gc(handle, lambda h: lib.srtp_dealloc(h[0]))


class SrtpSession:
    """Both directions of one call's SRTP; see the module docstring.

    ``suite`` is an RFC 4568 suite name from :data:`SUITES`; ``local_key`` protects what
    we send, ``remote_key`` authenticates what we receive (each 30 bytes: master key ||
    master salt). Raises ValueError for an unknown suite or a key of the wrong length.
    """

    def __init__(
        self, suite: str, local_key: bytes, remote_key: bytes, window_size: int | None = None
    ) -> None:
        self.stats = SrtpStats()
        self._cdata = ffi.new("unsigned char[]", _BUFFER)
        self._view = ffi.buffer(self._cdata)
        self._length = ffi.new("int *")
        self._outbound: Any = None
        self._inbound: Any = None
        self._out_params: tuple[str, bytes] | None = None
        self._in_params: tuple[str, bytes, int | None] | None = None
        self.update(suite, local_key, remote_key, window_size)

    @property
    def suite(self) -> str:
        assert self._out_params is not None
        return self._out_params[0]

    def update(
        self, suite: str, local_key: bytes, remote_key: bytes, window_size: int | None = None
    ) -> None:
        """New keys from a re-INVITE: a direction is re-created only when its suite or key
        changed, so an unchanged one keeps its rollover counter and replay window
        (RFC 3711 §3.3.1). Our own key must change with the suite: a new session under an
        old key would reuse packet indices (the caller picks our key, see runtime/call.py)."""
        profile = SUITES.get(suite)
        if profile is None:
            raise ValueError(f"unsupported SRTP suite {suite!r}")
        out_params = (suite, local_key)
        in_params = (suite, remote_key, window_size)
        # Build both before assigning, so a bad key leaves the session as it was.
        outbound = (
            self._outbound
            if out_params == self._out_params
            else _create(profile, local_key, False, None)
        )
        inbound = (
            self._inbound
            if in_params == self._in_params
            else _create(profile, remote_key, True, window_size)
        )
        self._outbound, self._out_params = outbound, out_params
        self._inbound, self._in_params = inbound, in_params

    # -- hot path -------------------------------------------------------------

    def protect(self, packet: bytes) -> bytes | None:
        """Our RTP packet as SRTP (RFC 3711 §3.3); None if libsrtp refuses it."""
        return self._apply(_protect, self._outbound, packet, True)

    def protect_rtcp(self, packet: bytes) -> bytes | None:
        """Our RTCP compound packet as SRTCP (RFC 3711 §3.4)."""
        return self._apply(_protect_rtcp, self._outbound, packet, True)

    def unprotect(self, packet: bytes) -> bytes | None:
        """The RTP packet inside an SRTP packet; None (counted) when it does not
        authenticate, is a replay or is malformed."""
        return self._apply(_unprotect, self._inbound, packet, False)

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """The RTCP compound packet inside an SRTCP packet; None (counted) on failure."""
        return self._apply(_unprotect_rtcp, self._inbound, packet, False)

    def _apply(self, function: Any, handle: Any, packet: bytes, outbound: bool) -> bytes | None:
        size = len(packet)
        if size > _MAX_PACKET or size < 8:
            self._count(outbound, -1)
            return None
        view = self._view
        view[0:size] = packet
        length = self._length
        length[0] = size
        status = function(handle[0], self._cdata, length)
        if status:
            self._count(outbound, status)
            return None
        result: bytes = view[0 : length[0]]
        return result

    def _count(self, outbound: bool, status: int) -> None:
        stats = self.stats
        if outbound:
            stats.protect_failures += 1
        elif status == _AUTH_FAIL:
            stats.auth_failures += 1
        elif status in (_REPLAY_FAIL, _REPLAY_OLD):
            stats.replays += 1
        else:
            stats.malformed += 1
