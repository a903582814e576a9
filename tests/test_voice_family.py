"""The family rung when help is late, end to end: a real mosquitto, a real seeded database
(SQLite, and PostgreSQL when CALLCENTER_TEST_POSTGRES_DSN is set), the whole server on a
virtual clock, the real twilio library placing each ring at the fake Twilio the server
runs itself, and the family's phones at the fake not picking up, busy, picking up and
pressing 1 or nothing, their statuses posted to /voice/ signed as Twilio signs them.

The default not_on_scene step (15 min without a carer at the door) rings the household's
family contacts in their order until one presses 1 (docs/voice.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from callcenter.broker import EmbeddedBroker
from callcenter.domain.calls import FamilyRingOver, RingUnanswered, TextFailed
from callcenter.engine.outbox.delivery import consequence
from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.store import models as m
from tests.api_support import Api, running_api
from tests.desk_support import rows
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.sms_support import sms
from tests.voice_support import history_of, paged_phone

# The default not_on_scene step: no carer at the door this long after the call opened.
LATE = timedelta(minutes=15)


async def _household_with_three_contacts(api: Api) -> tuple[str, list[tuple[str, str, str]]]:
    """A demo household with three family contacts: its code, and each contact's label,
    name and phone in their order."""
    (code,) = (
        await rows(
            api.server,
            select(m.Household.code)
            .join(m.FamilyContact, m.FamilyContact.household_id == m.Household.id)
            .group_by(m.Household.code)
            .having(func.count(m.FamilyContact.id) == 3)
            .order_by(m.Household.code)
            .limit(1),
        )
    )[0]
    contacts = await rows(
        api.server,
        select(m.FamilyContact.household_id, m.FamilyContact.position, m.FamilyContact.name)
        .add_columns(m.FamilyContact.phone)
        .join(m.Household, m.Household.id == m.FamilyContact.household_id)
        .where(m.Household.code == code)
        .order_by(m.FamilyContact.position),
    )
    return code, [(f"family:{h}:{p}", name, phone) for h, p, name, phone in contacts]


async def _late_call(api: Api, household: str) -> int:
    """A press in ``household`` whose carer accepts by text and then does not arrive:
    after 15 minutes the not_on_scene step runs. The call's id."""
    call_id = await api.press(household)
    _, phone = await paged_phone(api, call_id)
    assert (await sms(api, phone, f"{call_id}a")).status == 200
    api.clock.advance(LATE + timedelta(seconds=1))
    return call_id


async def _next_ring(fake: FakeTwilio, phone: str) -> FakeCall:
    ring = await fake.next_call(timeout=10)
    assert ring.to == phone, f"the family contact {phone} is rung next, not {ring.to}"
    return ring


async def _family_lines(api: Api, call_id: int, last: str) -> list[dict[str, Any]]:
    """The call's history lines about the family's rings, once ``last`` is written."""
    lines: list[dict[str, Any]] = []
    about = {"ring_family", "family_heard", "family_unconfirmed"}

    async def written() -> bool:
        history = await history_of(api, call_id)
        lines[:] = [
            h
            for h in history
            if h["action"] in about
            or (h["action"] == "ring" and h["detail"]["purpose"] == "family")
        ]
        return any(h["action"] == last for h in lines)

    await eventually(written, within_s=10, what=f"{last} in the history")
    return lines


async def test_the_first_contact_does_not_answer_the_second_presses_1_nobody_further(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that 15 minutes without a carer at the door rings the first family contact;
    who does not pick up passes it to the second, who hears in Chinese who raised what,
    that the carer is on the way and "按1确认收到", presses 1 and is thanked; the third is
    never rung, and the history says each ring and the confirmation."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        household, contacts = await _household_with_three_contacts(api)
        (first, _, first_phone), (second, second_name, second_phone), third = contacts
        fake.plan_phone(first_phone, "no_answer")
        call_id = await _late_call(api, household)

        missed = await _next_ring(fake, first_phone)
        await fake.wait_for_status(missed.sid, "no-answer")
        ring = await _next_ring(fake, second_phone)
        await fake.answer(ring.sid)
        await fake.wait_for_speech(ring.sid, "按1确认收到")
        told = ring.spoken[0]
        assert told.language == "cmn-CN"
        assert household in told.text and "发出了紧急呼叫报警" in told.text
        assert "护理员已在路上，但已过15分" in told.text
        await fake.press(ring.sid, "1")
        await fake.wait_for_speech(ring.sid, "谢谢，已确认收到。")
        await fake.wait_for_status(ring.sid, "completed")

        lines = await _family_lines(api, call_id, "family_heard")
        said = [(h["action"], h["detail"].get("to"), h["detail"].get("status")) for h in lines]
        assert said[0] == ("ring_family", first, None)
        assert ("ring", first, "no-answer") in said
        assert said.index(("ring", first, "no-answer")) < said.index(("ring_family", second, None))
        assert ("ring", second, "key") in said
        heard = next(h for h in lines if h["action"] == "family_heard")
        assert heard["detail"] == {"to": second, "name": second_name, "step": "not_on_scene"}
        # Its end (the status callback answered once the fake lists it) queued no ring.
        assert await _rings_queued(api, call_id) == [first, second]
        assert fake.calls_to(third[2]) == []
        assert [c.to for c in fake.voice_calls()] == [first_phone, second_phone]
        detail = await api.call(call_id)
        assert [h["action"] for h in detail["history"]].count("ring_family") == 2


async def _rings_queued(api: Api, call_id: int) -> list[str]:
    """Whom the call's rings were queued for, in order (placed or not yet)."""
    queued = await rows(
        api.server,
        select(m.OutboxItem.recipient)
        .where(m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "voice")
        .order_by(m.OutboxItem.id),
    )
    return [recipient for (recipient,) in queued]


async def test_nobody_confirms_every_contact_is_tried_and_it_is_recorded(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a busy first contact, a second who does not pick up and a third who
    picks up and hangs up without a key are each rung once in their order, and that the
    history then says nobody confirmed and the supervisors on duty are texted why."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        household, contacts = await _household_with_three_contacts(api)
        phones = [phone for _, _, phone in contacts]
        fake.plan_phone(phones[0], "busy")
        fake.plan_phone(phones[1], "no_answer")
        fake.plan_phone(phones[2], "answer")
        call_id = await _late_call(api, household)

        for phone in phones[:2]:
            await _next_ring(fake, phone)
        last = await _next_ring(fake, phones[2])
        await fake.wait_for_speech(last.sid, "按1确认收到")
        await fake.hang_up(last.sid)

        lines = await _family_lines(api, call_id, "family_unconfirmed")
        rung = [h["detail"]["to"] for h in lines if h["action"] == "ring_family"]
        assert rung == [label for label, _, _ in contacts]
        endings = {
            (h["detail"]["to"], h["detail"]["status"])
            for h in lines
            if h["action"] == "ring" and h["detail"]["status"] in ("busy", "no-answer", "completed")
        }
        assert endings == {
            (contacts[0][0], "busy"),
            (contacts[1][0], "no-answer"),
            (contacts[2][0], "completed"),
        }
        unconfirmed = next(h for h in lines if h["action"] == "family_unconfirmed")
        assert unconfirmed["detail"]["because"] == {
            "reason": "family_unconfirmed",
            "contacts": "3",
        }
        assert unconfirmed["detail"]["last"] == contacts[2][0]
        texts = await rows(
            api.server,
            select(m.OutboxItem.recipient, m.OutboxItem.body).where(
                m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "sms"
            ),
        )
        told = [body for recipient, body in texts if "无人按1确认收到" in body]
        assert told, texts
        assert len(fake.voice_calls()) == 3
        assert await _rings_queued(api, call_id) == [label for label, _, _ in contacts]


async def test_a_carer_arriving_while_the_family_phone_rings_ends_the_round(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a contact who picks up after the carer reported on scene hears that
    nothing is needed (no key asked), and that nobody further of the family is rung."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        household, contacts = await _household_with_three_contacts(api)
        call_id = await _late_call(api, household)
        ring = await _next_ring(fake, contacts[0][2])
        _, carer_phone = await paged_phone(api, call_id)
        assert (await sms(api, carer_phone, f"{call_id}s")).status == 200
        await fake.answer(ring.sid)
        await fake.wait_for_status(ring.sid, "completed")
        assert [s.text for s in ring.spoken] == [
            "这里是呼叫中心。护理员已到达您的家人身边，或报警已处理完毕，无需您处理。谢谢，再见。"
        ]
        assert await _rings_queued(api, call_id) == [contacts[0][0]]
        assert [c.to for c in fake.voice_calls()] == [contacts[0][2]]


def test_a_family_ring_twilio_refuses_for_good_passes_to_the_next_contact() -> None:
    """Test that a ring to a family contact that can never be placed (the relay's
    did_not_arrive) is that contact not picking up, so the next is rung, and not a text
    that failed; a carer's ring and a family text keep their own consequences."""
    refused = consequence(None, "family:7:1", "+8613900000020", "21211", rings=True)
    assert refused == FamilyRingOver("family:7:1", "failed")
    assert consequence(None, "family:7:1", "+8613900000020", "30006") == TextFailed(
        "family:7:1", "+8613900000020", "30006"
    )
    assert consequence(3, "carer:C003", "+8613800000003", "21211", rings=True) == (
        RingUnanswered(3, "failed")
    )
