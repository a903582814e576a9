"""The phones of the simulated week (:mod:`device_sim.week`): every call the fake Twilio
places rings someone, and what that person does happens at its virtual moment.

The fake Twilio runs each call on the week's ``ManualClock`` (a ring times out, a prompt
waits for a key, in virtual seconds); this side only decides what the people do, when,
and does it through the fake's phone hooks. Who answers which number, and how, is
:mod:`device_sim.phones` (carers, households, family contacts); operators pick their own
desk phone up when the bridge they asked for rings it, and hang up when their assessment
of the call is over. Once the week is over, :func:`voice_figures` reads what the calls
did from the call histories.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain import response_times
from callcenter.domain.call_types import CallType
from callcenter.domain.calls import Person, VoicePurpose
from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.store import models as m
from device_sim.field import Field, Operators, Pickup, Text
from device_sim.phones import Does, Phones, Reaction, Who

# The calls an operator rings the household about when they pick them up.
SPOKEN_WITH = frozenset({CallType.EMERGENCY, CallType.FALL})
# "Someone spoke with the household within 60 s" of the alarm (docs/simulator.md).
SPOKE_WITHIN_S = 60.0
# Operators on duty at most (day shift), each with a desk phone the bridge rings first.
_MOST_OPERATORS = 32

# What the week's queue is told to do with a phone: (what, the call, the person's plan).
PhoneStep = tuple[str, FakeCall, Reaction | None]


def operator_phone(index: int) -> str:
    """Operator ``index``'s desk phone (index 0 first), in a range no household uses."""
    return f"+8610{5550000 + index % _MOST_OPERATORS:07d}"


class WeekPhones:
    """The people's side of every call the fake placed. ``schedule(at, step)`` puts a
    step in the week's queue; the week hands it back to :meth:`act` when its time comes."""

    def __init__(
        self,
        twilio: FakeTwilio,
        phones: Phones,
        field: Field,
        operators: Operators,
        now: Callable[[], datetime],
        schedule: Callable[[datetime, PhoneStep], None],
    ) -> None:
        self._twilio = twilio
        self._phones = phones
        self._field = field
        self._operators = operators
        self._now = now
        self._schedule = schedule
        self._seen = 0
        # Each operator's desk phone (by number), busy on a call until then.
        self._operator_busy_until: dict[str, datetime] = {}

    def operator_for(self, pickup: Pickup) -> Person:
        """The operator who took a call, as the phone a bridge rings first; on the phone
        until their assessment of it is over."""
        phone = operator_phone(pickup.operator)
        self._operator_busy_until[phone] = max(pickup.free_at, self._now())
        return Person(f"operator:sim.{pickup.operator + 1}", "Operator", phone, "zh")

    def read_calls(self) -> None:
        """Calls the fake placed since last looked: each phone's person decides what to do
        about it (an operator picks their own phone up at once), and it happens when its
        moment comes."""
        placed = self._twilio.placed()
        now = self._now()
        for call in placed[self._seen :]:
            if call.to in self._operator_busy_until:
                after = timedelta(seconds=self._operators.own_phone_after())
                self._schedule(now + after, ("operator_answers", call, None))
                continue
            reaction = self._phones.ringing(call.to)
            if reaction is None:
                continue  # a supervisor's phone: nobody simulated
            if reaction.does is Does.NEVER:
                self._phones.done[reaction.who, "never"] += 1
                continue
            what = "pick_up" if reaction.does is Does.ANSWERS else "decline"
            self._schedule(now + timedelta(seconds=reaction.after_s), (what, call, reaction))
        self._seen = len(placed)

    async def act(self, step: PhoneStep) -> list[Text]:
        """Do ``step``; the texts a carer who accepted on the phone will send after it."""
        what, call, reaction = step
        if what == "hang_up":
            await self._hang_up(call)
        elif what == "operator_answers":
            await self._operator_answers(call)
        elif reaction is not None and what == "pick_up":
            await self._pick_up(call, reaction)
        elif reaction is not None and what == "decline":
            await self._decline(call, reaction)
        elif reaction is not None and what == "heard":
            return await self._heard(call, reaction)
        return []

    async def _operator_answers(self, call: FakeCall) -> None:
        if not await self._answer(call):
            return
        now = self._now()
        until = self._operator_busy_until.get(call.to, now)
        self._schedule(max(until, now + timedelta(seconds=1)), ("hang_up", call, None))

    async def _pick_up(self, call: FakeCall, reaction: Reaction) -> None:
        if not await self._answer(call):
            return
        self._phones.done[reaction.who, "answered"] += 1
        now = self._now()
        if reaction.who in (Who.CARER, Who.FAMILY):
            # The desk speaks once the phone is up (this moment's settling runs it).
            heard = now + timedelta(seconds=reaction.listen_s)
            self._schedule(heard, ("heard", call, reaction))
        elif reaction.talk_s is not None:  # a resident; a base unit never hangs up
            self._schedule(now + timedelta(seconds=reaction.talk_s), ("hang_up", call, None))

    async def _decline(self, call: FakeCall, reaction: Reaction) -> None:
        if call.status == "ringing":
            with contextlib.suppress(ValueError, TimeoutError):
                await self._twilio.reject(call.sid)
                self._phones.done[reaction.who, "refused"] += 1

    async def _heard(self, call: FakeCall, reaction: Reaction) -> list[Text]:
        """A carer or a family contact has listened to the desk: the key they press."""
        if call.ended:
            return []
        texts: list[Text] = []
        if not call.spoken:
            key = None  # nothing said: they hang up
        elif reaction.who is Who.FAMILY:
            key = "1" if reaction.confirms else None
        else:
            heard = " ".join(said.text for said in call.spoken)
            key, texts = self._field.rung(call.to, heard, self._now(), reaction.rng())
        if key is None or not self._twilio.listening(call.sid):
            await self._hang_up(call)
            return []
        self._phones.done[reaction.who, f"pressed {key}"] += 1
        with contextlib.suppress(ValueError, TimeoutError):
            await self._twilio.press(call.sid, key)
        return texts

    async def _hang_up(self, call: FakeCall) -> None:
        if call.status in ("ringing", "in-progress"):
            with contextlib.suppress(ValueError, TimeoutError):
                await self._twilio.hang_up(call.sid)

    async def _answer(self, call: FakeCall) -> bool:
        """Pick up the phone ``call`` rings; False when it stopped ringing first."""
        if call.status != "ringing":
            return False
        try:
            await self._twilio.answer(call.sid)
        except (ValueError, TimeoutError):
            return False
        return True


async def voice_figures(session: AsyncSession) -> dict[str, Any]:
    """The week's phone calls as the call histories hold them: operators ringing the
    households of emergencies and falls (their time on the phone, and how many spoke
    with someone there within 60 s of the alarm), carers rung about a page they had not
    accepted by text (how many picked up, and what they pressed), and family contacts
    rung when help was late."""
    alarms = {
        call_id: opened_at
        for call_id, opened_at in (
            await session.execute(
                select(m.Call.id, m.Call.opened_at).where(
                    m.Call.call_type.in_([t.value for t in SPOKEN_WITH]),
                    m.Call.cancel_reason.is_(None),
                )
            )
        ).all()
    }
    entries = (
        await session.execute(
            select(m.CallHistory.call_id, m.CallHistory.at, m.CallHistory.detail).where(
                m.CallHistory.action == "ring"
            )
        )
    ).all()
    operator_s = 0
    spoke_after: dict[int, float] = {}
    rung: Counter[str] = Counter()
    for call_id, at, detail in entries:
        purpose, status = detail.get("purpose"), detail.get("status")
        if purpose == VoicePurpose.BRIDGE and not detail.get("attempt"):
            # The operator's own leg: how long they were on the phone.
            operator_s += int(detail.get("duration_s") or 0)
        elif purpose == VoicePurpose.BRIDGE and status == "in-progress" and call_id in alarms:
            after = (at - alarms[call_id]).total_seconds()
            spoke_after[call_id] = min(after, spoke_after.get(call_id, after))
        elif purpose in (VoicePurpose.PAGE, VoicePurpose.FAMILY):
            if status in ("ringing", "in-progress"):
                rung[f"{purpose}_{status}"] += 1
            elif status == "key":
                rung[f"{purpose}_key_{detail.get('key')}"] += 1
    bridges = await session.scalar(
        select(func.count())
        .select_from(m.CallHistory)
        .where(m.CallHistory.action == "call_household")
    )
    within = sum(1 for s in spoke_after.values() if s <= SPOKE_WITHIN_S)
    return {
        "operator_rings": int(bridges or 0),
        "operator_phone_minutes": round(operator_s / 60, 1),
        "households_spoken_with": len(spoke_after),
        "spoken_within_60s": response_times.share(within, len(alarms)),
        "spoken_after_p50_s": response_times.nearest_rank(list(spoke_after.values()), 50),
        "carers_rung": rung["page_ringing"],
        "carers_picked_up": rung["page_in-progress"],
        "carers_accepted_by_voice": rung["page_key_1"],
        "carers_declined_by_voice": rung["page_key_2"],
        "family_rung": rung["family_ringing"],
        "family_confirmed": rung["family_key_1"],
    }
