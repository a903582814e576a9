"""The numbers that reach a household, in the order to try them: the base unit's own SIM,
a landline, residents' mobiles (domain/phones.py).

They are part of the district registry the desk reads, so a change to them bumps
``registry_version`` as a change to the other registry tables does: its triggers are
written out here as 0008 writes theirs (a migration stands alone, importing no other).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "household_phones"
OPERATIONS = ("insert", "update", "delete")
BUMP = "UPDATE registry_version SET version = version + 1 WHERE id = 1"


def _trigger(operation: str) -> str:
    # Named as 0008 names the others: registry_changed_<table>_<operation>.
    return f"registry_changed_{TABLE}_{operation}"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("household_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=80), server_default="", nullable=False),
        sa.CheckConstraint("position >= 1", name=op.f("ck_household_phones_position")),
        sa.CheckConstraint(
            "kind IN ('unit', 'landline', 'mobile')", name=op.f("ck_household_phones_kind")
        ),
        sa.ForeignKeyConstraint(
            ["household_id"],
            ["households.id"],
            name=op.f("fk_household_phones_household_id_households"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_household_phones")),
        sa.UniqueConstraint(
            "household_id", "position", name=op.f("uq_household_phones_household_id_position")
        ),
    )
    op.create_index(op.f("ix_household_phones_household_id"), TABLE, ["household_id"])
    postgresql = op.get_bind().dialect.name == "postgresql"
    for operation in OPERATIONS:
        if postgresql:
            # registry_changed() is 0008's function: one bump per statement.
            op.execute(
                f"CREATE TRIGGER {_trigger(operation)} AFTER {operation.upper()} ON {TABLE} "
                "FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {_trigger(operation)} AFTER {operation.upper()} ON {TABLE} "
                f"BEGIN {BUMP}; END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for operation in OPERATIONS:
        suffix = f" ON {TABLE}" if postgresql else ""
        op.execute(f"DROP TRIGGER IF EXISTS {_trigger(operation)}{suffix}")
    op.drop_index(op.f("ix_household_phones_household_id"), table_name=TABLE)
    op.drop_table(TABLE)
