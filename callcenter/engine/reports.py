"""Supervisors' reports for a period: how fast calls were taken and carers reached the
door, per station and per carer, from the calls' own records.

Every figure is defined in docs/reports.md; what "acknowledged", "accepted" and "on
scene" mean and how a share, median or percentile is taken is domain/response_times.py,
which the board's service levels and the family page use too. A report reads only
``calls``, ``call_history`` and ``call_assignments`` (with the households' home stations
and the carers' names), so it can be recomputed from those rows by anyone who doubts it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.response_times import (
    ACCEPTED_OR_LATER,
    ACK_TARGETS_S,
    ON_SCENE,
    RESOLVED,
    in_circle,
    median_s,
    nearest_rank,
    resolution_rate,
    seconds_after,
    share,
    within,
)
from callcenter.store import models as m

# How a carer's part can end without them going: each is one history action.
REFUSALS = ("declined", "no_answer", "unreachable")
# History actions that count as escalations (see escalation_of).
ESCALATION_ACTIONS = frozenset({"escalated", "no_answer", "unreachable", "nobody_to_send"})
# The only history a report reads: a year's calls have far more (notes, texts, presses).
REPORTED_ACTIONS = ACCEPTED_OR_LATER | ESCALATION_ACTIONS | frozenset(REFUSALS)
# The longest period one report covers: a year, leap day included.
MAX_PERIOD_DAYS = 366


def period_bounds(first: date, last: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The district's local days ``first`` to ``last`` (inclusive) as [start, end)."""
    start = datetime.combine(first, time(0), tzinfo=zone)
    end = datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


@dataclass
class CallFacts:
    """One call of the period with the moments the report measures."""

    id: int
    call_type: str
    station: str
    opened_at: datetime
    acknowledged_at: datetime | None
    closed_at: datetime | None
    state: str
    on_scene_at: datetime | None = None
    # (step, reason, reason_code) of each escalation-history entry, in order.
    escalations: list[tuple[str, str, str | None]] = field(default_factory=list)

    def age_s(self, now: datetime) -> float:
        """Seconds from opening to closing, or to ``now`` while it is open."""
        return max(0.0, ((self.closed_at or now) - self.opened_at).total_seconds())

    def after_s(self, moment: datetime | None) -> float | None:
        return seconds_after(self.opened_at, moment)


@dataclass
class CarerPart:
    """One carer sent to one call (one ``call_assignments`` row) and what they did."""

    carer: str
    call_id: int
    dispatched_at: datetime
    accepted_at: datetime | None = None
    on_scene_at: datetime | None = None
    ended: str | None = None  # declined, no_answer or unreachable


def escalation_of(action: str, detail: dict[str, Any]) -> tuple[str, str] | None:
    """The (step, reason) a history entry counts as, or None if it is no escalation.

    - ``escalated`` (a step counted from the call's opening ran): the step's name, and
      ``detail.early`` when it ran before its time (e.g. "nobody to send: no free carer
      on shift"), else ``not <milestone> in time``;
    - ``no_answer`` (a paged carer's own step ran out): the step's name and ``carer did
      not accept in time``;
    - ``unreachable`` (a page could not be delivered): ``unreachable`` and the recorded
      ``why``;
    - ``nobody_to_send``: ``nobody_to_send`` and the recorded ``why``."""
    if action == "escalated":
        early = detail.get("early")
        reason = early if early else f"not {detail.get('waited_for', '?')} in time"
        return str(detail.get("step", "?")), str(reason)
    if action == "no_answer":
        return str(detail.get("step", "unaccepted")), "carer did not accept in time"
    if action in ("unreachable", "nobody_to_send"):
        return action, str(detail.get("why", "?"))
    return None


# The reason code of an escalation that ran on time, by the milestone it waited for
# (domain/messages.py Reason; the pages say it in their language).
_MISSED = {
    "acknowledged": "not_taken",
    "accepted": "nobody_accepted",
    "on_scene": "not_on_scene",
    "closed": "still_open",
}


def reason_code(action: str, detail: dict[str, Any]) -> str | None:
    """The code of an escalation's reason (``domain.messages.Reason``), for a page to say
    in its language: the entry's ``detail.because`` where it has one, else what its
    action and missed milestone mean; None for history written before the codes."""
    because = detail.get("because")
    if isinstance(because, dict) and isinstance(code := because.get("reason"), str):
        return code
    if action == "escalated" and "early" not in detail:
        return _MISSED.get(str(detail.get("waited_for")))
    if action == "no_answer":
        return "not_accepted"
    if action == "unreachable":
        return "unreachable"
    return None


def ack_share(calls: Iterable[CallFacts], target_s: float, now: datetime) -> dict[str, Any]:
    """Calls acknowledged within ``target_s``, among calls whose answer is known: those
    acknowledged (in time or late) and those that went longer than the target without
    it. A call closed unacknowledged before the target counts neither way."""
    return share(*within(((c.after_s(c.acknowledged_at), c.age_s(now)) for c in calls), target_s))


def figures(calls: Sequence[CallFacts], now: datetime, circle_s: float) -> dict[str, Any]:
    """The report's figures over ``calls`` (the district's, or one station's)."""
    by_type = Counter(c.call_type for c in calls)
    on_scene = [s for c in calls if (s := c.after_s(c.on_scene_at)) is not None]
    reached = in_circle(
        ((c.after_s(c.on_scene_at), c.age_s(now), c.closed_at is None) for c in calls), circle_s
    )
    steps = Counter(e for c in calls for e in c.escalations)
    handled = [c for c in calls if c.closed_at is not None]
    resolved = sum(1 for c in handled if c.state == RESOLVED)
    return {
        "calls": len(calls),
        "by_type": {t.value: by_type.get(t.value, 0) for t in CallType},
        "acknowledged_within_60s": ack_share(calls, ACK_TARGETS_S[0], now),
        "acknowledged_within_180s": ack_share(calls, ACK_TARGETS_S[1], now),
        "on_scene": {
            "calls": len(on_scene),
            "p50_s": nearest_rank(on_scene, 50),
            "p90_s": nearest_rank(on_scene, 90),
            "max_s": None if not on_scene else round(max(on_scene), 1),
        },
        "on_scene_within_circle": share(*reached),
        "escalations": {
            "calls": sum(1 for c in calls if c.escalations),
            "entries": sum(steps.values()),
            "by_step": [
                {"step": step, "reason": reason, "reason_code": code, "count": n}
                for (step, reason, code), n in sorted(
                    steps.items(), key=lambda i: (-i[1], i[0][0], i[0][1])
                )
            ],
        },
        "handled": len(handled),
        "resolved": resolved,
        "cancelled": len(handled) - resolved,
        "open": len(calls) - len(handled),
        "resolution_rate": resolution_rate(c.state for c in handled),
    }


def carer_figures(parts: Sequence[CarerPart], calls: dict[int, CallFacts]) -> dict[str, Any]:
    """One carer's figures over every time they were sent in the period."""
    sent_to = {p.call_id for p in parts}
    closed = [calls[i] for i in sent_to if calls[i].closed_at is not None]
    resolved = sum(1 for c in closed if c.state == "resolved")

    def waits(moment: str) -> list[float]:
        return [
            (at - p.dispatched_at).total_seconds()
            for p in parts
            if (at := getattr(p, moment)) is not None
        ]

    return {
        "dispatched": len(parts),
        "accepted": sum(1 for p in parts if p.accepted_at is not None),
        **{ended: sum(1 for p in parts if p.ended == ended) for ended in REFUSALS},
        "on_scene": sum(1 for p in parts if p.on_scene_at is not None),
        "calls": len(sent_to),
        "calls_closed": len(closed),
        "calls_resolved": resolved,
        "resolution_share": None if not closed else round(resolved / len(closed), 4),
        "median_to_accept_s": median_s(waits("accepted_at")),
        "median_to_arrive_s": median_s(waits("on_scene_at")),
    }


def _part_for(parts: list[CarerPart], at: datetime) -> CarerPart | None:
    """The assignment a carer's history entry belongs to: their latest one on the call
    paged at or before it."""
    found = None
    for part in parts:
        if part.dispatched_at <= at:
            found = part
    return found


async def report(
    session: AsyncSession,
    *,
    first: date,
    last: date,
    zone: ZoneInfo,
    now: datetime,
    circle_s: float,
) -> dict[str, Any]:
    """The report of the local days ``first`` to ``last`` as of ``now``: the district's
    figures, each station's (every station listed) and each carer's who was sent."""
    start, end = period_bounds(first, last, zone)
    stations = (await session.execute(select(m.Station).order_by(m.Station.code))).scalars().all()
    station_code = {s.id: s.code for s in stations}
    # Joined, never a list of ids: a year's calls are more than a query may bind.
    in_period = (m.Call.opened_at >= start, m.Call.opened_at < end)
    rows = (
        await session.execute(
            select(m.Call, m.Household.home_station_id)
            # Outer: a call of no household (an unknown number rang) counts for the
            # district, and for no station.
            .outerjoin(m.Household, m.Household.id == m.Call.household_id)
            .where(*in_period)
            .order_by(m.Call.id)
        )
    ).all()
    calls = {
        call.id: CallFacts(
            id=call.id,
            call_type=call.call_type,
            station=station_code.get(home, ""),
            opened_at=call.opened_at,
            acknowledged_at=call.acknowledged_at,
            closed_at=call.closed_at,
            state=call.state,
        )
        for call, home in rows
    }
    carers = {c.id: c for c in (await session.execute(select(m.Carer))).scalars().all()}
    parts: dict[tuple[int, str], list[CarerPart]] = defaultdict(list)
    history: Sequence[Any] = []
    if calls:
        assignments = (
            await session.execute(
                select(m.CallAssignment)
                .join(m.Call, m.Call.id == m.CallAssignment.call_id)
                .where(*in_period)
                .order_by(m.CallAssignment.call_id, m.CallAssignment.seq)
            )
        ).scalars()
        for a in assignments:
            code = carers[a.carer_id].code
            parts[(a.call_id, code)].append(CarerPart(code, a.call_id, a.dispatched_at))
        history = (
            await session.execute(
                select(
                    m.CallHistory.call_id,
                    m.CallHistory.action,
                    m.CallHistory.at,
                    m.CallHistory.detail,
                )
                .join(m.Call, m.Call.id == m.CallHistory.call_id)
                .where(*in_period, m.CallHistory.action.in_(sorted(REPORTED_ACTIONS)))
                .order_by(m.CallHistory.id)
            )
        ).all()
    for entry in history:
        call = calls[entry.call_id]
        escalation = escalation_of(entry.action, entry.detail)
        if escalation is not None:
            call.escalations.append((*escalation, reason_code(entry.action, entry.detail)))
        if entry.action == ON_SCENE and call.on_scene_at is None:
            call.on_scene_at = entry.at
        carer = entry.detail.get("carer")
        if not isinstance(carer, str):
            continue
        part = _part_for(parts.get((entry.call_id, carer), []), entry.at)
        if part is None:
            continue
        if entry.action in ACCEPTED_OR_LATER and part.accepted_at is None:
            part.accepted_at = entry.at
        if entry.action == ON_SCENE and part.on_scene_at is None:
            part.on_scene_at = entry.at
        if entry.action in REFUSALS and part.ended is None:
            part.ended = entry.action

    every = list(calls.values())
    by_carer: dict[str, list[CarerPart]] = defaultdict(list)
    for (_, code), carer_parts in parts.items():
        by_carer[code].extend(carer_parts)
    carer_by_code = {c.code: c for c in carers.values()}
    return {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "timezone": zone.key,
        "starts_at": start,
        "ends_at": end,
        "at": now,
        "service_circle_min": round(circle_s / 60, 1),
        "district": figures(every, now, circle_s),
        "stations": [
            {
                "code": s.code,
                "name": s.name,
                **figures([c for c in every if c.station == s.code], now, circle_s),
            }
            for s in stations
        ],
        "carers": [
            {
                "code": code,
                "name": carer_by_code[code].name,
                "station": station_code[carer_by_code[code].station_id],
                **carer_figures(by_carer[code], calls),
            }
            for code in sorted(by_carer)
        ],
    }
