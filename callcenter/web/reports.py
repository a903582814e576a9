"""Supervisors' reports over HTTP: the figures as JSON, as CSV for spreadsheets, and the
chart page (dashboards/reports/) that draws them.

Reports show how well the service ran, station by station and carer by carer; they are
for supervisors and administrators, not for the operators they measure. The figures are
defined in docs/reports.md and computed in callcenter/engine/reports.py.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.engine.reports import MAX_PERIOD_DAYS, report
from callcenter.store import models as m
from callcenter.web.assets import REPORTS_PAGE
from callcenter.web.contract import DAY_WORDS, Day, Parameters, Reply, contract, query_of
from callcenter.web.errors import bad_request
from callcenter.web.pages import page_for_role
from callcenter.web.responses import json_reply
from callcenter.web.state import CLOCK, CONFIG, DATABASE
from callcenter.web.views import iso

REPORTS_PATH = "/reports"

routes = web.RouteTableDef()


class PeriodQuery(Parameters):
    from_: Day = Field(alias="from", description=f"the first day, {DAY_WORDS}")
    to: Day = Field(description=f"the last day (inclusive, at most 366 days on), {DAY_WORDS}")


class CsvKind(StrEnum):
    STATION = "station"
    CARER = "carer"


class CsvQuery(PeriodQuery):
    by: CsvKind = Field(CsvKind.STATION, description="one row per station or per carer")


class Report(BaseModel):
    """The period's figures: district totals, every station, every carer who was sent
    (every figure is defined in docs/reports.md)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    timezone: str
    starts_at: datetime
    ends_at: datetime
    at: datetime
    service_circle_min: float
    district: dict[str, Any]
    stations: list[dict[str, Any]]
    carers: list[dict[str, Any]]


_PERIOD_ERRORS = {400: "a day missing or not YYYY-MM-DD, reversed, or over 366 days"}


def _period(request: web.Request) -> tuple[date, date]:
    """The ?from= and ?to= days (each a date, checked by the route's PeriodQuery); 400
    when they are reversed or span more than MAX_PERIOD_DAYS."""
    period = query_of(request, PeriodQuery)
    first, last = period.from_, period.to
    if last < first:
        raise bad_request(
            f"to ({last}) is before from ({first}); give the earlier day as from",
            field="to",
        )
    days = (last - first).days + 1
    if days > MAX_PERIOD_DAYS:
        raise bad_request(
            f"a report covers at most {MAX_PERIOD_DAYS} days; {first} to {last} is {days} "
            "days: ask for it a year at a time",
            field="to",
        )
    return first, last


async def _report(request: web.Request) -> dict[str, Any]:
    """The report the query asks for (the route lets only supervisors and administrators
    ask)."""
    config = request.app[CONFIG]
    zone = ZoneInfo(config.district.timezone)
    now = request.app[CLOCK].now()
    first, last = _period(request)
    async with AsyncSession(request.app[DATABASE]) as session:
        return await report(
            session,
            first=first,
            last=last,
            zone=zone,
            now=now,
            circle_s=config.calls.service_circle_s,
        )


@routes.get("/api/reports")
@contract(
    role=m.OperatorRole.SUPERVISOR,
    query=PeriodQuery,
    answers={200: Report, **_PERIOD_ERRORS},
    tag="reports",
)
async def reports_json(request: web.Request) -> web.Response:
    """The period's figures: district totals, every station, every carer who was sent."""
    found = await _report(request)
    for moment in ("starts_at", "ends_at", "at"):
        found[moment] = iso(found[moment])
    return json_reply(found)


# What makes a spreadsheet read a cell as a formula (OWASP's list, and LF with CR).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows and never runs. Text is what people and devices
    typed (names, codes): one starting like a formula gets a leading apostrophe, which
    spreadsheets take as "this is text". Numbers are the server's own figures and are
    written as numbers, negative ones too; nothing is empty."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def station_rows(found: dict[str, Any]) -> list[list[Any]]:
    """One row per station, then the district's, under a header row."""
    header = ["station", "name", "calls", *(t.value for t in CallType)]
    header += [
        "ack_60s",
        "ack_60s_of",
        "ack_60s_share",
        "ack_180s",
        "ack_180s_of",
        "ack_180s_share",
        "on_scene_calls",
        "on_scene_p50_s",
        "on_scene_p90_s",
        "on_scene_max_s",
        "on_scene_within_circle",
        "on_scene_within_circle_of",
        "on_scene_within_circle_share",
        "escalated_calls",
        "escalations",
        "escalations_by_step",
        "handled",
        "resolved",
        "cancelled",
        "open",
        "resolution_rate",
    ]
    district = {"code": "district", "name": "", **found["district"]}
    rows: list[list[Any]] = [header]
    for f in [*found["stations"], district]:
        row = [f["code"], f["name"], f["calls"], *(f["by_type"][t.value] for t in CallType)]
        for key in ("acknowledged_within_60s", "acknowledged_within_180s"):
            row += [f[key]["count"], f[key]["of"], f[key]["share"]]
        scene = f["on_scene"]
        row += [scene["calls"], scene["p50_s"], scene["p90_s"], scene["max_s"]]
        circle = f["on_scene_within_circle"]
        row += [circle["count"], circle["of"], circle["share"]]
        esc = f["escalations"]
        row += [
            esc["calls"],
            esc["entries"],
            "; ".join(f"{e['step']} ({e['reason']}): {e['count']}" for e in esc["by_step"]),
        ]
        row += [f["handled"], f["resolved"], f["cancelled"], f["open"], f["resolution_rate"]]
        rows.append([spreadsheet_cell(v) for v in row])
    return rows


CARER_COLUMNS = (
    "dispatched",
    "accepted",
    "declined",
    "no_answer",
    "unreachable",
    "on_scene",
    "calls",
    "calls_closed",
    "calls_resolved",
    "resolution_share",
    "median_to_accept_s",
    "median_to_arrive_s",
)


def carer_rows(found: dict[str, Any]) -> list[list[Any]]:
    """One row per carer who was sent in the period, under a header row."""
    rows: list[list[Any]] = [["carer", "name", "station", *CARER_COLUMNS]]
    for c in found["carers"]:
        rows.append(
            [spreadsheet_cell(v) for v in (c["code"], c["name"], c["station"])]
            + [spreadsheet_cell(c[k]) for k in CARER_COLUMNS]
        )
    return rows


@routes.get("/api/reports.csv")
@contract(
    role=m.OperatorRole.SUPERVISOR,
    query=CsvQuery,
    answers={200: Reply("the figures as a CSV file", media="text/csv"), **_PERIOD_ERRORS},
    tag="reports",
)
async def reports_csv(request: web.Request) -> web.Response:
    """The period's figures per station (``by=station``, the default) or per carer, as a
    CSV file to download."""
    by = query_of(request, CsvQuery).by
    found = await _report(request)
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        station_rows(found) if by is CsvKind.STATION else carer_rows(found)
    )
    name = f"report-{by.value}-{found['from']}-to-{found['to']}.csv"
    return web.Response(
        # A byte-order mark lets spreadsheet programs read the Chinese names as UTF-8.
        body=("\ufeff" + out.getvalue()).encode(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@routes.get(REPORTS_PATH)
async def reports_page(request: web.Request) -> web.StreamResponse:
    """The chart page, for signed-in supervisors and administrators; others see why not."""
    return await page_for_role(
        request,
        REPORTS_PAGE,
        m.OperatorRole.SUPERVISOR,
        "reports are for supervisors and administrators. 报表仅供主管和管理员查看。",
    )
