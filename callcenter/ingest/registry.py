"""The device registry as ingest sees it: which household each serial belongs to and
whether it is online. Loaded from the database, kept current by ingest itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from callcenter.store.db import in_slices
from callcenter.store.models import Device, Household


@dataclass(frozen=True)
class DeviceState:
    """One registered device and its liveness, as last committed."""

    device_id: int
    serial: str
    household_id: int
    household_code: str
    online: bool
    last_seen_at: datetime | None
    battery_pct: int | None
    # The last heartbeat's signal strength, dBm; written with liveness, never alone.
    rssi_dbm: int | None = None
    # The last_seen_at the database holds; it may trail last_seen_at by up to
    # LIVENESS_WRITE_INTERVAL (see ingest.batch).
    stored_seen_at: datetime | None = None
    # When ingest last raised a fault for this device's wrong clock (kept in memory only).
    clock_reported_at: datetime | None = None


_FIELDS = frozenset(f.name for f in fields(DeviceState))


def evolve(state: DeviceState, **changes: Any) -> DeviceState:
    """``dataclasses.replace(state, **changes)``, without its look at every field on each
    call: ingest makes one or two for every message it takes (see ingest.batch)."""
    if not changes.keys() <= _FIELDS:
        raise TypeError(f"DeviceState has no field {sorted(changes.keys() - _FIELDS)}")
    copy = object.__new__(DeviceState)
    copy.__dict__.update(state.__dict__, **changes)
    return copy


class DeviceRegistry:
    """Serial -> DeviceState for every registered device."""

    def __init__(self, devices: Iterable[DeviceState] = ()) -> None:
        self._by_serial = {d.serial: d for d in devices}

    def __len__(self) -> int:
        return len(self._by_serial)

    def get(self, serial: str) -> DeviceState | None:
        return self._by_serial.get(serial)

    def all(self) -> list[DeviceState]:
        return list(self._by_serial.values())

    def update(self, states: Iterable[DeviceState]) -> None:
        """Record states that have been committed."""
        for state in states:
            self._by_serial[state.serial] = state


_QUERY = select(
    Device.id,
    Device.serial,
    Device.household_id,
    Household.code,
    Device.online,
    Device.last_seen_at,
    Device.battery_pct,
    Device.rssi_dbm,
).join(Household, Device.household_id == Household.id)
# A retired device is no longer registered: its messages are an unknown device's.
_QUERY = _QUERY.where(Device.retired_at.is_(None))


async def load_devices(
    connection: AsyncConnection, serials: Iterable[str] | None = None
) -> list[DeviceState]:
    """Read registered devices from the database: all of them, or just these serials."""
    query = _QUERY if serials is None else _QUERY.where(Device.serial.in_(list(serials)))
    result = await connection.execute(query)
    return [DeviceState(*row, stored_seen_at=row.last_seen_at) async for row in in_slices(result)]
