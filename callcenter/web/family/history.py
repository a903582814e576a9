"""What a family sees of its households and their calls: the queries, and the shapes of
the answers (one call as a family sees it, where an open call stands now).

Every lookup is narrowed to the signed-in phone's own households: whatever is not one of
them is the same 404, whether or not it exists. The response times come from
domain/response_times.py, as the board's and the reports' do. The routes that call this,
and audit each read, are in routes.py; see docs/family.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import AssignmentState, CallState
from callcenter.domain.response_times import ACCEPTED_OR_LATER, ON_SCENE, first_at, seconds_after
from callcenter.store import models as m
from callcenter.web.contract import MAX_ID, whole_number
from callcenter.web.errors import not_found
from callcenter.web.family.signin import FamilyMember
from callcenter.web.views import Shape, iso


class FamilyHousehold(Shape):
    code: str
    address: str
    residents: list[str]
    open_calls: int


class FamilyHouseholds(Shape):
    """The households this phone is a contact of."""

    households: list[FamilyHousehold]


class ResponseTimes(Shape):
    to_acknowledge_s: int | None
    to_carer_accepted_s: int | None
    to_on_scene_s: int | None


class LiveStage(Shape):
    stage: str = Field(
        description="raised, operator_handling, carer_asked, on_the_way, on_scene, "
        "being_reviewed (the carer has been; the desk checks before the call ends)"
    )
    carer: str | None
    eta_min: int | None


class FamilyCall(Shape):
    """One call as a family sees it."""

    id: int
    type: str
    state: str
    raised_at: datetime
    presses: int
    answered_by: str | None
    acknowledged_at: datetime | None
    carer: str | None
    accepted_at: datetime | None
    on_scene_at: datetime | None
    closed_at: datetime | None
    outcome: str | None
    response: ResponseTimes
    live: LiveStage | None


class FamilyCalls(Shape):
    """Every call of the household, newest first."""

    household: str
    calls: list[FamilyCall]


class Step(Shape):
    at: datetime
    state: str | None


class FamilyCallSteps(FamilyCall):
    """One call with its steps in order."""

    steps: list[Step]


async def households_of(session: AsyncSession, phone: str) -> list[m.Household]:
    """The households this phone is a contact of, allowed on the portal, by code (a
    signed-in contact taken off the portal sees nothing more from the next request)."""
    return list(
        (
            await session.scalars(
                select(m.Household)
                .join(m.FamilyContact, m.FamilyContact.household_id == m.Household.id)
                .where(m.FamilyContact.phone == phone, m.FamilyContact.portal.is_(True))
                .order_by(m.Household.code)
                .distinct()
            )
        ).all()
    )


async def own_household(session: AsyncSession, member: FamilyMember, code: str) -> m.Household:
    """The household coded ``code`` if this phone is its contact; otherwise 404 with the
    same words whether or not it exists."""
    found = None
    if len(code) <= 32:
        found = await session.scalar(
            select(m.Household)
            .join(m.FamilyContact, m.FamilyContact.household_id == m.Household.id)
            .where(
                m.Household.code == code,
                m.FamilyContact.phone == member.phone,
                m.FamilyContact.portal.is_(True),
            )
            .limit(1)
        )
    if found is None:
        raise not_found(f"您没有编号为 {code[:32]} 的家庭 / None of your households is {code[:32]}")
    return found


async def household_views(session: AsyncSession, homes: Sequence[m.Household]) -> list[Any]:
    """``homes`` as a family sees them: code, address, residents' names, open calls."""
    residents: dict[int, list[str]] = defaultdict(list)
    for resident in await session.scalars(
        select(m.Resident)
        .where(m.Resident.household_id.in_([h.id for h in homes]))
        .order_by(m.Resident.id)
    ):
        residents[resident.household_id].append(resident.name)
    open_calls = dict(
        (
            await session.execute(
                select(m.Call.household_id, func.count())
                .where(m.Call.household_id.in_([h.id for h in homes]), m.Call.closed_at.is_(None))
                .group_by(m.Call.household_id)
            )
        ).all()
    )
    return [
        {
            "code": h.code,
            "address": h.address,
            "residents": residents[h.id],
            "open_calls": int(open_calls.get(h.id, 0)),
        }
        for h in homes
    ]


@dataclass(frozen=True)
class _Sent:
    """A carer sent to a call, as the family sees them (no phone, no code)."""

    name: str
    state: str
    active: bool
    dispatched_at: datetime
    changed_at: datetime
    travel_s: float | None


_ARRIVED = {AssignmentState.ON_SCENE.value, AssignmentState.FINISHED.value}
_COMING = {AssignmentState.ACCEPTED.value, AssignmentState.ON_THE_WAY.value}


def _seconds(start: datetime, end: datetime | None) -> int | None:
    after = seconds_after(start, end)
    return None if after is None else round(after)


def _first(
    history: Sequence[m.CallHistory], states: Collection[str], after: datetime
) -> datetime | None:
    """When the call first got as far as one of ``states``: a family measures the call's
    own state (with two carers needed, it is accepted when both have)."""
    return first_at(((h.to_state, h.at) for h in history), states, after=after)


def family_view(
    call: m.Call,
    history: Sequence[m.CallHistory],
    sent: Sequence[_Sent],
    operators: dict[str, str],
    now: datetime,
) -> dict[str, Any]:
    """One call as a family sees it: when it was raised, who answered, which carer came
    and when, the outcome, the response times, and while it is open where things stand."""
    accepted_at = _first(history, ACCEPTED_OR_LATER, call.opened_at)
    on_scene_at = _first(history, {ON_SCENE}, call.opened_at)
    came = [s for s in sent if s.state in _ARRIVED]
    coming = next((s for s in sent if s.active and s.state in _COMING), None)
    asked = next((s for s in sent if s.active), None)
    carer = came[-1] if came else coming
    owner = call.owner or ""
    answered_by = operators.get(owner.split(":", 1)[-1]) if owner.startswith("operator:") else None
    view: dict[str, Any] = {
        "id": call.id,
        "type": call.call_type,
        "state": call.state,
        "raised_at": iso(call.opened_at),
        "presses": call.presses,
        "answered_by": answered_by,
        "acknowledged_at": iso(call.acknowledged_at),
        "carer": carer.name if carer is not None else None,
        "accepted_at": iso(accepted_at),
        "on_scene_at": iso(on_scene_at),
        "closed_at": iso(call.closed_at),
        "outcome": call.outcome or call.cancel_reason,
        "response": {
            "to_acknowledge_s": _seconds(call.opened_at, call.acknowledged_at),
            "to_carer_accepted_s": _seconds(call.opened_at, accepted_at),
            "to_on_scene_s": _seconds(call.opened_at, on_scene_at),
        },
        "live": None,
    }
    if call.closed_at is None:
        view["live"] = _live(call, history, coming, asked, came, now)
    return view


def _live(
    call: m.Call,
    history: Sequence[m.CallHistory],
    coming: _Sent | None,
    asked: _Sent | None,
    came: Sequence[_Sent],
    now: datetime,
) -> dict[str, Any]:
    """Where an open call stands, for the live line ("carer 王 is on the way, about 6 min")."""
    if came and came[-1].active:
        return {"stage": "on_scene", "carer": came[-1].name, "eta_min": None}
    if call.state == CallState.AWAITING_REVIEW.value:
        # The carer has been and reported; the call is still being handled until the
        # desk has reviewed it.
        carer = came[-1].name if came else None
        return {"stage": "being_reviewed", "carer": carer, "eta_min": None}
    if coming is not None:
        # The estimate counts from when this carer accepted (or set off, if that is all
        # we heard), falling back to the page.
        started = (
            _first(history, ACCEPTED_OR_LATER, coming.dispatched_at)
            or coming.changed_at
            or coming.dispatched_at
        )
        eta = None
        if coming.travel_s is not None:
            left = coming.travel_s - (now - started).total_seconds()
            eta = max(1, math.ceil(left / 60))
        return {"stage": "on_the_way", "carer": coming.name, "eta_min": eta}
    if asked is not None:
        return {"stage": "carer_asked", "carer": asked.name, "eta_min": None}
    if call.acknowledged_at is not None:
        return {"stage": "operator_handling", "carer": None, "eta_min": None}
    return {"stage": "raised", "carer": None, "eta_min": None}


async def _views(
    session: AsyncSession, calls: Sequence[m.Call], now: datetime
) -> list[dict[str, Any]]:
    ids = [c.id for c in calls]
    history: dict[int, list[m.CallHistory]] = defaultdict(list)
    for h in await session.scalars(
        select(m.CallHistory).where(m.CallHistory.call_id.in_(ids)).order_by(m.CallHistory.id)
    ):
        history[h.call_id].append(h)
    sent: dict[int, list[_Sent]] = defaultdict(list)
    for a, name in await session.execute(
        select(m.CallAssignment, m.Carer.name)
        .join(m.Carer, m.Carer.id == m.CallAssignment.carer_id)
        .where(m.CallAssignment.call_id.in_(ids))
        .order_by(m.CallAssignment.seq)
    ):
        sent[a.call_id].append(
            _Sent(name, a.state, a.active, a.dispatched_at, a.changed_at, a.travel_s)
        )
    usernames = {
        c.owner.split(":", 1)[1] for c in calls if c.owner and c.owner.startswith("operator:")
    }
    operators = dict(
        (
            await session.execute(
                select(m.Operator.username, m.Operator.name).where(
                    m.Operator.username.in_(usernames)
                )
            )
        ).all()
    )
    return [family_view(c, history[c.id], sent[c.id], operators, now) for c in calls]


async def calls_of(session: AsyncSession, home: m.Household, now: datetime) -> list[dict[str, Any]]:
    """Every call of ``home`` as a family sees it, newest first."""
    calls = (
        await session.scalars(
            select(m.Call)
            .where(m.Call.household_id == home.id)
            .order_by(m.Call.opened_at.desc(), m.Call.id.desc())
        )
    ).all()
    return await _views(session, calls, now)


async def call_of(
    session: AsyncSession, home: m.Household, raw_id: str, now: datetime
) -> dict[str, Any]:
    """Call ``raw_id`` of ``home`` as a family sees it, with its steps in order; 404 for
    anything that is not one of this household's calls."""
    call = None
    call_id = whole_number(raw_id)
    if call_id is not None and 0 < call_id <= MAX_ID:
        call = await session.scalar(
            select(m.Call).where(m.Call.id == call_id, m.Call.household_id == home.id)
        )
    if call is None:
        shown = raw_id[:20]
        raise not_found(f"{home.code} 没有编号为 {shown} 的呼叫 / {home.code} has no call {shown}")
    (view,) = await _views(session, [call], now)
    steps = await session.scalars(
        select(m.CallHistory).where(m.CallHistory.call_id == call.id).order_by(m.CallHistory.id)
    )
    # State changes only: the desk's own notes are not for the family.
    view["steps"] = [
        {"at": iso(h.at), "state": h.to_state}
        for h in steps
        if h.from_state != h.to_state or h.from_state is None
    ]
    return view
