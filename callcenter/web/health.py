"""``GET /healthz``: is every part of this server getting its work done?

The parts and what makes one stuck are in callcenter/health.py. 200 while no part has
been stuck for longer than ``health.stuck_after_s``; 503 naming those that have. The
boards get the same report (``board_view``) in their snapshot and on their feed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from callcenter.health import HealthReport, PartHealth
from callcenter.web.contract import Access, contract
from callcenter.web.responses import json_reply
from callcenter.web.state import HEALTH
from callcenter.web.views import iso

routes = web.RouteTableDef()


def _part(part: PartHealth, report: HealthReport, failing: bool) -> dict[str, Any]:
    facts = {
        name: iso(value) if isinstance(value, datetime) else value
        for name, value in part.facts.items()
    }
    return {
        "ok": not failing,
        "stuck_since": iso(part.stuck_since),
        "age_s": part.age_s(report.at),
        "progress_at": iso(part.progress_at),
        "detail": part.detail,
        **facts,
    }


def report_document(report: HealthReport) -> dict[str, Any]:
    """The report as ``/healthz`` answers it."""
    failing = {part.name for part in report.failing}
    return {
        "status": "failing" if failing else "ok",
        "at": iso(report.at),
        "stuck_after_s": report.stuck_after.total_seconds(),
        "failing": [part.name for part in report.failing],
        "parts": {part.name: _part(part, report, part.name in failing) for part in report.parts},
    }


def board_view(report: HealthReport | None) -> dict[str, Any]:
    """What a board shows: each part stuck for too long, since when, and why (none
    before the first look)."""
    if report is None:
        return {"at": None, "failing": []}
    return {
        "at": iso(report.at),
        "stuck_after_s": report.stuck_after.total_seconds(),
        "failing": [
            {"part": part.name, "since": iso(part.stuck_since), "detail": part.detail}
            for part in report.failing
        ],
    }


class PartAnswer(BaseModel):
    """One part as ``/healthz`` shows it; its own figures besides (``extra``)."""

    model_config = ConfigDict(extra="allow")

    ok: bool = Field(description="false once it has been stuck longer than stuck_after_s")
    stuck_since: str | None = Field(description="since when it has work and makes no progress")
    age_s: float | None = Field(description="seconds it has been stuck")
    progress_at: str | None = Field(description="when it last got something done")
    detail: str = Field(description="what it is doing or what holds it up, for a person")


class HealthAnswer(BaseModel):
    """Every part an alarm goes through, and which have been stuck too long."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="ok, or failing")
    at: str = Field(description="when the parts were looked at")
    stuck_after_s: float = Field(description="health.stuck_after_s")
    failing: list[str] = Field(description="the parts stuck longer than stuck_after_s")
    parts: dict[str, PartAnswer]


@routes.get("/healthz")
@contract(
    access=Access.PUBLIC,
    answers={200: HealthAnswer, 503: HealthAnswer},
    tag="operations",
)
async def healthz(request: web.Request) -> web.Response:
    """200 with every part when none has been stuck too long, else 503 naming them."""
    report = await request.app[HEALTH].check()
    return json_reply(report_document(report), status=200 if report.ok else 503)
