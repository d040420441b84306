"""the trunk a call came from (calls.trunk)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The trunk's name as it was when the call came in: no foreign key, so removing or
    # renaming a trunk keeps its calls' history.
    op.add_column("calls", sa.Column("trunk", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "trunk")
