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

import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from multidict import MultiDictProxy

from callcenter.clock import Clock
from callcenter.fake_twilio import rest
from callcenter.fake_twilio.calls import (
    BUSY,
    CANCELED,
    COMPLETED,
    E164,
    EVENTS,
    IN_PROGRESS,
    INBOUND,
    OUTBOUND_API,
    RINGING,
    FakeCall,
    PhonePlan,
)
from callcenter.fake_twilio.interpreter import Interpreter
from callcenter.fake_twilio.switchboard import Interrupt, Line, Source, settled

_KEYS = frozenset("0123456789*#")
# How long a hook waits for the call to reach the state it acts on (ringing, listening).
HOOK_WAIT_S = 5.0
_MAX_TIMEOUT_S = 600


class PhoneNetwork(Interpreter):
    """The voice side of ``FakeTwilio``: its calls, its phones and the hooks that act as
    them. ``FakeTwilio`` is one; its server routes the Calls resource here."""

    def __init__(
        self, *, account_sid: str, auth_token: str, clock: Clock, number: str, pause_scale: float
    ) -> None:
        super().__init__(
            account_sid=account_sid, auth_token=auth_token, clock=clock, pause_scale=pause_scale
        )
        self.number = number
        # The centre number's voice webhook ("A call comes in"), and where the statuses
        # of calls to that number go ("Call status changes"); empty: not set.
        self.voice_url = ""
        self.voice_status_url = ""
        self._calls_handed_out = 0
        # Recordings deleted through the REST API (DELETE .../Recordings/{RE}.json).
        self.deleted_recordings: list[str] = []

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

    def delete_recording(self, sid: str) -> bool:
        """Delete recording ``sid`` from the call that holds it; whether there was one."""
        for call in self._calls.values():
            for recording in call.recordings:
                if recording.sid == sid:
                    call.recordings.remove(recording)
                    self.deleted_recordings.append(sid)
                    return True
        return False

    def calls_to(self, number: str) -> list[FakeCall]:
        """The calls that rang ``number``, in the order they were placed."""
        return [call for call in self._calls.values() if call.to == number]

    def listening(self, sid: str) -> bool:
        """Whether call ``sid`` listens for keys now (a <Gather> or <Record> is under way)."""
        line = self._lines.get(sid)
        return line is not None and line.listening

    def placed(self) -> list[FakeCall]:
        """The calls the call centre placed (through the API or a Dial's leg), in order;
        a simulation reads the new ones as ``next_call`` hands them to a test."""
        return list(self._placed)

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
        return await self._wait_on(sid, lambda call: status in call.statuses, status, timeout)

    async def wait_for_speech(
        self,
        sid: str,
        fragment: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeCall:
        """The call once a <Say> containing ``fragment`` has been heard on it.
        LookupError for an unknown call, or one that ended without it."""

        def heard(call: FakeCall) -> bool:
            return any(fragment in said.text for said in call.spoken)

        return await self._wait_on(sid, heard, f"saying {fragment!r}", timeout)

    async def wait_for_bridge(
        self,
        sid: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> FakeCall:
        """The call once a <Dial> has bridged it with another leg (``bridged_with``).
        LookupError for an unknown call, or one that ended without it."""
        return await self._wait_on(
            sid, lambda call: call.bridged_with is not None, "a bridge", timeout
        )

    async def _wait_on(
        self,
        sid: str,
        reached: Callable[[FakeCall], bool],
        what: str,
        timeout: float,  # noqa: ASYNC109
    ) -> FakeCall:
        call = self._known(sid)
        await self._until(lambda: reached(call) or settled(call), timeout)
        if not reached(call):
            raise LookupError(f"call {sid} ended {call.status} without {what}")
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
            line.interrupt_with(Interrupt(COMPLETED))

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
                line.interrupt_with(Interrupt(COMPLETED))
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
        source = Source(url=url, method=fields.get("Method", "POST"), twiml=twiml)
        line.interrupt_with(Interrupt(redirect=source))
        return call

    def known(self, sid: str) -> FakeCall:
        """The call with this sid; RefusedError 20404 when there is none."""
        return self._known_or_refused(sid)

    async def _when_ringing(self, sid: str) -> Line:
        call = self._known(sid)
        if call.direction == INBOUND:
            raise ValueError(f"call {sid} is a phone calling us: there is no phone to answer it")
        await self._until(lambda: call.status == RINGING or call.ended, HOOK_WAIT_S)
        line = self._lines.get(sid)
        if call.status != RINGING or line is None:
            raise ValueError(f"call {sid} is not ringing ({call.status})")
        return line

    def _known_or_refused(self, sid: str) -> FakeCall:
        call = self._calls.get(sid)
        if call is None:
            raise rest.RefusedError(404, 20404)
        return call


def _is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


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
