"""Who is on shift: repeating shift patterns, public holidays and the duty roster.

A public holiday runs the Sunday timetable: a pattern that does not work Sundays (the
weekday office shift) is off that day. The duty roster overrides both for one carer on
one date: a day off (leave, swapped shift) or an extra duty on a named pattern.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

SUNDAY = 7


@dataclass(frozen=True)
class ShiftPattern:
    """A repeating shift: start time (local), length, ISO weekdays it starts on."""

    code: str
    starts_at: time
    duration: timedelta
    weekdays: frozenset[int]


@dataclass(frozen=True)
class RosterEntry:
    """One carer's duty on one local date, overriding the pattern for shifts starting then.

    ``on_duty`` False is a day off; True with ``pattern`` is a duty on that pattern.
    """

    carer_id: int
    day: date
    on_duty: bool
    pattern: str | None = None


def _runs_on(pattern: ShiftPattern, day: date, holidays: Collection[date]) -> bool:
    weekday = SUNDAY if day in holidays else day.isoweekday()
    return weekday in pattern.weekdays


def _covers(pattern: ShiftPattern, day: date, at: datetime, zone: ZoneInfo) -> bool:
    start = datetime.combine(day, pattern.starts_at, tzinfo=zone)
    return start <= at < start + pattern.duration


def on_shift(
    carer_id: int,
    pattern: ShiftPattern | None,
    at: datetime,
    *,
    zone: ZoneInfo,
    holidays: Collection[date] = (),
    roster: Mapping[tuple[int, date], RosterEntry] | None = None,
    patterns: Mapping[str, ShiftPattern] | None = None,
) -> bool:
    """True when the carer works at ``at``: their pattern or a roster duty covers it.

    Shifts that started the day before are considered too, so a night shift from 23:00
    still counts at 03:00.
    """
    local = at.astimezone(zone)
    for day in (local.date() - timedelta(days=1), local.date()):
        duty = duty_starting(
            carer_id, pattern, day, holidays=holidays, roster=roster, patterns=patterns
        )
        if duty is not None and _covers(duty, day, local, zone):
            return True
    return False


def duty_starting(
    carer_id: int,
    pattern: ShiftPattern | None,
    day: date,
    *,
    holidays: Collection[date] = (),
    roster: Mapping[tuple[int, date], RosterEntry] | None = None,
    patterns: Mapping[str, ShiftPattern] | None = None,
) -> ShiftPattern | None:
    """The shift the carer starts on local ``day``, if any: the roster's entry for that
    day first (a day off, or a duty on a named pattern), else their own pattern when it
    runs that day (a public holiday runs the Sunday timetable). The one rule of who
    works when: ``on_shift`` and the rota's calendar both ask it."""
    entry = (roster or {}).get((carer_id, day))
    if entry is not None:
        if not entry.on_duty:
            return None
        if entry.pattern:
            return (patterns or {}).get(entry.pattern, pattern)
        return pattern
    if pattern is not None and _runs_on(pattern, day, holidays):
        return pattern
    return None


@dataclass(frozen=True)
class Duty:
    """One shift a carer works, from ``start`` to ``end`` (aware, local time)."""

    carer_id: int
    start: datetime
    end: datetime
    pattern: str
    rostered: bool  # set by the roster rather than the carer's own pattern


def duties(
    carer_id: int,
    pattern: ShiftPattern | None,
    first: date,
    last: date,
    *,
    zone: ZoneInfo,
    holidays: Collection[date] = (),
    roster: Mapping[tuple[int, date], RosterEntry] | None = None,
    patterns: Mapping[str, ShiftPattern] | None = None,
) -> list[Duty]:
    """The carer's shifts that overlap local days ``first`` to ``last`` (a night shift
    begun the day before included)."""
    found = []
    day = first - timedelta(days=1)
    while day <= last:
        duty = duty_starting(
            carer_id, pattern, day, holidays=holidays, roster=roster, patterns=patterns
        )
        if duty is not None:
            start = datetime.combine(day, duty.starts_at, tzinfo=zone)
            end = start + duty.duration
            if end > datetime.combine(first, time(0), tzinfo=zone):
                rostered = (carer_id, day) in (roster or {})
                found.append(Duty(carer_id, start, end, duty.code, rostered))
        day += timedelta(days=1)
    return found


def gaps(shifts: Iterable[Duty], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The stretches between ``start`` and ``end`` that none of ``shifts`` covers."""
    found = []
    reached = start
    for duty in sorted(shifts, key=lambda d: d.start):
        if duty.start > reached:
            found.append((reached, min(duty.start, end)))
        reached = max(reached, duty.end)
        if reached >= end:
            break
    if reached < end:
        found.append((reached, end))
    return [(a, b) for a, b in found if a < b]
