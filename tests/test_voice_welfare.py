"""Welfare calls ring the resident through the click-to-call bridge, end to end: a real
mosquitto, a real seeded database (SQLite, and PostgreSQL when
CALLCENTER_TEST_POSTGRES_DSN is set), the whole server on a virtual clock and the fake
Twilio it runs: the operator's phone first, then the household's numbers with the
resident's own mobile first; nobody answering is rung again after
``welfare.ring_retry_after_min``, and after the last retry the outcome is "no answer".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from callcenter.broker import EmbeddedBroker
from callcenter.store import models as m
from tests.api_support import Api, running_api
from tests.desk_support import rows
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.test_voice_bridge import OPERATOR_PHONE, give_phone, numbers_of

RETRY_AFTER = timedelta(minutes=120)  # welfare.ring_retry_after_min's default


async def welfare_with_own_mobile(api: Api) -> tuple[int, str, list[str]]:
    """A welfare call of this week whose resident has a mobile labelled with their name:
    its id, the resident's mobile, and every number of the household in register order."""
    assert (await api.get("/api/welfare")).status == 200  # the week's list made
    found = await rows(
        api.server,
        select(m.WelfareCall.id, m.HouseholdPhone.number, m.WelfareCall.household_id)
        .join(m.Resident, m.Resident.id == m.WelfareCall.resident_id)
        .join(m.HouseholdPhone, m.HouseholdPhone.household_id == m.WelfareCall.household_id)
        .where(m.HouseholdPhone.label == m.Resident.name, m.HouseholdPhone.position > 1)
        .order_by(m.WelfareCall.id)
        .limit(1),
    )
    welfare_id, mobile, household_id = found[0]
    return welfare_id, mobile, await numbers_of(api, m.Household.id == household_id)


async def rung_unanswered(api: Api) -> tuple[int, list[str]]:
    """li.na rings a welfare call none of whose numbers answers: its id and numbers."""
    fake = fake_of(api.server)
    await give_phone(api)
    welfare_id, _, numbers = await welfare_with_own_mobile(api)
    fake.plan_phone(OPERATOR_PHONE, "answer")
    for number in numbers:
        fake.plan_phone(number, "no_answer")
    assert (await api.post(f"/api/welfare/{welfare_id}/ring")).status == 200
    return welfare_id, numbers


async def welfare_call(api: Api, welfare_id: int) -> dict[str, Any]:
    calls = (await api.get("/api/welfare")).body["calls"]
    found: dict[str, Any] = next(c for c in calls if c["id"] == welfare_id)
    return found


async def test_a_welfare_ring_rings_the_residents_own_mobile_first(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that "ring" on a welfare call rings the operator's phone, then the resident's
    own mobile before the household's other numbers; answered, the bridge says so and
    the outcome is left to the operator, as today."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await give_phone(api)
        welfare_id, mobile, _ = await welfare_with_own_mobile(api)
        fake.plan_phone(OPERATOR_PHONE, "answer")
        fake.plan_phone(mobile, "answer")
        reply = await api.post(f"/api/welfare/{welfare_id}/ring")
        assert reply.status == 200, reply
        assert reply.body["ringing"] == OPERATOR_PHONE
        ring = await fake.next_call(timeout=10)
        assert ring.to == OPERATOR_PHONE
        await fake.wait_for_speech(ring.sid, "关怀电话")
        leg = await fake.next_call(timeout=10)
        assert leg.to == mobile, "the resident's own mobile is rung first"
        await fake.wait_for_bridge(ring.sid)
        await fake.hang_up(leg.sid)
        await fake.wait_for_status(ring.sid, "completed")

        async def answered() -> bool:
            return (await welfare_call(api, welfare_id))["ring"]["result"] == "answered"

        await eventually(answered, within_s=10, what="the ring answered")
        call = await welfare_call(api, welfare_id)
        assert call["state"] == "due" and call["outcome"] is None
        assert call["ring"] == {"tries": 1, "result": "answered", "next_at": None}


async def test_nobody_answering_is_rung_again_then_recorded_as_no_answer(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a welfare ring none of whose numbers answers is rung again after two
    hours, twice (welfare.ring_retries), and after the last the welfare call is done
    with the outcome "no_answer", as by the operator who rang."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        welfare_id, numbers = await rung_unanswered(api)
        for attempt in (1, 2, 3):
            ring = await fake.next_call(timeout=10)
            assert ring.to == OPERATOR_PHONE, f"try {attempt} rings the operator"
            await fake.wait_for_speech(ring.sid, "都无人接听")
            await fake.wait_for_status(ring.sid, "completed")
            legs = [await fake.next_call(timeout=10) for _ in numbers]
            assert sorted(leg.to for leg in legs) == sorted(numbers)
            if attempt == 3:
                break

            async def retry_due() -> bool:
                ring = (await welfare_call(api, welfare_id))["ring"]
                return ring["tries"] == attempt + 1 and ring["next_at"] is not None  # noqa: B023

            await eventually(retry_due, within_s=10, what=f"try {attempt + 1} due")
            assert (await welfare_call(api, welfare_id))["state"] == "due"
            api.clock.advance(RETRY_AFTER + timedelta(seconds=1))

        async def done() -> bool:
            return (await welfare_call(api, welfare_id))["state"] == "done"

        await eventually(done, within_s=10, what="the welfare call recorded")
        call = await welfare_call(api, welfare_id)
        assert call["outcome"] == "no_answer"
        assert call["done_by"] == "operator:li.na"
        # Three tries, each ringing the operator then every number: nothing more.
        assert len(fake.voice_calls()) == 3 * (1 + len(numbers))


async def test_an_outcome_recorded_stops_the_retry(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that recording a welfare call's outcome while its retry waits means the
    retry never rings."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        welfare_id, _ = await rung_unanswered(api)
        ring = await fake.next_call(timeout=10)
        await fake.wait_for_status(ring.sid, "completed")

        async def retry_due() -> bool:
            return (await welfare_call(api, welfare_id))["ring"]["tries"] == 2

        await eventually(retry_due, within_s=10, what="the retry due")
        recorded = await api.post(f"/api/welfare/{welfare_id}", {"outcome": "in_hospital"})
        assert recorded.status == 200, recorded
        placed = len(fake.voice_calls())
        api.clock.advance(RETRY_AFTER + timedelta(minutes=5))
        states = await rows(
            api.server,
            select(m.OutboxItem.state)
            .join(m.VoiceBridge, m.VoiceBridge.outbox_id == m.OutboxItem.id)
            .where(m.VoiceBridge.welfare_id == welfare_id)
            .order_by(m.VoiceBridge.id),
        )
        assert [s for (s,) in states] == ["sent", "skipped"]
        assert len(fake.voice_calls()) == placed
        again = await api.post(f"/api/welfare/{welfare_id}/ring")
        assert again.status == 409 and again.body["error"] == "already_done"


async def test_an_operator_who_does_not_pick_up_rings_nobody_else(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when the operator's own phone is not picked up, no number of the
    household is dialled, no retry is due, and the panel's ring says so."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await give_phone(api)
        welfare_id, _, _ = await welfare_with_own_mobile(api)
        fake.plan_phone(OPERATOR_PHONE, "no_answer")
        assert (await api.post(f"/api/welfare/{welfare_id}/ring")).status == 200
        ring = await fake.next_call(timeout=10)
        await fake.wait_for_status(ring.sid, "no-answer")

        async def missed() -> bool:
            return (await welfare_call(api, welfare_id))["ring"]["result"] == "operator_missed"

        await eventually(missed, within_s=10, what="the operator's ring missed")
        call = await welfare_call(api, welfare_id)
        assert call["state"] == "due" and call["ring"]["next_at"] is None
        assert [c.to for c in fake.voice_calls()] == [OPERATOR_PHONE]
