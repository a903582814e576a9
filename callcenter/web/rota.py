"""The supervisors' routes: the duty roster, the rota as a calendar of shifts and gaps,
and the escalation policies (docs/register.md). Bodies and answers are
web/register_common.py's; every change is audited by engine/register/."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field

from callcenter.config import PolicyConfig
from callcenter.domain import register as rules
from callcenter.domain.call_types import CallType
from callcenter.domain.policy import Policy
from callcenter.engine import register as reg
from callcenter.web.bodies import read_body
from callcenter.web.contract import contract, path_of, query_of
from callcenter.web.errors import ApiError, bad_request
from callcenter.web.register_common import (
    NOT_FOUND,
    REFUSED,
    SUPERVISOR,
    CallTypePath,
    PolicyList,
    PolicyView,
    RosterAnswer,
    RosterBody,
    RosterList,
    RosterPath,
    RosterQuery,
    change_of,
    district_today,
    register_changed,
)
from callcenter.web.responses import json_reply
from callcenter.web.state import CONFIG, DATABASE, DESK, OPERATOR
from callcenter.web.views import Shape, iso

log = logging.getLogger("callcenter.web.register")

routes = web.RouteTableDef()


# --- the roster ------------------------------------------------------------------------


@routes.get("/api/register/roster")
@contract(role=SUPERVISOR, query=RosterQuery, answers={200: RosterList}, tag="register")
async def list_roster(request: web.Request) -> web.Response:
    """The roster's entries from ``first`` to ``last`` (at most 366 days)."""
    query = query_of(request, RosterQuery)
    if query.last < query.first or (query.last - query.first).days > 366:
        raise bad_request("last must be on or after first, and at most 366 days later")
    found = await reg.roster(request.app[DATABASE], query.first, query.last)
    return json_reply({"records": [reg.record_json(r) for r in found]})


@routes.put("/api/register/roster/{carer}/{day}")
@contract(
    role=SUPERVISOR,
    path=RosterPath,
    body=RosterBody,
    answers={200: RosterAnswer, **REFUSED},
    tag="register",
)
async def set_roster(request: web.Request) -> web.Response:
    """A carer's duty on a day: a day off, or a duty on a shift pattern."""
    where = path_of(request, RosterPath)
    body = await read_body(request, RosterBody)
    record = rules.RosterRecord(
        where.carer, where.day, body.on_duty, body.shift_pattern or None, body.note
    )
    saved = await reg.set_roster(
        request.app[DATABASE], record, change_of(request), today=district_today(request)
    )
    register_changed(request)
    return json_reply({"record": reg.record_json(saved)})


@routes.delete("/api/register/roster/{carer}/{day}")
@contract(role=SUPERVISOR, path=RosterPath, answers={204: None, **NOT_FOUND}, tag="register")
async def clear_roster(request: web.Request) -> web.StreamResponse:
    """Remove a carer's entry for a day: their shift pattern applies again."""
    where = path_of(request, RosterPath)
    if not await reg.clear_roster(
        request.app[DATABASE], where.carer, where.day, change_of(request)
    ):
        raise ApiError(404, "not_found", f"carer {where.carer} has no roster entry on {where.day}")
    register_changed(request)
    return web.Response(status=204)


# --- the rota --------------------------------------------------------------------------

ROTA_DAYS_MAX = 62


class RotaShiftView(Shape):
    carer: str
    name: str
    start: str = Field(description="local time with its offset")
    end: str
    pattern: str
    rostered: bool = Field(description="set by the roster, not the carer's own pattern")


class RotaGapView(Shape):
    start: str
    end: str
    backup_covers: bool = Field(description="the station's B post has someone on for all of it")


class StationRotaView(Shape):
    code: str
    name: str
    backup: str | None = Field(description="the B post: the station that takes its calls")
    shifts: list[RotaShiftView]
    gaps: list[RotaGapView] = Field(description="stretches with nobody on shift")


class RotaView(Shape):
    """Who is on shift at each station, and the gaps, from ``first`` to ``last``."""

    first: date
    last: date
    stations: list[StationRotaView]


@routes.get("/api/register/rota")
@contract(role=SUPERVISOR, query=RosterQuery, answers={200: RotaView}, tag="register")
async def show_rota(request: web.Request) -> web.Response:
    """The rota as a calendar: each station's shifts (active carers, their patterns and
    the roster) and its gaps, with whether the B post covers each, for at most 62 days.
    A gap shown here is what the watchdog reports as a station with nobody on shift."""
    query = query_of(request, RosterQuery)
    if query.last < query.first or (query.last - query.first).days >= ROTA_DAYS_MAX:
        raise bad_request(f"last must be on or after first, within {ROTA_DAYS_MAX} days")
    config = request.app[CONFIG]
    zone = ZoneInfo(config.district.timezone)
    found = await reg.rota(
        request.app[DATABASE],
        query.first,
        query.last,
        zone=zone,
        holidays=config.district.holidays,
    )
    return json_reply(
        {
            "first": query.first.isoformat(),
            "last": query.last.isoformat(),
            "stations": [
                {
                    "code": s.code,
                    "name": s.name,
                    "backup": s.backup,
                    "shifts": [
                        {
                            "carer": d.carer,
                            "name": d.name,
                            "start": d.start.isoformat(),
                            "end": d.end.isoformat(),
                            "pattern": d.pattern,
                            "rostered": d.rostered,
                        }
                        for d in s.shifts
                    ],
                    "gaps": [
                        {
                            "start": g.start.isoformat(),
                            "end": g.end.isoformat(),
                            "backup_covers": g.backup_covers,
                        }
                        for g in s.gaps
                    ],
                }
                for s in found
            ],
        }
    )


# --- escalation policies -----------------------------------------------------------------


def preview(policy: Policy) -> list[dict[str, Any]]:
    """The steps in the order they fire, each with its time from its start."""
    return [
        {
            "name": s.name,
            "after_s": s.after_s,
            "counted_from": s.counted_from.value,
            "unless": s.unless.value,
            "actions": [a.value for a in s.actions],
        }
        for s in sorted(policy.steps, key=lambda s: (s.counted_from.value != "opened", s.after_s))
    ]


async def _policy_views(request: web.Request) -> list[dict[str, Any]]:
    desk = request.app[DESK]
    rows = await reg.policy_rows(request.app[DATABASE])
    views = []
    for call_type in CallType:
        row = rows.get(call_type.value)
        policy = (
            Policy.from_json(row.policy) if row is not None else desk.configured_policy(call_type)
        )
        views.append(
            {
                "call_type": call_type.value,
                "source": "edited" if row is not None else "configured",
                "edited_by": None if row is None else row.edited_by,
                "edited_at": None if row is None else iso(row.edited_at),
                "policy": policy.to_json(),
                "preview": preview(policy),
            }
        )
    return views


@routes.get("/api/register/policies")
@contract(role=SUPERVISOR, answers={200: PolicyList}, tag="register")
async def list_policies(request: web.Request) -> web.Response:
    """Each call type's policy in force for new calls, and where it comes from."""
    return json_reply({"policies": await _policy_views(request)})


@routes.put("/api/register/policies/{call_type}")
@contract(
    role=SUPERVISOR,
    path=CallTypePath,
    body=PolicyConfig,
    answers={200: PolicyView, **REFUSED},
    tag="register",
)
async def set_policy(request: web.Request) -> web.Response:
    """A call type's policy for calls opened from now on (calls already open keep the
    one they opened with). The body is the configuration file's form of a policy."""
    call_type = path_of(request, CallTypePath).call_type
    policy = (await read_body(request, PolicyConfig)).to_policy()
    await _write_policy(request, call_type, policy)
    return json_reply(
        next(v for v in await _policy_views(request) if v["call_type"] == call_type.value)
    )


@routes.delete("/api/register/policies/{call_type}")
@contract(role=SUPERVISOR, path=CallTypePath, answers={200: PolicyView}, tag="register")
async def reset_policy(request: web.Request) -> web.Response:
    """Back to the configured policy for calls opened from now on."""
    call_type = path_of(request, CallTypePath).call_type
    await _write_policy(request, call_type, None)
    return json_reply(
        next(v for v in await _policy_views(request) if v["call_type"] == call_type.value)
    )


async def _write_policy(request: web.Request, call_type: CallType, policy: Policy | None) -> None:
    desk = request.app[DESK]
    registry = await desk.district.registry()
    before = desk.policy_for(call_type, registry)
    after = policy if policy is not None else desk.configured_policy(call_type)
    await reg.set_policy(
        request.app[DATABASE], call_type, policy, change_of(request), before=before, after=after
    )
    register_changed(request)
    log.info(
        "%s set the %s policy (%s)",
        request[OPERATOR].username,
        call_type.value,
        "edited" if policy else "configured",
    )
