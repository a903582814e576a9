"""The fake Twilio's switchboard: every call it holds, the line each live call's task
waits on (the phone's decision while it rings, a hang-up or redirect once it is up, the
keys pressed), and how a call's status changes and is told to its status callback,
signed as Twilio signs. Each call runs as one task of its own, which alone changes its
status; hooks and the API only tell that task what happened through its line.

Every wait a call's task makes is kept while it waits (what wakes it, and its deadline
on the fake's clock), so the fake can tell when it is quiet: each task waiting on its
clock or on a phone, no webhook under way. A simulation on virtual time (``ManualClock``)
waits for that before it moves the clock, and moves it to the next deadline the fake
has (``next_deadline``), as it does for the call centre's own timers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callcenter.clock import Clock
from callcenter.fake_twilio.calls import (
    COMPLETED,
    FAILED,
    FINAL,
    IN_PROGRESS,
    INBOUND,
    INITIATED,
    QUEUED,
    RINGING,
    FakeCall,
    PhonePlan,
    event_of,
)
from callcenter.fake_twilio.message import rfc2822

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long Twilio waits for a voice webhook before it gives up on it.
_WEBHOOK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Source:
    """Where a call's next TwiML comes from: a URL to ask, with fields beyond the call's
    own (the digits a Gather heard), or TwiML given with the call."""

    url: str = ""
    method: str = "POST"
    twiml: str = ""
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Interrupt:
    """A live call hung up (ending with ``status``) or redirected to ``redirect``."""

    status: str = COMPLETED
    redirect: Source | None = None


class InterruptedCallError(Exception):
    def __init__(self, interrupt: Interrupt) -> None:
        super().__init__(interrupt.status)
        self.interrupt = interrupt


class EndedError(Exception):
    """The TwiML itself ended the call (<Hangup>, <Reject>) with this status."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class WebhookError(Exception):
    """A webhook that could not be reached or did not answer 200."""


class Line:
    """What a live call's task waits on: the phone's decision while it rings (answered,
    busy, canceled), a hang-up or redirect once it is up, and the keys pressed."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.decision: asyncio.Future[str] = loop.create_future()
        self.interrupt: asyncio.Future[Interrupt] = loop.create_future()
        self.keys: collections.deque[str] = collections.deque()
        self.key_arrived = asyncio.Event()
        self.listening = False

    def decide(self, status: str) -> None:
        if not self.decision.done():
            self.decision.set_result(status)

    def interrupt_with(self, interrupt: Interrupt) -> None:
        if not self.interrupt.done():
            self.interrupt.set_result(interrupt)


@dataclass(frozen=True)
class _Wait:
    """What a call's task waits for: ``woken`` says whether it has come (the task is
    about to go on), ``deadline`` when it gives up waiting (None: never)."""

    woken: Callable[[], bool]
    deadline: datetime | None


class Switchboard:
    """The calls and their lines; the base of the interpreter and the phone network."""

    def __init__(
        self, *, account_sid: str, auth_token: str, clock: Clock, pause_scale: float
    ) -> None:
        if not pause_scale >= 0:
            raise ValueError(f"pause_scale is a factor of 0 or more, not {pause_scale}")
        self.account_sid = account_sid
        self.auth_token = auth_token
        # How long the waits TwiML asks for last: <Pause> length, <Gather> and <Record>
        # timeouts are multiplied by it (rings are not: their Timeout is the caller's).
        self.pause_scale = pause_scale
        self._clock = clock
        self._calls: dict[str, FakeCall] = {}
        self._lines: dict[str, Line] = {}
        self._plans: dict[str, PhonePlan] = {}
        # The calls the centre placed (API and Dial legs), for next_call.
        self._placed: list[FakeCall] = []
        self._call_order = itertools.count(1)
        self._changed = asyncio.Condition()
        self._flows: set[asyncio.Task[Any]] = set()
        self._http: aiohttp.ClientSession | None = None
        # The waits of the calls' tasks (by task), the webhooks under way, and a signal
        # that either changed (for ``quiet``).
        self._waits: dict[asyncio.Task[Any], _Wait] = {}
        self._posting = 0
        self._stirred = asyncio.Event()

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
        now = self._clock.now()
        call = FakeCall(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            direction=direction,
            date_created=now,
            parent_sid=parent_sid,
            url=url,
            twiml=twiml,
            status_callback=status_callback,
            status_callback_events=frozenset(events) | {"completed"},
            timeout=timeout,
            statuses=[QUEUED],
            reached={QUEUED: now},
            order=next(self._call_order),
        )
        self._calls[call.sid] = call
        self._lines[call.sid] = Line()
        if direction != INBOUND:
            self._placed.append(call)
        return call

    def _start(self, call: FakeCall, flow: Awaitable[None]) -> None:
        self._task(self._guarded(call, flow), call)

    def _task(self, work: Coroutine[Any, Any, T], call: FakeCall) -> asyncio.Task[T]:
        """Run ``work`` for ``call`` as a task that stopping the fake cancels."""
        task = asyncio.create_task(work, name=f"fake_twilio.{call.sid}")
        self._flows.add(task)
        task.add_done_callback(self._flow_ended)
        self._stirred.set()
        return task

    def _flow_ended(self, task: asyncio.Task[Any]) -> None:
        self._flows.discard(task)
        self._stirred.set()

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

    async def _within(
        self,
        call: FakeCall,
        awaitable: Awaitable[T],
        seconds: float | None = None,
        *,
        woken: Callable[[], bool] | None = None,
    ) -> T | None:
        """What ``awaitable`` gives, or None after ``seconds`` on the fake's clock;
        InterruptedCallError if the call is hung up or redirected first. ``woken`` says
        whether what the awaitable waits for has come, before it has been told (for
        ``quiet``: keys pressed, a leg that ended)."""
        line = self._lines[call.sid]
        task = asyncio.ensure_future(awaitable)

        def come() -> bool:
            return task.done() or line.interrupt.done() or (woken is not None and woken())

        try:
            await self._wait({task, line.interrupt}, seconds, come)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if line.interrupt.done():
            raise InterruptedCallError(line.interrupt.result())
        return None

    async def _wait(
        self,
        futures: set[asyncio.Future[Any]],
        seconds: float | None,
        woken: Callable[[], bool],
    ) -> None:
        """Until one of ``futures`` is done or ``seconds`` have passed on the fake's
        clock, kept as this task's wait meanwhile."""
        deadline = None if seconds is None else self._clock.now() + timedelta(seconds=seconds)
        waiting = set(futures)
        timer: asyncio.Task[None] | None = None
        if deadline is not None:
            timer = asyncio.create_task(self._clock.sleep_until(deadline))
            waiting.add(timer)
        me = asyncio.current_task()
        assert me is not None
        self._waits[me] = _Wait(woken, deadline)
        self._stirred.set()
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waits.pop(me, None)
            self._stirred.set()
            if timer is not None:
                timer.cancel()

    async def _next_key(self, call: FakeCall, seconds: float) -> str | None:
        line = self._lines[call.sid]
        if not line.keys:
            line.key_arrived.clear()
            arrived = line.key_arrived
            await self._within(call, arrived.wait(), seconds, woken=arrived.is_set)
        return line.keys.popleft() if line.keys else None

    async def _listen(self, line: Line, listening: bool) -> None:
        if listening:  # keys from before do not count, nor does their signal
            line.keys.clear()
            line.key_arrived.clear()
        line.listening = listening
        await self._touch()

    async def _set(self, call: FakeCall, status: str) -> None:
        """Move the call to ``status``, tell its status callback if it asked (the final
        status always), then list the status as gone through."""
        if call.ended:
            return
        now = self._clock.now()
        call.status = status
        call.reached.setdefault(status, now)
        if status == INITIATED or (status == RINGING and call.start_time is None):
            call.start_time = now
        if status == IN_PROGRESS:
            call.answered_at = now
        if status in FINAL:
            call.end_time = now
            line = self._lines.get(call.sid)
            if line is not None:
                line.decide(status)
                line.interrupt_with(Interrupt(status))
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

    def _webhook(
        self, url: str, params: dict[str, str], method: str
    ) -> asyncio.Task[tuple[int, str]]:
        """Post (or GET) ``params`` to ``url`` signed as Twilio signs; status and text.
        Counted as under way from this call until the task is done (also when it is
        cancelled before it starts), for ``quiet``."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT_S)
            )
        self._posting += 1
        self._stirred.set()
        posting = asyncio.create_task(self._send(url, params, method))
        posting.add_done_callback(self._posted)
        return posting

    def _posted(self, _task: asyncio.Task[tuple[int, str]]) -> None:
        self._posting -= 1
        self._stirred.set()

    async def _send(self, url: str, params: dict[str, str], method: str) -> tuple[int, str]:
        assert self._http is not None
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

    # -- quiet, for simulations on virtual time -----------------------------------------

    def _calm(self) -> bool:
        """Every call's task waits on the clock (not yet due) or a phone (that has not
        acted), and no webhook is under way."""
        if self._posting:
            return False
        now = self._clock.now()
        for task in self._flows:
            if task.done():
                continue
            wait = self._waits.get(task)
            if wait is None or wait.woken():
                return False
            if wait.deadline is not None and wait.deadline <= now:
                return False
        return True

    async def quiet(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until the calls have done everything the present moment asks of them:
        each waits on a phone or on the fake's clock, and every status and webhook they
        had to post has been answered. TimeoutError after ``timeout`` real seconds."""
        # Exact, without polling: a wait that has been woken says so (``_Wait.woken``, or
        # its deadline passed) before its task runs again, and every change a task makes
        # to its waits or webhooks sets ``_stirred``.
        async with asyncio.timeout(timeout):
            while not self._calm():
                self._stirred.clear()
                await self._stirred.wait()

    def next_deadline(self) -> datetime | None:
        """The soonest moment a call's wait ends by itself (a ring timing out, a pause
        over), on the fake's clock; None when no call waits on the clock."""
        deadlines = [
            wait.deadline
            for task, wait in self._waits.items()
            if wait.deadline is not None and not task.done()
        ]
        return min(deadlines, default=None)

    def _known(self, sid: str) -> FakeCall:
        call = self._calls.get(sid)
        if call is None:
            raise LookupError(f"the fake Twilio has no call {sid}")
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


def settled(call: FakeCall) -> bool:
    """Whether the call has ended and its final status has been told."""
    return any(status in FINAL for status in call.statuses)
