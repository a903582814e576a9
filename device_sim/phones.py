"""The people in the field on the phone: carers the desk rings about a page they have not
answered, households the desk rings (the base unit's SIM, a landline, residents' mobiles)
and family contacts rung when help is late.

Each call the fake Twilio places rings a phone; whoever has that number answers as people
do: some never pick up, some after a few rings, some decline it (the call ends busy). What
a person does on one call is drawn from a random source of its own, seeded by the seed,
the number and how many times that number has been rung, so a seed gives every person the
same choices whatever order calls come in. A carer who picks up waits for the desk's
summary and presses 1 or 2 as they would have answered the text (:meth:`Field.rung`).

:func:`answer_calls` plays them on the wall clock through the fake Twilio's phone hooks
(the demo), as :func:`device_sim.field.answer_pages` plays their texts.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from callcenter.clock import Clock
from callcenter.fake_twilio import FakeCall, FakeTwilio
from device_sim.demo_district import DemoDistrict
from device_sim.field import Field, Text, between, text_back

log = logging.getLogger("device_sim.phones")

# How often a person on a call looks whether something was said, or the call ended.
_LOOK_EVERY = timedelta(seconds=0.1)


class Who(enum.StrEnum):
    """Whose phone a number is; the household's kinds are the register's."""

    CARER = "carer"
    UNIT = "unit"  # the base unit's speech SIM: answers hands-free
    LANDLINE = "landline"
    MOBILE = "mobile"  # a resident's own mobile
    FAMILY = "family"


class Does(enum.StrEnum):
    """What a person does when their phone rings."""

    NEVER = "never"  # lets it ring out: no-answer after the call's timeout
    REFUSES = "refuses"  # declines it after a few rings: busy
    ANSWERS = "answers"


@dataclass(frozen=True)
class Answering:
    """How one kind of phone is answered: shares of calls never picked up and declined,
    and the seconds it rings before the person picks up (or declines)."""

    never_share: float
    refuse_share: float
    after_s: tuple[float, float]

    def __post_init__(self) -> None:
        if min(self.never_share, self.refuse_share) < 0 or (
            self.never_share + self.refuse_share > 1
        ):
            raise ValueError("never_share and refuse_share are shares, together at most 1")
        _check_range("after_s", self.after_s)


def _check_range(name: str, low_high: tuple[float, float]) -> None:
    low, high = low_high
    if not 0 <= low <= high:
        raise ValueError(f"{name} is (low, high) seconds with 0 <= low <= high")


@dataclass(frozen=True)
class PhoneProfile:
    """How the field answers the phone. Times in seconds, on the wall clock."""

    # Carers rung about a page: a phone in a bag, a carer driving who rejects the call.
    carer: Answering = Answering(never_share=0.1, refuse_share=0.1, after_s=(3.0, 15.0))
    # The base unit answers hands-free after a ring or two.
    unit: Answering = Answering(never_share=0.0, refuse_share=0.0, after_s=(4.0, 9.0))
    # Nobody near the landline; a resident's mobile on another call (busy).
    landline: Answering = Answering(never_share=0.3, refuse_share=0.0, after_s=(6.0, 20.0))
    mobile: Answering = Answering(never_share=0.15, refuse_share=0.2, after_s=(3.0, 15.0))
    family: Answering = Answering(never_share=0.25, refuse_share=0.05, after_s=(4.0, 18.0))
    # Family contacts who, having heard the message, press 1 to confirm it.
    family_confirms_share: float = 0.8
    # From the desk's message heard to the key pressed (the fake says it at once).
    listen_s: tuple[float, float] = (1.5, 5.0)
    # How long a person who picked up waits for the desk to say something.
    prompt_wait_s: float = 20.0
    # A person (not a base unit) still on the line this long after picking up hangs up.
    talk_s: tuple[float, float] = (60.0, 240.0)

    def __post_init__(self) -> None:
        if not 0 <= self.family_confirms_share <= 1:
            raise ValueError("family_confirms_share is a share, 0..1")
        _check_range("listen_s", self.listen_s)
        _check_range("talk_s", self.talk_s)
        if self.prompt_wait_s <= 0:
            raise ValueError("prompt_wait_s must be positive")

    def answering(self, who: Who) -> Answering:
        return {
            Who.CARER: self.carer,
            Who.UNIT: self.unit,
            Who.LANDLINE: self.landline,
            Who.MOBILE: self.mobile,
            Who.FAMILY: self.family,
        }[who]


@dataclass(frozen=True)
class Reaction:
    """What one person does about one call, decided when it rings."""

    who: Who
    does: Does
    after_s: float  # rung this long before picking up or declining
    listen_s: float  # hears the desk this long before pressing a key
    confirms: bool  # a family contact presses 1
    talk_s: float | None  # hangs up this long after picking up (None: a base unit, never)
    seed: str  # the call's own random source, for what follows (a carer's trip)

    def rng(self) -> random.Random:
        return random.Random(f"{self.seed}:after")


def react(profile: PhoneProfile, who: Who, seed: str) -> Reaction:
    """What the person at a ``who`` phone does about a call, from the call's ``seed``
    alone. Every value is drawn whatever is done, so one choice never moves another."""
    rng = random.Random(seed)
    answering = profile.answering(who)
    roll = rng.random()
    after_s = between(answering.after_s, rng)
    listen_s = between(profile.listen_s, rng)
    confirms = rng.random() < profile.family_confirms_share
    talk_s = between(profile.talk_s, rng)
    if roll < answering.never_share:
        does = Does.NEVER
    elif roll < answering.never_share + answering.refuse_share:
        does = Does.REFUSES
    else:
        does = Does.ANSWERS
    return Reaction(
        who, does, after_s, listen_s, confirms, None if who == Who.UNIT else talk_s, seed
    )


class Phones:
    """Who answers which number, and what each did. ``households`` maps a household's
    number to its kind ("unit", "landline", "mobile", as the register's
    household_phones); ``family`` are family contacts' numbers; the carers are
    ``field``'s (none without one: their phones are left to whoever answers the fake's
    page). Any other number (an operator's) is nobody's here."""

    def __init__(
        self,
        profile: PhoneProfile,
        *,
        seed: int,
        field: Field | None = None,
        households: Mapping[str, str] | None = None,
        family: Iterable[str] = (),
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.field = field
        # Calls rung per number, and what was done about them (for logs and tests).
        self.rung: Counter[str] = Counter()
        self.done: Counter[tuple[Who, str]] = Counter()
        self._who: dict[str, Who] = {}
        kinds = (Who.UNIT, Who.LANDLINE, Who.MOBILE)
        for number, kind in (households or {}).items():
            if kind not in kinds:
                raise ValueError(
                    f"household number {number}: {kind!r} is not unit, landline or mobile"
                )
            self._who[number] = Who(kind)
        self._who.update((number, Who.FAMILY) for number in family)
        if field is not None:
            self._who.update((phone, Who.CARER) for phone in field.by_phone)

    def who(self, number: str) -> Who | None:
        return self._who.get(number)

    def ringing(self, number: str) -> Reaction | None:
        """The phone at ``number`` rings: what its person will do (None: nobody here)."""
        who = self._who.get(number)
        if who is None:
            return None
        self.rung[number] += 1
        return react(self.profile, who, f"{self.seed}:{number}:{self.rung[number]}")


async def answer_calls(
    twilio: FakeTwilio, phones: Phones, clock: Clock, stop: asyncio.Event
) -> None:
    """The field's phones on the wall clock (the demo): each call the fake Twilio places
    to a number in ``phones`` is answered, declined or left ringing as its person does,
    through the fake's hooks, until ``stop``. Other calls are left alone."""
    async with asyncio.TaskGroup() as calls:
        while not stop.is_set():
            try:
                call = await twilio.next_call(timeout=1.0)
            except TimeoutError:
                continue
            reaction = phones.ringing(call.to)
            if reaction is not None and reaction.does != Does.NEVER:
                calls.create_task(
                    _take(twilio, phones, call, reaction, clock, stop),
                    name=f"device_sim.phones.{call.sid}",
                )
            elif reaction is not None:
                phones.done[reaction.who, "never"] += 1
                log.info("%s %s lets call %s ring", reaction.who, call.to, call.sid)


async def _take(
    twilio: FakeTwilio,
    phones: Phones,
    call: FakeCall,
    reaction: Reaction,
    clock: Clock,
    stop: asyncio.Event,
) -> None:
    """One person and one call: picked up or declined after a few rings, then listened
    to, a key pressed where one is asked for, and hung up when the talk is over."""
    who = reaction.who
    try:
        await _wait(clock, reaction.after_s, stop)
        if stop.is_set() or call.ended:
            return
        if reaction.does == Does.REFUSES:
            await twilio.reject(call.sid)
            phones.done[who, "refused"] += 1
            log.info("%s %s declines call %s", who, call.to, call.sid)
            return
        await twilio.answer(call.sid)
        phones.done[who, "answered"] += 1
        texts: list[Text] = []
        if who in (Who.CARER, Who.FAMILY):
            key, texts = await _hear_and_choose(phones, call, reaction, clock, stop)
            log.info(
                "%s %s picked up call %s after %.0f s and %s",
                who,
                call.to,
                call.sid,
                reaction.after_s,
                f"pressed {key}" if key else "pressed nothing",
            )
            if key is None:
                await twilio.hang_up(call.sid)
                return
            phones.done[who, f"pressed {key}"] += 1
            await twilio.press(call.sid, key)
        else:
            log.info("%s %s picked up call %s", who, call.to, call.sid)
        if reaction.talk_s is not None:
            over = await _until(clock, stop, reaction.talk_s, lambda: call.ended)
            if not over and not stop.is_set():
                await twilio.hang_up(call.sid)
        for text in texts:  # a carer who accepted on the phone sets off
            assert phones.field is not None
            await text_back(twilio, phones.field, clock, text, stop)
    except (ValueError, TimeoutError) as ended:
        # The call ended first (canceled, rung out, hung up by the desk): nothing to do.
        log.debug("%s %s: call %s: %s", who, call.to, call.sid, ended)


async def _hear_and_choose(
    phones: Phones, call: FakeCall, reaction: Reaction, clock: Clock, stop: asyncio.Event
) -> tuple[str | None, list[Text]]:
    """Wait for the desk to speak, listen, and choose the key (None: hang up), with the
    texts a carer sends after it."""
    await _until(clock, stop, phones.profile.prompt_wait_s, lambda: bool(call.spoken) or call.ended)
    if not call.spoken:
        return None, []
    await _wait(clock, reaction.listen_s, stop)
    if reaction.who == Who.FAMILY:
        return ("1" if reaction.confirms else None), []
    assert phones.field is not None
    heard = " ".join(said.text for said in call.spoken)
    return phones.field.rung(call.to, heard, clock.now(), reaction.rng())


async def _wait(clock: Clock, seconds: float, stop: asyncio.Event) -> None:
    await clock.sleep_until(clock.now() + timedelta(seconds=seconds), stop)


async def _until(
    clock: Clock, stop: asyncio.Event, seconds: float, done: Callable[[], bool]
) -> bool:
    """Look every tenth of a second whether ``done``, for up to ``seconds``."""
    end = clock.now() + timedelta(seconds=seconds)
    while not done() and not stop.is_set() and clock.now() < end:
        await clock.sleep_until(min(end, clock.now() + _LOOK_EVERY), stop)
    return done()


def district_phones(
    district: DemoDistrict, profile: PhoneProfile, *, seed: int, field: Field | None
) -> Phones:
    """The demo district's phones: its carers' (through ``field``, when they answer),
    its family contacts' and its households' numbers."""
    households: dict[str, str] = {}
    for household in district.households:
        households.update((n.number, str(n.kind)) for n in household.phones)
    family = [c.phone for h in district.households for c in h.contacts]
    return Phones(profile, seed=seed, field=field, households=households, family=family)
