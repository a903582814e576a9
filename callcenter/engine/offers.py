"""Alarm calls offered to the operators on duty, applied in the desk's transactions.

Who is offered a call is decided by ``domain/offers.py`` (pure); this module reads what
that rule needs (each operator's duty, their board, the alarm calls they own, the offer
they hold), writes what it decided (the call's offer columns, its history, the offer's
timer) and keeps the operators' duty. It runs inside the desk's transaction, under the
call's lock, like every other decision (``Desk`` calls ``follow`` after each decision and
``hand_on`` when an offer must move).

- A new call of ``desk.offer_call_types`` is offered at once, in the transaction that
  opens it.
- An offer's end is a durable timer (step ``offer`` in ``timers``), fired by the
  scheduler like an escalation step, so a restart keeps it.
- An operator who pauses, signs out or whose board has been gone longer than
  ``desk.offer_board_grace_s`` has their offer moved on at once (``run``'s sweep).
- When nobody is left to try, the call goes to everyone and its escalation step waiting
  for an operator (``unacknowledged`` by default) runs now: every board's alarm and the
  supervisors' texts, as if its time had come.
- The one unique index ``uq_calls_offer_to`` keeps an operator to one offer at a time
  however two writers race; the loser decides again (``Desk._retrying``).

Which boards are connected is this server's memory (``Presence``): one server serves
the boards. See docs/calls.md, "Offers".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.clock import Clock
from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    ArmTimer,
    Call,
    CancelTimers,
    Decision,
    HistoryEntry,
    Situation,
    StepDue,
    decide,
)
from callcenter.domain.offers import Duty, Offer, OperatorState, ToAllBecause, must_move, next_offer
from callcenter.domain.policy import CountedFrom, Milestone
from callcenter.engine.feed import Feed, Update
from callcenter.store import models as m

if TYPE_CHECKING:
    from callcenter.engine.desk import Desk

log = logging.getLogger("callcenter.offers")

# The timer step that ends an offer to one operator.
OFFER_STEP = "offer"
SYSTEM_ACTOR = "system:engine"
# In a transaction's session.info: a new call of it found nobody free, and why.
_NONE_FREE = "offers_none_free"
# However long until the next board's grace runs out, the sweep looks again this often.
_RECHECK = timedelta(seconds=5)

_calls = m.Base.metadata.tables["calls"]
_CLEARED: dict[str, Any] = {
    "offer_to": None,
    "offered_at": None,
    "offer_expires_at": None,
    "offer_to_all": False,
    "offer_tried": None,
}


def actor_of(username: str, role: str) -> str:
    """How the call history names someone at the desk (as web/auth.py's actor does)."""
    kind = "operator" if role == m.OperatorRole.OPERATOR else "supervisor"
    return f"{kind}:{username}"


# Another server's boards count while it keeps saying which are open (it says so at
# every change and every few seconds: engine/peers.py); one silent for longer than this
# is taken to have gone, and its boards with it.
ELSEWHERE_STALE_S = 15.0


class Presence:
    """Which operators have a board connected: to this server, or to another on the same
    database (as that server last said). A board gone for less than the grace (a
    reconnect, a restart: every operator on duty counts from start-up) still counts, so
    an offer does not flicker away while the page reconnects."""

    def __init__(self, clock: Clock, grace: timedelta) -> None:
        self._clock = clock
        self.grace = grace
        self._boards: dict[int, int] = {}
        self._lost: dict[int, datetime] = {}
        self._started = clock.now()
        # Per other server: the operators with a board on it, and when (monotonic) it
        # last said so.
        self._elsewhere: dict[str, tuple[frozenset[int], float]] = {}

    def here(self) -> list[int]:
        """The operators with a board connected to this server, for the others."""
        return sorted(self._boards)

    def elsewhere(self, server: str, operators: Iterable[int]) -> bool:
        """Another server's whole list of operators with a board on it; whether that
        changes who has a board anywhere."""
        before = self._on(server)
        now = frozenset(operators)
        self._elsewhere[server] = (now, time.monotonic())
        for operator_id in now:
            self._lost.pop(operator_id, None)
        for operator_id in before - now:
            if not self.connected_now(operator_id):
                self._lost[operator_id] = self._clock.now()
        return before != now

    def _on(self, server: str) -> frozenset[int]:
        said = self._elsewhere.get(server)
        if said is None or time.monotonic() - said[1] > ELSEWHERE_STALE_S:
            return frozenset()
        return said[0]

    def connected(self, operator_id: int) -> None:
        self._boards[operator_id] = self._boards.get(operator_id, 0) + 1
        self._lost.pop(operator_id, None)

    def disconnected(self, operator_id: int) -> None:
        left = self._boards.get(operator_id, 0) - 1
        if left > 0:
            self._boards[operator_id] = left
            return
        self._boards.pop(operator_id, None)
        self._lost[operator_id] = self._clock.now()

    def connected_now(self, operator_id: int) -> bool:
        """A board of theirs is open this moment, here or on another server."""
        if self._boards.get(operator_id, 0) > 0:
            return True
        return any(operator_id in self._on(server) for server in self._elsewhere)

    def watching(self, operator_id: int, now: datetime) -> bool:
        """A board of theirs is open, or was within the grace."""
        if self.connected_now(operator_id):
            return True
        return now < self._lost.get(operator_id, self._started) + self.grace

    def next_lapse(self, now: datetime) -> datetime | None:
        """The next moment a board's grace runs out, if one is still running."""
        ends = [lost + self.grace for lost in (*self._lost.values(), self._started)]
        future = [end for end in ends if end > now]
        return min(future) if future else None


@dataclass(frozen=True)
class OnDuty:
    """One operator's row as the offers and the boards read it."""

    id: int
    username: str
    name: str
    role: str
    duty: Duty
    since: datetime
    idle_since: datetime

    @property
    def actor(self) -> str:
        return actor_of(self.username, self.role)


def offer_of(row: Any) -> Offer | None:
    """The offer kept in a call row's offer columns; None when none is out."""
    if row.offered_at is None:
        return None
    return Offer(
        row.offer_to,
        row.offered_at,
        row.offer_expires_at,
        bool(row.offer_to_all),
        tuple(row.offer_tried or ()),
    )


@dataclass(frozen=True)
class OperatorNow:
    """One operator as the boards and the API see them now (web/views.py renders it)."""

    person: OnDuty
    state: OperatorState
    board: bool  # a board of theirs is connected to this server now


class Offers:
    """The operators' duty and the calls offered to them (see the module's docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        enabled: bool,
        timeout_s: float,
        grace_s: float,
        call_types: Sequence[str],
        feed: Feed,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.enabled = enabled
        self.timeout = timedelta(seconds=timeout_s)
        self.types = frozenset(CallType(t) for t in call_types)
        self.presence = Presence(clock, timedelta(seconds=grace_s))
        self._feed = feed
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.desk: Desk | None = None
        self.moved = 0  # offers moved on because their operator could not be reached
        # Told the operators with a board on this server whenever that changes, for the
        # other servers on the same database (engine/peers.py).
        self.boards_told: Callable[[list[int]], None] | None = None

    # --- what the rule reads ---------------------------------------------------------

    async def on_duty(self, session: AsyncSession) -> list[OnDuty]:
        """Every active operator who has ever been on duty, with their duty now."""
        rows = await session.execute(
            select(
                m.Operator.id,
                m.Operator.username,
                m.Operator.name,
                m.Operator.role,
                m.OperatorDuty.duty,
                m.OperatorDuty.since,
                m.OperatorDuty.idle_since,
            )
            .join(m.OperatorDuty, m.OperatorDuty.operator_id == m.Operator.id)
            .where(m.Operator.active.is_(True))
            .order_by(m.Operator.username)
        )
        return [OnDuty(r[0], r[1], r[2], r[3], Duty(r[4]), r[5], r[6]) for r in rows.all()]

    async def states(
        self, session: AsyncSession, now: datetime
    ) -> list[tuple[OnDuty, OperatorState]]:
        """Each operator with what the offer rule needs to know of them."""
        people = await self.on_duty(session)
        actors = [p.actor for p in people]
        owned: dict[str | None, int] = {}
        if actors:
            found = await session.execute(
                select(m.Call.owner, func.count())
                .where(
                    m.Call.owner.in_(actors),
                    m.Call.closed_at.is_(None),
                    m.Call.call_type.in_(sorted(self.types)),
                )
                .group_by(m.Call.owner)
            )
            owned = {owner: int(n) for owner, n in found.all()}
        holding: dict[str | None, int] = {
            to: int(call_id)
            for to, call_id in (
                await session.execute(
                    select(m.Call.offer_to, m.Call.id).where(m.Call.offer_to.is_not(None))
                )
            ).all()
        }
        return [
            (
                p,
                OperatorState(
                    actor=p.actor,
                    duty=p.duty,
                    board=self.presence.watching(p.id, now),
                    idle_since=p.idle_since,
                    owned=owned.get(p.actor, 0),
                    holding=holding.get(p.actor),
                ),
            )
            for p in people
        ]

    async def _takers(self, session: AsyncSession, now: datetime) -> list[OperatorState]:
        """The operators an offer may go to: those with the operator's role (supervisors
        oversee; they are asked when everyone is)."""
        return [
            state
            for person, state in await self.states(session, now)
            if person.role == m.OperatorRole.OPERATOR
        ]

    async def offer(self, session: AsyncSession, call_id: int) -> Offer | None:
        """The call's offer as it stands."""
        row = (
            await session.execute(
                select(
                    _calls.c.offer_to,
                    _calls.c.offered_at,
                    _calls.c.offer_expires_at,
                    _calls.c.offer_to_all,
                    _calls.c.offer_tried,
                ).where(_calls.c.id == call_id)
            )
        ).one_or_none()
        return None if row is None else offer_of(row)

    # --- in the desk's transaction, under the call's lock --------------------------

    async def follow(
        self,
        session: AsyncSession,
        before: Call | None,
        decision: Decision,
        situation: Situation,
    ) -> Decision:
        """What a decision does to the call's offer: a new alarm call is offered; a call
        taken or closed has its offer withdrawn."""
        call = decision.call
        if not self.enabled or call.type not in self.types:
            return decision
        if before is None:
            if call.is_open and call.owner is None:
                return await self.hand_on(session, decision, None, situation)
            return decision
        taken = before.owner is None and call.owner is not None
        closed = before.is_open and not call.is_open
        if not (taken or closed):
            return decision
        session.info["operators_changed"] = True
        session.info.pop(_NONE_FREE, None)  # someone may be free now
        now = situation.now
        if closed and call.owner is not None:
            # Their alarm is over: they are free again, and idle from now.
            await self._idle_from(session, call.owner, now)
        current = await self.offer(session, call.id)
        if current is None:
            return decision
        await session.execute(update(_calls).where(_calls.c.id == call.id).values(_CLEARED))
        entries: list[HistoryEntry] = []
        if current.operator is not None and current.operator == call.owner:
            waited = round((now - current.offered_at).total_seconds(), 1)
            entries.append(self._entry(call, call.owner, "offer_accepted", now, waited_s=waited))
        elif current.operator is not None:
            detail: dict[str, Any] = {"offered_to": current.operator}
            if call.owner is not None:
                detail["taken_by"] = call.owner
            entries.append(self._entry(call, SYSTEM_ACTOR, "offer_withdrawn", now, **detail))
        return Decision(
            call,
            decision.history + tuple(entries),
            (*decision.effects, CancelTimers(frozenset({OFFER_STEP}))),
        )

    async def hand_on(
        self,
        session: AsyncSession,
        decision: Decision,
        current: Offer | None,
        situation: Situation,
        *,
        why: str = "",
    ) -> Decision:
        """Offer ``decision``'s call to the next free operator, or to everyone; ``current``:
        the offer it had (None for a new call), ``why`` it moves on (for the history)."""
        call = decision.call
        now = situation.now
        # A storm's new calls, 25 to a transaction, find nobody free one after another:
        # once one has, the others of the transaction need not ask again (nothing in it
        # has freed anyone since: a call taken or closed forgets it, see ``follow``).
        none_free: ToAllBecause | None = session.info.get(_NONE_FREE)
        if current is None and none_free is not None:
            offer = Offer(None, now, None, True, (), none_free)
        else:
            if current is not None:  # its operator is free for other calls again
                session.info.pop(_NONE_FREE, None)
            offer = next_offer(current, await self._takers(session, now), now, self.timeout)
            if current is None and offer.to_all:
                session.info[_NONE_FREE] = offer.because
        entries: list[HistoryEntry] = []
        effects: list[Any] = [CancelTimers(frozenset({OFFER_STEP}))] if current else []
        if current is not None and current.operator is not None:
            entries.append(
                self._entry(
                    call, SYSTEM_ACTOR, "offer_expired", now, operator=current.operator, why=why
                )
            )
        await session.execute(
            update(_calls)
            .where(_calls.c.id == call.id)
            .values(
                offer_to=offer.operator,
                offered_at=offer.offered_at,
                offer_expires_at=offer.expires_at,
                offer_to_all=offer.to_all,
                offer_tried=list(offer.tried),
            )
        )
        session.info["operators_changed"] = True
        if offer.operator is not None:
            assert offer.expires_at is not None
            await self._idle_from(session, offer.operator, now)
            entries.append(
                self._entry(
                    call,
                    SYSTEM_ACTOR,
                    "offered",
                    now,
                    operator=offer.operator,
                    timeout_s=self.timeout.total_seconds(),
                )
            )
            effects.append(ArmTimer(OFFER_STEP, offer.expires_at))
            return Decision(call, decision.history + tuple(entries), (*decision.effects, *effects))
        assert offer.because is not None
        entries.append(
            self._entry(
                call,
                SYSTEM_ACTOR,
                "offered_to_all",
                now,
                because=offer.because.value,
                tried=list(offer.tried),
            )
        )
        handed = Decision(call, decision.history + tuple(entries), (*decision.effects, *effects))
        return self._alert(handed, situation, offer.because)

    def _alert(self, decision: Decision, situation: Situation, because: ToAllBecause) -> Decision:
        """Run the call's escalation step that waits for an operator now, if it has not
        run: every board's alarm and the supervisors' texts, as when its time comes."""
        call = decision.call
        step = next(
            (
                s
                for s in sorted(call.policy.steps, key=lambda s: s.after_s)
                if s.counted_from is CountedFrom.OPENED
                and s.unless is Milestone.ACKNOWLEDGED
                and s.name not in call.fired_steps
            ),
            None,
        )
        if step is None or call.reached(Milestone.ACKNOWLEDGED):
            return decision
        log.info("call %d offered to everyone (%s): step %s now", call.id, because, step.name)
        escalated = decide(call, StepDue(step.name), situation)
        return Decision(
            escalated.call,
            decision.history + escalated.history,
            decision.effects + escalated.effects,
        )

    async def _idle_from(self, session: AsyncSession, actor: str, now: datetime) -> None:
        _, _, username = actor.partition(":")
        await session.execute(
            update(m.OperatorDuty)
            .where(
                m.OperatorDuty.operator_id
                == select(m.Operator.id).where(m.Operator.username == username).scalar_subquery()
            )
            .values(idle_since=now)
        )

    @staticmethod
    def _entry(call: Call, actor: str, action: str, now: datetime, **detail: Any) -> HistoryEntry:
        return HistoryEntry(now, actor, action, call.state, call.state, detail)

    async def why_moving(self, session: AsyncSession, offer: Offer, now: datetime) -> str | None:
        """Why an offer to one operator must move on now (``timeout``, ``paused``,
        ``off_duty``, ``no_board``), or None if it stays."""
        takers = await self._takers(session, now)
        if not must_move(offer, takers, now):
            return None
        holder = next((t for t in takers if t.actor == offer.operator), None)
        if holder is None or holder.duty is Duty.OFF_DUTY:
            return "off_duty"
        if holder.duty is Duty.PAUSED:
            return "paused"
        if not holder.board:
            return "no_board"
        return "timeout"

    async def view(self) -> list[OperatorNow]:
        """Every operator who has been on duty (docs/api.md, "Operators on duty")."""
        now = self._clock.now()
        async with AsyncSession(self._engine) as session:
            states = await self.states(session, now)
        return [
            OperatorNow(person, state, self.presence.connected_now(person.id))
            for person, state in states
        ]

    # --- duty ----------------------------------------------------------------------

    async def set_duty(self, operator_id: int, duty: Duty) -> bool:
        """Put an operator on duty, pause them or take them off duty; whether it changed.
        An offer they hold moves on at once when they can no longer take it."""
        assert self.desk is not None
        now = self._clock.now()
        async with self.desk.transaction() as session:
            row = await session.get(m.OperatorDuty, operator_id)
            if row is not None and row.duty == duty.value:
                return False
            if row is None:
                row = m.OperatorDuty(operator_id=operator_id, duty=duty, since=now, idle_since=now)
                session.add(row)
            else:
                row.duty = duty.value
                row.since = now
                if duty is Duty.ON_DUTY:
                    row.idle_since = now
        log.info("operator %d is %s", operator_id, duty.value)
        self.changed()
        await self.sweep()
        return True

    def changed(self) -> None:
        """Someone's duty, board, offer or calls changed: every board's operators list
        is read again, and the sweep looks for offers to move."""
        self._feed.publish(Update("operators", self._clock.now()))
        self._wake.set()

    def board_opened(self, operator_id: int) -> None:
        self.presence.connected(operator_id)
        self._boards_changed()

    def board_closed(self, operator_id: int) -> None:
        self.presence.disconnected(operator_id)
        self._boards_changed()

    def boards_elsewhere(self, server: str, operators: Iterable[int]) -> None:
        """Another server said which operators have a board on it."""
        if self.presence.elsewhere(server, operators):
            self.changed()

    def _boards_changed(self) -> None:
        if self.boards_told is not None:
            self.boards_told(self.presence.here())
        self.changed()

    # --- moving offers whose operator cannot be reached --------------------------------

    async def sweep(self) -> int:
        """Move on every offer whose operator paused, went off duty or lost their board
        (past the grace); how many moved."""
        if self.desk is None or not self.enabled:
            return 0
        async with AsyncSession(self._engine) as session:
            held = (
                await session.execute(
                    select(
                        _calls.c.id,
                        _calls.c.offer_to,
                        _calls.c.offered_at,
                        _calls.c.offer_expires_at,
                        _calls.c.offer_to_all,
                        _calls.c.offer_tried,
                    ).where(_calls.c.offer_to.is_not(None))
                )
            ).all()
            if not held:
                return 0
            now = self._clock.now()
            takers = {t.actor: t for t in await self._takers(session, now)}
        moved = 0
        for row in held:
            holder = takers.get(row.offer_to)
            if holder is not None and holder.available:
                continue  # its timer ends it if nobody accepts
            if await self.desk.move_offer(int(row.id)):
                moved += 1
        self.moved += moved
        return moved

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        """Sweep whenever something changed, and when a board's grace runs out."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                await self.sweep()
            except Exception:
                log.exception("moving offers on failed; trying again shortly")
            now = self._clock.now()
            lapse = self.presence.next_lapse(now)
            until = now + _RECHECK if lapse is None else min(lapse, now + _RECHECK)
            await self._clock.sleep_until(until, self._wake)
