"""The fake Twilio's voice side: the Calls resource, a phone network where every number
dialled is a phone, and a TwiML interpreter that runs each call.

A call placed through the API rings its phone; the phone does what ``plan_phone`` planned
for its number (by default it rings until a test, or a person on the fake's page,
answers it). Once answered, the fake asks the call's ``Url`` for TwiML with a signed POST
of the call's fields, as Twilio does, and runs it: what a ``<Say>`` says is kept on the
call, ``<Gather>`` waits for keys pressed through ``press``, ``<Dial>`` rings its numbers
as child legs and bridges the first to answer. Every status change is posted, signed, to
the call's StatusCallback for the events asked (the final one always), with Twilio's
fields and a SequenceNumber per call. A phone calling our number (``ring_centre``) has its
TwiML asked from ``voice_url`` at once.

Each call runs as one task of its own, which alone changes its status; the hooks tests
drive (answer, press, hang up, reject) and the API's update only tell that task what
happened. ``statuses`` takes a status once its status callback has been answered, so a
test that waited for a status sees the call centre's handling of it done.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callcenter.clock import Clock
from callcenter.fake_twilio import rest
from callcenter.fake_twilio.calls import (
    BUSY,
    CANCELED,
    COMPLETED,
    EVENTS,
    FAILED,
    FINAL,
    IN_PROGRESS,
    INBOUND,
    INITIATED,
    NO_ANSWER,
    OUTBOUND_API,
    OUTBOUND_DIAL,
    QUEUED,
    RINGING,
    FakeCall,
    FakeRecording,
    PhonePlan,
    Spoken,
    event_of,
)
from callcenter.fake_twilio.message import rfc2822
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

log = logging.getLogger(__name__)
T = TypeVar("T")

E164 = re.compile(r"\+[1-9]\d{7,14}")
_KEYS = frozenset("0123456789*#")
# How long Twilio waits for a voice webhook before it gives up on it.
_WEBHOOK_TIMEOUT_S = 15.0
# How long a hook waits for the call to reach the state it acts on (ringing, listening).
HOOK_WAIT_S = 5.0
_MAX_TIMEOUT_S = 600


@dataclass(frozen=True)
class _Source:
    """Where a call's next TwiML comes from: a URL to ask, with fields beyond the call's
    own (the digits a Gather heard), or TwiML given with the call."""

    url: str = ""
    method: str = "POST"
    twiml: str = ""
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Interrupt:
    """A live call hung up (ending with ``status``) or redirected to ``redirect``."""

    status: str = COMPLETED
    redirect: _Source | None = None


class _InterruptedError(Exception):
    def __init__(self, interrupt: _Interrupt) -> None:
        super().__init__(interrupt.status)
        self.interrupt = interrupt


class _EndedError(Exception):
    """The TwiML itself ended the call (<Hangup>, <Reject>) with this status."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class _WebhookError(Exception):
    """A webhook that could not be reached or did not answer 200."""


class _Line:
    """What a live call's task waits on: the phone's decision while it rings (answered,
    busy, canceled), a hang-up or redirect once it is up, and the keys pressed."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.decision: asyncio.Future[str] = loop.create_future()
        self.interrupt: asyncio.Future[_Interrupt] = loop.create_future()
        self.keys: collections.deque[str] = collections.deque()
        self.key_arrived = asyncio.Event()
        self.listening = False

    def decide(self, status: str) -> None:
        if not self.decision.done():
            self.decision.set_result(status)

    def interrupt_with(self, interrupt: _Interrupt) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(interrupt)


class PhoneNetwork:
    """The voice side of ``FakeTwilio``: its calls, its phones and the hooks that act as
    them. ``FakeTwilio`` is one; its server routes the Calls resource here."""

    def __init__(
        self, *, account_sid: str, auth_token: str, clock: Clock, number: str, pause_scale: float
    ) -> None:
        if not pause_scale >= 0:
            raise ValueError(f"pause_scale is a factor of 0 or more, not {pause_scale}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.number = number
        # How long the waits TwiML asks for last: <Pause> length, <Gather> and <Record>
        # timeouts are multiplied by it (rings are not: their Timeout is the caller's).
        self.pause_scale = pause_scale
        # The centre number's voice webhook ("A call comes in"), and where the statuses
        # of calls to that number go ("Call status changes"); empty: not set.
        self.voice_url = ""
        self.voice_status_url = ""
        self._clock = clock
        self._calls: dict[str, FakeCall] = {}
        self._lines: dict[str, _Line] = {}
        self._plans: dict[str, PhonePlan] = {}
        self._placed: list[FakeCall] = []
        self._calls_handed_out = 0
        self._call_order = itertools.count(1)
        self._changed = asyncio.Condition()
        self._flows: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # -- what tests plan and inspect ----------------------------------------------------

    def plan_phone(self, number: str, behaviour: str = "ring") -> None:
        """How the phone at ``number`` behaves from its next ring on: "ring" (the default:
        until answered through a hook or the page; "no-answer" after the call's Timeout),
        "answer" (at once), "answer_after:<seconds>", "busy", "fail", "no_answer" (at once)."""
        if not E164.fullmatch(number):
            raise ValueError(f"a phone's number is E.164 (+8613...), not {number!r}")
        self._plans[number] = PhonePlan.parse(behaviour)

    def call(self, sid: str) -> FakeCall | None:
        """The call with this sid (placed, a Dial's leg or inbound), if any."""
        return self._calls.get(sid)

    def calls_to(self, number: str) -> list[FakeCall]:
        """The calls that rang ``number``, in the order they were placed."""
        return [call for call in self._calls.values() if call.to == number]

    def voice_calls(self) -> list[FakeCall]:
        """Every call, in the order it was placed (or came in)."""
        return list(self._calls.values())

    # A timeout argument, not asyncio.timeout at the call site: tests read better this way.
    async def next_call(self, timeout: float = 5.0) -> FakeCall:  # noqa: ASYNC109
        """Each call the call centre placed (through the API or a Dial's leg) once, in
        order; waits up to ``timeout`` s for one. TimeoutError when none comes."""
        await self._until(lambda: self._calls_handed_out < len(self._placed), timeout)
        call = self._placed[self._calls_handed_out]
        self._calls_handed_out += 1
        return call

    async def wait_for_status(
        self,
        sid: str,
        status: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeCall:
        """The call once it has gone through ``status`` (and its status callback was
        answered). LookupError for an unknown call, or one that ended without it;
        TimeoutError after ``timeout`` s."""
        call = self._known(sid)
        await self._until(lambda: status in call.statuses or _settled(call), timeout)
        if status not in call.statuses:
            raise LookupError(f"call {sid} ended {call.status} without being {status}")
        return call

    async def wait_for_speech(
        self,
        sid: str,
        fragment: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeCall:
        """The call once a <Say> containing ``fragment`` has been heard on it.
        LookupError for an unknown call, or one that ended without it."""
        call = self._known(sid)

        def heard() -> bool:
            return any(fragment in said.text for said in call.spoken)

        await self._until(lambda: heard() or _settled(call), timeout)
        if not heard():
            raise LookupError(f"call {sid} ended {call.status} without saying {fragment!r}")
        return call

    # -- the phones' hooks ----------------------------------------------------------------

    async def answer(self, sid: str) -> None:
        """The phone rung by call ``sid`` is picked up (waits for it to ring)."""
        line = await self._when_ringing(sid)
        line.decide(IN_PROGRESS)

    async def reject(self, sid: str) -> None:
        """The phone rung by call ``sid`` declines it: the call ends busy."""
        line = await self._when_ringing(sid)
        line.decide(BUSY)

    async def hang_up(self, sid: str) -> None:
        """The phone on call ``sid`` hangs up: a call that is up completes, one still
        ringing ends busy (declined). ValueError when the call has already ended."""
        call = self._known(sid)
        await self._until(lambda: call.status in (RINGING, IN_PROGRESS) or call.ended, HOOK_WAIT_S)
        line = self._lines.get(sid)
        if call.ended or line is None:
            raise ValueError(f"call {sid} has already ended ({call.status})")
        if call.status == RINGING and call.direction != INBOUND:
            line.decide(BUSY)
        else:
            line.interrupt_with(_Interrupt(COMPLETED))

    async def press(self, sid: str, digits: str) -> None:
        """The phone on call ``sid`` presses ``digits`` (0-9, * and #), once the call
        listens for keys (a <Gather> or <Record>), as a person waits for the prompt.
        ValueError for other keys or a call that ended; TimeoutError if it never listens."""
        if not digits or not set(digits) <= _KEYS:
            raise ValueError(f"a phone presses 0-9, * and #, not {digits!r}")
        call = self._known(sid)
        line = self._lines.get(sid)
        await self._until(lambda: call.ended or (line is not None and line.listening), HOOK_WAIT_S)
        if call.ended or line is None:
            raise ValueError(f"call {sid} has ended ({call.status}): nobody hears the keys")
        call.digits.append(digits)
        line.keys.extend(digits)
        line.key_arrived.set()

    async def ring_centre(self, from_number: str, *, to: str | None = None) -> str:
        """A phone calls the centre's number: the call's TwiML is asked from
        ``voice_url`` at once. The new call's sid."""
        if not self.voice_url:
            raise RuntimeError(
                "the fake Twilio has no voice URL to ask about a call: set fake.voice_url "
                "to the call centre's voice webhook"
            )
        if not E164.fullmatch(from_number):
            raise ValueError(f"a call comes from an E.164 number (+8613...), not {from_number!r}")
        call = self._new_call(
            to=to or self.number,
            from_=from_number,
            direction=INBOUND,
            url=self.voice_url,
            status_callback=self.voice_status_url,
        )
        self._start(call, self._take_inbound(call))
        return call.sid

    # -- the Calls resource -------------------------------------------------------------

    def place(self, form: MultiDictProxy[Any]) -> FakeCall:
        """A call from a create request's form, ringing already; RefusedError as Twilio
        refuses a bad one."""
        fields = {key: str(value) for key, value in form.items()}
        to, from_ = fields.get("To", ""), fields.get("From", "")
        if not to:
            raise rest.RefusedError(400, 21201)
        if not E164.fullmatch(to):
            raise rest.RefusedError(
                400, 21211, f"The 'To' number {to} is not a valid phone number."
            )
        if not from_:
            raise rest.RefusedError(400, 21213)
        if not E164.fullmatch(from_):
            raise rest.RefusedError(
                400, 21212, f"The 'From' number {from_} is not a valid phone number."
            )
        url, twiml = fields.get("Url", ""), fields.get("Twiml", "")
        if not twiml and not _is_web_url(url):
            raise rest.RefusedError(
                400, 21205, f"Url is not a valid URL: {url!r} (or give Twiml)" if url else None
            )
        status_callback = fields.get("StatusCallback", "")
        if status_callback and not _is_web_url(status_callback):
            raise rest.RefusedError(
                400, 21609, f"StatusCallback is not a valid URL: {status_callback!r}"
            )
        events = frozenset(str(e) for e in form.getall("StatusCallbackEvent", []))
        if not events <= set(EVENTS):
            raise rest.RefusedError(400, 20001, f"StatusCallbackEvent must be among {EVENTS}")
        methods = (fields.get("Method", "POST"), fields.get("StatusCallbackMethod", "POST"))
        if any(method not in ("GET", "POST") for method in methods):
            raise rest.RefusedError(400, 20001, "Method and StatusCallbackMethod are GET or POST")
        try:
            timeout = int(fields.get("Timeout", "60"))
        except ValueError:
            timeout = 0
        if not 0 < timeout <= _MAX_TIMEOUT_S:
            raise rest.RefusedError(400, 20001, f"Timeout is 1 to {_MAX_TIMEOUT_S} seconds")
        call = self._new_call(
            to=to,
            from_=from_,
            direction=OUTBOUND_API,
            url=url,
            twiml=twiml,
            status_callback=status_callback,
            events=events,
            timeout=timeout,
        )
        call.method, call.status_callback_method = methods
        call.record = fields.get("Record", "false").lower() == "true"
        call.form = fields
        self._start(call, self._place(call))
        return call

    def newest_first(self) -> list[FakeCall]:
        return sorted(self._calls.values(), key=lambda call: call.order, reverse=True)

    async def update(self, sid: str, form: MultiDictProxy[Any]) -> FakeCall:
        """An update request: Status=completed|canceled ends the call, Url or Twiml
        redirects it while it is up. Answered once the call's status says so."""
        call = self._known_or_refused(sid)
        fields = {key: str(value) for key, value in form.items()}
        status = fields.get("Status")
        line = self._lines.get(sid)
        if status is not None:
            if status not in (COMPLETED, CANCELED):
                raise rest.RefusedError(400, 20001, "Status is completed or canceled")
            if line is None or call.ended or (call.status == IN_PROGRESS and status == CANCELED):
                return call  # Twilio cancels only a call that is not up yet
            if call.status == IN_PROGRESS:
                line.interrupt_with(_Interrupt(COMPLETED))
            else:
                line.decide(CANCELED)
            with contextlib.suppress(TimeoutError):
                await self._until(lambda: call.ended, HOOK_WAIT_S)
            return call
        url, twiml = fields.get("Url", ""), fields.get("Twiml", "")
        if not url and not twiml:
            return call
        if url and not _is_web_url(url):
            raise rest.RefusedError(400, 21205, f"Url is not a valid URL: {url!r}")
        if call.status != IN_PROGRESS or line is None:
            raise rest.RefusedError(400, 21220)
        source = _Source(url=url, method=fields.get("Method", "POST"), twiml=twiml)
        line.interrupt_with(_Interrupt(redirect=source))
        return call

    def known(self, sid: str) -> FakeCall:
        """The call with this sid; RefusedError 20404 when there is none."""
        return self._known_or_refused(sid)

    # -- running calls ------------------------------------------------------------------

    def _new_call(
        self,
        *,
        to: str,
        from_: str,
        direction: str,
        url: str = "",
        twiml: str = "",
        status_callback: str = "",
        events: Iterable[str] = (),
        timeout: int = 60,
        parent_sid: str | None = None,
    ) -> FakeCall:
        call = FakeCall(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            direction=direction,
            date_created=self._clock.now(),
            parent_sid=parent_sid,
            url=url,
            twiml=twiml,
            status_callback=status_callback,
            status_callback_events=frozenset(events) | {"completed"},
            timeout=timeout,
            statuses=[QUEUED],
            order=next(self._call_order),
        )
        self._calls[call.sid] = call
        self._lines[call.sid] = _Line()
        if direction != INBOUND:
            self._placed.append(call)
        return call

    def _start(self, call: FakeCall, flow: Awaitable[None]) -> None:
        task = asyncio.create_task(self._guarded(call, flow), name=f"fake_twilio.{call.sid}")
        self._flows.add(task)
        task.add_done_callback(self._flows.discard)

    async def _guarded(self, call: FakeCall, flow: Awaitable[None]) -> None:
        try:
            await flow
        except Exception as wrong:  # a fault of the fake's own: say so, end the call
            log.exception("the fake Twilio's call %s failed", call.sid)
            call.note = f"the fake Twilio failed: {wrong!r}"
            if not call.ended:
                await self._set(call, FAILED)
        finally:
            self._lines.pop(call.sid, None)
            await self._touch()

    async def _place(self, call: FakeCall) -> None:
        """A call placed through the API: ring, and once answered run its TwiML."""
        outcome = await self._ring(call)
        if outcome != IN_PROGRESS:
            await self._set(call, outcome)
            return
        await self._set(call, IN_PROGRESS)
        source = _Source(twiml=call.twiml) if call.twiml else _Source(call.url, call.method)
        await self._set(call, await self._run(call, source) or COMPLETED)

    async def _take_inbound(self, call: FakeCall) -> None:
        """A call to our number: ask for its TwiML while it rings, and run it."""
        await self._set(call, RINGING)
        await self._set(call, await self._run(call, _Source(call.url)) or COMPLETED)

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
        try:
            return await asyncio.wait_for(asyncio.shield(line.decision), wait)
        except TimeoutError:
            if answers_by_itself:
                line.decide(IN_PROGRESS)
            else:
                line.decide(NO_ANSWER)
            return line.decision.result()

    async def _run(self, call: FakeCall, source: _Source) -> str | None:
        """Run TwiML from ``source`` on the call until it runs out (None), ends the call
        (the status it ends with), or the call is hung up (its status)."""
        line = self._lines[call.sid]
        following: _Source | None = source
        try:
            while following is not None:
                try:
                    following = await self._document(call, following)
                except _InterruptedError as stop:
                    if stop.interrupt.redirect is None:
                        return stop.interrupt.status
                    following = stop.interrupt.redirect
                    line.interrupt = asyncio.get_running_loop().create_future()
        except _EndedError as ended:
            return ended.status
        except (_WebhookError, TwimlError) as wrong:
            # Twilio says "an application error has occurred" and hangs up.
            call.note = str(wrong)
            return COMPLETED
        return None

    async def _document(self, call: FakeCall, source: _Source) -> _Source | None:
        """Run one TwiML document; where the next one comes from, if anywhere."""
        text = source.twiml or await self._ask_twiml(call, source)
        for verb in parse(text, source.url):
            if call.status == RINGING and not isinstance(verb, Reject):
                await self._set(call, IN_PROGRESS)  # an inbound call is answered
            following = await self._perform(call, verb)
            if following is not None:
                return following
        return None

    async def _ask_twiml(self, call: FakeCall, source: _Source) -> str:
        if not source.url:
            raise _WebhookError("the TwiML sends the call to no URL (inline TwiML has no action)")
        params = {**call.fields(), **dict(source.params)}
        try:
            answered = await self._within(call, self._webhook(source.url, params, source.method))
        except (aiohttp.ClientError, TimeoutError) as wrong:
            raise _WebhookError(f"not delivered to {source.url}: {wrong!r}") from wrong
        assert answered is not None
        status, text = answered
        if status != 200:
            raise _WebhookError(f"{source.url} answered HTTP {status}: {text[:200]}")
        return text

    async def _perform(self, call: FakeCall, verb: Verb) -> _Source | None:
        if isinstance(verb, Say):
            await self._say(call, verb)
        elif isinstance(verb, Pause):
            await self._within(call, asyncio.sleep(verb.length * self.pause_scale))
        elif isinstance(verb, Gather):
            return await self._gather(call, verb)
        elif isinstance(verb, Redirect):
            return _Source(verb.url, verb.method)
        elif isinstance(verb, Hangup):
            raise _EndedError(COMPLETED)
        elif isinstance(verb, Reject):
            answered = call.status != RINGING
            raise _EndedError(
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

    async def _gather(self, call: FakeCall, gather: Gather) -> _Source | None:
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
                        call, line.key_arrived.wait(), prompt.length * self.pause_scale
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
        return _Source(gather.action, gather.method, params=tuple(params.items()))

    async def _record(self, call: FakeCall, record: Record) -> _Source | None:
        """The caller speaks until a finish key, ``timeout`` s of silence (the fake hears
        nothing else), or ``maxLength``; the recording is kept and the action told."""
        line = self._lines[call.sid]
        await self._listen(line, True)
        started = self._clock.now()
        ended_by = "hangup"
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(record.max_length * self.pause_scale):
                    while True:
                        key = await self._next_key(call, record.timeout * self.pause_scale)
                        if key is None or key in record.finish_on_key:
                            ended_by = key or ""
                            break
        except _InterruptedError:
            await self._recorded(call, record, started, "hangup")
            raise
        finally:
            await self._listen(line, False)
        return await self._recorded(call, record, started, ended_by)

    async def _recorded(
        self, call: FakeCall, record: Record, started: Any, ended_by: str
    ) -> _Source | None:
        seconds = round((self._clock.now() - started).total_seconds())
        recording = await self._keep_recording(
            call, seconds, record.recording_status_callback, "RecordVerb"
        )
        if not record.action:
            return None
        params = {**_recording_fields(recording), "Digits": ended_by}
        if ended_by == "hangup":  # Twilio tells the action; nobody hears its answer
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self._webhook(record.action, {**call.fields(), **params}, record.method)
            return None
        return _Source(record.action, record.method, params=tuple(params.items()))

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
                **_recording_fields(recording),
            }
            await self._post_quietly(call, status_callback, params)
        return recording

    async def _dial(self, call: FakeCall, dial: Dial) -> _Source | None:
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
            asyncio.create_task(self._ring_leg(leg, number)): leg
            for leg, number in zip(legs, dial.numbers, strict=True)
        }
        pending = set(ringing)
        bridged: FakeCall | None = None
        stopped: _InterruptedError | None = None
        try:
            while pending and bridged is None:
                waited = await self._within(
                    call, asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                )
                assert waited is not None
                done, pending = waited
                bridged = next((ringing[task] for task in done if task.result()), None)
            if bridged is not None:
                call.bridged_with, bridged.bridged_with = bridged.sid, call.sid
                bridge = self._lines.get(bridged.sid)
                if bridge is not None:
                    await self._within(call, asyncio.shield(bridge.interrupt))
        except _InterruptedError as stop:
            stopped = stop
        for task in pending:  # still ringing, or still whispering: dropped
            line = self._lines.get(ringing[task].sid)
            if line is not None:
                line.decide(CANCELED)
                line.interrupt_with(_Interrupt(COMPLETED))
        await asyncio.gather(*pending, return_exceptions=True)
        if bridged is not None and not bridged.ended:
            await self._set(bridged, COMPLETED)
        params = self._dial_outcome(legs, bridged, hung_up=stopped is not None)
        if bridged is not None and dial.record:
            recording = await self._keep_recording(
                call, bridged.duration or 0, dial.recording_status_callback, "DialVerb"
            )
            params.update(_recording_fields(recording))
        if stopped is not None:
            if dial.action and stopped.interrupt.redirect is None:
                # Twilio tells the action even when the caller hung up; nobody hears it.
                await self._post_quietly(call, dial.action, {**call.fields(), **params})
            raise stopped
        if not dial.action:
            return None
        return _Source(dial.action, dial.method, params=tuple(params.items()))

    async def _ring_leg(self, leg: FakeCall, number: Number) -> bool:
        """Ring one leg of a Dial: True once it answered and its whisper let it through;
        otherwise the leg has ended."""
        outcome = await self._ring(leg)
        if outcome != IN_PROGRESS:
            await self._set(leg, outcome)
            return False
        await self._set(leg, IN_PROGRESS)
        if number.url:
            ended = await self._run(leg, _Source(number.url, number.method))
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

    # -- waiting, statuses and webhooks -------------------------------------------------

    async def _within(
        self, call: FakeCall, awaitable: Awaitable[T], seconds: float | None = None
    ) -> T | None:
        """What ``awaitable`` gives, or None after ``seconds``; _InterruptedError if the
        call is hung up or redirected first."""
        line = self._lines[call.sid]
        task = asyncio.ensure_future(awaitable)
        either: set[asyncio.Future[Any]] = {task, line.interrupt}
        try:
            await asyncio.wait(either, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if line.interrupt.done():
            raise _InterruptedError(line.interrupt.result())
        return None

    async def _next_key(self, call: FakeCall, seconds: float) -> str | None:
        line = self._lines[call.sid]
        if not line.keys:
            line.key_arrived.clear()
            await self._within(call, line.key_arrived.wait(), seconds)
        return line.keys.popleft() if line.keys else None

    async def _listen(self, line: _Line, listening: bool) -> None:
        if listening:
            line.keys.clear()
        line.listening = listening
        await self._touch()

    async def _set(self, call: FakeCall, status: str) -> None:
        """Move the call to ``status``, tell its status callback if it asked (the final
        status always), then list the status as gone through."""
        if call.ended:
            return
        now = self._clock.now()
        call.status = status
        if status == INITIATED or (status == RINGING and call.start_time is None):
            call.start_time = now
        if status == IN_PROGRESS:
            call.answered_at = now
        if status in FINAL:
            call.end_time = now
            line = self._lines.get(call.sid)
            if line is not None:
                line.decide(status)
                line.interrupt_with(_Interrupt(status))
        await self._touch()
        if call.status_callback and event_of(status) in call.status_callback_events:
            await self._report(call)
        call.statuses.append(status)
        await self._touch()

    async def _report(self, call: FakeCall) -> None:
        params = {
            **call.fields(),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(call.sequence),
            "Timestamp": rfc2822(self._clock.now()) or "",
        }
        call.sequence += 1
        if call.ended:
            duration = str(call.duration or 0)
            params.update({"CallDuration": duration, "Duration": str(-(-int(duration) // 60))})
        await self._post_quietly(call, call.status_callback, params, call.status_callback_method)

    async def _post_quietly(
        self, call: FakeCall, url: str, params: dict[str, str], method: str = "POST"
    ) -> None:
        """A webhook whose answer nobody needs: a failure is noted on the call."""
        try:
            status, text = await self._webhook(url, params, method)
        except (aiohttp.ClientError, TimeoutError) as wrong:
            call.note = f"not delivered to {url}: {wrong!r}"
            return
        if status >= 300:
            call.note = f"{url} answered HTTP {status}: {text[:200]}"

    async def _webhook(self, url: str, params: dict[str, str], method: str) -> tuple[int, str]:
        """Post (or GET) ``params`` to ``url`` signed as Twilio signs; status and text."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT_S)
            )
        validator = RequestValidator(self.auth_token)
        if method == "GET":
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
            signature = validator.compute_signature(url, {})
            request = self._http.get(url, headers={"X-Twilio-Signature": signature})
        else:
            signature = validator.compute_signature(url, params)
            request = self._http.post(url, data=params, headers={"X-Twilio-Signature": signature})
        async with request as answer:
            return answer.status, await answer.text()

    async def _touch(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _until(self, ready: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(ready)

    async def _when_ringing(self, sid: str) -> _Line:
        call = self._known(sid)
        if call.direction == INBOUND:
            raise ValueError(f"call {sid} is a phone calling us: there is no phone to answer it")
        await self._until(lambda: call.status == RINGING or call.ended, HOOK_WAIT_S)
        line = self._lines.get(sid)
        if call.status != RINGING or line is None:
            raise ValueError(f"call {sid} is not ringing ({call.status})")
        return line

    def _known(self, sid: str) -> FakeCall:
        call = self._calls.get(sid)
        if call is None:
            raise LookupError(f"the fake Twilio has no call {sid}")
        return call

    def _known_or_refused(self, sid: str) -> FakeCall:
        call = self._calls.get(sid)
        if call is None:
            raise rest.RefusedError(404, 20404)
        return call

    async def hang_up_everything(self) -> None:
        """On stopping: every call's task ends here, and what it would still post is lost."""
        flows, self._flows = self._flows, set()
        for task in flows:
            task.cancel()
        await asyncio.gather(*flows, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


def _settled(call: FakeCall) -> bool:
    """Whether the call has ended and its final status has been told."""
    return any(status in FINAL for status in call.statuses)


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _recording_fields(recording: FakeRecording) -> dict[str, str]:
    return {
        "RecordingDuration": str(recording.duration),
        "RecordingSid": recording.sid,
        "RecordingUrl": recording.url,
    }


def matches(call: FakeCall, query: Any) -> bool:
    """Whether ``call`` passes a list request's filters (To, From, ParentCallSid, Status,
    StartTime and EndTime with their < and > forms)."""
    wanted = {"To": call.to, "From": call.from_, "ParentCallSid": call.parent_sid or ""}
    wanted["Status"] = call.status
    if any(key in query and query[key] != value for key, value in wanted.items()):
        return False
    if not rest.within_bounds(call.start_time or call.date_created, "StartTime", query):
        return False
    if call.end_time is None:
        return not any(key.startswith("EndTime") for key in query)
    return rest.within_bounds(call.end_time, "EndTime", query)


def respond(call: FakeCall, status: int = 200) -> web.Response:
    return web.json_response(call.to_json(), status=status)
