"""Issue 19 on the real server and both databases: an emergency a carer reports done with
no operator having owned it waits for an operator's review (also when the carer's done
and an operator's take race); "send a carer" answers what it did; a carer who failed a
call is not offered for it again unless an operator picks them by hand."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    ActorKind,
    CarerReport,
    Outcome,
    Report,
    Resolve,
)
from callcenter.store import models as m
from tests.api_support import Api
from tests.desk_support import MONDAY_MORNING
from tests.ingest_support import eventually


def _actions(detail: dict[str, Any]) -> list[str]:
    return [h["action"] for h in detail["history"]]


async def _carer_id(api: Api, code: str) -> int:
    async with api.server.desk.transaction() as session:
        found = await session.scalar(select(m.Carer.id).where(m.Carer.code == code))
    assert found is not None
    return int(found)


async def _on_scene(api: Api, household: str) -> tuple[int, str, int]:
    """An emergency at ``household`` whose paged carer is at the door, nobody at the desk
    having taken it: the call, the carer's code and id."""
    call_id = await api.press(household)
    code = (await api.call(call_id))["assignments"][0]["carer"]
    carer_id = await _carer_id(api, code)
    carer = Actor(ActorKind.CARER, code)
    await api.server.desk.command(call_id, Report(carer, carer_id, CarerReport.ON_SCENE))
    return call_id, code, carer_id


async def _everyone_off_duty(api: Api) -> None:
    """A roster day off for every carer today; from the next minute nobody is on shift."""
    async with api.server.desk.transaction() as session:
        for carer_id in (await session.scalars(select(m.Carer.id))).all():
            session.add(m.DutyRoster(carer_id=carer_id, day=MONDAY_MORNING.date(), on_duty=False))
    api.server.desk.district.invalidate()
    api.clock.advance(timedelta(minutes=1))


# --- awaiting review -------------------------------------------------------------------


async def test_an_emergency_done_by_its_carer_stays_on_the_board_until_an_operator_resolves_it(
    api: Api,
) -> None:
    """Test that the carer's done leaves the call open awaiting review on the board with
    what the carer reported, that its timers page no carer (the operators' alarm still
    sounds), that a new press opens a new call rather than joining it, and that the
    operator's resolve ends it."""
    call_id, code, _ = await _on_scene(api, "H0001")
    carer = Actor(ActorKind.CARER, code)
    await api.server.desk.command(call_id, Resolve(carer, Outcome.HELPED_AT_HOME, "by SMS"))
    detail = await api.call(call_id)
    assert detail["state"] == "awaiting_review"
    assert detail["reported"]["outcome"] == "helped_at_home"
    assert [a["state"] for a in detail["assignments"]] == ["finished"]
    assert {t["step"] for t in detail["timers"]} == {"unacknowledged"}
    board = await api.get("/api/board")
    assert [c["state"] for c in board.body["calls"] if c["id"] == call_id] == ["awaiting_review"]

    api.clock.advance(timedelta(minutes=40))
    await api.server.scheduler.fire_due()

    async def alerted() -> bool:
        # The running scheduler may have claimed the timer first and not yet committed.
        return "alert_operators" in _actions(await api.call(call_id))

    await eventually(alerted, what="the unacknowledged step's alert")
    later = await api.call(call_id)
    assert later["state"] == "awaiting_review"
    assert len(later["assignments"]) == 1  # nobody paged
    assert "alert_operators" in _actions(later)
    assert "unacknowledged" in later["alerts"]

    # The resident presses again: the carer has been and gone, so it is a new alarm with
    # a carer paged, not a repeat on the call awaiting review.
    await api.press("H0001")  # (answers the first open call of the household it finds)
    found: list[int] = []

    async def opened() -> bool:
        calls = (await api.get("/api/calls")).body["calls"]
        found[:] = [c["id"] for c in calls if c["household"]["code"] == "H0001"]
        return len(found) == 2

    await eventually(opened, what="a second call for H0001")
    (again,) = [i for i in found if i != call_id]
    assert [a["state"] for a in (await api.call(again))["assignments"]] == ["dispatched"]
    assert (await api.call(call_id))["presses"] == 1

    resolved = await api.post(f"/api/calls/{call_id}/resolve", {"outcome": "helped_at_home"})
    assert resolved.status == 200, resolved
    assert (resolved.body["state"], resolved.body["owner"]) == ("resolved", "operator:li.na")
    assert _actions(resolved.body)[-2:] == ["acknowledged", "resolved"]


async def test_a_service_request_and_an_owned_emergency_close_on_the_carers_done(api: Api) -> None:
    """Test that calls an operator owned, and service requests, close on the carer's done
    as before."""
    call_id, code, _ = await _on_scene(api, "H0002")
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
    done = Resolve(Actor(ActorKind.CARER, code), Outcome.HELPED_AT_HOME)
    await api.server.desk.command(call_id, done)
    assert (await api.call(call_id))["state"] == "resolved"


async def test_a_carers_done_racing_an_operators_take_never_ends_an_unowned_emergency(
    api: Api,
) -> None:
    """Test that a carer's done and an operator's acknowledge sent at the same moment are
    applied one after the other under the call's lock: either the operator took it first
    and the done closes it, or the done came first and the call awaits the (now owning)
    operator's review. Never closed without an owner, never both lost."""
    seen = set()
    for household in ("H0003", "H0004", "H0005", "H0006"):
        call_id, code, _ = await _on_scene(api, household)
        done = Resolve(Actor(ActorKind.CARER, code), Outcome.HELPED_AT_HOME)
        take = Acknowledge(Actor(ActorKind.OPERATOR, "li.na"))
        results = await asyncio.gather(
            api.server.desk.command(call_id, done),
            api.server.desk.command(call_id, take),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        detail = await api.call(call_id)
        assert detail["owner"] == "operator:li.na"
        actions = _actions(detail)
        if detail["state"] == "resolved":
            assert actions.index("acknowledged") < actions.index("resolved")
            assert "reported_done" not in actions
        else:
            assert detail["state"] == "awaiting_review"
            assert actions.index("reported_done") < actions.index("acknowledged")
            assert detail["closed_at"] is None
        seen.add(detail["state"])
    assert seen <= {"resolved", "awaiting_review"}


# --- dispatch's answer -----------------------------------------------------------------


async def test_send_a_carer_answers_who_was_sent(api: Api) -> None:
    """Test that a named dispatch answers the carer sent, and "send the best" on a call
    that has the carer it needs answers that nobody was sent and nobody was missing."""
    call_id = await api.press("H0007")
    best = await api.post(f"/api/calls/{call_id}/dispatch", {})
    assert best.status == 200, best
    assert best.body["result"] == {"sent": [], "nobody_free": False, "escalated": []}
    free = next(c["code"] for c in await api.carers() if c["state"] == "free")
    named = await api.post(f"/api/calls/{call_id}/dispatch", {"carer": free})
    assert named.status == 200, named
    assert named.body["result"] == {"sent": [free], "nobody_free": False, "escalated": []}
    assert free in [a["carer"] for a in named.body["assignments"] if a["active"]]


async def test_send_the_best_carer_with_nobody_free_says_so_and_what_escalated(api: Api) -> None:
    """Test that "send the best carer" with nobody on shift answers nobody sent, nobody
    free, and the escalation step that ran at once; the call shows nobody sent."""
    await _everyone_off_duty(api)
    call_id = await api.press("H0008")
    assert (await api.call(call_id))["assignments"] == []
    reply = await api.post(f"/api/calls/{call_id}/dispatch", {})
    assert reply.status == 200, reply
    result = reply.body["result"]
    assert (result["sent"], result["nobody_free"]) == ([], True)
    assert result["escalated"] == ["not_on_scene"]
    assert reply.body["assignments"] == []
    assert reply.body["state"] == "acknowledged"


# --- carers who failed the call --------------------------------------------------------


async def test_a_carer_who_declined_is_not_offered_again_but_may_be_picked_by_hand(
    api: Api,
) -> None:
    """Test that after a carer declines, the desk pages someone else, the candidates
    leave the carer out (listing them as passed over), and an operator's pick by hand
    still sends them, written in the history as by hand after declining."""
    call_id = await api.press("H0009")
    first = (await api.call(call_id))["assignments"][0]["carer"]
    declined = await api.post(f"/api/calls/{call_id}/carers/{first}/status", {"status": "declined"})
    assert declined.status == 200, declined
    active = [a["carer"] for a in declined.body["assignments"] if a["active"]]
    assert len(active) == 1 and active[0] != first
    second = active[0]

    listed = await api.get(f"/api/calls/{call_id}/candidates")
    assert listed.status == 200, listed
    assert first not in [c["code"] for c in listed.body["candidates"]]
    assert listed.body["candidates"], "somebody else is free on a Monday morning"
    assert [(p["code"], p["why"]) for p in listed.body["passed_over"]] == [(first, "declined")]

    # The second does not answer in time: the desk pages a third, never the first again.
    api.clock.advance(timedelta(minutes=2, seconds=1))
    await api.server.scheduler.fire_due()
    after = await api.call(call_id)
    states = {a["carer"]: a["state"] for a in after["assignments"]}
    assert states[first] == "declined" and states[second] == "no_answer"
    assert [a["carer"] for a in after["assignments"]].count(first) == 1
    listed = await api.get(f"/api/calls/{call_id}/candidates")
    passed = {p["code"]: p["why"] for p in listed.body["passed_over"]}
    assert passed == {first: "declined", second: "no_answer"}
    assert not {first, second} & {c["code"] for c in listed.body["candidates"]}

    picked = await api.post(f"/api/calls/{call_id}/dispatch", {"carer": first})
    assert picked.status == 200, picked
    assert picked.body["result"]["sent"] == [first]
    entry = picked.body["history"][-1]
    assert entry["action"] == "dispatched" and entry["detail"]["carer"] == first
    assert entry["detail"]["by_hand"] is True
    assert entry["detail"]["failed_before"] == "declined"
