"""The fake Twilio's <Dial>, <Record> and <Reject>, and calls that come in to the
centre's number, driven by the real twilio library's async client against a small app
standing in for the call centre's voice webhooks."""

from __future__ import annotations

import asyncio

import pytest
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse

from callcenter.fake_twilio import FakeTwilio, Spoken
from tests.test_fake_twilio_voice import DESK, Centre, centre, place_call

__all__ = ["centre"]  # the fixture, shared with the voice tests

OPERATOR = "+8613700137000"
UNIT = "+8657112345678"
LANDLINE = "+8657187654321"
MOBILE = "+8613600136000"


def _bridge(*numbers: str, whisper: str = "", record: bool = False) -> str:
    response = VoiceResponse()
    dial = Dial(
        action="/voice/dialled",
        timeout=10,
        caller_id=DESK,
        record="record-from-answer" if record else "do-not-record",
        recording_status_callback="/voice/recording" if record else None,
    )
    for number in numbers:
        dial.number(
            number,
            url=whisper or None,
            status_callback="/voice/status/leg",
            status_callback_event="initiated ringing answered completed",
        )
    response.append(dial)
    return str(response)


async def _ring_operator(client: Client, centre: Centre) -> str:
    return await place_call(client, centre, to=OPERATOR)


async def test_dial_rings_every_number_at_once_and_bridges_the_first_to_answer(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a <Dial> of three numbers rings them all at once as legs of the call
    (outbound-dial, ParentCallSid), that the first to answer hears its whisper and is
    bridged, the others are canceled, and that when the household hangs up the action
    is told DialCallStatus=completed with the leg's sid and duration; the legs' own
    status callbacks are signed and carry ParentCallSid."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    fake_twilio.plan_phone(UNIT, "ring")
    fake_twilio.plan_phone(LANDLINE, "ring")
    fake_twilio.plan_phone(MOBILE, "ring")
    centre.twiml["/voice/answer"] = _bridge(UNIT, LANDLINE, MOBILE, whisper="/voice/whisper")
    centre.twiml["/voice/whisper"] = (
        '<Response><Say language="cmn-CN">呼叫中心来电</Say></Response>'
    )
    centre.twiml["/voice/dialled"] = "<Response><Say>The household hung up.</Say></Response>"
    operator = await _ring_operator(twilio_client, centre)
    assert (await fake_twilio.next_call()).sid == operator
    legs = [await fake_twilio.next_call() for _ in range(3)]
    assert [leg.to for leg in legs] == [UNIT, LANDLINE, MOBILE]
    assert all(leg.direction == "outbound-dial" and leg.parent_sid == operator for leg in legs)
    assert all(leg.from_ == DESK for leg in legs)
    for leg in legs:
        await fake_twilio.wait_for_status(leg.sid, "ringing")
    await fake_twilio.answer(legs[1].sid)
    await fake_twilio.wait_for_speech(legs[1].sid, "呼叫中心来电")
    for other in (legs[0], legs[2]):
        assert (await fake_twilio.wait_for_status(other.sid, "canceled")).duration == 0
    call = fake_twilio.call(operator)
    assert call is not None
    await fake_twilio.hang_up(legs[1].sid)
    await fake_twilio.wait_for_status(operator, "completed")
    assert (call.bridged_with, legs[1].bridged_with) == (legs[1].sid, operator)
    assert legs[1].spoken == [Spoken("呼叫中心来电", "cmn-CN")]
    assert call.spoken == [Spoken("The household hung up.")]

    (dialled,) = centre.to("/voice/dialled")
    assert dialled.signed
    assert (dialled.form["DialCallStatus"], dialled.form["DialCallSid"]) == (
        "completed",
        legs[1].sid,
    )
    assert dialled.form["DialCallDuration"] == str(legs[1].duration)
    (whisper,) = centre.to("/voice/whisper")
    assert whisper.signed and whisper.form["ParentCallSid"] == operator
    leg_reports = [
        (p.form["CallSid"], p.form["CallStatus"]) for p in centre.to("/voice/status/leg")
    ]
    assert all(
        p.signed and p.form["ParentCallSid"] == operator for p in centre.to("/voice/status/leg")
    )
    assert [s for sid, s in leg_reports if sid == legs[1].sid] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [s for sid, s in leg_reports if sid == legs[0].sid][-1] == "canceled"
    children = await twilio_client.calls.list_async(parent_call_sid=operator)
    assert sorted(c.sid for c in children) == sorted(leg.sid for leg in legs)


async def test_a_busy_first_number_tells_the_action_and_the_next_is_tried(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a Dial of a busy number tells its action DialCallStatus=busy, that the
    action's next Dial rings the next number, and that a recorded bridge gives the action
    a RecordingSid and posts the recording's status callback; the operator hanging up
    ends the household's leg too."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    fake_twilio.plan_phone(UNIT, "busy")
    fake_twilio.plan_phone(LANDLINE, "answer")
    centre.twiml["/voice/answer"] = _bridge(UNIT)
    centre.twiml["/voice/dialled"] = _bridge(LANDLINE, record=True)
    operator = await _ring_operator(twilio_client, centre)
    await fake_twilio.next_call()
    unit, landline = await fake_twilio.next_call(), await fake_twilio.next_call()
    assert (unit.to, landline.to) == (UNIT, LANDLINE)
    await fake_twilio.wait_for_status(landline.sid, "in-progress")
    centre.twiml["/voice/dialled"] = "<Response/>"
    await fake_twilio.hang_up(operator)
    await fake_twilio.wait_for_status(operator, "completed")
    await fake_twilio.wait_for_status(landline.sid, "completed")
    assert unit.status == "busy"

    busy, bridged = centre.to("/voice/dialled")
    assert (busy.form["DialCallStatus"], busy.form["DialCallSid"]) == ("busy", unit.sid)
    assert busy.form["DialCallDuration"] == "0"
    assert bridged.form["DialCallStatus"] == "completed"
    call = fake_twilio.call(operator)
    assert call is not None
    (recording,) = call.recordings
    assert bridged.form["RecordingSid"] == recording.sid and recording.sid.startswith("RE")
    (told,) = centre.to("/voice/recording")
    assert told.signed and told.form["RecordingSid"] == recording.sid
    assert (told.form["RecordingStatus"], told.form["CallSid"]) == ("completed", operator)


async def test_a_whisper_that_hangs_up_drops_its_leg_and_the_others_ring_on(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a leg whose whisper TwiML hangs up (a carer pressing 2 on a screening
    prompt) ends completed without being bridged while the other numbers keep ringing,
    and that the next to answer and pass its whisper is bridged."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    centre.twiml["/voice/answer"] = _bridge(UNIT, MOBILE, whisper="/voice/screen")
    centre.twiml["/voice/screen"] = (
        '<Response><Gather numDigits="1" action="/voice/screened"><Say>Press 1</Say>'
        "</Gather><Hangup/></Response>"
    )
    centre.twiml["/voice/screened"] = "<Response><Hangup/></Response>"
    operator = await _ring_operator(twilio_client, centre)
    await fake_twilio.next_call()
    unit, mobile = await fake_twilio.next_call(), await fake_twilio.next_call()
    await fake_twilio.answer(unit.sid)
    await fake_twilio.press(unit.sid, "2")
    await fake_twilio.wait_for_status(unit.sid, "completed")
    assert unit.bridged_with is None and mobile.status == "ringing"

    centre.twiml["/voice/screened"] = "<Response/>"
    await fake_twilio.answer(mobile.sid)
    await fake_twilio.press(mobile.sid, "1")
    await fake_twilio.wait_for_speech(mobile.sid, "Press 1")
    assert (await fake_twilio.wait_for_bridge(operator)).bridged_with == mobile.sid
    await fake_twilio.hang_up(operator)
    await fake_twilio.wait_for_status(operator, "completed")
    assert mobile.status == "completed"
    (dialled,) = centre.to("/voice/dialled")
    assert (dialled.form["DialCallStatus"], dialled.form["DialCallSid"]) == (
        "completed",
        mobile.sid,
    )


async def test_a_dial_nobody_answers_tells_no_answer(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a Dial whose numbers give no answer and fail tells its action
    DialCallStatus=no-answer, and that the call goes on with the action's TwiML."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    fake_twilio.plan_phone(UNIT, "no_answer")
    fake_twilio.plan_phone(MOBILE, "fail")
    centre.twiml["/voice/answer"] = _bridge(UNIT, MOBILE)
    centre.twiml["/voice/dialled"] = "<Response><Say>Nobody answered.</Say></Response>"
    operator = await _ring_operator(twilio_client, centre)
    call = await fake_twilio.wait_for_status(operator, "completed")
    (dialled,) = centre.to("/voice/dialled")
    assert dialled.form["DialCallStatus"] == "no-answer"
    assert call.spoken == [Spoken("Nobody answered.")]
    assert sorted(leg.status for leg in fake_twilio.voice_calls() if leg.parent_sid) == [
        "failed",
        "no-answer",
    ]


async def test_a_household_calling_in_is_asked_about_at_once_and_rings_the_operators(
    fake_twilio: FakeTwilio, centre: Centre
) -> None:
    """Test that ring_centre posts the inbound call's fields (Direction=inbound, From the
    caller, To our number) to voice_url at once, signed, that its Dial rings the
    operators, that the first to answer is bridged with the caller, and that a Reject
    ends a call unanswered (busy)."""
    with pytest.raises(RuntimeError, match="voice_url"):
        await fake_twilio.ring_centre(UNIT)
    fake_twilio.voice_url = centre.url("/voice/inbound")
    fake_twilio.voice_status_url = centre.url("/voice/status/inbound")
    centre.twiml["/voice/inbound"] = _bridge(OPERATOR, MOBILE)
    sid = await fake_twilio.ring_centre(UNIT)
    first, second = await fake_twilio.next_call(), await fake_twilio.next_call()
    await fake_twilio.answer(second.sid)
    await fake_twilio.wait_for_status(first.sid, "canceled")
    call = fake_twilio.call(sid)
    assert call is not None and call.bridged_with == second.sid
    (asked,) = centre.to("/voice/inbound")
    assert asked.signed
    assert (asked.form["Direction"], asked.form["From"], asked.form["To"]) == (
        "inbound",
        UNIT,
        fake_twilio.number,
    )
    assert asked.form["CallStatus"] == "ringing"
    await fake_twilio.hang_up(sid)
    await fake_twilio.wait_for_status(second.sid, "completed")
    assert (await fake_twilio.wait_for_status(sid, "completed")).answered_at is not None
    statuses = [p.form["CallStatus"] for p in centre.to("/voice/status/inbound")]
    assert statuses == ["completed"]

    centre.twiml["/voice/inbound"] = '<Response><Reject reason="busy"/></Response>'
    refused = await fake_twilio.ring_centre(LANDLINE)
    call = await fake_twilio.wait_for_status(refused, "busy")
    assert call.answered_at is None


async def test_record_keeps_a_recording_and_tells_the_action(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that <Record> listens until a finish key, keeps a recording on the call and
    posts RecordingSid, RecordingUrl and the key to its action, signed."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    centre.twiml["/voice/answer"] = (
        '<Response><Say>Leave a message</Say><Record action="/voice/recorded" '
        'finishOnKey="#" timeout="10"/></Response>'
    )
    sid = await _ring_operator(twilio_client, centre)
    await fake_twilio.press(sid, "#")
    call = await fake_twilio.wait_for_status(sid, "completed")
    (recording,) = call.recordings
    (recorded,) = centre.to("/voice/recorded")
    assert recorded.signed
    assert (recorded.form["RecordingSid"], recorded.form["Digits"]) == (recording.sid, "#")
    assert recorded.form["RecordingUrl"] == recording.url


async def test_a_call_placed_with_record_keeps_a_recording_of_the_whole_call(
    fake_twilio: FakeTwilio, twilio_client: Client, centre: Centre
) -> None:
    """Test that a call created with record=True keeps one recording once it is hung up
    and posts it to its RecordingStatusCallback, signed."""
    fake_twilio.plan_phone(OPERATOR, "answer")
    centre.twiml["/voice/answer"] = "<Response><Say>Recorded line</Say></Response>"
    created = await twilio_client.calls.create_async(
        to=OPERATOR,
        from_=DESK,
        url=centre.url("/voice/answer"),
        record=True,
        recording_status_callback=centre.url("/voice/recording"),
    )
    assert created.sid is not None
    call = await fake_twilio.wait_for_status(created.sid, "completed")
    (recording,) = call.recordings
    (told,) = centre.to("/voice/recording")
    assert told.signed and told.form["RecordingSid"] == recording.sid
    assert told.form["RecordingSource"] == "OutboundAPI"


async def test_stopping_the_fake_ends_every_call_it_runs() -> None:
    """Test that a fake stopped while one call's Dial rings two legs, another call is
    bridged and a third rings leaves no task of its own running."""
    async with FakeTwilio() as fake:
        client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
        client.api.base_url = fake.base_url
        fake.plan_phone(OPERATOR, "answer")
        fake.plan_phone(MOBILE, "answer")
        try:
            dialling = await client.calls.create_async(
                to=OPERATOR, from_=DESK, twiml=_bridge(UNIT, LANDLINE)
            )
            bridged = await client.calls.create_async(
                to=MOBILE, from_=DESK, twiml=_bridge(OPERATOR)
            )
            ringing = await client.calls.create_async(to=UNIT, from_=DESK, twiml="<Response/>")
        finally:
            await client.http_client.close()
        assert dialling.sid and bridged.sid and ringing.sid
        for leg in (*fake.calls_to(UNIT), *fake.calls_to(LANDLINE)):
            await fake.wait_for_status(leg.sid, "ringing")
        await fake.wait_for_status(ringing.sid, "ringing")
        await fake.wait_for_status(fake.calls_to(OPERATOR)[-1].sid, "in-progress")
    assert asyncio.all_tasks() == {asyncio.current_task()}
