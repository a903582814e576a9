"""The fake Twilio's TwiML interpreter: rings a call's phone as planned, asks the call's
webhook for TwiML once it is answered (an inbound call's at once) and runs it: Say is
kept on the call, Pause waits, Gather listens for keys, Record keeps a recording, Dial
rings its numbers as legs at once and bridges the first to answer, Redirect, Hangup and
Reject move on or end. Waits end early when the call is hung up or redirected."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from datetime import timedelta
from typing import Any

import aiohttp

from callcenter.fake_twilio.calls import (
    BUSY,
    CANCELED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INITIATED,
    NO_ANSWER,
    OUTBOUND_DIAL,
    RINGING,
    FakeCall,
    FakeRecording,
    PhonePlan,
    Spoken,
)
from callcenter.fake_twilio.message import rfc2822
from callcenter.fake_twilio.switchboard import (
    EndedError,
    Interrupt,
    InterruptedCallError,
    Source,
    Switchboard,
    WebhookError,
)
from callcenter.fake_twilio.twiml import (
    Dial,
    Gather,
    Hangup,
    Number,
    Pause,
    Record,
    Redirect,
    Reject,
    Say,
    TwimlError,
    Verb,
    parse,
)


class Interpreter(Switchboard):
    """Runs each call: its ring, then its TwiML."""

    async def _place(self, call: FakeCall) -> None:
        """A call placed through the API: ring, and once answered run its TwiML."""
        outcome = await self._ring(call)
        if outcome != IN_PROGRESS:
            await self._set(call, outcome)
            return
        await self._set(call, IN_PROGRESS)
        source = Source(twiml=call.twiml) if call.twiml else Source(call.url, call.method)
        ended = await self._run(call, source) or COMPLETED
        if call.record and call.answered_at is not None:  # Record=true: the whole call
            seconds = round((self._clock.now() - call.answered_at).total_seconds())
            callback = call.form.get("RecordingStatusCallback", "")
            await self._keep_recording(call, seconds, callback, "OutboundAPI")
        await self._set(call, ended)

    async def _take_inbound(self, call: FakeCall) -> None:
        """A call to our number: ask for its TwiML while it rings, and run it."""
        await self._set(call, RINGING)
        await self._set(call, await self._run(call, Source(call.url)) or COMPLETED)

    async def _ring(self, call: FakeCall) -> str:
        """Ring the phone: IN_PROGRESS once it answers, else how the call ends."""
        line = self._lines[call.sid]
        for status in (INITIATED, RINGING):
            if line.decision.done() and line.decision.result() == CANCELED:
                return CANCELED
            await self._set(call, status)
        plan = self._plans.get(call.to, PhonePlan())
        at_once = {"busy": BUSY, "fail": FAILED, "no_answer": NO_ANSWER}
        if plan.kind in at_once and not line.decision.done():
            return at_once[plan.kind]
        answers_by_itself = plan.kind == "answer" and plan.after <= call.timeout
        wait = plan.after if answers_by_itself else call.timeout
        await self._wait({line.decision}, wait, line.decision.done)
        if not line.decision.done():  # rung out, or picked up by itself as planned
            line.decide(IN_PROGRESS if answers_by_itself else NO_ANSWER)
        return line.decision.result()

    async def _run(self, call: FakeCall, source: Source) -> str | None:
        """Run TwiML from ``source`` on the call until it runs out (None), ends the call
        (the status it ends with), or the call is hung up (its status)."""
        line = self._lines[call.sid]
        following: Source | None = source
        try:
            while following is not None:
                try:
                    following = await self._document(call, following)
                except InterruptedCallError as stop:
                    if stop.interrupt.redirect is None:
                        return stop.interrupt.status
                    following = stop.interrupt.redirect
                    line.interrupt = asyncio.get_running_loop().create_future()
        except EndedError as ended:
            return ended.status
        except (WebhookError, TwimlError) as wrong:
            # Twilio says "an application error has occurred" and hangs up.
            call.note = str(wrong)
            return COMPLETED
        return None

    async def _document(self, call: FakeCall, source: Source) -> Source | None:
        """Run one TwiML document; where the next one comes from, if anywhere."""
        text = source.twiml or await self._ask_twiml(call, source)
        for verb in parse(text, source.url):
            if call.status == RINGING and not isinstance(verb, Reject):
                await self._set(call, IN_PROGRESS)  # an inbound call is answered
            following = await self._perform(call, verb)
            if following is not None:
                return following
        return None

    async def _ask_twiml(self, call: FakeCall, source: Source) -> str:
        if not source.url:
            raise WebhookError("the TwiML sends the call to no URL (inline TwiML has no action)")
        params = {**call.fields(), **dict(source.params)}
        try:
            answered = await self._within(call, self._webhook(source.url, params, source.method))
        except (aiohttp.ClientError, TimeoutError) as wrong:
            raise WebhookError(f"not delivered to {source.url}: {wrong!r}") from wrong
        assert answered is not None
        status, text = answered
        if status != 200:
            raise WebhookError(f"{source.url} answered HTTP {status}: {text[:200]}")
        return text

    async def _perform(self, call: FakeCall, verb: Verb) -> Source | None:
        if isinstance(verb, Say):
            await self._say(call, verb)
        elif isinstance(verb, Pause):
            silence = asyncio.get_running_loop().create_future()  # nothing ends it early
            await self._within(call, silence, verb.length * self.pause_scale)
        elif isinstance(verb, Gather):
            return await self._gather(call, verb)
        elif isinstance(verb, Redirect):
            return Source(verb.url, verb.method)
        elif isinstance(verb, Hangup):
            raise EndedError(COMPLETED)
        elif isinstance(verb, Reject):
            answered = call.status != RINGING
            raise EndedError(
                COMPLETED if answered else BUSY if verb.reason == "busy" else NO_ANSWER
            )
        elif isinstance(verb, Record):
            return await self._record(call, verb)
        elif isinstance(verb, Dial):
            return await self._dial(call, verb)
        return None

    async def _say(self, call: FakeCall, say: Say) -> None:
        call.spoken.extend(Spoken(say.text, say.language, say.voice) for _ in range(say.loop))
        await self._touch()

    async def _gather(self, call: FakeCall, gather: Gather) -> Source | None:
        line = self._lines[call.sid]
        await self._listen(line, True)
        digits, finished_on = "", ""
        try:
            for prompt in gather.prompts:
                if line.keys:
                    break  # a key pressed during the prompt stops it
                if isinstance(prompt, Say):
                    await self._say(call, prompt)
                else:
                    await self._within(
                        call,
                        line.key_arrived.wait(),
                        prompt.length * self.pause_scale,
                        woken=line.key_arrived.is_set,
                    )
            while gather.num_digits is None or len(digits) < gather.num_digits:
                key = await self._next_key(call, gather.timeout * self.pause_scale)
                if key is None:
                    break
                if key in gather.finish_on_key:
                    finished_on = key
                    break
                digits += key
        finally:
            await self._listen(line, False)
        if not digits and not gather.action_on_empty_result:
            return None  # Twilio goes on with the next verb
        params = {"Digits": digits, **({"FinishedOnKey": finished_on} if finished_on else {})}
        return Source(gather.action, gather.method, params=tuple(params.items()))

    async def _record(self, call: FakeCall, record: Record) -> Source | None:
        """The caller speaks until a finish key, ``timeout`` s of silence (the fake hears
        nothing else), or ``maxLength``; the recording is kept and the action told."""
        line = self._lines[call.sid]
        await self._listen(line, True)
        started = self._clock.now()
        longest = started + timedelta(seconds=record.max_length * self.pause_scale)
        silence = record.timeout * self.pause_scale
        ended_by = "hangup"  # also when maxLength is reached
        try:
            while (left := (longest - self._clock.now()).total_seconds()) > 0:
                key = await self._next_key(call, min(silence, left))
                if key is None and self._clock.now() >= longest:
                    break
                if key is None or key in record.finish_on_key:
                    ended_by = key or ""
                    break
        except InterruptedCallError:
            await self._recorded(call, record, started, "hangup")
            raise
        finally:
            await self._listen(line, False)
        return await self._recorded(call, record, started, ended_by)

    async def _recorded(
        self, call: FakeCall, record: Record, started: Any, ended_by: str
    ) -> Source | None:
        seconds = round((self._clock.now() - started).total_seconds())
        recording = await self._keep_recording(
            call, seconds, record.recording_status_callback, "RecordVerb"
        )
        if not record.action:
            return None
        params = {**recording_fields(recording), "Digits": ended_by}
        if ended_by == "hangup":  # Twilio tells the action; nobody hears its answer
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._webhook(record.action, {**call.fields(), **params}, record.method)
            return None
        return Source(record.action, record.method, params=tuple(params.items()))

    async def _keep_recording(
        self, call: FakeCall, seconds: int, status_callback: str, source: str
    ) -> FakeRecording:
        recording = FakeRecording("RE" + secrets.token_hex(16), call.sid, seconds, self.account_sid)
        call.recordings.append(recording)
        if status_callback:
            params = {
                "AccountSid": self.account_sid,
                "CallSid": call.sid,
                "RecordingChannels": "1",
                "RecordingSource": source,
                "RecordingStartTime": rfc2822(self._clock.now()) or "",
                "RecordingStatus": "completed",
                **recording_fields(recording),
            }
            await self._post_quietly(call, status_callback, params)
        return recording

    async def _dial(self, call: FakeCall, dial: Dial) -> Source | None:
        """Ring every number at once as legs of this call; bridge the first to answer
        (once its whisper, if any, let it through), cancel the rest; then tell the
        action how it went."""
        legs = [
            self._new_call(
                to=number.number,
                from_=dial.caller_id or call.from_,
                direction=OUTBOUND_DIAL,
                status_callback=number.status_callback,
                events=number.status_callback_events,
                timeout=dial.timeout,
                parent_sid=call.sid,
            )
            for number in dial.numbers
        ]
        ringing = {
            self._task(self._ring_leg(leg, number), leg): leg
            for leg, number in zip(legs, dial.numbers, strict=True)
        }
        pending = set(ringing)
        bridged: FakeCall | None = None
        stopped: InterruptedCallError | None = None
        try:
            while pending and bridged is None:
                waited = await self._within(
                    call,
                    asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED),
                    woken=functools.partial(_any_done, pending),
                )
                assert waited is not None
                done, pending = waited
                bridged = next((ringing[task] for task in done if task.result()), None)
        except InterruptedCallError as stop:
            stopped = stop
        if bridged is not None and stopped is None:
            call.bridged_with, bridged.bridged_with = bridged.sid, call.sid
            await self._touch()
        for task in pending:  # still ringing, or still whispering: dropped
            line = self._lines.get(ringing[task].sid)
            if line is not None:
                line.decide(CANCELED)
                line.interrupt_with(Interrupt(COMPLETED))
        await asyncio.gather(*pending, return_exceptions=True)
        if bridged is not None and stopped is None:
            bridge = self._lines.get(bridged.sid)
            try:
                if bridge is not None:
                    await self._within(
                        call, asyncio.shield(bridge.interrupt), woken=bridge.interrupt.done
                    )
            except InterruptedCallError as stop:
                stopped = stop
        if bridged is not None and not bridged.ended:
            await self._set(bridged, COMPLETED)
        params = self._dial_outcome(legs, bridged, hung_up=stopped is not None)
        if bridged is not None and dial.record:
            recording = await self._keep_recording(
                call, bridged.duration or 0, dial.recording_status_callback, "DialVerb"
            )
            params.update(recording_fields(recording))
        if stopped is not None:
            if dial.action and stopped.interrupt.redirect is None:
                # Twilio tells the action even when the caller hung up; nobody hears it.
                await self._post_quietly(call, dial.action, {**call.fields(), **params})
            raise stopped
        if not dial.action:
            return None
        return Source(dial.action, dial.method, params=tuple(params.items()))

    async def _ring_leg(self, leg: FakeCall, number: Number) -> bool:
        """Ring one leg of a Dial: True once it answered and its whisper let it through;
        otherwise the leg has ended."""
        outcome = await self._ring(leg)
        if outcome != IN_PROGRESS:
            await self._set(leg, outcome)
            return False
        await self._set(leg, IN_PROGRESS)
        if number.url:
            ended = await self._run(leg, Source(number.url, number.method))
            if ended is not None:
                await self._set(leg, ended)
                return False
        line = self._lines.get(leg.sid)
        return line is not None and not line.interrupt.done()

    def _dial_outcome(
        self, legs: list[FakeCall], bridged: FakeCall | None, *, hung_up: bool
    ) -> dict[str, str]:
        """DialCallStatus, DialCallSid and DialCallDuration, as the action hears them."""
        if bridged is not None:
            status, leg = COMPLETED, bridged
        elif hung_up:
            status, leg = CANCELED, legs[0]
        else:
            ends = [(leg.status, leg) for leg in legs]
            status, leg = next(
                (
                    (s, leg)
                    for wanted in (NO_ANSWER, BUSY, FAILED)
                    for s, leg in ends
                    if s == wanted
                ),
                (NO_ANSWER, legs[0]),  # a whisper hung up on every leg
            )
        return {
            "DialCallStatus": status,
            "DialCallSid": leg.sid,
            "DialCallDuration": str(leg.duration or 0) if bridged is not None else "0",
        }


def _any_done(tasks: set[asyncio.Task[bool]]) -> bool:
    return any(task.done() for task in tasks)


def recording_fields(recording: FakeRecording) -> dict[str, str]:
    return {
        "RecordingDuration": str(recording.duration),
        "RecordingSid": recording.sid,
        "RecordingUrl": recording.url,
    }
