"""The call desk: applies device events, timers and people's commands to calls.

Every change follows one path: lock the call, read what the decision needs, let the pure
domain decide, write the call, its history, timers and outbox rows in the same
transaction, commit, and only then tell the world (feed, scheduler, outbox relay). A
crash at any point leaves either the whole change or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    Actor,
    AssignmentState,
    AutoDispatch,
    Call,
    CallError,
    CarerReport,
    Command,
    Decision,
    Dispatch,
    DispatchResult,
    InboundNoted,
    InboundStep,
    Report,
    RingUnanswered,
    Situation,
    StandDown,
    StepDue,
    Unreachable,
    decide,
    dispatch_result,
    open_call,
)
from callcenter.domain.dispatch import CarerSnapshot, CarerState, Ranking, assess
from callcenter.domain.events import Ignore, OpenNew, route
from callcenter.domain.inbound import call_to_attach
from callcenter.domain.policy import Policy, PolicyBook
from callcenter.engine import repository
from callcenter.engine.district import UNLINKED, District, HouseholdInfo, Registry, household_of
from callcenter.engine.feed import Feed, Update
from callcenter.engine.offers import OFFER_STEP, Offers
from callcenter.store import leases
from callcenter.store import models as m
from callcenter.store.db import write_locked, write_turn

log = logging.getLogger("callcenter.desk")

T = TypeVar("T")

# Attempts at a decision that lost a race for a carer, to another server's decision (a
# server's own desk transactions take turns, see Desk.transaction). Each loss is another
# decision committed, so this many in a row would mean a fault, not bad luck.
_RACE_RETRIES = 50
# Small writes sharing one transaction at most (perform_together): enough for the claims
# of a whole batch of the outbox's due texts (100) at once, few enough to keep the turn
# brief.
TOGETHER_AT_MOST = 128


def _given_twice(error: IntegrityError) -> bool:
    """The unique active-assignment index refused a second dispatch of one carer, or
    the offers' index a second offer to one operator (engine/offers.py)."""
    text = str(error.orig)
    # PostgreSQL names the index; SQLite names the column.
    return any(
        name in text
        for name in (
            "uq_call_assignments_active_carer",
            "call_assignments.carer_id",
            "uq_calls_offer_to",
            "calls.offer_to",
        )
    )


# A work waiting to share a transaction, and where its result goes.
_Together = tuple[Callable[[AsyncSession], Awaitable[Any]], "asyncio.Future[Any]"]


def _unless_cancelled(result: T | BaseException) -> T | Exception:
    """A result gathered with ``return_exceptions``; cancellation (and the like) raised."""
    if isinstance(result, BaseException) and not isinstance(result, Exception):
        raise result
    return result


def _fulfil(
    done: asyncio.Future[Any], result: Any = None, *, error: Exception | None = None
) -> None:
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


class CallNotFoundError(Exception):
    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        super().__init__(f"there is no call {call_id}")


class CarerUnavailableError(CallError):
    """The chosen carer cannot be sent: unknown, inactive, or busy on another call.
    ``carer``, ``carer_state`` and ``on_call`` say so in codes, for a page to say it in
    its own language."""

    def __init__(
        self,
        call_id: int,
        message: str,
        *,
        carer: str,
        carer_state: str | None = None,
        on_call: int | None = None,
    ) -> None:
        self.carer = carer
        self.carer_state = carer_state
        self.on_call = on_call
        super().__init__(call_id, message)


class PageCourier(Protocol):
    """Sends the dispatch pages a decision wrote claimed (the outbox relay, while it
    runs): the page goes out the moment its decision commits, with no claim of its own
    to wait a write turn for."""

    def claimed_until(self, now: datetime) -> datetime:
        """When a page claimed ``now`` is tried again if its send was never settled."""
        ...

    def hand_over(self, pages: Sequence[repository.ClaimedPage], household: str) -> None:
        """Send ``pages``, committed claimed (``household``: their call's, for the logs)."""
        ...


@dataclass(frozen=True)
class DeskSettings:
    topic_prefix: str
    desk_phone: str = ""
    service_circle_s: float = 15 * 60.0


@dataclass(frozen=True)
class LoggedEvent:
    """A device event as the desk reads it from the log."""

    id: int
    household_id: int
    device: str
    kind: str
    received_at: datetime
    data: dict[str, Any]


class Desk:
    """Applies whatever happens to a call, one locked transaction at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        district: District,
        policies: PolicyBook,
        settings: DeskSettings,
        feed: Feed | None = None,
    ) -> None:
        self._engine = write_locked(engine)
        self._read_engine = engine
        self._clock = clock
        self.district = district
        self._policies = policies
        self._settings = settings
        self.feed = feed or Feed()
        # Set after a commit that armed a timer (the earliest kept in earliest_armed) or
        # queued an effect.
        self.timers_changed = asyncio.Event()
        self.earliest_armed: datetime | None = None
        self.outbox_changed = asyncio.Event()
        # Told of timers armed (with the earliest due) and outbox rows written here, for
        # the server doing the once-only work when that is another one (engine/peers.py).
        self.elsewhere: Callable[[str, datetime | None], None] | None = None
        # Small writes waiting to share a transaction (perform_together).
        self._together: list[_Together] = []
        self._together_task: asyncio.Task[None] | None = None
        # The server's public address, once it listens: dispatch pages carry a signed
        # link to the carer page under it (none while it is empty).
        self.link_base = ""
        # Whether phone calls the desk asks for are placed ([voice] enabled); without,
        # a ring_carer step is written on its call and rings nobody.
        self.rings = True
        # Who sends a decision's dispatch pages as soon as it commits (the outbox relay
        # sets itself while it runs); without one, pages wait in the outbox for its turn.
        self.page_courier: PageCourier | None = None
        # Alarm calls offered to the operators on duty (engine/offers.py); None: no offers.
        self.offers: Offers | None = None
        # This server's desk transactions take turns on PostgreSQL too (on SQLite,
        # write_turn orders every writer already): side by side, a storm's decisions
        # read the same carers free and all but one lost the race for them, over and
        # over (1,828 lost races and a press set aside after 15 in one run of
        # bench/storm.py). What is left to race is another server's decision.
        self._turn = asyncio.Lock() if self._engine.dialect.name != "sqlite" else None

    # --- transactions ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: the call rows it reads stay locked until commit. The
        history and timer rows its decisions save go in together at its end
        (``repository.defer_rows``)."""
        async with (
            self._turn or contextlib.nullcontext(),
            write_turn(self._engine),
            AsyncSession(self._engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            repository.defer_rows(session)
            yield session
            await repository.write_deferred(session)

    async def _retrying(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        for attempt in range(1, _RACE_RETRIES + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except IntegrityError as error:
                # Another writer took the same carer first; decide again on fresh facts.
                if not _given_twice(error) or attempt == _RACE_RETRIES:
                    raise
                log.info("lost a race for a carer; deciding again (attempt %d)", attempt + 1)
                await asyncio.sleep(min(0.005 * attempt, 0.1))
        raise AssertionError("unreachable")

    # --- reading what a decision needs ---------------------------------------------

    def _situation(
        self,
        call: Call | None,
        household: HouseholdInfo,
        registry: Registry,
        free: Sequence[Sequence[CarerSnapshot]],
        now: datetime,
        skills: tuple[str, ...],
    ) -> Situation:
        """What the domain needs to decide on ``call`` (None: a new one at ``household``);
        ``free``: the carers free now, the ones dispatch may rank, by post
        (``District.free_carers``)."""
        on_call = {a.carer_id for a in call.assignments} if call else set()
        station = registry.stations.get(household.home_station_id)
        return Situation(
            now=now,
            household_code=household.code,
            address=household.address,
            access_notes=household.access_notes,
            residents=household.residents,
            resident_notes=household.resident_notes,
            # Families ring the desk, or their station when the district has no desk line.
            desk_phone=self._settings.desk_phone or (station.phone if station else ""),
            # A call of no household has no door to send anyone to.
            candidates=Ranking.at_posts(
                free,
                household.destination(),
                skills=skills,
                circle_s=self._settings.service_circle_s,
            )
            if household.id
            else (),
            assigned=tuple(registry.carers[c].person() for c in on_call if c in registry.carers),
            station_leads=registry.station_leads.get(household.home_station_id, ()),
            family=household.family,
            supervisors=registry.supervisors,
            rings=self.rings,
        )

    async def _apply(
        self,
        session: AsyncSession,
        call_id: int,
        make: Callable[[Call, Situation, Registry], Command],
        *,
        may_dispatch: bool = True,
        locked_row: Any = None,
    ) -> Decision:
        """Lock the call, decide ``make``'s command on it, save. Without ``may_dispatch``
        the command cannot page anyone, and who is free is not read. ``locked_row``: the
        call's row, read under its lock already in this transaction."""
        now = self._clock.now()
        registry = await self.district.registry()
        if locked_row is not None:
            call: Call | None = await repository.with_carers(
                session, locked_row, registry.carer_codes
            )
        else:
            call = await repository.load(session, call_id, registry.carer_codes, lock=True)
        if call is None:
            raise CallNotFoundError(call_id)
        household = household_of(registry, call)
        with logs.bound(call_id=call_id, household=household.code):
            free = await self.district.free_carers(session, now) if may_dispatch else []
            situation = self._situation(call, household, registry, free, now, call.policy.skills)
            decision = decide(call, make(call, situation, registry), situation)
            if self.offers is not None:
                decision = await self.offers.follow(session, call, decision, situation)
            await self._save(session, call, decision, household, now)
        return decision

    async def _save(
        self,
        session: AsyncSession,
        before: Call | None,
        decision: Decision,
        household: HouseholdInfo,
        now: datetime,
    ) -> None:
        courier = self.page_courier
        saved = await repository.save(
            session,
            before,
            decision,
            now=now,
            household_code=household.code,
            base_unit=household.base_unit,
            topic_prefix=self._settings.topic_prefix,
            link_base=self.link_base,
            rings=self.rings,
            pages_claimed_until=None if courier is None else courier.claimed_until(now),
        )
        arrived = await self._move_carers(session, before, decision.call, household, now)
        self.district.decided(session, decision.call, arrived, household.place)
        session.info.setdefault("after_commit", []).append(
            (decision, household, saved, logs.current())
        )

    async def _move_carers(
        self,
        session: AsyncSession,
        before: Call | None,
        call: Call,
        household: HouseholdInfo,
        now: datetime,
    ) -> list[int]:
        """A carer who reached the door is now at the household (their last known place);
        the ids of the carers who did with this decision."""
        was = (
            {a.carer_id for a in before.assignments if a.state is AssignmentState.ON_SCENE}
            if before
            else set()
        )
        arrived = [
            a.carer_id
            for a in call.assignments
            if a.state is AssignmentState.ON_SCENE and a.carer_id not in was
        ]
        for carer_id in arrived:
            await session.execute(
                delete(m.CarerPosition).where(m.CarerPosition.carer_id == carer_id)
            )
            await session.execute(
                insert(m.CarerPosition).values(
                    carer_id=carer_id, lat=household.place.lat, lon=household.place.lon, at=now
                )
            )
        return arrived

    def _announce(self, session: AsyncSession) -> None:
        """After commit: log, publish, and wake the loops that act on what was written."""
        if session.info.pop("operators_changed", False) and self.offers is not None:
            self.offers.changed()
        for decision, household, saved, fields in session.info.pop("after_commit", []):
            # Logged with what was bound where it was decided (its event, its carer).
            with logs.bound_again(fields):
                self._announce_decision(decision, household, saved)

    def _announce_decision(
        self, decision: Decision, household: HouseholdInfo, saved: repository.Saved
    ) -> None:
        call = decision.call
        for entry in decision.history:
            log.info(
                "call %d household %s: %s by %s (%s -> %s) %s",
                call.id,
                household.code,
                entry.action,
                entry.actor,
                entry.from_state.value if entry.from_state else "-",
                entry.to_state.value,
                entry.detail or "",
            )
        for alert in saved.alerts:
            log.warning(
                "ALERT call %d household %s: step %s, %s",
                call.id,
                household.code,
                alert.step,
                alert.why,
            )
            self.feed.publish(
                Update("alarm", self._clock.now(), call.id, {"step": alert.step, "why": alert.why})
            )
        if decision.history or decision.effects:
            self.feed.publish(
                Update(
                    "call",
                    self._clock.now(),
                    call.id,
                    {
                        "state": call.state.value,
                        "household": household.code,
                        "actions": [h.action for h in decision.history],
                    },
                )
            )
        if saved.timers_armed:
            # A cancelled timer needs no wake-up: when its time comes it is not
            # pending any more and nothing fires.
            self.timers_armed(min(saved.timers_armed))
        if saved.pages:
            if self.page_courier is not None:
                self.page_courier.hand_over(saved.pages, household.code)
            else:
                # The relay stopped meanwhile: the pages are in doubt and are
                # checked and sent at their next attempt, as after a crash.
                log.warning(
                    "call %d household %s: outbox %s claimed for a relay that has "
                    "stopped; tried again at the next attempt",
                    call.id,
                    household.code,
                    ", ".join(str(page.id) for page in saved.pages),
                )
        if saved.outbox:
            self.outbox_written()

    def timers_armed(self, earliest: datetime, *, here: bool = True) -> None:
        """A committed transaction armed timers, the earliest due at ``earliest``: the
        scheduler sleeps no later than that (``here``: armed by this server, so the
        other servers are told too)."""
        if self.earliest_armed is None or earliest < self.earliest_armed:
            self.earliest_armed = earliest
        self.timers_changed.set()
        if here and self.elsewhere is not None:
            self.elsewhere("timers", earliest)

    def outbox_written(self, *, here: bool = True) -> None:
        """A committed transaction wrote outbox rows: the relay looks now (``here``:
        written by this server, so the other servers are told too)."""
        self.outbox_changed.set()
        if here and self.elsewhere is not None:
            self.elsewhere("outbox", None)

    async def perform(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a write transaction (retried when it loses a race for a carer),
        then announce what it committed."""
        holder: list[AsyncSession] = []

        async def tracked(session: AsyncSession) -> T:
            session.info.pop("after_commit", None)
            holder[:] = [session]
            return await work(session)

        result = await self._retrying(tracked)
        self._announce(holder[0])
        return result

    async def perform_together(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``perform``, in one transaction with the other small writes waiting for their
        turn meanwhile (a group commit: the desk's writers take turns). The outbox claims
        and settles every text this way: with a turn of its own each, a storm's pages
        went out a few dozen a second behind the engine's batches.

        ``work`` must not wait for another write turn. If the shared transaction fails,
        each work in it is performed again on its own, so one that fails takes no other
        along; a work may therefore run twice, the first time rolled back."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._together.append((work, done))
        if self._together_task is None or self._together_task.done():
            # In a context of its own: its works are anybody's, not this caller's, and
            # each binds what it is about for the log itself.
            self._together_task = asyncio.create_task(
                self._run_together(), context=leases.fresh_context()
            )
        return await asyncio.shield(done)

    async def _run_together(self) -> None:
        taken: list[_Together] = []
        try:
            while self._together:
                taken = []
                await self._perform_group(taken)
        except BaseException:  # cancelled (the server stopping): nobody waits forever
            for _, done in taken + self._together:
                done.cancel()
            self._together.clear()
            raise

    async def _perform_group(self, taken: list[_Together]) -> None:
        """Perform what waits, in one transaction; ``taken`` is filled with it once the
        write turn is ours (so whatever asked meanwhile comes along)."""

        def take() -> None:
            taken[:] = self._together[:TOGETHER_AT_MOST]
            del self._together[:TOGETHER_AT_MOST]

        async def group(session: AsyncSession) -> list[Any]:
            if not taken:  # (a retry after a lost race keeps the same group)
                take()
            return [await work(session) for work, _ in taken]

        try:
            results = await self.perform(group)
        except Exception:
            if not taken:  # it failed before it began
                take()
            for work, done in taken:
                try:
                    result = await self.perform(work)
                except Exception as error:
                    _fulfil(done, error=error)
                else:
                    _fulfil(done, result)
            return
        for (_, done), result in zip(taken, results, strict=True):
            _fulfil(done, result)

    # --- device events ---------------------------------------------------------------

    async def apply_event(self, session: AsyncSession, event: LoggedEvent) -> int | None:
        """Apply one logged device event inside the caller's transaction (see ``perform``);
        the id of the call it touched, if any."""
        now = self._clock.now()
        registry = await self.district.registry()
        household = registry.households.get(event.household_id)
        if household is None:
            self.district.invalidate()
            registry = await self.district.registry()
            household = registry.households[event.household_id]
        with logs.bound(event_id=event.id, household=household.code):
            open_calls = await repository.open_calls(session, event.household_id)
            where = route(event.kind, event.device, event.data, open_calls)
            if isinstance(where, OpenNew):
                return await self._open(
                    session, where.call_type, household, registry, now, event.device, event.id
                )
            if isinstance(where, Ignore):
                log.log(
                    logging.WARNING if where.warn else logging.INFO,
                    "household %s: %s",
                    household.code,
                    where.why,
                )
                return None
            command = where.command
            await self._apply(session, where.call_id, lambda *_: command, may_dispatch=False)
            return where.call_id

    def policy_for(self, call_type: CallType, registry: Registry) -> Policy:
        """The policy a call of ``call_type`` opens with now: a supervisor's edit
        (escalation_policies, read with the registry) over the configuration's."""
        return registry.policies.get(call_type) or self._policies.for_type(call_type)

    def configured_policy(self, call_type: CallType) -> Policy:
        """The configuration's (or built-in) policy, in force when nobody edited one."""
        return self._policies.for_type(call_type)

    async def _open(
        self,
        session: AsyncSession,
        call_type: CallType,
        household: HouseholdInfo,
        registry: Registry,
        now: datetime,
        device: str,
        event_id: int | None,
    ) -> int:
        """Open a call of ``call_type`` at ``household``, raised by ``device`` (a device's
        serial, or ``phone:<number>`` for a call to the centre's number, which no logged
        event raised)."""
        policy = self.policy_for(call_type, registry)
        free = await self.district.free_carers(session, now) if policy.auto_dispatch else []
        situation = self._situation(None, household, registry, free, now, policy.skills)
        # The row comes first so the call has its id; the decision then fills it in.
        household_id = household.id or None  # UNLINKED: a call of no household
        placeholder = open_call(0, household_id, call_type, policy, device, situation).call
        call_id = await repository.insert_call(session, placeholder, now, event_id)
        with logs.bound(call_id=call_id):
            decision = open_call(call_id, household_id, call_type, policy, device, situation)
            if self.offers is not None:
                decision = await self.offers.follow(session, None, decision, situation)
            await self._save(session, None, decision, household, now)
        return call_id

    # --- calls to the centre's number ------------------------------------------------

    async def inbound(self, household_id: int | None, caller: str, call_sid: str) -> int:
        """``caller`` (of household ``household_id``) rings the centre's number: the ring
        is noted on the household's most urgent open call, or a ``voice`` call opens
        (domain/inbound.py); the call's id. A caller of no household known
        (``household_id`` None) opens a ``voice`` call of no household."""

        async def work(session: AsyncSession) -> int:
            now = self._clock.now()
            registry = await self.district.registry()
            household = registry.households.get(household_id or 0, UNLINKED)
            if household_id is not None and household is UNLINKED:
                self.district.invalidate()
                registry = await self.district.registry()
                household = registry.households[household_id]
            with logs.bound(household=household.code or "-"):
                open_calls = (
                    await repository.open_calls(session, household_id) if household_id else []
                )
                target = call_to_attach(open_calls)
                if target is None:
                    device = f"phone:{caller}"
                    target = await self._open(
                        session, CallType.VOICE, household, registry, now, device, None
                    )
                called = InboundNoted(InboundStep.CALLED, caller, call_sid)
                await self._apply(session, target, lambda *_: called, may_dispatch=False)
            return target

        return await self.perform(work)

    # --- timers ----------------------------------------------------------------------

    async def fire_timer(self, timer_id: int) -> datetime | None:
        """Fire one due timer exactly once; its due time, or None if it was not pending."""
        return await self.perform(self._firing(timer_id))

    async def fire_timers(self, timer_ids: Sequence[int]) -> list[datetime | Exception | None]:
        """``fire_timer`` for each of ``timer_ids``, in the order given: what each gave,
        or the error it failed with (one that fails takes no other along).

        They share transactions (``perform_together``): with a transaction each, the
        timers of a storm's calls, falling due as fast as its presses came, fell behind
        until the watchdog called them overdue on SQLite, and on PostgreSQL took as many
        transactions as the presses did, held the presses' decisions back by seconds.
        A shared transaction performs its works in the order they asked, and so does
        the one-by-one retry after a failure: two timers of one call fire in due order."""
        results = await asyncio.gather(
            *(self.perform_together(self._firing(timer_id)) for timer_id in timer_ids),
            return_exceptions=True,
        )
        return [_unless_cancelled(result) for result in results]

    def _firing(self, timer_id: int) -> Callable[[AsyncSession], Awaitable[datetime | None]]:
        """The work of firing timer ``timer_id`` inside a write transaction."""

        async def work(session: AsyncSession) -> datetime | None:
            # Lock the call first (its lock guards its timers), then claim the timer.
            timer = await repository.timer_with_call(session, timer_id)
            if timer is None:
                return None
            claimed = await session.execute(
                update(m.Timer)
                .where(m.Timer.id == timer_id, m.Timer.state == m.TimerState.PENDING)
                .values(state=m.TimerState.FIRED, fired_at=self._clock.now())
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None  # cancelled, or another instance fired it
            if timer.step == OFFER_STEP:
                await self._moving_offer(session, timer.call_id)
                return timer.due_at
            step = StepDue(timer.step, timer.carer_id)
            await self._apply(session, timer.call_id, lambda *_: step, locked_row=timer.call_row)
            return timer.due_at

        return work

    # --- offers ----------------------------------------------------------------------

    async def move_offer(self, call_id: int) -> bool:
        """Move the call's offer on if it must (its time is up, or its operator paused,
        went off duty or lost their board); whether it moved."""
        return await self.perform(lambda session: self._moving_offer(session, call_id))

    async def _moving_offer(self, session: AsyncSession, call_id: int) -> bool:
        offers = self.offers
        if offers is None:
            return False
        now = self._clock.now()
        registry = await self.district.registry()
        call = await repository.load(session, call_id, registry.carer_codes, lock=True)
        if call is None or not call.is_open or call.owner is not None:
            return False
        offer = await offers.offer(session, call_id)
        if offer is None or offer.to_all:
            return False
        why = await offers.why_moving(session, offer, now)
        if why is None:
            return False
        household = household_of(registry, call)
        with logs.bound(call_id=call_id, household=household.code):
            free = await self.district.free_carers(session, now)
            situation = self._situation(call, household, registry, free, now, call.policy.skills)
            decision = await offers.hand_on(session, Decision(call), offer, situation, why=why)
            await self._save(session, call, decision, household, now)
        return True

    # --- people's commands -----------------------------------------------------------

    async def command(self, call_id: int, command: Command) -> Call:
        """Apply a ready-made command (acknowledge, report, resolve, ...) to a call."""

        # Only these can page someone: a decline or a stand-down refills the call. A
        # carer's other reports (accepted, on the way, on scene) never do, so who is free
        # is not read for them (most of a carer's texts).
        may_dispatch = isinstance(
            command, StandDown | AutoDispatch | StepDue | Unreachable | RingUnanswered
        ) or (isinstance(command, Report) and command.report is CarerReport.DECLINED)

        async def work(session: AsyncSession) -> Call:
            decision = await self._apply(
                session, call_id, lambda *_: command, may_dispatch=may_dispatch
            )
            return decision.call

        return await self.perform(work)

    async def dispatch(
        self, call_id: int, by: Actor, carer_code: str | None
    ) -> tuple[Call, DispatchResult]:
        """Send a carer: the best candidate (``carer_code`` None) or the one named; the
        call as it now is, and what the dispatch did (who was paged, nobody free)."""

        carers: list[CarerSnapshot] = []  # every carer, read in the transaction when named

        def choose(call: Call, situation: Situation, registry: Registry) -> Command:
            if carer_code is None:
                return AutoDispatch(by)
            info = registry.carers_by_code.get(carer_code)
            if info is None or not info.active:
                raise CarerUnavailableError(
                    call_id, f"there is no active carer {carer_code!r}", carer=carer_code
                )
            snapshot = next(c for c in carers if c.id == info.id)
            if snapshot.state not in (CarerState.FREE, CarerState.OFF_SHIFT):
                raise CarerUnavailableError(
                    call_id,
                    f"carer {carer_code} is {snapshot.state.value} on call {snapshot.call_id}; "
                    "stand them down there first",
                    carer=carer_code,
                    carer_state=snapshot.state.value,
                    on_call=snapshot.call_id,
                )
            household = household_of(registry, call)
            return Dispatch(
                by,
                assess(
                    snapshot,
                    household.destination(),
                    circle_s=self._settings.service_circle_s,
                ),
            )

        async def work(session: AsyncSession) -> tuple[Call, DispatchResult]:
            if carer_code is not None:
                carers[:] = await self.district.carers(session, self._clock.now())
            decision = await self._apply(session, call_id, choose)
            return decision.call, dispatch_result(decision)

        return await self.perform(work)

    # --- reading ---------------------------------------------------------------------

    async def carer_snapshots(self) -> list[CarerSnapshot]:
        """Every active carer with state and last known position, as of now."""
        async with AsyncSession(self._read_engine) as session, session.begin():
            return await self.district.carers(session, self._clock.now())
