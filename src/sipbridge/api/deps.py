"""Request dependencies: the database and settings the app was created with."""

from __future__ import annotations

from fastapi import Request

from sipbridge.store.db import Database

__all__ = ["get_db", "get_default_region"]


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_default_region(request: Request) -> str | None:
    region: str | None = request.app.state.default_region
    return region
