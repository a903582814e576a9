"""Service levels of one day: how fast the desk took calls and carers reached the door.

Supervisors read these against the district's promises (a call taken within a minute, a
carer at the door within the 15-minute service circle). Every figure is defined in
docs/board.md, "Service levels"; what the moments mean and how a share or median is
taken is domain/response_times.py, which the reports and the family page use too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.dispatch import CarerSnapshot, CarerState
from callcenter.domain.response_times import (
    ACCEPTED_OR_LATER,
    ACK_TARGETS_S,
    ON_SCENE,
    RESOLVED,
    SERVICE_TARGETS,
    CallTimes,
    in_circle,
    median_s,
    resolution_rate,
    seconds_after,
    share_within,
)
from callcenter.engine.district import Registry
from callcenter.store import models as m
from callcenter.web.views import Shape, iso


class Escalation(Shape):
    call_id: int
    household: str
    call_type: str
    state: str
    owner: str | None
    alerts: list[str]
    opened_at: datetime


class ServiceLevels(Shape):
    """The service levels of one district day as of now (docs/board.md)."""

    day: date
    timezone: str
    from_: datetime = Field(alias="from")
    until: datetime
    at: datetime
    calls: int
    open_calls: int
    emergencies: int
    acknowledged_within_60s: float | None = Field(ge=0, le=1)
    acknowledged_within_180s: float | None = Field(ge=0, le=1)
    median_ack_s: float | None
    median_to_accept_s: float | None
    median_to_on_scene_s: float | None
    service_circle_min: float
    on_scene_within_15min_share: float | None = Field(ge=0, le=1)
    closed_calls: int
    resolved_calls: int
    resolution_rate: float | None = Field(ge=0, le=1)
    targets: dict[str, float]
    open_escalations: int
    free_carers_by_station: dict[str, int]
    escalations: list[Escalation]


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The district's local day as an interval [start, end) of aware datetimes."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start, end


async def call_times(
    session: AsyncSession, start: datetime, end: datetime, now: datetime
) -> tuple[list[CallTimes], set[int], list[str]]:
    """The calls opened in [start, end) with their measured moments, which are open, and
    the states of those closed."""
    rows = (
        await session.execute(
            select(
                m.Call.id,
                m.Call.call_type,
                m.Call.state,
                m.Call.opened_at,
                m.Call.acknowledged_at,
                m.Call.closed_at,
            )
            .where(m.Call.opened_at >= start, m.Call.opened_at < end)
            .order_by(m.Call.id)
        )
    ).all()
    ids = [row.id for row in rows]
    firsts: dict[tuple[int, str], datetime] = {}
    if ids:
        history = await session.execute(
            select(m.CallHistory.call_id, m.CallHistory.action, m.CallHistory.at)
            .where(
                m.CallHistory.call_id.in_(ids),
                m.CallHistory.action.in_(sorted(ACCEPTED_OR_LATER)),
            )
            .order_by(m.CallHistory.id)
        )
        for call_id, action, at in history.all():
            firsts.setdefault((call_id, action), at)
            firsts.setdefault((call_id, "accepted_or_later"), at)

    times = [
        CallTimes(
            id=row.id,
            call_type=row.call_type,
            age_s=max(0.0, ((row.closed_at or now) - row.opened_at).total_seconds()),
            ack_s=seconds_after(row.opened_at, row.acknowledged_at),
            accept_s=seconds_after(row.opened_at, firsts.get((row.id, "accepted_or_later"))),
            on_scene_s=seconds_after(row.opened_at, firsts.get((row.id, ON_SCENE))),
        )
        for row in rows
    ]
    return (
        times,
        {row.id for row in rows if row.closed_at is None},
        [row.state for row in rows if row.closed_at is not None],
    )


async def escalations(session: AsyncSession) -> list[dict[str, Any]]:
    """Open calls with alerts raised (the supervisor's queue), oldest first."""
    rows = await session.execute(
        select(m.Call, m.Household.code)
        .join(m.Household, m.Household.id == m.Call.household_id)
        .where(m.Call.closed_at.is_(None))
        .order_by(m.Call.opened_at, m.Call.id)
    )
    return [
        {
            "call_id": call.id,
            "household": code,
            "call_type": call.call_type,
            "state": call.state,
            "owner": call.owner,
            "alerts": sorted(call.alerts),
            "opened_at": iso(call.opened_at),
        }
        for call, code in rows.all()
        if call.alerts
    ]


def free_by_station(carers: Iterable[CarerSnapshot], registry: Registry) -> dict[str, int]:
    """Free carers on shift at each station, every station named (0 included)."""
    free = {s.code: 0 for s in sorted(registry.stations.values(), key=lambda s: s.code)}
    for carer in carers:
        if carer.state is CarerState.FREE:
            free[registry.stations[carer.station_id].code] += 1
    return free


async def service_levels(
    session: AsyncSession,
    *,
    day: date,
    zone: ZoneInfo,
    now: datetime,
    circle_s: float,
    carers: Sequence[CarerSnapshot],
    registry: Registry,
) -> dict[str, Any]:
    """The service-level figures of ``day`` (the district's local day) as of ``now``."""
    start, end = day_bounds(day, zone)
    times, open_ids, closed_states = await call_times(session, start, end, now)
    waiting = await escalations(session)
    circle_min = round(circle_s / 60, 1)
    circle_hits, circle_counted = in_circle(
        ((c.on_scene_s, c.age_s, c.id in open_ids) for c in times), circle_s
    )
    return {
        "day": day.isoformat(),
        "timezone": zone.key,
        "from": iso(start),
        "until": iso(end),
        "at": iso(now),
        "calls": len(times),
        "open_calls": len(open_ids),
        "emergencies": sum(1 for c in times if c.call_type == CallType.EMERGENCY),
        "acknowledged_within_60s": share_within(times, "ack_s", ACK_TARGETS_S[0]),
        "acknowledged_within_180s": share_within(times, "ack_s", ACK_TARGETS_S[1]),
        "median_ack_s": median_s([c.ack_s for c in times]),
        "median_to_accept_s": median_s([c.accept_s for c in times]),
        "median_to_on_scene_s": median_s([c.on_scene_s for c in times]),
        "service_circle_min": circle_min,
        "on_scene_within_15min_share": (
            None if circle_counted == 0 else round(circle_hits / circle_counted, 4)
        ),
        "closed_calls": len(closed_states),
        "resolved_calls": sum(1 for s in closed_states if s == RESOLVED),
        "resolution_rate": resolution_rate(closed_states),
        "targets": dict(SERVICE_TARGETS),
        "open_escalations": len(waiting),
        "free_carers_by_station": free_by_station(carers, registry),
        "escalations": waiting,
    }
