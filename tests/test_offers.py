"""Alarm calls offered to the operators on duty (docs/calls.md, "Offers"), on the real
server: mosquitto, the database (SQLite and PostgreSQL), the API and the boards' feed.

Two operators on duty (li.na and wang.wei, each with a board connected): an alarm is
offered to the one idle longest, then to the other, then to everyone, and is never
without an offer meanwhile; pausing, signing out and a board gone move an offer on at
once; accepting, accepting twice, taking a call offered to someone else, two accepting
at once; and an offer kept through a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.domain.events import EventKind
from callcenter.store import models as m
from tests.api_support import Api, running_api, set_password, token_of
from tests.board_support import browser
from tests.desk_support import MONDAY_MORNING, history
from tests.ingest_support import eventually

TIMEOUT = timedelta(seconds=15)  # desk.offer_timeout_s's default


@dataclass
class Board:
    """One operator's board feed, its messages kept as they come."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[dict[str, Any]] = field(default_factory=list)

    async def read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))

    async def sees(self, what: Callable[[dict[str, Any]], bool], *, about: str) -> None:
        async def seen() -> bool:
            return any(what(message) for message in self.messages)

        await eventually(seen, what=about)


@contextlib.asynccontextmanager
async def board(api: Api, who: str) -> AsyncIterator[Board]:
    ws = await api.http.ws_connect(
        "/api/board/feed", headers={"Authorization": f"Bearer {token_of(who)}"}
    )
    feed = Board(ws)
    reading = asyncio.create_task(feed.read())
    try:
        await feed.sees(lambda m: m["type"] == "snapshot", about=f"{who}'s snapshot")
        yield feed
    finally:
        await ws.close()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


async def on_duty(api: Api, who: str, duty: str = "on_duty") -> dict[str, Any]:
    reply = await api.post("/api/desk/duty", {"duty": duty}, who=who)
    assert reply.status == 200, reply
    answer: dict[str, Any] = reply.body
    return answer


async def offer_of(api: Api, call_id: int) -> dict[str, Any] | None:
    offer: dict[str, Any] | None = (await api.call(call_id))["offer"]
    return offer


async def offered_to(api: Api, call_id: int, who: str | None, *, to_all: bool = False) -> None:
    async def there() -> bool:
        offer = await offer_of(api, call_id)
        return offer is not None and offer["operator"] == who and offer["to_all"] is to_all

    await eventually(there, what=f"call {call_id} offered to {who or 'everyone'}")


async def actions(api: Api, call_id: int) -> list[str]:
    return [h.action for h in await history(api.server, call_id)]


@contextlib.asynccontextmanager
async def two_on_duty(
    broker: EmbeddedBroker, prefix: str, database_url: str
) -> AsyncIterator[tuple[Api, Board, Board]]:
    """li.na on duty first (so idle longest), wang.wei a second later; both watching."""
    async with (
        running_api(broker, prefix, database_url, offers=True) as api,
        board(api, "li.na") as li,
        board(api, "wang.wei") as wang,
    ):
        await on_duty(api, "li.na")
        api.clock.advance(timedelta(seconds=1))
        await on_duty(api, "wang.wei")
        yield api, li, wang


async def test_an_alarm_goes_to_the_longest_idle_then_the_next_then_everyone(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that an emergency is offered to the operator idle longest (shown on their
    board), not accepted in 15 s goes to the other, then to everyone with the
    supervisors alerted at once, and has an offer at every moment in between."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, li, wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        await li.sees(
            lambda m: (
                m["type"] == "call"
                and m["call"]["id"] == call_id
                and (m["call"]["offer"] or {}).get("operator") == "operator:li.na"
            ),
            about="the offer on li.na's board",
        )
        await li.sees(
            lambda m: (
                m["type"] == "operators"
                and any(
                    o["offer"] == call_id for o in m["operators"] if o["actor"] == "operator:li.na"
                )
            ),
            about="li.na holding the offer in the operators list",
        )
        duty = (await api.get("/api/operators/duty")).body["operators"]
        mine = {o["actor"]: o for o in duty}
        assert mine["operator:li.na"]["offer"] == call_id
        assert mine["operator:wang.wei"]["offer"] is None
        assert mine["operator:wang.wei"]["idle_since"] is not None
        assert mine["operator:li.na"]["board"] and mine["operator:wang.wei"]["board"]

        api.clock.advance(TIMEOUT - timedelta(seconds=1))
        await api.server.scheduler.fire_due()
        assert (await offer_of(api, call_id) or {}).get("operator") == "operator:li.na"

        api.clock.advance(timedelta(seconds=1))
        await offered_to(api, call_id, "operator:wang.wei")
        await wang.sees(
            lambda m: (
                m["type"] == "call"
                and (m["call"]["offer"] or {}).get("operator") == "operator:wang.wei"
            ),
            about="the offer on wang.wei's board",
        )
        # The policy's unacknowledged step (30 s) has not run: offers come first.
        assert "escalated" not in await actions(api, call_id)

        api.clock.advance(TIMEOUT)
        await offered_to(api, call_id, None, to_all=True)
        entries = await history(api.server, call_id)
        done = [h.action for h in entries]
        assert done.count("offered") == 2 and done.count("offer_expired") == 2
        to_all = next(h for h in entries if h.action == "offered_to_all")
        assert to_all.detail == {
            "because": "all_tried",
            "tried": ["operator:li.na", "operator:wang.wei"],
        }
        escalated = next(h for h in entries if h.action == "escalated")
        assert escalated.detail["step"] == "unacknowledged"
        assert "alert_supervisor" in done
        await li.sees(
            lambda m: m["type"] == "alarm" and m["call_id"] == call_id,
            about="the alarm on every board",
        )
        await wang.sees(
            lambda m: m["type"] == "call" and (m["call"]["offer"] or {}).get("to_all") is True,
            about="the call offered to everyone on wang.wei's board",
        )
        # Every change of hands was one transaction: the offer was never missing.
        expired = [h for h in entries if h.action == "offer_expired"]
        assert [h.detail["operator"] for h in expired] == ["operator:li.na", "operator:wang.wei"]
        assert all(h.detail["why"] == "timeout" for h in expired)
        offered_at = [h.at for h in entries if h.action == "offered"]
        assert offered_at[1] - offered_at[0] == TIMEOUT

        # Anyone may take it now.
        reply = await api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei")
        assert reply.status == 200 and reply.body["offer"] is None
        assert reply.body["owner"] == "operator:wang.wei"


async def test_accepting_takes_the_call_and_accepting_twice_is_refused(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that the offered operator's acknowledge takes the call and ends the offer
    (its timer cancelled), a second accept says it is already theirs, and the other
    operator is told who owns it."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        api.clock.advance(timedelta(seconds=4))
        reply = await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")
        assert reply.status == 200, reply
        assert reply.body["owner"] == "operator:li.na" and reply.body["offer"] is None
        assert all(t["step"] != "offer" for t in reply.body["timers"])
        accepted = [h for h in await history(api.server, call_id) if h.action == "offer_accepted"]
        assert [(h.actor, h.detail) for h in accepted] == [("operator:li.na", {"waited_s": 4.0})]

        again = await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")
        assert again.status == 409 and "already yours" in again.body["message"]
        other = await api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei")
        assert other.status == 409 and "operator:li.na" in other.body["message"]

        # Nothing moves it on later, and li.na, owning an alarm, is not free.
        api.clock.advance(TIMEOUT * 3)
        await api.server.scheduler.fire_due()
        assert await offer_of(api, call_id) is None
        duty = {o["actor"]: o for o in (await api.get("/api/operators/duty")).body["operators"]}
        assert duty["operator:li.na"]["owned"] == 1 and duty["operator:li.na"]["idle_since"] is None

        # The next alarm goes to wang.wei, the only one free.
        second = await api.press("H0002")
        await offered_to(api, second, "operator:wang.wei")


async def test_taking_a_call_offered_to_someone_else_is_allowed_and_written(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that an operator may still pick a call offered to another (manual pick): it
    is theirs, the offer is withdrawn and the history says whose it was."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        reply = await api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei")
        assert reply.status == 200 and reply.body["owner"] == "operator:wang.wei"
        assert reply.body["offer"] is None
        (withdrawn,) = [h for h in reply.body["history"] if h["action"] == "offer_withdrawn"]
        assert withdrawn["detail"] == {
            "offered_to": "operator:li.na",
            "taken_by": "operator:wang.wei",
        }
        late = await api.post(f"/api/calls/{call_id}/acknowledge", who="li.na")
        assert late.status == 409 and late.body["owner"] == "operator:wang.wei"


async def test_pausing_and_signing_out_move_an_offer_on_at_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that an operator who pauses while holding an offer has it moved to the next
    at once (no waiting for its time), that a paused operator is offered nothing, and
    that going off duty moves it on again (to everyone, both having been tried)."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        paused = await on_duty(api, "li.na", "paused")
        assert paused["changed"] and paused["operator"]["duty"] == "paused"
        # Moved in the same request: its answer already shows it.
        assert (await offer_of(api, call_id) or {}).get("operator") == "operator:wang.wei"
        (moved,) = [h for h in await history(api.server, call_id) if h.action == "offer_expired"]
        assert moved.detail == {"operator": "operator:li.na", "why": "paused"}

        second = await api.press("H0002")
        # Nobody free: li.na paused, wang.wei holding the first offer.
        await offered_to(api, second, None, to_all=True)
        to_all = next(h for h in await history(api.server, second) if h.action == "offered_to_all")
        assert to_all.detail["because"] == "nobody_free"

        await on_duty(api, "wang.wei", "off_duty")
        await offered_to(api, call_id, None, to_all=True)
        assert (await on_duty(api, "wang.wei", "off_duty"))["changed"] is False
        back = await on_duty(api, "li.na", "on_duty")
        assert back["operator"]["duty"] == "on_duty"
        third = await api.press("H0003")
        await offered_to(api, third, "operator:li.na")


async def test_a_board_gone_longer_than_the_grace_moves_the_offer_on(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that an offer to an operator whose board disconnected moves on once the
    grace (10 s) has passed, not before: nobody watches that screen."""
    async with (
        running_api(broker, topic_prefix, seeded_database_url, offers=True) as api,
        board(api, "wang.wei"),
    ):
        async with board(api, "li.na"):
            await on_duty(api, "li.na")
            api.clock.advance(timedelta(seconds=1))
            await on_duty(api, "wang.wei")
            call_id = await api.press("H0001")
            await offered_to(api, call_id, "operator:li.na")

        # li.na's board closed: once the server has seen it go, 10 s of grace.
        async def gone() -> bool:
            duty = (await api.get("/api/operators/duty")).body["operators"]
            return not next(o for o in duty if o["actor"] == "operator:li.na")["board"]

        await eventually(gone, what="li.na's board gone")
        api.clock.advance(timedelta(seconds=9))
        await asyncio.sleep(0.3)
        assert (await offer_of(api, call_id) or {}).get("operator") == "operator:li.na"
        api.clock.advance(timedelta(seconds=2))
        await offered_to(api, call_id, "operator:wang.wei")
        moved = [h for h in await history(api.server, call_id) if h.action == "offer_expired"]
        assert moved[0].detail == {"operator": "operator:li.na", "why": "no_board"}
        duty = {o["actor"]: o for o in (await api.get("/api/operators/duty")).body["operators"]}
        assert duty["operator:li.na"]["board"] is False
        assert duty["operator:li.na"]["duty"] == "on_duty"


async def test_with_nobody_on_duty_an_alarm_goes_to_everyone_and_the_supervisor_at_once(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with no operator on duty an alarm is offered to everyone at once and
    the unacknowledged step runs then (the supervisor texted), not 30 s later."""
    async with running_api(broker, topic_prefix, seeded_database_url, offers=True) as api:
        call_id = await api.press("H0001")
        await offered_to(api, call_id, None, to_all=True)
        entries = await history(api.server, call_id)
        to_all = next(h for h in entries if h.action == "offered_to_all")
        assert to_all.detail == {"because": "nobody_on_duty", "tried": []}
        (told,) = [h for h in entries if h.action == "alert_supervisor"]
        assert told.detail["to"] == ["operator:zhao.min"] and told.at == MONDAY_MORNING
        texts = await api.server.engine.connect()
        try:
            rows = (
                await texts.execute(
                    select(m.OutboxItem.recipient).where(m.OutboxItem.call_id == call_id)
                )
            ).all()
        finally:
            await texts.close()
        assert ("operator:zhao.min",) in rows
        # A service request is not offered (desk.offer_call_types).
        request = await api.press("H0002", EventKind.SERVICE_REQUEST)
        assert await offer_of(api, request) is None


async def test_two_operators_accepting_at_once_one_owns_it(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when the offered operator and another accept at the same moment, one
    owns the call and the other is told who does."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        replies = await asyncio.gather(
            api.post(f"/api/calls/{call_id}/acknowledge", who="li.na"),
            api.post(f"/api/calls/{call_id}/acknowledge", who="wang.wei"),
        )
        assert sorted(r.status for r in replies) == [200, 409]
        (won,) = [r for r in replies if r.status == 200]
        (lost,) = [r for r in replies if r.status == 409]
        assert lost.body["owner"] == won.body["owner"]
        assert (await api.call(call_id))["offer"] is None


async def test_alarms_at_once_go_to_two_operators_then_to_everyone(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that alarms raised together are offered to two different operators (an
    operator holds one offer at a time, whatever the writers race), and the ones after
    them, nobody being free, to everyone."""
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        calls = await asyncio.gather(*(api.press(f"H000{n}") for n in range(1, 5)))
        offers = [await offer_of(api, call_id) or {} for call_id in calls]
        assert sorted(str(o.get("operator")) for o in offers) == [
            "None",
            "None",
            "operator:li.na",
            "operator:wang.wei",
        ]
        for call_id, offer in zip(calls, offers, strict=True):
            if offer.get("to_all"):
                (to_all,) = [
                    h for h in await history(api.server, call_id) if h.action == "offered_to_all"
                ]
                assert to_all.detail["because"] == "nobody_free"


async def test_an_offer_is_kept_through_a_restart(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a server stopped while an offer is out keeps it: after the restart the
    call is still offered to the same operator, and when its time comes (the durable
    timer) it goes to the next."""
    clock = ManualClock(MONDAY_MORNING)
    async with two_on_duty(broker, topic_prefix, seeded_database_url) as (api, _li, _wang):
        call_id = await api.press("H0001")
        await offered_to(api, call_id, "operator:li.na")
        clock = api.clock
    clock.advance(timedelta(seconds=5))
    async with running_api(
        broker,
        topic_prefix,
        seeded_database_url,
        offers=True,
        clock=clock,
        operators_added=True,
    ) as api:
        assert (await offer_of(api, call_id) or {}).get("operator") == "operator:li.na"
        async with board(api, "li.na"), board(api, "wang.wei"):
            clock.advance(timedelta(seconds=10))
            await offered_to(api, call_id, "operator:wang.wei")
            moved = [h for h in await history(api.server, call_id) if h.action == "offer_expired"]
            assert [h.detail["why"] for h in moved] == ["timeout"]


async def test_signing_in_puts_on_duty_and_signing_out_moves_the_offer_on(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that signing in through the board's form puts an operator on duty, and that
    signing out while holding an offer takes them off duty and moves it on at once."""
    async with (
        running_api(broker, topic_prefix, seeded_database_url, offers=True) as api,
        browser(api) as li,
        board(api, "wang.wei"),
    ):
        await set_password(api.server, "li.na")
        assert (await li.sign_in("li.na")).status == 303
        feed = await li.http.ws_connect("/api/board/feed")
        try:
            api.clock.advance(timedelta(seconds=1))
            await on_duty(api, "wang.wei")
            duty = {o["actor"]: o for o in (await api.get("/api/operators/duty")).body["operators"]}
            assert duty["operator:li.na"]["duty"] == "on_duty"
            call_id = await api.press("H0001")
            await offered_to(api, call_id, "operator:li.na")
            assert (await li.post("/logout", data={"csrf": li.csrf})).status == 303
            assert (await offer_of(api, call_id) or {}).get("operator") == "operator:wang.wei"
            moved = [h for h in await history(api.server, call_id) if h.action == "offer_expired"]
            assert moved[0].detail == {"operator": "operator:li.na", "why": "off_duty"}
            duty = {o["actor"]: o for o in (await api.get("/api/operators/duty")).body["operators"]}
            assert duty["operator:li.na"]["duty"] == "off_duty"
        finally:
            await feed.close()
