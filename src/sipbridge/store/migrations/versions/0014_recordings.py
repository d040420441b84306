"""call recordings: who is recorded (agents.record, phone_numbers.record) and each call's
recording file (calls.recording, JSON)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, as in 0003. Nothing is recorded until an operator says so.
    op.add_column(
        "agents",
        sa.Column("record", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # null: the agent's setting; true/false: the number's own, which wins.
    op.add_column("phone_numbers", sa.Column("record", sa.Boolean(), nullable=True))
    op.add_column("calls", sa.Column("recording", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "recording")
    op.drop_column("phone_numbers", "record")
    op.drop_column("agents", "record")
