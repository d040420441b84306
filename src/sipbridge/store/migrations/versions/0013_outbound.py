"""a call's direction (calls.direction): inbound, or outbound (POST /api/calls)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every call recorded before this revision came in.
    op.add_column(
        "calls",
        sa.Column("direction", sa.String(8), nullable=False, server_default="inbound"),
    )


def downgrade() -> None:
    op.drop_column("calls", "direction")
