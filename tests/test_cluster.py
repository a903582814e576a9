"""Two servers on one PostgreSQL, in one process: one does the desk's once-only work,
the other serves boards that see everything the first decides, and an operator's
command on the second is carried out by the first (engine/peers.py, engine/leadership.py).
The kills, pauses and storms are tests/test_cluster_processes.py's."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from callcenter.broker import EmbeddedBroker
from tests.api_support import Api, another_instance, running_api
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.test_board_feed import board, receive, until
from tests.test_offers import offered_to, on_duty

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True),
]


async def test_a_board_on_the_other_server_sees_a_call_within_a_second(api: Api) -> None:
    """A press taken by the server doing the desk's work shows on a board connected to
    the other server, in about the time it shows on its own."""
    assert api.server.leadership is not None and api.server.leadership.leading
    async with another_instance(api) as other:
        assert other.server.leadership is not None and not other.server.leadership.leading
        async with board(api) as here, board(other) as there:
            await receive(here)
            await receive(there)
            loop = asyncio.get_running_loop()
            pressed = asyncio.create_task(api.press("H0003"))
            raised = await until(here, "call", lambda m: m["call"]["household"]["code"] == "H0003")
            seen_here = loop.time()
            heard = await until(there, "call", lambda m: m["call"]["household"]["code"] == "H0003")
            late_s = loop.time() - seen_here
            assert heard["call"]["id"] == raised["call"]["id"] == await pressed
            assert late_s < 1.0, f"the other server's board was {late_s:.2f} s later"


async def test_a_carer_sent_from_the_other_server_is_texted_by_the_desk_at_once(
    api: Api,
) -> None:
    """An operator on the second server sends a carer: the decision is the second
    server's, the page is sent by the server doing the desk's work, told through the
    database rather than at its next look (30 s), and the first server's boards see it."""
    async with another_instance(api) as other, board(api) as here:
        await receive(here)
        call_id = await api.press("H0004")
        auto = {a["carer"] for a in (await api.call(call_id))["assignments"]}
        carers = await other.carers()
        chosen = next(c for c in carers if c["state"] == "free" and c["code"] not in auto)
        loop = asyncio.get_running_loop()
        asked = loop.time()
        sent = await other.post(f"/api/calls/{call_id}/dispatch", {"carer": chosen["code"]})
        assert sent.status == 200, sent.body
        await until(
            here,
            "call",
            lambda m: any(c["code"] == chosen["code"] for c in m["call"]["carers"]),
        )
        fake = fake_of(api.server)

        async def texted() -> bool:
            return bool(fake.sent_to(chosen["phone"]))

        await eventually(texted, within_s=10, what="the page to the carer sent from the other")
        assert loop.time() - asked < 3.0, "sent when told, not at the relay's next look"
        assert other.server.relay.sent == 0, "the other server sends nothing itself"


async def test_an_alarm_is_offered_to_an_operator_whose_board_is_on_the_other_server(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """The server doing the desk's work offers an alarm only to operators with a board
    open; a board open on the other server counts (the servers say which boards they
    have), so the operator watching there is offered it and the one with no board is
    passed over."""
    async with (
        running_api(broker, topic_prefix, seeded_database_url, offers=True) as api,
        another_instance(api) as other,
    ):
        await on_duty(api, "wang.wei")  # on duty longest, but no board anywhere
        api.clock.advance(timedelta(seconds=1))
        async with board(other, "li.na") as there:
            await receive(there)
            await on_duty(other, "li.na")
            grace = api.server.config.desk.offer_board_grace_s
            api.clock.advance(timedelta(seconds=grace + 1))
            call_id = await api.press("H0005")
            await offered_to(api, call_id, "operator:li.na")
