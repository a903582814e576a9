"""The register as a file: the template, the export, and the import with its dry run
(docs/register.md, "Import and export").

- ``template(kind)``: every sheet's header and an example row, and a notes sheet
  explaining each column in zh and en;
- ``export(engine, kind, today)``: the whole register in the same format;
- ``import_file(engine, data, today, audit, dry_run=...)``: every problem the file has
  (as a file, and by the register's rules against the database and the file together);
  while there is any, nothing is written. A clean file is written in one transaction,
  with an audit row (before and after) for each record it changes.

An import that adds devices issues no broker logins: those are issued from the device's
page or by a command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.engine.register import REGISTER_LOCK
from callcenter.engine.register_files.database import Audit, write_import
from callcenter.engine.register_files.files import (
    MAX_FILE_BYTES,
    MEDIA,
    SUFFIX,
    FileProblem,
    Format,
    read,
    write,
)
from callcenter.engine.register_files.plan import Plan, plan
from callcenter.engine.register_files.records import Register, read_register
from callcenter.engine.register_files.sheets import SHEETS
from callcenter.engine.register_files.stored import Stored, load
from callcenter.engine.register_files.tables import (
    example_tables,
    notes_rows,
    ordered,
    tables_of,
)
from callcenter.engine.register_files.words import said
from callcenter.store.db import lock_names, locked_transaction
from callcenter.store.models import registry_version

__all__ = [
    "MAX_FILE_BYTES",
    "MEDIA",
    "SHEET_NAMES",
    "SUFFIX",
    "Audit",
    "FileProblem",
    "Format",
    "Outcome",
    "export",
    "import_file",
    "said",
    "template",
]

SHEET_NAMES = tuple(sheet.name for sheet in SHEETS)
# The advisory lock (PostgreSQL) two imports, and an import and an edit, take turns on.
LOCK = REGISTER_LOCK


@dataclass(frozen=True)
class Outcome:
    """What an import found and did: the file's format, every problem, the rows read
    per sheet, what it adds, updates and leaves per kind of record, and whether it was
    written."""

    format: Format | None
    problems: tuple[FileProblem, ...]
    rows: Mapping[str, int] = field(default_factory=dict)
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    written: bool = False
    # Seconds the import held the register's lock (and, on SQLite, the database's write
    # lock, which the desk's own writes wait for).
    held_s: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.problems


def template(kind: Format) -> bytes:
    """The template: each sheet's header and one example row, and the notes sheet."""
    return write(kind, example_tables(), notes_rows())


async def read_stored(engine: AsyncEngine, today: date) -> Stored:
    async with AsyncSession(engine) as session, session.begin():
        return await load(session, today)


async def export(engine: AsyncEngine, kind: Format, today: date) -> tuple[bytes, Register]:
    """The whole register as a file of ``kind``, and the register written."""
    stored = await read_stored(engine, today)
    register = ordered(stored.register)
    # Building a workbook is seconds of CPU for a large register: off the event loop,
    # which keeps taking alarms meanwhile.
    data = await asyncio.to_thread(write, kind, tables_of(register))
    return data, register


def _checked(data: bytes, stored: Stored) -> tuple[Outcome, Plan | None, Register | None]:
    found = read(data)
    if not found.tables:
        return Outcome(found.format, tuple(found.problems)), None, None
    contents = read_register(found.tables, stored.existing)
    problems = (*found.problems, *contents.problems)
    planned = plan(contents.register, stored.register)
    outcome = Outcome(found.format, problems, contents.rows, planned.counts)
    return outcome, planned, contents.register


async def import_file(
    engine: AsyncEngine, data: bytes, today: date, audit: Audit, *, dry_run: bool
) -> Outcome:
    """Check ``data`` (either format) and, unless ``dry_run`` or a problem is found,
    write it in one transaction. Two imports take turns; one checked against a
    register that has moved since is checked again, under the lock, before it writes."""
    stored = await read_stored(engine, today)
    # Reading and checking a file is CPU work (seconds for a large workbook): off the
    # event loop, which keeps taking alarms meanwhile.
    outcome, planned, incoming = await asyncio.to_thread(_checked, data, stored)
    if dry_run or outcome.problems or planned is None or incoming is None:
        return outcome
    async with locked_transaction(engine) as session:
        await lock_names(session, LOCK)
        locked = time.perf_counter()
        if await _moved(session, stored):
            stored = await load(session, today)
            outcome, planned, incoming = await asyncio.to_thread(_checked, data, stored)
            if outcome.problems or planned is None:
                return outcome
        await write_import(session, stored, planned, audit)
    held = round(time.perf_counter() - locked, 3)
    return Outcome(outcome.format, (), outcome.rows, outcome.counts, written=True, held_s=held)


async def _moved(session: AsyncSession, stored: Stored) -> bool:
    version = await registry_version(session)
    return version is None or version != stored.version
