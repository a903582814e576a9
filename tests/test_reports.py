"""Supervisors' reports: a simulated week driven through the real desk on the virtual
clock, then every figure of GET /api/reports and its CSV recomputed here, independently,
from the raw calls, call_history and call_assignments rows; who may read them; bad
periods; and the chart page in headless Chromium (test-artifacts/reports.png).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.events import EventKind
from callcenter.domain.response_times import nearest_rank
from callcenter.engine.reports import escalation_of, reason_code
from callcenter.store import models as m
from callcenter.web.reports import spreadsheet_cell
from tests.api_support import PASSWORD, Api, set_password
from tests.desk_support import MONDAY_MORNING, rows
from tests.fixtures.browser import OpenTab
from tests.ingest_support import eventually

WEEK = ("2026-11-23", "2026-11-29")  # Monday to Sunday; the desk starts Monday 10:00
TYPES = tuple(call_type.value for call_type in CallType)


# ----------------------------------------------------------------- driving the desk


async def _ok(api: Api, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await api.post(path, body)
    assert reply.status == 200, (path, reply.body)
    answer: dict[str, Any] = reply.body
    return answer


async def _wait(api: Api, seconds: float) -> None:
    api.clock.advance(timedelta(seconds=seconds))


async def _active_carers(api: Api, call_id: int, state: str = "dispatched") -> list[str]:
    """The carers on the call in ``state``, in dispatch order, once the desk has paged
    them (paging follows the press by a moment)."""
    found: list[str] = []

    async def paged() -> bool:
        detail = await api.call(call_id)
        found[:] = [a["carer"] for a in detail["assignments"] if a["state"] == state]
        return bool(found)

    await eventually(paged, what=f"a carer {state} on call {call_id}")
    return found


async def _history_has(api: Api, call_id: int, action: str, times: int = 1) -> None:
    async def there() -> bool:
        detail = await api.call(call_id)
        return sum(1 for h in detail["history"] if h["action"] == action) >= times

    await eventually(there, what=f"{action} x{times} in call {call_id}'s history")


async def _report(api: Api, call_id: int, carer: str, status: str) -> None:
    await _ok(api, f"/api/calls/{call_id}/carers/{carer}/status", {"status": status})


async def _quick_call(
    api: Api, household: str, ack_s: float, accept_s: float, scene_s: float
) -> int:
    """An emergency taken in ``ack_s``, accepted by the first carer paged at ``accept_s``
    and on scene at ``scene_s`` (seconds after the press), then resolved."""
    call = await api.press(household)
    carer = (await _active_carers(api, call))[0]
    await _wait(api, ack_s)
    if ack_s > 30:
        await _history_has(api, call, "escalated")
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _wait(api, accept_s - ack_s)
    await _report(api, call, carer, "accepted")
    await _wait(api, (scene_s - accept_s) / 2)
    await _report(api, call, carer, "on_the_way")
    await _wait(api, (scene_s - accept_s) / 2)
    await _report(api, call, carer, "on_scene")
    await _wait(api, 600)
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "helped_at_home"})
    return call


async def _next_day(api: Api) -> None:
    """On to 10:00 of the next day (every call of the day closed, so no timer fires)."""
    now = api.clock.now()
    zone = ZoneInfo("Asia/Shanghai")
    local = now.astimezone(zone)
    target = datetime.combine(local.date() + timedelta(days=1), time(10, 0), tzinfo=zone)
    api.clock.advance(target - now)


async def _simulated_week(api: Api) -> int:
    """Calls over Monday to Sunday through the real desk; the id of the one left open."""
    # Monday: one quick call; one left unacknowledged for 100 s whose first carer
    # declines and the next one accepts; a false alarm cancelled after 15 s.
    await _quick_call(api, "H0001", ack_s=20, accept_s=50, scene_s=400)
    call = await api.press("H0120")
    first = (await _active_carers(api, call))[0]
    await _wait(api, 100)
    await _history_has(api, call, "escalated")
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _report(api, call, first, "declined")
    second = next(c for c in await _active_carers(api, call) if c != first)
    await _wait(api, 30)
    await _report(api, call, second, "accepted")
    await _wait(api, 500)
    await _report(api, call, second, "on_scene")
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "taken_to_hospital"})
    call = await api.press("H0305")
    await _wait(api, 15)
    await _ok(api, f"/api/calls/{call}/cancel", {"reason": "resident_cancelled"})

    # Tuesday: a carer who never answers (no_answer after 2 min, the next one paged);
    # the next arrives after 16 min, so "not_on_scene" escalates too.
    await _next_day(api)
    call = await api.press("H0450")
    silent = (await _active_carers(api, call))[0]
    await _wait(api, 10)
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _wait(api, 115)
    await _history_has(api, call, "no_answer")
    second = next(c for c in await _active_carers(api, call) if c != silent)
    await _wait(api, 20)
    await _report(api, call, second, "accepted")
    await _wait(api, 16 * 60 - 145)
    await _history_has(api, call, "escalated")
    await _report(api, call, second, "on_scene")
    await _wait(api, 300)
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "helped_at_home"})
    await _quick_call(api, "H0610", ack_s=45, accept_s=90, scene_s=700)

    # Wednesday: a fall (two carers), a service request, a low battery handled by phone.
    await _next_day(api)
    call = await api.press("H0777", EventKind.FALL_DETECTED)
    lifters = await _active_carers(api, call)
    assert len(lifters) == 2, lifters
    await _wait(api, 5)
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _wait(api, 25)
    await _report(api, call, lifters[0], "accepted")
    await _wait(api, 20)
    await _report(api, call, lifters[1], "accepted")
    await _wait(api, 300)
    await _report(api, call, lifters[1], "on_scene")
    await _wait(api, 60)
    await _report(api, call, lifters[0], "on_scene")
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "taken_to_hospital"})
    call = await api.press("H0033", EventKind.SERVICE_REQUEST)
    helper = (await _active_carers(api, call))[0]
    await _wait(api, 70)
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _report(api, call, helper, "accepted")
    await _wait(api, 1500)
    await _report(api, call, helper, "on_scene")
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "other"})
    call = await api.press("H0890", EventKind.LOW_BATTERY)
    await _wait(api, 240)
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _ok(api, f"/api/calls/{call}/resolve", {"outcome": "device_fixed"})

    # Friday: two quick calls and one closed in error by the desk.
    await _next_day(api)
    await _next_day(api)
    await _quick_call(api, "H0205", ack_s=8, accept_s=30, scene_s=240)
    await _quick_call(api, "H0512", ack_s=110, accept_s=115, scene_s=800)
    call = await api.press("H0700")
    await _wait(api, 50)
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _ok(api, f"/api/calls/{call}/cancel", {"reason": "entered_in_error"})

    # Sunday: a call still open when the report is read: taken late, carer on the way.
    await _next_day(api)
    await _next_day(api)
    call = await api.press("H0150")
    carer = (await _active_carers(api, call))[0]
    await _wait(api, 100)
    await _history_has(api, call, "escalated")
    await _ok(api, f"/api/calls/{call}/acknowledge")
    await _report(api, call, carer, "on_the_way")
    # 17 minutes on, nobody at the door: "not_on_scene" escalates, and the open call
    # counts as a miss of the 15-minute circle.
    await _wait(api, 17 * 60 - 100)
    await _history_has(api, call, "escalated", times=2)
    return call


# ------------------------------------------------- the figures, recomputed from rows


def _rank(values: list[float], percent: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[math.ceil(len(ordered) * percent / 100) - 1], 1)


def _part(count: int, of: int) -> dict[str, Any]:
    return {"count": count, "of": of, "share": round(count / of, 4) if of else None}


async def _raw(api: Api) -> dict[str, Any]:
    """Every row the figures come from, straight from the tables."""
    return {
        "calls": [r for (r,) in await rows(api.server, select(m.Call))],
        "history": [r for (r,) in await rows(api.server, select(m.CallHistory))],
        "assignments": [r for (r,) in await rows(api.server, select(m.CallAssignment))],
        "households": {r.id: r for (r,) in await rows(api.server, select(m.Household))},
        "stations": {r.id: r for (r,) in await rows(api.server, select(m.Station))},
        "carers": {r.id: r for (r,) in await rows(api.server, select(m.Carer))},
    }


def _expected(raw: dict[str, Any], first: str, last: str, now: datetime) -> dict[str, Any]:
    """The report's figures worked out from the raw rows, as docs/reports.md defines
    them, without the report's code."""
    zone = ZoneInfo("Asia/Shanghai")
    start = datetime.combine(date.fromisoformat(first), time(0), tzinfo=zone)
    end = datetime.combine(date.fromisoformat(last) + timedelta(days=1), time(0), tzinfo=zone)
    calls = [c for c in raw["calls"] if start <= c.opened_at < end]
    ids = {c.id for c in calls}
    history = sorted((h for h in raw["history"] if h.call_id in ids), key=lambda h: h.id)
    station_of_call = {
        c.id: raw["stations"][raw["households"][c.household_id].home_station_id].code for c in calls
    }

    def seconds(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds()

    def figures(selected: list[m.Call]) -> dict[str, Any]:
        chosen = {c.id for c in selected}
        acks: dict[int, dict[str, int]] = {60: Counter(), 180: Counter()}  # type: ignore[dict-item]
        for c in selected:
            age = seconds(c.opened_at, c.closed_at or now)
            for target in (60, 180):
                if c.acknowledged_at is not None:
                    acks[target]["of"] += 1
                    acks[target]["count"] += seconds(c.opened_at, c.acknowledged_at) <= target
                elif age > target:
                    acks[target]["of"] += 1
        first_scene: dict[int, datetime] = {}
        reasons: Counter[tuple[str, str, str | None]] = Counter()
        escalated: set[int] = set()
        for h in history:
            if h.call_id not in chosen:
                continue
            if h.action == "on_scene":
                first_scene.setdefault(h.call_id, h.at)
            if h.action == "escalated":
                why = h.detail.get("early") or f"not {h.detail['waited_for']} in time"
                code = (h.detail.get("because") or {}).get("reason") or {
                    "acknowledged": "not_taken",
                    "accepted": "nobody_accepted",
                    "on_scene": "not_on_scene",
                    "closed": "still_open",
                }[h.detail["waited_for"]]
                reasons[(h.detail["step"], why, code)] += 1
                escalated.add(h.call_id)
            if h.action == "no_answer":
                reasons[(h.detail["step"], "carer did not accept in time", "not_accepted")] += 1
                escalated.add(h.call_id)
            if h.action in ("unreachable", "nobody_to_send"):
                code = (h.detail.get("because") or {}).get("reason") or h.action
                reasons[(h.action, h.detail["why"], code)] += 1
                escalated.add(h.call_id)
        opened = {c.id: c for c in selected}
        scene = [seconds(opened[i].opened_at, at) for i, at in first_scene.items()]
        misses = sum(
            1
            for c in selected
            if c.closed_at is None and c.id not in first_scene and seconds(c.opened_at, now) > 900
        )
        closed = [c for c in selected if c.closed_at is not None]
        resolved = sum(1 for c in closed if c.state == "resolved")
        return {
            "calls": len(selected),
            "by_type": {t: sum(1 for c in selected if c.call_type == t) for t in TYPES},
            "acknowledged_within_60s": _part(acks[60]["count"], acks[60]["of"]),
            "acknowledged_within_180s": _part(acks[180]["count"], acks[180]["of"]),
            "on_scene": {
                "calls": len(scene),
                "p50_s": _rank(scene, 50),
                "p90_s": _rank(scene, 90),
                "max_s": round(max(scene), 1) if scene else None,
            },
            "on_scene_within_circle": _part(sum(s <= 900 for s in scene), len(scene) + misses),
            "escalations": {
                "calls": len(escalated),
                "entries": sum(reasons.values()),
                "by_step": [
                    {"step": s, "reason": r, "reason_code": c, "count": n}
                    for (s, r, c), n in sorted(
                        reasons.items(), key=lambda i: (-i[1], i[0][0], i[0][1])
                    )
                ],
            },
            "handled": len(closed),
            "resolved": resolved,
            "cancelled": len(closed) - resolved,
            "open": len(selected) - len(closed),
            "resolution_rate": round(resolved / len(closed), 4) if closed else None,
        }

    # Each carer is sent at most once per call in this week, so (call, carer) names one
    # assignment; checked rather than assumed.
    sent = [a for a in raw["assignments"] if a.call_id in ids]
    keys = [(a.call_id, a.carer_id) for a in sent]
    assert len(keys) == len(set(keys)), "a carer was sent twice to one call"
    code_of = {c.id: c.code for c in raw["carers"].values()}
    per_carer: dict[str, list[m.CallAssignment]] = defaultdict(list)
    for a in sent:
        per_carer[code_of[a.carer_id]].append(a)
    state_of = {c.id: c for c in calls}
    carers = []
    for code in sorted(per_carer):
        mine = per_carer[code]
        carer = next(c for c in raw["carers"].values() if c.code == code)
        my_history = [h for h in history if h.detail.get("carer") == code]
        accept: list[float] = []
        arrive: list[float] = []
        counts: Counter[str] = Counter()
        for a in mine:
            entries = [h for h in my_history if h.call_id == a.call_id]
            taken = [h.at for h in entries if h.action in ("accepted", "on_the_way", "on_scene")]
            there = [h.at for h in entries if h.action == "on_scene"]
            if taken:
                counts["accepted"] += 1
                accept.append(seconds(a.dispatched_at, taken[0]))
            if there:
                counts["on_scene"] += 1
                arrive.append(seconds(a.dispatched_at, there[0]))
            for ended in ("declined", "no_answer", "unreachable"):
                counts[ended] += any(h.action == ended for h in entries)
        calls_of = {a.call_id for a in mine}
        closed = [i for i in calls_of if state_of[i].closed_at is not None]
        resolved = sum(1 for i in closed if state_of[i].state == "resolved")
        carers.append(
            {
                "code": code,
                "name": carer.name,
                "station": raw["stations"][carer.station_id].code,
                "dispatched": len(mine),
                "accepted": counts["accepted"],
                "declined": counts["declined"],
                "no_answer": counts["no_answer"],
                "unreachable": counts["unreachable"],
                "on_scene": counts["on_scene"],
                "calls": len(calls_of),
                "calls_closed": len(closed),
                "calls_resolved": resolved,
                "resolution_share": round(resolved / len(closed), 4) if closed else None,
                "median_to_accept_s": round(statistics.median(accept), 1) if accept else None,
                "median_to_arrive_s": round(statistics.median(arrive), 1) if arrive else None,
            }
        )
    stations = sorted(raw["stations"].values(), key=lambda s: s.code)
    return {
        "district": figures(calls),
        "stations": [
            {
                "code": s.code,
                "name": s.name,
                **figures([c for c in calls if station_of_call[c.id] == s.code]),
            }
            for s in stations
        ],
        "carers": carers,
    }


def _csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff"), "the CSV starts with a byte-order mark for spreadsheets"
    return list(csv.DictReader(io.StringIO(text[1:])))


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("values", "p50", "p90"),
    [
        ([], None, None),
        ([300.0], 300.0, 300.0),
        ([400.0, 100.0], 100.0, 400.0),  # the 50th percentile of two is the lower one
        ([float(v) for v in range(1, 11)], 5.0, 9.0),
        ([float(v) for v in range(1, 12)], 6.0, 10.0),
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], p50: float, p90: float) -> None:
    """Test that p50 and p90 are values that occurred, by the nearest-rank rule
    docs/reports.md states, worked here by hand."""
    assert (nearest_rank(values, 50), nearest_rank(values, 90)) == (p50, p90)


@pytest.mark.parametrize(
    ("action", "detail", "counted"),
    [
        (
            "escalated",
            {"step": "unacknowledged", "waited_for": "acknowledged"},
            ("unacknowledged", "not acknowledged in time"),
        ),
        (
            "escalated",
            {
                "step": "not_on_scene",
                "waited_for": "on_scene",
                "early": "nobody to send: no free carer on shift",
            },
            ("not_on_scene", "nobody to send: no free carer on shift"),
        ),
        (
            "no_answer",
            {"carer": "C003", "step": "unaccepted", "waited_s": 120.0},
            ("unaccepted", "carer did not accept in time"),
        ),
        ("unreachable", {"carer": "C003", "why": "Twilio 30003"}, ("unreachable", "Twilio 30003")),
        (
            "nobody_to_send",
            {"why": "no free carer on shift with lift"},
            ("nobody_to_send", "no free carer on shift with lift"),
        ),
        ("alert_operators", {"why": "no operator has taken it after 45 s"}, None),
        ("declined", {"carer": "C003"}, None),
    ],
)
def test_which_history_entries_count_as_escalations_and_why(
    action: str, detail: dict[str, Any], counted: tuple[str, str] | None
) -> None:
    """Test the step and reason each kind of history entry is counted under, and that
    the actions a step runs (alerts, texts) and a carer's own decline are not counted
    again."""
    assert escalation_of(action, detail) == counted


async def test_a_simulated_week_reports_the_figures_recomputed_from_the_raw_rows(
    api: Api,
) -> None:
    """Test that after a week of calls worked through the real desk (late answers,
    declines, a carer who never answers, escalations, a fall, cancels, one call still
    open) the report's district, station and carer figures, in JSON and CSV, equal the
    figures recomputed from the raw rows; a shorter period leaves Monday out."""
    open_call = await _simulated_week(api)
    raw = await _raw(api)
    now = api.clock.now()

    reply = await api.get(f"/api/reports?from={WEEK[0]}&to={WEEK[1]}", who="zhao.min")
    assert reply.status == 200, reply.body
    found = reply.body
    want = _expected(raw, *WEEK, now)
    assert found["district"] == want["district"]
    assert found["stations"] == want["stations"]
    assert found["carers"] == want["carers"]
    assert (found["from"], found["to"], found["timezone"]) == (*WEEK, "Asia/Shanghai")
    assert found["starts_at"] == "2026-11-22T16:00:00.000Z"
    assert found["ends_at"] == "2026-11-29T16:00:00.000Z"
    assert found["service_circle_min"] == 15.0

    # The week really has what the report is meant to measure.
    district = found["district"]
    assert district["calls"] == 12
    assert district["by_type"] == {
        "emergency": 9,
        "fall": 1,
        "service_request": 1,
        "device_offline": 0,
        "low_battery": 1,
        "device_clock": 0,
        "voice": 0,
    }
    assert (district["handled"], district["cancelled"], district["open"]) == (11, 2, 1)
    assert district["resolution_rate"] == round(9 / 11, 4)
    assert district["on_scene"]["calls"] == 8
    # Sunday's call, open 17 minutes without a carer at the door, is a miss already.
    assert district["on_scene_within_circle"]["of"] == 8 + 1
    steps = {e["step"] for e in district["escalations"]["by_step"]}
    assert {"unacknowledged", "unaccepted", "not_on_scene"} <= steps
    assert sum(c["declined"] for c in found["carers"]) == 1
    assert sum(c["no_answer"] for c in found["carers"]) == 1
    assert open_call in {c.id for c in raw["calls"] if c.closed_at is None}

    by_station = await api.get(f"/api/reports.csv?from={WEEK[0]}&to={WEEK[1]}", who="zhao.min")
    assert by_station.status == 200
    assert by_station.headers["Content-Type"].startswith("text/csv")
    assert by_station.headers["Content-Disposition"] == (
        f'attachment; filename="report-station-{WEEK[0]}-to-{WEEK[1]}.csv"'
    )
    table = _csv(by_station.body)
    assert [r["station"] for r in table] == [s["code"] for s in want["stations"]] + ["district"]
    for r, f in zip(table, [*want["stations"], want["district"]], strict=True):
        assert r["calls"] == str(f["calls"])
        assert [r[t] for t in TYPES] == [str(f["by_type"][t]) for t in TYPES]
        assert r["ack_60s"] == str(f["acknowledged_within_60s"]["count"])
        assert r["ack_60s_of"] == str(f["acknowledged_within_60s"]["of"])
        assert r["ack_180s_share"] == _cell(f["acknowledged_within_180s"]["share"])
        assert r["on_scene_p50_s"] == _cell(f["on_scene"]["p50_s"])
        assert r["on_scene_p90_s"] == _cell(f["on_scene"]["p90_s"])
        assert r["on_scene_max_s"] == _cell(f["on_scene"]["max_s"])
        assert r["on_scene_within_circle_share"] == _cell(f["on_scene_within_circle"]["share"])
        assert r["escalations"] == str(f["escalations"]["entries"])
        assert r["escalated_calls"] == str(f["escalations"]["calls"])
        assert r["escalations_by_step"] == "; ".join(
            f"{e['step']} ({e['reason']}): {e['count']}" for e in f["escalations"]["by_step"]
        )
        assert r["handled"] == str(f["handled"])
        assert r["resolved"] == str(f["resolved"])
        assert r["resolution_rate"] == _cell(f["resolution_rate"])

    by_carer = await api.get(
        f"/api/reports.csv?from={WEEK[0]}&to={WEEK[1]}&by=carer", who="sun.admin"
    )
    assert by_carer.status == 200
    assert _csv(by_carer.body) == [
        {("carer" if k == "code" else k): _cell(v) for k, v in c.items()} for c in want["carers"]
    ]

    # From Tuesday on: Monday's three calls are left out, the rest recomputed alike.
    later = await api.get("/api/reports?from=2026-11-24&to=2026-11-29", who="zhao.min")
    assert later.status == 200, later.body
    want_later = _expected(raw, "2026-11-24", "2026-11-29", now)
    assert later.body["district"] == want_later["district"]
    assert later.body["carers"] == want_later["carers"]
    assert later.body["district"]["calls"] == 9


async def test_an_empty_period_reports_zeros_and_no_shares(api: Api) -> None:
    """Test that a period without calls lists every station with zero calls and no
    shares (None, not 0 %), and no carers; the CSV still has its header row."""
    reply = await api.get("/api/reports?from=2026-10-01&to=2026-10-31", who="zhao.min")
    assert reply.status == 200, reply.body
    district = reply.body["district"]
    assert district["calls"] == 0
    assert district["acknowledged_within_60s"] == {"count": 0, "of": 0, "share": None}
    assert district["on_scene"] == {"calls": 0, "p50_s": None, "p90_s": None, "max_s": None}
    assert district["resolution_rate"] is None
    assert reply.body["carers"] == []
    assert len(reply.body["stations"]) == 9
    assert all(s["calls"] == 0 for s in reply.body["stations"])
    carers_csv = await api.get(
        "/api/reports.csv?from=2026-10-01&to=2026-10-31&by=carer", who="zhao.min"
    )
    lines = carers_csv.body.lstrip("\ufeff").splitlines()
    assert lines[0].startswith("carer,name,station,dispatched")
    assert len(lines) == 1


@pytest.mark.parametrize("path", ["/api/reports", "/api/reports.csv"])
async def test_operators_may_not_read_reports_supervisors_and_admins_may(
    api: Api, path: str
) -> None:
    """Test that reports are refused to operators (403 naming their role) and to
    nobody signed in (401), and given to supervisors and administrators."""
    query = f"{path}?from=2026-11-23&to=2026-11-23"
    refused = await api.get(query, who="li.na")
    assert refused.status == 403, refused.body
    assert "supervisor" in refused.body["message"]
    assert (await api.get(query, who=None)).status == 401
    assert (await api.get(query, who="zhao.min")).status == 200
    assert (await api.get(query, who="sun.admin")).status == 200


# A missing, malformed, reversed or over-long period, and the parameter each names.
BAD_PERIODS = {
    "": "from",
    "from=2026-11-23": "to",
    "from=yesterday&to=2026-11-23": "from",
    "from=2026-11-23&to=20261130": "to",
    "from=2026-02-30&to=2026-03-01": "from",
    "from=2026-11-29&to=2026-11-23": "to",  # reversed
    "from=2025-01-01&to=2026-01-02": "to",  # 367 days
}


async def test_a_bad_period_is_refused_saying_what_is_wrong(api: Api) -> None:
    """Test that a missing, malformed, reversed or over-long period is a 400 naming the
    parameter, in JSON and CSV alike. (One server for every period: each is a request,
    and a refused request changes nothing for the next.)"""
    answers = {}
    for query in BAD_PERIODS:
        for path in ("/api/reports", "/api/reports.csv"):
            reply = await api.get(f"{path}?{query}", who="zhao.min")
            answers[path, query] = (reply.status, reply.body.get("field"))
    assert answers == {
        (path, query): (400, field)
        for query, field in BAD_PERIODS.items()
        for path in ("/api/reports", "/api/reports.csv")
    }
    year = await api.get("/api/reports?from=2024-01-01&to=2024-12-31", who="zhao.min")
    assert year.status == 200, "a leap year of 366 days is allowed"


async def test_csv_by_must_be_station_or_carer(api: Api) -> None:
    """Test that an unknown ?by= is refused with the allowed values."""
    reply = await api.get("/api/reports.csv?from=2026-11-23&to=2026-11-23&by=day", who="zhao.min")
    assert reply.status == 400
    assert reply.body["allowed"] == ["station", "carer"]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+8613800000000", "'+8613800000000"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\n=1", "'\n=1"),
        ("Lotus Station", "Lotus Station"),
        ("王秀英", "王秀英"),
        ("", ""),
        (-5, -5),  # the server's own numbers stay numbers
        (-0.25, -0.25),
        (12, 12),
        (None, ""),
    ],
)
def test_a_text_cell_a_spreadsheet_would_run_is_written_as_text(value: Any, written: Any) -> None:
    """Test that a text cell starting with =, +, -, @, tab, CR or LF gets a leading
    apostrophe (a spreadsheet shows it as text and runs nothing), and that other text and
    every number the server writes are written as they are."""
    assert spreadsheet_cell(value) == written


async def test_names_in_the_csv_cannot_run_in_a_spreadsheet(api: Api) -> None:
    """Test that a station and a carer named like spreadsheet formulas come out of both
    CSV downloads as text (a leading apostrophe), while their figures stay numbers."""
    call_id = await api.press("H0001")
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    async with AsyncSession(api.server.engine) as session, session.begin():
        station_id = await session.scalar(select(m.Carer.station_id).where(m.Carer.code == carer))
        await session.execute(
            update(m.Carer).where(m.Carer.code == carer).values(name='=HYPERLINK("http://x")')
        )
        await session.execute(
            update(m.Station).where(m.Station.id == station_id).values(name="@SUM(A1:A9)")
        )
    day = MONDAY_MORNING.date().isoformat()
    period = f"from={day}&to={day}"
    stations = _csv((await api.get(f"/api/reports.csv?{period}", who="zhao.min")).body)
    carers = _csv((await api.get(f"/api/reports.csv?{period}&by=carer", who="zhao.min")).body)
    assert "'@SUM(A1:A9)" in [row["name"] for row in stations]
    assert [row["name"] for row in carers if row["carer"] == carer] == ['\'=HYPERLINK("http://x")']
    district = next(row for row in stations if row["station"] == "district")
    assert district["calls"] == "1"
    for row in stations + carers:
        assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for cell in row.values())


@pytest.mark.page
async def test_the_chart_page_shows_a_week_to_a_supervisor_only(
    api: Api, open_tab: OpenTab
) -> None:
    """Test that in headless Chromium a supervisor who signs in sees the period's charts,
    station table and CSV links; an operator gets the 403 page; nobody signed in is sent
    to /login. Saves test-artifacts/reports.png."""
    await _quick_call(api, "H0001", ack_s=20, accept_s=50, scene_s=400)
    await _quick_call(api, "H0450", ack_s=90, accept_s=100, scene_s=700)
    base = api.server.web_url.rstrip("/")
    for username in ("zhao.min", "li.na"):
        await set_password(api.server, username)

    stranger = await open_tab()
    await stranger.page.goto(base + "/reports")
    await expect(stranger.page).to_have_url(base + "/login")

    operator = await open_tab()
    await _sign_in(operator.page, base, "li.na")
    answer = await operator.page.goto(base + "/reports")
    assert answer is not None and answer.status == 403
    await expect(operator.page.locator("body")).to_contain_text("supervisors")

    tab = await open_tab(viewport=(1400, 1100))
    page = tab.page
    await _sign_in(page, base, "zhao.min")
    await page.goto(f"{base}/reports?from={WEEK[0]}&to={WEEK[1]}")
    await expect(page.locator("body")).to_have_attribute("data-state", "shown")
    await expect(page.locator("#title")).to_have_text("服务报表")
    await expect(page.locator("#stations tbody tr")).to_have_count(10)  # 9 stations + total
    await expect(page.locator("#stations tr.total td").nth(2)).to_have_text("2")
    assert await page.locator("#chart-ack svg rect").count() > 0
    assert await page.locator("#carers tbody tr").count() >= 2
    href = await page.locator("#csv-station").get_attribute("href")
    assert href == f"/api/reports.csv?from={WEEK[0]}&to={WEEK[1]}&by=station"
    async with page.expect_download() as download:
        await page.click("#csv-carer")
    assert (await download.value).suggested_filename.startswith("report-carer-")
    await page.click("#lang-toggle")
    await expect(page.locator("#title")).to_have_text("Service reports")
    await page.click("#lang-toggle")
    await tab.screenshot("reports")
    assert tab.errors == []


async def _sign_in(page: Any, base: str, username: str) -> None:
    await page.goto(base + "/login")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/board")


@pytest.mark.parametrize(
    ("action", "detail", "code"),
    [
        ("escalated", {"step": "unacknowledged", "waited_for": "acknowledged"}, "not_taken"),
        ("escalated", {"step": "unaccepted", "waited_for": "accepted"}, "nobody_accepted"),
        ("escalated", {"step": "not_on_scene", "waited_for": "on_scene"}, "not_on_scene"),
        ("escalated", {"step": "still_open", "waited_for": "closed"}, "still_open"),
        (
            "escalated",
            {
                "step": "not_on_scene",
                "waited_for": "on_scene",
                "early": "no free carer on shift",
                "because": {"reason": "no_free_carer"},
            },
            "no_free_carer",
        ),
        ("no_answer", {"carer": "C003", "step": "unaccepted"}, "not_accepted"),
        ("unreachable", {"carer": "C003", "why": "Twilio 30003"}, "unreachable"),
        (
            "nobody_to_send",
            {"why": "notify_family: no contact number", "because": {"reason": "no_contact"}},
            "no_contact",
        ),
        # History written before the codes: the page shows the English reason.
        ("nobody_to_send", {"why": "no free carer on shift"}, None),
        ("escalated", {"step": "x", "waited_for": "on_scene", "early": "nobody to send"}, None),
    ],
)
def test_each_escalation_reason_has_a_code_for_the_pages(
    action: str, detail: dict[str, Any], code: str | None
) -> None:
    """Test the reason code the reports page says in its language, for each kind of
    escalation entry, and none for history written before the codes."""
    assert reason_code(action, detail) == code
