"""The operator API end to end: a real mosquitto, a real seeded database, the whole
server on a virtual clock, and HTTP requests against the port it serves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

import aiohttp
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.calls import CancelReason, Outcome
from callcenter.domain.events import EventKind
from callcenter.store import models as m
from callcenter.store.db import write_locked, write_turn
from device_sim.demo_district import build_demo_district
from tests.api_support import Api


def _actions(detail: dict[str, object]) -> list[str]:
    history = detail["history"]
    assert isinstance(history, list)
    return [entry["action"] for entry in history]


async def _free_carer(api: Api, *, not_in: Collection[str] = ()) -> str:
    free = [
        c["code"] for c in await api.carers() if c["state"] == "free" and c["code"] not in not_in
    ]
    assert free, "no free carer on MONDAY_MORNING"
    return str(free[0])


# --- signing in --------------------------------------------------------------------


async def test_requests_without_a_valid_token_are_refused(api: Api) -> None:
    """Test that the API answers 401 without a token, with a malformed header or an unknown
    token, 403 for an inactive operator, and names the signed-in operator otherwise."""
    missing = await api.get("/api/calls", who=None)
    assert missing.status == 401
    assert missing.body["error"] == "unauthorised"
    assert "Bearer" in missing.body["message"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"

    basic = await api.request(
        "GET", "/api/calls", who=None, headers={"Authorization": "Basic eDp5"}
    )
    assert basic.status == 401
    assert "Bearer <token>" in basic.body["message"]

    wrong = await api.request(
        "GET", "/api/calls", who=None, headers={"Authorization": "Bearer not-a-real-token"}
    )
    assert wrong.status == 401
    assert "not valid" in wrong.body["message"]

    too_long = await api.request(
        "GET", "/api/carers", who=None, headers={"Authorization": "Bearer " + "x" * 500}
    )
    assert too_long.status == 401

    inactive = await api.get("/api/calls", who="old.hand")
    assert inactive.status == 403
    assert "old.hand" in inactive.body["message"]

    me = await api.get("/api/me", who="zhao.min")
    assert me.status == 200
    assert me.body == {
        "username": "zhao.min",
        "name": "赵敏",
        "role": "supervisor",
        "actor": "supervisor:zhao.min",
        "phone": "+8613900000001",
        "language": "zh",
        "csrf_token": None,  # a bearer token needs none; the board's cookie does
        "timezone": "Asia/Shanghai",
        # The district's date by the server's clock (Monday 10:00 there; 02:00 UTC).
        "today": "2026-11-23",
        "map": {"tiles_url": "", "attribution": ""},
    }
    assert (await api.get("/api/me")).body["phone"] is None  # li.na keeps none
    # An unknown address under /api/ is not revealed to a caller without a token.
    assert (await api.get("/api/nothing-here", who=None)).status == 401


# --- reading -------------------------------------------------------------------------


async def test_a_press_shows_in_the_list_and_in_detail(api: Api) -> None:
    """Test that a press raises a call that the list shows with its carer and next
    deadline, and whose detail has the household, history, carers, timers and outbox."""
    call_id = await api.press("H0001")

    listed = await api.get("/api/calls")
    assert listed.status == 200
    assert listed.body["state"] == "open"
    [summary] = [c for c in listed.body["calls"] if c["id"] == call_id]
    assert summary["household"]["code"] == "H0001"
    assert summary["household"]["address"].startswith("西宁市")
    assert summary["call_type"] == "emergency"
    assert summary["priority"] == 1
    assert summary["state"] == "dispatched"
    assert summary["owner"] is None
    assert summary["opened_at"] == "2026-11-23T02:00:00.000Z"
    assert summary["acknowledged_at"] is None
    [carer] = summary["carers"]
    assert carer["state"] == "dispatched"
    assert carer["travel_min"] > 0
    assert summary["next_deadline"]["step"] == "unacknowledged"
    assert summary["next_deadline"]["due_at"] == "2026-11-23T02:00:30.000Z"

    detail = await api.call(call_id)
    household = detail["household"]
    assert household["code"] == "H0001"
    assert household["address"]
    assert household["home_station"] == "S06"
    assert household["residents"] and household["residents"][0]["name"]
    assert [f["phone"] for f in household["family"]] == ["+8615511644794", "+8615849103071"]
    assert {d["serial"] for d in household["devices"]} == {"BU-H0001", "CB-H0001"}
    assert _actions(detail)[:2] == ["raised", "dispatched"]
    raised = detail["history"][0]
    assert raised["actor"] == "device:CB-H0001"
    assert (raised["from_state"], raised["to_state"]) == (None, "raised")
    assert detail["assignments"][0]["carer"] == carer["code"]
    assert detail["assignments"][0]["dispatched_by"] == "system:engine"
    assert {t["step"] for t in detail["timers"]} >= {"unacknowledged", "unaccepted"}
    sms = [o for o in detail["outbox"] if o["channel"] == "sms"]
    assert sms and sms[0]["recipient"] == f"carer:{carer['code']}"
    assert "H0001" in sms[0]["body"]


async def test_the_call_detail_gives_the_numbers_that_reach_the_household(api: Api) -> None:
    """Test that a call's detail lists the household's numbers in the order to try them,
    the base unit's SIM first, as the register holds them (the demo district's), and
    leaves out a number written into the register by hand that could not be dialled."""
    [h1, h2] = build_demo_district().households[:2]
    # Written as the server's own writers write (in turn, the write lock taken at once):
    # a plain transaction that reads and then writes is refused outright by SQLite when
    # another writer holds the database at that moment.
    engine = api.server.engine
    async with write_turn(engine), AsyncSession(write_locked(engine)) as session, session.begin():
        household_id = await session.scalar(
            select(m.Household.id).where(m.Household.code == "H0002")
        )
        await session.execute(
            insert(m.HouseholdPhone).values(
                household_id=household_id, position=9, kind="landline", number="0971-6123456"
            )
        )
    first = await api.call(await api.press("H0001"))
    second = await api.call(await api.press("H0002"))

    assert first["household"]["phones"] == [
        {"kind": n.kind, "number": n.number, "label": n.label} for n in h1.phones
    ]
    assert first["household"]["phones"][0]["kind"] == "unit"
    assert any(p["kind"] == "mobile" and p["label"] for p in first["household"]["phones"])
    assert [p["number"] for p in second["household"]["phones"]] == [n.number for n in h2.phones]


async def test_open_calls_are_sorted_by_priority_then_presses_then_age(api: Api) -> None:
    """Test that the list puts the most urgent call first: priority, then the most presses,
    then the oldest; closed calls are listed only when asked for."""
    request = await api.press("H0003", EventKind.SERVICE_REQUEST)
    first = await api.press("H0001")
    pressed_twice = await api.press("H0002", times=2)

    listed = (await api.get("/api/calls")).body["calls"]
    assert [c["id"] for c in listed] == [pressed_twice, first, request]
    assert [c["presses"] for c in listed] == [2, 1, 1]

    assert (await api.get("/api/calls?state=closed")).body["calls"] == []
    everything = await api.get("/api/calls?state=all&limit=5")
    assert len(everything.body["calls"]) == 3


# --- acknowledging and ownership ---------------------------------------------------


async def test_two_operators_acknowledging_one_call_at_once_get_one_owner(api: Api) -> None:
    """Test that when two operators acknowledge the same call at the same moment, exactly
    one gets 200 and owns the call, and the other gets a 409 that names the owner."""
    call_id = await api.press("H0001")

    replies = await asyncio.gather(
        api.post(f"/api/calls/{call_id}/acknowledge", who="li.na"),
        api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei"),
    )
    assert sorted(r.status for r in replies) == [200, 409]
    won = next(r for r in replies if r.status == 200)
    lost = next(r for r in replies if r.status == 409)
    owner = won.body["owner"]
    assert owner in ("operator:li.na", "operator:wang.wei")
    assert lost.body["error"] == "already_owned"
    assert lost.body["owner"] == owner
    assert owner in lost.body["message"]

    detail = await api.call(call_id)
    assert detail["owner"] == owner
    assert detail["acknowledged_at"] == "2026-11-23T02:00:00.000Z"
    assert _actions(detail).count("acknowledged") == 1

    again = await api.post(f"/api/calls/{call_id}/acknowledge", who=owner.split(":")[1])
    assert again.status == 409
    assert "already yours" in again.body["message"]


async def test_only_the_owner_or_a_supervisor_may_work_an_owned_call(api: Api) -> None:
    """Test that another operator's dispatch on an owned call is a 409 naming the owner,
    while a supervisor may step in and the owner may carry on."""
    call_id = await api.press("H0001")
    assert (await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")).status == 200

    refused = await api.post(f"/api/calls/{call_id}/dispatch", {}, who="wang.wei")
    assert refused.status == 409
    assert refused.body["error"] == "not_owner"
    assert refused.body["owner"] == "operator:li.na"

    carer = await _free_carer(api)
    allowed = await api.post(f"/api/calls/{call_id}/dispatch", {"carer": carer}, who="zhao.min")
    assert allowed.status == 200, allowed.body
    [sent] = [a for a in allowed.body["assignments"] if a["carer"] == carer]
    assert sent["dispatched_by"] == "supervisor:zhao.min"
    assert allowed.body["owner"] == "operator:li.na"

    # Anyone on the desk may leave a note; it is not taking the call.
    noted = await api.post(f"/api/calls/{call_id}/notes", {"text": "rang the son"}, who="wang.wei")
    assert noted.status == 200


# --- dispatching and carers -----------------------------------------------------------


async def test_a_chosen_carer_is_dispatched_and_reported_through_to_resolution(
    api: Api,
) -> None:
    """Test that an operator sends a carer of their choice, reports the carer's progress
    on their behalf through to on scene, and resolves the call with an outcome."""
    call_id = await api.press("H0001")
    auto = (await api.call(call_id))["assignments"][0]["carer"]
    chosen = await _free_carer(api, not_in={auto})

    sent = await api.post(f"/api/calls/{call_id}/dispatch", {"carer": chosen})
    assert sent.status == 200, sent.body
    assert sent.body["owner"] == "operator:li.na"
    assignment = next(a for a in sent.body["assignments"] if a["carer"] == chosen)
    assert (assignment["state"], assignment["dispatched_by"]) == ("dispatched", "operator:li.na")

    for status in ("accepted", "on_the_way", "on_scene"):
        reply = await api.post(f"/api/calls/{call_id}/carers/{chosen}/status", {"status": status})
        assert reply.status == 200, reply.body
        assert reply.body["state"] == status
        assert reply.body["history"][-1]["actor"] == "operator:li.na"
    carers = {c["code"]: c for c in await api.carers()}
    assert (carers[chosen]["state"], carers[chosen]["call_id"]) == ("on_scene", call_id)

    back = await api.post(f"/api/calls/{call_id}/carers/{chosen}/status", {"status": "accepted"})
    assert back.status == 409
    assert "cannot go back" in back.body["message"]

    resolved = await api.post(
        f"/api/calls/{call_id}/resolve", {"outcome": "helped_at_home", "note": "helped up"}
    )
    assert resolved.status == 200, resolved.body
    assert resolved.body["state"] == "resolved"
    assert resolved.body["outcome"] == Outcome.HELPED_AT_HOME.value
    assert resolved.body["closed_at"] is not None
    assert resolved.body["history"][-1]["detail"] == {
        "outcome": "helped_at_home",
        "note": "helped up",
    }
    assert resolved.body["timers"] == []

    assert call_id not in [c["id"] for c in (await api.get("/api/calls")).body["calls"]]
    closed = (await api.get("/api/calls?state=closed")).body["calls"]
    assert [c["id"] for c in closed] == [call_id]
    late = await api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei")
    assert late.status == 409
    assert "resolved" in late.body["message"]


async def test_a_busy_carer_is_not_sent_to_a_second_call(api: Api) -> None:
    """Test that dispatching a carer who is on another call is a 409 that says where they
    are, so a race for a carer never ends in a double dispatch."""
    first = await api.press("H0001")
    second = await api.press("H0002")
    busy = (await api.call(first))["assignments"][0]["carer"]

    reply = await api.post(f"/api/calls/{second}/dispatch", {"carer": busy})
    assert reply.status == 409
    assert reply.body["error"] == "carer_unavailable"
    assert f"call {first}" in reply.body["message"]
    assert [a["carer"] for a in (await api.call(second))["assignments"]].count(busy) == 0

    # Two operators sending the same free carer to two calls at once: one wins.
    free = await _free_carer(api)
    await api.post(f"/api/calls/{first}/acknowledge", who="li.na")
    await api.post(f"/api/calls/{second}/acknowledge", who="wang.wei")
    raced = await asyncio.gather(
        api.post(f"/api/calls/{first}/dispatch", {"carer": free}, who="li.na"),
        api.post(f"/api/calls/{second}/dispatch", {"carer": free}, who="wang.wei"),
    )
    assert sorted(r.status for r in raced) == [200, 409]
    carers = {c["code"]: c for c in await api.carers()}
    assert carers[free]["call_id"] in (first, second)


async def test_best_free_carer_is_sent_when_none_is_named(api: Api) -> None:
    """Test that a dispatch without a carer sends the best free one once the first carer
    is stood down (with the reason in the history)."""
    call_id = await api.press("H0001")
    first = (await api.call(call_id))["assignments"][0]["carer"]

    stood = await api.post(
        f"/api/calls/{call_id}/carers/{first}/stand-down", {"why": "van broke down"}
    )
    assert stood.status == 200, stood.body
    released = next(a for a in stood.body["assignments"] if a["carer"] == first)
    assert released["state"] == "stood_down"
    entry = next(h for h in stood.body["history"] if h["action"] == "stood_down")
    assert entry["detail"] == {"carer": first, "why": "van broke down"}
    # The desk fills the gap itself; a dispatch with no carer then adds one more.
    refilled = [a["carer"] for a in stood.body["assignments"] if a["state"] == "dispatched"]
    assert len(refilled) == 1 and refilled[0] != first

    again = await api.post(f"/api/calls/{call_id}/carers/{first}/stand-down", {"why": "twice"})
    assert again.status == 409


async def test_notes_and_cancel(api: Api) -> None:
    """Test that a note is kept in the history with its author, and a cancelled call is
    closed with its reason and stands its carer down."""
    call_id = await api.press("H0001")
    noted = await api.post(f"/api/calls/{call_id}/notes", {"text": "  daughter is on her way  "})
    assert noted.status == 200
    note = noted.body["history"][-1]
    assert (note["action"], note["actor"], note["detail"]) == (
        "note",
        "operator:li.na",
        {"text": "daughter is on her way"},
    )

    cancelled = await api.post(
        f"/api/calls/{call_id}/cancel", {"reason": "duplicate", "note": "same as call 1"}
    )
    assert cancelled.status == 200, cancelled.body
    assert cancelled.body["state"] == "cancelled"
    assert cancelled.body["cancel_reason"] == CancelReason.DUPLICATE.value
    assert {a["state"] for a in cancelled.body["assignments"]} == {"stood_down"}


async def test_a_redirect_or_a_page_not_found_is_logged_with_its_own_status(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that an answer raised rather than returned (the board's redirect to the
    sign-in page, a page file that is not there) is logged with the status it went out
    with, not as a 500."""
    base = api.server.web_url
    with caplog.at_level(logging.INFO, logger="callcenter.web"):
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{base}/board", allow_redirects=False) as redirected:
                assert redirected.status == 303
            async with client.get(f"{base}/no-such-page") as missing:
                assert missing.status == 404
    web_lines = [r.getMessage() for r in caplog.records if r.name == "callcenter.web"]
    assert any(line.startswith("GET /board -> 303 by anonymous") for line in web_lines), web_lines
    assert any(line.startswith("GET /no-such-page -> 404") for line in web_lines), web_lines
    assert not any("-> 500" in line for line in web_lines), web_lines


async def test_log_lines_about_a_call_name_the_call_and_household(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that the API's log lines about a call name the call and its household, and a
    refused request says why."""
    call_id = await api.press("H0001")
    with caplog.at_level(logging.INFO, logger="callcenter"):
        await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")
        await api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei")
    web_lines = [r.getMessage() for r in caplog.records if r.name == "callcenter.web"]
    call_lines = [line for line in web_lines if f"/api/calls/{call_id}" in line]
    assert len(call_lines) == 2
    assert all(line.startswith(f"call {call_id} household H0001: ") for line in call_lines)
    assert "-> 409 by operator:wang.wei" in call_lines[1]
    assert "already owned by operator:li.na" in call_lines[1]
    desk_lines = [r.getMessage() for r in caplog.records if r.name == "callcenter.desk"]
    assert any(f"call {call_id} household H0001: acknowledged" in line for line in desk_lines)


# --- what the API refuses -------------------------------------------------------------


async def test_bad_requests_get_a_4xx_with_a_message(api: Api) -> None:
    """Test that every kind of bad request is refused with the right 4xx and a message a
    person can act on, and never a 500."""
    call_id = await api.press("H0001")
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    calls = f"/api/calls/{call_id}"
    # (method, path, raw body or JSON, status, words the message must contain)
    cases: list[tuple[str, str, object, int, list[str]]] = [
        ("POST", f"{calls}/notes", b"{not json", 400, ["not valid JSON"]),
        ("POST", f"{calls}/notes", b"\xff\xfe", 400, ["not valid JSON"]),
        ("POST", f"{calls}/notes", [1, 2], 400, ["JSON object", "list"]),
        ("POST", f"{calls}/notes", {}, 400, ["text", "Field required"]),
        ("POST", f"{calls}/notes", {"text": "   "}, 400, ["text"]),
        ("POST", f"{calls}/notes", {"text": 42}, 400, ["text"]),
        ("POST", f"{calls}/notes", {"text": "x" * 2001}, 400, ["text", "2000"]),
        ("POST", f"{calls}/notes", {"text": "hi", "colour": "red"}, 400, ["colour", "Extra"]),
        ("POST", f"{calls}/acknowledge", {"urgent": True}, 400, ["urgent"]),
        (
            "POST",
            f"{calls}/resolve",
            {"outcome": "fine"},
            400,
            ["outcome", "must be one of", *[o.value for o in Outcome]],
        ),
        ("POST", f"{calls}/resolve", {"note": "no outcome"}, 400, ["outcome", "Field required"]),
        (
            "POST",
            f"{calls}/cancel",
            {"reason": "bored"},
            400,
            ["reason", *[r.value for r in CancelReason]],
        ),
        (
            "POST",
            f"{calls}/carers/{carer}/status",
            {"status": "arrived"},
            400,
            ["status", "accepted", "declined", "on_the_way", "on_scene"],
        ),
        ("POST", f"{calls}/carers/{carer}/stand-down", {}, 400, ["why"]),
        ("POST", f"{calls}/dispatch", {"carer": 12}, 400, ["carer"]),
        ("POST", f"{calls}/dispatch", {"carer": "C999"}, 400, ["no carer 'C999'"]),
        ("POST", f"{calls}/dispatch", {"carer": "C" * 40}, 400, ["carer"]),
        ("GET", "/api/calls?state=pending", None, 400, ["open", "closed", "all"]),
        ("GET", "/api/calls?state=all&limit=0", None, 400, ["limit"]),
        ("GET", "/api/calls?state=all&limit=lots", None, 400, ["limit"]),
        ("GET", "/api/calls/abc", None, 400, ["whole number"]),
        ("GET", "/api/calls/999999", None, 404, ["no call 999999"]),
        ("GET", f"/api/calls/{2**70}", None, 404, ["no call"]),
        ("POST", "/api/calls/999999/acknowledge", {}, 404, ["no call 999999"]),
        ("POST", f"{calls}/carers/C999/status", {"status": "accepted"}, 404, ["no carer"]),
        ("GET", "/api/nothing-here", None, 404, ["nothing at this address"]),
        ("GET", "/nothing-here", None, 404, ["nothing at this address"]),
        ("DELETE", calls, None, 405, ["method"]),
        ("POST", f"{calls}/notes", b"{" + b" " * 70_000 + b"}", 413, ["too large"]),
    ]
    for method, path, body, status, words in cases:
        if isinstance(body, bytes):
            reply = await api.request(method, path, data=body)
        else:
            reply = await api.request(method, path, json=body)
        case = f"{method} {path} {str(body)[:60]!r}"
        assert reply.status == status, f"{case}: {reply.status} {reply.body}"
        assert isinstance(reply.body, dict), f"{case}: not JSON: {reply.body!r}"
        for word in words:
            assert word in reply.body["message"], f"{case}: {word!r} not in {reply.body}"
    problems = (await api.post(f"{calls}/resolve", {"outcome": "fine"})).body["problems"]
    assert problems == [
        {
            "field": "outcome",
            "message": "must be one of: " + ", ".join(o.value for o in Outcome),
            "allowed": [o.value for o in Outcome],
        }
    ]
    # None of it changed the call.
    assert _actions(await api.call(call_id)) == ["raised", "dispatched"]


async def test_one_households_calls_are_listed_by_its_code(api: Api) -> None:
    """Test that ?household= lists that household's calls only, open or closed, and that
    a code with anything but letters, digits, '_' or '-' is a 400."""
    first = await api.press("H0003")
    await api.post(f"/api/calls/{first}/acknowledge")
    await api.post(
        f"/api/calls/{first}/resolve", {"outcome": "false_alarm", "reason": "pressed in error"}
    )
    second = await api.press("H0003")
    other = await api.press("H0004")
    listed = await api.get("/api/calls?state=all&household=H0003")
    assert [c["id"] for c in listed.body["calls"]] == [second, first]
    closed = await api.get("/api/calls?state=closed&household=H0003")
    assert [c["id"] for c in closed.body["calls"]] == [first]
    assert [c["id"] for c in (await api.get("/api/calls?household=H0004")).body["calls"]] == [other]
    assert (await api.get("/api/calls?household=H9999")).body["calls"] == []
    bad = await api.get("/api/calls?household=H0003'--")
    assert bad.status == 400 and "household" in bad.body["message"]
