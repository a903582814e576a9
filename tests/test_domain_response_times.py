"""Response times: the moments and the counting rules the reports, the board's service
levels and the family page share (docs/reports.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from callcenter.domain.response_times import (
    ACCEPTED_OR_LATER,
    first_at,
    in_circle,
    seconds_after,
    within,
)

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_moment_is_the_first_entry_of_its_names() -> None:
    """Test that a carer's first report of accepting or later is when the call was taken
    on, and that entries before ``after`` are passed over."""
    entries = [("dispatched", _at(5)), ("on_the_way", _at(40)), ("accepted", _at(50))]
    assert first_at(entries, ACCEPTED_OR_LATER) == _at(40)
    assert first_at(entries, ACCEPTED_OR_LATER, after=_at(45)) == _at(50)
    assert first_at(entries, {"on_scene"}) is None
    assert seconds_after(T0, _at(40)) == 40.0
    assert seconds_after(T0, None) is None


@pytest.mark.parametrize(
    ("moments", "counts"),
    [
        ([], (0, 0)),
        ([(60.0, 300.0), (61.0, 300.0)], (1, 2)),  # on the target counts as within
        ([(None, 61.0)], (0, 1)),  # not reached after the target: a miss already
        ([(None, 30.0)], (0, 0)),  # not known yet, or closed early: not counted
    ],
)
def test_within_counts_only_calls_whose_answer_is_known(
    moments: list[tuple[float | None, float]], counts: tuple[int, int]
) -> None:
    """Test that a share within 60 s counts calls that got there and calls that went
    longer than 60 s without, and nothing else."""
    assert within(moments, 60) == counts


@pytest.mark.parametrize(
    ("calls", "counts"),
    [
        ([(600.0, 900.0, False), (1000.0, 1200.0, True)], (1, 2)),
        ([(None, 1000.0, True)], (0, 1)),  # open, nobody there after the circle: a miss
        ([(None, 1000.0, False)], (0, 0)),  # closed without a carer at the door
        ([(None, 300.0, True)], (0, 0)),  # open, still inside the circle
    ],
)
def test_the_service_circle_counts_calls_reached_and_open_misses(
    calls: list[tuple[float | None, float, bool]], counts: tuple[int, int]
) -> None:
    """Test that the circle's share is over calls reached plus open calls past it."""
    assert in_circle(calls, 900) == counts
