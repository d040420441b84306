"""Alembic environment for sipbridge.

Normally driven by :meth:`sipbridge.store.db.Database.upgrade`, which hands over an open
connection in ``config.attributes["connection"]``. Developers can also run the ``alembic``
command line with ``-c src/sipbridge/store/alembic.ini`` (set ``sqlalchemy.url`` or the
``SIPBRIDGE_DB`` environment variable).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from sipbridge.store.db import Database, normalize_url
from sipbridge.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    return (
        os.environ.get("SIPBRIDGE_DB")
        or config.get_main_option("sqlalchemy.url")
        or "sqlite:///sipbridge.db"
    )


async def _run_with_own_engine() -> None:
    database = Database(_url())
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(_configure_and_run)
    finally:
        await database.close()


def run_migrations_offline() -> None:
    context.configure(
        url=normalize_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        asyncio.run(_run_with_own_engine())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
