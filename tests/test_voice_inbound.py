"""Calls to the centre's number, end to end: a real mosquitto, a real seeded database
(SQLite, and PostgreSQL when CALLCENTER_TEST_POSTGRES_DSN is set), the whole server on a
virtual clock, and the fake Twilio it runs itself ringing the centre (fake.ring_centre):
the server's TwiML rings the desk's phones there, which pick up or not, and each webhook
is posted signed as Twilio signs it.

The Must-show: an inbound call from a registered number opens or attaches the right call
and rings every operator on duty; the first to answer owns it; an unknown number opens
an unlinked voice call. And a forged /voice/incoming gets 403 and changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.broker import EmbeddedBroker
from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.store import models as m
from tests.api_support import Api, running_api
from tests.desk_support import count, scalar
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.voice_support import history_of, voice_post

# The desk's phones in these tests (zhao.min, the supervisor, has +8613900000001).
PHONES = {"li.na": "+8613900000011", "wang.wei": "+8613900000012"}
SUPERVISOR_PHONE = "+8613900000001"
# A number nobody in the register has.
STRANGER = "+8613712345678"


async def on_duty(api: Api, *who: str) -> None:
    """Give the test operators their phones, and put ``who`` on duty."""
    async with AsyncSession(api.server.engine) as session, session.begin():
        for username, phone in PHONES.items():
            await session.execute(
                update(m.Operator).where(m.Operator.username == username).values(phone=phone)
            )
    for username in who:
        reply = await api.post("/api/desk/duty", {"duty": "on_duty"}, who=username)
        assert reply.status == 200, reply


async def number_of(api: Api, household: str) -> str:
    """The household's first number in the register (one no other household has)."""
    number = str(
        await scalar(
            api.server,
            select(m.HouseholdPhone.number)
            .join(m.Household, m.Household.id == m.HouseholdPhone.household_id)
            .where(m.Household.code == household, m.HouseholdPhone.position == 1),
        )
    )
    shared = await count(api.server, m.HouseholdPhone, m.HouseholdPhone.number == number)
    assert shared == 1, f"{household}'s number {number} is the register's only one"
    return number


async def legs_to(fake: FakeTwilio, *phones: str) -> dict[str, FakeCall]:
    """The calls the fake places to ``phones`` (a Dial's legs), by number, once each rang."""
    legs: dict[str, FakeCall] = {}
    while set(legs) != set(phones):
        leg = await fake.next_call(timeout=10)
        assert leg.to in phones, f"only {phones} are rung, not {leg.to}"
        assert leg.direction == "outbound-dial"
        legs[leg.to] = leg
    return legs


async def inbound_steps(api: Api, call_id: int, *steps: str) -> list[dict[str, Any]]:
    """The call's "inbound" history lines, once each of ``steps`` is among them."""
    found: list[dict[str, Any]] = []

    async def written() -> bool:
        found[:] = [h for h in await history_of(api, call_id) if h["action"] == "inbound"]
        return set(steps) <= {h["detail"]["step"] for h in found}

    await eventually(written, within_s=10, what=f"inbound steps {steps} in the history")
    return found


async def voice_calls_of(api: Api, household: str) -> list[dict[str, Any]]:
    calls = (await api.get("/api/calls")).body["calls"]
    return [
        c
        for c in calls
        if c["call_type"] == "voice" and (c["household"] or {}).get("code") == household
    ]


async def test_a_registered_number_opens_a_voice_call_rings_every_operator_first_owns_it(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a call from a household's registered number with no open call opens a
    ``voice`` call for that household, rings every operator on duty with a phone at once
    (and not the supervisor, nor an operator off duty); the first to pick up owns the
    call, hears who is calling, is put through, and the other phone stops ringing."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na", "wang.wei")
        caller = await number_of(api, "H0003")
        sid = await fake.ring_centre(caller)
        legs = await legs_to(fake, *PHONES.values())

        [call] = await voice_calls_of(api, "H0003")
        assert call["priority"] == 1 and call["owner"] is None
        steps = await inbound_steps(api, call["id"], "called", "operators_rung")
        assert steps[0]["detail"]["from"] == caller and steps[0]["detail"]["call_sid"] == sid
        assert steps[1]["detail"]["rung"] == ["operator:li.na", "operator:wang.wei"]
        raised = (await history_of(api, call["id"]))[0]
        assert raised["action"] == "raised" and raised["actor"] == f"device:phone:{caller}"

        first, second = legs[PHONES["wang.wei"]], legs[PHONES["li.na"]]
        await fake.answer(first.sid)
        await fake.wait_for_bridge(sid)
        await fake.wait_for_status(second.sid, "canceled")
        assert fake.call(sid).bridged_with == first.sid
        assert any(f"呼叫{call['id']}" in s.text and "H0003" in s.text for s in first.spoken)

        detail = await api.call(call["id"])
        assert detail["owner"] == "operator:wang.wei"
        assert detail["state"] == "acknowledged"
        answered = await inbound_steps(api, call["id"], "answered")
        assert [h["detail"]["by"] for h in answered if h["detail"]["step"] == "answered"] == [
            "operator:wang.wei"
        ]

        await fake.hang_up(sid)
        await inbound_steps(api, call["id"], "ended")
        # Rung the two operators once each, and nobody else.
        assert sorted(c.to for c in fake.voice_calls() if c.sid != sid) == sorted(PHONES.values())


async def test_a_registered_number_with_an_open_call_is_noted_on_it(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a household ringing while its emergency is open opens no second call:
    the ring is noted on the emergency, and the operators on duty are rung about it."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na")
        call_id = await api.press("H0004")
        caller = await number_of(api, "H0004")
        await fake.ring_centre(caller)
        [leg] = (await legs_to(fake, PHONES["li.na"])).values()

        steps = await inbound_steps(api, call_id, "called", "operators_rung")
        assert steps[1]["detail"]["rung"] == ["operator:li.na"]
        assert await voice_calls_of(api, "H0004") == []
        await fake.answer(leg.sid)
        await inbound_steps(api, call_id, "answered")
        assert (await api.call(call_id))["owner"] == "operator:li.na"


async def test_nobody_answering_rings_the_supervisors_then_the_message_and_escalates(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that when no operator picks up, the supervisors on duty are rung; when no
    supervisor picks up either, the caller hears the recorded message in Chinese and
    English, and the call escalates at once as an alarm nobody took (the operators'
    boards alarmed, the supervisors texted)."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na", "zhao.min")
        fake.plan_phone(PHONES["li.na"], "no_answer")
        fake.plan_phone(SUPERVISOR_PHONE, "no_answer")
        sid = await fake.ring_centre(await number_of(api, "H0005"))
        await legs_to(fake, PHONES["li.na"])
        await legs_to(fake, SUPERVISOR_PHONE)
        await fake.wait_for_speech(sid, "值班员暂时无法接听")
        await fake.wait_for_status(sid, "completed")
        said = fake.call(sid).spoken
        assert [s.language for s in said] == ["cmn-CN", "en-US"]

        [call] = await voice_calls_of(api, "H0005")
        steps = await inbound_steps(api, call["id"], "supervisors_rung", "nobody")
        rung = [h["detail"].get("rung") for h in steps if h["detail"]["step"].endswith("_rung")]
        assert rung == [["operator:li.na"], ["supervisor:zhao.min"]]
        history = await history_of(api, call["id"])
        escalated = [h for h in history if h["action"] == "escalated"]
        assert [h["detail"]["step"] for h in escalated] == ["unacknowledged"]
        actions = [h["action"] for h in history]
        assert actions.index("inbound") < actions.index("escalated")
        assert "alert_operators" in actions
        await eventually(
            lambda: _texted(fake, SUPERVISOR_PHONE), what="the supervisor texted about the call"
        )


async def _texted(fake: FakeTwilio, phone: str) -> bool:
    return bool(fake.sent_to(phone))


async def test_an_unknown_number_opens_an_unlinked_voice_call(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a number the register does not know opens a ``voice`` call of no
    household, which rings the operators on duty and is owned by the first to answer."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na")
        before = await count(api.server, m.Call)
        await fake.ring_centre(STRANGER)
        [leg] = (await legs_to(fake, PHONES["li.na"])).values()
        calls = [
            c for c in (await api.get("/api/calls")).body["calls"] if c["call_type"] == "voice"
        ]
        [call] = calls
        assert call["household"] is None
        assert await count(api.server, m.Call) == before + 1
        await fake.answer(leg.sid)
        steps = await inbound_steps(api, call["id"], "called", "operators_rung", "answered")
        assert steps[0]["detail"]["from"] == STRANGER
        assert (await api.call(call["id"]))["owner"] == "operator:li.na"


async def test_a_forged_incoming_call_gets_403_and_changes_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that /voice/incoming posted without Twilio's signature, or signed with
    another token, is refused with 403: no call opened, nothing noted, no phone rung."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na")
        caller = await number_of(api, "H0006")
        fields = {
            "CallSid": "CA" + "ab" * 16,
            "From": caller,
            "To": fake.number,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        calls = await count(api.server, m.Call)
        history = await scalar(api.server, select(func.count()).select_from(m.CallHistory))
        for reply in (
            await voice_post(api, "/voice/incoming", fields, signed=False),
            await voice_post(api, "/voice/incoming", fields, token="f" * 32),
        ):
            assert reply.status == 403, reply
        assert await count(api.server, m.Call) == calls
        assert await scalar(api.server, select(func.count()).select_from(m.CallHistory)) == history
        assert fake.voice_calls() == []
        signed = await voice_post(api, "/voice/incoming", fields)
        assert signed.status == 200 and "<Dial" in signed.body, signed


async def test_a_call_of_no_household_sends_no_carer_and_shows_on_the_board(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a call of no household is listed (household null) and its detail read,
    that sending a carer to it is refused (there is no door), and that it can be closed."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        await on_duty(api, "li.na")
        await fake.ring_centre(STRANGER)
        await legs_to(fake, PHONES["li.na"])
        [call] = [c for c in (await api.get("/api/calls")).body["calls"] if c["household"] is None]
        board = (await api.get("/api/board")).body
        assert [c["id"] for c in board["calls"] if c["household"] is None] == [call["id"]]
        detail = await api.call(call["id"])
        assert detail["household"] is None and detail["call_type"] == "voice"
        sent = await api.post(f"/api/calls/{call['id']}/dispatch", {})
        assert sent.status == 422 and sent.body["error"] == "no_household", sent
        candidates = await api.get(f"/api/calls/{call['id']}/candidates")
        assert candidates.status == 409, candidates
        closed = await api.post(
            f"/api/calls/{call['id']}/resolve", {"outcome": "other", "reason": "wrong number"}
        )
        assert closed.status == 200 and closed.body["state"] == "resolved", closed
