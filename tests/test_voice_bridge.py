"""Click-to-call, end to end: a real mosquitto, a real seeded database (SQLite, and
PostgreSQL when CALLCENTER_TEST_POSTGRES_DSN is set), the whole server on a virtual
clock, the real twilio library placing the operator's call at the fake Twilio the server
runs itself, and the fake's phones picking up, being busy or not answering, the TwiML
fetched and the statuses posted to /voice/bridge/ signed as Twilio signs them.

The Must-show: click-to-call bridges operator and household, with the history of
attempts; a busy first number falls to the next.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.broker import EmbeddedBroker
from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.store import models as m
from tests.api_support import Api, reconfigure, running_api
from tests.desk_support import count, rows
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.voice_support import call_fields, history_of, voice_post

OPERATOR_PHONE = "+8613911112222"


async def give_phone(api: Api, username: str = "li.na", phone: str = OPERATOR_PHONE) -> None:
    async with AsyncSession(api.server.engine) as session, session.begin():
        await session.execute(
            update(m.Operator).where(m.Operator.username == username).values(phone=phone)
        )


async def household_with_numbers(api: Api, at_least: int) -> tuple[str, list[str]]:
    """A household of the demo district with ``at_least`` numbers, and its numbers in
    the order to try them."""
    found = await rows(
        api.server,
        select(m.Household.code)
        .join(m.HouseholdPhone, m.HouseholdPhone.household_id == m.Household.id)
        .group_by(m.Household.code)
        .having(func.count() >= at_least)
        .order_by(m.Household.code)
        .limit(1),
    )
    code = found[0][0]
    return code, await numbers_of(api, m.Household.code == code)


async def numbers_of(api: Api, which: Any) -> list[str]:
    """The numbers of the household ``which`` picks, in the order to try them."""
    numbers = await rows(
        api.server,
        select(m.HouseholdPhone.number)
        .join(m.Household, m.Household.id == m.HouseholdPhone.household_id)
        .where(which)
        .order_by(m.HouseholdPhone.position),
    )
    return [n for (n,) in numbers]


async def planned_bridge(api: Api) -> tuple[str, str, str]:
    """li.na with a phone that answers, and a household whose first number is busy and
    whose second answers: the household's code and those two numbers."""
    fake = fake_of(api.server)
    await give_phone(api)
    household, numbers = await household_with_numbers(api, 2)
    first, second = numbers[:2]
    fake.plan_phone(OPERATOR_PHONE, "answer")
    fake.plan_phone(first, "busy")
    fake.plan_phone(second, "answer")
    return household, first, second


async def bridge_rings(api: Api, household: str) -> tuple[int, FakeCall]:
    """A press at ``household``, then li.na presses "call the household": the call's id
    and the ring at the operator's own phone."""
    call_id = await api.press(household)
    reply = await api.post(f"/api/calls/{call_id}/call-household")
    assert reply.status == 200, reply
    ring = await fake_of(api.server).next_call(timeout=10)
    assert ring.to == OPERATOR_PHONE, "the operator's own phone is rung first"
    return call_id, ring


async def rings(api: Api, call_id: int, *wanted: tuple[str, str]) -> list[dict[str, Any]]:
    """The call's ring lines once each (to, status) of ``wanted`` is among them."""
    found: list[dict[str, Any]] = []

    async def written() -> bool:
        found[:] = [h for h in await history_of(api, call_id) if h["action"] == "ring"]
        return set(wanted) <= {(h["detail"]["to"], h["detail"]["status"]) for h in found}

    await eventually(written, within_s=10, what=f"{wanted} in the history")
    return found


async def test_click_to_call_bridges_and_a_busy_first_number_falls_to_the_next(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that "call the household" rings the operator's phone, and once they pick up
    the household's first number (busy) and then its second (answered) are dialled,
    the second bridged with the operator; the call's history shows each attempt."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        household, first, second = await planned_bridge(api)
        call_id, ring = await bridge_rings(api, household)
        await fake.wait_for_speech(ring.sid, f"正在拨打住户{household}")
        busy = await fake.next_call(timeout=10)
        assert (busy.to, busy.parent_sid) == (first, ring.sid)
        await fake.wait_for_status(busy.sid, "busy")
        answered = await fake.next_call(timeout=10)
        assert (answered.to, answered.parent_sid) == (second, ring.sid)
        assert answered.from_ == ring.from_, "the household sees the centre's number"
        await fake.wait_for_bridge(ring.sid)
        assert ring.bridged_with == answered.sid
        await fake.hang_up(answered.sid)
        await fake.wait_for_status(ring.sid, "completed")

        label = f"household:{household}"
        found = await rings(
            api, call_id, (label, "busy"), (label, "in-progress"), (label, "completed")
        )
        legs = [h["detail"] for h in found if h["detail"]["to"] == label]
        assert [(d["attempt"], d["number"], d["status"]) for d in legs] == [
            (1, first, "ringing"),
            (1, first, "busy"),
            (2, second, "ringing"),
            (2, second, "in-progress"),
            (2, second, "completed"),
        ]
        assert isinstance(legs[-1]["duration_s"], int)
        assert {d["purpose"] for d in legs} == {"bridge"}
        history = await history_of(api, call_id)
        asked = next(h for h in history if h["action"] == "call_household")
        assert asked["actor"] == "operator:li.na"
        assert asked["detail"]["to"] == "operator:li.na"
        operator_rings = [
            h["detail"]["status"]
            for h in history
            if h["action"] == "ring" and h["detail"]["to"] == "operator:li.na"
        ]
        assert "in-progress" in operator_rings
        detail = await api.call(call_id)
        assert detail["owner"] == "operator:li.na", "calling the household takes the call"
        # Only the operator and the two numbers were rung.
        assert [c.to for c in fake.voice_calls()] == [OPERATOR_PHONE, first, second]


async def test_nobody_answering_is_said_to_the_operator_and_written(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when every number is busy, fails or is not answered, the operator
    hears so and the history says none answered."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await give_phone(api)
        household, numbers = await household_with_numbers(api, 2)
        fake.plan_phone(OPERATOR_PHONE, "answer")
        for number, does in zip(numbers, ["no_answer", "fail", "busy", "busy"], strict=False):
            fake.plan_phone(number, does)
        call_id, ring = await bridge_rings(api, household)
        await fake.wait_for_speech(ring.sid, "都无人接听")
        await fake.wait_for_status(ring.sid, "completed")
        label = f"household:{household}"
        found = await rings(api, call_id, (label, "all-unanswered"))
        ends = [
            (h["detail"].get("attempt"), h["detail"]["status"])
            for h in found
            if h["detail"]["to"] == label
        ]
        finals = [end for end in ends if end[1] not in ("ringing", "in-progress")]
        assert finals[:2] == [(1, "no-answer"), (2, "failed")]
        assert ends[-1] == (None, "all-unanswered")
        assert len(fake.voice_calls()) == 1 + len(numbers)


async def test_an_operator_without_a_phone_is_refused(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that an operator with no phone on their account is refused with a clear
    422 saying to set it, and nobody is rung nor anything written."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        call_id = await api.press("H0001")
        before = await history_of(api, call_id)
        reply = await api.post(f"/api/calls/{call_id}/call-household")
        assert reply.status == 422, reply
        assert reply.body["error"] == "no_phone"
        assert "set yours" in reply.body["message"]
        assert await history_of(api, call_id) == before
        assert fake_of(api.server).voice_calls() == []
        assert await count(api.server, m.OutboxItem, m.OutboxItem.channel == "voice") == 0


async def test_a_forged_bridge_webhook_is_refused_and_changes_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that the bridge's webhooks signed with another token get 403: no number is
    dialled, no status kept, nothing written in the call's history."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await give_phone(api)
        household, _ = await household_with_numbers(api, 1)
        call_id, ring = await bridge_rings(api, household)  # it rings: nobody picks up
        outbox_id = await rows(
            api.server, select(m.OutboxItem.id).where(m.OutboxItem.channel == "voice")
        )
        path = f"/voice/bridge/answer/{outbox_id[0][0]}"
        await fake.wait_for_status(ring.sid, "ringing")
        await rings(api, call_id, ("operator:li.na", "ringing"))
        before = await history_of(api, call_id)
        forged = await voice_post(api, path, call_fields(ring, "in-progress"), token="f" * 32)
        assert forged.status == 403
        assert "<Dial" not in forged.body
        leg = f"/voice/bridge/leg/{outbox_id[0][0]}?attempt=1"
        fields = call_fields(ring, "busy", SequenceNumber="9", CallDuration="0")
        assert (await voice_post(api, leg, fields, token="f" * 32)).status == 403
        assert (await voice_post(api, leg, fields, signed=False)).status == 403
        statuses = await count(api.server, m.VoiceStatus, m.VoiceStatus.sequence == 9)
        assert statuses == 0
        assert await history_of(api, call_id) == before
        assert [c.sid for c in fake.voice_calls()] == [ring.sid]
        assert isinstance(fake, FakeTwilio)


async def test_a_recorded_bridge_keeps_its_reference_until_it_expires(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with voice.record on, the bridge is recorded, its reference is kept on
    the call with its expiry, and once recording_retention_days have passed the
    housekeeping deletes it at Twilio and removes the reference; with it off (the
    default, the tests above) nothing is recorded."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        config = api.server.config
        voice = config.voice.model_copy(update={"record": True, "recording_retention_days": 2})
        reconfigure(api, config.model_copy(update={"voice": voice}))
        fake = fake_of(api.server)
        await give_phone(api)
        household, numbers = await household_with_numbers(api, 1)
        fake.plan_phone(OPERATOR_PHONE, "answer")
        fake.plan_phone(numbers[0], "answer")
        call_id, ring = await bridge_rings(api, household)
        leg = await fake.next_call(timeout=10)
        await fake.wait_for_bridge(ring.sid)
        await fake.hang_up(leg.sid)
        await fake.wait_for_status(ring.sid, "completed")
        found: list[dict[str, Any]] = []

        async def kept() -> bool:
            found[:] = (await api.call(call_id))["recordings"]
            return bool(found)

        await eventually(kept, within_s=10, what="the recording's reference on the call")
        (recording,) = ring.recordings
        assert found[0]["sid"] == recording.sid and found[0]["url"] == recording.url
        assert found[0]["expires_at"].startswith("2026-11-25")  # two days after Monday

        api.clock.advance(timedelta(days=2, hours=2))

        async def removed() -> bool:
            return (await api.call(call_id))["recordings"] == []

        await eventually(removed, within_s=10, what="the expired reference removed")
        assert fake.deleted_recordings == [recording.sid]
        assert ring.recordings == []
