"""Persistence: SQLAlchemy async models, Alembic migrations and the service layer."""

from sipbridge.store.db import Database
from sipbridge.store.records import AgentRecord, CallRecord, CallStatus, NumberRecord

__all__ = ["AgentRecord", "CallRecord", "CallStatus", "Database", "NumberRecord"]
