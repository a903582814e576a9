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
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

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


# Where a carer waits and how they travel (their last known spot, their way of
# travelling, their station): carers at one post are the same distance, travel time and
# tier from any door, so the ranking orders posts and, within a post, codes.
Post = tuple[float, float, Transport, int]


def post_of(carer: CarerSnapshot) -> Post:
    return (carer.position.lat, carer.position.lon, carer.transport, carer.station_id)


def posts_of(carers: Iterable[CarerSnapshot]) -> dict[Post, list[CarerSnapshot]]:
    """``carers`` grouped by post, each group in code order (``by_code``)."""
    posts: dict[Post, list[CarerSnapshot]] = {}
    for carer in carers:
        posts.setdefault(post_of(carer), []).append(carer)
    for group in posts.values():
        group.sort(key=by_code)
    return posts


def by_post(carers: Iterable[CarerSnapshot]) -> list[list[CarerSnapshot]]:
    """``carers`` grouped by post, each group in code order: what ``Ranking.at_posts``
    takes."""
    return list(posts_of(carers).values())


# A post's carers are kept in this order.
by_code = attrgetter("code")


class Ranking:
    """The carers ``rank_carers`` lists, in its order, but put in order only as far as
    they are read: a decision reads the first one or two of them.

    Carers at one post (``post_of``) rank together: the same tier, travel time and
    circle, then their codes. So the ranking works out where each post stands (the
    distance once for each spot and way of travelling), keeps one carer per post on a
    heap, the post's first who may go, and makes candidates only of those read. With a
    thousand free carers across a district, assessing and sorting them all for every call
    had been two thirds of a storm's decisions; ranking each of them, a tenth.

    ``Ranking(carers, ...)`` groups the carers itself; ``Ranking.at_posts`` takes them
    grouped (the desk keeps its free carers so, see engine/district.py)."""

    def __init__(
        self,
        carers: Iterable[CarerSnapshot],
        destination: Destination,
        *,
        skills: Collection[str] = (),
        exclude: Collection[int] = (),
        circle_s: float = SERVICE_CIRCLE_S,
    ) -> None:
        self._begin(by_post(carers), destination, skills, exclude, circle_s)

    @classmethod
    def at_posts(
        cls,
        posts: Iterable[Sequence[CarerSnapshot]],
        destination: Destination,
        *,
        skills: Collection[str] = (),
        exclude: Collection[int] = (),
        circle_s: float = SERVICE_CIRCLE_S,
    ) -> Ranking:
        """The ranking of carers given by post: each sequence holds carers of one post
        (``post_of``) in code order, as ``by_post`` groups them."""
        ranking = cls.__new__(cls)
        ranking._begin(posts, destination, skills, exclude, circle_s)
        return ranking

    def _begin(
        self,
        posts: Iterable[Sequence[CarerSnapshot]],
        destination: Destination,
        skills: Collection[str],
        exclude: Collection[int],
        circle_s: float,
    ) -> None:
        self._needed = frozenset(skills)
        self._exclude = exclude
        door = destination.place
        # Distance and travel time from each spot, by each way of travelling, worked out
        # once: posts of different stations may stand at one spot.
        ways: dict[tuple[float, float, Transport], tuple[float, float]] = {}
        self._posts: list[tuple[Sequence[CarerSnapshot], bool, Tier, float, float]] = []
        # (the sort key of a post's next carer, its post, its place in the post)
        self._heap: list[tuple[tuple[bool, Tier, float, str], int, int]] = []
        for group in posts:
            if not group:
                continue
            first = group[0]
            way = (first.position.lat, first.position.lon, first.transport)
            known = ways.get(way)
            if known is None:
                distance = distance_m(first.position, door)
                known = ways[way] = (travel_time_over(distance, first.transport), distance)
            travel, distance = known
            # A copy: the caller's groups change as carers are sent, and this ranking
            # is read for the moment it was made.
            post = (
                tuple(group),
                not travel <= circle_s,
                tier_of(first, destination),
                travel,
                distance,
            )
            self._posts.append(post)
            first_free = self._next(len(self._posts) - 1, 0)
            if first_free is not None:
                self._heap.append(first_free)
        heapq.heapify(self._heap)
        self._read: list[Candidate] = []

    def _next(
        self, at_post: int, start: int
    ) -> tuple[tuple[bool, Tier, float, str], int, int] | None:
        """The heap entry of post ``at_post``'s first carer from ``start`` on who may go."""
        group, outside, tier, travel, _ = self._posts[at_post]
        for place in range(start, len(group)):
            carer = group[place]
            if (
                carer.state is CarerState.FREE
                and not carer.phone_problem
                and self._needed <= carer.skills
                and carer.id not in self._exclude
            ):
                return ((outside, tier, travel, carer.code), at_post, place)
        return None

    def __iter__(self) -> Iterator[Candidate]:
        at = 0
        while True:
            if at == len(self._read):
                if not self._heap:
                    return
                _, at_post, place = heapq.heappop(self._heap)
                group, outside, tier, travel, distance = self._posts[at_post]
                self._read.append(Candidate(group[place], tier, travel, not outside, distance))
                following = self._next(at_post, place + 1)
                if following is not None:
                    heapq.heappush(self._heap, following)
            yield self._read[at]
            at += 1
