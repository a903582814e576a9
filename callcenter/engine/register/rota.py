"""The rota as a calendar: each station's shifts and its gaps, from the one rule of
who works when (domain/shifts.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain.shifts import Duty, RosterEntry, ShiftPattern, duties, gaps
from callcenter.store import models as m

# --- the rota ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RotaShift:
    carer: str
    name: str
    start: datetime
    end: datetime
    pattern: str
    rostered: bool


@dataclass(frozen=True)
class RotaGap:
    """A stretch when a station has nobody on shift; ``backup`` (the B post) covers it
    whole, or not."""

    start: datetime
    end: datetime
    backup_covers: bool


@dataclass(frozen=True)
class StationRota:
    code: str
    name: str
    backup: str | None
    shifts: list[RotaShift]
    gaps: list[RotaGap]


async def rota(
    engine: AsyncEngine, first: date, last: date, *, zone: ZoneInfo, holidays: Iterable[date]
) -> list[StationRota]:
    """Who is on shift at each station from local ``first`` to ``last`` (active carers,
    their patterns and the roster, by ``domain/shifts.duty_starting``, the rule the desk
    pages by), and the gaps when a station has nobody, each with whether its B post
    covers it. A gap here is the watchdog's "no free carer on shift" when it comes."""
    async with AsyncSession(engine) as session:
        station_rows = (await session.scalars(select(m.Station).order_by(m.Station.code))).all()
        patterns = {
            p.code: ShiftPattern(
                p.code, p.starts_at, timedelta(minutes=p.duration_minutes), frozenset(p.weekdays)
            )
            for p in (await session.scalars(select(m.ShiftPattern))).all()
        }
        carer_rows = (await session.scalars(select(m.Carer).where(m.Carer.active.is_(True)))).all()
        entries = (
            await session.scalars(
                select(m.DutyRoster).where(
                    m.DutyRoster.day >= first - timedelta(days=1), m.DutyRoster.day <= last
                )
            )
        ).all()
    roster = {
        (r.carer_id, r.day): RosterEntry(r.carer_id, r.day, r.on_duty, r.shift_pattern_code)
        for r in entries
    }
    holiday_set = frozenset(holidays)
    by_station: dict[int, list[RotaShift]] = {s.id: [] for s in station_rows}
    spans: dict[int, list[Duty]] = {s.id: [] for s in station_rows}
    for carer in carer_rows:
        for duty in duties(
            carer.id,
            patterns.get(carer.shift_pattern_code),
            first,
            last,
            zone=zone,
            holidays=holiday_set,
            roster=roster,
            patterns=patterns,
        ):
            spans[carer.station_id].append(duty)
            by_station[carer.station_id].append(
                RotaShift(carer.code, carer.name, duty.start, duty.end, duty.pattern, duty.rostered)
            )
    begin = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    found = []
    for station in station_rows:
        backup = station.backup_station_id
        holes = [
            RotaGap(
                a,
                b,
                backup is not None and backup in spans and not gaps(spans[backup], a, b),
            )
            for a, b in gaps(spans[station.id], begin, end)
        ]
        found.append(
            StationRota(
                station.code,
                station.name,
                next((s.code for s in station_rows if s.id == backup), None),
                sorted(by_station[station.id], key=lambda s: (s.start, s.carer)),
                holes,
            )
        )
    return found
