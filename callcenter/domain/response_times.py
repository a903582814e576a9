"""Response times: when a call was answered, taken on by a carer and reached, and the
shares, medians and percentiles the district is measured by.

docs/reports.md defines each figure (docs/board.md, "Service levels", and docs/family.md
use the same words). The supervisors' reports, the board's service levels and the
family page all measure here, so "accepted" and "on scene" mean one thing everywhere.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Acknowledgement targets the district promises, in seconds.
ACK_TARGETS_S = (60, 180)
# The share of the day's calls each service level should reach (the wallboard and the
# board's service levels show each figure against its target). docs/board.md,
# "Service levels", says what each share counts.
SERVICE_TARGETS = {
    "acknowledged_within_60s": 0.90,
    "acknowledged_within_180s": 0.99,
    "on_scene_within_15min_share": 0.90,
    "resolution_rate": 0.80,
}
# A closed call's state when it was resolved (the other closed state is "cancelled").
RESOLVED = "resolved"
# A carer took the call on: accepting, or (a report may skip ahead) reporting on the way
# or at the door straight away. A carer's reports are history actions of these names,
# and the states of the call they lead to are named the same.
ACCEPTED_OR_LATER = frozenset({"accepted", "on_the_way", "on_scene"})
# A carer reached the door (the history action, and the call's state).
ON_SCENE = "on_scene"


def seconds_after(start: datetime, moment: datetime | None) -> float | None:
    """Seconds from ``start`` to ``moment`` (never below 0); None when not reached."""
    return None if moment is None else max(0.0, (moment - start).total_seconds())


def first_at(
    entries: Iterable[tuple[str, datetime]],
    names: Collection[str],
    *,
    after: datetime | None = None,
) -> datetime | None:
    """When the first of ``entries`` (name, moment) named one of ``names`` happened, at or
    after ``after``; None if none did."""
    return next(
        (at for name, at in entries if name in names and (after is None or at >= after)), None
    )


@dataclass(frozen=True)
class CallTimes:
    """The moments of one call that service levels measure, in seconds after it opened
    (None: not reached)."""

    id: int
    call_type: str
    age_s: float  # until it closed, or until now if it is still open
    ack_s: float | None
    accept_s: float | None
    on_scene_s: float | None


def within(moments: Iterable[tuple[float | None, float]], target_s: float) -> tuple[int, int]:
    """Of calls given as (seconds until they reached a moment or None, age in seconds):
    how many reached it within ``target_s``, and how many count. A call counts when its
    answer is known: it reached the moment (in time or late), or it went longer than the
    target without reaching it. A call closed before the target without reaching it (a
    resident's "cancel" after 20 s) counts neither way."""
    hits = counted = 0
    for reached_s, age_s in moments:
        if reached_s is not None:
            counted += 1
            hits += reached_s <= target_s
        elif age_s > target_s:
            counted += 1
    return hits, counted


def share_within(calls: Iterable[CallTimes], reached: str, target_s: float) -> float | None:
    """The share of calls that reached ``reached`` within ``target_s``, among those whose
    answer is known (``within``). None when no call counts."""
    hits, counted = within(((getattr(call, reached), call.age_s) for call in calls), target_s)
    return None if counted == 0 else round(hits / counted, 4)


def in_circle(
    calls: Iterable[tuple[float | None, float, bool]], circle_s: float
) -> tuple[int, int]:
    """Of calls given as (seconds until a carer was on scene or None, age in seconds,
    still open): how many a carer reached within the service circle, and how many count:
    calls reached, plus calls still open with nobody on scene after the circle (misses
    already). Calls closed without a carer at the door are not counted."""
    hits = counted = 0
    for on_scene_s, age_s, is_open in calls:
        if on_scene_s is not None:
            counted += 1
            hits += on_scene_s <= circle_s
        elif is_open and age_s > circle_s:
            counted += 1
    return hits, counted


def nearest_rank(values: Sequence[float], percent: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``percent`` % of the
    values at or below it. None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


def median_s(values: Iterable[float | None]) -> float | None:
    """The median (to 0.1) over the values that are there; None without any."""
    present = [v for v in values if v is not None]
    return None if not present else round(statistics.median(present), 1)


def resolution_rate(closed_states: Iterable[str]) -> float | None:
    """Of the closed calls (given by their states), the share resolved rather than
    cancelled, to 4 places; None when none closed."""
    states = list(closed_states)
    if not states:
        return None
    return round(sum(1 for s in states if s == RESOLVED) / len(states), 4)


def share(count: int, of: int) -> dict[str, Any]:
    """``count`` of ``of`` with the share (None when nothing counted), to 4 places."""
    return {"count": count, "of": of, "share": None if of == 0 else round(count / of, 4)}
