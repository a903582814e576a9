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
from collections.abc import Collection, Iterable
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
    needed = frozenset(skills)
    ranked = [
        assess(carer, destination, circle_s=circle_s)
        for carer in carers
        if carer.state is CarerState.FREE
        and not carer.phone_problem
        and needed <= carer.skills
        and carer.id not in exclude
    ]
    ranked.sort(key=Candidate.sort_key)
    return ranked
