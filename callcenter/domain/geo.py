"""Distances and travel times on the ground, from coordinates and a way of travelling."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_000.0
# Streets are not straight lines: the path a carer takes is about this much longer than
# the great-circle distance in a city of blocks and compounds.
DETOUR_FACTOR = 1.3


class Transport(enum.StrEnum):
    """How a carer gets about."""

    WALK = "walk"
    BICYCLE = "bicycle"
    EBIKE = "ebike"
    CAR = "car"


# Door-to-door city speeds in km/h, and minutes to get going (shoes, helmet, car park).
SPEED_KMH: dict[Transport, float] = {
    Transport.WALK: 4.5,
    Transport.BICYCLE: 12.0,
    Transport.EBIKE: 18.0,
    Transport.CAR: 22.0,
}
SETUP_S: dict[Transport, float] = {
    Transport.WALK: 30.0,
    Transport.BICYCLE: 60.0,
    Transport.EBIKE: 60.0,
    Transport.CAR: 180.0,
}


@dataclass(frozen=True)
class Place:
    """A point on the map (WGS84 degrees)."""

    lat: float
    lon: float


def distance_m(a: Place, b: Place) -> float:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlambda = math.radians(b.lon - a.lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def travel_time_s(start: Place, end: Place, transport: Transport) -> float:
    """Estimated seconds from ``start`` to the door at ``end``."""
    return travel_time_over(distance_m(start, end), transport)


def travel_time_over(distance: float, transport: Transport) -> float:
    """Estimated seconds to the door ``distance`` metres away as the crow flies."""
    return SETUP_S[transport] + distance * DETOUR_FACTOR / (SPEED_KMH[transport] * 1000 / 3600)
