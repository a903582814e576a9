"""The people in the loop: carers who read their dispatch texts and answer from the
field, and the operators at the desk who pick calls up.

Both are plain decision-makers: told what reached them and when, they say what they will
do and when, drawing human-like delays from a seeded random source. The simulator on
virtual time (:mod:`device_sim.week`) delivers what they say.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp

from callcenter.clock import Clock
from callcenter.domain.geo import Place, Transport, travel_time_s
from callcenter.fake_twilio import FakeTwilio
from device_sim.demo_district import DemoDistrict

_log = logging.getLogger("device_sim.field")

# A dispatch text offers the answer codes "{call}a" (accept) and "{call}d" (decline), in
# every language the call centre writes; a carer reads the call number off them (a code
# standing alone: not part of the link's token or an address).
_OFFER = re.compile(r"(?<![\w/-])(\d+)a(?![\w/-])")
_HOUSEHOLD = re.compile(r"\b(H\d{4,})\b")
# A stand-down says the carer is no longer needed, in English or Chinese.
_STAND_DOWN = re.compile(r"(?:Call|呼叫)\s*(\d+)\s*[:：]\s*(?:stand down|无需前往)")
# The desk ringing about a page says the call's number first: "Call 12, …" / "呼叫12，…".
_RUNG_ABOUT = re.compile(r"(?:Call|呼叫)\s*(\d+)")


@dataclass(frozen=True)
class FieldProfile:
    """How carers answer. Times in seconds."""

    # Seconds from a page reaching the phone to the answer: lognormal around the median.
    answer_median_s: float = 35.0
    answer_spread: float = 0.6
    # Pages a carer never answers (phone in a bag, driving, asleep on a night shift).
    no_answer_share: float = 0.05
    # Carers who also text "on the way" when they set off.
    tells_on_the_way_share: float = 0.6
    # Real travel against the call centre's estimate (traffic, stairs, finding the door).
    traffic: tuple[float, float] = (0.85, 1.35)
    on_scene_s: tuple[float, float] = (900.0, 2700.0)
    # Stations whose carers are all out (on other work): they decline every page.
    busy_stations: frozenset[str] = frozenset()
    # A carer whose text got no confirmation texts again after this long.
    retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("no_answer_share", "tells_on_the_way_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share, 0..1")
        if self.answer_median_s <= 0 or self.on_scene_s[0] <= 0:
            raise ValueError("answer and on-scene times must be positive")


@dataclass(frozen=True)
class Text:
    """Something a carer will text back, and when."""

    at: datetime
    phone: str
    body: str
    call_id: int


@dataclass
class FieldCarer:
    """One carer with a phone: free, or on one call."""

    code: str
    phone: str
    station: str
    place: Place
    transport: Transport
    on_call: int | None = None
    # Texts planned for the current call, dropped on a stand-down.
    planned: list[Text] = field(default_factory=list)
    # Pages read and not yet answered by text (call -> household), newest last: what a
    # ring from the desk is about.
    waiting: dict[int, str] = field(default_factory=dict)
    # Pages answered with a key on the phone: their planned "Na"/"Nd" texts are not sent.
    keyed: set[int] = field(default_factory=set)
    pages: int = 0
    accepted: int = 0
    ignored: int = 0
    declined: int = 0
    # Rung by the desk about a page, picked up and a key pressed: 1 accepted, 2 declined.
    accepted_by_phone: int = 0
    declined_by_phone: int = 0


@dataclass(frozen=True)
class Page:
    """A dispatch text as the carer reads it."""

    call_id: int
    household: str


def between(low_high: tuple[float, float], rng: random.Random) -> float:
    """A uniform draw in ``(low, high)`` from ``rng.random()`` alone (stable for a seed)."""
    low, high = low_high
    return low + (high - low) * rng.random()


def read_text(body: str) -> tuple[list[Page], list[int]]:
    """The pages and stand-downs in one text (a bundle may hold several)."""
    households = _HOUSEHOLD.findall(body)
    offers = list(dict.fromkeys(int(n) for n in _OFFER.findall(body)))
    pages = [
        Page(call_id, households[i] if i < len(households) else "")
        for i, call_id in enumerate(offers)
    ]
    stand_downs = [int(n) for n in _STAND_DOWN.findall(body)]
    return pages, stand_downs


class Field:
    """Every carer of the district, deciding how to answer what reaches their phones."""

    def __init__(
        self,
        carers: Sequence[FieldCarer],
        homes: dict[str, Place],
        profile: FieldProfile,
        *,
        seed: int,
    ) -> None:
        self.profile = profile
        self.by_phone = {carer.phone: carer for carer in carers}
        self._homes = homes
        self._rng = random.Random(seed)

    def _answer_delay(self) -> timedelta:
        p = self.profile
        seconds = p.answer_median_s * math.exp(p.answer_spread * self._rng.gauss(0.0, 1.0))
        # Nobody answers in no time, and a page is not left for hours.
        return timedelta(seconds=min(max(seconds, p.answer_median_s / 7), p.answer_median_s * 17))

    def received(self, phone: str, body: str, at: datetime) -> list[Text]:
        """A text reached ``phone`` at ``at``: what its carer will text back, and when."""
        carer = self.by_phone.get(phone)
        if carer is None:
            return []  # a supervisor, a family member or the desk phone: nobody simulated
        pages, stand_downs = read_text(body)
        replies: list[Text] = []
        for call_id in stand_downs:
            carer.waiting.pop(call_id, None)
            if carer.on_call == call_id:
                carer.on_call = None
                carer.planned = []
        for page in pages:
            replies.extend(self._paged(carer, page, at))
        return replies

    def _paged(self, carer: FieldCarer, page: Page, at: datetime) -> list[Text]:
        carer.pages += 1
        n = page.call_id
        carer.waiting[n] = page.household
        if carer.station in self.profile.busy_stations or carer.on_call not in (None, n):
            carer.declined += 1
            return [Text(at + self._answer_delay(), carer.phone, f"{n}d", n)]
        if self._rng.random() < self.profile.no_answer_share:
            carer.ignored += 1
            return []
        carer.accepted += 1
        accept = at + self._answer_delay()
        plan = [Text(accept, carer.phone, f"{n}a", n)]
        plan += self._set_off(carer, n, page.household, accept, self._rng)
        carer.planned = plan
        return plan

    def _set_off(
        self, carer: FieldCarer, n: int, household: str, accept: datetime, rng: random.Random
    ) -> list[Text]:
        """The carer, having accepted call ``n`` at ``accept``, goes: the texts on the way
        (maybe), on scene and done."""
        carer.on_call = n
        home = self._homes.get(household)
        trip = 600.0 if home is None else travel_time_s(carer.place, home, carer.transport)
        arrive = accept + timedelta(seconds=trip * between(self.profile.traffic, rng))
        done = arrive + timedelta(seconds=between(self.profile.on_scene_s, rng))
        plan = []
        if rng.random() < self.profile.tells_on_the_way_share:
            plan.append(Text(accept + timedelta(seconds=20), carer.phone, f"{n}o", n))
        plan += [Text(arrive, carer.phone, f"{n}s", n), Text(done, carer.phone, f"{n}r", n)]
        return plan

    def rung(
        self, phone: str, heard: str, at: datetime, rng: random.Random
    ) -> tuple[str | None, list[Text]]:
        """The carer at ``phone`` picked up the desk's call and heard ``heard``: the key
        they press ("1" accept, "2" decline, None when they cannot tell which page it is
        about) and the texts they will send after it, drawn from ``rng``.

        They answer as they would the text: a carer on another call, or of a busy
        station, declines; one who meant to accept presses 1; one who had not read the
        page (or not yet answered it) and is free accepts now and sets off."""
        carer = self.by_phone[phone]
        said = _RUNG_ABOUT.search(heard)
        n = int(said.group(1)) if said else next(reversed(carer.waiting), None)
        if n is None:
            return None, []
        households = _HOUSEHOLD.findall(heard)
        household = carer.waiting.get(n) or (households[0] if households else "")
        carer.keyed.add(n)
        carer.waiting.pop(n, None)
        if carer.station in self.profile.busy_stations or carer.on_call not in (None, n):
            carer.declined_by_phone += 1
            return "2", []
        carer.accepted_by_phone += 1
        if carer.on_call == n:
            return "1", []  # the rest of the plan stands; the accepting text is not sent
        plan = self._set_off(carer, n, household, at, rng)
        carer.planned = plan
        return "1", plan

    def still_meant(self, text: Text) -> bool:
        """Whether the carer still sends ``text`` (not stood down since it was planned)."""
        carer = self.by_phone[text.phone]
        if text.call_id in carer.keyed and text.body[-1:] in ("a", "d"):
            return False  # answered with a key on the phone already
        if text.body.endswith("d"):
            return True
        return carer.on_call == text.call_id and text in carer.planned

    def replace(self, text: Text, later: Text) -> None:
        """``text`` will be sent again as ``later`` (no confirmation came)."""
        carer = self.by_phone[text.phone]
        carer.planned = [later if planned == text else planned for planned in carer.planned]

    def sent(self, text: Text) -> None:
        """``text`` went out; a closing text frees its carer."""
        carer = self.by_phone[text.phone]
        if text.body[-1:] in ("a", "d"):
            carer.waiting.pop(text.call_id, None)
        if text.body.endswith("r") and carer.on_call == text.call_id:
            carer.on_call = None
            carer.planned = []
            # The carer is now at the household; the call centre also places them there.


@dataclass(frozen=True)
class DeskProfile:
    """The operators at the desk: how many per shift and how they pick calls up."""

    day_operators: int = 3  # 07:00-19:00 local
    night_operators: int = 2
    pickup_s: tuple[float, float] = (4.0, 25.0)
    # From picking a call up to being free again; on an emergency or a fall the operator
    # rings the household (when the centre places calls) and is on the phone until then.
    assess_s: tuple[float, float] = (40.0, 150.0)
    # An operator who asked the desk to ring the household picks their own phone up.
    own_phone_s: tuple[float, float] = (1.0, 4.0)
    # A device's trouble (low battery, offline) is closed once a visit fixed it.
    device_job_s: tuple[float, float] = (1800.0, 5400.0)


class Operators:
    """The desk: a call is picked up by the first operator free, after a human delay."""

    def __init__(self, profile: DeskProfile, *, seed: int) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._free_at: list[datetime] = []

    def pick_up(self, appeared: datetime, hour: int) -> datetime:
        """When the first operator free acknowledges a call that appeared at ``appeared``."""
        return self.take(appeared, hour).at

    def take(self, appeared: datetime, hour: int) -> Pickup:
        """Which operator (the first free) acknowledges a call that appeared at
        ``appeared``, when, and until when they are busy with it."""
        p = self.profile
        on_duty = p.day_operators if 7 <= hour < 19 else p.night_operators
        while len(self._free_at) < on_duty:
            self._free_at.append(appeared)
        index = min(range(on_duty), key=lambda i: self._free_at[i])
        start = max(appeared, self._free_at[index])
        acknowledged = start + timedelta(seconds=between(p.pickup_s, self._rng))
        self._free_at[index] = acknowledged + timedelta(seconds=between(p.assess_s, self._rng))
        return Pickup(index, acknowledged, self._free_at[index])

    def own_phone_after(self) -> float:
        """Seconds an operator takes to pick up their own phone when the desk rings it."""
        return between(self.profile.own_phone_s, self._rng)


@dataclass(frozen=True)
class Pickup:
    """An operator (by index, 0 first) taking a call at ``at``, busy with it until
    ``free_at``."""

    operator: int
    at: datetime
    free_at: datetime


def district_field(district: DemoDistrict, profile: FieldProfile, *, seed: int) -> Field:
    """The carers of a demo district, each at their station, as a :class:`Field`."""
    stations = {s.code: Place(s.lat, s.lon) for s in district.stations}
    carers = [
        FieldCarer(c.code, c.phone, c.station, stations[c.station], Transport(c.transport))
        for c in district.carers
    ]
    homes = {h.code: Place(h.lat, h.lon) for h in district.households}
    return Field(carers, homes, profile, seed=seed)


async def text_back(
    twilio: FakeTwilio, field: Field, clock: Clock, text: Text, stop: asyncio.Event
) -> None:
    """A carer on the wall clock sends ``text`` through the fake Twilio when its time
    comes (unless stood down meanwhile, or ``stop``), and again a little later when the
    server did not confirm it."""
    await clock.sleep_until(text.at, stop)
    if stop.is_set() or not field.still_meant(text):
        return
    try:
        status, _answer = await twilio.reply(text.phone, text.body)
    except aiohttp.ClientError as error:
        status = 0
        _log.warning("carer %s could not text %r: %s", text.phone, text.body, error)
    if status == 200:
        field.sent(text)
        return
    later = Text(
        clock.now() + timedelta(seconds=field.profile.retry_after_s),
        text.phone,
        text.body,
        text.call_id,
    )
    field.replace(text, later)
    await text_back(twilio, field, clock, later, stop)


async def answer_pages(twilio: FakeTwilio, field: Field, clock: Clock, stop: asyncio.Event) -> None:
    """Carers on the wall clock (the demo): read each text the fake Twilio takes, and
    answer it through the fake when the time comes, until ``stop``."""
    async with asyncio.TaskGroup() as replies:
        while not stop.is_set():
            try:
                message = await twilio.next_message(timeout=1.0)
            except TimeoutError:
                continue
            for text in field.received(message.to, message.body, clock.now()):
                replies.create_task(
                    text_back(twilio, field, clock, text, stop),
                    name=f"device_sim.field.{text.phone}",
                )
