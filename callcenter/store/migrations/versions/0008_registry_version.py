"""The district registry's version, bumped by triggers on every change to what the desk's
registry holds, so the server re-reads the registry only when it changed (a district of
50,000 households takes seconds of the event loop to read).

The triggers fire on the tables the registry is read from, and on a device or an
operator only for the columns it reads: a heartbeat (``last_seen_at``, ``online``,
``battery_pct``) or a sign-in (``token_sha256``, ``password_hash``) does not count.

Keep them in mind when a later migration rebuilds one of these tables: SQLite's batch
mode (``batch_alter_table`` with a copy) drops a table's triggers with it, and they must
be made again (``tests/test_store.py`` checks they are there at head).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, columns an UPDATE must touch to count; None: any).
WATCHED: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("stations", None),
    ("shift_patterns", None),
    ("carers", None),
    ("residents", None),
    ("family_contacts", None),
    ("households", None),
    ("devices", ("serial", "kind", "household_id")),
    ("operators", ("username", "name", "role", "phone", "language", "active")),
)
OPERATIONS = ("insert", "update", "delete")
BUMP = "UPDATE registry_version SET version = version + 1 WHERE id = 1"


def _trigger(table: str, operation: str) -> str:
    return f"registry_changed_{table}_{operation}"


def _event(operation: str, columns: tuple[str, ...] | None) -> str:
    if operation == "update" and columns:
        return f"UPDATE OF {', '.join(columns)}"
    return operation.upper()


def upgrade() -> None:
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_version")),
    )
    op.execute("INSERT INTO registry_version (id, version) VALUES (1, 0)")
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute(
            "CREATE FUNCTION registry_changed() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
    for table, columns in WATCHED:
        for operation in OPERATIONS:
            event = _event(operation, columns)
            if postgresql:
                # Once per statement: a seed of 100,000 devices is one bump, not 100,000.
                op.execute(
                    f"CREATE TRIGGER {_trigger(table, operation)} AFTER {event} ON {table} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION registry_changed()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {_trigger(table, operation)} AFTER {event} ON {table} "
                    f"BEGIN {BUMP}; END"
                )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table, _columns in WATCHED:
        for operation in OPERATIONS:
            suffix = f" ON {table}" if postgresql else ""
            op.execute(f"DROP TRIGGER IF EXISTS {_trigger(table, operation)}{suffix}")
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS registry_changed()")
    op.drop_table("registry_version")
