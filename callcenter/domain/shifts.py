"""Who is on shift: repeating shift patterns, public holidays and the duty roster.

A public holiday runs the Sunday timetable: a pattern that does not work Sundays (the
weekday office shift) is off that day. The duty roster overrides both for one carer on
one date: a day off (leave, swapped shift) or an extra duty on a named pattern.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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
    roster = roster or {}
    local = at.astimezone(zone)
    for day in (local.date() - timedelta(days=1), local.date()):
        entry = roster.get((carer_id, day))
        if entry is not None:
            if not entry.on_duty:
                continue
            duty = (patterns or {}).get(entry.pattern or "", pattern) if entry.pattern else pattern
            if duty is not None and _covers(duty, day, local, zone):
                return True
            continue
        if (
            pattern is not None
            and _runs_on(pattern, day, holidays)
            and _covers(pattern, day, local, zone)
        ):
            return True
    return False
