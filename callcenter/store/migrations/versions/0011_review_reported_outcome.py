"""What a carer reported when they said "done" on an emergency or fall no operator had
owned: the call stays open, awaiting an operator's review, with the carer's outcome.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("calls", sa.Column("reported_outcome", sa.String(length=32), nullable=True))
    op.add_column("calls", sa.Column("reported_by", sa.String(length=96), nullable=True))
    op.add_column("calls", sa.Column("reported_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("reported_at")
        batch.drop_column("reported_by")
        batch.drop_column("reported_outcome")
