"""Making register files for the tests: rows by column name over a valid baseline, and
counting what the register's tables hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.engine import register_files as rf
from callcenter.engine.register_files.files import write
from callcenter.engine.register_files.sheets import BY_NAME, HOUSEHOLD_PARTS
from callcenter.store import models as m

TODAY = date(2026, 11, 23)
AUDIT = rf.Audit(actor="supervisor:sun.admin", at=datetime(2026, 11, 23, 2, 0, tzinfo=UTC))

# A valid row of each sheet, which a test's row changes a column or two of.
BASELINE: dict[str, dict[str, str]] = {
    "stations": {
        "code": "S90",
        "name": "新站",
        "address": "西宁市新路 1 号",
        "lat": "36.6",
        "lon": "101.7",
        "phone": "+869718100090",
        "backup_station": "",
    },
    "shift_patterns": {
        "code": "P90",
        "name": "试班",
        "starts_at": "07:00",
        "duration_minutes": "480",
        "weekdays": "1;2;3",
    },
    "carers": {
        "code": "C900",
        "name": "新人",
        "phone": "+8613700000900",
        "station": "S01",
        "shift_pattern": "EARLY",
        "language": "zh",
        "role": "carer",
        "skills": "",
        "transport": "walk",
        "active": "yes",
    },
    "households": {
        "code": "H9001",
        "address": "西宁市新路 3 号",
        "lat": "36.61",
        "lon": "101.71",
        "home_station": "S01",
        "backup_station": "S02",
        "access_notes": "",
    },
    "residents": {
        "household": "H9001",
        "name": "王秀兰",
        "birth_year": "1940",
        "birth_date": "",
        "sex": "female",
        "mobility": "independent",
        "conditions": "",
        "medicines": "",
        "allergies": "",
        "doctor": "",
        "clinic": "",
        "clinic_phone": "",
        "do_not_resuscitate": "no",
        "hospital": "",
        "wishes": "",
        "speaks": "",
        "hearing": "",
        "sight": "",
        "care_notes": "",
    },
    "contacts": {
        "household": "H9001",
        "name": "王强",
        "relation": "儿子",
        "phone": "+8613700009001",
        "phone_alt": "",
        "language": "zh",
        "holds_key": "no",
        "call_from": "",
        "call_until": "",
        "portal": "yes",
    },
    "household_phones": {
        "household": "H9001",
        "kind": "unit",
        "number": "+8614700009001",
        "label": "",
    },
    "devices": {"serial": "BU-H9001", "kind": "base_unit", "household": "H9001"},
    "roster": {
        "carer": "C001",
        "day": "2026-12-24",
        "on_duty": "no",
        "shift_pattern": "",
        "note": "",
    },
}


def sheet(name: str, *rows: Mapping[str, str]) -> list[list[str]]:
    """A sheet's header and ``rows``, each the baseline with its changes."""
    spec = BY_NAME[name]
    return [list(spec.names)] + [
        [{**BASELINE[name], **row}[column] for column in spec.names] for row in rows
    ]


def workbook(
    sheets: Mapping[str, Sequence[Sequence[str]]], kind: rf.Format = rf.Format.XLSX
) -> bytes:
    """``sheets`` as a file; a households sheet brings its empty parts unless given."""
    full = dict(sheets)
    if "households" in full:
        for part in HOUSEHOLD_PARTS:
            full.setdefault(part, sheet(part))
    return write(kind, full)


REGISTER_TABLES = (
    m.Station,
    m.ShiftPattern,
    m.Carer,
    m.Household,
    m.Resident,
    m.FamilyContact,
    m.HouseholdPhone,
    m.Device,
    m.DeviceMove,
    m.DutyRoster,
    m.AuditEntry,
)


async def table_counts(engine: AsyncEngine) -> dict[str, int]:
    """How many rows each of the register's tables (and the audit log) holds."""
    counts = {}
    async with engine.connect() as connection:
        for model in REGISTER_TABLES:
            counts[model.__tablename__] = int(
                await connection.scalar(select(func.count()).select_from(model)) or 0
            )
    return counts
