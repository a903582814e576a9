"""Click-to-call bridges as the desk keeps them (store's ``voice_bridges``): the ring to
the operator's own phone is an outbox voice row like any other ring; its bridge row says
what it is about (a call, or a welfare call ringing the resident), which try it is, how
it ended, and its recording's reference while one is kept (docs/voice.md).

A bridge on a call is asked for by the domain (``RingHousehold``, its ``PlaceCall``
written by the desk); its row here is made when the bridge first has something to keep.
A welfare call has no call of its own: its ring is written here, and a ring nobody
answered is rung again by writing the next try's row due later, which the outbox relay
places when its time comes (nothing else has to remember it).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.clock import Clock
from callcenter.domain.calls import Person, VoicePurpose
from callcenter.domain.messages import Message, MessageKind, render
from callcenter.domain.phones import HouseholdNumber
from callcenter.engine import repository
from callcenter.engine.voice import VoiceScript
from callcenter.engine.welfare import WelfareCallDoneError, WelfareCallNotFoundError
from callcenter.store import models as m
from callcenter.store.db import write_locked

log = logging.getLogger("callcenter.voice")

ANSWERED = "answered"
NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class WelfareRing:
    """A welfare call's ring, written: its outbox row, and the resident rung."""

    outbox_id: int
    welfare_id: int
    resident: str
    household_id: int
    household: str


def resident_first(numbers: list[HouseholdNumber], resident: str) -> list[HouseholdNumber]:
    """The household's numbers for ringing ``resident``: their own mobile (one labelled
    with their name) first, then the rest in the register's order."""
    theirs = [n for n in numbers if resident and n.label == resident]
    return theirs + [n for n in numbers if n not in theirs]


async def of_outbox(session: AsyncSession, outbox_id: int) -> m.VoiceBridge | None:
    """The bridge whose operator ring is outbox row ``outbox_id``, if it has one yet."""
    return (
        await session.execute(select(m.VoiceBridge).where(m.VoiceBridge.outbox_id == outbox_id))
    ).scalar_one_or_none()


async def kept(
    session: AsyncSession, outbox_id: int, call_id: int, household_id: int, now: datetime
) -> m.VoiceBridge:
    """The bridge row of a call's ring (outbox row ``outbox_id``), made now if it has none."""
    found = await of_outbox(session, outbox_id)
    if found is not None:
        return found
    bridge = m.VoiceBridge(
        outbox_id=outbox_id,
        call_id=call_id,
        household_id=household_id,
        try_number=1,
        created_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(bridge)
    except IntegrityError:  # made meanwhile by another webhook of the same bridge
        found = await of_outbox(session, outbox_id)
        assert found is not None
        return found
    return bridge


async def _write_ring(
    session: AsyncSession,
    operator: Person,
    script: VoiceScript,
    welfare_id: int,
    household_id: int,
    try_number: int,
    now: datetime,
    due: datetime,
) -> int:
    row = m.OutboxItem(
        call_id=None,
        channel=repository.VOICE,
        recipient=operator.label,
        address=operator.phone,
        body=script.body(),
        guard={},
        state=m.OutboxState.PENDING,
        attempts=0,
        created_at=now,
        next_attempt_at=due,
        last_error="",
    )
    session.add(row)
    await session.flush()
    session.add(
        m.VoiceBridge(
            outbox_id=row.id,
            welfare_id=welfare_id,
            household_id=household_id,
            try_number=try_number,
            created_at=now,
        )
    )
    await session.flush()
    return int(row.id)


async def ring_welfare(
    session: AsyncSession, welfare_id: int, operator: Person, now: datetime
) -> WelfareRing:
    """Write the ring of welfare call ``welfare_id`` to ``operator``'s phone (placed by
    the outbox once committed). WelfareCallNotFoundError, or WelfareCallDoneError when its
    outcome is recorded already."""
    found = (
        await session.execute(
            select(m.WelfareCall, m.Resident.name, m.Household.code)
            .join(m.Resident, m.Resident.id == m.WelfareCall.resident_id)
            .join(m.Household, m.Household.id == m.WelfareCall.household_id)
            .where(m.WelfareCall.id == welfare_id)
        )
    ).one_or_none()
    if found is None:
        raise WelfareCallNotFoundError(welfare_id)
    welfare, resident, household = found
    if welfare.state == m.WelfareState.DONE:
        assert welfare.done_by is not None and welfare.done_at is not None
        raise WelfareCallDoneError(welfare_id, welfare.done_by, welfare.done_at)
    said = Message(MessageKind.VOICE_BRIDGE_WELFARE, {"resident": resident, "household": household})
    script = VoiceScript(VoicePurpose.BRIDGE, operator.language, render(said, operator.language))
    outbox_id = await _write_ring(
        session, operator, script, welfare_id, welfare.household_id, 1, now, now
    )
    return WelfareRing(outbox_id, welfare_id, resident, welfare.household_id, household)


async def ring_again(
    session: AsyncSession, bridge: m.VoiceBridge, now: datetime, due: datetime
) -> int:
    """The next try of a welfare ring nobody answered, due at ``due``: the same operator
    rung with the same words. Its outbox row's id."""
    ring = await session.get(m.OutboxItem, bridge.outbox_id)
    assert ring is not None and bridge.welfare_id is not None
    operator = Person(ring.recipient, "", ring.address)
    script = VoiceScript.read(ring.body)
    return await _write_ring(
        session,
        operator,
        script,
        bridge.welfare_id,
        bridge.household_id,
        bridge.try_number + 1,
        now,
        due,
    )


async def settle(session: AsyncSession, bridge_id: int, result: str) -> None:
    """How the bridge ended (``ANSWERED`` or ``NO_ANSWER``), kept once."""
    await session.execute(
        update(m.VoiceBridge)
        .where(m.VoiceBridge.id == bridge_id, m.VoiceBridge.result.is_(None))
        .values(result=result)
    )


class RecordingStore(Protocol):
    """Where bridges' recordings are kept (Twilio: notify/voice.py)."""

    async def delete_recording(self, sid: str) -> None:
        """Delete recording ``sid`` (one already gone is no error); raises if it cannot."""
        ...


class RecordingKeeper:
    """The desk's housekeeping of recordings: once a bridge's recording has been kept
    ``voice.recording_retention_days``, it is deleted at Twilio and its reference removed
    from the call. Looks every ``every_s`` seconds; a deletion that fails is tried again."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock, store: RecordingStore, *, every_s: float = 3600.0
    ) -> None:
        self._engine = write_locked(engine)
        self._clock = clock
        self._store = store
        self._every = timedelta(seconds=every_s)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def reset(self) -> None:
        """Ready to run again after stop() (this server took the desk's lease again)."""
        self._stopping.clear()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.remove_expired()
            except Exception:
                log.exception("removing expired recordings failed; trying again later")
            await self._clock.sleep_until(self._clock.now() + self._every, self._stopping)

    async def remove_expired(self) -> int:
        """Delete every recording past its time and remove its reference; how many."""
        now = self._clock.now()
        async with AsyncSession(self._engine) as session:
            expired = (
                await session.execute(
                    select(m.VoiceBridge.id, m.VoiceBridge.recording_sid).where(
                        m.VoiceBridge.recording_sid.is_not(None),
                        m.VoiceBridge.recording_expires_at <= now,
                    )
                )
            ).all()
        removed = 0
        for bridge_id, sid in expired:
            try:
                await self._store.delete_recording(str(sid))
            except Exception as error:
                log.warning("recording %s could not be deleted (tried again later): %s", sid, error)
                continue
            async with AsyncSession(self._engine) as session, session.begin():
                await session.execute(
                    update(m.VoiceBridge)
                    .where(m.VoiceBridge.id == bridge_id)
                    .values(recording_sid=None, recording_url=None, recording_expires_at=None)
                )
            log.info("recording %s deleted: kept as long as voice.recording_retention_days", sid)
            removed += 1
        return removed
