"""Durable timers: one loop that sleeps until the next deadline and fires what is due.

Deadlines are rows (see store.models.Timer). The loop asks the database for the earliest
pending one, sleeps on the injected clock until then (or until a commit arms an earlier
one), and fires every due timer in due order. A restarted server therefore fires, once
and in order, whatever fell due while it was down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.clock import Clock
from callcenter.engine.desk import Desk
from callcenter.store import models as m

log = logging.getLogger("callcenter.scheduler")

_BATCH = 500
# Due timers fired together (Desk.fire_timers), in shared transactions. With
# one to a write turn a storm's timers fell behind the engine's batches of presses (25 to
# a turn) by up to 25 s; with 25 to a turn the presses waited up to 2 s behind them. So
# five while they keep time; once they run late (a storm's escalations all falling due
# together), as many as the engine's batch, so that late escalations and new presses take
# equal turns: on PostgreSQL, five at a time let 950 carers' ring steps fall 9 s late.
_TOGETHER = 5
_TOGETHER_LATE = 25
_LATE = timedelta(seconds=1)
# However far off the next deadline, look again this often: another instance (or an
# administrator) may have armed an earlier one that no wake-up here announced.
_RECHECK = timedelta(seconds=30)


class Scheduler:
    """Fires escalation timers when they fall due."""

    def __init__(self, engine: AsyncEngine, desk: Desk, clock: Clock) -> None:
        self._engine = engine
        self._desk = desk
        self._clock = clock
        self._stopping = asyncio.Event()
        self.fired = 0
        # Told each fired timer's lateness (seconds after its due time), e.g. /metrics.
        self.lateness_observers: list[Callable[[float], None]] = []
        self.last_cycle_at: datetime | None = None
        self._failed = False

    def stop(self) -> None:
        self._stopping.set()
        self._desk.timers_changed.set()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def next_due(self) -> datetime | None:
        """The earliest pending deadline, if any."""
        async with AsyncSession(self._engine) as session:
            due = await session.scalar(
                select(func.min(m.Timer.due_at)).where(m.Timer.state == m.TimerState.PENDING)
            )
        return due

    async def run(self) -> None:
        """Fire due timers until stop()."""
        wake = self._desk.timers_changed
        while not self._stopping.is_set():
            # Whatever was armed until now, next_due() below sees in the database.
            wake.clear()
            self._desk.earliest_armed = None
            try:
                await self.fire_due()
                due = await self.next_due()
            except Exception:
                log.exception("timer cycle failed; trying again in 1 s")
                await asyncio.sleep(1.0)
                continue
            self.last_cycle_at = self._clock.now()
            if self._failed:
                # Something due keeps failing: retry it, but not in a tight loop.
                await asyncio.sleep(1.0)
                continue
            recheck = self._clock.now() + _RECHECK
            await self._sleep_until(recheck if due is None else min(due, recheck))

    async def _sleep_until(self, until: datetime) -> None:
        """Sleep until ``until``, or until a commit arms a timer due before it; a wake-up
        that names no due time ends the sleep, to read the next deadline again."""
        wake = self._desk.timers_changed
        while not self._stopping.is_set():
            await self._clock.sleep_until(until, wake)
            if not wake.is_set():
                return  # the time has come
            wake.clear()
            armed, self._desk.earliest_armed = self._desk.earliest_armed, None
            if armed is None:
                return  # woken without a due time (timers written elsewhere): look again
            until = min(until, armed)  # sleep less, without asking the database again

    async def fire_due(self) -> int:
        """Fire every timer due by now, in due order; how many fired. (Burst mode.)"""
        fired = 0
        self._failed = False
        while not self._stopping.is_set():
            now = self._clock.now()
            async with AsyncSession(self._engine) as session:
                rows = (
                    await session.execute(
                        select(m.Timer.id, m.Timer.due_at)
                        .where(m.Timer.state == m.TimerState.PENDING, m.Timer.due_at <= now)
                        .order_by(m.Timer.due_at, m.Timer.id)
                        .limit(_BATCH)
                    )
                ).all()
            if not rows:
                break
            due = [row.id for row in rows]
            start = 0
            while start < len(due) and not self._stopping.is_set():
                late = self._clock.now() - rows[start].due_at > _LATE
                together = due[start : start + (_TOGETHER_LATE if late else _TOGETHER)]
                start += len(together)
                for timer_id, result in zip(
                    together, await self._desk.fire_timers(together), strict=True
                ):
                    if isinstance(result, Exception):
                        # One broken timer must not hold up the others; it stays pending
                        # and the watchdog reports it as overdue.
                        log.error(
                            "timer %d failed to fire; it will be tried again",
                            timer_id,
                            exc_info=result,
                        )
                        self._failed = True
                    elif result is not None:
                        fired += 1
                        self.fired += 1
                        lateness = (self._clock.now() - result).total_seconds()
                        for observe in self.lateness_observers:
                            observe(lateness)
            self.last_cycle_at = self._clock.now()
            if len(due) < _BATCH or self._failed:
                break
        return fired
