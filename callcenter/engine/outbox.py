"""The outbox relay: carries out effects after the change that caused them committed.

Each row is claimed under its call's lock, where its guard is checked again (a page to a
carer who has since accepted, or a "still no carer" text after one arrived, is skipped,
not sent). The claim counts the attempt and pushes the next attempt back *before* the
send, so a crash mid-send is retried later rather than forgotten; the row id travels with
every send as its idempotency key, so the far end can recognise a repeat.

The claim also notes when the attempt began (``sending_since``), cleared once the row is
settled. A row still pending with it set is "in doubt": the process died mid-send, or the
send timed out or broke after the request went out. Before sending such a row again the
relay asks the sender what became of it (``find_sent``, where the sender can): found, the
row is settled as sent without sending; not found, it is sent. When even that question
cannot be answered, a dispatch page goes out again marked as a repeat (a carer must not
miss a call), and an informational text waits and asks again.

A dispatch page (an SMS guarded by its carer) refused for good moves the escalation on at
once: the carer is marked unreachable and the next one paged, instead of waiting out
their time to accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar, runtime_checkable

import aiomqtt
from sqlalchemy import String, bindparam, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.config import BrokerConfig
from callcenter.domain.calls import Call, CallError, TextFailed, Unreachable
from callcenter.domain.policy import Milestone
from callcenter.engine import phones, repository
from callcenter.engine.desk import Desk
from callcenter.ingest.mqtt import backoff_delays
from callcenter.store import models as m

log = logging.getLogger("callcenter.outbox")

_BATCH = 100

# The statements claiming a row, built once (building them anew, as ORM statements, cost
# more than running them): the outbox table itself, not its ORM class.
_outbox = m.Base.metadata.tables["outbox"]
_CALL_OF_ITEM = select(_outbox.c.call_id).where(_outbox.c.id == bindparam("p_item"))
_ITEM = (
    select(
        _outbox.c.id,
        _outbox.c.call_id,
        _outbox.c.channel,
        _outbox.c.recipient,
        _outbox.c.address,
        _outbox.c.body,
        _outbox.c.guard,
        _outbox.c.state,
        _outbox.c.attempts,
        _outbox.c.next_attempt_at,
        _outbox.c.sending_since,
    )
    .where(_outbox.c.id == bindparam("p_item"))
    .with_for_update()
)
_CLAIM = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("p_item"))
    .values(
        attempts=bindparam("p_attempts"),
        next_attempt_at=bindparam("p_next"),
        sending_since=bindparam("p_since"),
    )
)
_SKIP = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("p_item"))
    .values(state=m.OutboxState.SKIPPED.value, done_at=bindparam("p_now"))
)
_NOT_SENT = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("p_item"))
    .values(
        state=m.OutboxState.FAILED.value,
        done_at=bindparam("p_now"),
        last_error=bindparam("p_error"),
    )
)
# Texts (and device commands) out to their provider at the same time (config:
# calls.outbox_lanes): each waits on the network, and in a storm the pages must not queue
# behind each other's waits. Each phone's texts still go one after another, in order.
LANES = 16

# Starts a dispatch page sent again while an earlier attempt may have arrived.
REPEAT_MARK = "[重发/repeat] "
# Between the texts of a bundle, and the most one text may hold (Twilio's body limit).
BUNDLE_SEPARATOR = "\n---\n"
MAX_TEXT_CHARS = 1600


@dataclass(frozen=True)
class TextLimit:
    """At most ``count`` texts to one phone per ``window_s``; more are bundled."""

    count: int
    window_s: float


@dataclass
class ChannelProgress:
    """How sending on one channel has gone lately, for /healthz."""

    # The provider last answered: took a message, or refused one for good (a bad
    # number: the channel itself works).
    answered_at: datetime | None = None
    # Every attempt since has failed without an answer (a fault, a timeout, no link).
    failing_since: datetime | None = None
    error: str = ""  # what the last failed attempt said

    def note(self, now: datetime, error: SendError | None) -> None:
        """Note one attempt's outcome."""
        if error is None or error.permanent:
            self.answered_at, self.failing_since, self.error = now, None, ""
        else:
            self.failing_since = self.failing_since or now
            self.error = error.detail


class _Due(NamedTuple):
    id: int
    channel: str
    address: str
    paged: bool  # a dispatch page (its guard names a carer)
    in_doubt: bool


def bundles(
    messages: Sequence[OutboxMessage], limit: int = MAX_TEXT_CHARS
) -> list[list[OutboxMessage]]:
    """``messages`` to one phone as few texts as fit: pages first, then oldest first,
    each text at most ``limit`` characters (a text alone longer than that goes alone)."""
    ordered = sorted(messages, key=lambda m: (m.carer_id is None, m.id))
    parts: list[list[OutboxMessage]] = []
    size = 0
    for message in ordered:
        grown = size + len(BUNDLE_SEPARATOR) + len(message.body)
        if parts and grown <= limit:
            parts[-1].append(message)
            size = grown
        else:
            parts.append([message])
            size = len(message.body)
    return parts


@dataclass(frozen=True)
class OutboxMessage:
    """One row, as a sender sees it."""

    id: int
    call_id: int | None
    channel: str
    recipient: str
    address: str
    body: str
    attempt: int
    household: str = ""  # the call's household code, for the logs
    carer_id: int | None = None  # set for an SMS page to this carer (its guard)
    # When the earliest attempt with an unknown outcome began; None: nothing in doubt.
    in_doubt_since: datetime | None = None
    # Why it was not sent at all: the number is marked as unable to get texts. The row
    # is already failed by the claim; only moving the call on is left.
    blocked: str = ""

    @property
    def about(self) -> str:
        """Names the call and household for a log line, e.g. "call 12 household H0001"."""
        if self.call_id is None:
            return "no call"
        return f"call {self.call_id} household {self.household or '?'}"

    def logged(self) -> contextlib.AbstractContextManager[None]:
        """Records logged inside carry its call, household and carer (``logs.bound``)."""
        return logs.bound(
            call_id=self.call_id,
            household=self.household or None,
            carer=repository.carer_code(self.recipient),
        )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _about_its_message(
    method: Callable[Concatenate[OutboxRelay, OutboxMessage, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[OutboxRelay, OutboxMessage, _P], Coroutine[Any, Any, _R]]:
    """A relay's work on one message, logged as about its call, household and carer."""

    @functools.wraps(method)
    async def logged(
        relay: OutboxRelay, message: OutboxMessage, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        with message.logged():
            return await method(relay, message, *args, **kwargs)

    return logged


class SendError(Exception):
    """A send did not go through. ``permanent``: retrying cannot help (bad number...);
    ``outcome_unknown``: it may have gone through after all (timeout, broken connection);
    ``phone_problem``: the number itself cannot get texts, so it is marked broken."""

    def __init__(
        self,
        detail: str,
        *,
        permanent: bool = False,
        outcome_unknown: bool = False,
        phone_problem: m.PhoneProblem | None = None,
    ) -> None:
        self.detail = detail
        self.permanent = permanent or phone_problem is not None
        self.outcome_unknown = outcome_unknown
        self.phone_problem = phone_problem
        super().__init__(detail)


class Receipt(NamedTuple):
    """What the provider said on taking a message: its reference and first status."""

    ref: str
    delivery: str | None = None  # e.g. Twilio's "queued"


class Sender(Protocol):
    """Carries out one channel's effects (SMS, device commands)."""

    channel: str

    async def send(self, message: OutboxMessage) -> str | Receipt | None:
        """Deliver ``message`` or raise SendError; the provider's reference, if it has one."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    """A sender that can tell whether an earlier attempt of a message reached the provider."""

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]:
        """What the provider took for ``message`` since ``since``, newest first (SendError
        if it cannot tell)."""
        ...


def still_wanted(call: Call, guard: Mapping[str, Any]) -> bool:
    """Whether a queued effect should still go out, given the call as it is now."""
    carer_id = guard.get("carer_id")
    if carer_id is not None:
        assignment = call.assignment(int(carer_id))
        if assignment is None or not assignment.active or not call.is_open:
            return False
    unless = guard.get("unless")
    return not (unless is not None and call.reached(Milestone(unless)))


def retry_delay(attempt: int, cap_s: float) -> timedelta:
    """Wait before attempt ``attempt + 1``: 5 s, 10 s, 20 s, ... up to ``cap_s``."""
    return timedelta(seconds=min(cap_s, 5.0 * 2 ** max(0, attempt - 1)))


class _Turns:
    """One turn at a time per phone (or device): its texts go out one after another, in
    the order they took their turn, whichever way they came (a page handed over by its
    decision, a drain's lane)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # and how many want it

    def busy(self, address: str) -> bool:
        return address in self._locks

    @contextlib.asynccontextmanager
    async def of(self, address: str) -> AsyncIterator[None]:
        lock, wanting = self._locks.get(address, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[address] = (lock, wanting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, wanting = self._locks[address]
            if wanting == 1:
                del self._locks[address]
            else:
                self._locks[address] = (lock, wanting - 1)


class OutboxRelay:
    """Sends what the desk queued, for every channel it has a sender for.

    While it runs, it is also the desk's page courier: a dispatch page is written claimed
    by the decision that made it and handed over when that commits, then sent at once,
    without the round of reading due rows and claiming them that every other row waits
    for. A page handed over is sent in its phone's turn like any other text. One whose
    hand-over was lost (the process died first) is in doubt at its next attempt and is
    looked for at the provider before it is sent again."""

    def __init__(
        self,
        engine: AsyncEngine,
        desk: Desk,
        clock: Clock,
        senders: Mapping[str, Sender],
        *,
        retry_max_s: float = 300.0,
        text_limit: TextLimit | None = None,
        lanes: int = LANES,
    ) -> None:
        self._engine = engine
        self._text_limit = text_limit
        # Texts (and device commands) out to their provider at the same time.
        self._sending = asyncio.Semaphore(max(1, lanes))
        self._desk = desk
        self._clock = clock
        self._senders = dict(senders)
        self._retry_max_s = retry_max_s
        self._stopping = asyncio.Event()
        self._marking: set[asyncio.Task[None]] = set()  # sent rows being marked so (drain)
        self._mark_of: dict[int, asyncio.Task[None]] = {}  # the same, by row id
        self._turns = _Turns()
        self._handed: set[asyncio.Task[None]] = set()  # pages handed over, being sent
        self._links_back: set[str] = set()  # channels whose link came back (link_back)
        self.progress = {channel: ChannelProgress() for channel in self._senders}
        self.drained_at: datetime | None = None  # the relay last went through what was due
        self.sent = 0
        self.skipped = 0
        self.failed = 0

    @property
    def channels(self) -> list[str]:
        return sorted(self._senders)

    def stop(self) -> None:
        self._stopping.set()
        if self._desk.page_courier is self:  # pages decided from now on wait in the outbox
            self._desk.page_courier = None
        self._desk.outbox_changed.set()

    async def run(self) -> None:
        """Deliver until stop(), waking on new rows and when a retry falls due; and be
        the desk's page courier meanwhile (when there is an SMS sender)."""
        wake = self._desk.outbox_changed
        if repository.SMS in self._senders:
            self._desk.page_courier = self
        try:
            while not self._stopping.is_set():
                try:
                    # Cleared before anything is awaited: a stop() or a link back from
                    # now on wakes the sleep below (a link back noted before it is
                    # taken up at once, by _hurry_links_back).
                    wake.clear()
                    await self._hurry_links_back()
                    await self.drain()
                    self.drained_at = self._clock.now()
                    upcoming = await self.next_attempt()
                except Exception:
                    log.exception("outbox cycle failed; trying again in 1 s")
                    await asyncio.sleep(1.0)
                    continue
                until = upcoming or self._clock.now() + timedelta(seconds=30)
                await self._clock.sleep_until(until, wake)
        finally:
            if self._desk.page_courier is self:
                self._desk.page_courier = None
            # Pages already on their way are finished (a send is bounded by its timeout).
            await asyncio.gather(*self._handed, return_exceptions=True)
            await asyncio.gather(*self._marking, return_exceptions=True)

    # --- pages handed over by their decision (the desk's PageCourier) ------------------

    def claimed_until(self, now: datetime) -> datetime:
        """When a page claimed at ``now`` is due again, as ``_claim`` would set it."""
        return now + retry_delay(1, self._retry_max_s)

    def hand_over(self, pages: Sequence[repository.ClaimedPage], household: str) -> None:
        """Send pages their decision wrote claimed and has committed."""
        for page in pages:
            message = OutboxMessage(
                page.id,
                page.call_id,
                repository.SMS,
                page.recipient,
                page.address,
                page.body,
                1,
                household,
                page.carer_id,
            )
            # Logged as about its own call and carer, not as the decision's caller.
            sending = asyncio.create_task(self._send_handed(message), context=contextvars.Context())
            self._handed.add(sending)
            sending.add_done_callback(self._handed.discard)

    @_about_its_message
    async def _send_handed(self, message: OutboxMessage) -> None:
        try:
            async with self._turns.of(message.address):
                await self._send(message)
        except Exception:
            # Settling it failed: the row stays claimed and in doubt, and its next
            # attempt looks for it at the provider before sending it again.
            log.exception(
                "outbox %d: page to %s (%s) could not be settled; it is looked for at the "
                "provider and sent if need be at its next attempt",
                message.id,
                message.recipient,
                message.about,
            )

    async def drain(self) -> int:
        """Deliver everything due now; how many rows were settled. (Burst mode.)

        A sent row is marked sent while its lane goes on to its next row (the row was
        claimed before the send, so it is not due again meanwhile, and a crash before
        the mark leaves it in doubt, to be checked with the provider). Every mark is
        written before this returns."""
        try:
            settled = await self._drain()
        finally:
            failures = await self._marks_written()
        if failures:
            raise failures[0]
        return settled

    async def _marks_written(self) -> list[BaseException]:
        """Wait for the marks of sent rows still being written; the errors among them
        and among the marks that failed since the last look."""
        marks = list(self._marking)
        done = await asyncio.gather(*marks, return_exceptions=True)
        self._marking.difference_update(marks)
        return [e for e in done if isinstance(e, BaseException)]

    def _mark_sent(self, message: OutboxMessage, receipt: Receipt | None) -> None:
        """Mark ``message`` sent, without holding up its lane (see ``drain``)."""
        marking = asyncio.create_task(self._settle(message, None, receipt))
        self._marking.add(marking)
        self._mark_of[message.id] = marking
        marking.add_done_callback(functools.partial(self._mark_done, message.id))

    def _mark_done(self, row: int, marking: asyncio.Task[None]) -> None:
        if self._mark_of.get(row) is marking:
            del self._mark_of[row]
        # A mark that failed stays until drain's end reports it (rather than vanishing).
        if marking.cancelled() or marking.exception() is None:
            self._marking.discard(marking)

    async def _marked(self, item_id: int) -> None:
        """Wait until row ``item_id`` is no longer being marked sent. A row due again
        while its mark is still being written (a page handed over whose send outlasted
        its claim) must not be claimed as if it had never gone out."""
        marking = self._mark_of.get(item_id)
        if marking is not None:
            await asyncio.wait([marking])

    async def _drain(self) -> int:
        settled = 0

        async def lane(rows: list[_Due], recent: list[datetime] | None) -> int:
            # Every phone's lane at once: their claims share the transactions waiting for
            # the write turn together (Desk.perform_together), and only the sends wait
            # for one of the ``calls.outbox_lanes`` places. With each lane claiming and
            # sending in turn, a storm's pages had waited a write turn per 16 of them.
            address = rows[0].address
            if self._turns.busy(address):
                recent = None  # a page is out to it: weigh the rest after it
            async with self._turns.of(address):
                return await self._deliver_lane(rows, recent)

        while self._senders and not self._stopping.is_set():
            async with AsyncSession(self._engine) as session:
                due = [
                    _Due(
                        row.id,
                        row.channel,
                        row.address,
                        row.channel == repository.SMS and row.guard.get("carer_id") is not None,
                        row.sending_since is not None,
                    )
                    for row in (
                        await session.execute(
                            select(
                                m.OutboxItem.id,
                                m.OutboxItem.channel,
                                m.OutboxItem.address,
                                m.OutboxItem.guard,
                                m.OutboxItem.sending_since,
                            )
                            .where(
                                m.OutboxItem.state == m.OutboxState.PENDING,
                                m.OutboxItem.next_attempt_at <= self._clock.now(),
                                m.OutboxItem.channel.in_(self.channels),
                            )
                            .order_by(m.OutboxItem.id)
                            .limit(_BATCH)
                        )
                    ).all()
                ]
            # Each phone (or device) in its own lane: its rows in order, one after
            # another, so two texts to one carer never overtake each other; different
            # lanes at the same time, so one slow send or one wait for the database does
            # not hold up every other carer's page behind it.
            lanes: dict[tuple[str, str], list[_Due]] = {}
            for row in due:
                lanes.setdefault((row.channel, row.address), []).append(row)
            # What each phone was sent lately, read for all of them at once.
            recent: dict[str, list[datetime]] = {}
            if self._text_limit is not None:
                phones_due = [address for channel, address in lanes if channel == repository.SMS]
                recent = await self._recent_texts(phones_due, self._text_limit)
            done = await asyncio.gather(
                *(
                    lane(rows, recent.get(address, []) if channel == repository.SMS else None)
                    for (channel, address), rows in lanes.items()
                ),
                return_exceptions=True,
            )
            settled += sum(n for n in done if isinstance(n, int))
            failures = [e for e in done if isinstance(e, BaseException)]
            if failures:
                raise failures[0]  # after every lane has finished: none runs on alone
            if self._stopping.is_set():
                return settled  # the rest stays pending for the next start
            if len(due) < _BATCH:
                break
        return settled

    async def _deliver_lane(self, due: list[_Due], recent: list[datetime] | None) -> int:
        """Deliver one phone's (or device's) due rows, in order; ``recent``: when the
        phone was last texted, as read before the lane began (None: not read)."""
        settled = 0
        handled: set[int] = set()
        for row in due:
            if self._stopping.is_set():
                break  # the rest stays pending for the next start
            if row.id in handled:
                continue
            if self._text_limit is None or row.channel != repository.SMS or row.in_doubt:
                handled.add(row.id)
                settled += await self._deliver(row.id)
                recent = None  # it may have gone out: read again before weighing the rest
                continue
            # Everything waiting for this phone is weighed together against its limit.
            group = [r for r in due if not r.in_doubt and r.id not in handled]
            handled.update(r.id for r in group)
            if recent is None:
                # A text sent just before is marked sent in the background: once marked,
                # it is among the phone's recent texts.
                if self._marking:  # (waited for, not taken: drain reports their errors)
                    await asyncio.wait(list(self._marking))
                recent = (await self._recent_texts([row.address], self._text_limit)).get(
                    row.address, []
                )
            settled += await self._deliver_limited(group, self._text_limit, recent)
        return settled

    async def _deliver_limited(
        self, group: list[_Due], limit: TextLimit, recent: list[datetime]
    ) -> int:
        """Texts waiting for one phone: one by one within its limit; over it, bundled into
        one text; at it, held until the window frees, except that a page never waits.
        ``recent``: when the phone's latest texts within the window went out, newest
        first."""
        address = group[0].address
        if len(recent) + len(group) <= limit.count:
            settled = 0
            for row in group:
                settled += await self._deliver(row.id)
            return settled
        if len(recent) >= limit.count and not any(row.paged for row in group):
            free_at = recent[limit.count - 1] + timedelta(seconds=limit.window_s)

            async def hold(session: AsyncSession) -> None:
                await session.execute(
                    update(m.OutboxItem)
                    .where(
                        m.OutboxItem.id.in_([row.id for row in group]),
                        m.OutboxItem.state == m.OutboxState.PENDING,
                    )
                    .values(next_attempt_at=free_at)
                )

            await self._desk.perform_together(hold)
            log.info(
                "outbox %s: %d text(s) to %s held until %s: it had %d texts in the last %g s "
                "(sms.recipient_limit); more than it then allows go out bundled into one",
                ", ".join(str(row.id) for row in group),
                len(group),
                address,
                free_at.isoformat(timespec="seconds"),
                len(recent),
                limit.window_s,
            )
            return 0
        return await self._deliver_bundle([row.id for row in group])

    async def _recent_texts(
        self, addresses: Sequence[str], limit: TextLimit
    ) -> dict[str, list[datetime]]:
        """For each phone of ``addresses`` texted within the window, when its latest
        ``limit.count`` texts (a bundle is one) went out, newest first; one read for all."""
        if not addresses:
            return {}
        since = self._clock.now() - timedelta(seconds=limit.window_s)
        sent_at = func.max(m.OutboxItem.done_at)
        # One text per provider reference (a bundle's rows share it); a row without one
        # (a sender that gives none) is a text of its own.
        text = func.coalesce(m.OutboxItem.provider_ref, cast(m.OutboxItem.id, String))
        async with AsyncSession(self._engine) as session:
            found = await session.execute(
                select(m.OutboxItem.address, sent_at)
                .where(
                    m.OutboxItem.channel == repository.SMS,
                    m.OutboxItem.address.in_(addresses),
                    m.OutboxItem.state == m.OutboxState.SENT,
                    m.OutboxItem.done_at > since,
                )
                .group_by(m.OutboxItem.address, text)
            )
            recent: dict[str, list[datetime]] = {}
            for address, moment in found.all():
                if moment is not None:
                    recent.setdefault(address, []).append(moment)
        return {a: sorted(moments, reverse=True)[: limit.count] for a, moments in recent.items()}

    async def _deliver_bundle(self, item_ids: list[int]) -> int:
        """Claim each row (under its own call's lock), then send those still wanted to
        their one phone as few texts as fit."""
        settled = 0
        claimed: list[OutboxMessage] = []
        for item_id in item_ids:
            await self._marked(item_id)
            message = await self._claim(item_id)
            if message is None:
                settled += 1
            elif message.blocked:
                await self._move_on(message, SendError(message.blocked, permanent=True))
                settled += 1
            else:
                claimed.append(message)
        for part in bundles(claimed):
            settled += (
                await self._send(part[0]) if len(part) == 1 else await self._send_bundle(part)
            )
        return settled

    async def _send_bundle(self, part: list[OutboxMessage]) -> int:
        """One text carrying several rows; each row is settled with its outcome."""
        lead = part[0]
        text = replace(lead, body=BUNDLE_SEPARATOR.join(m.body for m in part), carer_id=None)
        ids = ", ".join(str(m.id) for m in part)
        log.info(
            "outbox %s: %d texts to %s (%s) bundled into one (sms.recipient_limit)",
            ids,
            len(part),
            lead.address,
            lead.recipient,
        )
        sender = self._senders[lead.channel]
        try:
            async with self._sending:
                answer = await sender.send(text)
        except Exception as error:
            failure = (
                error
                if isinstance(error, SendError)
                else SendError(repr(error), outcome_unknown=True)
            )
            if not isinstance(error, SendError):
                log.exception("outbox %s: sender for %s failed", ids, lead.channel)
            for member in part:
                await self._settle(member, failure)
            if failure.permanent:
                for member in part:
                    await self._move_on(member, failure)
                return len(part)
            return 0
        receipt = Receipt(answer) if isinstance(answer, str) else answer
        for member in part:
            self._mark_sent(member, receipt)
        return len(part)

    async def next_attempt(self) -> datetime | None:
        """When the earliest pending row is due (now or later), if any."""
        async with AsyncSession(self._engine) as session:
            return await session.scalar(
                select(func.min(m.OutboxItem.next_attempt_at)).where(
                    m.OutboxItem.state == m.OutboxState.PENDING,
                    m.OutboxItem.channel.in_(self.channels),
                )
            )

    def link_back(self, channel: str) -> None:
        """``channel``'s link is back: its rows waiting for it are made due at the top of
        the relay's next cycle (``channel_back``). Called on the link's own task, which
        must not wait for the database; and by then the rows the last drain refused for
        want of the link are settled (one still claimed would be left out)."""
        self._links_back.add(channel)
        self._desk.outbox_changed.set()

    async def _hurry_links_back(self) -> None:
        while self._links_back:
            channel = self._links_back.pop()
            try:
                await self.channel_back(channel)
            except BaseException:
                self._links_back.add(channel)  # tried again at the next cycle
                raise

    async def channel_back(self, channel: str) -> None:
        """``channel``'s link is back (the command link reconnected): its rows waiting to
        be tried again are due now, not at their next retry, which may be minutes away.
        A row being sent right now (``sending_since`` set) is left as it is, so it is
        never claimed twice."""
        now = self._clock.now()

        async def due_now(session: AsyncSession) -> None:
            await session.execute(
                update(_outbox)
                .where(
                    _outbox.c.channel == channel,
                    _outbox.c.state == m.OutboxState.PENDING.value,
                    _outbox.c.next_attempt_at > now,
                    _outbox.c.sending_since.is_(None),
                )
                .values(next_attempt_at=now)
            )

        await self._desk.perform_together(due_now)
        self._desk.outbox_changed.set()

    async def _claim(self, item_id: int) -> OutboxMessage | None:
        async def work(session: AsyncSession) -> OutboxMessage | None:
            call_id = await session.scalar(_CALL_OF_ITEM, {"p_item": item_id})
            call = None
            household = ""
            if call_id is not None:
                # The call's lock first (as every writer takes it), then the row itself,
                # read fresh under that lock: another instance may have claimed it.
                registry = await self._desk.district.registry()
                call = await repository.load(session, call_id, registry.carer_codes, lock=True)
                if call is not None and call.household_id in registry.households:
                    household = registry.households[call.household_id].code
            item = (await session.execute(_ITEM, {"p_item": item_id})).one_or_none()
            now = self._clock.now()
            # Another relay (a concurrent drain, another instance) may have claimed it
            # since it was selected: its next attempt is then no longer due.
            if item is None or item.state != m.OutboxState.PENDING or item.next_attempt_at > now:
                return None
            if call is not None and not still_wanted(call, item.guard):
                await session.execute(_SKIP, {"p_item": item_id, "p_now": now})
                with logs.bound(call_id=item.call_id, household=household or None):
                    log.info(
                        "outbox %d (%s to %s, call %s household %s) skipped: no longer wanted",
                        item.id,
                        item.channel,
                        item.recipient,
                        item.call_id,
                        household,
                    )
                self.skipped += 1
                return None
            paged = item.guard.get("carer_id") if item.channel == repository.SMS else None
            message = OutboxMessage(
                item.id,
                item.call_id,
                item.channel,
                item.recipient,
                item.address,
                item.body,
                item.attempts,
                household,
                None if paged is None else int(paged),
            )
            broken = (
                await phones.find(session, item.address) if item.channel == repository.SMS else None
            )
            if broken is not None:
                error = f"not sent: {broken.why()}"
                await session.execute(
                    _NOT_SENT, {"p_item": item_id, "p_now": now, "p_error": error}
                )
                with message.logged():
                    log.error("outbox %d (%s) not sent: %s", item.id, message.about, broken.why())
                self.failed += 1
                return replace(message, blocked=broken.why())
            in_doubt_since = item.sending_since
            attempt = item.attempts + 1
            await session.execute(
                _CLAIM,
                {
                    "p_item": item_id,
                    "p_attempts": attempt,
                    "p_next": now + retry_delay(attempt, self._retry_max_s),
                    # Kept from the earliest attempt still in doubt, so a later check
                    # covers it.
                    "p_since": in_doubt_since or now,
                },
            )
            return replace(message, attempt=attempt, in_doubt_since=in_doubt_since)

        return await self._desk.perform_together(work)

    async def _deliver(self, item_id: int) -> int:
        await self._marked(item_id)
        message = await self._claim(item_id)
        if message is None:
            return 1
        if message.blocked:
            await self._move_on(message, SendError(message.blocked, permanent=True))
            return 1
        return await self._send(message)

    @_about_its_message
    async def _send(self, message: OutboxMessage) -> int:
        """Send one claimed row (asking the provider first if an attempt is in doubt)."""
        sender = self._senders[message.channel]
        still_in_doubt = False
        if message.in_doubt_since is not None and isinstance(sender, Reconciler):
            try:
                async with self._sending:
                    found = await sender.find_sent(message, message.in_doubt_since)
            except Exception as error:  # SendError, or a sender bug: the question is open
                why = error.detail if isinstance(error, SendError) else repr(error)
                if message.carer_id is None:
                    # Informational: a duplicate would mislead, a delay does not; ask again.
                    await self._settle(
                        message,
                        SendError(
                            "an earlier attempt may have been sent and the provider's message "
                            f"list could not be checked ({why}); not sent again until it can be",
                            outcome_unknown=True,
                        ),
                    )
                    return 0
                # A page a carer never gets costs more than one they get twice.
                log.warning(
                    "outbox %d: page to %s (%s) may have been sent already and the provider's "
                    "message list could not be checked (%s); sending it again marked as a repeat",
                    message.id,
                    message.recipient,
                    message.about,
                    why,
                )
                message = replace(message, body=REPEAT_MARK + message.body)
                still_in_doubt = True
            else:
                receipt = await self._unclaimed(message, found)
                if receipt is not None:
                    log.info(
                        "outbox %d: an earlier attempt to %s (%s) had been sent as %s; "
                        "not sending it again",
                        message.id,
                        message.recipient,
                        message.about,
                        receipt.ref,
                    )
                    await self._settle(message, None, receipt)
                    return 1
        try:
            async with self._sending:
                answer = await sender.send(message)
        except SendError as error:
            await self._settle(message, error, still_in_doubt=still_in_doubt)
            if error.permanent:
                await self._move_on(message, error)
            return 1 if error.permanent else 0
        except Exception as error:  # a sender bug must not stop the relay
            log.exception(
                "outbox %d: sender for %s failed (%s)", message.id, message.channel, message.about
            )
            await self._settle(message, SendError(repr(error), outcome_unknown=True))
            return 0
        receipt = Receipt(answer) if isinstance(answer, str) else answer
        self._mark_sent(message, receipt)
        return 1

    async def _unclaimed(self, message: OutboxMessage, found: Sequence[Receipt]) -> Receipt | None:
        """The first of ``found`` no other row with the same text already names: an
        identical text sent to the same phone for another row is that row's, not this
        one's. (Rows bundled into one text share its reference, each with its own text.)"""
        if not found:
            return None
        async with AsyncSession(self._engine) as session:
            taken = set(
                (
                    await session.scalars(
                        select(m.OutboxItem.provider_ref).where(
                            m.OutboxItem.provider_ref.in_([r.ref for r in found]),
                            m.OutboxItem.id != message.id,
                            m.OutboxItem.body == message.body,
                        )
                    )
                ).all()
            )
        return next((r for r in found if r.ref not in taken), None)

    @_about_its_message
    async def _move_on(self, message: OutboxMessage, error: SendError) -> None:
        """A text that can never arrive. A page: the carer is unreachable and the next one
        is paged. Any other text about a call: written on the call, supervisors told."""
        if message.call_id is None or message.channel != repository.SMS:
            return
        command: Unreachable | TextFailed
        if message.carer_id is not None:
            command = Unreachable(message.carer_id, error.detail)
        else:
            command = TextFailed(message.recipient, message.address, error.detail)
        try:
            await self._desk.command(message.call_id, command)
        except CallError as refused:  # e.g. the call closed meanwhile
            log.info("outbox %d: %s not recorded on the call: %s", message.id, command, refused)
        except Exception:
            # A page's time to accept still runs out and moves the call on.
            log.exception(
                "outbox %d: could not record the failed text on the call (%s)",
                message.id,
                message.about,
            )

    @_about_its_message
    async def _settle(
        self,
        message: OutboxMessage,
        error: SendError | None,
        receipt: Receipt | None = None,
        *,
        still_in_doubt: bool = False,
    ) -> None:
        values: dict[str, Any]
        now = self._clock.now()
        self.progress.setdefault(message.channel, ChannelProgress()).note(now, error)
        phone_problem: m.PhoneProblem | None = None
        if error is None:
            values = {
                "state": m.OutboxState.SENT,
                "done_at": now,
                "last_error": "",
                "sending_since": None,
            }
            if receipt is not None:
                values |= {"provider_ref": receipt.ref, "delivery": receipt.delivery}
            self.sent += 1
            log.info(
                "outbox %d: %s to %s sent (%s)%s",
                message.id,
                message.channel,
                message.recipient,
                message.about,
                f" as {receipt.ref}" if receipt is not None else "",
            )
        elif error.permanent:
            values = {
                "state": m.OutboxState.FAILED,
                "done_at": now,
                "last_error": error.detail,
                "sending_since": None,
            }
            if error.phone_problem is not None:
                phone_problem = error.phone_problem
            self.failed += 1
            log.error(
                "outbox %d: %s to %s refused for good (%s): %s",
                message.id,
                message.channel,
                message.recipient,
                message.about,
                error.detail,
            )
        else:
            values = {"last_error": error.detail}
            if not (error.outcome_unknown or still_in_doubt):
                values["sending_since"] = None  # known not to have gone out
            log.warning(
                "outbox %d: %s to %s failed, attempt %d (%s): %s; will retry",
                message.id,
                message.channel,
                message.recipient,
                message.attempt,
                message.about,
                error.detail,
            )

        async def write(session: AsyncSession) -> None:
            await session.execute(update(_outbox).where(_outbox.c.id == message.id).values(values))
            if phone_problem is not None and error is not None:
                # Nothing more is sent to it, and its carer is not paged, until lifted.
                await phones.mark(
                    session,
                    message.address,
                    phone_problem,
                    error.detail,
                    recipient=message.recipient,
                    now=now,
                )

        await self._desk.perform_together(write)
        if phone_problem is not None and error is not None:
            log.error(
                "phone %s of %s marked as unable to get texts (%s); lift the mark with "
                "`callcenter phone clear %s` once it is fixed",
                message.address,
                message.recipient,
                phone_problem.value,
                message.address,
            )


class DeviceCommandSender:
    """Publishes device commands (docs/protocol.md, "command") over its own MQTT link.

    The link is held until stop(), and made again with backoff whenever the broker drops
    it. While it is down a command is refused at once (nothing was published, so it is
    not in doubt) and waits in the outbox; each time the link comes up, whoever asked
    (``when_connected``; the relay, see ``OutboxRelay.link_back``) is told, so the
    commands that waited go out then rather than at their next retry."""

    channel = repository.DEVICE_COMMAND

    def __init__(self, config: BrokerConfig, *, host: str, port: int, clock: Clock) -> None:
        self._config = config
        self._host = host
        self._port = port
        self._clock = clock
        self._client: aiomqtt.Client | None = None
        self._stopping = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        # When the link went down (at first: when this sender was made); None while up.
        self.down_since: datetime | None = clock.now()

    @property
    def connected(self) -> bool:
        """Whether the link to the broker is up."""
        return self._client is not None

    def when_connected(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` each time the link comes up (again), on the link's own task:
        it must return at once (the link's loss is noticed only once it has)."""
        self._listeners.append(listener)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Hold a connection to the broker until stop(), reconnecting with backoff."""
        delays = backoff_delays(cap_s=self._config.reconnect_max_s)
        while not self._stopping.is_set():
            client = aiomqtt.Client(
                self._host,
                self._port,
                identifier=f"{self._config.client_id}-commands",
                username=self._config.username or None,
                password=self._config.password or None,
                protocol=aiomqtt.ProtocolVersion.V311,
                keepalive=self._config.keepalive_s,
                timeout=10,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
            lost: aiomqtt.MqttError | None = None
            try:
                async with client:
                    self._client = client
                    self.down_since = None
                    delays = backoff_delays(cap_s=self._config.reconnect_max_s)
                    log.info("command link connected to %s:%d", self._host, self._port)
                    self._tell_connected()
                    await self._hold(client)
            except aiomqtt.MqttError as error:
                lost = error
            finally:
                # At once, not after the wait below: a send meanwhile must know.
                if self._client is not None:
                    self.down_since = self._clock.now()
                self._client = None
            if lost is None or self._stopping.is_set():
                continue
            wait = next(delays)
            log.warning(
                "command link to %s:%d lost (%s); device commands wait; reconnecting in %.1f s",
                self._host,
                self._port,
                lost,
                wait,
            )
            await self._sleep_unless_stopping(wait)

    async def _hold(self, client: aiomqtt.Client) -> None:
        """Until stop() or until the broker drops the link (MqttError). aiomqtt tells of a
        lost connection only to whoever reads ``client.messages``; this link subscribes to
        nothing, so reading it is waiting for exactly that."""

        async def until_lost() -> None:
            async for _ in client.messages:
                pass

        lost = asyncio.create_task(until_lost(), name="callcenter.commands.link")
        stop = asyncio.create_task(self._stopping.wait(), name="callcenter.commands.stop")
        try:
            await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lost, stop):
                task.cancel()
            await asyncio.gather(lost, stop, return_exceptions=True)
        if not self._stopping.is_set() and lost.done() and not lost.cancelled():
            lost.result()  # the MqttError that ended the link

    def _tell_connected(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("telling %r that the command link is up failed", listener)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def send(self, message: OutboxMessage) -> None:
        """Publish the command at QoS 1; there is no provider reference."""
        if self._stopping.is_set():
            raise SendError("shutting down")
        client = self._client
        if client is None:
            # Refused at once: waiting here would hold one of the relay's lanes, which
            # carers' pages need.
            raise SendError(
                f"no connection to the broker {self._host}:{self._port}; the command goes "
                "when the link is back"
            )
        body = json.loads(message.body)
        payload = {
            "v": 1,
            "id": f"cmd-{message.id}",
            "ts": int(self._clock.now().timestamp() * 1000),
            "command": body["command"],
            "call": body["call"],
        }
        try:
            await client.publish(message.address, json.dumps(payload), qos=1, timeout=10)
        except aiomqtt.MqttError as error:
            raise SendError(f"publish failed: {error}") from None
