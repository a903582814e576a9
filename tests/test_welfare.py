"""Weekly welfare calls: the list made once a week for residents over the configured age,
outcomes recorded once, missed calls after the week, and who may see what."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.config import WelfareConfig
from callcenter.engine.welfare import age_in_week, week_began, week_of, week_start
from callcenter.store import models as m
from callcenter.web.welfare import welfare_list
from tests.api_support import Api, add_test_operators, api_config, token_of
from tests.desk_support import MONDAY_MORNING, count, running_desk
from tests.ingest_support import eventually

# MONDAY_MORNING is Monday 2026-11-23, 10:00 in Asia/Shanghai.
THIS_WEEK = date(2026, 11, 23)


async def _residents(api: Api) -> dict[int, int]:
    """Every resident's birth year, by id, straight from the register."""
    async with AsyncSession(api.server.engine) as session:
        rows = await session.execute(select(m.Resident.id, m.Resident.birth_year))
        return {resident_id: birth_year for resident_id, birth_year in rows.all()}


def _aged(residents: dict[int, int], monday: date, min_age: int) -> set[int]:
    """Residents who are ``min_age`` or older in the week of ``monday``, worked out here
    from the birth years: old enough in the year the week's Sunday falls in."""
    year = (monday + timedelta(days=6)).year
    return {rid for rid, born in residents.items() if year - born >= min_age}


@pytest.mark.parametrize(
    ("moment", "monday"),
    [
        # Sunday 23:59 in Shanghai is still the old week; a minute later the new one.
        (datetime(2026, 11, 22, 15, 59, tzinfo=UTC), date(2026, 11, 16)),
        (datetime(2026, 11, 22, 16, 0, tzinfo=UTC), date(2026, 11, 23)),
        # Monday 07:59 Shanghai is Sunday 23:59 UTC: the district's week counts.
        (datetime(2026, 11, 29, 23, 59, tzinfo=UTC), date(2026, 11, 30)),
        # A week that spans the new year is named by its Monday in the old one.
        (datetime(2027, 1, 1, 4, 0, tzinfo=UTC), date(2026, 12, 28)),
    ],
)
def test_weeks_start_on_monday_in_the_district(moment: datetime, monday: date) -> None:
    """Test that a moment's week is the Monday of its date in the district's time zone,
    and that the week begins at that Monday's midnight there."""
    zone = ZoneInfo("Asia/Shanghai")
    assert week_of(moment, zone) == monday
    assert week_began(monday, zone) <= moment < week_began(monday + timedelta(days=7), zone)
    assert week_began(monday, zone).astimezone(zone).time().isoformat() == "00:00:00"


@pytest.mark.parametrize(
    ("birth_year", "monday", "age"),
    [
        (1946, date(2026, 11, 23), 80),
        (1947, date(2026, 12, 21), 79),  # that week ends on 2026-12-27
        (1947, date(2026, 12, 28), 80),  # that week ends on 2027-01-03
        (1930, date(2027, 1, 4), 97),
    ],
)
def test_age_in_a_week_is_the_year_its_sunday_falls_in_less_the_birth_year(
    birth_year: int, monday: date, age: int
) -> None:
    """Test the age the list uses, from birth years only."""
    assert age_in_week(birth_year, monday) == age


async def test_the_list_is_made_once_a_week_for_residents_aged_80_or_more(api: Api) -> None:
    """Test that the server makes this week's list on its own, with one due call for
    every resident aged 80 or more, and that reading it again or making it again adds
    nothing."""
    expected = _aged(await _residents(api), THIS_WEEK, 80)
    assert expected, "the demo district has residents over 80"
    assert len(expected) < len(await _residents(api)), "and younger ones, left off"

    async def made() -> bool:
        where = m.WelfareCall.week_start == THIS_WEEK
        return await count(api.server, m.WelfareCall, where) == len(expected)

    await eventually(made, what="the server making this week's list")

    reply = await api.get("/api/welfare")
    assert reply.status == 200, reply
    assert reply.body["week_start"] == "2026-11-23"
    assert reply.body["this_week"] == "2026-11-23"
    assert reply.body["min_age"] == 80
    calls = reply.body["calls"]
    assert {c["resident"]["id"] for c in calls} == expected
    assert reply.body["counts"] == {"due": len(expected), "done": 0, "missed": 0}
    first = calls[0]
    assert first["state"] == "due" and first["outcome"] is None and first["done_by"] is None
    assert first["age"] == 2026 - first["resident"]["birth_year"] >= 80
    assert first["household"]["code"].startswith("H") and first["household"]["address"]
    assert first["contacts"] and first["contacts"][0]["phone"].startswith("+")

    again = await api.get("/api/welfare?week=2026-11-26")  # any day names its week
    assert [c["id"] for c in again.body["calls"]] == [c["id"] for c in calls]
    assert (
        await welfare_list(api.server.config, api.server.engine, api.server.clock).make_week(
            THIS_WEEK
        )
        == 0
    )
    assert await count(api.server, m.WelfareCall) == len(expected)


async def test_ages_are_reckoned_in_the_week_so_a_new_year_brings_new_names(api: Api) -> None:
    """Test that residents who turn 80 in the coming year join the list in the week that
    ends in that year, made by the server's own task when the clock reaches it, with
    their age in that week."""
    residents = await _residents(api)
    new_year_week = date(2026, 12, 28)  # Monday; its Sunday is 2027-01-03
    assert week_start(date(2027, 1, 3)) == new_year_week
    turning = {rid for rid, born in residents.items() if born == 1947}
    assert turning, "the demo district has residents born in 1947"
    this_week = (await api.get("/api/welfare")).body["calls"]
    assert not turning & {c["resident"]["id"] for c in this_week}

    api.clock.advance(timedelta(weeks=5))

    async def made() -> bool:
        where = m.WelfareCall.week_start == new_year_week
        return await count(api.server, m.WelfareCall, where) == len(
            _aged(residents, new_year_week, 80)
        )

    await eventually(made, what="the list for the week of 2026-12-28")
    calls = (await api.get("/api/welfare")).body["calls"]
    assert {c["resident"]["id"] for c in calls} == _aged(residents, new_year_week, 80)
    for call in calls:
        assert call["age"] == age_in_week(call["resident"]["birth_year"], new_year_week)
        if call["resident"]["id"] in turning:
            assert call["age"] == 80


async def test_min_age_comes_from_the_configuration(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with [welfare] min_age = 90 only residents aged 90 or more are listed."""
    config = api_config(broker, topic_prefix, seeded_database_url)
    config = config.model_copy(update={"welfare": WelfareConfig(min_age=90)})
    async with (
        running_desk(config, ManualClock(MONDAY_MORNING)) as server,
        aiohttp.ClientSession(base_url=server.web_url) as http,
    ):
        await add_test_operators(server)
        headers = {"Authorization": f"Bearer {token_of('li.na')}"}
        async with http.get("/api/welfare", headers=headers) as reply:
            assert reply.status == 200
            body = await reply.json()
        async with AsyncSession(server.engine) as session:
            born = dict((await session.execute(select(m.Resident.id, m.Resident.birth_year))).all())
    assert body["min_age"] == 90
    ids = {c["resident"]["id"] for c in body["calls"]}
    assert ids == _aged(born, THIS_WEEK, 90)
    assert ids, "the demo district has residents aged 90 or more"
    assert ids < _aged(born, THIS_WEEK, 80)
    assert all(c["age"] >= 90 for c in body["calls"])


async def test_an_outcome_is_recorded_once_and_a_second_try_names_who_did_it(api: Api) -> None:
    """Test that an operator records a welfare call's outcome (done, by them, now), that
    a second operator gets 409 naming the first, and that both the list read and the
    outcome are in the audit log."""
    first = (await api.get("/api/welfare")).body["calls"][0]
    done = await api.post(
        f"/api/welfare/{first['id']}", {"outcome": "needs_visit", "note": "膝盖疼，想请护工来看看"}
    )
    assert done.status == 200, done
    assert done.body["state"] == "done"
    assert done.body["outcome"] == "needs_visit"
    assert done.body["note"] == "膝盖疼，想请护工来看看"
    assert done.body["done_by"] == "operator:li.na"
    assert done.body["done_at"] == "2026-11-23T02:00:00.000Z"
    assert done.body["late"] is False

    second = await api.post(f"/api/welfare/{first['id']}", {"outcome": "well"}, who="wang.wei")
    assert second.status == 409
    assert second.body["error"] == "already_done"
    assert second.body["done_by"] == "operator:li.na"
    assert "operator:li.na" in second.body["message"]

    listed = (await api.get("/api/welfare?state=done")).body
    assert [c["id"] for c in listed["calls"]] == [first["id"]]
    assert listed["calls"][0]["outcome"] == "needs_visit"
    assert listed["counts"]["done"] == 1

    audit = (await api.get("/api/audit?actor=operator:li.na", who="sun.admin")).body["entries"]
    actions = [(e["action"], e["household"]) for e in audit]
    assert ("record_welfare_call", first["household"]["code"]) in actions
    reads = [e for e in audit if e["action"] == "read_welfare_list"]
    assert len(reads) == 2  # one row per list read, not one per household
    assert first["household"]["code"] in reads[-1]["detail"]["households"]
    wang = (await api.get("/api/audit?actor=operator:wang.wei", who="sun.admin")).body["entries"]
    assert not [e for e in wang if e["action"] == "record_welfare_call"]


async def test_two_operators_recording_at_once_one_wins_and_the_other_is_told(
    api: Api,
) -> None:
    """Test that two operators recording the same welfare call at the same moment get one
    200 and one 409 naming the winner, and the call keeps the winner's outcome."""
    first = (await api.get("/api/welfare")).body["calls"][0]
    path = f"/api/welfare/{first['id']}"
    replies = await asyncio.gather(
        api.post(path, {"outcome": "well"}, who="li.na"),
        api.post(path, {"outcome": "no_answer"}, who="wang.wei"),
    )
    assert sorted(r.status for r in replies) == [200, 409]
    won = next(r for r in replies if r.status == 200)
    lost = next(r for r in replies if r.status == 409)
    assert lost.body["done_by"] == won.body["done_by"]
    done = (await api.get("/api/welfare?state=done")).body["calls"]
    assert [(c["id"], c["outcome"]) for c in done] == [(first["id"], won.body["outcome"])]


async def test_calls_left_due_become_missed_when_the_week_ends(api: Api) -> None:
    """Test that after the week ends its undone calls are missed, shown to supervisors
    with ?state=missed and counted, while operators may not list them; a missed call can
    still be recorded late, and a done one stays done."""
    calls = (await api.get("/api/welfare")).body["calls"]
    made, left = calls[0], calls[1:]
    assert (await api.post(f"/api/welfare/{made['id']}", {"outcome": "well"})).status == 200

    api.clock.advance(timedelta(days=7))

    async def missed() -> bool:
        where = m.WelfareCall.state == m.WelfareState.MISSED
        return await count(api.server, m.WelfareCall, where) == len(left)

    await eventually(missed, what="last week's due calls becoming missed")
    supervisor = await api.get("/api/welfare?state=missed", who="zhao.min")
    assert supervisor.status == 200
    assert supervisor.body["week_start"] is None
    assert {c["id"] for c in supervisor.body["calls"]} == {c["id"] for c in left}
    assert all(c["week_start"] == "2026-11-23" for c in supervisor.body["calls"])
    assert supervisor.body["missed_total"] == len(left)

    operator = await api.get("/api/welfare?state=missed")
    assert operator.status == 403
    assert "supervisor" in operator.body["message"]
    assert "missed_total" not in (await api.get("/api/welfare")).body

    last_week = (await api.get("/api/welfare?week=2026-11-23")).body
    assert last_week["counts"] == {"due": 0, "done": 1, "missed": len(left)}
    this_week = (await api.get("/api/welfare", who="zhao.min")).body
    assert this_week["week_start"] == "2026-11-30"
    assert this_week["counts"]["due"] == len(calls)
    assert this_week["missed_total"] == len(left)

    late = await api.post(f"/api/welfare/{left[0]['id']}", {"outcome": "no_answer"})
    assert late.status == 200
    assert late.body["state"] == "done" and late.body["late"] is True
    still = await api.get("/api/welfare?state=missed", who="zhao.min")
    assert still.body["missed_total"] == len(left) - 1


async def test_only_signed_in_desk_staff_reach_the_welfare_calls(api: Api) -> None:
    """Test that no token is 401, an inactive operator 403, and every role from
    operator up may read the list and record outcomes."""
    assert (await api.get("/api/welfare", who=None)).status == 401
    assert (await api.post("/api/welfare/1", {"outcome": "well"}, who=None)).status == 401
    assert (await api.get("/api/welfare", who="old.hand")).status == 403
    for who in ("li.na", "zhao.min", "sun.admin"):
        assert (await api.get("/api/welfare", who=who)).status == 200
    calls = (await api.get("/api/welfare")).body["calls"]
    admin = await api.post(f"/api/welfare/{calls[0]['id']}", {"outcome": "well"}, who="sun.admin")
    assert admin.status == 200
    assert admin.body["done_by"] == "supervisor:sun.admin"


async def test_bad_outcomes_are_refused_with_the_field_named(api: Api) -> None:
    """Test that a wrong, missing or extra field, or an id that is not a number, is a 400
    that names the field and, for the outcome, every allowed value; and that after each
    refusal the call is still due. (One server for all: each refusal changes nothing.)"""
    calls = (await api.get("/api/welfare")).body["calls"]
    first = f"/api/welfare/{calls[0]['id']}"
    bad: list[tuple[str, dict[str, str], str | None]] = [
        (first, {"outcome": "fine"}, "outcome"),
        (first, {}, "outcome"),
        (first, {"outcome": "well", "mood": "good"}, "mood"),
        (first, {"outcome": "well", "note": "x" * 2001}, "note"),
        ("/api/welfare/abc", {"outcome": "well"}, None),
    ]
    for path, body, field in bad:
        reply = await api.post(path, body)
        assert reply.status == 400, (body, reply)
        if field is not None:
            assert [p["field"] for p in reply.body["problems"]] == [field], (body, reply)
        if field == "outcome":
            assert reply.body["problems"][0]["allowed"] == [
                "well", "needs_visit", "no_answer", "in_hospital", "other",
            ]  # fmt: skip
        still = await api.get(f"/api/welfare?state=due&week={THIS_WEEK}")
        assert calls[0]["id"] in {c["id"] for c in still.body["calls"]}, body


async def test_bad_queries_and_unknown_calls_are_refused(api: Api) -> None:
    """Test that a week that is not a date or an unknown state is a 400 saying what to
    write, a body that is not JSON a 400, and an unknown welfare call a 404."""
    week = await api.get("/api/welfare?week=last-monday")
    assert week.status == 400 and week.body["field"] == "week"
    assert "2026-11-23" in week.body["message"]
    state = await api.get("/api/welfare?state=late")
    assert state.status == 400 and state.body["allowed"] == ["due", "done", "missed"]
    garbled = await api.request("POST", "/api/welfare/1", data="outcome=well")
    assert garbled.status == 400 and "JSON" in garbled.body["message"]
    unknown = await api.post("/api/welfare/987654", {"outcome": "well"})
    assert unknown.status == 404 and "987654" in unknown.body["message"]
