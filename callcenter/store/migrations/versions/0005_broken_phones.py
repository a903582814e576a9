"""Phone numbers known not to get our texts (invalid, opted out, not a mobile).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "broken_phones",
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("problem", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("since", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("phone", name=op.f("pk_broken_phones")),
    )


def downgrade() -> None:
    op.drop_table("broken_phones")
