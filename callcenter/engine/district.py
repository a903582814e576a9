"""The district as the desk needs it: households, stations, carers and who is on shift.

The registry (stations, carers, households, contacts) changes rarely, so it is read once
and refreshed every so often. What changes with every call (who is busy, where carers
were last seen, the duty roster) is read fresh inside the transaction that decides.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain.call_types import CallType
from callcenter.domain.calls import SUPERVISOR_RECIPIENT, Call, Person
from callcenter.domain.dispatch import (
    CarerSnapshot,
    CarerState,
    Destination,
    Post,
    by_code,
    post_of,
    posts_of,
)
from callcenter.domain.geo import Place, Transport
from callcenter.domain.messages import ResidentNote
from callcenter.domain.phones import HouseholdNumber
from callcenter.domain.policy import Policy
from callcenter.domain.shifts import RosterEntry, ShiftPattern, on_shift
from callcenter.engine import phones
from callcenter.engine.numbers import every_household_number
from callcenter.store import models as m
from callcenter.store.db import in_slices

log = logging.getLogger("callcenter.district")

# How a carer's assignment shows on the board.
_CARER_STATE = {
    "dispatched": CarerState.DISPATCHED,
    "accepted": CarerState.DISPATCHED,
    "on_the_way": CarerState.ON_THE_WAY,
    "on_scene": CarerState.ON_SCENE,
}


@dataclass(frozen=True)
class StationInfo:
    id: int
    code: str
    name: str
    place: Place
    backup_station_id: int | None
    phone: str


@dataclass(frozen=True)
class CarerInfo:
    id: int
    code: str
    name: str
    phone: str
    language: str
    role: str
    station_id: int
    skills: frozenset[str]
    transport: Transport
    pattern: str
    active: bool

    def person(self) -> Person:
        return Person(f"carer:{self.code}", self.name, self.phone, self.language)


@dataclass(frozen=True)
class HouseholdInfo:
    id: int
    code: str
    address: str
    place: Place
    home_station_id: int
    backup_station_id: int
    access_notes: str
    residents: str
    family: tuple[Person, ...]
    # The base unit hears commands such as "help is on the way".
    base_unit: str | None
    resident_notes: tuple[ResidentNote, ...] = ()
    # The numbers that reach the home, in the order to try them (engine/numbers.py).
    phones: tuple[HouseholdNumber, ...] = ()

    def destination(self) -> Destination:
        return Destination(self.id, self.place, self.home_station_id, self.backup_station_id)


# Where a call of no household (a call to the centre's number from a number the register
# does not know) is: nowhere a carer could be sent, nobody to tell (id 0, code "").
UNLINKED = HouseholdInfo(
    id=0,
    code="",
    address="",
    place=Place(0.0, 0.0),
    home_station_id=0,
    backup_station_id=0,
    access_notes="",
    residents="",
    family=(),
    base_unit=None,
)


def household_of(registry: Registry, call: Call) -> HouseholdInfo:
    """The household ``call`` is about; UNLINKED for a call of no household."""
    if call.household_id is None:
        return UNLINKED
    return registry.households[call.household_id]


@dataclass(frozen=True)
class Busy:
    """A carer's active assignment."""

    call_id: int
    state: str


@dataclass
class Registry:
    stations: dict[int, StationInfo] = field(default_factory=dict)
    carers: dict[int, CarerInfo] = field(default_factory=dict)
    carers_by_code: dict[str, CarerInfo] = field(default_factory=dict)
    carer_codes: dict[int, str] = field(default_factory=dict)
    # Active station leads of each station, texted when its households' calls escalate.
    station_leads: dict[int, tuple[Person, ...]] = field(default_factory=dict)
    households: dict[int, HouseholdInfo] = field(default_factory=dict)
    households_by_code: dict[str, HouseholdInfo] = field(default_factory=dict)
    patterns: dict[str, ShiftPattern] = field(default_factory=dict)
    supervisors: tuple[Person, ...] = ()
    # Escalation policies supervisors edited (escalation_policies), over the configured.
    policies: dict[CallType, Policy] = field(default_factory=dict)
    # The registry_version row as it was when this was read (see store/models.py).
    version: int | None = None


async def edited_policies(session: AsyncSession) -> dict[CallType, Policy]:
    """The policies supervisors set, by call type (the registry reads them)."""
    rows = (await session.scalars(select(m.EscalationPolicy))).all()
    found: dict[CallType, Policy] = {}
    for row in rows:
        try:
            found[CallType(row.call_type)] = Policy.from_json(row.policy)
        except (KeyError, TypeError, ValueError) as error:
            # Written through set_policy only, so this is a hand edit gone wrong: the
            # configuration's policy stays in force and the log says why.
            log.error(
                "escalation policy for %s is unreadable (%s); using the configured one",
                row.call_type,
                error,
            )
    return found


async def load_registry(session: AsyncSession) -> Registry:
    """Read stations, carers, households with residents/contacts/devices, and supervisors."""
    # The version first: a change committed while the rest is read then shows as a newer
    # version at the next look, and is read again; never the other way round.
    registry = Registry(version=await m.registry_version(session))
    registry.policies = await edited_policies(session)
    for s in (await session.scalars(select(m.Station))).all():
        registry.stations[s.id] = StationInfo(
            s.id, s.code, s.name, Place(s.lat, s.lon), s.backup_station_id, s.phone
        )
    for p in (await session.scalars(select(m.ShiftPattern))).all():
        registry.patterns[p.code] = ShiftPattern(
            p.code, p.starts_at, timedelta(minutes=p.duration_minutes), frozenset(p.weekdays)
        )
    # Plain rows rather than ORM objects: a large district has hundreds of thousands of
    # them, and the registry is re-read every minute on the event loop.
    carers = select(
        m.Carer.id,
        m.Carer.code,
        m.Carer.name,
        m.Carer.phone,
        m.Carer.language,
        m.Carer.role,
        m.Carer.station_id,
        m.Carer.skills,
        m.Carer.transport,
        m.Carer.shift_pattern_code,
        m.Carer.active,
    )
    async for c in in_slices(await session.execute(carers)):
        info = CarerInfo(
            c.id,
            c.code,
            c.name,
            c.phone,
            c.language,
            c.role,
            c.station_id,
            frozenset(c.skills),
            Transport(c.transport),
            c.shift_pattern_code,
            c.active,
        )
        registry.carers[c.id] = info
        registry.carers_by_code[c.code] = info
        registry.carer_codes[c.id] = c.code
        if info.active and info.role == m.CarerRole.STATION_LEAD:
            leads = registry.station_leads.get(info.station_id, ())
            registry.station_leads[info.station_id] = (*leads, info.person())
    residents: dict[int, list[str]] = {}
    notes: dict[int, list[ResidentNote]] = {}
    people = select(
        m.Resident.household_id,
        m.Resident.name,
        m.Resident.mobility,
        m.Resident.care_notes,
        m.Resident.birth_year,
    ).order_by(m.Resident.id)
    async for r in in_slices(await session.execute(people)):
        residents.setdefault(r.household_id, []).append(r.name)
        notes.setdefault(r.household_id, []).append(
            ResidentNote(r.name, r.mobility, r.care_notes, birth_year=r.birth_year)
        )
    family: dict[int, list[Person]] = {}
    contacts = select(
        m.FamilyContact.household_id,
        m.FamilyContact.position,
        m.FamilyContact.name,
        m.FamilyContact.phone,
        m.FamilyContact.language,
    ).order_by(m.FamilyContact.household_id, m.FamilyContact.position)
    async for f in in_slices(await session.execute(contacts)):
        family.setdefault(f.household_id, []).append(
            Person(f"family:{f.household_id}:{f.position}", f.name, f.phone, f.language)
        )
    base_units: dict[int, str] = {}
    units = (
        select(m.Device.household_id, m.Device.serial)
        .where(m.Device.kind == m.DeviceKind.BASE_UNIT, m.Device.retired_at.is_(None))
        .order_by(m.Device.id)
    )
    async for unit in in_slices(await session.execute(units)):
        base_units.setdefault(unit.household_id, unit.serial)
    numbers = await every_household_number(session)
    homes = select(
        m.Household.id,
        m.Household.code,
        m.Household.address,
        m.Household.lat,
        m.Household.lon,
        m.Household.home_station_id,
        m.Household.backup_station_id,
        m.Household.access_notes,
    )
    async for h in in_slices(await session.execute(homes)):
        info_h = HouseholdInfo(
            h.id,
            h.code,
            h.address,
            Place(h.lat, h.lon),
            h.home_station_id,
            h.backup_station_id,
            h.access_notes,
            "、".join(residents.get(h.id, [])),
            tuple(family.get(h.id, [])),
            base_units.get(h.id),
            tuple(notes.get(h.id, [])),
            tuple(numbers.get(h.id, [])),
        )
        registry.households[h.id] = info_h
        registry.households_by_code[h.code] = info_h
    supervisors = select(m.Operator).where(
        m.Operator.role == m.OperatorRole.SUPERVISOR,
        m.Operator.active.is_(True),
        m.Operator.phone.is_not(None),
    )
    registry.supervisors = tuple(
        Person(f"{SUPERVISOR_RECIPIENT}{o.username}", o.name, o.phone or "", o.language)
        for o in (await session.scalars(supervisors.order_by(m.Operator.id))).all()
    )
    return registry


class District:
    """The registry, kept fresh, plus the per-decision view of who can go."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        zone: ZoneInfo,
        holidays: Iterable[date] = (),
        refresh_s: float = 60.0,
    ) -> None:
        self._engine = engine
        self.zone = zone
        self.holidays = frozenset(holidays)
        self._refresh_s = refresh_s
        self._registry: Registry | None = None
        # Bumped by invalidate(); a registry read before the latest bump is stale, even
        # if its read finished after it (a load racing an administrator's change).
        self._generation = 0
        self._loaded_generation = -1
        self._told: list[Callable[[], None]] = []
        self._stopping = asyncio.Event()
        self.reloads = 0  # registries re-read by ``refresh`` because the database moved

    async def registry(self) -> Registry:
        """The registry: read on first use and after ``invalidate``; otherwise the copy
        ``run`` renews in the background, so no decision waits for a reload.

        A reload always reads in a session of its own, begun after the generation it
        is stamped with: a caller's transaction may have begun before the change that
        invalidated the registry, and a registry read there would be kept as current
        while missing that change (seen: a supervisor added and not texted)."""
        if self._registry is None or self._loaded_generation != self._generation:
            wanted = self._generation
            async with AsyncSession(self._engine) as fresh:
                loaded = await load_registry(fresh)
            self._keep(loaded, wanted)
            return loaded
        return self._registry

    def _keep(self, loaded: Registry, generation: int) -> None:
        """Use ``loaded``, read as of ``generation``: still stale if invalidated since."""
        self._registry = loaded
        self._loaded_generation = generation

    def invalidate(self) -> None:
        """Re-read the registry on next use (a household or carer it does not know, or a
        change to the register just committed); those ``also_tell`` named hear of it."""
        self._generation += 1
        for told in self._told:
            told()

    def also_tell(self, told: Callable[[], None]) -> None:
        """Call ``told`` whenever the registry is invalidated (in-process ingest, which
        then reads its devices again before its next batch)."""
        self._told.append(told)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Look every refresh interval until stop() whether the registry changed in the
        database, and re-read it if so: changes an administrator makes reach the desk."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._refresh_s)
            if self._stopping.is_set():
                return
            try:
                await self.refresh()
            except Exception:
                log.exception("re-reading the district registry failed; keeping the old one")

    async def refresh(self) -> bool:
        """Re-read the registry if the database's registry version moved since it was
        read (one small query when nothing changed); whether it was re-read."""
        wanted = self._generation
        async with AsyncSession(self._engine) as session:
            known = None if self._registry is None else self._registry.version
            if known is not None and await m.registry_version(session) == known:
                return False
            self._keep(await load_registry(session), wanted)
        self.reloads += 1
        return True

    async def carers(self, session: AsyncSession, now: datetime) -> list[CarerSnapshot]:
        """Every active carer as of ``now``: on shift or not, busy or free, and where.

        Read once per transaction and then kept up to date by the transaction's own
        decisions (``decided``), so a batch of decisions in one transaction reads who is
        busy once instead of once per call. Who is on shift is worked out to the minute
        (shifts start and end on whole minutes)."""
        moment = await self._moment(session, now)
        return list(moment.everyone().values())

    async def free_carers(
        self, session: AsyncSession, now: datetime
    ) -> list[Sequence[CarerSnapshot]]:
        """The carers ``carers`` gives as free, without the rest, grouped by post (as
        ``dispatch.by_post`` groups them): what dispatch ranks (``Ranking.at_posts``). In a
        storm most carers are soon busy, and the free ones wait at a few dozen posts."""
        moment = await self._moment(session, now)
        return moment.free_posts()

    async def _moment(self, session: AsyncSession, now: datetime) -> _Moment:
        registry = await self.registry()
        local = now.astimezone(self.zone).date()
        kept = session.info.get(_MOMENT)
        if isinstance(kept, _Moment) and kept.registry is registry and kept.day == local:
            moment = kept
        else:
            moment = await self._read_moment(session, registry, local)
            session.info[_MOMENT] = moment
        moment.make(now.replace(second=0, microsecond=0), self.zone, self.holidays)
        return moment

    async def _read_moment(self, session: AsyncSession, registry: Registry, local: date) -> _Moment:
        busy = {
            row.carer_id: Busy(row.call_id, row.state)
            for row in (
                await session.execute(
                    select(
                        m.CallAssignment.carer_id,
                        m.CallAssignment.call_id,
                        m.CallAssignment.state,
                    ).where(m.CallAssignment.active.is_(True))
                )
            ).all()
        }
        positions = {
            row.carer_id: Place(row.lat, row.lon)
            for row in (
                await session.execute(
                    select(m.CarerPosition.carer_id, m.CarerPosition.lat, m.CarerPosition.lon)
                )
            ).all()
        }
        roster_rows = await session.scalars(
            select(m.DutyRoster).where(m.DutyRoster.day.in_([local - timedelta(days=1), local]))
        )
        roster = {
            (r.carer_id, r.day): RosterEntry(r.carer_id, r.day, r.on_duty, r.shift_pattern_code)
            for r in roster_rows.all()
        }
        broken = await phones.every(session)
        return _Moment(registry, local, busy, positions, roster, broken)

    @staticmethod
    def decided(session: AsyncSession, call: Call, arrived: Iterable[int], home: Place) -> None:
        """Bring the transaction's view of the carers up to date with a decision it saved
        on ``call``: who is busy on it now, and that the carers who reached the door with
        it (``arrived``) are at ``home``, the household's place."""
        moment = session.info.get(_MOMENT)
        if isinstance(moment, _Moment):
            moment.note(call, arrived, home)


# Where a transaction keeps its view of the carers (in AsyncSession.info).
_MOMENT = phones.CARERS_VIEW


@dataclass
class _Moment:
    """What one transaction read about the carers (busy, last seen, roster, phones),
    with the snapshots made from it; changed by the transaction's own decisions only."""

    registry: Registry
    day: date
    busy: dict[int, Busy]
    positions: dict[int, Place]
    roster: dict[tuple[int, date], RosterEntry]
    broken: dict[str, phones.Broken]
    minute: datetime | None = None
    working: set[int] = field(default_factory=set)
    free: dict[int, CarerSnapshot] = field(default_factory=dict)
    # The free carers by post (dispatch.by_post), made when first asked for and then
    # kept up with ``free``.
    posts: dict[Post, list[CarerSnapshot]] | None = None
    # Every active carer's snapshot, made only when asked for (``everyone``): a decision
    # on a new call ranks the free ones alone, and they are a few among thousands.
    made: dict[int, CarerSnapshot] | None = None
    zone: ZoneInfo | None = None
    holidays: frozenset[date] = frozenset()

    def make(self, minute: datetime, zone: ZoneInfo, holidays: frozenset[date]) -> None:
        """The free carers as of ``minute`` (made again only when the minute changed)."""
        if minute != self.minute:
            self.zone, self.holidays = zone, holidays
            self.working = working_carers(self.registry, minute, zone, holidays, self.roster)
            self.made = None
            self.posts = None
            self.free = {}
            for carer in self.registry.carers.values():  # in the registry's order
                if carer.id in self.working and carer.id not in self.busy:
                    self.free[carer.id] = self._snapshot(carer.id, carer)
            self.minute = minute

    def free_posts(self) -> list[Sequence[CarerSnapshot]]:
        """The free carers grouped by post, each group in code order."""
        if self.posts is None:
            self.posts = posts_of(self.free.values())
        return list(self.posts.values())

    def _free_now(self, carer_id: int, fresh: CarerSnapshot | None) -> None:
        """``fresh`` is now carer ``carer_id``'s free snapshot (None: not free)."""
        old = self.free.get(carer_id)
        if fresh is None:
            self.free.pop(carer_id, None)
        else:
            self.free[carer_id] = fresh
        if self.posts is None:
            return
        if old is not None:
            group = self.posts[post_of(old)]
            group.remove(old)
            if not group:
                del self.posts[post_of(old)]
        if fresh is not None:
            bisect.insort(self.posts.setdefault(post_of(fresh), []), fresh, key=by_code)

    def everyone(self) -> dict[int, CarerSnapshot]:
        """Every active carer's snapshot as of the minute last made."""
        if self.made is None:
            if self.minute is None or self.zone is None:
                raise RuntimeError("a view of the carers is made for a minute before it is read")
            made = snapshots(
                self.registry,
                self.minute,
                self.zone,
                self.holidays,
                self.busy,
                self.positions,
                self.roster,
                self.broken,
                working=self.working,
            )
            self.made = {s.id: s for s in made}
        return self.made

    def _snapshot(self, carer_id: int, carer: CarerInfo) -> CarerSnapshot:
        return snapshot_of(
            self.registry,
            carer,
            self.busy.get(carer_id),
            carer_id in self.working,
            self.positions,
            self.broken,
        )

    def note(self, call: Call, arrived: Iterable[int], home: Place) -> None:
        touched: set[int] = set()
        for assignment in call.assignments:
            current = self.busy.get(assignment.carer_id)
            if assignment.active:
                self.busy[assignment.carer_id] = Busy(call.id, assignment.state.value)
            elif current is not None and current.call_id == call.id:
                del self.busy[assignment.carer_id]
            touched.add(assignment.carer_id)
        for carer_id in arrived:
            self.positions[carer_id] = home
        for carer_id in touched:
            carer = self.registry.carers.get(carer_id)
            if carer is None or not carer.active:
                continue
            fresh = self._snapshot(carer_id, carer)
            if self.made is not None:
                self.made[carer_id] = fresh
            self._free_now(carer_id, fresh if fresh.state is CarerState.FREE else None)


def working_carers(
    registry: Registry,
    now: datetime,
    zone: ZoneInfo,
    holidays: frozenset[date],
    roster: Mapping[tuple[int, date], RosterEntry],
) -> set[int]:
    """Ids of the active carers on shift at ``now`` (roster first, then their pattern)."""
    local = now.astimezone(zone).date()
    days = (local - timedelta(days=1), local)
    # Without a roster entry on the days that count, a carer works when their pattern
    # does: worked out once per pattern, not once per carer (thousands in a large team).
    by_pattern: dict[str, bool] = {}
    rostered_ids = {carer_id for carer_id, day in roster if day in days}
    working = set()
    for carer in registry.carers.values():
        if not carer.active:
            continue
        rostered = carer.id in rostered_ids
        if not rostered and carer.pattern in by_pattern:
            works = by_pattern[carer.pattern]
        else:
            works = on_shift(
                carer.id,
                registry.patterns.get(carer.pattern),
                now,
                zone=zone,
                holidays=holidays,
                roster=roster,
                patterns=registry.patterns,
            )
            if not rostered:
                by_pattern[carer.pattern] = works
        if works:
            working.add(carer.id)
    return working


def snapshots(
    registry: Registry,
    now: datetime,
    zone: ZoneInfo,
    holidays: frozenset[date],
    busy: Mapping[int, Busy],
    positions: Mapping[int, Place],
    roster: Mapping[tuple[int, date], RosterEntry],
    broken: Mapping[str, phones.Broken] | None = None,
    *,
    working: set[int] | None = None,
) -> list[CarerSnapshot]:
    """Carer snapshots from the registry and the moment's facts (``working``: the
    carers on shift, when already worked out)."""
    broken = broken or {}
    if working is None:
        working = working_carers(registry, now, zone, holidays, roster)
    return [
        snapshot_of(registry, carer, busy.get(carer.id), carer.id in working, positions, broken)
        for carer in registry.carers.values()
        if carer.active
    ]


def snapshot_of(
    registry: Registry,
    carer: CarerInfo,
    current: Busy | None,
    working: bool,
    positions: Mapping[int, Place],
    broken: Mapping[str, phones.Broken],
) -> CarerSnapshot:
    """One carer's snapshot: busy on ``current``, else free when ``working``."""
    if current is not None:
        state = _CARER_STATE.get(current.state, CarerState.DISPATCHED)
    elif working:
        state = CarerState.FREE
    else:
        state = CarerState.OFF_SHIFT
    station = registry.stations[carer.station_id]
    return CarerSnapshot(
        id=carer.id,
        code=carer.code,
        name=carer.name,
        phone=carer.phone,
        language=carer.language,
        role=carer.role,
        station_id=carer.station_id,
        skills=carer.skills,
        transport=carer.transport,
        position=positions.get(carer.id, station.place),
        state=state,
        call_id=current.call_id if current else None,
        phone_problem=broken[carer.phone].why() if carer.phone in broken else "",
    )
