"""Distances, travel times and the ranking of carers for a call (domain/geo, domain/dispatch)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain import dispatch
from callcenter.domain.dispatch import (
    SERVICE_CIRCLE_S,
    CarerSnapshot,
    CarerState,
    Destination,
    Ranking,
    Tier,
    assess,
    rank_carers,
    tier_of,
)
from callcenter.domain.geo import (
    DETOUR_FACTOR,
    EARTH_RADIUS_M,
    SETUP_S,
    SPEED_KMH,
    Place,
    Transport,
    distance_m,
    travel_time_s,
)

HOME_STATION = 1
BACKUP_STATION = 2
OTHER_STATION = 3
DOOR = Place(31.2304, 121.4737)
DESTINATION = Destination(
    household_id=7, place=DOOR, home_station_id=HOME_STATION, backup_station_id=BACKUP_STATION
)
METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180


def north_of(place: Place, metres: float) -> Place:
    """The point ``metres`` due north of ``place``."""
    return Place(place.lat + metres / METRES_PER_DEGREE, place.lon)


def carer(
    carer_id: int,
    *,
    station: int = HOME_STATION,
    metres: float = 500.0,
    transport: Transport = Transport.EBIKE,
    state: CarerState = CarerState.FREE,
    skills: frozenset[str] = frozenset(),
    code: str | None = None,
) -> CarerSnapshot:
    """A carer last seen ``metres`` north of the door."""
    return CarerSnapshot(
        id=carer_id,
        code=code or f"C{carer_id:03d}",
        name=f"Carer {carer_id}",
        phone=f"+86138000000{carer_id:02d}",
        language="zh",
        role="carer",
        station_id=station,
        skills=skills,
        transport=transport,
        position=north_of(DOOR, metres),
        state=state,
    )


def codes(carers: list[CarerSnapshot], **options: Any) -> list[str]:
    """The codes of the ranked carers, best first."""
    return [c.carer.code for c in rank_carers(carers, DESTINATION, **options)]


# --- geo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected_m", "tolerance_m"),
    [
        (Place(0, 0), Place(1, 0), 111_194.93, 0.01),  # one degree along a meridian
        (Place(0, 0), Place(0, 1), 111_194.93, 0.01),  # one degree along the equator
        # At 60 degrees north a degree of longitude is about half as long (the great circle
        # cuts slightly inside the parallel).
        (Place(60, 10), Place(60, 11), 55_596.93, 0.01),
        # Beijing Tiananmen to Shanghai People's Square: about 1 067 km as the crow flies.
        (Place(39.9042, 116.4074), Place(31.2304, 121.4737), 1_067_000, 2_000),
        (DOOR, DOOR, 0.0, 1e-9),
    ],
)
def test_distance_against_known_distances(
    a: Place, b: Place, expected_m: float, tolerance_m: float
) -> None:
    """Test that the haversine distance matches known distances, in both directions."""
    assert distance_m(a, b) == pytest.approx(expected_m, abs=tolerance_m)
    assert distance_m(b, a) == pytest.approx(distance_m(a, b))


@pytest.mark.parametrize("transport", list(Transport))
def test_travel_time_from_setup_detour_and_speed(transport: Transport) -> None:
    """Test that travel time is setup plus the detoured distance at the transport's speed."""
    assert travel_time_s(DOOR, DOOR, transport) == SETUP_S[transport]
    one_km = north_of(DOOR, 1000)
    expected = SETUP_S[transport] + 1000 * DETOUR_FACTOR / (SPEED_KMH[transport] / 3.6)
    assert travel_time_s(one_km, DOOR, transport) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("transport", list(Transport))
def test_travel_time_grows_with_distance(transport: Transport) -> None:
    """Test that travel time strictly increases as the start moves further away."""
    times = [travel_time_s(north_of(DOOR, m), DOOR, transport) for m in (0, 10, 200, 2_000, 20_000)]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


@pytest.mark.parametrize(
    ("metres", "fastest", "slowest"),
    [
        (5_000, Transport.CAR, Transport.WALK),  # far: speed wins
        (20_000, Transport.CAR, Transport.WALK),
        (50, Transport.WALK, Transport.CAR),  # next door: walking beats finding the car
    ],
)
def test_car_beats_walking_only_over_distance(
    metres: float, fastest: Transport, slowest: Transport
) -> None:
    """Test that a car is faster over long distances but walking is faster next door."""
    start = north_of(DOOR, metres)
    assert travel_time_s(start, DOOR, fastest) < travel_time_s(start, DOOR, slowest)


@settings(max_examples=200, deadline=None)
@given(
    near=st.floats(min_value=0, max_value=30_000),
    extra=st.floats(min_value=1, max_value=30_000),
    transport=st.sampled_from(list(Transport)),
)
def test_travel_time_is_monotonic(near: float, extra: float, transport: Transport) -> None:
    """Test that for any two distances the further start never arrives sooner."""
    closer = travel_time_s(north_of(DOOR, near), DOOR, transport)
    further = travel_time_s(north_of(DOOR, near + extra), DOOR, transport)
    assert further > closer


# --- ranking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("station", "tier"),
    [(HOME_STATION, Tier.HOME), (BACKUP_STATION, Tier.BACKUP), (OTHER_STATION, Tier.OTHER)],
)
def test_tier_of_station(station: int, tier: Tier) -> None:
    """Test that a carer's tier is home, backup or other by their station."""
    assert tier_of(carer(1, station=station), DESTINATION) is tier


@pytest.mark.parametrize(
    "state", [s for s in CarerState if s is not CarerState.FREE], ids=lambda s: s.value
)
def test_only_free_carers_are_ranked(state: CarerState) -> None:
    """Test that a carer off shift or busy on a call is never a candidate."""
    assert codes([carer(1, state=state), carer(2)]) == ["C002"]


def test_required_skills_filter_candidates() -> None:
    """Test that only carers with every required skill are ranked."""
    carers = [
        carer(1, skills=frozenset()),
        carer(2, skills=frozenset({"lift"})),
        carer(3, skills=frozenset({"lift", "nurse"})),
        carer(4, skills=frozenset({"nurse"})),
    ]
    assert codes(carers) == ["C001", "C002", "C003", "C004"]
    assert codes(carers, skills=("lift",)) == ["C002", "C003"]
    assert codes(carers, skills=["lift", "nurse"]) == ["C003"]
    assert codes(carers, skills={"dementia"}) == []


def test_excluded_carers_are_left_out() -> None:
    """Test that carers in ``exclude`` (declined, did not answer) are not ranked."""
    carers = [carer(1), carer(2), carer(3)]
    assert codes(carers, exclude={1, 3}) == ["C002"]
    assert codes(carers, exclude=()) == ["C001", "C002", "C003"]


def test_carers_whose_phone_cannot_get_texts_are_left_out() -> None:
    """Test that a free carer whose phone is marked broken is not ranked: the page could
    not reach them."""
    carers = [carer(1), replace(carer(2, metres=10), phone_problem="opted out"), carer(3)]
    assert codes(carers) == ["C001", "C003"]


def test_home_then_backup_then_other_within_the_circle() -> None:
    """Test that inside the circle the home station is preferred even when further away."""
    carers = [
        carer(1, station=OTHER_STATION, metres=100),
        carer(2, station=BACKUP_STATION, metres=300),
        carer(3, station=HOME_STATION, metres=1_500),
    ]
    ranked = rank_carers(carers, DESTINATION)
    assert [c.carer.code for c in ranked] == ["C003", "C002", "C001"]
    assert [c.tier for c in ranked] == [Tier.HOME, Tier.BACKUP, Tier.OTHER]
    assert all(c.within_circle for c in ranked)
    assert ranked[0].travel_s > ranked[2].travel_s


def test_outside_the_circle_ranks_after_inside_regardless_of_tier() -> None:
    """Test that a home carer who cannot make it in 15 min ranks after any who can."""
    walking_far = carer(1, station=HOME_STATION, metres=2_000, transport=Transport.WALK)
    ebike_other = carer(2, station=OTHER_STATION, metres=1_000)
    backup_far = carer(3, station=BACKUP_STATION, metres=6_000, transport=Transport.WALK)
    ranked = rank_carers([walking_far, backup_far, ebike_other], DESTINATION)
    assert [c.carer.code for c in ranked] == ["C002", "C001", "C003"]
    assert [c.within_circle for c in ranked] == [True, False, False]
    assert ranked[1].travel_s > SERVICE_CIRCLE_S
    # Outside the circle the tier still orders them: home before backup.
    assert ranked[1].tier is Tier.HOME and ranked[2].tier is Tier.BACKUP


def test_circle_can_be_changed() -> None:
    """Test that a wider service circle lets the home carer back in front."""
    walking_far = carer(1, station=HOME_STATION, metres=2_000, transport=Transport.WALK)
    ebike_other = carer(2, station=OTHER_STATION, metres=1_000)
    assert codes([walking_far, ebike_other]) == ["C002", "C001"]
    assert codes([walking_far, ebike_other], circle_s=3_600) == ["C001", "C002"]


def test_ties_broken_by_travel_time_then_code() -> None:
    """Test that within a tier the nearest goes first, and equal times go by code."""
    carers = [
        carer(1, metres=800, code="C009"),
        carer(2, metres=200, code="C005"),
        carer(3, metres=800, code="C001"),
        carer(4, metres=800, transport=Transport.CAR, code="C000"),
    ]
    ranked = rank_carers(carers, DESTINATION)
    assert [c.carer.code for c in ranked] == ["C005", "C001", "C009", "C000"]
    assert ranked[1].travel_s == ranked[2].travel_s


def test_last_known_position_not_station_decides() -> None:
    """Test that travel time is measured from where the carer was last seen."""
    out_on_a_visit = carer(1, metres=5_000)
    at_the_station = carer(2, metres=400)
    ranked = rank_carers([out_on_a_visit, at_the_station], DESTINATION)
    assert [c.carer.code for c in ranked] == ["C002", "C001"]
    for candidate in ranked:
        assert candidate.travel_s == travel_time_s(
            candidate.carer.position, DOOR, candidate.carer.transport
        )


def test_assess_reports_tier_time_and_circle() -> None:
    """Test that assess gives the tier, the travel time and whether it is within the circle."""
    candidate = assess(carer(1, station=BACKUP_STATION, metres=1_000), DESTINATION)
    assert candidate.tier is Tier.BACKUP
    assert candidate.travel_s == pytest.approx(60 + 1000 * DETOUR_FACTOR / 5)
    assert candidate.within_circle
    assert candidate.distance_m == pytest.approx(1_000, rel=1e-3)
    assert not assess(carer(1, metres=1_000), DESTINATION, circle_s=100).within_circle
    assert candidate.sort_key() == (False, 1, candidate.travel_s, "C001")


CARERS = st.builds(
    carer,
    st.integers(1, 40),
    station=st.sampled_from([HOME_STATION, BACKUP_STATION, OTHER_STATION]),
    metres=st.floats(0, 8_000),
    transport=st.sampled_from(list(Transport)),
    state=st.sampled_from(list(CarerState)),
    skills=st.frozensets(st.sampled_from(["lift", "nurse"])),
)


@settings(max_examples=200, deadline=None)
@given(
    carers=st.lists(CARERS, max_size=12, unique_by=lambda c: c.id),
    skills=st.frozensets(st.sampled_from(["lift", "nurse"])),
    exclude=st.frozensets(st.integers(1, 40)),
)
def test_ranking_is_filtered_and_sorted(
    carers: list[CarerSnapshot], skills: frozenset[str], exclude: frozenset[int]
) -> None:
    """Test that any ranking holds exactly the eligible carers, in sort-key order."""
    ranked = rank_carers(carers, DESTINATION, skills=skills, exclude=exclude)
    eligible = {
        c.id
        for c in carers
        if c.state is CarerState.FREE and skills <= c.skills and c.id not in exclude
    }
    assert {c.carer.id for c in ranked} == eligible
    keys = [c.sort_key() for c in ranked]
    assert keys == sorted(keys)
    inside = [c.within_circle for c in ranked]
    assert inside == sorted(inside, reverse=True)  # nobody inside the circle after one outside


# Carers of a district standing at a few spots (most at their station), some sharing a
# code's sort position with others through equal travel times.
SPOTS = st.sampled_from([0.0, 400.0, 2_500.0, 3_000.0, 7_000.0])
STANDING_CARERS = st.builds(
    carer,
    st.integers(1, 60),
    station=st.sampled_from([HOME_STATION, BACKUP_STATION, OTHER_STATION]),
    metres=st.one_of(SPOTS, st.floats(0, 8_000)),
    transport=st.sampled_from(list(Transport)),
    state=st.sampled_from([CarerState.FREE, CarerState.FREE, CarerState.DISPATCHED]),
    skills=st.frozensets(st.sampled_from(["lift", "nurse"])),
)


@settings(max_examples=300, deadline=None)
@given(
    carers=st.lists(STANDING_CARERS, max_size=40, unique_by=lambda c: c.id),
    skills=st.frozensets(st.sampled_from(["lift"])),
    circle_s=st.sampled_from([SERVICE_CIRCLE_S, 300.0, 600.0]),
    read=st.integers(0, 45),
)
def test_ranking_read_in_part_or_whole_is_every_carer_assessed_and_sorted(
    carers: list[CarerSnapshot], skills: frozenset[str], circle_s: float, read: int
) -> None:
    """Test that the ranking a decision reads (dispatch.Ranking, put in order only as far
    as it is read) gives what assessing every eligible carer and sorting them gives, in
    part and in whole, read once or again."""
    everyone = sorted(
        (
            assess(c, DESTINATION, circle_s=circle_s)
            for c in carers
            if c.state is CarerState.FREE and skills <= c.skills
        ),
        key=lambda c: c.sort_key(),
    )
    ranking = Ranking(carers, DESTINATION, skills=skills, circle_s=circle_s)
    assert list(itertools.islice(ranking, read)) == everyone[:read]
    assert list(ranking) == everyone
    assert rank_carers(carers, DESTINATION, skills=skills, circle_s=circle_s) == everyone


def test_ranking_measures_once_per_spot_and_makes_only_the_candidates_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test that ranking a thousand carers standing at three stations measures three
    distances, and that reading the best two makes two candidates, not a thousand."""
    measured: list[tuple[Place, Place]] = []
    made: list[CarerSnapshot] = []
    real_distance, real_candidate = dispatch.distance_m, dispatch.Candidate

    def counted_distance(a: Place, b: Place) -> float:
        measured.append((a, b))
        return real_distance(a, b)

    def counted_candidate(carer: CarerSnapshot, *args: Any) -> Any:
        made.append(carer)
        return real_candidate(carer, *args)

    monkeypatch.setattr(dispatch, "distance_m", counted_distance)
    monkeypatch.setattr(dispatch, "Candidate", counted_candidate)
    stations = [(HOME_STATION, 2_000.0), (BACKUP_STATION, 600.0), (OTHER_STATION, 300.0)]
    carers = [
        carer(n, station=station, metres=metres)
        for n in range(1, 1_001)
        for station, metres in [stations[n % 3]]
    ]
    best = list(itertools.islice(Ranking(carers, DESTINATION), 2))
    assert len(measured) == 3
    assert len(made) == 2
    # Home station first within the circle, nearer or not; the lowest codes first.
    assert [c.carer.code for c in best] == ["C003", "C006"]
