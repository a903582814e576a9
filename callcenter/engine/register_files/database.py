"""An import's changes written in the caller's transaction, with an audit row for each
record that changed (``plan.py`` decides which)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Text, bindparam, delete, insert, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.register import (
    CarerRecord,
    ContactRecord,
    HouseholdRecord,
    ResidentRecord,
    RosterRecord,
    ShiftPatternRecord,
    StationRecord,
)
from callcenter.engine.register_files.plan import KINDS, Change, Plan
from callcenter.engine.register_files.stored import Stored
from callcenter.store import models as m
from callcenter.store.db import WRITE_SLICE, execute_in_slices, insert_rows

# The audit action each kind's changes are written under.
ACTIONS = {kind: f"import_{kind.removesuffix('s')}" for kind in KINDS} | {
    "roster": "import_roster_day"
}


@dataclass(frozen=True)
class Audit:
    """Who imports, when, and from where: on every audit row the import writes."""

    actor: str
    at: datetime
    path: str = ""
    address: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


async def write_import(session: AsyncSession, stored: Stored, planned: Plan, audit: Audit) -> None:
    """Write ``planned`` in the caller's transaction, with its audit rows."""
    by_kind: dict[str, list[Change]] = defaultdict(list)
    for change in planned.changes:
        by_kind[change.kind].append(change)
    ids = _Ids(stored)
    await _stations(session, by_kind["stations"], ids)
    await _shift_patterns(session, by_kind["shift_patterns"])
    await _carers(session, by_kind["carers"], ids)
    await _write_households(session, by_kind["households"], ids)
    moves = await _devices(session, by_kind["devices"], stored, ids)
    await _roster(session, by_kind["roster"], stored, ids)
    rows = []
    for change in planned.changes:
        household = None
        if change.kind == "households":
            household = ids.households[change.key]
        elif change.kind == "devices":
            household = ids.households[change.after.household]
        rows.append(
            {
                "at": audit.at,
                "actor": audit.actor[:96],
                "household_id": household,
                "action": ACTIONS[change.kind],
                "path": audit.path[:255],
                "address": audit.address[:64],
                "detail": {"key": change.key, **audit.detail},
                "before": change.before_json,
                "after": change.after_json,
            }
        )
    await insert_rows(
        session,
        m.DeviceMove,
        [{**move, "at": audit.at, "by": audit.actor[:96]} for move in moves],
    )
    await insert_rows(session, m.AuditEntry, rows)


class _Ids:
    def __init__(self, stored: Stored) -> None:
        self.stations = dict(stored.station_ids)
        self.carers = dict(stored.carer_ids)
        self.households = dict(stored.household_ids)


async def _inserted(
    session: AsyncSession, model: Any, rows: list[dict[str, Any]], key: str
) -> dict[str, int]:
    """Insert ``rows``; their new ids by ``key``."""
    ids: dict[str, int] = {}
    statement = insert(model).returning(model.id, getattr(model, key), sort_by_parameter_order=True)
    for start in range(0, len(rows), WRITE_SLICE):
        result = await session.execute(statement, rows[start : start + WRITE_SLICE])
        ids.update({row[1]: row[0] for row in result})
        await asyncio.sleep(0)
    return ids


async def _updated(session: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> None:
    """Update ``rows`` (each with its ``id`` and the same columns).

    On PostgreSQL a slice is one ``UPDATE ... FROM unnest(...)``: row by row, each
    statement would run the registry's version trigger, and thousands of updates of its
    one row in one transaction slow down as they go. SQLite's triggers run once a row
    whatever the statement, and an update a row is fast there."""
    if not rows:
        return
    if session.get_bind().dialect.name != "postgresql":
        await execute_in_slices(session, update(model), rows)
        return
    table = model.__table__
    names = list(rows[0])
    # A JSON value goes as its text (an array of lists would be read as a 2-D array).
    documents = {name for name in names if isinstance(table.c[name].type, JSON)}

    def given(name: str) -> str:
        return f"CAST(given.{name} AS JSON)" if name in documents else f"given.{name}"

    def bound(name: str) -> Any:
        kind = Text() if name in documents else table.c[name].type
        return bindparam(name, type_=ARRAY(kind))

    # One statement a slice, its values passed as one array a column: compiled once,
    # whatever the rows (a VALUES list with a parameter a cell took longer to compile
    # than to run).
    statement = text(
        f"UPDATE {table.name} SET "
        + ", ".join(f"{name} = {given(name)}" for name in names if name != "id")
        + " FROM unnest("
        + ", ".join(f":{name}" for name in names)
        + f") AS given({', '.join(names)}) WHERE {table.name}.id = given.id"
    ).bindparams(*(bound(name) for name in names))
    for start in range(0, len(rows), WRITE_SLICE):
        some = rows[start : start + WRITE_SLICE]
        columns = {
            name: [
                json.dumps(row[name], allow_nan=False) if name in documents else row[name]
                for row in some
            ]
            for name in names
        }
        await session.execute(statement, columns)
        await asyncio.sleep(0)


def _station_values(record: StationRecord) -> dict[str, Any]:
    return {
        "code": record.code,
        "name": record.name,
        "address": record.address,
        "lat": record.lat,
        "lon": record.lon,
        "phone": record.phone,
    }


async def _stations(session: AsyncSession, changes: Sequence[Change], ids: _Ids) -> None:
    new = [_station_values(c.after) for c in changes if c.before is None]
    ids.stations.update(await _inserted(session, m.Station, new, "code"))
    await _updated(
        session,
        m.Station,
        [{"id": ids.stations[c.key], **_station_values(c.after)} for c in changes if c.before],
    )
    # Backups name stations, so they are set once every station exists.
    backups = [
        {
            "id": ids.stations[c.key],
            "backup_station_id": ids.stations[c.after.backup_station]
            if c.after.backup_station
            else None,
        }
        for c in changes
        if c.before is None or c.before.backup_station != c.after.backup_station
    ]
    await _updated(session, m.Station, backups)


async def _shift_patterns(session: AsyncSession, changes: Sequence[Change]) -> None:
    def values(record: ShiftPatternRecord) -> dict[str, Any]:
        return {
            "code": record.code,
            "name": record.name,
            "starts_at": record.starts_at,
            "duration_minutes": record.duration_minutes,
            "weekdays": list(record.weekdays),
        }

    new = [values(c.after) for c in changes if c.before is None]
    await insert_rows(session, m.ShiftPattern, new)
    for c in changes:
        if c.before is not None:
            found = values(c.after)
            code = found.pop("code")
            await session.execute(
                update(m.ShiftPattern).where(m.ShiftPattern.code == code).values(**found)
            )


async def _carers(session: AsyncSession, changes: Sequence[Change], ids: _Ids) -> None:
    def values(record: CarerRecord) -> dict[str, Any]:
        return {
            "code": record.code,
            "name": record.name,
            "phone": record.phone,
            "language": record.language,
            "role": str(record.role),
            "station_id": ids.stations[record.station],
            "skills": list(record.skills),
            "transport": str(record.transport),
            "shift_pattern_code": record.shift_pattern,
            "active": record.active,
        }

    updated = [c for c in changes if c.before is not None]
    # Phones are unique: one carer may take the number another gives up in this same
    # file, so changed numbers are first set aside, then written.
    moving = [c for c in updated if c.before.phone != c.after.phone]
    await _updated(
        session,
        m.Carer,
        [{"id": ids.carers[c.key], "phone": f"moving:{ids.carers[c.key]}"} for c in moving],
    )
    await _updated(
        session, m.Carer, [{"id": ids.carers[c.key], **values(c.after)} for c in updated]
    )
    new = [values(c.after) for c in changes if c.before is None]
    ids.carers.update(await _inserted(session, m.Carer, new, "code"))


def _household_values(record: HouseholdRecord, ids: _Ids) -> dict[str, Any]:
    return {
        "code": record.code,
        "address": record.address,
        "lat": record.lat,
        "lon": record.lon,
        "home_station_id": ids.stations[record.home_station],
        "backup_station_id": ids.stations[record.backup_station],
        "access_notes": record.access_notes,
    }


def _resident_values(record: ResidentRecord) -> dict[str, Any]:
    values = _fields(record)
    del values["id"]
    values["birth_year"] = record.year
    for name in ("conditions", "medicines", "allergies"):
        values[name] = list(values[name])
    values["sex"] = str(record.sex)
    values["mobility"] = str(record.mobility)
    values["hearing"] = str(record.hearing)
    values["sight"] = str(record.sight)
    return values


async def _write_households(session: AsyncSession, changes: Sequence[Change], ids: _Ids) -> None:
    new = [_household_values(c.after, ids) for c in changes if c.before is None]
    ids.households.update(await _inserted(session, m.Household, new, "code"))
    await _updated(
        session,
        m.Household,
        [
            {"id": ids.households[c.key], **_household_values(c.after, ids)}
            for c in changes
            if c.before is not None
        ],
    )
    renewed = [ids.households[c.key] for c in changes if c.before is not None]
    for start in range(0, len(renewed), WRITE_SLICE):
        some = renewed[start : start + WRITE_SLICE]
        await session.execute(delete(m.FamilyContact).where(m.FamilyContact.household_id.in_(some)))
        await session.execute(
            delete(m.HouseholdPhone).where(m.HouseholdPhone.household_id.in_(some))
        )
    added_residents: list[dict[str, Any]] = []
    changed_residents: list[dict[str, Any]] = []
    contacts: list[dict[str, Any]] = []
    phones: list[dict[str, Any]] = []
    for c in changes:
        household_id = ids.households[c.key]
        stored = {r.id: r for r in c.before.residents} if c.before is not None else {}
        for resident in c.after.residents:
            values = {"household_id": household_id, **_resident_values(resident)}
            if resident.id is None:
                added_residents.append(values)
            elif stored[resident.id] != resident:
                changed_residents.append({"id": resident.id, **values})
        contacts.extend(
            {"household_id": household_id, "position": n, **_contact_values(contact)}
            for n, contact in enumerate(c.after.contacts, start=1)
        )
        phones.extend(
            {
                "household_id": household_id,
                "position": n,
                "kind": str(p.kind),
                "number": p.number,
                "label": p.label,
            }
            for n, p in enumerate(c.after.phones, start=1)
        )
    await _updated(session, m.Resident, changed_residents)
    for model, rows in (
        (m.Resident, added_residents),
        (m.FamilyContact, contacts),
        (m.HouseholdPhone, phones),
    ):
        await insert_rows(session, model, rows)


def _contact_values(record: ContactRecord) -> dict[str, Any]:
    return _fields(record)


def _fields(record: Any) -> dict[str, Any]:
    """A record's fields, as they are (``dataclasses.asdict`` copies every value deeply:
    seconds for a large import)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


async def _devices(
    session: AsyncSession, changes: Sequence[Change], stored: Stored, ids: _Ids
) -> list[dict[str, Any]]:
    """Write the devices; the moves from one household to another, to be recorded."""
    moves = []
    new = []
    updated = []
    for c in changes:
        values = {
            "serial": c.after.serial,
            "kind": c.after.kind,
            "household_id": ids.households[c.after.household],
        }
        if c.before is None:
            new.append({**values, "online": False})
            continue
        updated.append({"id": stored.device_ids[c.key], **values})
        if c.before.household != c.after.household:
            moves.append(
                {
                    "device_id": stored.device_ids[c.key],
                    "from_household_id": ids.households[c.before.household],
                    "to_household_id": values["household_id"],
                }
            )
    await _updated(session, m.Device, updated)
    await insert_rows(session, m.Device, new)
    return moves


async def _roster(
    session: AsyncSession, changes: Sequence[Change], stored: Stored, ids: _Ids
) -> None:
    def values(record: RosterRecord) -> dict[str, Any]:
        return {
            "carer_id": ids.carers[record.carer],
            "day": record.day,
            "on_duty": record.on_duty,
            "shift_pattern_code": record.shift_pattern,
            "note": record.note,
        }

    new = [values(c.after) for c in changes if c.before is None]
    await insert_rows(session, m.DutyRoster, new)
    await _updated(
        session,
        m.DutyRoster,
        [
            {"id": stored.roster_ids[(c.after.carer, c.after.day)], **values(c.after)}
            for c in changes
            if c.before is not None
        ],
    )
