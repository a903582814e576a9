"""Calls and carers as the API shows them, read straight from the database.

Times are ISO 8601 in UTC (``2026-11-23T02:00:00.000Z``); travel times are minutes.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import (
    CONFIRMED_OUTCOMES,
    AssignmentState,
    CallState,
    CancelReason,
    Outcome,
    reason_needed,
)
from callcenter.domain.dispatch import CarerSnapshot, CarerState
from callcenter.domain.geo import Transport
from callcenter.domain.phones import PhoneKind
from callcenter.domain.scripts import (
    ACTION_TEXT,
    SCRIPTS,
    NextAction,
    ScriptAnswer,
    answered,
    recommend,
)
from callcenter.engine.district import Registry
from callcenter.engine.numbers import household_numbers
from callcenter.engine.offers import OperatorNow, offer_of
from callcenter.notify import links
from callcenter.store import models as m
from callcenter.web.contract import MAX_ID

# --- the answers' shapes (docs/api.md; checked on every answer, see contract.py) ---


class Shape(BaseModel):
    """An answer's shape: exactly these fields, no others."""

    model_config = ConfigDict(extra="forbid")


class Position(Shape):
    lat: float
    lon: float


class HouseholdRef(Shape):
    code: str
    address: str


class CarerOnCall(Shape):
    code: str
    name: str
    state: AssignmentState
    travel_min: float | None = Field(description="estimated travel time, minutes")


class Deadline(Shape):
    step: str = Field(description="the escalation step that waits")
    due_at: datetime
    carer: str | None = Field(description="the carer whose answer it waits on, if one")


class Reported(Shape):
    """A carer's "done" the desk has still to review."""

    by: str = Field(description="the carer, e.g. carer:C012")
    outcome: Outcome
    at: datetime


class OfferView(Shape):
    """The call offered to the operators on duty (docs/calls.md, "Offers")."""

    operator: str | None = Field(
        description="the operator it is offered to, e.g. operator:li.na; null when to_all"
    )
    offered_at: datetime
    expires_at: datetime | None = Field(description="when it goes to the next; null when to_all")
    to_all: bool = Field(description="every operator and the supervisors are asked")


class CallSummary(Shape):
    """A call as the list shows it."""

    id: int
    household: HouseholdRef | None = Field(
        description="none for a call to the centre's number from a number nobody registered"
    )
    call_type: CallType
    priority: int = Field(ge=1, le=3, description="1 is the most urgent")
    state: CallState
    presses: int
    owner: str | None = Field(description="the operator who owns it, e.g. operator:li.na")
    opened_at: datetime
    acknowledged_at: datetime | None
    closed_at: datetime | None
    outcome: Outcome | None
    cancel_reason: CancelReason | None
    reported: Reported | None = Field(
        description="what a carer reported when they said done on an emergency or fall no "
        "operator had owned (the call then awaits an operator's review); null otherwise"
    )
    alerts: list[str] = Field(description="escalation steps sounded and not yet satisfied")
    carers: list[CarerOnCall]
    next_deadline: Deadline | None
    version: int = Field(description="goes up with every change to the call")
    offer: OfferView | None = Field(
        None, description="whom the call is offered to while nobody has taken it; else null"
    )


class CallList(Shape):
    """The calls asked for: open ones most urgent first, then closed ones."""

    state: str
    calls: list[CallSummary]


class Resident(Shape):
    """A resident's record as the operator needs it on a call (docs/register.md)."""

    name: str
    birth_year: int | None
    birth_date: date | None
    sex: str = Field(description='"female", "male" or "" (not recorded)')
    mobility: str
    care_notes: str
    conditions: list[str]
    medicines: list[str]
    allergies: list[str]
    doctor: str
    clinic: str
    clinic_phone: str
    do_not_resuscitate: bool
    hospital: str = Field(description="the hospital they want to be taken to, if any")
    wishes: str = Field(description="advance wishes in words")
    speaks: str = Field(description="the language or dialect to speak to them in")
    hearing: str = Field(description='"good", "impaired", "none" or "" (not recorded)')
    sight: str = Field(description='"good", "impaired", "none" or "" (not recorded)')


class FamilyContactView(Shape):
    """A contact in the order to call them."""

    name: str
    relation: str
    phone: str
    phone_alt: str
    position: int
    holds_key: bool
    call_from: str | None = Field(description="HH:MM local; null with call_until: any time")
    call_until: str | None = Field(description="HH:MM local; earlier than call_from: overnight")


class PhoneView(Shape):
    """A number that reaches the household; the list is in the order to try them."""

    kind: PhoneKind = Field(description="unit: the base unit's own SIM; landline; mobile")
    number: str = Field(description="E.164, e.g. +8614712345678")
    label: str = Field(description="whose it is, e.g. the resident whose mobile it is; or empty")


class DeviceView(Shape):
    serial: str
    kind: str
    online: bool
    battery_pct: int | None
    last_seen_at: datetime | None


class HouseholdDetail(Shape):
    code: str
    address: str
    position: Position
    access_notes: str
    home_station: str
    backup_station: str
    residents: list[Resident]
    phones: list[PhoneView] = Field(description="the numbers that reach it, first to try first")
    family: list[FamilyContactView]
    devices: list[DeviceView]


class HistoryEntry(Shape):
    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class AssignmentView(Shape):
    carer: str
    name: str
    state: AssignmentState
    active: bool
    dispatched_at: datetime
    dispatched_by: str
    travel_min: float | None
    changed_at: datetime


class OutboxView(Shape):
    id: int
    channel: str
    recipient: str
    address: str
    body: str
    state: str
    attempts: int
    created_at: datetime
    done_at: datetime | None
    last_error: str


class Words(Shape):
    zh: str
    en: str


class ScriptQuestion(Shape):
    id: str
    kind: str = Field(description="ask: asked of the resident; check: the operator checks")
    text: Words
    answer: ScriptAnswer | None = Field(description="the latest answer, None until answered")


class ScriptAction(Shape):
    action: NextAction
    text: Words
    because: list[str] = Field(description="the questions whose answers raised it")


class ScriptView(Shape):
    """The call type's handling script with its answers (domain/scripts.py)."""

    questions: list[ScriptQuestion]
    recommendation: list[ScriptAction] = Field(description="next actions, most serious first")


class ClosingView(Shape):
    """What resolving this call asks for (docs/calls.md, "Closing a call")."""

    carer_at_door: bool = Field(description="a carer has reached the door")
    confirm: list[Outcome] = Field(description="outcomes the board confirms before sending")
    reason_needed: list[Outcome] = Field(description="outcomes that need a reason now")


class RecordingView(Shape):
    """A click-to-call bridge's recording, kept at Twilio until ``expires_at``."""

    sid: str
    url: str
    expires_at: datetime


class CallDetail(CallSummary):
    """The call as it now is: household, history, carers sent, deadlines, messages, its
    handling script and what closing it asks for."""

    household: HouseholdDetail | None  # type: ignore[assignment]
    history: list[HistoryEntry]
    assignments: list[AssignmentView]
    timers: list[Deadline]
    outbox: list[OutboxView]
    script: ScriptView
    closing: ClosingView
    recordings: list[RecordingView] = Field(
        default_factory=list,
        description="click-to-call recordings kept (voice.record), until they expire",
    )
    policy: dict[str, Any] = Field(
        default_factory=dict,
        description="the escalation policy the call opened with, kept whatever is edited "
        "since (docs/register.md, 'Escalation policies')",
    )


class DispatchOutcome(Shape):
    """What "send a carer" did (docs/api.md, "Dispatch's answer")."""

    sent: list[str] = Field(description="the carers paged, by code; empty when none was")
    nobody_free: bool = Field(
        description="a carer was wanted but nobody free on shift could go: the call now "
        "carries nobody_to_send and its next escalation step ran at once"
    )
    escalated: list[str] = Field(description="the escalation steps that ran at once because of it")


class Dispatched(CallDetail):
    """The call as it now is, and what the dispatch did."""

    result: DispatchOutcome


class CarerView(Shape):
    code: str
    name: str
    phone: str
    station: str
    role: str
    skills: list[str]
    transport: Transport
    state: CarerState
    call_id: int | None
    phone_problem: str | None = Field(description="why their phone cannot get texts, if so")
    position: Position


class CarerList(Shape):
    """Every active carer with state and last known position, by code."""

    carers: list[CarerView]


class CallFilter(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    ALL = "all"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def offer_view(row: Any) -> dict[str, Any] | None:
    """A call's ``offer`` as the API shows it (docs/api.md), from its offer columns."""
    offer = offer_of(row)
    if offer is None:
        return None
    return {
        "operator": offer.operator,
        "offered_at": iso(offer.offered_at),
        "expires_at": iso(offer.expires_at),
        "to_all": offer.to_all,
    }


def operators_view(operators: Sequence[OperatorNow]) -> list[dict[str, Any]]:
    """The operators on duty as the boards and GET /api/operators/duty show them:
    ``idle_since`` only while they are free."""
    return [
        {
            "actor": o.person.actor,
            "name": o.person.name,
            "role": o.person.role,
            "duty": o.person.duty.value,
            "since": iso(o.person.since),
            "idle_since": iso(o.state.idle_since) if o.state.free else None,
            "owned": o.state.owned,
            "offer": o.state.holding,
            "board": o.board,
        }
        for o in operators
    ]


def script_view(call_type: CallType, answers: Mapping[str, ScriptAnswer]) -> dict[str, object]:
    """The script with its answers and the recommendation, as the API shows it."""
    script = SCRIPTS[call_type]
    recommendation = recommend(call_type, answers)
    return {
        "questions": [
            {
                "id": q.id,
                "kind": q.kind.value,
                "text": q.text.as_dict(),
                "answer": answers[q.id].value if q.id in answers else None,
            }
            for q in script.questions
        ],
        "recommendation": [
            {
                "action": action.value,
                "text": ACTION_TEXT[action].as_dict(),
                "because": list(recommendation.why[action]),
            }
            for action in recommendation.actions
        ],
    }


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


# Calls with their household's code and address; a statement, not a connection, so it
# is safe to share.
# Outer: a call to the centre's number from a number nobody registered has no household.
_CALLS = select(m.Call, m.Household.code, m.Household.address).outerjoin(
    m.Household, m.Household.id == m.Call.household_id
)


async def list_calls(
    session: AsyncSession, which: CallFilter, *, closed_limit: int, household: str | None = None
) -> list[dict[str, Any]]:
    """Open calls most urgent first (priority, then presses, then age); closed calls
    after them, most recently closed first, at most ``closed_limit`` of them; only the
    household coded ``household``, when given."""
    rows: list[tuple[m.Call, str, str]] = []
    calls = _CALLS if household is None else _CALLS.where(m.Household.code == household)
    if which in (CallFilter.OPEN, CallFilter.ALL):
        query = calls.where(m.Call.closed_at.is_(None)).order_by(
            m.Call.priority, m.Call.presses.desc(), m.Call.opened_at, m.Call.id
        )
        rows += [(c, code, address) for c, code, address in (await session.execute(query)).all()]
    if which in (CallFilter.CLOSED, CallFilter.ALL):
        query = (
            calls.where(m.Call.closed_at.is_not(None))
            .order_by(m.Call.closed_at.desc(), m.Call.id.desc())
            .limit(closed_limit)
        )
        rows += [(c, code, address) for c, code, address in (await session.execute(query)).all()]
    return await _summaries(session, rows)


async def call_summaries(session: AsyncSession, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The list entries (as ``GET /api/calls`` shows them) of these calls, open or closed,
    in the order asked; ids that name no call are left out."""
    wanted = [i for i in ids if 0 < i <= MAX_ID]
    if not wanted:
        return []
    found = {
        call.id: (call, code, address)
        for call, code, address in (
            await session.execute(_CALLS.where(m.Call.id.in_(wanted)))
        ).all()
    }
    return await _summaries(session, [found[i] for i in wanted if i in found])


async def _summaries(
    session: AsyncSession, rows: Sequence[tuple[m.Call, str, str]]
) -> list[dict[str, Any]]:
    ids = [call.id for call, _, _ in rows]
    carers: dict[int, list[dict[str, Any]]] = defaultdict(list)
    deadlines: dict[int, dict[str, Any]] = {}
    if ids:
        assignments = await session.execute(
            select(m.CallAssignment, m.Carer.code, m.Carer.name)
            .join(m.Carer, m.Carer.id == m.CallAssignment.carer_id)
            .where(m.CallAssignment.call_id.in_(ids))
            .order_by(m.CallAssignment.call_id, m.CallAssignment.seq)
        )
        for a, code, name in assignments.all():
            carers[a.call_id].append(
                {
                    "code": code,
                    "name": name,
                    "state": a.state,
                    "travel_min": _minutes(a.travel_s),
                }
            )
        for timer in await _pending_timers(session, ids):
            deadlines.setdefault(timer["call_id"], timer)
    return [
        _summary(
            call,
            None if code is None else {"code": code, "address": address},
            carers.get(call.id, []),
            deadlines.get(call.id),
        )
        for call, code, address in rows
    ]


async def _pending_timers(session: AsyncSession, ids: list[int]) -> list[dict[str, Any]]:
    """Pending timers of these calls, earliest first."""
    carer = aliased(m.Carer)
    rows = await session.execute(
        select(m.Timer.call_id, m.Timer.step, m.Timer.due_at, carer.code)
        .outerjoin(carer, carer.id == m.Timer.carer_id)
        .where(m.Timer.call_id.in_(ids), m.Timer.state == m.TimerState.PENDING)
        .order_by(m.Timer.due_at, m.Timer.id)
    )
    return [
        {"call_id": call_id, "step": step, "due_at": iso(due_at), "carer": code}
        for call_id, step, due_at, code in rows.all()
    ]


def _summary(
    call: m.Call,
    household: dict[str, Any] | None,
    carers: list[dict[str, Any]],
    deadline: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": call.id,
        "household": household,
        "call_type": call.call_type,
        "priority": call.priority,
        "state": call.state,
        "presses": call.presses,
        "owner": call.owner,
        "opened_at": iso(call.opened_at),
        "acknowledged_at": iso(call.acknowledged_at),
        "closed_at": iso(call.closed_at),
        "outcome": call.outcome,
        "cancel_reason": call.cancel_reason,
        "reported": (
            {"by": call.reported_by, "outcome": call.reported_outcome, "at": iso(call.reported_at)}
            if call.reported_outcome
            else None
        ),
        "alerts": sorted(call.alerts),
        "carers": carers,
        "next_deadline": (
            {k: deadline[k] for k in ("step", "due_at", "carer")} if deadline else None
        ),
        "version": call.version,
        "offer": offer_view(call),
    }


async def household_of(session: AsyncSession, call_id: int) -> str | None:
    """The code of the household the call belongs to ("" for a call of no household);
    None when there is no such call."""
    if not 0 < call_id <= MAX_ID:
        return None
    found = (
        await session.execute(
            select(m.Call.id, m.Household.code)
            .outerjoin(m.Household, m.Household.id == m.Call.household_id)
            .where(m.Call.id == call_id)
        )
    ).one_or_none()
    return None if found is None else str(found.code or "")


async def carer_id(session: AsyncSession, code: str) -> int | None:
    """The id of the carer with this code, active or not; None when there is none."""
    found = await session.scalar(select(m.Carer.id).where(m.Carer.code == code))
    return None if found is None else int(found)


async def call_detail(
    session: AsyncSession, call_id: int
) -> tuple[dict[str, Any], int | None] | None:
    """Everything about one call (the summary, the household, the full history, every
    carer sent, pending deadlines and every message queued for it) and the id of its
    household, for the audit log."""
    if not 0 < call_id <= MAX_ID:
        return None
    row = (await session.execute(_CALLS.where(m.Call.id == call_id))).one_or_none()
    if row is None:
        return None
    call = row[0]
    detail = (await _summaries(session, [(call, row[1], row[2])]))[0]
    detail["household"] = (
        None if call.household_id is None else await _household(session, call.household_id)
    )
    history = await session.scalars(
        select(m.CallHistory).where(m.CallHistory.call_id == call_id).order_by(m.CallHistory.id)
    )
    detail["history"] = [
        {
            "at": iso(h.at),
            "actor": h.actor,
            "action": h.action,
            "from_state": h.from_state,
            "to_state": h.to_state,
            "detail": h.detail,
        }
        for h in history.all()
    ]
    assignments = await session.execute(
        select(m.CallAssignment, m.Carer.code, m.Carer.name)
        .join(m.Carer, m.Carer.id == m.CallAssignment.carer_id)
        .where(m.CallAssignment.call_id == call_id)
        .order_by(m.CallAssignment.seq)
    )
    detail["assignments"] = [
        {
            "carer": carer_code,
            "name": name,
            "state": a.state,
            "active": a.active,
            "dispatched_at": iso(a.dispatched_at),
            "dispatched_by": a.dispatched_by,
            "travel_min": _minutes(a.travel_s),
            "changed_at": iso(a.changed_at),
        }
        for a, carer_code, name in assignments.all()
    ]
    detail["timers"] = [
        {k: t[k] for k in ("step", "due_at", "carer")}
        for t in await _pending_timers(session, [call_id])
    ]
    outbox = await session.scalars(
        select(m.OutboxItem).where(m.OutboxItem.call_id == call_id).order_by(m.OutboxItem.id)
    )
    detail["outbox"] = [
        {
            "id": o.id,
            "channel": o.channel,
            "recipient": o.recipient,
            "address": o.address,
            # A page's link answers as the carer: operators see it masked.
            "body": links.masked(o.body),
            "state": o.state,
            "attempts": o.attempts,
            "created_at": iso(o.created_at),
            "done_at": iso(o.done_at),
            "last_error": links.masked(o.last_error),
        }
        for o in outbox.all()
    ]
    detail["script"], detail["closing"] = _handling(detail)
    detail["policy"] = call.policy
    recordings = await session.execute(
        select(m.VoiceBridge)
        .where(m.VoiceBridge.call_id == call_id, m.VoiceBridge.recording_sid.is_not(None))
        .order_by(m.VoiceBridge.id)
    )
    detail["recordings"] = [
        {"sid": b.recording_sid, "url": b.recording_url, "expires_at": iso(b.recording_expires_at)}
        for b in recordings.scalars()
    ]
    return detail, call.household_id


def _handling(detail: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The call's script with the answers in its history, and what closing it asks for."""
    call_type = CallType(detail["call_type"])
    answers = answered(
        [
            (str(h["detail"].get("question")), str(h["detail"].get("answer")))
            for h in detail["history"]
            if h["action"] == "script_answer"
        ]
    )
    at_door = any(
        a["state"] in (AssignmentState.ON_SCENE, AssignmentState.FINISHED)
        for a in detail["assignments"]
    )
    closing = {
        "carer_at_door": at_door,
        "confirm": [o.value for o in Outcome if o in CONFIRMED_OUTCOMES],
        "reason_needed": [o.value for o in Outcome if reason_needed(call_type, o, at_door)],
    }
    return script_view(call_type, answers), closing


async def _household(session: AsyncSession, household_id: int) -> dict[str, Any]:
    home, backup = aliased(m.Station), aliased(m.Station)
    h, home_code, backup_code = (
        await session.execute(
            select(m.Household, home.code, backup.code)
            .join(home, home.id == m.Household.home_station_id)
            .join(backup, backup.id == m.Household.backup_station_id)
            .where(m.Household.id == household_id)
        )
    ).one()
    residents = await session.scalars(
        select(m.Resident).where(m.Resident.household_id == household_id).order_by(m.Resident.id)
    )
    family = await session.scalars(
        select(m.FamilyContact)
        .where(m.FamilyContact.household_id == household_id)
        .order_by(m.FamilyContact.position)
    )
    devices = await session.scalars(
        select(m.Device)
        .where(m.Device.household_id == household_id, m.Device.retired_at.is_(None))
        .order_by(m.Device.id)
    )
    return {
        "code": h.code,
        "address": h.address,
        "position": {"lat": h.lat, "lon": h.lon},
        "access_notes": h.access_notes,
        "home_station": home_code,
        "backup_station": backup_code,
        "residents": [
            {
                "name": r.name,
                "birth_year": r.birth_year,
                "birth_date": r.birth_date.isoformat() if r.birth_date else None,
                "sex": r.sex,
                "mobility": r.mobility,
                "care_notes": r.care_notes,
                "conditions": list(r.conditions),
                "medicines": list(r.medicines),
                "allergies": list(r.allergies),
                "doctor": r.doctor,
                "clinic": r.clinic,
                "clinic_phone": r.clinic_phone,
                "do_not_resuscitate": r.do_not_resuscitate,
                "hospital": r.hospital,
                "wishes": r.wishes,
                "speaks": r.speaks,
                "hearing": r.hearing,
                "sight": r.sight,
            }
            for r in residents.all()
        ],
        "phones": [
            {"kind": n.kind.value, "number": n.number, "label": n.label}
            for n in await household_numbers(session, h.code)
        ],
        "family": [
            {
                "name": f.name,
                "relation": f.relation,
                "phone": f.phone,
                "phone_alt": f.phone_alt,
                "position": f.position,
                "holds_key": f.holds_key,
                "call_from": f.call_from.isoformat(timespec="minutes") if f.call_from else None,
                "call_until": f.call_until.isoformat(timespec="minutes") if f.call_until else None,
            }
            for f in family.all()
        ],
        "devices": [
            {
                "serial": d.serial,
                "kind": d.kind,
                "online": d.online,
                "battery_pct": d.battery_pct,
                "last_seen_at": iso(d.last_seen_at),
            }
            for d in devices.all()
        ],
    }


def carers_view(snapshots: Sequence[CarerSnapshot], registry: Registry) -> list[dict[str, Any]]:
    """Every active carer with state and last known position, by code."""
    return [
        {
            "code": c.code,
            "name": c.name,
            "phone": c.phone,
            "station": registry.stations[c.station_id].code,
            "role": c.role,
            "skills": sorted(c.skills),
            "transport": c.transport.value,
            "state": c.state.value,
            "call_id": c.call_id,
            "phone_problem": c.phone_problem or None,
            "position": {"lat": c.position.lat, "lon": c.position.lon},
        }
        for c in sorted(snapshots, key=lambda c: c.code)
    ]
