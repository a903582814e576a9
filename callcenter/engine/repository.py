"""Calls in the database: read a call with its carers, write what a decision changed.

Everything a decision produces (the call row, its history, its carers, timers armed and
cancelled, messages to send) is written by ``save`` inside the caller's transaction, so
either all of it happens or none of it does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    AlertDesk,
    ArmTimer,
    Assignment,
    AssignmentState,
    Call,
    CallState,
    CancelReason,
    CancelTimers,
    Decision,
    DeviceCommand,
    FamilyRound,
    Outcome,
    PlaceCall,
    SendSms,
    VoicePurpose,
)
from callcenter.domain.messages import MessageKind, render
from callcenter.domain.policy import Policy
from callcenter.engine.voice import VoiceScript
from callcenter.ingest.protocol import Channel, topic_for
from callcenter.notify import links
from callcenter.store import models as m

SMS = "sms"
VOICE = "voice"
DEVICE_COMMAND = "device_command"

# Writes go through the Core tables: the ORM's bulk machinery costs more per statement
# than the statement itself, and a call's change is a dozen small statements.
_calls = m.Base.metadata.tables["calls"]
_history = m.Base.metadata.tables["call_history"]
_assignments = m.Base.metadata.tables["call_assignments"]
_timers = m.Base.metadata.tables["timers"]
_outbox = m.Base.metadata.tables["outbox"]


# Reading a call is the commonest thing the server does: its statements are built once,
# since building a statement and its cache key costs SQLAlchemy more than SQLite spends
# running it, and they read rows rather than ORM objects, for the same reason.
_CALL = select(_calls).where(_calls.c.id == bindparam("call_id"))
_CALL_LOCKED = _CALL.with_for_update()
_CARERS_ON = (
    select(_assignments)
    .where(_assignments.c.call_id == bindparam("call_id"))
    .order_by(_assignments.c.seq)
)


# Asked of every device event: the household's open calls, most urgent first. A call
# awaiting review is left out: a carer has been and reported it done, so a new press is a
# new alarm, with carers paged and its own escalation, not a repeat on the old call.
_OPEN_CALLS = (
    select(_calls.c.id, _calls.c.call_type)
    .where(
        _calls.c.household_id == bindparam("household_id"),
        _calls.c.closed_at.is_(None),
        _calls.c.state != CallState.AWAITING_REVIEW.value,
    )
    .order_by(_calls.c.priority, _calls.c.id)
    .with_for_update()
)
# And a decision's writes: the values are given when each runs.
_INSERT_CALL = insert(_calls).returning(_calls.c.id)
_UPDATE_CALL = (
    update(_calls).where(_calls.c.id == bindparam("of_call")).values(version=_calls.c.version + 1)
)
_INSERT_HISTORY = insert(_history)
_INSERT_ASSIGNMENT = insert(_assignments)
_UPDATE_ASSIGNMENT = update(_assignments).where(
    _assignments.c.call_id == bindparam("of_call"), _assignments.c.seq == bindparam("seq_no")
)
_INSERT_TIMERS = insert(_timers)
_INSERT_OUTBOX = insert(_outbox)
_INSERT_OUTBOX_ROW = insert(_outbox).returning(_outbox.c.id)


# A desk transaction's history and timer rows wait in the session and go in together
# when its work is done (``defer_rows``, ``write_deferred``): a storm's transaction
# applies 25 presses, and two statements each for their history and their timers were
# 50 round trips to PostgreSQL where two do. Nothing in a desk transaction reads those
# rows back. The only statement that touches them, a cancel of a call's timers, writes
# what waits first; a new call's timers are never in the table yet, so cancelling them
# there needs no statement at all.
_DEFERRED = "repository.deferred_rows"


@dataclass
class _Deferred:
    history: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)


def defer_rows(session: AsyncSession) -> None:
    """Keep the history and timer rows ``save`` writes in this session until
    ``write_deferred``, which the session's owner must call before it commits."""
    session.info[_DEFERRED] = _Deferred()


async def write_deferred(session: AsyncSession) -> None:
    """Write the rows kept since ``defer_rows`` (in the order saved); nothing waits then."""
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if deferred is None:
        return
    history, timers = deferred.history, deferred.timers
    deferred.history, deferred.timers = [], []
    if history:
        await session.execute(_INSERT_HISTORY, history)
    if timers:
        await session.execute(_INSERT_TIMERS, timers)


async def open_calls(session: AsyncSession, household_id: int) -> list[tuple[int, CallType]]:
    """The household's open calls (id and type), most urgent first, locked for the rest
    of the transaction on PostgreSQL."""
    found = await session.execute(_OPEN_CALLS, {"household_id": household_id})
    return [(int(row.id), CallType(row.call_type)) for row in found]


# A due timer and its call, the call locked (the call's lock guards its timers): what
# firing the timer reads first, in one statement.
_TIMER_AND_CALL_LOCKED = (
    select(
        _timers.c.step.label("timer_step"),
        _timers.c.carer_id.label("timer_carer_id"),
        _timers.c.due_at.label("timer_due_at"),
        _calls,
    )
    .join(_calls, _calls.c.id == _timers.c.call_id)
    .where(_timers.c.id == bindparam("timer_id"))
    .with_for_update(of=_calls)
)


@dataclass(frozen=True)
class DueTimer:
    """A timer to fire, with its call's row read under the call's lock."""

    call_id: int
    step: str
    carer_id: int | None
    due_at: datetime
    call_row: Any


async def timer_with_call(session: AsyncSession, timer_id: int) -> DueTimer | None:
    """Timer ``timer_id`` and its call's row, the call locked for the rest of the
    transaction on PostgreSQL (SQLite has no row locks; there the write transaction
    itself is taken up front, see store/db.py); None when there is no such timer."""
    row = (await session.execute(_TIMER_AND_CALL_LOCKED, {"timer_id": timer_id})).one_or_none()
    if row is None:
        return None
    return DueTimer(row.id, row.timer_step, row.timer_carer_id, row.timer_due_at, row)


def to_domain(row: Any, assignments: Sequence[Any], codes: dict[int, str]) -> Call:
    """The domain call for a call row and its assignment rows (in dispatch order)."""
    return Call(
        id=row.id,
        household_id=row.household_id,
        type=CallType(row.call_type),
        priority=row.priority,
        opened_at=row.opened_at,
        policy=Policy.from_json(row.policy),
        presses=row.presses,
        last_press_at=row.last_press_at,
        press_noted_at=row.press_noted_at,
        owner=row.owner,
        acknowledged_at=row.acknowledged_at,
        assignments=tuple(
            Assignment(
                carer_id=a.carer_id,
                carer_code=codes.get(a.carer_id, f"#{a.carer_id}"),
                state=AssignmentState(a.state),
                dispatched_at=a.dispatched_at,
                dispatched_by=a.dispatched_by,
                travel_s=a.travel_s,
                changed_at=a.changed_at,
            )
            for a in sorted(assignments, key=lambda a: a.seq)
        ),
        fired_steps=frozenset(row.fired_steps),
        alerts=frozenset(row.alerts),
        closed_at=row.closed_at,
        outcome=Outcome(row.outcome) if row.outcome else None,
        cancel_reason=CancelReason(row.cancel_reason) if row.cancel_reason else None,
        reported_outcome=Outcome(row.reported_outcome) if row.reported_outcome else None,
        reported_by=row.reported_by,
        reported_at=row.reported_at,
        family_round=FamilyRound.from_json(row.family_round) if row.family_round else None,
    )


async def load(
    session: AsyncSession, call_id: int, codes: dict[int, str], *, lock: bool
) -> Call | None:
    """The call with its carers, or None when there is no such call. With ``lock`` the
    call's row is locked for the rest of the transaction (on PostgreSQL)."""
    where = {"call_id": call_id}
    row = (await session.execute(_CALL_LOCKED if lock else _CALL, where)).one_or_none()
    if row is None:
        return None
    return await with_carers(session, row, codes)


async def with_carers(session: AsyncSession, row: Any, codes: dict[int, str]) -> Call:
    """The call of a call row read (and locked) already, with its carers."""
    assignments = (await session.execute(_CARERS_ON, {"call_id": row.id})).all()
    return to_domain(row, assignments, codes)


@dataclass(frozen=True)
class ClaimedPage:
    """A dispatch page written already claimed for its first attempt (see ``save``)."""

    id: int
    call_id: int
    carer_id: int
    recipient: str
    address: str
    body: str


@dataclass(frozen=True)
class Saved:
    """What a saved decision asks of the world outside the database."""

    call_id: int
    alerts: tuple[AlertDesk, ...]
    outbox: int  # rows added to the outbox
    timers_armed: tuple[datetime, ...]
    pages: tuple[ClaimedPage, ...] = ()  # of those rows, the pages written claimed


def _call_values(call: Call, now: datetime) -> dict[str, Any]:
    return {
        "household_id": call.household_id,
        "call_type": call.type.value,
        "priority": call.priority,
        "state": call.state.value,
        "presses": call.presses,
        "opened_at": call.opened_at,
        "last_press_at": call.last_press_at,
        "press_noted_at": call.press_noted_at,
        "owner": call.owner,
        "acknowledged_at": call.acknowledged_at,
        "closed_at": call.closed_at,
        "outcome": call.outcome.value if call.outcome else None,
        "cancel_reason": call.cancel_reason.value if call.cancel_reason else None,
        "reported_outcome": call.reported_outcome.value if call.reported_outcome else None,
        "reported_by": call.reported_by,
        "reported_at": call.reported_at,
        "fired_steps": sorted(call.fired_steps),
        "alerts": sorted(call.alerts),
        "updated_at": now,
        "family_round": call.family_round.to_json() if call.family_round else None,
    }


async def insert_call(
    session: AsyncSession, call: Call, now: datetime, event_id: int | None
) -> int:
    """Insert a new call row and return its id (the decision is saved afterwards)."""
    values = _call_values(call, now) | {
        "policy": call.policy.to_json(),
        "event_id": event_id,
        "version": 0,
    }
    return int((await session.execute(_INSERT_CALL, values)).scalar_one())


async def save(
    session: AsyncSession,
    before: Call | None,
    decision: Decision,
    *,
    now: datetime,
    household_code: str,
    base_unit: str | None,
    topic_prefix: str,
    link_base: str = "",
    rings: bool = True,
    pages_claimed_until: datetime | None = None,
) -> Saved:
    """Write the decision's call, history, carers, timers and outbox rows. With a
    ``link_base`` (the server's public address) a dispatch page carries the carer's
    signed link to the call's carer page. Without ``rings`` (voice disabled), phone
    calls asked for are not written.

    With ``pages_claimed_until``, a dispatch page's row is written claimed for its first
    attempt, as the outbox relay would claim it (one attempt counted, begun now, tried
    again at ``pages_claimed_until`` if it was not settled by then), and returned in
    ``Saved.pages`` for the relay to send once the transaction commits. The claim's
    checks hold by construction here: the decision has just made the carer's
    assignment, and ranked only carers whose phone gets texts."""
    call = decision.call
    if before == call and not decision.history and not decision.effects:
        return Saved(call.id, (), 0, ())
    if before is not None:  # a new call's row was inserted with these very values
        await session.execute(_UPDATE_CALL, _call_values(call, now) | {"of_call": call.id})
    deferred: _Deferred | None = session.info.get(_DEFERRED)
    if decision.history:
        history = [
            {
                "call_id": call.id,
                "at": h.at,
                "actor": h.actor,
                "action": h.action,
                "from_state": h.from_state.value if h.from_state else None,
                "to_state": h.to_state.value,
                "detail": h.detail,
            }
            for h in decision.history
        ]
        if deferred is not None:
            deferred.history += history
        else:
            await session.execute(_INSERT_HISTORY, history)
    await _save_assignments(session, before, call)
    alerts: list[AlertDesk] = []
    timers: list[dict[str, Any]] = []
    outbox: list[dict[str, Any]] = []
    pages: list[ClaimedPage] = []
    link_key: bytes | None = None
    for effect in decision.effects:
        if isinstance(effect, ArmTimer):
            timers.append(
                {
                    "call_id": call.id,
                    "step": effect.step,
                    "carer_id": effect.carer_id,
                    "due_at": effect.due_at,
                    "state": m.TimerState.PENDING.value,
                }
            )
        elif isinstance(effect, CancelTimers):
            # Timers armed by this same decision are not in the table yet.
            timers = [
                t
                for t in timers
                if t["step"] not in effect.steps
                or (effect.carer_id is not None and t["carer_id"] != effect.carer_id)
            ]
            if before is None:
                continue  # a new call: none of its timers is in the table
            if deferred is not None:
                await write_deferred(session)  # this call's timers may be waiting
            query = update(_timers).where(
                _timers.c.call_id == call.id,
                _timers.c.state == m.TimerState.PENDING.value,
                _timers.c.step.in_(sorted(effect.steps)),
            )
            if effect.carer_id is not None:
                query = query.where(_timers.c.carer_id == effect.carer_id)
            await session.execute(query.values(state=m.TimerState.CANCELLED.value))
        elif isinstance(effect, SendSms):
            guard: dict[str, Any] = {}
            if effect.carer_id is not None:
                guard["carer_id"] = effect.carer_id
            if effect.unless is not None:
                guard["unless"] = effect.unless.value
            message = effect.message
            if message.kind is MessageKind.DISPATCH and effect.carer_id is not None and link_base:
                link_key = link_key or await links.link_key(session, now)
                url = links.link_url(link_base, link_key, call.id, effect.carer_id, now)
                message = replace(message, facts={**message.facts, "link": url})
            row = _outbox_row(
                call.id,
                SMS,
                effect.to.label,
                effect.to.phone,
                render(message, effect.to.language),
                guard,
                now,
            )
            if (
                pages_claimed_until is not None
                and message.kind is MessageKind.DISPATCH
                and effect.carer_id is not None
            ):
                claimed = row | {
                    "attempts": 1,
                    "sending_since": now,
                    "next_attempt_at": pages_claimed_until,
                }
                page_id = (await session.execute(_INSERT_OUTBOX_ROW, claimed)).scalar_one()
                to = (row["recipient"], row["address"], row["body"])
                pages.append(ClaimedPage(page_id, call.id, effect.carer_id, *to))
                continue
            outbox.append(row)
        elif isinstance(effect, PlaceCall):
            if rings:
                outbox.append(_voice_row(call.id, effect, now))
        elif isinstance(effect, DeviceCommand):
            if base_unit is None:
                continue  # a household without a base unit has nothing to prompt
            topic = topic_for(topic_prefix, household_code, base_unit, Channel.COMMAND)
            body = json.dumps({"command": effect.command, "call": call.id})
            outbox.append(
                _outbox_row(call.id, DEVICE_COMMAND, f"device:{base_unit}", topic, body, {}, now)
            )
        elif isinstance(effect, AlertDesk):
            alerts.append(effect)
    if timers and deferred is not None:
        deferred.timers += timers
    elif timers:
        await session.execute(_INSERT_TIMERS, timers)
    if outbox:
        await session.execute(_INSERT_OUTBOX, outbox)
    return Saved(
        call.id,
        tuple(alerts),
        len(outbox) + len(pages),
        tuple(t["due_at"] for t in timers),
        tuple(pages),
    )


def _voice_row(call_id: int, effect: PlaceCall, now: datetime) -> dict[str, Any]:
    """The outbox row of a phone call to place. A carer rung about their page is rung
    only while still paged: one who accepted or declined meanwhile is not."""
    guard: dict[str, Any] = {}
    if effect.carer_id is not None:
        guard["carer_id"] = effect.carer_id
        if effect.purpose is VoicePurpose.PAGE:
            guard["assignment"] = AssignmentState.DISPATCHED.value
    if effect.unless is not None:
        guard["unless"] = effect.unless.value
    language = effect.to.language
    script = VoiceScript(effect.purpose, language, render(effect.message, language))
    return _outbox_row(call_id, VOICE, effect.to.label, effect.to.phone, script.body(), guard, now)


def _outbox_row(
    call_id: int,
    channel: str,
    recipient: str,
    address: str,
    body: str,
    guard: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "channel": channel,
        "recipient": recipient,
        "address": address,
        "body": body,
        "guard": guard,
        "state": m.OutboxState.PENDING.value,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "last_error": "",
    }


async def _save_assignments(session: AsyncSession, before: Call | None, call: Call) -> None:
    old = before.assignments if before else ()
    for seq, assignment in enumerate(call.assignments):
        values = {
            "state": assignment.state.value,
            "active": assignment.active,
            "changed_at": assignment.changed_at,
        }
        if seq < len(old):
            if old[seq] != assignment:
                await session.execute(
                    _UPDATE_ASSIGNMENT, values | {"of_call": call.id, "seq_no": seq}
                )
            continue
        await session.execute(
            _INSERT_ASSIGNMENT,
            values
            | {
                "call_id": call.id,
                "carer_id": assignment.carer_id,
                "seq": seq,
                "dispatched_at": assignment.dispatched_at,
                "dispatched_by": assignment.dispatched_by,
                "travel_s": assignment.travel_s,
            },
        )


def carer_code(recipient: str) -> str | None:
    """The carer an outbox row is for ("carer:C012": "C012"); None for anyone else."""
    kind, _, code = recipient.partition(":")
    return code if kind == "carer" and code else None


@dataclass(frozen=True)
class Delivery:
    """A sent message's row as a delivery report found it, and whether the report moved it."""

    outbox_id: int
    call_id: int | None
    guard: dict[str, Any]
    recipient: str  # e.g. "carer:C012", "family:7:1"
    address: str  # the phone number
    household: str  # the call's household code, "" without a call
    before: str | None  # the delivery status it had
    moved: bool


async def note_delivery(
    session: AsyncSession,
    provider_ref: str,
    status: str,
    *,
    error: str | None,
    not_over: frozenset[str],
) -> list[Delivery]:
    """Set the delivery status of the rows sent as ``provider_ref`` (one, or several
    bundled into one text) to ``status`` (and ``last_error`` to ``error`` if given),
    except where they already have one of ``not_over``; [] when no row has that reference."""
    found = (
        await session.execute(
            select(
                m.OutboxItem.id,
                m.OutboxItem.call_id,
                m.OutboxItem.guard,
                m.OutboxItem.recipient,
                m.OutboxItem.address,
                m.OutboxItem.delivery,
            )
            .where(m.OutboxItem.provider_ref == provider_ref)
            .order_by(m.OutboxItem.id)
        )
    ).all()
    values: dict[str, Any] = {"delivery": status}
    if error is not None:
        values["last_error"] = error
    noted = []
    for outbox_id, call_id, guard, recipient, address, before in found:
        # Conditional, so two reports racing each other can only move the row forward.
        moved = await session.execute(
            update(m.OutboxItem)
            .where(
                m.OutboxItem.id == outbox_id,
                m.OutboxItem.delivery.is_(None) | m.OutboxItem.delivery.not_in(not_over),
            )
            .values(values)
        )
        household = ""
        if call_id is not None:
            household = (
                await session.scalar(
                    select(m.Household.code)
                    .join(m.Call, m.Call.household_id == m.Household.id)
                    .where(m.Call.id == call_id)
                )
            ) or ""
        noted.append(
            Delivery(
                outbox_id,
                call_id,
                dict(guard or {}),
                recipient,
                address,
                household,
                before,
                moved.rowcount == 1,  # type: ignore[attr-defined]
            )
        )
    return noted
