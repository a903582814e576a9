"""The outbox relay: carries out effects after the change that caused them committed.

It owns the loop (a pass over the due rows whenever the desk queues one or a retry falls
due), the claims, and the hand-over of dispatch pages from the desk. Each row is claimed
under its call's lock, where its guard is checked again (a page to a carer who has since
accepted, or a "still no carer" text after one arrived, is skipped, not sent). The claim
counts the attempt and pushes the next attempt back *before* the send, so a crash
mid-send is retried later rather than forgotten; the row id travels with every send as
its idempotency key, so the far end can recognise a repeat. The claim also notes when
the attempt began (``sending_since``), cleared once the row is settled: a row still
pending with it set is in doubt, and is looked for at the provider before it is sent
again (reconcile.py).

The rest is in the package's other modules: per-phone lanes (lanes.py), limits and
bundling (limits.py), what a message that will not arrive does to its call
(delivery.py), and what sets one channel apart from another (channels.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter import logs
from callcenter.clock import Clock
from callcenter.domain.calls import Call
from callcenter.domain.policy import Milestone
from callcenter.engine import phones, repository
from callcenter.engine.desk import Desk
from callcenter.engine.outbox import rows
from callcenter.engine.outbox.channels import PAGES, rules_of
from callcenter.engine.outbox.delivery import did_not_arrive, paged_carer
from callcenter.engine.outbox.lanes import LANES, Due, Marks, Turns, lanes
from callcenter.engine.outbox.limits import (
    BUNDLE_SEPARATOR,
    TextLimit,
    Weighing,
    bundles,
    free_at,
    hold,
    recent_texts,
    weigh,
)
from callcenter.engine.outbox.reconcile import reconcile
from callcenter.engine.outbox.sender import (
    ChannelProgress,
    OutboxMessage,
    Receipt,
    Reconciler,
    Sender,
    SendError,
)
from callcenter.store import leases
from callcenter.store import models as m

log = logging.getLogger("callcenter.outbox")


def still_wanted(call: Call, guard: Mapping[str, Any]) -> bool:
    """Whether a queued effect should still go out, given the call as it is now."""
    carer_id = guard.get("carer_id")
    if carer_id is not None:
        assignment = call.assignment(int(carer_id))
        if assignment is None or not assignment.active or not call.is_open:
            return False
        # A ring about a page: only while the carer has not answered it yet.
        state = guard.get("assignment")
        if state is not None and assignment.state.value != state:
            return False
    unless = guard.get("unless")
    return not (unless is not None and call.reached(Milestone(unless)))


def retry_delay(attempt: int, cap_s: float) -> timedelta:
    """Wait before attempt ``attempt + 1``: 5 s, 10 s, 20 s, ... up to ``cap_s``."""
    return timedelta(seconds=min(cap_s, 5.0 * 2 ** max(0, attempt - 1)))


def logged(message: OutboxMessage) -> contextlib.AbstractContextManager[None]:
    """Records logged inside carry the message's call, household and carer
    (``logs.bound``)."""
    return logs.bound(
        call_id=message.call_id,
        household=message.household or None,
        carer=repository.carer_code(message.recipient),
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _about_its_message(
    method: Callable[Concatenate[OutboxRelay, OutboxMessage, _P], Coroutine[Any, Any, _R]],
) -> Callable[Concatenate[OutboxRelay, OutboxMessage, _P], Coroutine[Any, Any, _R]]:
    """A relay's work on one message, logged as about its call, household and carer."""

    @functools.wraps(method)
    async def logged_work(
        relay: OutboxRelay, message: OutboxMessage, /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R:
        with logged(message):
            return await method(relay, message, *args, **kwargs)

    return logged_work


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
        self._marks = Marks()  # sent rows being marked so (drain)
        self._turns = Turns()
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

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        """Deliver until stop(), waking on new rows and when a retry falls due; and be
        the desk's page courier meanwhile (when it has a sender for pages)."""
        wake = self._desk.outbox_changed
        if PAGES in self._senders:
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
            await self._marks.written()

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
                PAGES,
                page.recipient,
                page.address,
                page.body,
                1,
                household,
                page.carer_id,
            )
            # Logged as about its own call and carer, not as the decision's caller.
            sending = asyncio.create_task(
                self._send_handed(message), context=leases.fresh_context()
            )
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
            failures = await self._marks.written()
        if failures:
            raise failures[0]
        return settled

    def _mark_sent(self, message: OutboxMessage, receipt: Receipt | None) -> None:
        """Mark ``message`` sent, without holding up its lane (see ``drain``)."""
        self._marks.start(message.id, self._settle(message, None, receipt))

    async def _drain(self) -> int:
        settled = 0

        async def lane(waiting: list[Due], recent: list[datetime] | None) -> int:
            # Every phone's lane at once: their claims share the transactions waiting for
            # the write turn together (Desk.perform_together), and only the sends wait
            # for one of the ``calls.outbox_lanes`` places. With each lane claiming and
            # sending in turn, a storm's pages had waited a write turn per 16 of them.
            address = waiting[0].address
            if self._turns.busy(address):
                recent = None  # a page is out to it: weigh the rest after it
            async with self._turns.of(address):
                return await self._deliver_lane(waiting, recent)

        while self._senders and not self._stopping.is_set():
            due = await rows.due_rows(self._engine, self.channels, self._clock.now())
            # Each phone (or device) in its own lane: its rows in order, one after
            # another, so two texts to one carer never overtake each other; different
            # lanes at the same time, so one slow send or one wait for the database does
            # not hold up every other carer's page behind it.
            by_phone = lanes(due)
            # What each phone was sent lately, read for all of them at once.
            recent: dict[tuple[str, str], list[datetime]] = {}
            for channel in {channel for channel, _ in by_phone}:
                limit = self._limit_of(channel)
                if limit is not None:
                    phones_due = [address for c, address in by_phone if c == channel]
                    found = await recent_texts(
                        self._engine, channel, phones_due, limit, self._clock.now()
                    )
                    recent |= {(channel, address): sent for address, sent in found.items()}
            done = await asyncio.gather(
                *(
                    lane(waiting, recent.get(key, []) if self._limit_of(key[0]) else None)
                    for key, waiting in by_phone.items()
                ),
                return_exceptions=True,
            )
            settled += sum(n for n in done if isinstance(n, int))
            failures = [e for e in done if isinstance(e, BaseException)]
            if failures:
                raise failures[0]  # after every lane has finished: none runs on alone
            if self._stopping.is_set():
                return settled  # the rest stays pending for the next start
            if len(due) < rows.BATCH:
                break
        return settled

    def _limit_of(self, channel: str) -> TextLimit | None:
        """The text limit ``channel``'s messages are weighed against, if any."""
        return self._text_limit if rules_of(channel).limited else None

    async def _deliver_lane(self, due: list[Due], recent: list[datetime] | None) -> int:
        """Deliver one phone's (or device's) due rows, in order; ``recent``: when the
        phone was last texted, as read before the lane began (None: not read)."""
        settled = 0
        handled: set[int] = set()
        for row in due:
            if self._stopping.is_set():
                break  # the rest stays pending for the next start
            if row.id in handled:
                continue
            limit = self._limit_of(row.channel)
            if limit is None or row.in_doubt:
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
                await self._marks.settled()  # (not taken: drain reports their errors)
                found = await recent_texts(
                    self._engine, row.channel, [row.address], limit, self._clock.now()
                )
                recent = found.get(row.address, [])
            settled += await self._deliver_limited(group, limit, recent)
        return settled

    async def _deliver_limited(
        self, group: list[Due], limit: TextLimit, recent: list[datetime]
    ) -> int:
        """Texts waiting for one phone, weighed against its limit (limits.weigh): one by
        one, held until the window frees, or bundled. ``recent``: when the phone's latest
        texts within the window went out, newest first."""
        weighing = weigh(limit, recent, len(group), paged=any(row.paged for row in group))
        if weighing is Weighing.EACH:
            settled = 0
            for row in group:
                settled += await self._deliver(row.id)
            return settled
        if weighing is Weighing.HOLD:
            until = free_at(limit, recent)
            await self._desk.perform_together(
                functools.partial(hold, item_ids=[row.id for row in group], until=until)
            )
            log.info(
                "outbox %s: %d text(s) to %s held until %s: it had %d texts in the last %g s "
                "(sms.recipient_limit); more than it then allows go out bundled into one",
                ", ".join(str(row.id) for row in group),
                len(group),
                group[0].address,
                until.isoformat(timespec="seconds"),
                len(recent),
                limit.window_s,
            )
            return 0
        return await self._deliver_bundle([row.id for row in group])

    async def _deliver_bundle(self, item_ids: list[int]) -> int:
        """Claim each row (under its own call's lock), then send those still wanted to
        their one phone as few texts as fit."""
        settled = 0
        claimed: list[OutboxMessage] = []
        for item_id in item_ids:
            await self._marks.of(item_id)
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
        return await rows.next_due(self._engine, self.channels)

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
        await self._desk.perform_together(functools.partial(rows.due_now, channel=channel, now=now))
        self._desk.outbox_changed.set()

    async def _claim(self, item_id: int) -> OutboxMessage | None:
        async def work(session: AsyncSession) -> OutboxMessage | None:
            call_id = await session.scalar(rows.CALL_OF_ITEM, {"p_item": item_id})
            call = None
            household = ""
            if call_id is not None:
                # The call's lock first (as every writer takes it), then the row itself,
                # read fresh under that lock: another instance may have claimed it.
                registry = await self._desk.district.registry()
                call = await repository.load(session, call_id, registry.carer_codes, lock=True)
                if call is not None and call.household_id in registry.households:
                    household = registry.households[call.household_id].code
            item = (await session.execute(rows.ITEM, {"p_item": item_id})).one_or_none()
            now = self._clock.now()
            # Another relay (a concurrent drain, another instance) may have claimed it
            # since it was selected: its next attempt is then no longer due.
            if item is None or item.state != m.OutboxState.PENDING or item.next_attempt_at > now:
                return None
            if call is not None and not still_wanted(call, item.guard):
                await session.execute(rows.SKIP, {"p_item": item_id, "p_now": now})
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
            rules = rules_of(item.channel)
            message = OutboxMessage(
                item.id,
                item.call_id,
                item.channel,
                item.recipient,
                item.address,
                item.body,
                item.attempts,
                household,
                paged_carer(item.guard) if rules.to_people else None,
            )
            broken = await phones.find(session, item.address) if rules.phone_marks else None
            if broken is not None:
                error = f"not sent: {broken.why()}"
                await session.execute(
                    rows.NOT_SENT, {"p_item": item_id, "p_now": now, "p_error": error}
                )
                with logged(message):
                    log.error("outbox %d (%s) not sent: %s", item.id, message.about, broken.why())
                self.failed += 1
                return replace(message, blocked=broken.why())
            in_doubt_since = item.sending_since
            attempt = item.attempts + 1
            await session.execute(
                rows.CLAIM,
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
        await self._marks.of(item_id)
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
        since = message.in_doubt_since
        if since is not None and isinstance(sender, Reconciler):
            looked = await reconcile(
                self._engine,
                sender,
                message,
                since,
                self._sending,
                repeat=rules_of(message.channel).repeat_in_doubt,
            )
            if looked.sent_as is not None:
                await self._settle(message, None, looked.sent_as)
                return 1
            if looked.wait is not None:
                await self._settle(message, looked.wait)
                return 0
            message, still_in_doubt = looked.message, looked.still_in_doubt
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

    @_about_its_message
    async def _move_on(self, message: OutboxMessage, error: SendError) -> None:
        """A message for people that can never arrive: its call moves on (delivery)."""
        if message.call_id is None or not rules_of(message.channel).to_people:
            return
        await did_not_arrive(
            self._desk,
            message.call_id,
            carer_id=message.carer_id,
            recipient=message.recipient,
            address=message.address,
            why=error.detail,
            about=f"outbox {message.id} ({message.about})",
            rings=rules_of(message.channel).rings,
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
        now = self._clock.now()
        self.progress.setdefault(message.channel, ChannelProgress()).note(now, error)
        values = rows.settled(error, receipt, now, still_in_doubt=still_in_doubt)
        phone_problem = error.phone_problem if error is not None else None
        if error is None:
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
            await rows.write_settled(session, message.id, values)
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
