"""Which devices the simulator plays: generated like the demo district, or read from a database."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from device_sim.settings import SimulatorConfigError

BASE_UNIT = "base_unit"
CALL_BUTTON = "call_button"

# The protocol's rule for household codes and serials (topic levels).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class DeviceSpec:
    """One enrolled device: the household it belongs to, its serial and its kind."""

    household: str
    serial: str
    kind: str


def household_code(number: int) -> str:
    """The demo district's code for household ``number`` (1 -> ``H0001``)."""
    return f"H{number:04d}"


def district_devices(households: int) -> list[DeviceSpec]:
    """Base unit ``BU-Hnnnn`` and call button ``CB-Hnnnn`` for households H0001.., as seeded."""
    if households < 1:
        raise SimulatorConfigError(f"need at least one household, got {households}")
    devices: list[DeviceSpec] = []
    for number in range(1, households + 1):
        code = household_code(number)
        devices.append(DeviceSpec(code, f"BU-{code}", BASE_UNIT))
        devices.append(DeviceSpec(code, f"CB-{code}", CALL_BUTTON))
    return devices


async def load_devices_from_database(url: str) -> list[DeviceSpec]:
    """Every device registered in the database at ``url`` (see demo_district)."""
    # Imported here: reading a database needs SQLAlchemy, --households does not.
    from device_sim.demo_district import load_device_directory

    try:
        rows = await load_device_directory(url)
    except Exception as exc:
        # A wrong URL or an unseeded database is the user's to fix: say so plainly.
        raise SimulatorConfigError(f"could not read devices from {url}: {exc}") from exc
    if not rows:
        raise SimulatorConfigError(f"the database at {url} has no devices; seed it first")
    return [DeviceSpec(household, serial, kind) for household, serial, kind in rows]


def check_devices(devices: Sequence[DeviceSpec]) -> None:
    """Raise SimulatorConfigError for an empty list, duplicate serials or bad names."""
    if not devices:
        raise SimulatorConfigError("no devices to simulate")
    seen: set[str] = set()
    duplicates: list[str] = []
    bad: list[str] = []
    for device in devices:
        if device.serial in seen:
            duplicates.append(device.serial)
        seen.add(device.serial)
        if not _NAME.match(device.serial) or not _NAME.match(device.household):
            bad.append(f"{device.household}/{device.serial}")
    problems: list[str] = []
    if duplicates:
        problems.append(
            f"{len(duplicates)} serial(s) appear twice, e.g. {duplicates[0]!r}; "
            "two devices with one client id would keep disconnecting each other"
        )
    if bad:
        problems.append(
            f"{len(bad)} household/serial name(s) are not valid topic levels "
            f"(1-64 of A-Z a-z 0-9 _ -), e.g. {bad[0]!r}"
        )
    if problems:
        raise SimulatorConfigError("; ".join(problems))
