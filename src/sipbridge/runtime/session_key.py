"""The key that signs the dashboard's session cookies (dashboard/security.py).

``--session-secret`` gives it (every instance behind one address needs the same, or a
session made by one is refused by the next); without it, a random key is created once and
kept in a file beside the database (mode 0600), so sessions outlive a restart. A file
that cannot be read or written leaves a key for this process only, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from pathlib import Path

from sipbridge.config import ServeSettings

__all__ = ["KEY_BYTES", "session_key"]

log = logging.getLogger("sipbridge.server")

KEY_BYTES = 32


def session_key(settings: ServeSettings) -> bytes:
    """The dashboard's signing key for this instance (see the module docstring)."""
    if settings.session_secret:
        # A text of any length becomes a key of the HMAC's size.
        return hashlib.sha256(settings.session_secret.encode()).digest()
    path = settings.session_key_file
    try:
        return _kept(path)
    except OSError as exc:
        log.warning(
            "event=session_key_not_kept path=%s error=%s: dashboard sessions end at restart "
            "(give --session-secret, or make the folder writable)",
            path,
            exc.strerror or exc,
        )
        return secrets.token_bytes(KEY_BYTES)


def _kept(path: Path) -> bytes:
    """The key in ``path``, created there first when there is none (a damaged one, too
    short, is replaced)."""
    try:
        found: bytes | None = path.read_bytes()
    except FileNotFoundError:
        found = None
    if found is not None and len(found) >= KEY_BYTES:
        return found[:KEY_BYTES]
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if found is not None:
            os.replace(temporary, path)
            return key
        # Another instance beside the same file may have made one meanwhile: link fails
        # then, and its key (whole: it was linked in complete) is the one to use.
        os.link(temporary, path)
    except FileExistsError:
        return path.read_bytes()[:KEY_BYTES]
    finally:
        temporary.unlink(missing_ok=True)
    return key
