"""The weekly welfare-call list: one call a week to every resident over the configured age.

Each week (Monday 00:00 in the district's time zone) every resident who is ``min_age`` or
older that week gets one ``welfare_calls`` row, due. The list is made by a background
loop at the start of the week and again whenever someone reads it, so a resident enrolled
mid-week or a server that was down on Monday still gets the week's list; the unique
(resident, week) pair makes making it twice harmless. When a week has ended, whatever
is still due becomes missed, for supervisors to follow up.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Date, Select, String, Text, exists, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.clock import Clock
from callcenter.store import models as m
from callcenter.store.db import write_locked

log = logging.getLogger("callcenter.welfare")

WEEK = timedelta(days=7)


class WelfareOutcome(enum.StrEnum):
    """What a welfare call found."""

    WELL = "well"  # spoke to the resident, all is well
    NEEDS_VISIT = "needs_visit"  # a carer should call round
    NO_ANSWER = "no_answer"  # nobody answered
    IN_HOSPITAL = "in_hospital"  # away in hospital (family or neighbour said so)
    OTHER = "other"  # see the note


def week_start(day: date) -> date:
    """The Monday of the week ``day`` falls in."""
    return day - timedelta(days=day.weekday())


def week_of(moment: datetime, zone: ZoneInfo) -> date:
    """The Monday (district time) of the week ``moment`` falls in."""
    return week_start(moment.astimezone(zone).date())


def week_began(monday: date, zone: ZoneInfo) -> datetime:
    """When the week starting ``monday`` begins: Monday 00:00 district time, in UTC."""
    return datetime.combine(monday, time(0), zone).astimezone(UTC)


def age_in_week(birth_year: int, monday: date) -> int:
    """A resident's age in the week starting ``monday``: the register keeps birth years
    only, so it is the year the week ends in (its Sunday) less the birth year."""
    return (monday + timedelta(days=6)).year - birth_year


class WelfareCallDoneError(Exception):
    """The welfare call already has its outcome; ``done_by`` recorded it."""

    def __init__(self, welfare_id: int, done_by: str, done_at: datetime) -> None:
        self.welfare_id = welfare_id
        self.done_by = done_by
        self.done_at = done_at
        super().__init__(
            f"welfare call {welfare_id} was already recorded by {done_by} "
            f"at {done_at.isoformat(timespec='seconds')}"
        )


class WelfareCallNotFoundError(Exception):
    """There is no welfare call with this id."""

    def __init__(self, welfare_id: int) -> None:
        self.welfare_id = welfare_id
        super().__init__(f"there is no welfare call {welfare_id}")


@dataclass(frozen=True)
class Recorded:
    """A welfare call's outcome as written; ``late`` when its week had already ended."""

    welfare_id: int
    household_id: int
    outcome: WelfareOutcome
    done_by: str
    done_at: datetime
    late: bool


class WelfareList:
    """Makes each week's welfare-call list, marks past weeks' undone calls missed, and
    records outcomes."""

    def __init__(self, engine: AsyncEngine, clock: Clock, *, zone: ZoneInfo, min_age: int) -> None:
        # Makers and recorders read, then write: they hold the write lock from the start
        # (SQLite would otherwise refuse one of two at once). Whether there is anything
        # to write is asked first without it, so reading the list does not queue writers.
        self._engine = write_locked(engine)
        self._reader = engine
        self._clock = clock
        self.zone = zone
        self.min_age = min_age
        self._stopping = asyncio.Event()

    def this_week(self) -> date:
        """The Monday of the current week, district time."""
        return week_of(self._clock.now(), self.zone)

    def stop(self) -> None:
        self._stopping.set()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        """Bring the list up to date now and at the start of every week, until stopped."""
        while not self._stopping.is_set():
            # The week is read before the work: should the clock pass into the next week
            # meanwhile, the sleep below ends at once and that week is made too.
            monday = self.this_week()
            try:
                made = await self.bring_up_to_date(monday)
                if made:
                    log.info("welfare calls: %d due this week (week of %s)", made, monday)
            except Exception:
                log.exception("making the welfare-call list failed; trying again in a minute")
                await self._clock.sleep_until(
                    self._clock.now() + timedelta(minutes=1), self._stopping
                )
                continue
            next_week = week_began(monday + WEEK, self.zone)
            await self._clock.sleep_until(next_week, self._stopping)

    async def bring_up_to_date(self, monday: date | None = None) -> int:
        """Mark past weeks' due calls missed and make the list of the week of ``monday``
        (this week by default); how many calls were added to that week's list."""
        monday = monday or self.this_week()
        overdue = (m.WelfareCall.state == m.WelfareState.DUE, m.WelfareCall.week_start < monday)
        async with AsyncSession(self._reader) as session:
            any_overdue = await session.scalar(select(exists().where(*overdue)))
            any_missing = await session.scalar(select(exists(self._missing(monday))))
        if any_overdue:
            async with AsyncSession(self._engine) as session, session.begin():
                await session.execute(
                    update(m.WelfareCall).where(*overdue).values(state=m.WelfareState.MISSED)
                )
        return await self.make_week(monday) if any_missing else 0

    def _missing(self, monday: date) -> Select[int, int]:
        """Residents old enough in the week of ``monday`` with no call that week yet."""
        # Birth year at most this: old enough in the year the week ends in.
        latest_birth_year = (monday + timedelta(days=6)).year - self.min_age
        listed = select(m.WelfareCall.resident_id).where(m.WelfareCall.week_start == monday)
        return select(m.Resident.id, m.Resident.household_id).where(
            m.Resident.birth_year <= latest_birth_year, m.Resident.id.not_in(listed)
        )

    async def make_week(self, monday: date) -> int:
        """Add a due call for every resident old enough in the week of ``monday`` who has
        none yet; how many were added. Safe to run at the same time as another maker."""
        for attempt in range(3):
            try:
                return await self._add_missing(monday)
            except IntegrityError:
                # Another maker added some of the same rows first; theirs stand, look again.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _add_missing(self, monday: date) -> int:
        # One INSERT ... SELECT, all in the database: as ORM objects the demo district's
        # 937 rows took 80 ms of the event loop, and a real district's week would take
        # seconds. In residents' order, so the list's ids are the same on every database.
        missing = self._missing(monday).subquery()
        rows = select(
            missing.c.id,
            missing.c.household_id,
            literal(monday, Date),
            literal(m.WelfareState.DUE.value, String),
            literal("", Text),
        ).order_by(missing.c.id)
        columns = ["resident_id", "household_id", "week_start", "state", "note"]
        async with AsyncSession(self._engine) as session, session.begin():
            added = await session.execute(insert(m.WelfareCall).from_select(columns, rows))
        return int(added.rowcount)  # type: ignore[attr-defined]

    async def record(
        self, welfare_id: int, outcome: WelfareOutcome, note: str, done_by: str
    ) -> Recorded:
        """Record a welfare call's outcome (a missed one too, late); WelfareCallDoneError
        when someone already did."""
        now = self._clock.now()
        async with AsyncSession(self._engine) as session, session.begin():
            row = await session.get(m.WelfareCall, welfare_id, with_for_update=True)
            if row is None:
                raise WelfareCallNotFoundError(welfare_id)
            if row.state == m.WelfareState.DONE:
                assert row.done_by is not None and row.done_at is not None
                raise WelfareCallDoneError(welfare_id, row.done_by, row.done_at)
            # Guarded by the state it was read in, so two operators saving at once on a
            # database without row locks (SQLite) cannot both win.
            changed = await session.execute(
                update(m.WelfareCall)
                .where(m.WelfareCall.id == welfare_id, m.WelfareCall.state == row.state)
                .values(
                    state=m.WelfareState.DONE,
                    outcome=outcome.value,
                    note=note,
                    done_by=done_by,
                    done_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            won = changed.rowcount == 1  # type: ignore[attr-defined]
            if won:
                # Rings of this welfare call still waiting to be placed (a retry after
                # nobody answered, docs/voice.md) are not wanted any more.
                rung = select(m.VoiceBridge.outbox_id).where(m.VoiceBridge.welfare_id == welfare_id)
                await session.execute(
                    update(m.OutboxItem)
                    .where(
                        m.OutboxItem.id.in_(rung),
                        m.OutboxItem.state == m.OutboxState.PENDING,
                        m.OutboxItem.attempts == 0,
                    )
                    .values(state=m.OutboxState.SKIPPED)
                    .execution_options(synchronize_session=False)
                )
            late = now >= week_began(row.week_start + WEEK, self.zone)
            recorded = Recorded(welfare_id, row.household_id, outcome, done_by, now, late)
        if not won:
            async with AsyncSession(self._engine) as session:
                winner = await session.get(m.WelfareCall, welfare_id)
                assert winner is not None and winner.done_by and winner.done_at
                raise WelfareCallDoneError(welfare_id, winner.done_by, winner.done_at)
        return recorded
