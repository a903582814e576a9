"""Who read which household's data, and when: the audit log.

Every answer that carries a household's data writes one row before it goes out: a
look at one household (a call's detail, every command's answer, a family's history page,
a carer's link page) names the household; a list or the board names the households it
showed in ``detail["households"]``. Each row has the reader as call histories name people
(``operator:li.na``, ``family:+8613...``, ``carer:C003``), the address it came from and
the path. Administrators query it with ``GET /api/audit``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.notify import links
from callcenter.store import models as m
from callcenter.store.db import write_turn
from callcenter.web.contract import FIRST_DAY, LAST_DAY, Limit, Parameters, contract, query_of
from callcenter.web.errors import bad_request
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, DATABASE
from callcenter.web.views import Shape, iso

routes = web.RouteTableDef()


class AuditQuery(Parameters):
    household: Annotated[str, Field(max_length=64, description="a household code")] | None = None
    actor: Annotated[str, Field(max_length=96, description="e.g. family:+8613800138000")] | None = (
        None
    )
    since: str | None = Field(None, description="an ISO 8601 time with a zone", max_length=64)
    until: str | None = Field(
        None, description="an ISO 8601 time with a zone: rows before it", max_length=64
    )
    changes: bool = Field(
        False, description="true: only changes to the register (rows with a before or after)"
    )
    limit: Limit = 200


class AuditEntryView(Shape):
    at: datetime
    actor: str
    household: str | None
    action: str
    path: str
    address: str
    detail: dict[str, Any]
    before: dict[str, Any] | None = Field(
        None, description="a change to the register: the record as it was (null: new)"
    )
    after: dict[str, Any] | None = Field(
        None, description="a change to the register: the record as it became"
    )


class AuditLog(Shape):
    """Audit rows, newest first."""

    entries: list[AuditEntryView]


async def record_read(
    session: AsyncSession,
    request: web.Request,
    *,
    actor: str,
    household_id: int | None,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Write one audit row for this request (committed with the caller's session)."""
    session.add(
        m.AuditEntry(
            at=request.app[CLOCK].now(),
            actor=actor[:96],
            household_id=household_id,
            action=action[:32],
            path=links.masked(request.path_qs)[:255],
            address=(request.remote or "")[:64],
            detail=detail or {},
        )
    )
    await session.flush()


async def record(
    request: web.Request,
    *,
    actor: str,
    household_id: int | None,
    action: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """``record_read`` in a transaction of its own, in turn with the server's other
    writers (on SQLite, a writer racing for the lock instead can keep the desk's
    writes polling for it)."""
    engine = request.app[DATABASE]
    async with write_turn(engine), AsyncSession(engine) as session, session.begin():
        await record_read(
            session, request, actor=actor, household_id=household_id, action=action, detail=detail
        )


async def record_shown(
    request: web.Request,
    *,
    actor: str,
    action: str,
    households: Iterable[str],
    named: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row for an answer showing several households (a list, the board): their
    codes in ``detail["households"]``, and ``named`` as the row's household when the
    request asked for that one. Nothing when the answer showed no household and named
    none."""
    codes = sorted(set(households))
    if not codes and named is None:
        return
    await record(
        request,
        actor=actor,
        household_id=named,
        action=action,
        detail={**(detail or {}), "households": codes},
    )


def _moment(name: str, raw: str | None) -> datetime | None:
    """The query's ``since`` or ``until``: an ISO 8601 time with a zone, or None."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(
            f"{name} must be an ISO 8601 time such as 2026-11-23T00:00:00Z, not {raw[:40]!r}",
            field=name,
        ) from None
    if moment.tzinfo is None:
        raise bad_request(f"{name} needs a time zone, e.g. 2026-11-23T00:00:00Z", field=name)
    if not FIRST_DAY <= moment.date() <= LAST_DAY:
        raise bad_request(
            f"{name} must fall from {FIRST_DAY} to {LAST_DAY}, not {raw[:40]!r}",
            field=name,
        )
    return moment


@routes.get("/api/audit")
@contract(role=m.OperatorRole.ADMIN, query=AuditQuery, answers={200: AuditLog}, tag="accounts")
async def audit_log(request: web.Request) -> web.Response:
    """Audit rows, newest first: ``?household=H0001``, ``?actor=family:+86...``,
    ``?since=<ISO time>`` (from), ``?until=<ISO time>`` (before), ``?changes=true`` (only
    changes to the register), ``?limit=`` (1-1000, default 200). Administrators only."""
    asked = query_of(request, AuditQuery)
    query = (
        select(m.AuditEntry, m.Household.code)
        .outerjoin(m.Household, m.Household.id == m.AuditEntry.household_id)
        .order_by(m.AuditEntry.at.desc(), m.AuditEntry.id.desc())
    )
    if asked.household is not None:
        # Its own rows, and the lists and boards that showed it among others.
        listed = cast(m.AuditEntry.detail, String).contains(f'"{asked.household}"', autoescape=True)
        query = query.where(or_(m.Household.code == asked.household, listed))
    if asked.actor is not None:
        query = query.where(m.AuditEntry.actor == asked.actor)
    since, until = _moment("since", asked.since), _moment("until", asked.until)
    if since is not None:
        query = query.where(m.AuditEntry.at >= since)
    if until is not None:
        if since is not None and until <= since:
            raise bad_request("until must be later than since", field="until")
        query = query.where(m.AuditEntry.at < until)
    if asked.changes:
        query = query.where(or_(m.AuditEntry.before.is_not(None), m.AuditEntry.after.is_not(None)))
    async with AsyncSession(request.app[DATABASE]) as session:
        rows = (await session.execute(query.limit(asked.limit))).all()
    return json_reply(
        {
            "entries": [
                {
                    "at": iso(entry.at),
                    "actor": entry.actor,
                    "household": code,
                    "action": entry.action,
                    # Rows written before tokens were masked on the way in.
                    "path": links.masked(entry.path),
                    "address": entry.address,
                    "detail": entry.detail,
                    "before": entry.before,
                    "after": entry.after,
                }
                for entry, code in rows
            ]
        }
    )
