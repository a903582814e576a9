"""How the district's households behave over days: when residents press, fall, cancel,
press twice, and when their devices run low, go offline or drop their connection.

Pure and seeded: :func:`plan_household_events` turns a profile, a list of households and
a time window into the ground truth of what the devices will do, in time order. The
simulator on virtual time plays it against the call centre; the same seed always gives
the same plan.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from callcenter.domain.events import EventKind


class Happening(StrEnum):
    """What a household's devices do, as the ground-truth log names it."""

    EMERGENCY = "emergency"  # a resident presses the call button for help
    SERVICE = "service"  # a pager service request from the base unit
    FALL = "fall"  # the call button detects a fall
    ACCIDENTAL = "accidental"  # a press the resident cancels a little later
    PRESS_AGAIN = "press_again"  # a second press while help is on its way
    LOW_BATTERY = "low_battery"  # the call button reports a low battery
    OFFLINE = "offline"  # a device loses power or its line for a while
    FLAKY = "flaky"  # a connection that drops and comes straight back


# Relative call volume per local hour, 00:00 to 23:00: quiet nights, a morning peak as
# residents get up and wash, a smaller one around the evening meal and bedtime.
DAILY_RHYTHM: tuple[float, ...] = (
    0.35, 0.3, 0.3, 0.3, 0.35, 0.5, 1.0, 1.8,  # 00-07
    2.1, 1.9, 1.5, 1.3, 1.2, 1.0, 1.0, 1.0,  # 08-15
    1.1, 1.3, 1.6, 1.7, 1.5, 1.1, 0.7, 0.45,  # 16-23
)  # fmt: skip


@dataclass(frozen=True)
class HouseholdProfile:
    """Rates per household per day (averaged over the day; the rhythm shapes them).

    The defaults are a district of frail elderly people living alone or as couples:
    about one genuine alarm per household every two to three weeks, plus service
    requests, accidental presses and the devices' own troubles."""

    name: str = "district"
    emergency_per_day: float = 0.045
    service_per_day: float = 0.02
    fall_per_day: float = 0.006
    accidental_per_day: float = 0.02
    # Of genuine alarms (emergency, fall): the share where the resident presses again.
    press_again_share: float = 0.15
    low_battery_per_day: float = 0.002
    offline_per_day: float = 0.004  # per device
    flaky_per_day: float = 0.02  # per device
    # How long things take, in seconds (low, high; drawn uniformly unless said).
    cancel_after_s: tuple[float, float] = (4.0, 40.0)
    press_again_after_s: tuple[float, float] = (20.0, 240.0)
    offline_for_s: tuple[float, float] = (600.0, 4 * 3600.0)
    flaky_for_s: tuple[float, float] = (2.0, 45.0)
    rhythm: tuple[float, ...] = DAILY_RHYTHM

    def __post_init__(self) -> None:
        if len(self.rhythm) != 24 or min(self.rhythm) < 0 or max(self.rhythm) <= 0:
            raise ValueError("a daily rhythm is 24 non-negative hourly weights, not all 0")
        for name in (
            "emergency_per_day",
            "service_per_day",
            "fall_per_day",
            "accidental_per_day",
            "low_battery_per_day",
            "offline_per_day",
            "flaky_per_day",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative")
        if not 0 <= self.press_again_share <= 1:
            raise ValueError("press_again_share is a share, 0..1")

    def scaled(self, factor: float) -> HouseholdProfile:
        """The same district with every resident-caused rate times ``factor``."""
        return replace(
            self,
            name=f"{self.name}x{factor:g}",
            emergency_per_day=self.emergency_per_day * factor,
            service_per_day=self.service_per_day * factor,
            fall_per_day=self.fall_per_day * factor,
            accidental_per_day=self.accidental_per_day * factor,
        )


PROFILES: dict[str, HouseholdProfile] = {
    "district": HouseholdProfile(),
    # A winter week: more falls and alarms, more dropped lines.
    "winter": HouseholdProfile(
        name="winter",
        emergency_per_day=0.065,
        fall_per_day=0.012,
        offline_per_day=0.008,
        flaky_per_day=0.04,
    ),
    # Devices only, for connection tests: nobody presses.
    "devices_only": HouseholdProfile(
        name="devices_only",
        emergency_per_day=0.0,
        service_per_day=0.0,
        fall_per_day=0.0,
        accidental_per_day=0.0,
        press_again_share=0.0,
        low_battery_per_day=0.0,
    ),
}


@dataclass(frozen=True)
class Home:
    """One household as the simulator needs it: code, place and its two devices."""

    code: str
    lat: float
    lon: float
    base_unit: str
    call_button: str
    home_station: str = ""


@dataclass(frozen=True, order=True)
class Planned:
    """One thing a device will do: an event (``kind`` set) or a connection change."""

    at: datetime
    order: int
    household: str = field(compare=False)
    serial: str = field(compare=False)
    happening: Happening = field(compare=False)
    kind: EventKind | None = field(compare=False, default=None)
    # For OFFLINE and FLAKY: how long the device stays away, seconds.
    away_s: float = field(compare=False, default=0.0)


class _Rhythm:
    """Draws moments from a Poisson process shaped by the hourly rhythm (by thinning)."""

    def __init__(self, rhythm: Sequence[float], zone: ZoneInfo) -> None:
        self._weights = tuple(w / (sum(rhythm) / 24) for w in rhythm)  # mean 1
        self._peak = max(self._weights)
        self._zone = zone

    def weight(self, moment: datetime) -> float:
        return self._weights[moment.astimezone(self._zone).hour]

    def moments(
        self, rng: random.Random, per_day: float, start: datetime, end: datetime
    ) -> list[datetime]:
        """Moments in [start, end) of a process averaging ``per_day`` a day."""
        if per_day <= 0:
            return []
        found: list[datetime] = []
        rate_s = per_day * self._peak / 86400.0
        at = start
        while True:
            at += timedelta(seconds=rng.expovariate(rate_s))
            if at >= end:
                return found
            if rng.random() * self._peak < self.weight(at):
                found.append(at)


def plan_household_events(
    profile: HouseholdProfile,
    homes: Sequence[Home],
    start: datetime,
    end: datetime,
    *,
    seed: int,
    zone: ZoneInfo,
) -> list[Planned]:
    """Everything the households' devices do in [start, end), in time order.

    District-wide processes (so the cost grows with events, not with households):
    each drawn moment goes to a household picked at random."""
    if not homes:
        return []
    rng = random.Random(seed)
    rhythm = _Rhythm(profile.rhythm, zone)
    flat = _Rhythm((1.0,) * 24, zone)
    count = len(homes)
    plan: list[tuple[datetime, str, str, Happening, EventKind | None, float]] = []

    def pick() -> Home:
        return homes[min(int(rng.random() * count), count - 1)]

    def spread(low_high: tuple[float, float]) -> float:
        low, high = low_high
        return low + (high - low) * rng.random()

    for happening, per_day, kind in (
        (Happening.EMERGENCY, profile.emergency_per_day, EventKind.EMERGENCY_PRESS),
        (Happening.FALL, profile.fall_per_day, EventKind.FALL_DETECTED),
        (Happening.SERVICE, profile.service_per_day, EventKind.SERVICE_REQUEST),
        (Happening.ACCIDENTAL, profile.accidental_per_day, EventKind.EMERGENCY_PRESS),
    ):
        for at in rhythm.moments(rng, per_day * count, start, end):
            home = pick()
            serial = home.base_unit if kind is EventKind.SERVICE_REQUEST else home.call_button
            plan.append((at, home.code, serial, happening, kind, 0.0))
            if happening is Happening.ACCIDENTAL:
                cancel = at + timedelta(seconds=spread(profile.cancel_after_s))
                plan.append((cancel, home.code, serial, happening, EventKind.CANCEL, 0.0))
            elif happening is not Happening.SERVICE and rng.random() < profile.press_again_share:
                again = at + timedelta(seconds=spread(profile.press_again_after_s))
                plan.append(
                    (again, home.code, serial, Happening.PRESS_AGAIN, EventKind.EMERGENCY_PRESS, 0)
                )
    for at in flat.moments(rng, profile.low_battery_per_day * count, start, end):
        home = pick()
        plan.append(
            (at, home.code, home.call_button, Happening.LOW_BATTERY, EventKind.LOW_BATTERY, 0.0)
        )
    for happening, per_day, away in (
        (Happening.OFFLINE, profile.offline_per_day, profile.offline_for_s),
        (Happening.FLAKY, profile.flaky_per_day, profile.flaky_for_s),
    ):
        for at in flat.moments(rng, per_day * 2 * count, start, end):
            home = pick()
            serial = home.base_unit if rng.random() < 0.5 else home.call_button
            plan.append((at, home.code, serial, happening, None, spread(away)))
    plan.sort(key=lambda item: item[0])
    return [
        Planned(at, i, household, serial, happening, kind, away)
        for i, (at, household, serial, happening, kind, away) in enumerate(plan)
        if at < end
    ]


def storm(
    homes: Sequence[Home], at: datetime, *, share: float, within_s: float, seed: int, first: int
) -> list[Planned]:
    """``share`` of the households each press once within ``within_s`` seconds of ``at``
    (a power cut, an earth tremor): distinct households, moments uniform over the minute.
    ``first`` numbers them after the rest of the plan."""
    if not 0 < share <= 1:
        raise ValueError("a storm's share of households is in (0, 1]")
    rng = random.Random(seed)
    chosen = rng.sample(list(homes), max(1, round(share * len(homes))))
    moments = sorted(at + timedelta(seconds=within_s * rng.random()) for _ in chosen)
    return [
        Planned(
            moment,
            first + i,
            home.code,
            home.call_button,
            Happening.EMERGENCY,
            EventKind.EMERGENCY_PRESS,
        )
        for i, (moment, home) in enumerate(zip(moments, chosen, strict=True))
    ]


def merge(*plans: Sequence[Planned]) -> list[Planned]:
    """Plans in one time order (ties in ``order``)."""
    return sorted(itertools.chain(*plans))


def expected_per_day(profile: HouseholdProfile, households: int) -> dict[str, float]:
    """Roughly how many of each a day the profile gives ``households`` (for reports)."""
    genuine = profile.emergency_per_day + profile.fall_per_day
    return {
        "alarms": round(households * (genuine + profile.accidental_per_day), 1),
        "service_requests": round(households * profile.service_per_day, 1),
        "presses_again": round(households * genuine * profile.press_again_share, 1),
        "offline_spells": round(2 * households * profile.offline_per_day, 1),
        "dropped_connections": round(2 * households * profile.flaky_per_day, 1),
    }
