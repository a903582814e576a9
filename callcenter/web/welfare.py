"""The welfare-call routes: the week's list for operators, outcomes, and the missed ones
for supervisors (docs/welfare.md).

A list names many households at once, so each read of it writes one audit row
(``read_welfare_list``); recording an outcome writes one row for its household.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

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
from callcenter.web import audit, views
from callcenter.web.auth import require_role
from callcenter.web.bodies import Note, _Body, read_body
from callcenter.web.errors import ApiError, bad_request, not_found
from callcenter.web.replies import json_reply
from callcenter.web.state import SERVER
from callcenter.web.views import iso

if TYPE_CHECKING:
    from callcenter.app import Running

routes = web.RouteTableDef()

_STATES = [state.value for state in m.WelfareState]


class WelfareBody(_Body):
    outcome: WelfareOutcome = Field(description="what the call found")
    note: Note = ""


def welfare_list(server: Running) -> WelfareList:
    """The welfare-call list as the server's configuration defines it."""
    config = server.config
    return WelfareList(
        server.engine,
        server.clock,
        zone=ZoneInfo(config.district.timezone),
        min_age=config.welfare.min_age,
    )


def _week(raw: str | None, default: date) -> date:
    if raw is None:
        return default
    day = views.written_day(raw)
    if day is None:
        raise bad_request(
            f"week must be {views.DAY_RULE} (any day of the week), e.g. 2026-11-23; "
            f"not {raw[:40]!r}",
            field="week",
        )
    return week_start(day)


def _state(raw: str | None) -> m.WelfareState | None:
    if raw is None:
        return None
    if raw not in _STATES:
        raise bad_request(
            f"state must be one of: {', '.join(_STATES)}", field="state", allowed=_STATES
        )
    return m.WelfareState(raw)


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
    return [
        _row(call, resident, household, contacts[household.id], zone)
        for call, resident, household in found
    ]


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


@routes.get("/api/welfare")
async def list_welfare_calls(request: web.Request) -> web.Response:
    """A week's welfare calls (``?week=`` any day of it, default this week; ``?state=``),
    made first if this week's list is not complete. ``?state=missed`` without a week is
    every missed call, for supervisors."""
    operator = require_role(request, m.OperatorRole.OPERATOR)
    state = _state(request.query.get("state"))
    every_week = state is m.WelfareState.MISSED and "week" not in request.query
    if every_week:
        operator = require_role(request, m.OperatorRole.SUPERVISOR)
    server = request.app[SERVER]
    calls = welfare_list(server)
    this_week = calls.this_week()
    week = None if every_week else _week(request.query.get("week"), this_week)
    await calls.bring_up_to_date()
    query = _rows_query()
    if week is not None:
        query = query.where(m.WelfareCall.week_start == week)
    if state is not None:
        query = query.where(m.WelfareCall.state == state)
    counts_query = select(m.WelfareCall.state, func.count()).group_by(m.WelfareCall.state)
    if week is not None:
        counts_query = counts_query.where(m.WelfareCall.week_start == week)
    async with AsyncSession(write_locked(server.engine)) as session, session.begin():
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


def _welfare_id(request: web.Request) -> int:
    raw = request.match_info["welfare_id"]
    welfare_id = views.whole_number(raw)
    if welfare_id is None:
        raise bad_request(f"a welfare call id is a whole number, not {raw[:40]!r}")
    if not 0 < welfare_id <= views.MAX_ID:  # past what the database holds: none has it
        raise not_found(f"there is no welfare call {raw[:40]}")
    return welfare_id


@routes.post("/api/welfare/{welfare_id}")
async def record_welfare_call(request: web.Request) -> web.Response:
    """Record what a welfare call found; 409 naming who did if it is already recorded.
    A missed call may still be recorded afterwards; the reply says it was late."""
    operator = require_role(request, m.OperatorRole.OPERATOR)
    welfare_id = _welfare_id(request)
    body = await read_body(request, WelfareBody)
    server = request.app[SERVER]
    calls = welfare_list(server)
    actor = str(operator.actor)
    try:
        recorded = await calls.record(welfare_id, body.outcome, body.note, actor)
    except WelfareCallNotFoundError as error:
        raise not_found(str(error)) from None
    except WelfareCallDoneError as error:
        raise ApiError(
            409,
            "already_done",
            f"{error}; it needs no second call",
            done_by=error.done_by,
            done_at=iso(error.done_at),
        ) from None
    async with AsyncSession(write_locked(server.engine)) as session, session.begin():
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
