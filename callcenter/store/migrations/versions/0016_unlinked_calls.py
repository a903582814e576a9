"""A call to the centre's number from a number the register does not know belongs to no
household: ``calls.household_id`` may be empty (docs/voice.md, "Inbound calls").

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.alter_column("household_id", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    # Fails while a call of no household is kept: the older schema cannot hold it.
    with op.batch_alter_table("calls") as batch:
        batch.alter_column("household_id", existing_type=sa.Integer(), nullable=False)
