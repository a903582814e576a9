"""Operators on duty and alarm calls offered to them: each operator's duty, and each
call's offer (to whom, until when, to everyone, whom it was offered to).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "operator_duty",
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("duty", sa.String(length=16), nullable=False),
        sa.Column("since", UTC_DATETIME, nullable=False),
        sa.Column("idle_since", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name=op.f("fk_operator_duty_operator_id_operators"),
        ),
        sa.PrimaryKeyConstraint("operator_id", name=op.f("pk_operator_duty")),
    )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("offer_to", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("offered_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("offer_expires_at", UTC_DATETIME, nullable=True))
        batch.add_column(
            sa.Column("offer_to_all", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("offer_tried", sa.JSON(), nullable=True))
    op.create_index("ix_calls_owner_closed_at", "calls", ["owner", "closed_at"], unique=False)
    op.create_index(
        "uq_calls_offer_to",
        "calls",
        ["offer_to"],
        unique=True,
        sqlite_where=sa.text("offer_to IS NOT NULL"),
        postgresql_where=sa.text("offer_to IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_calls_offer_to", table_name="calls")
    op.drop_index("ix_calls_owner_closed_at", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("offer_tried")
        batch.drop_column("offer_to_all")
        batch.drop_column("offer_expires_at")
        batch.drop_column("offered_at")
        batch.drop_column("offer_to")
    op.drop_table("operator_duty")
