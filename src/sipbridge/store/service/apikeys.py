"""API keys of the REST API: only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select, update

from sipbridge.store.db import Database
from sipbridge.store.models import ApiKey
from sipbridge.store.records import ApiKeyRecord, utcnow
from sipbridge.store.service._common import (
    _add_named,
    _delete_named,
    _list_named,
    _validate_name,
)

__all__ = [
    "api_key_by_hash",
    "api_key_hash",
    "create_api_key",
    "list_api_keys",
    "revoke_api_key",
    "verify_api_key",
]

_API_KEY_PREFIX = "sb_"
_LAST_USED_GRANULARITY = timedelta(minutes=1)


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def api_key_hash(secret: str) -> str:
    """The SHA-256 (hex) under which a key is stored and looked up."""
    return _hash_key(secret)


def _api_key_record(key: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        name=key.name, prefix=key.prefix, created_at=key.created_at, last_used_at=key.last_used_at
    )


async def create_api_key(db: Database, name: str) -> tuple[ApiKeyRecord, str]:
    """A new API key: its record and the secret, which is shown once and never stored
    (only its SHA-256). AlreadyExists when the name is taken."""
    name = _validate_name(name, "API key")
    secret = _API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, prefix=secret[:8], key_hash=_hash_key(secret), created_at=utcnow())
    await _add_named(db, key, "API key")
    return _api_key_record(key), secret


async def verify_api_key(db: Database, presented: str) -> ApiKeyRecord | None:
    """The key whose secret is ``presented``, or None.

    Looked up by the SHA-256 of the presented value (indexed), then compared in constant
    time; ``last_used_at`` is written at most once a minute.
    """
    if not isinstance(presented, str) or not presented or len(presented) > 256:
        return None
    digest = _hash_key(presented)
    async with db.sessionmaker() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_GRANULARITY:
        async with db.sessionmaker() as session, session.begin():
            await session.execute(
                update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now)
            )
        key.last_used_at = now
    return _api_key_record(key)


async def api_key_by_hash(db: Database, digest: str) -> ApiKeyRecord | None:
    """The key whose SHA-256 is ``digest`` (a dashboard session names its key so), or
    None once it was revoked."""
    if not isinstance(digest, str) or len(digest) != 64:
        return None
    async with db.sessionmaker() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    return None if key is None else _api_key_record(key)


async def list_api_keys(db: Database) -> list[ApiKeyRecord]:
    """All API keys, by name (never their secrets)."""
    return await _list_named(db, ApiKey, _api_key_record)


async def revoke_api_key(db: Database, name: str) -> None:
    """Delete an API key: it stops working at once. NotFound when there is none."""
    await _delete_named(db, ApiKey, name, "API key")
