"""Service levels: the pure definitions on tables, then GET /api/service-levels on a
handful of calls whose moments the virtual clock fixes, against figures worked by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from callcenter.domain.response_times import CallTimes, median_s, resolution_rate, share_within
from callcenter.web.service_levels import day_bounds
from tests.api_support import Api
from tests.ingest_support import eventually

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _times(
    ack_s: float | None, age_s: float, on_scene_s: float | None = None, call_id: int = 1
) -> CallTimes:
    return CallTimes(call_id, "emergency", age_s, ack_s, None, on_scene_s)


def test_a_local_day_runs_from_local_midnight_to_local_midnight() -> None:
    """Test that a day of the district is its local calendar day, not the UTC one."""
    start, end = day_bounds(date(2026, 11, 23), SHANGHAI)
    assert start == datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("calls", "share"),
    [
        ([], None),
        ([_times(20, 300)], 1.0),
        ([_times(61, 300)], 0.0),
        ([_times(60, 300)], 1.0),  # exactly on the target counts as within
        ([_times(None, 61)], 0.0),  # still unanswered after the target: a miss already
        ([_times(None, 30)], None),  # unanswered for 30 s: not known yet
        ([_times(None, 20), _times(10, 40)], 1.0),  # closed at 20 s unanswered: not counted
        ([_times(20, 300), _times(90, 300), _times(None, 100)], 0.3333),
    ],
)
def test_the_share_within_a_target_counts_only_calls_whose_answer_is_known(
    calls: list[CallTimes], share: float | None
) -> None:
    """Test that the share acknowledged within 60 s counts calls acknowledged (in time or
    late) and calls left unacknowledged longer than 60 s, and nothing else."""
    assert share_within(calls, "ack_s", 60) == share


def test_medians_leave_out_calls_that_never_got_there() -> None:
    """Test that a median is over the calls that reached the moment, None without any."""
    assert median_s([20, None, 90]) == 55.0
    assert median_s([None, None]) is None


def test_the_resolution_rate_is_resolved_among_closed_calls() -> None:
    """Test that the resolution rate counts resolved calls among the closed ones (a
    cancelled call is closed, not resolved) and is None when nothing closed."""
    assert resolution_rate([]) is None
    assert resolution_rate(["resolved", "cancelled", "resolved"]) == 0.6667
    assert resolution_rate(["cancelled"]) == 0.0


async def _post(api: Api, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    reply = await api.post(path, body)
    assert reply.status == 200, reply.body
    detail: dict[str, Any] = reply.body
    return detail


async def _report(api: Api, call_id: int, status: str) -> None:
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    await _post(api, f"/api/calls/{call_id}/carers/{carer}/status", {"status": status})


async def _advance(api: Api, seconds: float) -> None:
    api.clock.advance(timedelta(seconds=seconds))


async def test_service_levels_of_three_calls_match_the_figures_worked_by_hand(api: Api) -> None:
    """Test that three calls with moments fixed by the virtual clock give the day's
    figures worked out by hand: shares, medians, the escalation waiting for a
    supervisor and free carers by station; another day has none of them."""
    # t=0 call A; acknowledged at 20 s, accepted at 60 s, on scene and resolved at 300 s.
    a = await api.press("H0001")
    await _advance(api, 20)
    await _post(api, f"/api/calls/{a}/acknowledge")
    await _advance(api, 40)
    await _report(api, a, "accepted")
    await _advance(api, 240)
    await _report(api, a, "on_scene")
    await _post(api, f"/api/calls/{a}/resolve", {"outcome": "helped_at_home"})
    # t=300 calls B and C; nobody takes them for 90 s, so both raise "unacknowledged".
    b = await api.press("H0002")
    c = await api.press("H0003")
    await _advance(api, 90)

    async def alerted() -> bool:
        alerts = [(await api.call(i))["alerts"] for i in (b, c)]
        return all("unacknowledged" in a for a in alerts)

    await eventually(alerted, what="the unacknowledged alerts on both calls")
    # t=390 B acknowledged (90 s) and its alert cleared; t=400 its carer accepts (100 s).
    await _post(api, f"/api/calls/{b}/acknowledge")
    await _advance(api, 10)
    await _report(api, b, "accepted")

    reply = await api.get("/api/service-levels", who="zhao.min")
    assert reply.status == 200, reply.body
    levels = reply.body
    carers = await api.carers()
    stations = [s["code"] for s in (await api.get("/api/board")).body["stations"]]
    assert levels["free_carers_by_station"] == {
        code: sum(1 for c in carers if c["station"] == code and c["state"] == "free")
        for code in stations
    }
    c_detail = await api.call(c)
    assert levels["escalations"] == [
        {
            "call_id": c,
            "household": "H0003",
            "call_type": "emergency",
            "state": c_detail["state"],
            "owner": None,
            "alerts": ["unacknowledged"],
            "opened_at": c_detail["opened_at"],
        }
    ]
    del levels["free_carers_by_station"], levels["escalations"]
    assert levels == {
        "day": "2026-11-23",
        "timezone": "Asia/Shanghai",
        "from": "2026-11-22T16:00:00.000Z",
        "until": "2026-11-23T16:00:00.000Z",
        "at": "2026-11-23T02:06:40.000Z",
        "calls": 3,
        "open_calls": 2,
        "emergencies": 3,
        # A within (20 s); B late (90 s); C unanswered for 100 s: a miss already.
        "acknowledged_within_60s": 0.3333,
        # A and B within; C (100 s so far) not known yet.
        "acknowledged_within_180s": 1.0,
        "median_ack_s": 55.0,  # 20 and 90
        "median_to_accept_s": 80.0,  # 60 and 100
        "median_to_on_scene_s": 300.0,  # A only
        "service_circle_min": 15.0,
        # A at the door in 5 minutes; B and C are not 15 minutes old yet.
        "on_scene_within_15min_share": 1.0,
        # A closed and resolved; B and C still open.
        "closed_calls": 1,
        "resolved_calls": 1,
        "resolution_rate": 1.0,
        "targets": {
            "acknowledged_within_60s": 0.9,
            "acknowledged_within_180s": 0.99,
            "on_scene_within_15min_share": 0.9,
            "resolution_rate": 0.8,
        },
        "open_escalations": 1,
    }

    yesterday = await api.get("/api/service-levels?day=2026-11-22")
    assert yesterday.status == 200, yesterday.body
    assert (yesterday.body["day"], yesterday.body["calls"]) == ("2026-11-22", 0)
    assert yesterday.body["acknowledged_within_60s"] is None
    assert yesterday.body["median_ack_s"] is None
    assert yesterday.body["resolution_rate"] is None
    # Open escalations are the supervisor's queue now, whichever day is asked.
    assert yesterday.body["open_escalations"] == 1


async def test_a_day_that_is_not_a_date_is_refused_with_the_form_expected(api: Api) -> None:
    """Test that ?day= takes only YYYY-MM-DD and says so, with an example. (One server
    for every day: each is a request that changes nothing.)"""
    answers = {}
    for day in ("yesterday", "2026-13-01", "2026-1-5", "20261123", ""):
        reply = await api.get(f"/api/service-levels?day={day}")
        said = "YYYY-MM-DD" in reply.body["message"]
        answers[day] = (reply.status, reply.body.get("field"), said)
    assert answers == dict.fromkeys(answers, (400, "day", True))


async def test_service_levels_need_a_signed_in_operator(api: Api) -> None:
    """Test that the figures, like every /api/ address, need a token."""
    assert (await api.get("/api/service-levels", who=None)).status == 401
