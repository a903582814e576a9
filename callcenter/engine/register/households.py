"""Households with their residents, contacts and numbers: read, listed, added and
changed whole, each change audited with the record before and after."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload

from callcenter.domain import register as rules
from callcenter.domain.register import Problem
from callcenter.engine.register.changes import (
    Change,
    RecordInUseError,
    RecordNotFoundError,
    RegisterRefusedError,
    audit_row,
    changing,
    given_place,
    known,
    record_json,
    refuse_if,
    same_code,
    station_codes,
    taken_refusal,
)
from callcenter.store import models as m


def resident_record(r: m.Resident) -> rules.ResidentRecord:
    return rules.ResidentRecord(
        id=r.id,
        name=r.name,
        birth_year=r.birth_year,
        birth_date=r.birth_date,
        sex=r.sex,
        mobility=r.mobility,
        conditions=tuple(r.conditions),
        medicines=tuple(r.medicines),
        allergies=tuple(r.allergies),
        doctor=r.doctor,
        clinic=r.clinic,
        clinic_phone=r.clinic_phone,
        do_not_resuscitate=r.do_not_resuscitate,
        hospital=r.hospital,
        wishes=r.wishes,
        speaks=r.speaks,
        hearing=r.hearing,
        sight=r.sight,
        care_notes=r.care_notes,
    )


def contact_record(c: m.FamilyContact) -> rules.ContactRecord:
    return rules.ContactRecord(
        name=c.name,
        relation=c.relation,
        phone=c.phone,
        phone_alt=c.phone_alt,
        language=c.language,
        holds_key=c.holds_key,
        call_from=c.call_from,
        call_until=c.call_until,
        portal=c.portal,
    )


def household_record(h: m.Household, stations: Mapping[int, str]) -> rules.HouseholdRecord:
    """The household as the register keeps it (``h`` loaded with ``_WHOLE``)."""
    return rules.HouseholdRecord(
        code=h.code,
        address=h.address,
        lat=h.lat,
        lon=h.lon,
        home_station=stations[h.home_station_id],
        backup_station=stations[h.backup_station_id],
        access_notes=h.access_notes,
        phones=tuple(
            rules.HouseholdPhoneRecord(p.kind, p.number, p.label)
            for p in sorted(h.phones, key=lambda p: p.position)
        ),
        residents=tuple(resident_record(r) for r in sorted(h.residents, key=lambda r: r.id)),
        contacts=tuple(contact_record(c) for c in sorted(h.contacts, key=lambda c: c.position)),
    )


_WHOLE = (
    selectinload(m.Household.residents),
    selectinload(m.Household.contacts),
    selectinload(m.Household.phones),
)


async def _household_row(session: AsyncSession, code: str, *, lock: bool = False) -> m.Household:
    query = select(m.Household).where(m.Household.code == code).options(*_WHOLE)
    # Two administrators saving one household take turns (PostgreSQL; SQLite's writers
    # already do).
    household = await session.scalar(query.with_for_update() if lock else query)
    if household is None:
        raise RecordNotFoundError("household", code)
    return household


async def read_household(engine: AsyncEngine, code: str) -> tuple[int, rules.HouseholdRecord]:
    """The household's id and record; RecordNotFoundError if there is none."""
    async with AsyncSession(engine) as session:
        household = await _household_row(session, code)
        return household.id, household_record(household, await station_codes(session))


# --- households ------------------------------------------------------------------------


def _resident_row(row: m.Resident, record: rules.ResidentRecord) -> None:
    row.name = record.name
    row.birth_year = record.year or 0
    row.birth_date = record.birth_date
    row.sex = record.sex
    row.mobility = record.mobility
    row.conditions = list(record.conditions)
    row.medicines = list(record.medicines)
    row.allergies = list(record.allergies)
    row.doctor = record.doctor
    row.clinic = record.clinic
    row.clinic_phone = record.clinic_phone
    row.do_not_resuscitate = record.do_not_resuscitate
    row.hospital = record.hospital
    row.wishes = record.wishes
    row.speaks = record.speaks
    row.hearing = record.hearing
    row.sight = record.sight
    row.care_notes = record.care_notes


async def _write_people(
    session: AsyncSession, household: m.Household, record: rules.HouseholdRecord
) -> None:
    """The household's residents, contacts and numbers as the record has them."""
    by_id = {r.id: r for r in household.residents}
    wanted = {r.id for r in record.residents if r.id is not None}
    unknown = sorted(wanted - set(by_id))
    if unknown:
        raise RegisterRefusedError(
            [Problem("residents", "unknown_resident", {"id": ", ".join(map(str, unknown))})]
        )
    leaving = [row for rid, row in by_id.items() if rid not in wanted]
    if leaving:
        welfare = await session.scalar(
            select(func.count())
            .select_from(m.WelfareCall)
            .where(m.WelfareCall.resident_id.in_([r.id for r in leaving]))
        )
        if welfare:
            names = "、".join(r.name for r in leaving)
            raise RecordInUseError(
                f"{names}: welfare calls are on record for them, so they stay in the "
                "register; edit their record instead"
            )
        for row in leaving:
            await session.delete(row)
    for resident in record.residents:
        if resident.id is not None:
            _resident_row(by_id[resident.id], resident)
        else:
            added = m.Resident(household_id=household.id)
            session.add(added)
            _resident_row(added, resident)
    # Contacts and numbers are lists in order: written again whole.
    await session.execute(
        delete(m.FamilyContact).where(m.FamilyContact.household_id == household.id)
    )
    await session.execute(
        delete(m.HouseholdPhone).where(m.HouseholdPhone.household_id == household.id)
    )
    for position, contact in enumerate(record.contacts, start=1):
        session.add(
            m.FamilyContact(
                household_id=household.id,
                position=position,
                name=contact.name,
                relation=contact.relation,
                phone=contact.phone,
                phone_alt=contact.phone_alt,
                language=contact.language,
                holds_key=contact.holds_key,
                call_from=contact.call_from,
                call_until=contact.call_until,
                portal=contact.portal,
            )
        )
    for position, phone in enumerate(record.phones, start=1):
        session.add(
            m.HouseholdPhone(
                household_id=household.id,
                position=position,
                kind=phone.kind,
                number=phone.number,
                label=phone.label,
            )
        )


async def save_household(
    engine: AsyncEngine,
    record: rules.HouseholdRecord,
    change: Change,
    *,
    today: date,
    existing: str | None = None,
) -> tuple[int, rules.HouseholdRecord]:
    """Add a household (``existing`` None) or change the one with code ``existing`` (its
    code stays); its id and record as saved."""
    async with changing(engine) as session:
        facts = await known(session, today)
        household = None if existing is None else await _household_row(session, existing, lock=True)
        same_code(existing, record.code)
        stations = await station_codes(session)
        before = None if household is None else household_record(household, stations)
        taken = facts.households - ({existing} if existing else set())
        facts = dataclasses.replace(facts, taken_codes=frozenset(taken))
        refuse_if(rules.household_problems(record, facts))
        ids = {code: sid for sid, code in stations.items()}
        if household is None:
            household = m.Household(code=record.code)
            session.add(household)
            household.residents, household.contacts, household.phones = [], [], []
        household.code = record.code
        household.address = record.address
        household.lat, household.lon = given_place(record.lat, record.lon)
        household.home_station_id = ids[record.home_station]
        household.backup_station_id = ids[record.backup_station]
        household.access_notes = record.access_notes
        try:
            await session.flush()
            await _write_people(session, household, record)
            await session.flush()
        except IntegrityError as error:
            raise taken_refusal(error, "code", record.code) from None
        await session.refresh(household, ["residents", "contacts", "phones"])
        after = household_record(household, stations)
        audit_row(
            session,
            change,
            action="add_household" if before is None else "change_household",
            household_id=household.id,
            before=None if before is None else record_json(before),
            after=record_json(after),
        )
        return household.id, after


async def household_summaries(
    engine: AsyncEngine, *, station: str | None = None, text: str | None = None
) -> list[dict[str, Any]]:
    """Households by code, with their station, residents' names and devices in service;
    ``station``: of that home station; ``text``: part of a code, address or name."""
    home = select(m.Station.id).where(m.Station.code == station).scalar_subquery()
    query = select(m.Household).options(selectinload(m.Household.residents))
    if station is not None:
        query = query.where(m.Household.home_station_id == home)
    if text:
        like = f"%{text.replace('%', '').replace('_', '')}%"
        named = select(m.Resident.household_id).where(m.Resident.name.like(like))
        query = query.where(
            m.Household.code.like(like) | m.Household.address.like(like) | m.Household.id.in_(named)
        )
    async with AsyncSession(engine) as session:
        codes = await station_codes(session)
        rows = (await session.scalars(query.order_by(m.Household.code))).all()
        in_service = dict(
            (
                await session.execute(
                    select(m.Device.household_id, func.count())
                    .where(m.Device.retired_at.is_(None))
                    .group_by(m.Device.household_id)
                )
            ).all()
        )
    return [
        {
            "code": h.code,
            "address": h.address,
            "home_station": codes[h.home_station_id],
            "residents": [r.name for r in sorted(h.residents, key=lambda r: r.id)],
            "devices": int(in_service.get(h.id, 0)),
        }
        for h in rows
    ]
