"""The register's routes for administrators: households with their residents, contacts
and numbers; devices added, moved, given a new login and retired; stations, carers and
shift patterns (docs/register.md). The rota, the roster and the escalation policies are
web/rota.py; what both share (bodies, answers, who made a change) is
web/register_common.py. A refusal from the register is answered by web/errors.py
(``from_domain``). Every change is audited by engine/register/ and reaches the desk at
once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from callcenter.domain import register as rules
from callcenter.engine import register as reg
from callcenter.engine.device_logins import DeviceLogin
from callcenter.web import audit
from callcenter.web.bodies import NoBody, read_body
from callcenter.web.contract import contract, path_of, query_of
from callcenter.web.register_common import (
    ADMIN,
    NOT_FOUND,
    REFUSED,
    SUPERVISOR,
    CarerAnswer,
    CarerBody,
    CarerList,
    CodePath,
    DeviceAnswer,
    DeviceBody,
    DeviceList,
    DeviceQuery,
    HouseholdAnswer,
    HouseholdBody,
    HouseholdList,
    HouseholdQuery,
    MoveBody,
    SerialPath,
    ShiftPatternAnswer,
    ShiftPatternBody,
    ShiftPatternList,
    StationAnswer,
    StationBody,
    StationList,
    change_of,
    district_today,
    register_changed,
)
from callcenter.web.responses import json_reply
from callcenter.web.state import DATABASE, DEVICE_LOGINS, OPERATOR
from callcenter.web.views import iso

log = logging.getLogger("callcenter.web.register")

routes = web.RouteTableDef()


# --- helpers ---------------------------------------------------------------------------


async def _read(
    request: web.Request, action: str, households: Iterable[str], named: int | None = None
) -> None:
    """The audit row of a read that showed households' records (audit.record_shown: in
    turn with the server's other writers)."""
    await audit.record_shown(
        request,
        actor=str(request[OPERATOR].actor),
        action=action,
        households=households,
        named=named,
    )


def _device_view(d: reg.DeviceView) -> dict[str, Any]:
    return {
        "serial": d.serial,
        "kind": d.kind,
        "household": d.household,
        "online": d.online,
        "battery_pct": d.battery_pct,
        "rssi_dbm": d.rssi_dbm,
        "last_seen_at": iso(d.last_seen_at),
        "retired_at": iso(d.retired_at),
    }


def _login(login: DeviceLogin | None) -> dict[str, str] | None:
    return None if login is None else {"username": login.username, "password": login.password}


# --- households ------------------------------------------------------------------------


@routes.get("/api/register/households")
@contract(role=ADMIN, query=HouseholdQuery, answers={200: HouseholdList}, tag="register")
async def list_households(request: web.Request) -> web.Response:
    """Households, by code; filtered by station or by part of a code, address or name."""
    query = query_of(request, HouseholdQuery)
    found = await reg.household_summaries(
        request.app[DATABASE], station=query.station, text=query.q
    )
    await _read(request, "read_register", (h["code"] for h in found))
    return json_reply({"households": found})


@routes.get("/api/register/households/{code}")
@contract(role=ADMIN, path=CodePath, answers={200: HouseholdAnswer, **NOT_FOUND}, tag="register")
async def get_household(request: web.Request) -> web.Response:
    """A household's whole record, with its devices (retired ones last)."""
    code = path_of(request, CodePath).code
    household_id, record = await reg.read_household(request.app[DATABASE], code)
    found = await reg.devices(request.app[DATABASE], household=code)
    await _read(request, "read_household", [code], named=household_id)
    return json_reply(
        {"household": reg.record_json(record), "devices": [_device_view(d) for d in found]}
    )


async def _save_household(request: web.Request, existing: str | None) -> web.Response:
    body = await read_body(request, HouseholdBody)
    _id, saved = await reg.save_household(
        request.app[DATABASE],
        body.record(),
        change_of(request),
        today=district_today(request),
        existing=existing,
    )
    register_changed(request)
    log.info(
        "%s %s household %s",
        request[OPERATOR].username,
        "changed" if existing else "added",
        saved.code,
    )
    found = await reg.devices(request.app[DATABASE], household=saved.code)
    return json_reply(
        {"household": reg.record_json(saved), "devices": [_device_view(d) for d in found]},
        status=200 if existing else 201,
    )


@routes.post("/api/register/households")
@contract(role=ADMIN, body=HouseholdBody, answers={201: HouseholdAnswer, **REFUSED}, tag="register")
async def add_household(request: web.Request) -> web.Response:
    """A new household with its residents, contacts and numbers."""
    return await _save_household(request, None)


@routes.put("/api/register/households/{code}")
@contract(
    role=ADMIN,
    path=CodePath,
    body=HouseholdBody,
    answers={
        200: HouseholdAnswer,
        409: "a resident with welfare calls on record cannot be removed",
        **NOT_FOUND,
        **REFUSED,
    },
    tag="register",
)
async def change_household(request: web.Request) -> web.Response:
    """The household as given: residents by their id (those left out are removed, new
    ones have none), contacts and numbers in the order given."""
    return await _save_household(request, path_of(request, CodePath).code)


# --- devices ---------------------------------------------------------------------------


@routes.get("/api/register/devices")
@contract(role=ADMIN, query=DeviceQuery, answers={200: DeviceList}, tag="register")
async def list_devices(request: web.Request) -> web.Response:
    """Devices (of one household), with last seen, battery and whether retired."""
    household = query_of(request, DeviceQuery).household
    found = await reg.devices(request.app[DATABASE], household=household)
    await _read(request, "read_devices", (d.household for d in found))
    return json_reply({"devices": [_device_view(d) for d in found]})


async def _device_answer(
    request: web.Request, serial: str, login: DeviceLogin | None, status: int
) -> web.Response:
    (found,) = await reg.devices(request.app[DATABASE], serial=serial)
    return json_reply({"device": _device_view(found), "login": _login(login)}, status=status)


@routes.post("/api/register/devices")
@contract(
    role=ADMIN,
    body=DeviceBody,
    answers={
        201: DeviceAnswer,
        503: "the broker did not take the login; nothing changed",
        **REFUSED,
    },
    tag="register",
)
async def add_device(request: web.Request) -> web.Response:
    """Register a device to a household and issue its broker login (shown once)."""
    body = await read_body(request, DeviceBody)
    record = rules.DeviceRecord(body.serial, body.kind, body.household)
    login = await reg.add_device(
        request.app[DATABASE],
        record,
        change_of(request),
        today=district_today(request),
        logins=request.app[DEVICE_LOGINS],
    )
    register_changed(request)
    log.info(
        "%s added device %s to household %s",
        request[OPERATOR].username,
        record.serial,
        record.household,
    )
    return await _device_answer(request, record.serial, login, 201)


@routes.post("/api/register/devices/{serial}/move")
@contract(
    role=ADMIN,
    path=SerialPath,
    body=MoveBody,
    answers={
        200: DeviceAnswer,
        409: "the device is retired",
        503: "the broker did not move the login; nothing changed",
        **NOT_FOUND,
        **REFUSED,
    },
    tag="register",
)
async def move_device(request: web.Request) -> web.Response:
    """Move a device to another household: its events stay, its old password stops
    working, a new one is shown once."""
    serial = path_of(request, SerialPath).serial
    body = await read_body(request, MoveBody)
    login = await reg.move_device(
        request.app[DATABASE],
        serial,
        body.household,
        change_of(request),
        logins=request.app[DEVICE_LOGINS],
    )
    register_changed(request)
    log.info(
        "%s moved device %s to household %s", request[OPERATOR].username, serial, body.household
    )
    return await _device_answer(request, serial, login, 200)


@routes.post("/api/register/devices/{serial}/login")
@contract(
    role=ADMIN,
    path=SerialPath,
    body=NoBody,
    answers={
        200: DeviceAnswer,
        409: "the device is retired",
        503: "the broker did not take the login; the old one still works",
        **NOT_FOUND,
    },
    tag="register",
)
async def renew_login(request: web.Request) -> web.Response:
    """A new broker login for a device in service (its password lost, or it came in by
    an import, which issues none): the old password stops working, the new one is shown
    once."""
    serial = path_of(request, SerialPath).serial
    await read_body(request, NoBody)
    login = await reg.renew_login(
        request.app[DATABASE], serial, change_of(request), logins=request.app[DEVICE_LOGINS]
    )
    log.info("%s issued device %s a new login", request[OPERATOR].username, serial)
    return await _device_answer(request, serial, login, 200)


@routes.post("/api/register/devices/{serial}/retire")
@contract(
    role=ADMIN,
    path=SerialPath,
    body=NoBody,
    answers={
        200: DeviceAnswer,
        503: "the broker did not revoke the login; the device is not retired",
        **NOT_FOUND,
    },
    tag="register",
)
async def retire_device(request: web.Request) -> web.Response:
    """Take a device out of service: its login is revoked and ingest no longer takes its
    messages; its events and calls stay. Retiring one already retired changes nothing."""
    serial = path_of(request, SerialPath).serial
    await read_body(request, NoBody)
    await reg.retire_device(
        request.app[DATABASE], serial, change_of(request), logins=request.app[DEVICE_LOGINS]
    )
    register_changed(request)
    log.info("%s retired device %s", request[OPERATOR].username, serial)
    return await _device_answer(request, serial, None, 200)


# --- stations, carers, shift patterns ----------------------------------------------------


@routes.get("/api/register/stations")
@contract(role=ADMIN, answers={200: StationList}, tag="register")
async def list_stations(request: web.Request) -> web.Response:
    """Every station, by code."""
    found = await reg.stations(request.app[DATABASE])
    return json_reply({"records": [reg.record_json(s) for s in found]})


async def _save(
    request: web.Request, body_model: type[Any], save: Any, existing: str | None
) -> web.Response:
    body = await read_body(request, body_model)
    saved = await save(
        request.app[DATABASE],
        body.record(),
        change_of(request),
        today=district_today(request),
        existing=existing,
    )
    register_changed(request)
    log.info("%s %s %s", request[OPERATOR].username, "changed" if existing else "added", saved)
    return json_reply({"record": reg.record_json(saved)}, status=200 if existing else 201)


@routes.post("/api/register/stations")
@contract(role=ADMIN, body=StationBody, answers={201: StationAnswer, **REFUSED}, tag="register")
async def add_station(request: web.Request) -> web.Response:
    """A new station."""
    return await _save(request, StationBody, reg.save_station, None)


@routes.put("/api/register/stations/{code}")
@contract(
    role=ADMIN,
    path=CodePath,
    body=StationBody,
    answers={200: StationAnswer, **NOT_FOUND, **REFUSED},
    tag="register",
)
async def change_station(request: web.Request) -> web.Response:
    """A station as given."""
    return await _save(request, StationBody, reg.save_station, path_of(request, CodePath).code)


@routes.get("/api/register/carers")
@contract(role=SUPERVISOR, answers={200: CarerList}, tag="register")
async def list_carers(request: web.Request) -> web.Response:
    """Every carer, active or not, by code (supervisors read them for the rota)."""
    found = await reg.carers(request.app[DATABASE])
    return json_reply({"records": [reg.record_json(c) for c in found]})


@routes.post("/api/register/carers")
@contract(role=ADMIN, body=CarerBody, answers={201: CarerAnswer, **REFUSED}, tag="register")
async def add_carer(request: web.Request) -> web.Response:
    """A new carer."""
    return await _save(request, CarerBody, reg.save_carer, None)


@routes.put("/api/register/carers/{code}")
@contract(
    role=ADMIN,
    path=CodePath,
    body=CarerBody,
    answers={200: CarerAnswer, **NOT_FOUND, **REFUSED},
    tag="register",
)
async def change_carer(request: web.Request) -> web.Response:
    """A carer as given; ``active: false`` takes them off every shift from now on."""
    return await _save(request, CarerBody, reg.save_carer, path_of(request, CodePath).code)


@routes.get("/api/register/shift-patterns")
@contract(role=SUPERVISOR, answers={200: ShiftPatternList}, tag="register")
async def list_shift_patterns(request: web.Request) -> web.Response:
    """Every shift pattern, by code."""
    found = await reg.shift_patterns(request.app[DATABASE])
    return json_reply({"records": [reg.record_json(p) for p in found]})


@routes.post("/api/register/shift-patterns")
@contract(
    role=SUPERVISOR,
    body=ShiftPatternBody,
    answers={201: ShiftPatternAnswer, **REFUSED},
    tag="register",
)
async def add_shift_pattern(request: web.Request) -> web.Response:
    """A new shift pattern."""
    return await _save(request, ShiftPatternBody, reg.save_shift_pattern, None)


@routes.put("/api/register/shift-patterns/{code}")
@contract(
    role=SUPERVISOR,
    path=CodePath,
    body=ShiftPatternBody,
    answers={200: ShiftPatternAnswer, **NOT_FOUND, **REFUSED},
    tag="register",
)
async def change_shift_pattern(request: web.Request) -> web.Response:
    """A shift pattern as given (its code stays)."""
    return await _save(
        request, ShiftPatternBody, reg.save_shift_pattern, path_of(request, CodePath).code
    )
