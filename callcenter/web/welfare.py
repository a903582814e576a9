"""The welfare-call routes: the week's list for operators, outcomes, and the missed ones
for supervisors (docs/welfare.md).

A list names many households at once, so each read of it writes one audit row
(``read_welfare_list``); recording an outcome writes one row for its household.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.engine.voice import NOT_PICKED_UP
from callcenter.engine.welfare import (
    WEEK,
    WelfareCallDoneError,
    WelfareCallNotFoundError,
    WelfareList,
    WelfareOutcome,
    age_in_week,
    week_began,
    week_start,
)
from callcenter.store import models as m
from callcenter.store.db import write_locked
from callcenter.web import audit
from callcenter.web.bodies import Note, _Body, read_body
from callcenter.web.contract import (
    DAY_WORDS,
    MAX_ID,
    Day,
    Id,
    Parameters,
    contract,
    path_of,
    query_of,
    require_role,
)
from callcenter.web.errors import ApiError, not_found
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, CONFIG, DATABASE, OPERATOR
from callcenter.web.views import HouseholdRef, Shape, iso

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock
    from callcenter.config import Config

routes = web.RouteTableDef()

_STATES = [state.value for state in m.WelfareState]


class WelfareBody(_Body):
    outcome: WelfareOutcome = Field(description="what the call found")
    note: Note = ""


class WelfareQuery(Parameters):
    week: Day | None = Field(None, description=f"any day of the week, {DAY_WORDS}")
    state: m.WelfareState | None = Field(None, description="only calls in this state")


class WelfarePath(Parameters):
    welfare_id: Id


class WelfareResident(Shape):
    id: int
    name: str
    birth_year: int | None


class WelfareContact(Shape):
    name: str
    relation: str
    phone: str
    language: str


class WelfareRingView(Shape):
    """A welfare call's last ring: which try, how it ended, and when the next is due."""

    tries: int
    result: str | None = Field(
        description="answered, no_answer, operator_missed (your phone was not picked up), "
        "or null while it goes on"
    )
    next_at: datetime | None = Field(description="when a retry rings again; null if none")


class WelfareCallView(Shape):
    """The welfare call as it now is."""

    id: int
    week_start: date
    resident: WelfareResident
    age: int | None
    household: HouseholdRef
    contacts: list[WelfareContact]
    state: m.WelfareState
    outcome: WelfareOutcome | None
    note: str
    done_by: str | None
    done_at: datetime | None
    late: bool = Field(description="recorded after its week ended")
    ring: WelfareRingView | None = Field(
        None, description="its last ring through the bridge (docs/voice.md); null: never rung"
    )


class WelfareCalls(Shape):
    """A week's welfare calls (or every missed one), with counts by state."""

    week_start: date | None
    this_week: date
    min_age: int
    counts: dict[str, int]
    calls: list[WelfareCallView]
    missed_total: int | None = Field(None, description="supervisors only: missed calls, all weeks")


def welfare_list(config: Config, engine: AsyncEngine, clock: Clock) -> WelfareList:
    """The welfare-call list as the server's configuration defines it."""
    return WelfareList(
        engine,
        clock,
        zone=ZoneInfo(config.district.timezone),
        min_age=config.welfare.min_age,
    )


def _rows_query() -> Select[m.WelfareCall, m.Resident, m.Household]:
    return (
        select(m.WelfareCall, m.Resident, m.Household)
        .join(m.Resident, m.Resident.id == m.WelfareCall.resident_id)
        .join(m.Household, m.Household.id == m.WelfareCall.household_id)
        .order_by(m.WelfareCall.week_start.desc(), m.Household.code, m.Resident.id)
    )


async def _rows(
    session: AsyncSession,
    query: Select[m.WelfareCall, m.Resident, m.Household],
    zone: ZoneInfo,
) -> list[dict[str, Any]]:
    found = (await session.execute(query)).all()
    contacts: dict[int, list[dict[str, Any]]] = defaultdict(list)
    household_ids = {household.id for _, _, household in found}
    if household_ids:
        for contact in await session.scalars(
            select(m.FamilyContact)
            .where(m.FamilyContact.household_id.in_(household_ids))
            .order_by(m.FamilyContact.household_id, m.FamilyContact.position)
        ):
            contacts[contact.household_id].append(
                {
                    "name": contact.name,
                    "relation": contact.relation,
                    "phone": contact.phone,
                    "language": contact.language,
                }
            )
    rings = await _rings(session, [call.id for call, _, _ in found])
    return [
        _row(call, resident, household, contacts[household.id], zone) | {"ring": rings.get(call.id)}
        for call, resident, household in found
    ]


async def _rings(session: AsyncSession, welfare_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The last ring of each of these welfare calls that was rung (docs/voice.md)."""
    if not welfare_ids:
        return {}
    rings: dict[int, dict[str, Any]] = {}
    found = await session.execute(
        select(
            m.VoiceBridge, m.OutboxItem.state, m.OutboxItem.next_attempt_at, m.OutboxItem.delivery
        )
        .join(m.OutboxItem, m.OutboxItem.id == m.VoiceBridge.outbox_id)
        .where(m.VoiceBridge.welfare_id.in_(welfare_ids))
        .order_by(m.VoiceBridge.id)
    )
    for bridge, state, next_at, delivery in found:
        waiting = state == m.OutboxState.PENDING and bridge.result is None
        # The operator's own phone not picked up: nobody was dialled.
        missed = bridge.result is None and delivery in NOT_PICKED_UP
        rings[int(bridge.welfare_id or 0)] = {
            "tries": bridge.try_number,
            "result": "operator_missed" if missed else bridge.result,
            "next_at": iso(next_at) if waiting and bridge.try_number > 1 else None,
        }
    return rings


def _row(
    call: m.WelfareCall,
    resident: m.Resident,
    household: m.Household,
    contacts: list[dict[str, Any]],
    zone: ZoneInfo,
) -> dict[str, Any]:
    week_ended = week_began(call.week_start + WEEK, zone)
    return {
        "id": call.id,
        "week_start": call.week_start.isoformat(),
        "resident": {"id": resident.id, "name": resident.name, "birth_year": resident.birth_year},
        "age": age_in_week(resident.birth_year, call.week_start),
        "household": {"code": household.code, "address": household.address},
        "contacts": contacts,
        "state": call.state,
        "outcome": call.outcome,
        "note": call.note,
        "done_by": call.done_by,
        "done_at": iso(call.done_at),
        "late": call.done_at is not None and call.done_at >= week_ended,
    }


def already_done(error: WelfareCallDoneError) -> ApiError:
    """409: the welfare call's outcome is recorded already, naming by whom and when."""
    return ApiError(
        409,
        "already_done",
        f"{error}; it needs no second call",
        done_by=error.done_by,
        done_at=iso(error.done_at),
    )


@routes.get("/api/welfare")
@contract(query=WelfareQuery, answers={200: WelfareCalls}, tag="welfare")
async def list_welfare_calls(request: web.Request) -> web.Response:
    """A week's welfare calls (``?week=`` any day of it, default this week; ``?state=``),
    made first if this week's list is not complete. ``?state=missed`` without a week is
    every missed call, for supervisors."""
    operator = request[OPERATOR]
    asked = query_of(request, WelfareQuery)
    state = asked.state
    every_week = state is m.WelfareState.MISSED and asked.week is None
    if every_week:
        operator = require_role(request, m.OperatorRole.SUPERVISOR)
    engine = request.app[DATABASE]
    calls = welfare_list(request.app[CONFIG], engine, request.app[CLOCK])
    this_week = calls.this_week()
    week = None if every_week else week_start(asked.week or this_week)
    await calls.bring_up_to_date()
    query = _rows_query()
    if week is not None:
        query = query.where(m.WelfareCall.week_start == week)
    if state is not None:
        query = query.where(m.WelfareCall.state == state)
    counts_query = select(m.WelfareCall.state, func.count()).group_by(m.WelfareCall.state)
    if week is not None:
        counts_query = counts_query.where(m.WelfareCall.week_start == week)
    async with AsyncSession(write_locked(engine)) as session, session.begin():
        rows = await _rows(session, query, calls.zone)
        counts = {state: 0 for state in _STATES}
        counts.update(
            {str(name): int(n) for name, n in (await session.execute(counts_query)).all()}
        )
        reply: dict[str, Any] = {
            "week_start": None if week is None else week.isoformat(),
            "this_week": this_week.isoformat(),
            "min_age": calls.min_age,
            "counts": counts,
            "calls": rows,
        }
        if operator.may(m.OperatorRole.SUPERVISOR):
            reply["missed_total"] = await session.scalar(
                select(func.count()).where(m.WelfareCall.state == m.WelfareState.MISSED)
            )
        await audit.record_read(
            session,
            request,
            actor=str(operator.actor),
            household_id=None,
            action="read_welfare_list",
            detail={
                "week": reply["week_start"],
                "state": None if state is None else state.value,
                "rows": len(rows),
                "households": sorted({row["household"]["code"] for row in rows}),
            },
        )
    return json_reply(reply)


@routes.post("/api/welfare/{welfare_id}")
@contract(
    path=WelfarePath,
    body=WelfareBody,
    answers={
        200: WelfareCallView,
        404: "no such welfare call",
        409: "already_done: it is recorded already; done_by and done_at say by whom",
    },
    tag="welfare",
)
async def record_welfare_call(request: web.Request) -> web.Response:
    """Record what a welfare call found; 409 naming who did if it is already recorded.
    A missed call may still be recorded afterwards; the reply says it was late."""
    operator = request[OPERATOR]
    welfare_id = path_of(request, WelfarePath).welfare_id
    if welfare_id > MAX_ID:  # past BIGINT: no row has it, and the database would refuse it
        raise not_found(f"there is no welfare call {welfare_id}")
    body = await read_body(request, WelfareBody)
    engine = request.app[DATABASE]
    calls = welfare_list(request.app[CONFIG], engine, request.app[CLOCK])
    actor = str(operator.actor)
    try:
        recorded = await calls.record(welfare_id, body.outcome, body.note, actor)
    except WelfareCallNotFoundError as error:
        raise not_found(str(error)) from None
    except WelfareCallDoneError as error:
        raise already_done(error) from None
    async with AsyncSession(write_locked(engine)) as session, session.begin():
        rows = await _rows(session, _rows_query().where(m.WelfareCall.id == welfare_id), calls.zone)
        await audit.record_read(
            session,
            request,
            actor=actor,
            household_id=recorded.household_id,
            action="record_welfare_call",
            detail={"welfare_id": welfare_id, "outcome": body.outcome.value, "late": recorded.late},
        )
    return json_reply(rows[0])
