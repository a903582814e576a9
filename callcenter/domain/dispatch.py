"""Choosing carers for a call: who is free, who is nearest, who may go.

Ranking, best first:
1. carers who can reach the door within the service circle (15 minutes by default);
2. among those, the household's home station, then its backup station (the A/B post),
   then any other station, so a station that has people keeps its own households;
3. then estimated travel time from the carer's last known position.

So a home-station carer is preferred while they are within the circle, and a carer from
another station is sent rather than nobody.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

from callcenter.domain.geo import Place, Transport, distance_m, travel_time_over

SERVICE_CIRCLE_S = 15 * 60.0


class CarerState(enum.StrEnum):
    """Where a carer stands right now, as the board shows it."""

    OFF_SHIFT = "off_shift"
    FREE = "free"
    DISPATCHED = "dispatched"
    ON_THE_WAY = "on_the_way"
    ON_SCENE = "on_scene"


class Tier(enum.IntEnum):
    """Which post a carer comes from, relative to the household."""

    HOME = 0
    BACKUP = 1
    OTHER = 2


@dataclass(frozen=True)
class CarerSnapshot:
    """What dispatch needs to know about one carer at one moment."""

    id: int
    code: str
    name: str
    phone: str
    language: str
    role: str
    station_id: int
    skills: frozenset[str]
    transport: Transport
    position: Place
    state: CarerState
    call_id: int | None = None
    # Why the carer's phone cannot get texts (invalid, opted out...); "" when it can.
    # Such a carer is never paged automatically: the page could not reach them.
    phone_problem: str = ""


@dataclass(frozen=True)
class Destination:
    """The household a carer would be sent to."""

    household_id: int
    place: Place
    home_station_id: int
    backup_station_id: int


@dataclass(frozen=True)
class Candidate:
    """A carer who could be sent, with why they rank where they do."""

    carer: CarerSnapshot
    tier: Tier
    travel_s: float
    within_circle: bool
    distance_m: float = 0.0  # straight line from the carer's last position to the door

    def sort_key(self) -> tuple[bool, int, float, str]:
        return (not self.within_circle, int(self.tier), self.travel_s, self.carer.code)


def tier_of(carer: CarerSnapshot, destination: Destination) -> Tier:
    """The carer's post relative to the household's A/B stations."""
    if carer.station_id == destination.home_station_id:
        return Tier.HOME
    if carer.station_id == destination.backup_station_id:
        return Tier.BACKUP
    return Tier.OTHER


def assess(
    carer: CarerSnapshot, destination: Destination, *, circle_s: float = SERVICE_CIRCLE_S
) -> Candidate:
    """Tier and estimated travel time of one carer to the household."""
    distance = distance_m(carer.position, destination.place)
    travel = travel_time_over(distance, carer.transport)
    return Candidate(carer, tier_of(carer, destination), travel, travel <= circle_s, distance)


def rank_carers(
    carers: Iterable[CarerSnapshot],
    destination: Destination,
    *,
    skills: Collection[str] = (),
    exclude: Collection[int] = (),
    circle_s: float = SERVICE_CIRCLE_S,
) -> list[Candidate]:
    """Free carers with every required skill whose phone gets texts, best first;
    ``exclude`` holds carer ids."""
    return list(Ranking(carers, destination, skills=skills, exclude=exclude, circle_s=circle_s))


class Ranking:
    """The carers ``rank_carers`` lists, in its order, but put in order only as far as
    they are read: a decision reads the first one or two of them.

    Every free carer's place in the order is worked out (the distance and travel time
    once for each spot carers stand at and way they travel: most stand at their
    station), but only those read are taken off
    a heap and made candidates. With a thousand free carers across a district, assessing
    and sorting them all for every call had been two thirds of a storm's decisions."""

    def __init__(
        self,
        carers: Iterable[CarerSnapshot],
        destination: Destination,
        *,
        skills: Collection[str] = (),
        exclude: Collection[int] = (),
        circle_s: float = SERVICE_CIRCLE_S,
    ) -> None:
        needed = frozenset(skills)
        door = destination.place
        # Distance and travel time from each spot, by each way of travelling, worked out
        # once: most carers stand at their station, and a station's go alike.
        ways: dict[tuple[float, float, Transport], tuple[float, float]] = {}
        # (the sort key, the carer's order given, for ties as a stable sort has them;
        # then what its candidate is made of)
        heap: list[tuple[tuple[bool, Tier, float, str], int, CarerSnapshot, float]] = []
        for order, carer in enumerate(carers):
            if (
                carer.state is not CarerState.FREE
                or carer.phone_problem
                or not needed <= carer.skills
                or carer.id in exclude
            ):
                continue
            place = carer.position
            way = (place.lat, place.lon, carer.transport)
            known = ways.get(way)
            if known is None:
                distance = distance_m(place, door)
                known = ways[way] = (travel_time_over(distance, carer.transport), distance)
            travel, distance = known
            key = (not travel <= circle_s, tier_of(carer, destination), travel, carer.code)
            heap.append((key, order, carer, distance))
        heapq.heapify(heap)
        self._heap = heap
        self._read: list[Candidate] = []

    def __iter__(self) -> Iterator[Candidate]:
        at = 0
        while True:
            if at == len(self._read):
                if not self._heap:
                    return
                key, _, carer, distance = heapq.heappop(self._heap)
                self._read.append(Candidate(carer, key[1], key[2], not key[0], distance))
            yield self._read[at]
            at += 1
