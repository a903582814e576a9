"""Devices: listed, added to a household, moved to another, given a new login and
retired; the broker's login is issued, moved and revoked inside the transaction that
records the change."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain import register as rules
from callcenter.domain.register import Problem
from callcenter.engine.device_logins import DeviceLogin, DeviceLogins
from callcenter.engine.register.changes import (
    BrokerRefusedError,
    Change,
    RecordInUseError,
    RecordNotFoundError,
    RegisterRefusedError,
    audit_row,
    changing,
    known,
    refuse_if,
    taken_refusal,
)
from callcenter.store import models as m

log = logging.getLogger("callcenter.register")

_T = TypeVar("_T")

# --- devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceView:
    serial: str
    kind: str
    household: str
    online: bool
    battery_pct: int | None
    rssi_dbm: int | None
    last_seen_at: datetime | None
    retired_at: datetime | None


def _device_json(device: m.Device, household: str) -> dict[str, Any]:
    return {
        "serial": device.serial,
        "kind": device.kind,
        "household": household,
        "retired_at": None if device.retired_at is None else device.retired_at.isoformat(),
    }


async def devices(
    engine: AsyncEngine, household: str | None = None, *, serial: str | None = None
) -> list[DeviceView]:
    """Devices (of one household, the one with ``serial``, or all), in service first,
    by serial."""
    query = select(m.Device, m.Household.code).join(m.Household)
    if household is not None:
        query = query.where(m.Household.code == household)
    if serial is not None:
        query = query.where(m.Device.serial == serial)
    async with AsyncSession(engine) as session:
        rows = (await session.execute(query.order_by(m.Device.serial))).all()
    found = [
        DeviceView(
            d.serial,
            d.kind,
            code,
            d.online,
            d.battery_pct,
            d.rssi_dbm,
            d.last_seen_at,
            d.retired_at,
        )
        for d, code in rows
    ]
    return sorted(found, key=lambda d: (d.retired_at is not None, d.serial))


async def _device_row(session: AsyncSession, serial: str) -> tuple[m.Device, str]:
    row = (
        await session.execute(
            select(m.Device, m.Household.code)
            .join(m.Household)
            .where(m.Device.serial == serial)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise RecordNotFoundError("device", serial)
    return row[0], row[1]


async def _broker(call: Awaitable[_T], what: str) -> _T:
    try:
        return await call
    except Exception as error:  # the broker's client says why; the register is untouched
        raise BrokerRefusedError(f"the broker did not {what}: {error}") from error


async def add_device(
    engine: AsyncEngine,
    record: rules.DeviceRecord,
    change: Change,
    *,
    today: date,
    logins: DeviceLogins,
) -> DeviceLogin | None:
    """Register a device to a household and issue its broker login (None when the
    broker takes no per-device logins); the password is in the answer only."""
    issued: DeviceLogin | None = None
    try:
        async with changing(engine) as session:
            facts = await known(session, today)
            # Only whether this serial is taken (retired devices' included): not every one.
            taken = select(m.Device.serial).where(m.Device.serial == record.serial)
            facts = dataclasses.replace(
                facts, taken_serials=frozenset((await session.scalars(taken)).all())
            )
            refuse_if(rules.device_problems(record, facts))
            household_id = await session.scalar(
                select(m.Household.id).where(m.Household.code == record.household)
            )
            device = m.Device(
                serial=record.serial, kind=record.kind, household_id=household_id, online=False
            )
            session.add(device)
            try:
                await session.flush()
            except IntegrityError as error:
                raise taken_refusal(error, "serial", record.serial) from None
            issued = await _broker(
                logins.issue(record.serial, record.household), "take the device's login"
            )
            audit_row(
                session,
                change,
                action="add_device",
                household_id=household_id,
                before=None,
                after=_device_json(device, record.household),
                detail={"login": issued is not None},
            )
    except BaseException:
        if issued is not None:
            await _take_back(logins, record.serial)
        raise
    return issued


async def _take_back(logins: DeviceLogins, serial: str) -> None:
    """Revoke a login whose record did not commit (best effort: sync() finds the rest)."""
    try:
        await logins.revoke(serial)
    except Exception as error:
        log.error(
            "device %s: its login could not be taken back (%s); the next sync will", serial, error
        )


async def move_device(
    engine: AsyncEngine,
    serial: str,
    household: str,
    change: Change,
    *,
    logins: DeviceLogins,
) -> DeviceLogin | None:
    """Move a device to another household: its events stay with it, a move is
    recorded, its old password stops working and a new one is issued."""
    async with changing(engine) as session:
        device, old = await _device_row(session, serial)
        if device.retired_at is not None:
            raise RecordInUseError(f"device {serial} is retired; add it again to use it")
        target = await session.scalar(select(m.Household.id).where(m.Household.code == household))
        if target is None:
            raise RegisterRefusedError(
                [Problem("household", "unknown_household", {"code": household})]
            )
        if target == device.household_id:
            raise RegisterRefusedError(
                [Problem("household", "same_household", {"code": household})]
            )
        before = _device_json(device, old)
        before_household = device.household_id
        session.add(
            m.DeviceMove(
                device_id=device.id,
                from_household_id=device.household_id,
                to_household_id=target,
                at=change.at,
                by=change.actor[:96],
            )
        )
        device.household_id = target
        device.online = False
        issued = await _broker(logins.move(serial, household), "move the device's login")
        detail = {"from": old, "to": household, "login": issued is not None}
        # One row for each household, so each one's audit shows the device coming or going.
        for household_id in (before_household, target):
            audit_row(
                session,
                change,
                action="move_device",
                household_id=household_id,
                before=before,
                after=_device_json(device, household),
                detail=detail,
            )
    return issued


async def retire_device(
    engine: AsyncEngine, serial: str, change: Change, *, logins: DeviceLogins
) -> None:
    """Take a device out of service: its login is revoked first (a device that can still
    publish is not retired), then ingest no longer takes its messages; its events stay."""
    async with changing(engine) as session:
        device, household = await _device_row(session, serial)
        if device.retired_at is not None:
            return
        before = _device_json(device, household)
        await _broker(logins.revoke(serial), "revoke the device's login")
        device.retired_at = change.at
        device.online = False
        audit_row(
            session,
            change,
            action="retire_device",
            household_id=device.household_id,
            before=before,
            after=_device_json(device, household),
        )


async def renew_login(
    engine: AsyncEngine, serial: str, change: Change, *, logins: DeviceLogins
) -> DeviceLogin | None:
    """A new broker login for a device in service (its password lost, or it was added
    by an import, which issues none): the old password stops working; the new one is in
    the answer only. None when the broker takes no per-device logins."""
    async with changing(engine) as session:
        device, household = await _device_row(session, serial)
        if device.retired_at is not None:
            raise RecordInUseError(f"device {serial} is retired; add it again to use it")
        issued = await _broker(logins.move(serial, household), "issue the device's login")
        audit_row(
            session,
            change,
            action="renew_login",
            household_id=device.household_id,
            before=None,
            after=None,
            detail={"serial": serial, "login": issued is not None},
        )
    return issued
