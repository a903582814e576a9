"""Who is on shift (domain/shifts.py): patterns, night shifts, holidays, the duty roster."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain.shifts import RosterEntry, ShiftPattern, duties, gaps, on_shift

ZONE = ZoneInfo("Asia/Shanghai")
WEEKDAYS = frozenset({1, 2, 3, 4, 5})
EVERY_DAY = frozenset(range(1, 8))

DAY = ShiftPattern("D", time(8), timedelta(hours=8), EVERY_DAY)
NIGHT = ShiftPattern("N", time(23), timedelta(hours=8), WEEKDAYS)  # starts Mon-Fri nights
OFFICE = ShiftPattern("O", time(9), timedelta(hours=8), WEEKDAYS)
SUNDAYS = ShiftPattern("S", time(8), timedelta(hours=12), frozenset({7}))
PATTERNS = {p.code: p for p in (DAY, NIGHT, OFFICE, SUNDAYS)}

# 2026: 2 March is a Monday; 1 October (National Day) a Thursday.
MON, TUE, THU, FRI, SAT, SUN, NEXT_MON = (
    date(2026, 3, 2),
    date(2026, 3, 3),
    date(2026, 3, 5),
    date(2026, 3, 6),
    date(2026, 3, 7),
    date(2026, 3, 8),
    date(2026, 3, 9),
)
NATIONAL_DAY = date(2026, 10, 1)
HOLIDAYS = frozenset({NATIONAL_DAY})
CARER = 17


def local(day: date, hour: int, minute: int = 0) -> datetime:
    """That wall-clock time in Shanghai, as the UTC instant the server would pass."""
    return datetime.combine(day, time(hour, minute), tzinfo=ZONE).astimezone(UTC)


def works(pattern: ShiftPattern | None, at: datetime, **options: Any) -> bool:
    """on_shift for CARER in Shanghai."""
    return on_shift(CARER, pattern, at, zone=ZONE, **options)


@pytest.mark.parametrize(
    ("pattern", "at", "expected"),
    [
        # A day shift 08:00-16:00, every day: the start counts, the end does not.
        pytest.param(DAY, local(MON, 8), True, id="day-start"),
        pytest.param(DAY, local(MON, 15, 59), True, id="day-last-minute"),
        pytest.param(DAY, local(MON, 16), False, id="day-end"),
        pytest.param(DAY, local(MON, 7, 59), False, id="day-before"),
        pytest.param(DAY, local(SUN, 12), True, id="day-sunday"),
        # A night shift 23:00-07:00 starting Monday to Friday nights.
        pytest.param(NIGHT, local(FRI, 23), True, id="night-friday-start"),
        pytest.param(NIGHT, local(SAT, 3), True, id="night-into-saturday"),
        pytest.param(NIGHT, local(SAT, 6, 59), True, id="night-last-minute"),
        pytest.param(NIGHT, local(SAT, 7), False, id="night-end"),
        pytest.param(NIGHT, local(SAT, 23, 30), False, id="night-saturday-no-start"),
        pytest.param(NIGHT, local(SUN, 3), False, id="night-sunday-morning"),
        pytest.param(NIGHT, local(NEXT_MON, 3), False, id="night-monday-morning"),
        pytest.param(NIGHT, local(MON, 22, 59), False, id="night-before-start"),
        pytest.param(NIGHT, local(MON, 23, 30), True, id="night-monday-start"),
        pytest.param(NIGHT, local(TUE, 3), True, id="night-into-tuesday"),
        # A weekday office shift is off at weekends.
        pytest.param(OFFICE, local(MON, 10), True, id="office-monday"),
        pytest.param(OFFICE, local(SAT, 10), False, id="office-saturday"),
        pytest.param(OFFICE, local(SUN, 10), False, id="office-sunday"),
        pytest.param(None, local(MON, 10), False, id="no-pattern"),
    ],
)
def test_patterns(pattern: ShiftPattern | None, at: datetime, expected: bool) -> None:
    """Test that a pattern covers exactly its hours on the days it starts."""
    assert works(pattern, at) is expected


@pytest.mark.parametrize(
    ("pattern", "at", "holidays", "expected"),
    [
        pytest.param(OFFICE, local(NATIONAL_DAY, 10), HOLIDAYS, False, id="office-on-holiday"),
        pytest.param(OFFICE, local(NATIONAL_DAY, 10), (), True, id="office-same-day-no-holiday"),
        pytest.param(
            OFFICE,
            local(NATIONAL_DAY + timedelta(days=1), 10),
            HOLIDAYS,
            True,
            id="office-day-after-holiday",
        ),
        pytest.param(DAY, local(NATIONAL_DAY, 10), HOLIDAYS, True, id="every-day-on-holiday"),
        pytest.param(SUNDAYS, local(NATIONAL_DAY, 10), HOLIDAYS, True, id="sunday-on-holiday"),
        pytest.param(SUNDAYS, local(NATIONAL_DAY, 10), (), False, id="sunday-on-thursday"),
        # A night shift that started the evening before the holiday still runs into it...
        pytest.param(
            NIGHT, local(NATIONAL_DAY, 3), HOLIDAYS, True, id="night-from-eve-into-holiday"
        ),
        # ...but none starts on the holiday itself (Sunday timetable).
        pytest.param(NIGHT, local(NATIONAL_DAY, 23, 30), HOLIDAYS, False, id="night-on-holiday"),
        pytest.param(
            NIGHT,
            local(NATIONAL_DAY + timedelta(days=1), 3),
            HOLIDAYS,
            False,
            id="night-after-holiday-evening",
        ),
    ],
)
def test_public_holidays_run_the_sunday_timetable(
    pattern: ShiftPattern, at: datetime, holidays: frozenset[date], expected: bool
) -> None:
    """Test that a public holiday runs the Sunday timetable for shifts starting that day."""
    assert works(pattern, at, holidays=holidays) is expected


def day_off(day: date, carer: int = CARER) -> dict[tuple[int, date], RosterEntry]:
    """A roster with one day off."""
    return {(carer, day): RosterEntry(carer, day, on_duty=False)}


def duty(
    day: date, pattern: str | None = None, carer: int = CARER
) -> dict[tuple[int, date], RosterEntry]:
    """A roster with one extra duty."""
    return {(carer, day): RosterEntry(carer, day, on_duty=True, pattern=pattern)}


@pytest.mark.parametrize(
    ("pattern", "at", "roster", "expected"),
    [
        pytest.param(DAY, local(MON, 10), day_off(MON), False, id="day-off"),
        pytest.param(DAY, local(TUE, 10), day_off(MON), True, id="day-off-is-one-day"),
        pytest.param(DAY, local(MON, 10), day_off(MON, carer=99), True, id="someone-elses-day"),
        pytest.param(NIGHT, local(FRI, 23, 30), day_off(FRI), False, id="night-off-evening"),
        pytest.param(NIGHT, local(SAT, 3), day_off(FRI), False, id="night-off-morning-after"),
        # The day off covers shifts starting that day; Thursday's night runs into Friday.
        pytest.param(NIGHT, local(FRI, 3), day_off(FRI), True, id="previous-night-still-on"),
        pytest.param(OFFICE, local(SAT, 8, 30), duty(SAT, "D"), True, id="extra-day-shift"),
        pytest.param(OFFICE, local(SAT, 16, 30), duty(SAT, "D"), False, id="extra-shift-ended"),
        pytest.param(OFFICE, local(SAT, 7, 30), duty(SAT, "D"), False, id="extra-not-started"),
        pytest.param(OFFICE, local(SAT, 10), duty(SAT), True, id="extra-on-own-pattern"),
        pytest.param(OFFICE, local(SUN, 23, 30), duty(SUN, "N"), True, id="extra-night"),
        pytest.param(OFFICE, local(NEXT_MON, 3), duty(SUN, "N"), True, id="extra-night-after"),
        pytest.param(
            OFFICE, local(NATIONAL_DAY, 10), duty(NATIONAL_DAY), True, id="duty-on-holiday"
        ),
        pytest.param(None, local(SAT, 10), duty(SAT, "D"), True, id="no-pattern-extra-duty"),
        pytest.param(None, local(SAT, 10), duty(SAT), False, id="no-pattern-nothing-to-work"),
    ],
)
def test_duty_roster_overrides_the_pattern(
    pattern: ShiftPattern | None,
    at: datetime,
    roster: dict[tuple[int, date], RosterEntry],
    expected: bool,
) -> None:
    """Test that the roster's day off or extra duty overrides the pattern for that date."""
    result = works(pattern, at, roster=roster, patterns=PATTERNS, holidays=HOLIDAYS)
    assert result is expected


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        # 00:00 UTC is 08:00 in Shanghai: the day shift has just started.
        (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), True),
        (datetime(2026, 3, 1, 23, 59, tzinfo=UTC), False),
        (datetime(2026, 3, 2, 8, 0, tzinfo=UTC), False),
        # The same instants in another zone give the same answer.
        (datetime(2026, 3, 2, 1, 0, tzinfo=ZoneInfo("Europe/London")), True),
        (datetime(2026, 3, 1, 18, 30, tzinfo=ZoneInfo("America/New_York")), False),
        (datetime(2026, 3, 2, 8, 30, tzinfo=ZoneInfo("Asia/Shanghai")), True),
    ],
)
def test_instants_are_read_in_the_district_zone(at: datetime, expected: bool) -> None:
    """Test that on_shift turns any aware instant into Shanghai time before deciding."""
    assert works(DAY, at) is expected


def test_night_shift_crossing_midnight_in_utc_terms() -> None:
    """Test that a Friday night shift is on at 03:00 Saturday local (19:00 UTC Friday)."""
    friday_night = datetime(2026, 3, 6, 19, 0, tzinfo=UTC)
    assert friday_night.astimezone(ZONE).date() == SAT
    assert works(NIGHT, friday_night)
    saturday_night = datetime(2026, 3, 7, 19, 0, tzinfo=UTC)  # Sunday 03:00 local
    assert not works(NIGHT, saturday_night)


@settings(max_examples=300, deadline=None)
@given(
    start_hour=st.integers(0, 23),
    hours=st.integers(1, 23),
    at=st.datetimes(
        min_value=datetime(2026, 1, 2), max_value=datetime(2026, 12, 30), timezones=st.just(UTC)
    ),
)
def test_every_day_pattern_covers_its_hours(start_hour: int, hours: int, at: datetime) -> None:
    """Test that a daily pattern is on exactly when the local time is within its hours."""
    pattern = ShiftPattern("X", time(start_hour), timedelta(hours=hours), EVERY_DAY)
    wall = at.astimezone(ZONE)
    since_start = (wall - wall.replace(hour=start_hour, minute=0, second=0, microsecond=0)) % (
        timedelta(days=1)
    )
    assert works(pattern, at) is (since_start < timedelta(hours=hours))


@settings(max_examples=200, deadline=None)
@given(
    pattern=st.sampled_from([DAY, NIGHT, OFFICE, SUNDAYS]),
    start=st.integers(min_value=0, max_value=20),
    offs=st.sets(st.integers(min_value=0, max_value=20), max_size=6),
    holiday=st.booleans(),
    minutes=st.integers(min_value=0, max_value=14 * 24 * 60 - 1),
)
def test_the_rota_calendar_and_on_shift_agree_at_every_moment(
    pattern: ShiftPattern, start: int, offs: set[int], holiday: bool, minutes: int
) -> None:
    """Test that a moment is inside one of the carer's duties (the rota's calendar)
    exactly when on_shift says they work then, whatever their pattern, days off, a
    holiday; and that the calendar's gaps are the moments nobody works."""
    first = MON + timedelta(days=start % 7)
    last = first + timedelta(days=13)
    roster = {
        (1, MON + timedelta(days=d)): RosterEntry(1, MON + timedelta(days=d), False) for d in offs
    }
    holidays = {THU} if holiday else set()
    found = duties(
        1, pattern, first, last, zone=ZONE, holidays=holidays, roster=roster, patterns=PATTERNS
    )
    moment = datetime.combine(first, time(0), tzinfo=ZONE) + timedelta(minutes=minutes)
    inside = any(d.start <= moment < d.end for d in found)
    assert inside == on_shift(
        1, pattern, moment, zone=ZONE, holidays=holidays, roster=roster, patterns=PATTERNS
    )
    begin = datetime.combine(first, time(0), tzinfo=ZONE)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=ZONE)
    in_gap = any(a <= moment < b for a, b in gaps(found, begin, end))
    assert in_gap == (not inside)


def test_a_night_shift_begun_the_day_before_fills_the_first_hours() -> None:
    """Test that the calendar of a Tuesday holds Monday's night shift until 07:00, and
    that the gaps are the rest of the day."""
    found = duties(1, NIGHT, TUE, TUE, zone=ZONE)
    assert [(d.start.date(), d.start.hour, d.end.hour) for d in found] == [
        (MON, 23, 7),
        (TUE, 23, 7),
    ]
    begin = datetime.combine(TUE, time(0), tzinfo=ZONE)
    holes = gaps(found, begin, begin + timedelta(days=1))
    assert holes == [(begin + timedelta(hours=7), begin + timedelta(hours=23))]
