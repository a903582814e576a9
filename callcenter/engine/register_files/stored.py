"""The register as the database holds it, read whole: for an export, and for an import's
checks and plan, with the row ids an import writes to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.register import (
    ContactRecord,
    DeviceRecord,
    HouseholdPhoneRecord,
    HouseholdRecord,
    ResidentRecord,
    RosterRecord,
)
from callcenter.engine.register import (
    carer_record,
    contact_record,
    pattern_record,
    resident_record,
    roster_record,
    station_record,
)
from callcenter.engine.register_files.records import Existing, Register
from callcenter.store import models as m


@dataclass(frozen=True)
class Stored:
    """The register as the database holds it, with the row ids an import writes to."""

    register: Register
    existing: Existing
    station_ids: Mapping[str, int]
    carer_ids: Mapping[str, int]
    household_ids: Mapping[str, int]
    device_ids: Mapping[str, int]
    roster_ids: Mapping[tuple[str, date], int]
    # The registry's version when read (store/models.py): an import checked against
    # this snapshot is checked again if the register has moved since.
    version: int | None


async def load(session: AsyncSession, today: date) -> Stored:
    """The whole register (devices out of service left out) as records."""
    version = await m.registry_version(session)
    station_rows = list(
        (await session.execute(select(m.Station).order_by(m.Station.code))).scalars()
    )
    code_of_station = {row.id: row.code for row in station_rows}
    stations = tuple(station_record(row, code_of_station) for row in station_rows)
    pattern_rows = await session.execute(select(m.ShiftPattern).order_by(m.ShiftPattern.code))
    patterns = tuple(pattern_record(row) for row in pattern_rows.scalars())
    carer_rows = list((await session.execute(select(m.Carer).order_by(m.Carer.code))).scalars())
    carers = tuple(carer_record(row, code_of_station) for row in carer_rows)
    code_of_carer = {row.id: row.code for row in carer_rows}
    households, household_ids = await _households(session, code_of_station)
    code_of_household = {i: code for code, i in household_ids.items()}
    device_rows = (await session.execute(select(m.Device).order_by(m.Device.serial))).scalars()
    devices: list[DeviceRecord] = []
    device_ids: dict[str, int] = {}
    retired: set[str] = set()
    for row in device_rows:
        if row.retired_at is not None:
            retired.add(row.serial)
            continue
        devices.append(DeviceRecord(row.serial, row.kind, code_of_household[row.household_id]))
        device_ids[row.serial] = row.id
    roster: list[RosterRecord] = []
    roster_ids: dict[tuple[str, date], int] = {}
    duties = (await session.execute(select(m.DutyRoster).order_by(m.DutyRoster.id))).scalars()
    for duty in duties:
        carer = code_of_carer[duty.carer_id]
        roster.append(roster_record(duty, carer))
        roster_ids[(carer, duty.day)] = duty.id
    register = Register(stations, patterns, carers, households, tuple(devices), tuple(roster))
    existing = Existing(
        today=today,
        stations=frozenset(code_of_station.values()),
        shift_patterns=frozenset(p.code for p in patterns),
        households=frozenset(household_ids),
        carers=frozenset(code_of_carer.values()),
        carer_phones={c.code: c.phone for c in carers},
        retired_serials=frozenset(retired),
    )
    return Stored(
        register=register,
        existing=existing,
        station_ids={code: i for i, code in code_of_station.items()},
        carer_ids={code: i for i, code in code_of_carer.items()},
        household_ids=household_ids,
        device_ids=device_ids,
        roster_ids=roster_ids,
        version=version,
    )


async def _households(
    session: AsyncSession, code_of_station: Mapping[int, str]
) -> tuple[tuple[HouseholdRecord, ...], dict[str, int]]:
    residents: dict[int, list[ResidentRecord]] = defaultdict(list)
    for r in (await session.execute(select(m.Resident).order_by(m.Resident.id))).scalars():
        residents[r.household_id].append(resident_record(r))
    contacts: dict[int, list[ContactRecord]] = defaultdict(list)
    query = select(m.FamilyContact).order_by(m.FamilyContact.household_id, m.FamilyContact.position)
    for c in (await session.execute(query)).scalars():
        contacts[c.household_id].append(contact_record(c))
    phones: dict[int, list[HouseholdPhoneRecord]] = defaultdict(list)
    query_phones = select(m.HouseholdPhone).order_by(
        m.HouseholdPhone.household_id, m.HouseholdPhone.position
    )
    for p in (await session.execute(query_phones)).scalars():
        phones[p.household_id].append(HouseholdPhoneRecord(p.kind, p.number, p.label))
    records = []
    ids: dict[str, int] = {}
    for h in (await session.execute(select(m.Household).order_by(m.Household.code))).scalars():
        records.append(
            HouseholdRecord(
                code=h.code,
                address=h.address,
                lat=h.lat,
                lon=h.lon,
                home_station=code_of_station[h.home_station_id],
                backup_station=code_of_station[h.backup_station_id],
                access_notes=h.access_notes,
                phones=tuple(phones.get(h.id, ())),
                residents=tuple(residents.get(h.id, ())),
                contacts=tuple(contacts.get(h.id, ())),
            )
        )
        ids[h.code] = h.id
    return tuple(records), ids
