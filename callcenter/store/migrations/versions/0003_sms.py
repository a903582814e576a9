"""SMS: the provider's message id and delivery status on outbox rows, and the inbound
messages (carers' replies) kept once per MessageSid.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbound_sms",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("from_number", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", UTC_DATETIME, nullable=False),
        sa.Column("call_id", BIG_ID, nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name=op.f("fk_inbound_sms_call_id_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_sms")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_inbound_sms_message_sid")),
    )
    with op.batch_alter_table("inbound_sms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_inbound_sms_from_number"), ["from_number"], unique=False
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_ref", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("delivery", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_outbox_provider_ref"), ["provider_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_provider_ref"))
        batch_op.drop_column("delivery")
        batch_op.drop_column("provider_ref")

    with op.batch_alter_table("inbound_sms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_sms_from_number"))

    op.drop_table("inbound_sms")
