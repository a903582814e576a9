"""Carer snapshots (engine/district.py): who is free, worked out once per shift pattern."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import cast
from zoneinfo import ZoneInfo

import pytest

from callcenter.domain.calls import Assignment, AssignmentState, Call
from callcenter.domain.dispatch import CarerState, by_post
from callcenter.domain.geo import Place, Transport
from callcenter.domain.shifts import RosterEntry, ShiftPattern, on_shift
from callcenter.engine.district import (
    Busy,
    CarerInfo,
    Registry,
    StationInfo,
    _Moment,
    snapshots,
)

ZONE = ZoneInfo("Asia/Shanghai")
EVERY_DAY = frozenset(range(1, 8))
WEEKDAYS = frozenset({1, 2, 3, 4, 5})
PATTERNS = {
    p.code: p
    for p in (
        ShiftPattern("D", time(8), timedelta(hours=8), EVERY_DAY),
        ShiftPattern("N", time(23), timedelta(hours=8), WEEKDAYS),
        ShiftPattern("O", time(9), timedelta(hours=8), WEEKDAYS),
    )
}
MON, TUE, SAT = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 7)
HOLIDAYS = frozenset({date(2026, 3, 4)})  # a Wednesday run as a Sunday


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=ZONE).astimezone(UTC)


def registry(carers: int) -> Registry:
    found = Registry()
    found.stations[1] = StationInfo(1, "S1", "Station", Place(36.6, 101.8), None, "+8610")
    found.patterns = dict(PATTERNS)
    for n in range(1, carers + 1):
        found.carers[n] = CarerInfo(
            n,
            f"C{n:03d}",
            f"Carer {n}",
            f"+86139{n:08d}",
            "zh",
            "carer",
            1,
            frozenset(),
            Transport.EBIKE,
            "DNO"[n % 3],
            active=n % 17 != 0,
        )
    return found


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(local(MON, 10), id="monday-day"),
        pytest.param(local(TUE, 3), id="tuesday-night"),
        pytest.param(local(SAT, 10), id="saturday"),
        pytest.param(local(date(2026, 3, 4), 10), id="holiday"),
        pytest.param(local(MON, 23), id="monday-night-start"),
    ],
)
def test_snapshots_say_what_on_shift_says_for_every_carer(at: datetime) -> None:
    """Test that each carer's state in the snapshots is what on_shift gives for that carer
    alone, with roster entries (days off, extra duties on another pattern, the day
    before) for some carers and active assignments for others, at several moments."""
    team = registry(120)
    today = at.astimezone(ZONE).date()
    roster = {}
    for n in range(1, 121, 5):
        day = today if n % 2 else today - timedelta(days=1)
        entry = RosterEntry(n, day, on_duty=n % 3 == 0, pattern="N" if n % 4 else "D")
        roster[(n, day)] = entry
    busy = {n: Busy(1000 + n, "on_the_way") for n in range(3, 121, 11)}
    states = {s.id: s.state for s in snapshots(team, at, ZONE, HOLIDAYS, busy, {}, roster)}

    expected = {}
    for carer in team.carers.values():
        if not carer.active:
            continue
        if carer.id in busy:
            expected[carer.id] = CarerState.ON_THE_WAY
            continue
        works = on_shift(
            carer.id,
            PATTERNS[carer.pattern],
            at,
            zone=ZONE,
            holidays=HOLIDAYS,
            roster=roster,
            patterns=PATTERNS,
        )
        expected[carer.id] = CarerState.FREE if works else CarerState.OFF_SHIFT
    assert states == expected
    assert CarerState.FREE in states.values() and CarerState.OFF_SHIFT in states.values()


def test_the_free_carers_by_post_follow_the_transactions_decisions() -> None:
    """Test that the view's free carers by post (what dispatch ranks) stay what grouping
    its free carers anew gives, as decisions send carers, free them, and move the ones
    who reached a door to it."""
    found = registry(30)
    found.stations[2] = StationInfo(2, "S2", "Station 2", Place(36.7, 101.7), None, "+8620")
    for carer in list(found.carers.values())[::4]:
        found.carers[carer.id] = replace(carer, station_id=2)
    for carer in list(found.carers.values())[1::3]:
        found.carers[carer.id] = replace(carer, transport=Transport.CAR)
    roster = {(n, MON): RosterEntry(n, MON, True, None) for n in found.carers}
    moment = _Moment(found, MON, {}, {}, roster, {})
    moment.make(local(MON, 10), ZONE, HOLIDAYS)

    def grouped_anew() -> set[tuple[str, ...]]:
        return {tuple(c.code for c in group) for group in by_post(moment.free.values())}

    def kept() -> set[tuple[str, ...]]:
        return {tuple(c.code for c in group) for group in moment.free_posts()}

    assert kept() == grouped_anew() and len(kept()) == 4
    door = Place(36.65, 101.75)
    when = local(MON, 10)

    def assigned(carer_id: int, state: AssignmentState) -> Assignment:
        code = found.carers[carer_id].code
        return Assignment(carer_id, code, state, when, "system:engine", 60.0, when)

    # Call 1 sends carers 2 and 3; then 3 declines, 2 arrives and finishes there.
    steps = [
        [assigned(2, AssignmentState.DISPATCHED), assigned(3, AssignmentState.DISPATCHED)],
        [assigned(2, AssignmentState.ACCEPTED), assigned(3, AssignmentState.DECLINED)],
        [assigned(2, AssignmentState.ON_SCENE), assigned(3, AssignmentState.DECLINED)],
        [assigned(2, AssignmentState.FINISHED), assigned(3, AssignmentState.DECLINED)],
    ]
    for step, assignments in enumerate(steps):
        call = cast(Call, SimpleNamespace(id=1, assignments=tuple(assignments)))
        moment.note(call, [2] if step == 2 else [], door)
        assert kept() == grouped_anew()
    assert {2, 3} <= set(moment.free)
    assert moment.free[2].position == door  # a post of its own now
    assert ("C002",) in kept()
