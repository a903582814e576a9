"""The live board's server side end to end: GET /api/board, the WebSocket feed and the
candidates of a call, against the whole server on a real broker and a seeded database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from callcenter.broker import EmbeddedBroker
from callcenter.domain.dispatch import rank_carers
from callcenter.domain.events import EventKind
from callcenter.engine.feed import Update
from callcenter.web.state import BOARD
from tests.api_support import Api, running_api, token_of
from tests.ingest_support import eventually

FEED = "/api/board/feed"
# A guard against a hung test, not a measure of speed: messages come in milliseconds.
WAIT_S = 20.0

Message = dict[str, Any]


@contextlib.asynccontextmanager
async def board(api: Api, who: str = "li.na") -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A board connected to the feed as ``who``."""
    headers = {"Authorization": f"Bearer {token_of(who)}"}
    async with api.http.ws_connect(FEED, headers=headers) as ws:
        yield ws


async def receive(ws: aiohttp.ClientWebSocketResponse) -> Message:
    message = await asyncio.wait_for(ws.receive(), WAIT_S)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    body: Message = json.loads(message.data)
    return body


async def until(
    ws: aiohttp.ClientWebSocketResponse,
    kind: str,
    matches: Callable[[Message], bool] = lambda _: True,
    *,
    seen: list[Message] | None = None,
) -> Message:
    """The next message of ``kind`` that ``matches``; what came before goes to ``seen``."""
    while True:
        message = await receive(ws)
        if seen is not None:
            seen.append(message)
        if message["type"] == kind and matches(message):
            return message


def of_call(call_id: int) -> Callable[[Message], bool]:
    return lambda m: m["call"]["id"] == call_id


async def test_the_first_message_is_the_whole_board_as_get_shows_it(api: Api) -> None:
    """Test that a board's first message is a snapshot with seq 1, holding the open calls
    as GET /api/calls lists them plus the household's position and residents, the carers
    as GET /api/carers shows them, every station's staffing and today's service levels;
    GET /api/board answers the same body."""
    call_id = await api.press("H0001")
    async with board(api) as ws:
        snapshot = await receive(ws)
    assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 1)
    assert snapshot["timezone"] == "Asia/Shanghai"
    listed = (await api.get("/api/calls")).body["calls"]
    assert [c["id"] for c in snapshot["calls"]] == [c["id"] for c in listed] == [call_id]
    card = dict(snapshot["calls"][0])
    household = card.pop("household")
    assert card == {k: v for k, v in listed[0].items() if k != "household"}
    detail = await api.call(call_id)
    assert household == {
        "code": "H0001",
        "address": detail["household"]["address"],
        "position": detail["household"]["position"],
        "residents": "、".join(r["name"] for r in detail["household"]["residents"]),
        "home_station": detail["household"]["home_station"],
    }
    assert card["carers"] and all(c["name"] for c in card["carers"])
    carers = await api.carers()
    assert snapshot["carers"] == carers
    stations = snapshot["stations"]
    assert [s["code"] for s in stations] == sorted({c["station"] for c in carers})
    for station in stations:
        mine = [c for c in carers if c["station"] == station["code"]]
        assert station["on_shift"] == sum(c["state"] != "off_shift" for c in mine)
        assert station["free"] == sum(c["state"] == "free" for c in mine)
        assert set(station["position"]) == {"lat", "lon"}
    assert snapshot["service"]["calls"] == 1
    assert snapshot["service"]["day"] == "2026-11-23"

    over_http = await api.get("/api/board")
    assert over_http.status == 200
    assert over_http.body["seq"] == 0
    for key in ("timezone", "calls", "carers", "stations"):
        assert over_http.body[key] == snapshot[key], key


async def test_a_press_acknowledge_and_resolve_reach_the_board_in_order(api: Api) -> None:
    """Test that a press shows as a ``call`` message with the new card, acknowledging as a
    ``call`` naming the owner, and resolving as ``closed``; carers follow the changes,
    and every message's seq is one more than the last."""
    async with board(api) as ws:
        seen = [await receive(ws)]
        call_id = await api.press("H0002")
        raised = await until(
            ws, "call", lambda m: m["call"]["household"]["code"] == "H0002", seen=seen
        )
        assert raised["call"]["id"] == call_id
        assert raised["call"]["household"]["position"] is not None
        await until(ws, "carers", seen=seen)

        acknowledged = await api.post(f"/api/calls/{call_id}/acknowledge")
        assert acknowledged.status == 200
        taken = await until(ws, "call", lambda m: m["call"]["owner"] is not None, seen=seen)
        assert taken["call"]["owner"] == "operator:li.na"
        assert taken["call"]["version"] == acknowledged.body["version"]

        resolved = await api.post(
            f"/api/calls/{call_id}/resolve", {"outcome": "false_alarm", "reason": "a slip"}
        )
        assert resolved.status == 200
        closed = await until(ws, "closed", seen=seen)
        assert closed == {
            "type": "closed",
            "seq": closed["seq"],
            "call_id": call_id,
            "state": "resolved",
        }
        # A carers read begun before the resolve may still arrive after ``closed``;
        # the one after it (at most 250 ms on) shows the carer free of the call.
        await until(
            ws, "carers", lambda m: all(c["call_id"] != call_id for c in m["carers"]), seen=seen
        )
    assert [m["seq"] for m in seen] == list(range(1, len(seen) + 1))


async def test_two_boards_see_the_same_changes(api: Api) -> None:
    """Test that two boards connected at once are both sent every change, each numbered
    on its own connection."""
    async with board(api) as first, board(api, "wang.wei") as second:
        await receive(first), await receive(second)
        call_id = await api.press("H0003")
        assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
        got = []
        for ws in (first, second):
            await until(ws, "call", of_call(call_id))
            got.append(await until(ws, "call", lambda m: m["call"]["owner"] is not None))
        assert got[0]["call"] == got[1]["call"]
        assert got[0]["call"]["owner"] == "operator:li.na"


async def test_a_board_without_a_token_is_refused_before_the_socket_opens(api: Api) -> None:
    """Test that the feed, like every /api/ address, answers 401 without a valid token."""
    for headers in ({}, {"Authorization": "Bearer not-a-real-token"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with api.http.ws_connect(FEED, headers=headers):
                pass
        assert refused.value.status == 401


async def test_a_board_that_falls_behind_is_resynced_with_a_fresh_snapshot(api: Api) -> None:
    """Test that a board sent more changes at once than its queue holds is told
    ``resync`` and sent a fresh snapshot (never left silently stale), and then follows
    changes again as before."""
    async with board(api) as ws:
        await receive(ws)
        feed = api.server.desk.feed
        # More alarms at once than the board's send queue holds (and its feed queue).
        for n in range(11_000):
            feed.publish(Update("alarm", api.clock.now(), None, {"watchdog": "test", "n": n}))
        seen: list[Message] = []
        resync = await until(ws, "resync", seen=seen)
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot"
        assert snapshot["seq"] == resync["seq"] + 1
        assert [m["seq"] for m in seen] == list(range(2, resync["seq"] + 1))
        assert len(seen) < 11_000  # the dropped alarms were not sent after all

        call_id = await api.press("H0004")
        await until(ws, "call", of_call(call_id))


async def test_a_watchdog_alarm_reaches_the_board(api: Api) -> None:
    """Test that an alarm on the desk's feed is passed to the board with its details."""
    async with board(api) as ws:
        await receive(ws)
        api.server.desk.feed.publish(
            Update(
                "alarm", api.clock.now(), None, {"watchdog": "station_uncovered", "station": "S03"}
            )
        )
        alarm = await until(ws, "alarm")
    assert alarm == {
        "type": "alarm",
        "seq": 2,
        "call_id": None,
        "at": "2026-11-23T02:00:00.000Z",
        "watchdog": "station_uncovered",
        "station": "S03",
    }


async def test_candidates_are_the_desks_own_ranking(api: Api) -> None:
    """Test that a call's candidates are rank_carers over the desk's carers for the
    household and the call's skills, with tier, travel time and station; an unknown
    call is 404 and a malformed id 400."""
    call_id = await api.press("H0005")
    reply = await api.get(f"/api/calls/{call_id}/candidates")
    assert reply.status == 200, reply.body
    server = api.server
    registry = await server.desk.district.registry()
    household = registry.households_by_code["H0005"]
    ranked = rank_carers(
        await server.desk.carer_snapshots(),
        household.destination(),
        skills=(),
        circle_s=server.config.calls.service_circle_s,
    )
    got = reply.body["candidates"]
    assert got, "nobody free on MONDAY_MORNING"
    assert [c["code"] for c in got] == [c.carer.code for c in ranked]
    for shown, candidate in zip(got, ranked, strict=True):
        assert shown["tier"] == candidate.tier.name.lower()
        assert shown["travel_min"] == round(candidate.travel_s / 60, 1)
        assert shown["within_circle"] is candidate.within_circle
        assert shown["station"] == registry.stations[candidate.carer.station_id].code
        assert shown["state"] == "free"
    assert got[0]["tier"] in ("home", "backup", "other")
    sent = {c["code"] for c in (await api.call(call_id))["carers"]}
    assert not sent & {c["code"] for c in got}  # a carer already sent is not free

    assert (await api.get("/api/calls/987654/candidates")).status == 404
    assert (await api.get("/api/calls/12x/candidates")).status == 400


async def test_a_fall_calls_candidates_all_have_the_skill_it_needs(api: Api) -> None:
    """Test that the candidates honour the call's policy: a fall needs carers who lift."""
    call_id = await api.press("H0006", EventKind.FALL_DETECTED)
    got = (await api.get(f"/api/calls/{call_id}/candidates")).body
    assert got["skills"] == ["lift"]
    assert all("lift" in c["skills"] for c in got["candidates"])


async def test_boards_are_closed_as_going_away_when_the_server_stops(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a board still connected when the server stops has its socket closed
    with 1001 (going away), so it reconnects rather than showing a dead board."""
    # A client of its own: the fixture's closes before the server stops.
    async with aiohttp.ClientSession() as http:
        async with running_api(broker, topic_prefix, seeded_database_url) as api:
            ws = await http.ws_connect(
                api.server.web_url + FEED,
                headers={"Authorization": f"Bearer {token_of('li.na')}"},
            )
            await receive(ws)
            closing = asyncio.ensure_future(ws.receive())
        message = await asyncio.wait_for(closing, WAIT_S)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await ws.close()


async def test_every_board_is_handed_the_same_read_of_a_change(api: Api) -> None:
    """Test that with two boards connected each change of an open call is read from the
    database once, not once per board, and both boards get the same card."""
    async with (
        api.server.desk.feed.subscribe() as changes,
        board(api) as first,
        board(api, "wang.wei") as second,
    ):
        await receive(first), await receive(second)
        served = api.server.web
        data = served.app[BOARD] if served is not None else None
        assert data is not None
        reads_before = data.call_reads
        call_id = await api.press("H0007")
        assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
        cards = []
        for ws in (first, second):
            cards.append(await until(ws, "call", lambda m: m["call"]["owner"] is not None))
        assert cards[0] == {**cards[1], "seq": cards[0]["seq"]}
        changed = 0

        async def read_once_each() -> bool:
            nonlocal changed
            while not changes.empty():
                change = changes.get_nowait()
                assert change is not None
                changed += change.kind == "call"
            return data.call_reads - reads_before == changed

        # Other loops (the outbox relay) may change the call meanwhile: wait until every
        # change announced so far has been read, then compare.
        await eventually(read_once_each, what="one read per change")
        assert changed >= 2  # raised (and dispatched), acknowledged
