"""The simulated field on the phone (device_sim.phones): carers, households and family
contacts answering the calls the real twilio library places through the fake Twilio over
HTTP, with TwiML <Gather> prompts and <Dial> bridges served by a small stand-in for the
call centre's voice webhooks (no server needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

from callcenter.clock import SystemClock
from callcenter.domain.geo import Place, Transport
from callcenter.fake_twilio import FakeCall, FakeTwilio
from device_sim.demo_district import build_demo_district
from device_sim.field import Field, FieldCarer, FieldProfile
from device_sim.phones import (
    Answering,
    Does,
    PhoneProfile,
    Phones,
    Who,
    answer_calls,
    district_phones,
    react,
)
from tests.test_fake_twilio_voice import DESK, Centre, centre

__all__ = ["centre"]  # the fixture, shared with the voice tests

CARER = "+8613800138000"
OTHER_CARER = "+8613900139000"
RELATIVE = "+8613600136001"
OPERATOR = "+8613700137000"
UNIT = "+8614700000001"
LANDLINE = "+869716000001"
MOBILE = "+8618300000001"
HOUSEHOLDS = {UNIT: "unit", LANDLINE: "landline", MOBILE: "mobile"}
PAGE = "Call 12 fall: H0007 王芳, 3 Hill Road. Reply 12a accept, 12d decline."
SUMMARY = "这里是呼叫中心。呼叫12，跌倒，H0007，王芳，山路3号。按1接单，按2拒绝。"
NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
# People who pick up at once (a few tenths of a second) and listen briefly.
AT_ONCE = Answering(never_share=0.0, refuse_share=0.0, after_s=(0.05, 0.2))
QUICK = PhoneProfile(
    carer=AT_ONCE,
    unit=AT_ONCE,
    landline=AT_ONCE,
    mobile=AT_ONCE,
    family=AT_ONCE,
    listen_s=(0.05, 0.2),
    prompt_wait_s=5.0,
    talk_s=(3.0, 4.0),
)


def _field(*phones: str, no_answer_share: float = 0.0, seed: int = 1) -> Field:
    carers = [
        FieldCarer(f"C{i:03d}", phone, "S01", Place(36.6, 101.8), Transport.EBIKE)
        for i, phone in enumerate(phones, start=1)
    ]
    return Field(carers, {}, FieldProfile(no_answer_share=no_answer_share), seed=seed)


def _prompt(text: str, action: str = "/voice/gather") -> str:
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, timeout=5, action_on_empty_result=True)
    gather.say(text, language="cmn-CN")
    response.append(gather)
    return str(response)


def _said(text: str) -> str:
    response = VoiceResponse()
    response.say(text, language="cmn-CN")
    response.hangup()
    return str(response)


@asynccontextmanager
async def _answering(fake: FakeTwilio, phones: Phones) -> AsyncIterator[None]:
    """The field's phones answered on the wall clock while the block runs."""
    stop = asyncio.Event()
    task = asyncio.create_task(answer_calls(fake, phones, SystemClock(), stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def _ring(client: Client, centre: Centre, to: str, ring_s: int = 10) -> str:
    call = await client.calls.create_async(
        to=to, from_=DESK, url=centre.url("/voice/answer"), timeout=ring_s
    )
    assert call.sid is not None
    return call.sid


async def _soon(what: str, happened: Callable[[], bool]) -> None:
    for _ in range(200):
        if happened():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within 20 s: {what}")


async def _ended(fake: FakeTwilio, sid: str) -> FakeCall:
    call = fake.call(sid)
    assert call is not None
    await _soon(f"call {sid} ended", lambda: call.ended)
    return call


async def test_a_carer_who_would_accept_the_page_picks_up_and_presses_1(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a carer who has read the page and means to accept it, rung by the desk,
    picks up, waits for the summary and presses 1 (the Gather's action gets Digits=1), and
    does not then also text the accept code; and that a carer on another call rung about
    the same page presses 2."""
    field = _field(CARER, OTHER_CARER)
    (accept, *_trip) = field.received(CARER, PAGE, NOW)
    field.by_phone[OTHER_CARER].on_call = 7
    centre.twiml["/voice/answer"] = _prompt(SUMMARY)
    centre.twiml["/voice/gather"] = _said("已接单，呼叫12。")
    phones = Phones(QUICK, seed=3, field=field)
    async with _answering(fake_twilio, phones):
        accepting = await _ring(twilio_client, centre, CARER)
        declining = await _ring(twilio_client, centre, OTHER_CARER)
        accepted = await _ended(fake_twilio, accepting)
        declined = await _ended(fake_twilio, declining)
    assert (accepted.status, accepted.digits) == ("completed", ["1"])
    assert (declined.status, declined.digits) == ("completed", ["2"])
    keys = {post.form["CallSid"]: post.form["Digits"] for post in centre.to("/voice/gather")}
    assert keys == {accepting: "1", declining: "2"}
    assert accept.body == "12a" and not field.still_meant(accept)
    carer = field.by_phone[CARER]
    assert (carer.on_call, carer.accepted_by_phone) == (12, 1)
    assert field.by_phone[OTHER_CARER].declined_by_phone == 1
    assert phones.done[Who.CARER, "pressed 1"] == 1


async def test_a_carer_who_never_read_the_page_accepts_on_the_phone_and_sets_off(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a free carer who left the page unread presses 1 when rung and then goes
    as after a text: on the call, with the on-scene and done texts planned."""
    field = _field(CARER, no_answer_share=1.0)
    assert field.received(CARER, PAGE, NOW) == []
    centre.twiml["/voice/answer"] = _prompt(SUMMARY)
    centre.twiml["/voice/gather"] = _said("已接单。")
    async with _answering(fake_twilio, Phones(QUICK, seed=3, field=field)):
        call = await _ended(fake_twilio, await _ring(twilio_client, centre, CARER))
    assert call.digits == ["1"]
    carer = field.by_phone[CARER]
    assert carer.on_call == 12
    assert [text.body for text in carer.planned][-2:] == ["12s", "12r"]


async def test_a_carer_who_never_picks_up_lets_the_call_end_no_answer(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a carer whose profile never picks up leaves the phone ringing until the
    call's timeout: the call ends no-answer, never answered, no key pressed, and the desk's
    webhook is never asked for TwiML."""
    field = _field(CARER)
    field.received(CARER, PAGE, NOW)
    never = PhoneProfile(carer=Answering(never_share=1.0, refuse_share=0.0, after_s=(0.0, 0.1)))
    centre.twiml["/voice/answer"] = _prompt(SUMMARY)
    phones = Phones(never, seed=3, field=field)
    async with _answering(fake_twilio, phones):
        sid = await _ring(twilio_client, centre, CARER, ring_s=1)
        call = await fake_twilio.wait_for_status(sid, "no-answer", timeout=10)
    assert (call.answered_at, call.digits, centre.to("/voice/answer")) == (None, [], [])
    assert phones.done == {(Who.CARER, "never"): 1}
    assert field.by_phone[CARER].on_call == 12  # still meaning to text the answer


async def _outcomes(
    fake: FakeTwilio, client: Client, centre: Centre, numbers: list[str], order: list[str]
) -> dict[str, tuple[str, list[str]]]:
    """How each carer's call about one page ended, rung in ``order``."""
    seed = 12
    field = _field(*numbers, no_answer_share=0.5, seed=seed)
    for number in numbers:
        field.received(number, PAGE, NOW)
    field.by_phone[numbers[3]].on_call = 7  # out on another call: declines
    mixed = PhoneProfile(
        carer=Answering(never_share=0.3, refuse_share=0.3, after_s=(0.05, 0.3)),
        listen_s=(0.05, 0.1),
        prompt_wait_s=5.0,
        talk_s=(3.0, 4.0),
    )
    async with _answering(fake, Phones(mixed, seed=seed, field=field)):
        sids = [await _ring(client, centre, number, ring_s=1) for number in order]
        calls = [await _ended(fake, sid) for sid in sids]
    return {call.to: (call.status, call.digits) for call in calls}


async def test_what_each_carer_does_is_the_same_for_a_seed(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that, for one seed, every carer does the same about their call on two runs
    (never picks up, declines by hanging up, or picks up and presses the same key), with
    several of those in the mix; and that the decision is the number's own, whatever the
    order calls come in."""
    centre.twiml["/voice/answer"] = _prompt(SUMMARY)
    centre.twiml["/voice/gather"] = _said("好。")
    numbers = [f"+861380013{i:04d}" for i in range(8)]
    first = await _outcomes(fake_twilio, twilio_client, centre, numbers, numbers)
    again = await _outcomes(fake_twilio, twilio_client, centre, numbers, numbers[::-1])
    assert first == again
    assert {status for status, _ in first.values()} == {"no-answer", "busy", "completed"}
    assert {"".join(keys) for _, keys in first.values()} == {"", "1", "2"}

    phones = Phones(PhoneProfile(), seed=11, households={UNIT: "unit", MOBILE: "mobile"})
    forward = [phones.ringing(n) for n in (UNIT, MOBILE, UNIT, MOBILE)]
    other = Phones(PhoneProfile(), seed=11, households={UNIT: "unit", MOBILE: "mobile"})
    backward = [other.ringing(n) for n in (MOBILE, UNIT, MOBILE, UNIT)]
    assert forward == [backward[1], backward[0], backward[3], backward[2]]
    reseeded = [react(PhoneProfile(), Who.MOBILE, f"12:{MOBILE}:{n}") for n in range(1, 40)]
    assert reseeded != [react(PhoneProfile(), Who.MOBILE, f"11:{MOBILE}:{n}") for n in range(1, 40)]


def _bridge(number: str, then: str) -> str:
    response = VoiceResponse()
    dial = Dial(action=then, timeout=1, caller_id=DESK)
    dial.number(number)
    response.append(dial)
    return str(response)


async def test_a_households_unit_answers_where_its_landline_and_busy_mobile_do_not(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test the click-to-call bridge's way through a household's numbers: the resident's
    mobile declines (busy), the landline is not picked up (no-answer), the base unit
    answers hands-free, is bridged with the operator, and stays on the line until the
    operator hangs up."""
    busy_mobile = Answering(never_share=0.0, refuse_share=1.0, after_s=(0.05, 0.1))
    nobody_home = Answering(never_share=1.0, refuse_share=0.0, after_s=(0.0, 0.1))
    profile = PhoneProfile(
        unit=AT_ONCE, landline=nobody_home, mobile=busy_mobile, talk_s=(0.1, 0.2)
    )
    phones = Phones(profile, seed=5, households=HOUSEHOLDS)
    fake_twilio.plan_phone(OPERATOR, "answer")  # the operator's phone: not the field's
    centre.twiml["/voice/answer"] = _bridge(MOBILE, "/voice/next/landline")
    centre.twiml["/voice/next/landline"] = _bridge(LANDLINE, "/voice/next/unit")
    centre.twiml["/voice/next/unit"] = _bridge(UNIT, "/voice/done")
    async with _answering(fake_twilio, phones):
        sid = await _ring(twilio_client, centre, OPERATOR)
        await _soon(
            "the unit bridged",
            lambda: any(leg.bridged_with for leg in fake_twilio.calls_to(UNIT)),
        )
        unit = fake_twilio.calls_to(UNIT)[0]
        await asyncio.sleep(0.5)  # longer than a person's talk in this profile
        assert not unit.ended
        await fake_twilio.hang_up(sid)
        await _ended(fake_twilio, sid)
        await _ended(fake_twilio, unit.sid)
    tried = [
        centre.to(path)[0].form["DialCallStatus"]
        for path in ("/voice/next/landline", "/voice/next/unit", "/voice/done")
    ]
    assert tried == ["busy", "no-answer", "completed"]
    assert unit.answered_at is not None and unit.bridged_with == sid
    assert phones.done == {
        (Who.MOBILE, "refused"): 1,
        (Who.LANDLINE, "never"): 1,
        (Who.UNIT, "answered"): 1,
    }


@pytest.mark.parametrize("confirms", [1.0, 0.0])
async def test_a_family_contact_hears_the_message_and_presses_1_or_hangs_up(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre, confirms: float
) -> None:
    """Test that a family contact rung picks up and, having heard the message, presses 1
    to confirm it, or (one who does not confirm) hangs up without a key."""
    profile = PhoneProfile(
        family=AT_ONCE, family_confirms_share=confirms, listen_s=(0.05, 0.1), prompt_wait_s=5.0
    )
    centre.twiml["/voice/answer"] = _prompt("呼叫12：王芳摔倒了，护理员尚未到达。按1确认收到。")
    centre.twiml["/voice/gather"] = _said("谢谢，再见。")
    async with _answering(fake_twilio, Phones(profile, seed=2, family=[RELATIVE])):
        call = await _ended(fake_twilio, await _ring(twilio_client, centre, RELATIVE))
    assert call.answered_at is not None
    assert call.digits == (["1"] if confirms else [])


def test_the_demo_districts_carers_and_family_contacts_have_their_phones() -> None:
    """Test that the demo district's phones know every carer (when they answer) and every
    family contact, and that a household number's kind must be the register's."""
    district = build_demo_district(2026, households=40)
    field = Field([], {}, FieldProfile(), seed=1)
    phones = district_phones(district, PhoneProfile(), seed=1, field=field)
    contacts = [c.phone for h in district.households for c in h.contacts]
    assert contacts and all(phones.who(phone) == Who.FAMILY for phone in contacts)
    # The register's numbers, where the district has them (issue 20's household_phones).
    numbers = [n for h in district.households for n in getattr(h, "phones", ())]
    assert all(phones.who(n.number) == Who(str(n.kind)) for n in numbers)
    assert phones.ringing(OPERATOR) is None
    with pytest.raises(ValueError, match="not unit, landline or mobile"):
        Phones(PhoneProfile(), seed=1, households={UNIT: "fax"})
    with pytest.raises(ValueError, match="shares"):
        Answering(never_share=0.7, refuse_share=0.5, after_s=(1.0, 2.0))
    assert react(QUICK, Who.UNIT, "x").talk_s is None
    assert react(QUICK, Who.UNIT, "x").does == Does.ANSWERS
