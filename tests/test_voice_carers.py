"""Carers rung when a page is not answered, end to end: a real mosquitto, a real seeded
database (SQLite, and PostgreSQL when CALLCENTER_TEST_POSTGRES_DSN is set), the whole
server on a virtual clock, the real twilio library placing the call at the fake Twilio
the server runs itself, and the fake's phone picking up, pressing keys or not answering,
its TwiML fetched and its statuses posted to /voice/ signed as Twilio signs them.

The Must-show: an unanswered page rings the carer; "1" accepts, "2" declines and pages
the next; no answer pages the next. And the call's history shows each ring.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.store import models as m
from tests.api_support import running_api
from tests.desk_support import (
    MONDAY_MORNING,
    desk_config,
    history,
    press_for_call,
    rows,
    running_desk,
)
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.sms_support import sms
from tests.voice_support import (
    RING_AFTER,
    history_of,
    paged_phone,
    ring_of,
    rings_in_history,
    rung,
)


async def test_an_unanswered_page_rings_the_carer_and_1_accepts(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a page not accepted in a minute rings the paged carer, who hears the
    call's summary in Chinese and "按1接单，按2拒绝"; pressing 1 accepts the call as the
    carer, is confirmed by voice, and the history shows the ring ringing, answered, the
    key and the end with its duration."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, carer, _, ring = await rung(api, "H0001")
        assert ring.timeout == 25  # voice.ring_timeout_s
        await fake.answer(ring.sid)
        await fake.wait_for_speech(ring.sid, "按1接单，按2拒绝")
        summary = ring.spoken[0]
        assert summary.language == "cmn-CN"
        assert f"呼叫{call_id}" in summary.text and "H0001" in summary.text
        await fake.press(ring.sid, "1")
        await fake.wait_for_speech(ring.sid, "已接单")
        await fake.wait_for_status(ring.sid, "completed")

        detail = await api.call(call_id)
        assert detail["state"] == "accepted"
        assert [a["state"] for a in detail["assignments"]] == ["accepted"]
        rings = await rings_in_history(api, call_id, "ringing", "in-progress", "key", "completed")
        assert [h["detail"]["status"] for h in rings] == [
            "ringing",
            "in-progress",
            "key",
            "completed",
        ]
        assert {h["detail"]["to"] for h in rings} == {f"carer:{carer}"}
        assert rings[2]["detail"]["key"] == "1"
        assert isinstance(rings[3]["detail"]["duration_s"], int)
        actions = [h["action"] for h in await history_of(api, call_id)]
        assert actions.index("ring_carer") < actions.index("accepted")
        accepted = next(h for h in await history_of(api, call_id) if h["action"] == "accepted")
        assert accepted["actor"] == f"carer:{carer}"
        # Rung once, about this page, and nothing else placed.
        assert [c.sid for c in fake.voice_calls()] == [ring.sid]


async def test_2_declines_by_voice_and_the_next_carer_is_paged(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that pressing 2 on the ring declines as the SMS code "d" does: the carer is
    released, told so by voice, and the next carer is paged by SMS."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, carer, _, ring = await rung(api, "H0002")
        await fake.answer(ring.sid)
        await fake.press(ring.sid, "2")
        await fake.wait_for_speech(ring.sid, "已拒绝")
        await fake.wait_for_status(ring.sid, "completed")

        detail = await api.call(call_id)
        states = [(a["carer"], a["state"]) for a in detail["assignments"]]
        assert states[0] == (carer, "declined")
        assert len(states) == 2 and states[1][1] == "dispatched" and states[1][0] != carer
        declined = next(h for h in detail["history"] if h["action"] == "declined")
        assert declined["actor"] == f"carer:{carer}"
        pages = await rows(
            api.server,
            select(m.OutboxItem.recipient).where(
                m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "sms"
            ),
        )
        assert (f"carer:{states[1][0]}",) in pages


async def test_a_carer_who_does_not_pick_up_is_released_and_the_next_paged(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a ring nobody picks up releases the carer at once, as a page's silence
    does after two minutes (stood down, station lead told), and pages the next carer."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, carer, phone, ring = await rung(api, "H0003", "no_answer")
        await fake.wait_for_status(ring.sid, "no-answer")

        async def released() -> bool:
            assignments = (await api.call(call_id))["assignments"]
            return len(assignments) == 2

        await eventually(released, within_s=10, what="the next carer paged")
        detail = await api.call(call_id)
        first, second = detail["assignments"]
        assert (first["carer"], first["state"]) == (carer, "no_answer")
        assert second["state"] == "dispatched" and second["carer"] != carer
        no_answer = next(h for h in detail["history"] if h["action"] == "no_answer")
        assert no_answer["detail"]["ring"] == "no-answer"
        assert no_answer["detail"]["because"]["reason"] == "ring_unanswered"
        rings = await rings_in_history(api, call_id, "no-answer")
        assert rings[-1]["detail"]["duration_s"] == 0
        # Released at the ring, before the two minutes of the unaccepted step.
        assert no_answer["detail"]["step"] == "unaccepted"
        assert no_answer["detail"]["waited_s"] < 120
        # The second carer's own minute rings the second carer, not the first again.
        registry = await api.server.desk.district.registry()
        again = await ring_of(api, fake, registry.carers_by_code[second["carer"]].phone)
        assert again.to != phone


async def test_a_busy_phone_is_not_picked_up_either(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a carer who rejects the ring (busy) is released as one who does not
    pick up, and the ring's outbox row keeps the CallSid and the status "busy"."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, carer, _, ring = await rung(api, "H0004")
        await fake.reject(ring.sid)
        await fake.wait_for_status(ring.sid, "busy")

        async def released() -> bool:
            states = [a["state"] for a in (await api.call(call_id))["assignments"]]
            return states[:1] == ["no_answer"]

        await eventually(released, within_s=10, what=f"carer {carer} released")
        await rings_in_history(api, call_id, "busy")
        # The ring's row: placed as the call Twilio took, its status the last reported.
        ((sid, delivery),) = await rows(
            api.server,
            select(m.OutboxItem.provider_ref, m.OutboxItem.delivery).where(
                m.OutboxItem.channel == "voice"
            ),
        )
        assert (sid, delivery) == (ring.sid, "busy")


async def test_no_key_pressed_is_asked_once_more_then_goodbye_and_the_carer_stays(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a carer who picks up and presses nothing hears the summary a second
    time, then goodbye; the call ends and the carer is still paged (the two-minute step
    decides), and nothing is recorded as their answer."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, _, _, ring = await rung(api, "H0005")
        await fake.answer(ring.sid)
        # The fake waits for a key on the server's clock: each of the TwiML's waits (8 s)
        # passes when the test moves the clock past it.
        for _ in range(2):
            await fake.quiet()
            api.clock.advance(timedelta(seconds=9))
        await fake.wait_for_status(ring.sid, "completed")
        said = [s.text for s in ring.spoken]
        assert sum("按1接单，按2拒绝" in s for s in said) == 2
        assert said[-1].endswith("再见。") and "没有收到按键" in said[-1]
        assert [a["state"] for a in (await api.call(call_id))["assignments"]] == ["dispatched"]


async def test_with_voice_disabled_the_ring_step_is_written_and_rings_nobody(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with voice.enabled = false the ring_carer step is kept on the call but
    no call is queued or placed, and the carer stays paged for the unaccepted step."""
    config = desk_config(
        host=broker.host, port=broker.port, prefix=topic_prefix, database_url=seeded_database_url
    )
    config = config.model_copy(update={"voice": config.voice.model_copy(update={"enabled": False})})
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        assert "voice" not in server.relay.channels
        fake = fake_of(server)
        call_id = await press_for_call(server, broker.host, broker.port, topic_prefix, "H0008")
        clock.advance(RING_AFTER + timedelta(seconds=1))

        async def rung() -> bool:
            return "ring_carer" in [h.action for h in await history(server, call_id)]

        await eventually(rung, what="the ring_carer step written")
        voice = await rows(server, select(m.OutboxItem.id).where(m.OutboxItem.channel == "voice"))
        assert voice == []
        assert fake.voice_calls() == []
        states = await rows(
            server, select(m.CallAssignment.state).where(m.CallAssignment.call_id == call_id)
        )
        assert states == [("dispatched",)]


async def test_a_carer_who_accepted_by_text_while_the_phone_rang_is_not_asked_again(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a carer who accepts by SMS while their phone rings hears, on picking
    up, that the call is theirs already, and is asked for no key."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, _, phone, ring = await rung(api, "H0009")
        assert (await sms(api, phone, f"{call_id}a")).status == 200
        await fake.answer(ring.sid)
        await fake.wait_for_status(ring.sid, "completed")
        assert [s.text for s in ring.spoken] == [f"您已接单呼叫{call_id}。谢谢，再见。"]
        assert [a["state"] for a in (await api.call(call_id))["assignments"]] == ["accepted"]


async def test_a_ring_twilio_refuses_for_good_moves_on_without_marking_the_phone(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a ring Twilio refuses for good (an invalid number, 21211) counts as not
    picked up: the carer is released and the next paged at once; and the number is not
    marked as unable to get texts, since it took the page."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id = await api.press("H0010")
        carer, phone = await paged_phone(api, call_id)
        assert (await fake.next_message()).to == phone  # the page went out first
        # Taken, so no supervisor is texted at 30 s: the next thing Twilio is asked is the ring.
        assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
        fake.fail_next(status=400, code=21211)
        api.clock.advance(RING_AFTER + timedelta(seconds=1))

        async def released() -> bool:
            return len((await api.call(call_id))["assignments"]) == 2

        await eventually(released, within_s=10, what="the next carer paged")
        first = (await api.call(call_id))["assignments"][0]
        assert (first["carer"], first["state"]) == (carer, "no_answer")
        assert fake.calls_to(phone) == []
        assert await rows(api.server, select(m.BrokenPhone.phone)) == []
        ((state, error),) = await rows(
            api.server,
            select(m.OutboxItem.state, m.OutboxItem.last_error).where(
                m.OutboxItem.channel == "voice"
            ),
        )
        assert (state, "(Twilio 21211)" in error) == ("failed", True)
