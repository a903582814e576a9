"""A district on virtual time: households, broker, call centre, operators and carers
run together on one ``ManualClock``, so a week takes seconds and every run of a seed is
the same run.

What is real: the whole server-side stack (ingest's parsing, de-duplication and device
registry, the event follower, the desk and its policies, the durable timers, the outbox
relay, the SMS and voice webhooks) on a real database file, and the real ``twilio``
client texting and ringing a local fake Twilio, from which simulated carers read their
pages and through which they answer, by text or on the phone. The fake's phone calls run
on the same clock: a ring times out, a prompt waits for a key, in virtual seconds. What
is modelled: the MQTT broker (delivery is instant while it is up; devices hold their
events while they cannot reach it and publish them again, with the same ids, when they
can), the devices themselves, and the people: carers, operators (who ring the household
of every emergency and fall they pick up), residents and family answering their phones
(:mod:`device_sim.phones`).

Nothing runs in the background: the driver takes the next thing that happens (a device
event, a carer's text, a phone picked up or a key pressed, an operator picking a call
up, a timer, retry or ring timing out), moves the clock to it, lets it happen, and runs
the server's loops in burst mode, and the fake's calls until each waits on a person or
the clock, until nothing has anything left to do. Ground truth (what the devices sent)
is then compared with what the database holds.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.app import Running, assembled_server
from callcenter.broker import free_port
from callcenter.clock import ManualClock
from callcenter.config import Config
from callcenter.domain import response_times
from callcenter.domain.call_types import ALARM_TYPES, CallType
from callcenter.domain.calls import (
    Acknowledge,
    Actor,
    ActorKind,
    CallError,
    Outcome,
    Resolve,
    RingHousehold,
)
from callcenter.domain.events import EventKind
from callcenter.engine import reports
from callcenter.engine.outbox import OutboxMessage
from callcenter.fake_twilio import FakeTwilio
from callcenter.ingest.batch import Received
from callcenter.ingest.protocol import Channel, event_payload, status_payload, topic_for
from callcenter.ingest.service import Ingest
from callcenter.store import models as m
from callcenter.store.migrate import upgrade_async
from callcenter.web.sms_webhooks import INBOUND_PATH
from device_sim.demo_district import DemoDistrict, build_demo_district, seed_demo_district
from device_sim.device import event_id
from device_sim.field import (
    DeskProfile,
    FieldProfile,
    Operators,
    Pickup,
    Text,
    district_field,
)
from device_sim.households import (
    PROFILES,
    Happening,
    Home,
    HouseholdProfile,
    Planned,
    merge,
    plan_household_events,
    storm,
)
from device_sim.phones import PhoneProfile, district_phones
from device_sim.week_phones import SPOKEN_WITH, PhoneStep, WeekPhones, voice_figures

log = logging.getLogger("device_sim.week")

# Monday 23 November 2026, 00:00 in the district's time zone.
FIRST_MONDAY = datetime(2026, 11, 23)
# The broker notices a device that vanished without a word after 1.5 keepalives.
_WILL_AFTER_S = 90.0
# Devices come back after a broker outage spread over this many seconds (backoff).
_RECONNECT_SPREAD_S = 30.0
# Events published this shortly before the broker went down lost their PUBACK (the
# broker stored them, its acknowledgements never left): the device publishes them again
# after the outage, with the same id.
_UNACKED_WINDOW_S = 10.0
_OPERATOR = Actor(ActorKind.OPERATOR, "sim.operator")
# Calls the desk settles without sending a carer: a device's trouble, not a person's alarm.
_DESK_JOBS = frozenset(CallType) - ALARM_TYPES
_PRESSES = frozenset(
    {EventKind.EMERGENCY_PRESS, EventKind.FALL_DETECTED, EventKind.SERVICE_REQUEST}
)


@dataclass(frozen=True)
class Outage:
    """Part of the system away for a while: the broker, or the whole server process."""

    what: Literal["broker", "server"]
    at_s: float  # seconds after the start
    for_s: float


@dataclass(frozen=True)
class StormSpec:
    """A share of households pressing within a short window (power cut, earth tremor)."""

    at_s: float
    share: float = 0.1
    within_s: float = 60.0


@dataclass(frozen=True)
class WeekOptions:
    """One run. The defaults are the district's week: 900 households, 60 carers in 9
    stations, seven days from Monday 00:00."""

    seed: int = 2026
    households: int = 900
    carers: int = 60
    staffed: tuple[str, ...] | None = None  # station codes with carers; None: all nine
    days: float = 7.0
    # Local start; Monday 23 November 2026 00:00 when None.
    start: datetime | None = None
    profile: HouseholdProfile = PROFILES["district"]
    field_profile: FieldProfile = field(default_factory=FieldProfile)
    desk_profile: DeskProfile = field(default_factory=DeskProfile)
    phone_profile: PhoneProfile = field(default_factory=PhoneProfile)
    # Whether the centre places phone calls ([voice] enabled): carers rung about pages
    # not accepted, families rung when help is late, operators ringing households.
    voice: bool = True
    storm: StormSpec | None = None
    outages: tuple[Outage, ...] = ()
    # After the last press: how long calls may take to end before the run stops.
    settle_s: float = 4 * 3600.0
    # A migrated, empty database to use; by default a SQLite file in a temporary
    # directory (``work_dir`` if given, kept afterwards).
    database_url: str | None = None
    work_dir: Path | None = None
    # Told a line of progress every simulated ``progress_every_s``.
    progress: Callable[[str], None] | None = None
    progress_every_s: float = 6 * 3600.0

    def problems(self) -> list[str]:
        found = []
        if self.days <= 0:
            found.append("days must be above 0")
        if self.households < 1:
            found.append("at least 1 household")
        for outage in self.outages:
            if outage.for_s <= 0 or outage.at_s < 0:
                found.append(f"an outage of the {outage.what} needs a start >= 0 and a length > 0")
        return found


@dataclass
class EventAccount:
    """Ground truth against the event log."""

    generated: int = 0
    delivered: int = 0  # handed to ingest at least once
    pending: int = 0  # still in a device's outbox at the end (device away)
    stored_once: int = 0
    lost: int = 0  # delivered, yet not in the log
    doubled: int = 0  # in the log more than once
    republished: int = 0  # published again after a lost acknowledgement
    dead_letters: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass
class WeekResult:
    """What a run did, measured from the database and the ground truth."""

    options: WeekOptions
    started_at: datetime
    ended_at: datetime
    wall_s: float
    events: EventAccount
    calls: dict[str, Any]
    report: dict[str, Any]
    utilisation: dict[str, float]
    field: dict[str, int]
    happenings: dict[str, int]
    database_url: str
    # The phone calls, from the database (docs/simulator.md, "Voice").
    voice: dict[str, Any]

    @property
    def answered_60s_share(self) -> float | None:
        share: float | None = self.report["district"]["acknowledged_within_60s"]["share"]
        return share

    @property
    def on_scene_15min_share(self) -> float | None:
        """Emergencies (presses and falls) with a carer on scene within the 15-minute
        circle, of those reached or overdue."""
        share: float | None = self.calls["emergency_on_scene_within_circle"]["share"]
        return share

    def summary(self) -> dict[str, Any]:
        """The run's headline figures, JSON-ready."""
        district = self.report["district"]
        return {
            "households": self.options.households,
            "carers": self.options.carers,
            "staffed": list(self.options.staffed or ()) or "all",
            "days": self.options.days,
            "seed": self.options.seed,
            "week_seconds": round(self.wall_s, 2),
            "virtual_hours": round((self.ended_at - self.started_at).total_seconds() / 3600, 2),
            "events_generated": self.events.generated,
            "events_stored": self.events.stored_once,
            "events_lost": self.events.lost,
            "events_doubled": self.events.doubled,
            "events_pending": self.events.pending,
            "calls": self.calls["opened"],
            "calls_open_unescalated": self.calls["open_unescalated"],
            "answered_60s_share": self.answered_60s_share,
            "on_scene_15min_share": self.on_scene_15min_share,
            "on_scene_p90_s": self.calls["emergency_on_scene_p90_s"],
            "escalated_calls": district["escalations"]["calls"],
            "utilisation": self.utilisation,
            "voice": self.voice,
        }


class SimulationError(Exception):
    """A run that cannot start (bad options); the message says what to change."""


@dataclass(order=True)
class _Due:
    at: datetime
    seq: int
    what: str = field(compare=False)
    item: Any = field(compare=False, default=None)


@dataclass
class _Device:
    serial: str
    household: str
    away: bool = False
    counter: int = 0
    battery: int = 95
    # Events not yet delivered: (serial, id) key, message.
    held: list[tuple[tuple[str, str], Received]] = field(default_factory=list)


class VirtualDevices:
    """The device-command channel on virtual time: a command reaches its device at once,
    and the simulated devices do nothing with it (real ones light a LED)."""

    channel = "device"

    async def send(self, message: OutboxMessage) -> str | None:
        return None


def _config(database_url: str, twilio: FakeTwilio, *, voice: bool, web_port: int) -> Config:
    settings: dict[str, Any] = {
        "database": {"url": database_url},
        # An external broker is named, so none is started; nothing connects to it.
        # (No device logins either: no device connects on virtual time.)
        "broker": {
            "host": "127.0.0.1",
            "port": 1,
            "client_id": "virtual-week",
            "device_logins": "none",
        },
        # No heartbeats on virtual time: devices go offline by their last will.
        "ingest": {"heartbeat_interval_s": 365 * 86400.0},
        "sms": {
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "from_number": twilio.number,
            "api_base_url": twilio.base_url,
            "recipient_limit": 0,
        },
        # One port for the whole run: Twilio's callbacks about a call placed before a
        # server outage reach the server that comes back.
        "web": {"port": web_port},
        "voice": {"enabled": voice},
        # One outbox lane: texts reach the fake Twilio in the same order on every run of
        # a seed (lanes only save wall-clock waits, which virtual time does not have).
        "calls": {"outbox_lanes": 1},
        # The simulated operators take calls by hand and watch no board: with offers, every
        # alarm would go to everyone (and the supervisors) at once (docs/calls.md, "Offers").
        "desk": {"offers": False},
    }
    return Config.model_validate(settings)


class VirtualWeek:
    """One run: build with options, then ``await run()``."""

    def __init__(self, options: WeekOptions) -> None:
        problems = options.problems()
        if problems:
            raise SimulationError("; ".join(problems))
        self.options = options
        self.district: DemoDistrict = build_demo_district(
            options.seed, options.households, options.carers, options.staffed
        )
        self._queue: list[_Due] = []
        self._seq = itertools.count()
        self._rng = random.Random(options.seed * 31 + 7)
        self._boot = f"w{options.seed}"
        self._devices: dict[str, _Device] = {}
        for home in self.district.households:
            for device in home.devices:
                self._devices[device.serial] = _Device(device.serial, home.code)
        self._truth: dict[tuple[str, str], tuple[str, Happening]] = {}
        self._delivered: set[tuple[str, str]] = set()
        self._republished = 0
        self._recent: list[tuple[datetime, str, tuple[str, str], Received]] = []
        self._happenings: Counter[str] = Counter()
        self._inbox: list[Received] = []
        self._broker_queue: list[Received] = []
        self._broker_up = True
        self._server: Running | None = None
        self._server_stack: contextlib.AsyncExitStack | None = None
        self._texts_read = 0
        self._seen_calls: set[int] = set()
        self._feed: Any = None
        self._pending_acks: list[int] = []
        self._sent_replies = 0
        self._retried_replies = 0
        self._events_new = False
        self._storm: tuple[datetime, set[str]] | None = None
        self._timers_unknown = True
        self._next_timer: datetime | None = None
        self._next_send: datetime | None = None
        # Which operator picks each call up (the one who rings its household).
        self._pickups: dict[int, Pickup] = {}

    # -- the queue of things that will happen -----------------------------------------

    def _at(self, at: datetime, what: str, item: Any = None) -> None:
        heapq.heappush(self._queue, _Due(at, next(self._seq), what, item))

    # -- running ------------------------------------------------------------------

    async def run(self) -> WeekResult:
        options = self.options
        wall = time.perf_counter()
        with contextlib.ExitStack() as cleanup:
            if options.database_url is None:
                work = options.work_dir or Path(
                    cleanup.enter_context(tempfile.TemporaryDirectory(prefix="week-"))
                )
                work.mkdir(parents=True, exist_ok=True)
                url = f"sqlite+aiosqlite:///{work / 'week.db'}"
                await upgrade_async(url)
            else:
                url = options.database_url
            await seed_demo_district(
                url,
                options.seed,
                households=options.households,
                carers=options.carers,
                staffed=options.staffed,
            )
            zone = ZoneInfo(Config.model_validate({}).district.timezone)
            local_start = (options.start or FIRST_MONDAY).replace(tzinfo=zone)
            start = local_start.astimezone(ZoneInfo("UTC"))
            end = start + timedelta(days=options.days)
            self.clock = ManualClock(start)
            self._zone = zone
            async with FakeTwilio(port=0, clock=self.clock) as twilio:
                self._twilio = twilio
                self._config = _config(url, twilio, voice=options.voice, web_port=free_port())
                self._plan(start, end)
                self._field = district_field(
                    self.district, options.field_profile, seed=options.seed + 2
                )
                self._operators = Operators(options.desk_profile, seed=options.seed + 3)
                self._phones = WeekPhones(
                    twilio,
                    district_phones(
                        self.district,
                        options.phone_profile,
                        seed=options.seed + 4,
                        field=self._field,
                    ),
                    self._field,
                    self._operators,
                    self.clock.now,
                    lambda at, step: self._at(at, "phone", step),
                )
                try:
                    await self._start_server()
                    await self._loop(start, end)
                    result = await self._result(url, start, time.perf_counter() - wall)
                finally:
                    await self._stop_server()
        return result

    def _plan(self, start: datetime, end: datetime) -> None:
        options = self.options
        homes = [
            Home(h.code, h.lat, h.lon, h.devices[0].serial, h.devices[1].serial, h.home_station)
            for h in self.district.households
        ]
        plan = plan_household_events(
            options.profile, homes, start, end, seed=options.seed, zone=self._zone
        )
        if options.storm is not None:
            spec = options.storm
            storm_plan = storm(
                homes,
                start + timedelta(seconds=spec.at_s),
                share=spec.share,
                within_s=spec.within_s,
                seed=options.seed + 1,
                first=len(plan),
            )
            self._storm = (storm_plan[0].at, {item.household for item in storm_plan})
            plan = merge(plan, storm_plan)
        for item in plan:
            self._at(item.at, "device", item)
        for outage in options.outages:
            begins = start + timedelta(seconds=outage.at_s)
            self._at(begins, f"{outage.what}_down", outage)
            self._at(begins + timedelta(seconds=outage.for_s), f"{outage.what}_up", outage)
        self._last_press = plan[-1].at if plan else start
        step = timedelta(seconds=options.progress_every_s)
        moment = start + step
        while moment < end + timedelta(seconds=options.settle_s):
            self._at(moment, "progress")
            moment += step

    async def _start_server(self) -> None:
        stack = contextlib.AsyncExitStack()
        running, _loops = await stack.enter_async_context(
            assembled_server(
                self._config,
                self.clock,
                devices=VirtualDevices(),
                # The week's own scratch file: nothing else opens it while it runs.
                private_database=self.options.database_url is None,
                ingest_in_process=True,  # the week hands ingest its messages itself
            )
        )
        self._twilio.inbound_url = running.web_url.rstrip("/") + INBOUND_PATH
        self._feed = await stack.enter_async_context(running.desk.feed.subscribe())
        assert isinstance(running.ingest, Ingest)
        await running.ingest.load_registry()
        self._server, self._server_stack = running, stack
        # A new server looks at everything once: the log past its cursor, its timers
        # (some fell due while it was away) and its outbox.
        self._events_new = True
        self._timers_unknown = True
        self._next_timer = None
        self._next_send = self.clock.now()

    async def _stop_server(self) -> None:
        stack, self._server, self._server_stack = self._server_stack, None, None
        self._feed = None
        if stack is not None:
            await stack.aclose()

    async def _loop(self, start: datetime, end: datetime) -> None:
        stop_at = max(end, self._last_press) + timedelta(seconds=self.options.settle_s)
        while self._queue and self._queue[0].at <= stop_at:
            at = self._queue[0].at
            await self._advance_to(at)
            while self._queue and self._queue[0].at <= at:
                due = heapq.heappop(self._queue)
                await self._happen(due)
            await self._deliver()
            await self._settle()
        await self._advance_to(stop_at)

    async def _advance_to(self, at: datetime) -> None:
        """Move the clock to ``at``, letting every timer and retry due before it fire in
        its own moment."""
        while self._server is not None:
            self._note_timers(self._server)
            due = min(
                (
                    d
                    for d in (self._next_timer, self._next_send, self._twilio.next_deadline())
                    if d is not None
                ),
                default=None,
            )
            if due is None or due > at:
                break
            if due > self.clock.now():
                self.clock.advance(due - self.clock.now())
            moved = await self._settle()
            # A wake-up for a timer cancelled since is nothing to do (settle has asked the
            # database for the true next one); due now yet nothing moved is a timer that
            # keeps failing: time goes on without it.
            if not moved and self._stuck(self.clock.now()):
                break
        if at > self.clock.now():
            self.clock.advance(at - self.clock.now())

    def _stuck(self, now: datetime) -> bool:
        # The fake's own deadlines cannot stick: settling lets every due one run.
        return any(d is not None and d <= now for d in (self._next_timer, self._next_send))

    def _note_timers(self, server: Running) -> None:
        """Timers armed since last asked: the earliest may be sooner than we thought."""
        desk = server.desk
        if desk.timers_changed.is_set():
            desk.timers_changed.clear()
            armed, desk.earliest_armed = desk.earliest_armed, None
            if armed is None:
                self._timers_unknown = True
            elif self._next_timer is None or armed < self._next_timer:
                self._next_timer = armed

    async def _settle(self) -> int:
        """Run the server's loops in burst mode until none has anything left (what the
        loops would do by themselves, woken the same way), then let the people see what
        changed. How much was done."""
        server = self._server
        total = 0
        while server is not None:
            now = self.clock.now()
            done = 0
            if self._events_new:
                self._events_new = False
                done += await server.follower.catch_up()
            self._note_timers(server)
            if self._timers_unknown or (self._next_timer is not None and self._next_timer <= now):
                self._timers_unknown = False
                done += await server.scheduler.fire_due()
                self._next_timer = await server.scheduler.next_due()
            changed = server.desk.outbox_changed
            if changed.is_set() or (self._next_send is not None and self._next_send <= now):
                changed.clear()
                done += await server.relay.drain()
                self._next_send = await server.relay.next_attempt()
            total += done
            # The calls the relay placed ring, and tell the server how they went: their
            # webhooks are answered before anything else moves.
            await self._twilio.quiet()
            self._note_timers(server)
            if not (done or changed.is_set() or self._events_new or self._timers_unknown):
                break
        if server is None:  # the calls go on; what they post to the server is lost
            await self._twilio.quiet()
        self._read_feed()
        self._read_texts()
        self._phones.read_calls()
        return total

    # -- what happens ---------------------------------------------------------------

    async def _happen(self, due: _Due) -> None:
        handler = getattr(self, f"_on_{due.what}")
        await handler(due.item)

    async def _on_device(self, planned: Planned) -> None:
        if planned.kind is not EventKind.CANCEL:  # an accidental press counts once
            self._happenings[planned.happening.value] += 1
        device = self._devices[planned.serial]
        if planned.kind is not None:
            self._event(device, planned.kind, planned.happening)
            return
        # A connection change: away for a while, then back.
        if device.away:
            return
        device.away = True
        back = self.clock.now() + timedelta(seconds=planned.away_s)
        if planned.happening is Happening.OFFLINE:
            will = min(back, self.clock.now() + timedelta(seconds=_WILL_AFTER_S))
            self._at(will, "will", device)
        self._at(back, "back", device)

    def _event(self, device: _Device, kind: EventKind, happening: Happening) -> None:
        device.counter += 1
        identifier = event_id(device.serial, self._boot, device.counter)
        if kind is EventKind.LOW_BATTERY:
            device.battery = 12
        now_ms = int(self.clock.now().timestamp() * 1000)
        key = (device.serial, identifier)
        self._truth[key] = (kind.value, happening)
        message = Received(
            topic_for(
                self._config.broker.topic_prefix, device.household, device.serial, Channel.EVENT
            ),
            event_payload(identifier, kind, now_ms, battery=device.battery),
        )
        device.held.append((key, message))
        self._flush(device)

    def _flush(self, device: _Device) -> None:
        """Publish what the device holds, if it can reach the broker."""
        if device.away or not self._broker_up:
            return
        now = self.clock.now()
        for key, message in device.held:
            self._publish(message)
            self._delivered.add(key)
            self._recent.append((now, device.serial, key, message))
        device.held.clear()

    def _publish(self, message: Received) -> None:
        if self._server is None:
            self._broker_queue.append(message)  # the server's persistent session holds it
        else:
            self._inbox.append(message)

    def _status(self, device: _Device, online: bool) -> None:
        prefix = self._config.broker.topic_prefix
        ts = None if not online else int(self.clock.now().timestamp() * 1000)
        self._publish(
            Received(
                topic_for(prefix, device.household, device.serial, Channel.STATUS),
                status_payload(online, ts),
                retained=True,
            )
        )

    async def _on_will(self, device: _Device) -> None:
        if device.away and self._broker_up:
            self._status(device, online=False)

    async def _on_back(self, device: _Device) -> None:
        device.away = False
        if self._broker_up:
            self._status(device, online=True)
            self._flush(device)

    async def _on_broker_down(self, _outage: Outage) -> None:
        self._broker_up = False
        # What the devices published in the last moments never got its PUBACK.
        since = self.clock.now() - timedelta(seconds=_UNACKED_WINDOW_S)
        for at, serial, key, message in self._recent:
            if at >= since:
                self._devices[serial].held.append((key, message))
                self._republished += 1
        self._recent.clear()

    async def _on_broker_up(self, _outage: Outage) -> None:
        self._broker_up = True
        for device in self._devices.values():
            if device.away:
                continue
            # Whole seconds: the devices coming back in one second arrive as one batch.
            later = self.clock.now() + timedelta(
                seconds=int(self._rng.random() * _RECONNECT_SPREAD_S) + 1
            )
            self._at(later, "back", device)

    async def _on_server_down(self, _outage: Outage) -> None:
        log.info("server stops at %s", self.clock.now().isoformat())
        await self._stop_server()

    async def _on_server_up(self, _outage: Outage) -> None:
        await self._start_server()
        log.info(
            "server back at %s; %d messages waited in the broker",
            self.clock.now().isoformat(),
            len(self._broker_queue),
        )
        self._inbox.extend(self._broker_queue)
        self._broker_queue.clear()
        for call_id in self._pending_acks:
            self._at(self.clock.now() + timedelta(seconds=20), "ack", call_id)
        self._pending_acks.clear()

    async def _on_reply(self, text: Text) -> None:
        if not self._field.still_meant(text):
            return
        # While the server is down its webhook answers nothing: the carer texts again.
        status = 0 if self._server is None else (await self._twilio.reply(text.phone, text.body))[0]
        if status != 200:
            self._retried_replies += 1
            again = self.clock.now() + timedelta(seconds=self.options.field_profile.retry_after_s)
            self._at(again, "reply", text)
            return
        self._sent_replies += 1
        self._field.sent(text)

    async def _on_ack(self, call_id: int) -> None:
        server = self._server
        if server is None:
            self._pending_acks.append(call_id)
            return
        try:
            call = await server.desk.command(call_id, Acknowledge(_OPERATOR))
        except CallError:
            return  # closed meanwhile (cancelled by the resident)
        pickup = self._pickups.get(call_id)
        if call.type in SPOKEN_WITH and call.is_open and self.options.voice and pickup:
            # The operator rings the household from the board (click-to-call; every
            # household of the district has numbers) and talks until they are done.
            with contextlib.suppress(CallError):
                operator = self._phones.operator_for(pickup)
                await server.desk.command(call_id, RingHousehold(_OPERATOR, operator))
        if call.type in _DESK_JOBS:
            # No carer rushes out for a device's trouble: the desk books a visit (a new
            # battery, a plug put back) and closes the call once it is done.
            low, high = self.options.desk_profile.device_job_s
            done = self.clock.now() + timedelta(seconds=low + (high - low) * self._rng.random())
            self._at(done, "device_job_done", call_id)

    async def _on_phone(self, step: PhoneStep) -> None:
        for text in await self._phones.act(step):  # a carer who accepted by phone sets off
            self._at(text.at, "reply", text)

    async def _on_device_job_done(self, call_id: int) -> None:
        server = self._server
        if server is None:
            self._at(self.clock.now() + timedelta(minutes=10), "device_job_done", call_id)
            return
        with contextlib.suppress(CallError):
            await server.desk.command(
                call_id, Resolve(_OPERATOR, Outcome.DEVICE_FIXED, note="visit by the simulator")
            )

    async def _on_progress(self, _item: None) -> None:
        if self.options.progress is None or self._server is None:
            return
        local = self.clock.now().astimezone(self._zone)
        async with AsyncSession(self._server.engine) as session:
            calls = await session.scalar(select(func.count()).select_from(m.Call))
            open_calls = await session.scalar(
                select(func.count()).select_from(m.Call).where(m.Call.closed_at.is_(None))
            )
        self.options.progress(
            f"{local:%a %d %b %H:%M}: {len(self._truth)} device events, "
            f"{calls} calls, {open_calls} open, {self._sent_replies} carer texts"
        )

    async def _deliver(self) -> None:
        if self._server is None or not self._inbox:
            return
        batch, self._inbox = self._inbox, []
        assert isinstance(self._server.ingest, Ingest)
        if await self._server.ingest.take(batch):
            self._events_new = True
        keep = self.clock.now() - timedelta(seconds=_UNACKED_WINDOW_S)
        self._recent = [r for r in self._recent if r[0] >= keep]

    def _read_feed(self) -> None:
        if self._feed is None:
            return
        while not self._feed.empty():
            update = self._feed.get_nowait()
            if update is None or update.kind != "call" or update.call_id is None:
                continue
            if update.call_id in self._seen_calls:
                continue
            self._seen_calls.add(update.call_id)
            now = self.clock.now()
            pickup = self._operators.take(now, now.astimezone(self._zone).hour)
            self._pickups[update.call_id] = pickup
            self._at(pickup.at, "ack", update.call_id)

    def _read_texts(self) -> None:
        messages = self._twilio.messages
        now = self.clock.now()
        for message in messages[self._texts_read :]:
            for text in self._field.received(message.to, message.body, now):
                self._at(text.at, "reply", text)
        self._texts_read = len(messages)

    # -- the result -----------------------------------------------------------------

    async def _result(self, url: str, start: datetime, wall_s: float) -> WeekResult:
        server = self._server
        assert server is not None
        end = self.clock.now()
        async with AsyncSession(server.engine) as session:
            logged = Counter(
                (serial, identifier)
                for serial, identifier in (
                    await session.execute(
                        select(m.Device.serial, m.DeviceEvent.event_id).join(
                            m.Device, m.Device.id == m.DeviceEvent.device_id
                        )
                    )
                ).all()
            )
            dead = await session.scalar(select(func.count()).select_from(m.DeadLetter))
            calls = await self._call_figures(session, end)
            first = start.astimezone(self._zone).date()
            last = end.astimezone(self._zone).date()
            report = await reports.report(
                session,
                first=first,
                last=last,
                zone=self._zone,
                now=end,
                circle_s=self._config.calls.service_circle_min * 60,
            )
            utilisation = await self._utilisation(session, start, end)
            voice = await voice_figures(session)
        account = EventAccount(
            generated=len(self._truth),
            delivered=len(self._delivered),
            pending=sum(len(d.held) for d in self._devices.values()),
            stored_once=sum(1 for key in self._truth if logged.get(key) == 1),
            lost=sum(1 for key in self._delivered if key not in logged),
            doubled=sum(1 for key in self._truth if logged.get(key, 0) > 1),
            republished=self._republished,
            dead_letters=int(dead or 0),
            by_kind=dict(Counter(kind for kind, _ in self._truth.values())),
        )
        stored_presses = sum(
            1
            for key, (kind, _) in self._truth.items()
            if EventKind(kind) in _PRESSES and key in logged
        )
        calls["presses_stored"] = stored_presses
        carers = self._field.by_phone.values()
        field_figures = {
            "pages": sum(c.pages for c in carers),
            "accepted": sum(c.accepted for c in carers),
            "declined": sum(c.declined for c in carers),
            "not_answered": sum(c.ignored for c in carers),
            "texts_sent": self._sent_replies,
            "texts_retried": self._retried_replies,
        }
        return WeekResult(
            options=self.options,
            started_at=start,
            ended_at=end,
            wall_s=wall_s,
            events=account,
            calls=calls,
            report=report,
            utilisation=utilisation,
            field=field_figures,
            happenings=dict(self._happenings),
            database_url=url,
            voice=voice,
        )

    async def _call_figures(self, session: AsyncSession, now: datetime) -> dict[str, Any]:
        rows = (await session.execute(select(m.Call))).scalars().all()
        escalated = set(
            (
                await session.scalars(
                    select(m.CallHistory.call_id)
                    .where(m.CallHistory.action.in_(reports.ESCALATION_ACTIONS))
                    .distinct()
                )
            ).all()
        )
        on_scene = dict(
            (
                await session.execute(
                    select(m.CallHistory.call_id, func.min(m.CallHistory.at))
                    .where(m.CallHistory.action == "on_scene")
                    .group_by(m.CallHistory.call_id)
                )
            ).all()
        )
        circle = self._config.calls.service_circle_min * 60
        emergencies = [c for c in rows if c.call_type in ("emergency", "fall")]
        reached = [
            (on_scene[c.id] - c.opened_at).total_seconds() for c in emergencies if c.id in on_scene
        ]
        overdue = sum(
            1
            for c in emergencies
            if c.id not in on_scene
            and c.cancel_reason is None
            and ((c.closed_at or now) - c.opened_at).total_seconds() > circle
        )
        within = sum(1 for s in reached if s <= circle)
        counted = len(reached) + overdue
        open_calls = [c for c in rows if c.closed_at is None]
        overdue_timers = await session.scalar(
            select(func.count())
            .select_from(m.Timer)
            .where(
                m.Timer.state == m.TimerState.PENDING,
                m.Timer.due_at < now - timedelta(seconds=60),
            )
        )
        storm_calls = 0
        if self._storm is not None:
            began, storm_homes = self._storm
            codes = dict((await session.execute(select(m.Household.id, m.Household.code))).all())
            storm_calls = len(
                {
                    codes[c.household_id]
                    for c in rows
                    if c.household_id is not None
                    and (c.closed_at is None or c.closed_at >= began)  # open during the storm
                }
                & storm_homes
            )
        return {
            "overdue_timers": int(overdue_timers or 0),
            "alarm_presses_on_calls": sum(c.presses for c in rows if c.call_type in ALARM_TYPES),
            "storm_households_with_call": storm_calls,
            "opened": len(rows),
            "presses_on_calls": sum(c.presses for c in rows),
            "by_type": dict(Counter(c.call_type for c in rows)),
            "by_state": dict(Counter(c.state for c in rows)),
            "closed": len(rows) - len(open_calls),
            "open": len(open_calls),
            "escalated": len(escalated),
            "open_unescalated": sum(1 for c in open_calls if c.id not in escalated),
            "emergency_on_scene_within_circle": response_times.share(within, counted),
            "emergency_on_scene_p90_s": response_times.nearest_rank(reached, 90),
        }

    async def _utilisation(
        self, session: AsyncSession, start: datetime, end: datetime
    ) -> dict[str, float]:
        """Per station: the share of its carers' hours spent on calls (accepted to done)."""
        station_of = {c.code: c.station for c in self.district.carers}
        busy: dict[str, float] = dict.fromkeys(
            hours_of := [s.code for s in self.district.stations], 0.0
        )
        closed = dict((await session.execute(select(m.Call.id, m.Call.closed_at))).all())
        accepted = (
            await session.execute(
                select(m.CallHistory.call_id, m.CallHistory.actor, m.CallHistory.at).where(
                    m.CallHistory.action == "accepted"
                )
            )
        ).all()
        for call_id, actor, at in accepted:
            code = actor.removeprefix("carer:")
            if code in station_of:
                busy[station_of[code]] += ((closed.get(call_id) or end) - at).total_seconds()
        # Every carer works one eight-hour shift a day on the days their pattern runs.
        hours = dict.fromkeys(hours_of, 0.0)
        span_days = (end - start).total_seconds() / 86400
        for carer in self.district.carers:
            pattern = next(p for p in self.district.shift_patterns if p.code == carer.shift_pattern)
            hours[carer.station] += (
                span_days * len(pattern.weekdays) / 7 * pattern.duration_minutes / 60
            )
        return {
            code: round(busy[code] / 3600 / on_duty, 4) if on_duty else 0.0
            for code, on_duty in sorted(hours.items())
        }


async def run_week(options: WeekOptions | None = None) -> WeekResult:
    """Run one week (or whatever ``options`` say) on virtual time."""
    return await VirtualWeek(options or WeekOptions()).run()
