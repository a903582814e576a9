"""Stations, shift patterns, carers and the duty roster: listed, added and changed,
each change audited with the record before and after."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain import register as rules
from callcenter.engine.register.changes import (
    Change,
    audit_row,
    changing,
    coded_row,
    given_place,
    known,
    record_json,
    refuse_if,
    station_codes,
    taken_refusal,
)
from callcenter.store import models as m

# --- stations, shift patterns, carers ----------------------------------------------------


def station_record(s: m.Station, stations: Mapping[int, str]) -> rules.StationRecord:
    backup = None if s.backup_station_id is None else stations.get(s.backup_station_id)
    return rules.StationRecord(s.code, s.name, s.address, s.lat, s.lon, s.phone, backup)


async def stations(engine: AsyncEngine) -> list[rules.StationRecord]:
    async with AsyncSession(engine) as session:
        codes = await station_codes(session)
        rows = (await session.scalars(select(m.Station).order_by(m.Station.code))).all()
        return [station_record(s, codes) for s in rows]


async def save_station(
    engine: AsyncEngine,
    record: rules.StationRecord,
    change: Change,
    *,
    today: date,
    existing: str | None = None,
) -> rules.StationRecord:
    async with changing(engine) as session:
        facts = await known(session, today)
        codes = await station_codes(session)
        row = await coded_row(session, m.Station, "station", existing, record.code)
        before = None if row is None else station_record(row, codes)
        taken = facts.stations - ({existing} if existing else set())
        # A station may name itself as backup only by its new code, which the rule sees.
        facts = dataclasses.replace(
            facts, taken_codes=frozenset(taken), stations=frozenset(taken | {record.code})
        )
        refuse_if(rules.station_problems(record, facts))
        ids = {code: sid for sid, code in codes.items()}
        if row is None:
            row = m.Station(code=record.code)
            session.add(row)
        row.code = record.code
        row.name = record.name
        row.address = record.address
        row.lat, row.lon = given_place(record.lat, record.lon)
        row.phone = record.phone
        row.backup_station_id = None if not record.backup_station else ids[record.backup_station]
        try:
            await session.flush()
        except IntegrityError as error:
            raise taken_refusal(error, "code", record.code) from None
        after = station_record(row, {**codes, row.id: row.code})
        audit_row(
            session,
            change,
            action="add_station" if before is None else "change_station",
            household_id=None,
            before=None if before is None else record_json(before),
            after=record_json(after),
        )
        return after


def pattern_record(p: m.ShiftPattern) -> rules.ShiftPatternRecord:
    return rules.ShiftPatternRecord(
        p.code, p.name, p.starts_at, p.duration_minutes, tuple(sorted(p.weekdays))
    )


async def shift_patterns(engine: AsyncEngine) -> list[rules.ShiftPatternRecord]:
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(m.ShiftPattern).order_by(m.ShiftPattern.code))).all()
        return [pattern_record(p) for p in rows]


async def save_shift_pattern(
    engine: AsyncEngine,
    record: rules.ShiftPatternRecord,
    change: Change,
    *,
    today: date,
    existing: str | None = None,
) -> rules.ShiftPatternRecord:
    """Add a shift pattern, or change one (its code stays: carers and the roster name it)."""
    async with changing(engine) as session:
        facts = await known(session, today)
        row = await coded_row(session, m.ShiftPattern, "shift pattern", existing, record.code)
        before = None if row is None else pattern_record(row)
        taken = facts.shift_patterns - ({existing} if existing else set())
        refuse_if(
            rules.shift_pattern_problems(record, dataclasses.replace(facts, taken_codes=taken))
        )
        if row is None:
            row = m.ShiftPattern(code=record.code)
            session.add(row)
        row.name = record.name
        row.starts_at = record.starts_at
        row.duration_minutes = record.duration_minutes
        row.weekdays = sorted(record.weekdays)
        try:
            await session.flush()
        except IntegrityError as error:
            raise taken_refusal(error, "code", record.code) from None
        after = pattern_record(row)
        audit_row(
            session,
            change,
            action="add_shift_pattern" if before is None else "change_shift_pattern",
            household_id=None,
            before=None if before is None else record_json(before),
            after=record_json(after),
        )
        return after


def carer_record(c: m.Carer, stations: Mapping[int, str]) -> rules.CarerRecord:
    return rules.CarerRecord(
        code=c.code,
        name=c.name,
        phone=c.phone,
        station=stations[c.station_id],
        shift_pattern=c.shift_pattern_code,
        language=c.language,
        role=c.role,
        skills=tuple(c.skills),
        transport=c.transport,
        active=c.active,
    )


async def carers(engine: AsyncEngine) -> list[rules.CarerRecord]:
    async with AsyncSession(engine) as session:
        codes = await station_codes(session)
        rows = (await session.scalars(select(m.Carer).order_by(m.Carer.code))).all()
        return [carer_record(c, codes) for c in rows]


async def save_carer(
    engine: AsyncEngine,
    record: rules.CarerRecord,
    change: Change,
    *,
    today: date,
    existing: str | None = None,
) -> rules.CarerRecord:
    async with changing(engine) as session:
        facts = await known(session, today)
        codes = await station_codes(session)
        row = await coded_row(session, m.Carer, "carer", existing, record.code)
        before = None if row is None else carer_record(row, codes)
        phones = select(m.Carer.phone)
        if row is not None:
            phones = phones.where(m.Carer.id != row.id)
        facts = dataclasses.replace(
            facts,
            taken_codes=facts.carers - ({existing} if existing else set()),
            taken_phones=frozenset((await session.scalars(phones)).all()),
        )
        refuse_if(rules.carer_problems(record, facts))
        ids = {code: sid for sid, code in codes.items()}
        if row is None:
            row = m.Carer(code=record.code)
            session.add(row)
        row.code = record.code
        row.name = record.name
        row.phone = record.phone
        row.station_id = ids[record.station]
        row.shift_pattern_code = record.shift_pattern
        row.language = record.language
        row.role = record.role
        row.skills = list(record.skills)
        row.transport = record.transport
        row.active = record.active
        try:
            await session.flush()
        except IntegrityError as error:
            raise taken_refusal(error, "code", record.code) from None
        after = carer_record(row, codes)
        audit_row(
            session,
            change,
            action="add_carer" if before is None else "change_carer",
            household_id=None,
            before=None if before is None else record_json(before),
            after=record_json(after),
        )
        return after


# --- the duty roster -------------------------------------------------------------------


def roster_record(r: m.DutyRoster, carer: str) -> rules.RosterRecord:
    return rules.RosterRecord(carer, r.day, r.on_duty, r.shift_pattern_code, r.note)


async def roster(engine: AsyncEngine, first: date, last: date) -> list[rules.RosterRecord]:
    """The roster's entries from ``first`` to ``last`` (inclusive), by day and carer."""
    async with AsyncSession(engine) as session:
        rows = (
            await session.execute(
                select(m.DutyRoster, m.Carer.code)
                .join(m.Carer, m.Carer.id == m.DutyRoster.carer_id)
                .where(m.DutyRoster.day >= first, m.DutyRoster.day <= last)
                .order_by(m.DutyRoster.day, m.Carer.code)
            )
        ).all()
    return [roster_record(r, code) for r, code in rows]


async def set_roster(
    engine: AsyncEngine,
    record: rules.RosterRecord,
    change: Change,
    *,
    today: date,
) -> rules.RosterRecord:
    """One carer's duty on one date: a day off or a duty on a pattern (replacing any)."""
    async with changing(engine) as session:
        refuse_if(rules.roster_problems(record, await known(session, today)))
        carer_id = await session.scalar(select(m.Carer.id).where(m.Carer.code == record.carer))
        row = await session.scalar(
            select(m.DutyRoster).where(
                m.DutyRoster.carer_id == carer_id, m.DutyRoster.day == record.day
            )
        )
        before = None if row is None else roster_record(row, record.carer)
        if row is None:
            row = m.DutyRoster(carer_id=carer_id, day=record.day)
            session.add(row)
        row.on_duty = record.on_duty
        row.shift_pattern_code = record.shift_pattern
        row.note = record.note
        try:
            await session.flush()
        except IntegrityError as error:  # two set the same day at once: try again
            raise taken_refusal(error, "day", record.day.isoformat()) from None
        audit_row(
            session,
            change,
            action="set_roster",
            household_id=None,
            before=None if before is None else record_json(before),
            after=record_json(record),
        )
        return record


async def clear_roster(engine: AsyncEngine, carer: str, day: date, change: Change) -> bool:
    """Remove a carer's entry for a day (their pattern applies again); whether one was."""
    async with changing(engine) as session:
        row = (
            await session.execute(
                select(m.DutyRoster)
                .join(m.Carer, m.Carer.id == m.DutyRoster.carer_id)
                .where(m.Carer.code == carer, m.DutyRoster.day == day)
            )
        ).scalar_one_or_none()
        if row is None:
            return False
        before = roster_record(row, carer)
        await session.delete(row)
        audit_row(
            session,
            change,
            action="clear_roster",
            household_id=None,
            before=record_json(before),
            after=None,
        )
        return True
