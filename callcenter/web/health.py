"""``GET /healthz``: is this server able to take calls right now?

Four checks, each with ``ok`` and what it saw: the broker connection, the database (a
``SELECT 1`` within two seconds), the timer scheduler (its loop is running and no
deadline is overdue by more than a minute) and the event follower (its loop is running
and its cursor is not stuck behind the log). 200 when all pass, else 503.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError

from callcenter.engine.follower import CURSOR
from callcenter.store import models as m
from callcenter.web.contract import Access, contract
from callcenter.web.replies import json_reply
from callcenter.web.state import FOLLOWER_PROGRESS, SERVER
from callcenter.web.views import iso

if TYPE_CHECKING:
    from callcenter.app import Running

routes = web.RouteTableDef()

DATABASE_TIMEOUT_S = 2.0
# A deadline this far past due means the scheduler is not keeping up (or not running).
SCHEDULER_BEHIND = timedelta(seconds=60)
# A follower with events waiting whose cursor has not moved for this long is stuck.
FOLLOWER_STUCK_S = 60.0
# The names app.running_server gives the loops (see callcenter/app.py).
SCHEDULER_TASK = "callcenter.scheduler"
FOLLOWER_TASK = "callcenter.follower"


class FollowerProgress:
    """Remembers when the follower's cursor last moved, to tell a busy follower (lag,
    but moving) from a stuck one (lag, standing still)."""

    def __init__(self) -> None:
        self._position: int | None = None
        self._moved_at = time.monotonic()

    def standing_still_s(self, position: int, lag: int) -> float:
        """Seconds the cursor has stood still with events waiting (0 while it keeps up)."""
        now = time.monotonic()
        if position != self._position or lag == 0:
            self._position = position
            self._moved_at = now
        return 0.0 if lag == 0 else now - self._moved_at


def _task_running(name: str) -> bool:
    return any(task.get_name() == name and not task.done() for task in asyncio.all_tasks())


async def _facts(server: Running) -> dict[str, Any]:
    """What the database says, read within the timeout."""
    started = time.perf_counter()
    async with asyncio.timeout(DATABASE_TIMEOUT_S), server.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        latest = await connection.scalar(select(func.max(m.DeviceEvent.id)))
        cursor = await connection.scalar(select(m.Cursor.position).where(m.Cursor.name == CURSOR))
        next_due = await connection.scalar(
            select(func.min(m.Timer.due_at)).where(m.Timer.state == m.TimerState.PENDING)
        )
    return {
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "latest_event": int(latest or 0),
        "cursor": int(cursor or 0),
        "next_due": next_due,
    }


async def check_health(server: Running, progress: FollowerProgress) -> dict[str, Any]:
    """Every check's result, and ``status`` "ok" only if all of them pass."""
    checks: dict[str, dict[str, Any]] = {}
    connected = server.ingest.connected.is_set()
    checks["broker"] = {
        "ok": connected,
        "detail": f"{'connected to' if connected else 'not connected to'} "
        f"{server.broker_host}:{server.broker_port}",
    }
    try:
        facts = await _facts(server)
    except (TimeoutError, OperationalError, DBAPIError, OSError) as error:
        reason = "no answer within 2 s" if isinstance(error, TimeoutError) else str(error)
        checks["database"] = {"ok": False, "detail": f"unreachable: {reason}"[:500]}
        unknown = "unknown: the database is not answering"
        checks["scheduler"] = {"ok": False, "detail": unknown}
        checks["follower"] = {"ok": False, "detail": unknown}
    else:
        checks["database"] = {"ok": True, "latency_ms": facts["latency_ms"]}
        checks["scheduler"] = _scheduler(server, facts)
        checks["follower"] = _follower(facts, progress)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    return {"status": "failing" if failing else "ok", "failing": failing, "checks": checks}


def _scheduler(server: Running, facts: dict[str, Any]) -> dict[str, Any]:
    scheduler = server.scheduler
    now = server.clock.now()
    running = _task_running(SCHEDULER_TASK)
    next_due = facts["next_due"]
    behind_s = max(0.0, (now - next_due).total_seconds()) if next_due is not None else 0.0
    result: dict[str, Any] = {
        "ok": running and behind_s <= SCHEDULER_BEHIND.total_seconds(),
        "running": running,
        "last_cycle_at": iso(scheduler.last_cycle_at),
        "next_due": iso(next_due),
        "behind_s": round(behind_s, 1),
        "fired": scheduler.fired,
    }
    if not running:
        result["detail"] = "the timer loop is not running"
    elif not result["ok"]:
        result["detail"] = f"a deadline is {behind_s:.0f} s overdue; timers are not firing"
    return result


def _follower(facts: dict[str, Any], progress: FollowerProgress) -> dict[str, Any]:
    lag = max(0, facts["latest_event"] - facts["cursor"])
    still_s = progress.standing_still_s(facts["cursor"], lag)
    running = _task_running(FOLLOWER_TASK)
    result: dict[str, Any] = {
        "ok": running and still_s < FOLLOWER_STUCK_S,
        "running": running,
        "cursor": facts["cursor"],
        "latest_event": facts["latest_event"],
        "lag": lag,
    }
    if not running:
        result["detail"] = "the event follower is not running"
    elif not result["ok"]:
        result["detail"] = f"{lag} events waiting and the cursor has not moved for {still_s:.0f} s"
    return result


class HealthReport(BaseModel):
    """Every check, and whether the server can take calls."""

    model_config = ConfigDict(extra="allow")

    status: str
    failing: list[str]
    checks: dict[str, dict[str, Any]]


@routes.get("/healthz")
@contract(
    access=Access.PUBLIC,
    answers={200: HealthReport, 503: HealthReport},
    tag="operations",
)
async def healthz(request: web.Request) -> web.Response:
    """200 with every check when the server can take calls, else 503 naming what fails."""
    report = await check_health(request.app[SERVER], request.app[FOLLOWER_PROGRESS])
    return json_reply(report, status=200 if report["status"] == "ok" else 503)
