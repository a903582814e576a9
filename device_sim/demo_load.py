"""How busy ``callcenter demo`` is: a calm evening matched to the carers on shift now, or
a storm on request.

A newcomer's first look at the board should be a desk that keeps up. The calm load is
worked out from two things the demo knows when it starts: how many carers are on shift
now (the server's own shift rules, read from the database), and how often the
district's households really press at this hour (``households.HouseholdProfile`` and its
daily rhythm). Each call keeps a carer about ``visit_s`` (answering, travelling, on
scene, as ``field.FieldProfile`` plays them); the calm demo presses a third as often as
the carers on shift can take calls, and never less often than the households would. A
storm is twice as many emergency presses as there are carers on shift, each from
another household, within a minute: soon nobody is free and the escalations start.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.domain.dispatch import CarerState
from callcenter.engine.district import District
from device_sim.district import CALL_BUTTON, DeviceSpec
from device_sim.field import FieldProfile
from device_sim.households import HouseholdProfile
from device_sim.simulation import Simulation

log = logging.getLogger("callcenter.demo")

# The calm demo keeps about this share of the carers on shift out on calls.
CALM_SHARE = 1 / 3
# Door to door in the demo district, one way: the stations lie among their households.
TRAVEL_S = 600.0
# A storm: this many emergency presses for every carer on shift, over STORM_S seconds.
STORM_PER_CARER = 2
STORM_S = 60.0
# The first call of a calm demo comes this soon after the district is online, so a
# newcomer has a call to look at before the next one is due.
FIRST_CALL_AFTER_S = 15.0


@dataclass(frozen=True)
class OnShift:
    """The carers on shift now, as the desk sees them, and their shift patterns."""

    carers: int
    free: int
    patterns: tuple[str, ...]

    @property
    def named(self) -> str:
        """``18 carers on shift (NIGHT)``."""
        shifts = f" ({', '.join(self.patterns)})" if self.patterns else ""
        return f"{self.carers} carers on shift{shifts}"


@dataclass(frozen=True)
class DemoLoad:
    """The demo's presses across the district and where the figure comes from."""

    presses_per_hour: float
    # What the district's households would press at this hour, per hour.
    real_per_hour: float
    # How many calls an hour the carers on shift can take (each busy visit_s).
    carry_per_hour: float
    on_shift: OnShift
    # The press rate was given with --press-interval rather than worked out.
    given: bool = False

    @property
    def press_rate(self) -> float:
        """Presses per second (the simulation's ``press_rate``)."""
        return self.presses_per_hour / 3600.0

    @property
    def storm_presses(self) -> int:
        """Emergency presses in one storm: twice the carers on shift (at least 10)."""
        return max(10, STORM_PER_CARER * self.on_shift.carers)

    def describe(self) -> str:
        """One line saying the load and why: ``load: 7.4 presses an hour ...``."""
        every = 3600.0 / self.presses_per_hour if self.presses_per_hour > 0 else 0.0
        pace = f"one every {_duration(every)}" if every else "none"
        carry = (
            f"the {self.carry_per_hour:.1f} calls an hour the {self.on_shift.named} can take, "
            f"each busy about {visit_s() / 60:.0f} min ({self.on_shift.free} free now)"
        )
        if self.given:
            share = self.presses_per_hour / self.carry_per_hour if self.carry_per_hour else 0.0
            why = f"set by --press-interval: {share:.1f} times {carry}"
        else:
            why = (
                f"calm: a third of {carry}, and at least the {self.real_per_hour:.1f} an hour "
                "the district's households press at this hour"
            )
        return f"load: {self.presses_per_hour:.1f} presses an hour ({pace}), {why}"


def visit_s(field: FieldProfile | None = None) -> float:
    """How long one call keeps a carer: answering the page, getting there, on scene."""
    profile = field or FieldProfile()
    on_scene = sum(profile.on_scene_s) / 2
    return profile.answer_median_s + TRAVEL_S + on_scene


def real_per_hour(
    households: int, local_hour: int, profile: HouseholdProfile | None = None
) -> float:
    """Presses an hour the district's households make at ``local_hour`` (0-23): alarms,
    falls, service requests and presses cancelled later, shaped by the daily rhythm."""
    chosen = profile or HouseholdProfile()
    per_day = (
        chosen.emergency_per_day
        + chosen.fall_per_day
        + chosen.service_per_day
        + chosen.accidental_per_day
    )
    rhythm = chosen.rhythm[local_hour] / (sum(chosen.rhythm) / len(chosen.rhythm))
    return households * per_day / 24.0 * rhythm


def calm_load(households: int, on_shift: OnShift, local_hour: int) -> DemoLoad:
    """The calm evening: a third of what the carers on shift can take, and never less
    than the households would press at this hour."""
    carry = on_shift.carers * 3600.0 / visit_s()
    real = real_per_hour(households, local_hour)
    return DemoLoad(max(real, carry * CALM_SHARE), real, carry, on_shift)


def given_load(households: int, on_shift: OnShift, local_hour: int, interval_s: float) -> DemoLoad:
    """The load ``--press-interval`` sets, with the same figures beside it."""
    calm = calm_load(households, on_shift, local_hour)
    return DemoLoad(3600.0 / interval_s, calm.real_per_hour, calm.carry_per_hour, on_shift, True)


async def carers_on_shift(district: District, session: AsyncSession, now: datetime) -> OnShift:
    """Who is on shift now, by the desk's own rules (shift patterns, holidays, roster)."""
    registry = await district.registry()
    carers = [c for c in await district.carers(session, now) if c.state is not CarerState.OFF_SHIFT]
    patterns = sorted({registry.carers[c.id].pattern for c in carers if c.id in registry.carers})
    free = sum(1 for c in carers if c.state is CarerState.FREE)
    return OnShift(len(carers), free, tuple(p for p in patterns if p))


def call_buttons(devices: Sequence[DeviceSpec]) -> list[str]:
    """One call button per household (its first), in household order."""
    first: dict[str, str] = {}
    for device in devices:
        if device.kind == CALL_BUTTON:
            first.setdefault(device.household, device.serial)
    return [first[household] for household in sorted(first)]


async def run_storm(
    simulation: Simulation, buttons: Sequence[str], presses: int, rng: random.Random
) -> int:
    """Emergency presses from ``presses`` different households, evenly over STORM_S
    seconds; how many were pressed."""
    chosen = rng.sample(list(buttons), min(presses, len(buttons)))
    spacing = STORM_S / max(1, len(chosen))
    log.info(
        "storm: %d emergency presses from %d households over %.0f s (one every %.1f s)",
        len(chosen),
        len(chosen),
        STORM_S,
        spacing,
    )
    for serial in chosen:
        simulation.press(serial)
        await asyncio.sleep(spacing)
    log.info("storm over: %d presses; the load goes on as before", len(chosen))
    return len(chosen)


def _duration(seconds: float) -> str:
    if seconds >= 90:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
