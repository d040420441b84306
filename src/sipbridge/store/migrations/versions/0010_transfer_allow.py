"""where each agent may transfer callers (agents.transfer_allow: a JSON list of patterns)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE, as in 0003. Existing agents get [] (the default transfer policy:
    # numbers in the called number's country, no premium rate, no sip: targets).
    op.add_column(
        "agents",
        sa.Column("transfer_allow", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
    )


def downgrade() -> None:
    op.drop_column("agents", "transfer_allow")
