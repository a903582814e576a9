"""Families' sign-in codes and sessions, the audit log of reads of households' data,
server-made secrets (carers' link key) and weekly welfare calls.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported from models.py (see 0001).
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "family_codes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("used_at", UTC_DATETIME, nullable=True),
        sa.Column("requested_from", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_family_codes")),
    )
    with op.batch_alter_table("family_codes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_family_codes_phone"), ["phone"], unique=False)

    op.create_table(
        "family_sessions",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("last_seen_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_family_sessions")),
    )
    with op.batch_alter_table("family_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_family_sessions_phone"), ["phone"], unique=False)

    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["household_id"], ["households.id"], name=op.f("fk_audit_log_household_id_households")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_actor"), ["actor"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_log_household_id"), ["household_id"], unique=False
        )

    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )

    op.create_table(
        "welfare_calls",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("resident_id", sa.Integer(), nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("week_start", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("done_by", sa.String(length=96), nullable=True),
        sa.Column("done_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_welfare_calls_household_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["resident_id"], ["residents.id"], name=op.f("fk_welfare_calls_resident_id_residents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_welfare_calls")),
        sa.UniqueConstraint(
            "resident_id", "week_start", name=op.f("uq_welfare_calls_resident_id_week_start")
        ),
    )
    with op.batch_alter_table("welfare_calls", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_welfare_calls_household_id"), ["household_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_welfare_calls_resident_id"), ["resident_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_welfare_calls_week_start"), ["week_start"], unique=False
        )


def downgrade() -> None:
    op.drop_table("welfare_calls")
    op.drop_table("server_secrets")
    op.drop_table("audit_log")
    op.drop_table("family_sessions")
    op.drop_table("family_codes")
