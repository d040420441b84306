"""open calls in the store: the owning instance and the last update of each call
(calls.owner, calls.updated_at); statuses ringing, active and interrupted need no schema
change (calls.status is a string)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (no batch mode), as in 0003. Rows written before this migration
    # keep null: they are all closed, and no instance owns them.
    op.add_column("calls", sa.Column("owner", sa.String(255), nullable=True))
    op.add_column("calls", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_calls_owner_status", "calls", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_calls_owner_status", table_name="calls")
    op.drop_column("calls", "updated_at")
    op.drop_column("calls", "owner")
