"""The watchdog: raises the alarm before a missed deadline or an empty station costs a life.

Every few seconds it looks for open calls whose next deadline is overdue (the scheduler
is stuck, behind, or failing on them) and for stations with nobody free on shift, who
would have no one to send when the next alarm comes in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.domain.dispatch import CarerState
from callcenter.engine.desk import Desk
from callcenter.engine.feed import Update
from callcenter.store import models as m

log = logging.getLogger("callcenter.watchdog")


@dataclass(frozen=True)
class Overdue:
    call_id: int
    household: str
    step: str
    overdue_s: float


@dataclass
class WatchdogReport:
    """What the last check found."""

    at: datetime | None = None
    overdue: list[Overdue] = field(default_factory=list)
    free_by_station: dict[str, int] = field(default_factory=dict)

    @property
    def stations_without_free_carer(self) -> list[str]:
        return sorted(code for code, free in self.free_by_station.items() if free == 0)


class Watchdog:
    def __init__(
        self,
        engine: AsyncEngine,
        desk: Desk,
        clock: Clock,
        *,
        interval_s: float = 5.0,
        overdue_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._desk = desk
        self._clock = clock
        self._interval = timedelta(seconds=interval_s)
        self._overdue = timedelta(seconds=overdue_s)
        self._stopping = asyncio.Event()
        self._raised: set[tuple[int, str]] = set()
        self._uncovered: set[str] = set()
        self.report = WatchdogReport()

    def stop(self) -> None:
        self._stopping.set()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.check()
            except Exception:
                log.exception("watchdog check failed")
            await self._clock.sleep_until(self._clock.now() + self._interval, self._stopping)

    async def check(self) -> WatchdogReport:
        """Look once; log and publish alarms for anything newly wrong."""
        now = self._clock.now()
        async with AsyncSession(self._engine) as session:
            rows = (
                await session.execute(
                    select(m.Timer.call_id, m.Timer.step, m.Timer.due_at, m.Household.code)
                    .join(m.Call, m.Call.id == m.Timer.call_id)
                    # Outer: a call of no household has timers too.
                    .outerjoin(m.Household, m.Household.id == m.Call.household_id)
                    .where(
                        m.Timer.state == m.TimerState.PENDING,
                        m.Timer.due_at < now - self._overdue,
                        m.Call.closed_at.is_(None),
                    )
                    .order_by(m.Timer.due_at)
                )
            ).all()
            carers = await self._desk.district.carers(session, now)
            registry = await self._desk.district.registry()
        overdue = [
            Overdue(r.call_id, r.code or "", r.step, (now - r.due_at).total_seconds()) for r in rows
        ]
        current = {(o.call_id, o.step) for o in overdue}
        for item in overdue:
            if (item.call_id, item.step) not in self._raised:
                with logs.bound(call_id=item.call_id, household=item.household):
                    log.error(
                        "WATCHDOG call %d household %s: step %s overdue by %.0f s",
                        item.call_id,
                        item.household,
                        item.step,
                        item.overdue_s,
                    )
                self._desk.feed.publish(
                    Update("alarm", now, item.call_id, {"watchdog": "overdue", "step": item.step})
                )
        self._raised = current

        free: dict[str, int] = {s.code: 0 for s in registry.stations.values()}
        for carer in carers:
            if carer.state is CarerState.FREE:
                code = registry.stations[carer.station_id].code
                free[code] += 1
        uncovered = {code for code, count in free.items() if count == 0}
        for code in sorted(uncovered - self._uncovered):
            log.warning("WATCHDOG station %s has no free carer on shift", code)
            self._desk.feed.publish(
                Update("alarm", now, None, {"watchdog": "station_uncovered", "station": code})
            )
        for code in sorted(self._uncovered - uncovered):
            log.info("station %s has a free carer again", code)
        self._uncovered = uncovered
        self.report = WatchdogReport(now, overdue, free)
        return self.report
