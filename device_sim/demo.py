"""The demo: the server with the demo district's simulated households, and carers who
answer their pages; and the demo district's operator and supervisor, who sign in to the
board. ``callcenter demo`` runs it (see demo_commands)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import secrets
import stat
import sys
import threading
import time
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.app import Running, running_server, stop_on_signals
from callcenter.broker import BrokerStartError
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.engine.accounts import add_operator, issue_token, set_active, set_password
from callcenter.engine.device_logins import DeviceLoginError
from callcenter.ingest.service import Ingest
from callcenter.store import models as m
from callcenter.store.db import create_engine, shown_url
from callcenter.store.migrate import upgrade_async
from callcenter.web import WebStartError
from device_sim.demo_district import (
    DistrictAlreadySeededError,
    build_demo_district,
    seed_demo_district,
)
from device_sim.demo_fresh import (
    NotTheDemosDatabaseError,
    kept_from_before,
    remove_demo_database,
    sqlite_file,
)
from device_sim.demo_load import (
    FIRST_CALL_AFTER_S,
    DemoLoad,
    OnShift,
    call_buttons,
    calm_load,
    carers_on_shift,
    given_load,
    run_storm,
)
from device_sim.demo_notice import REMIND_EVERY_S, SignInLines, box, remind_until_signed_in, show
from device_sim.district import DeviceSpec, load_devices_from_database
from device_sim.field import FieldProfile, answer_pages, district_field
from device_sim.phones import PhoneProfile, answer_calls, district_phones
from device_sim.settings import SimulationSettings
from device_sim.simulation import Simulation

log = logging.getLogger("callcenter.demo")

# The demo district's desk. Invented people; the number looks like the demo carers' ones.
DEMO_OPERATOR = "demo.operator"
DEMO_SUPERVISOR = "demo.supervisor"
_DEMO_ACCOUNTS = (
    (DEMO_OPERATOR, "王丽", m.OperatorRole.OPERATOR, None),
    (DEMO_SUPERVISOR, "陈建国", m.OperatorRole.SUPERVISOR, "+8613997100001"),
)
_ACCOUNT_NAMES = {account[0] for account in _DEMO_ACCOUNTS}


async def demo(
    config: Config,
    *,
    press_interval_s: float | None = None,
    carers_answer: bool = True,
    storm: bool = False,
    fresh: bool = False,
    remind_every_s: float = REMIND_EVERY_S,
) -> int:
    """Seed the demo district if the database is empty (after removing the demo's own
    database with ``fresh``), then run server and households at a calm load matched to
    the carers on shift (or one press every ``press_interval_s``; a storm at once with
    ``storm``), and, unless ``carers_answer`` is off, carers who answer their pages."""
    if fresh:
        try:
            broker_store = (
                config.data.dir / "mosquitto" / "mosquitto.db"
                if config.embedded_broker_wanted
                else None
            )
            log.info("%s", remove_demo_database(config.database_url, _ACCOUNT_NAMES, broker_store))
        except NotTheDemosDatabaseError as error:
            log.error("%s", error)
            return 2
    await upgrade_async(config.database_url)
    try:
        summary = await seed_demo_district(config.database_url, seed=2026)
        log.info("%s; database %s", summary, _where(config.database_url))
    except DistrictAlreadySeededError:
        kept = await kept_from_before(config.database_url)
        log.info(
            "the demo's database %s is kept from an earlier run: %d calls, %d of them still "
            "open (start over with --fresh)",
            _where(config.database_url),
            kept.calls,
            kept.open_calls,
        )
    token, passwords = await _demo_operators(config)

    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        async with running_server(config) as server:
            await asyncio.wait_for(server.ingest.connected.wait(), 30)
            started = server.clock.now()
            devices = await load_devices_from_database(config.database_url)
            # Each device's broker password, issued once the box is up (it takes a while
            # for a whole district) and read by each device as it connects.
            logins: dict[str, str] = {}
            buttons = call_buttons(devices)
            on_shift = await _on_shift(server)
            hour = started.astimezone(server.desk.district.zone).hour
            load = (
                given_load(len(buttons), on_shift, hour, press_interval_s)
                if press_interval_s is not None
                else calm_load(len(buttons), on_shift, hour)
            )
            log.info("%s", load.describe())
            carers_there = server.fake_twilio is not None and carers_answer
            if server.fake_twilio is not None:
                # Delivery reports as a phone network would send them, so the demo's texts
                # go on to "delivered"; tests leave this off and report by hand.
                server.fake_twilio.auto_deliver = True
            log.info("%s", _texts_line(server, carers_answer))
            log.info("%s", _phones_line(server, carers_answer))
            log.info(
                "operator API at %s; try: curl -H 'Authorization: Bearer %s' %s/api/calls "
                "(demo.operator's token, new on every start)",
                server.web_url,
                token,
                server.web_url,
            )
            log.info(
                "call board at %s/board: sign in as %s (passwords new on every start)",
                server.web_url,
                ", ".join(f"{user} / {password}" for user, password in passwords.items()),
            )
            typed = _can_type_commands()
            lines = SignInLines(
                f"{server.web_url}/board",
                passwords,
                _box_notes(
                    server, token, load, storm=storm, carers_there=carers_there, typed=typed
                ),
            )
            show(box(lines, repeated=False, every_s=remind_every_s))
            simulation = Simulation(
                SimulationSettings(
                    brokers=server.brokers,
                    prefix=config.broker.topic_prefix,
                    press_rate=load.press_rate,
                    heartbeat_interval_s=config.ingest.heartbeat_interval_s,
                    logins=logins,
                ),
                devices,
            )
            storms = _Storms(simulation, buttons, load.storm_presses)
            online = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(
                    _run_devices(server, simulation, devices, logins, stop), name="device_sim"
                )
                tasks.create_task(
                    _when_online(
                        simulation,
                        online,
                        storms,
                        stop,
                        storm=storm,
                        first_call=not storm and press_interval_s is None,
                    ),
                    name="callcenter.demo.online",
                )
                tasks.create_task(_report(server, simulation, stop), name="callcenter.demo.report")
                tasks.create_task(
                    remind_until_signed_in(
                        server.engine, started, lines, stop, every_s=remind_every_s, again=online
                    ),
                    name="callcenter.demo.sign_in_box",
                )
                if typed:
                    _read_typed_commands(asyncio.get_running_loop(), storms, stop)
                if server.fake_twilio is not None:
                    district = build_demo_district(2026)
                    field = None
                    if carers_there:
                        # The demo district's carers read their pages and answer like people.
                        field = district_field(district, FieldProfile(), seed=2026)
                        tasks.create_task(
                            answer_pages(server.fake_twilio, field, server.clock, stop),
                            name="device_sim.field",
                        )
                    # Their phones too (left to the fake's page with --no-carers), and the
                    # households' and family contacts' phones always.
                    phones = district_phones(district, PhoneProfile(), seed=2026, field=field)
                    tasks.create_task(
                        answer_calls(server.fake_twilio, phones, server.clock, stop),
                        name="device_sim.phones",
                    )
                await stop.wait()
                storms.stop()
    except BrokerStartError as error:
        log.error("cannot start the embedded broker: %s", error.detail)
        return 2
    except WebStartError as error:
        log.error("%s", error)
        return 2
    return 0


async def _run_devices(
    server: Running,
    simulation: Simulation,
    devices: list[DeviceSpec],
    logins: dict[str, str],
    stop: asyncio.Event,
) -> None:
    """Issue the simulated devices their broker logins through the register's own
    interface, hand them the passwords in memory (new on every start, as the operators'
    are), then run them until ``stop``. A broker that will not issue them is said in the
    log; the server and its board run on without devices."""
    if server.device_logins.takes_logins:
        started = time.monotonic()
        issuing = asyncio.create_task(
            server.device_logins.issue_many(
                {device.serial: device.household for device in devices}
            ),
            name="callcenter.demo.device_logins",
        )
        stopping = asyncio.create_task(stop.wait(), name="callcenter.demo.stopping")
        await asyncio.wait({issuing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not issuing.done():  # stopped meanwhile: no need to finish
            issuing.cancel()
            with contextlib.suppress(asyncio.CancelledError, DeviceLoginError):
                await issuing
            return
        try:
            issued = issuing.result()
        except DeviceLoginError as error:
            log.error("the simulated devices get no broker logins, so none connects: %s", error)
            return
        logins.update({serial: login.password for serial, login in issued.items()})
        log.info(
            "issued %d devices their broker logins in %.1f s (each may publish only its own "
            "household's topics)",
            len(issued),
            time.monotonic() - started,
        )
    else:
        log.info("the broker takes no per-device logins: the devices connect without one")
    await simulation.run(stop)


def _where(url: str) -> str:
    path = sqlite_file(url)
    return str(path) if path is not None else shown_url(url)


async def _on_shift(server: Running) -> OnShift:
    async with AsyncSession(server.engine) as session:
        return await carers_on_shift(server.desk.district, session, server.clock.now())


def _texts_line(server: Running, carers_answer: bool) -> str:
    """What happens to the carers' texts, as true for the options and the account."""
    if server.fake_twilio is None:
        return (
            "texts go to the Twilio account configured (sms.account_sid), to the demo "
            "district's invented numbers: no simulated carer reads or answers them"
        )
    who = (
        "simulated carers answer them; you may answer as a carer there too, e.g. 12a"
        if carers_answer
        else "nobody answers them but you (--no-carers): answer as a carer there, e.g. 12a"
    )
    return f"SMS a carer would get: {server.fake_twilio.page_url} ({who})"


def _phones_line(server: Running, carers_answer: bool) -> str:
    """Who answers the phone calls the desk places, as true for the options and the
    account."""
    if server.fake_twilio is None:
        return (
            "phone calls go to the Twilio account configured, to the demo district's "
            "invented numbers: no simulated carer, household or relative answers them"
        )
    who = (
        "simulated carers, households and family contacts answer them"
        if carers_answer
        else "carers' phones ring until you answer them there (--no-carers); households "
        "and family contacts answer theirs"
    )
    return (
        f"phone calls the desk places: {server.fake_twilio.page_url} ({who}; any other "
        "phone, an operator's own, is yours to answer there)"
    )


def _box_notes(
    server: Running, token: str, load: DemoLoad, *, storm: bool, carers_there: bool, typed: bool
) -> list[str]:
    notes = [f"API token (demo.operator): {token}"]
    if server.fake_twilio is not None:
        notes.append(f"Carers' texts: {server.fake_twilio.page_url}")
        notes.append(
            "  simulated carers answer them"
            if carers_there
            else "  nobody answers them but you (--no-carers)"
        )
        notes.append("Phone calls the desk places: on the same page")
        if carers_there:
            notes.append("  carers, households and family contacts answer them")
        else:
            notes.append("  carers' phones are yours to answer there (--no-carers);")
            notes.append("  households and family contacts answer theirs")
    else:
        notes.append("Carers' texts go to the Twilio account configured; nobody answers them")
        notes.append("Phone calls go to the Twilio account configured; nobody answers them")
    rate = f"{load.presses_per_hour:.1f} presses an hour"
    if load.given:
        notes.append(f"Load: {rate}, set by --press-interval")
    else:
        notes.append(f"Load: calm, {rate} for {load.on_shift.named}")
    if storm:
        notes.append(f"Storm (--storm): {load.storm_presses} emergency presses in the first minute")
    else:
        notes.append("For a storm: callcenter demo --storm")
    if typed:
        notes.append(f"Type storm and Enter here for a storm now ({load.storm_presses} presses)")
    return notes


class _Storms:
    """Storms on request, one at a time."""

    def __init__(self, simulation: Simulation, buttons: list[str], presses: int) -> None:
        self._simulation = simulation
        self._buttons = buttons
        self._presses = presses
        self._task: asyncio.Task[int] | None = None
        self._rng = random.Random()

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            log.info("a storm is still under way; ask again when it is over")
            return
        self._task = asyncio.create_task(
            run_storm(self._simulation, self._buttons, self._presses, self._rng),
            name="callcenter.demo.storm",
        )
        self._task.add_done_callback(_said_if_failed)

    def first_call(self) -> None:
        serial = self._rng.choice(self._buttons)
        log.info(
            "first call: the call button %s is pressed, so the board has a call to show", serial
        )
        self._simulation.press(serial)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _said_if_failed(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the storm stopped: %s", task.exception())


async def _when_online(
    simulation: Simulation,
    online: asyncio.Event,
    storms: _Storms,
    stop: asyncio.Event,
    *,
    storm: bool,
    first_call: bool,
) -> None:
    """Once every device is online: the sign-in box again, then the storm (--storm) or
    the calm demo's first call."""
    waits = [
        asyncio.ensure_future(simulation.wait_online(300)),
        asyncio.ensure_future(stop.wait()),
    ]
    _done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()
    if stop.is_set():
        return
    if waits[0].exception() is not None:
        log.warning("not every device came online within 5 minutes; the demo goes on")
    online.set()
    if storm:
        storms.start()
    elif first_call:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), FIRST_CALL_AFTER_S)
        if not stop.is_set():
            storms.first_call()


def _can_type_commands() -> bool:
    """Whether a person (or a test) can type to the demo: standard input is a terminal
    the demo has in the foreground (reading one from the background would stop the
    demo, SIGTTIN), or a pipe; not /dev/null or closed."""
    stdin = sys.stdin
    if stdin is None:
        return False
    try:
        if stdin.isatty():
            return os.tcgetpgrp(stdin.fileno()) == os.getpgrp()
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _read_typed_commands(
    loop: asyncio.AbstractEventLoop, storms: _Storms, stop: asyncio.Event
) -> None:
    """Read lines typed to the demo in a thread of their own (a daemon: a read that
    blocks never holds up the end), and start a storm on "storm"."""

    def read() -> None:
        for line in sys.stdin:
            word = line.strip().lower()
            if stop.is_set():
                return
            if word == "storm":
                said = storms.start
            elif word:
                said = functools.partial(
                    log.info, "the demo knows one typed command, storm (you typed %r)", word[:40]
                )
            else:
                continue
            try:
                loop.call_soon_threadsafe(said)
            except RuntimeError:  # the demo has ended
                return

    threading.Thread(target=read, name="callcenter.demo.stdin", daemon=True).start()


async def ensure_demo_operators(engine: AsyncEngine, now: datetime) -> str:
    """Make sure the demo operator and supervisor exist and are active; returns a freshly
    issued token for the demo operator, so a person can try the API."""
    async with AsyncSession(engine) as session:
        existing = set(
            (
                await session.scalars(
                    select(m.Operator.username).where(
                        m.Operator.username.in_([a[0] for a in _DEMO_ACCOUNTS])
                    )
                )
            ).all()
        )
    for username, name, role, phone in _DEMO_ACCOUNTS:
        if username in existing:
            await set_active(engine, username, True)
        else:
            await add_operator(engine, username, name=name, now=now, role=role, phone=phone)
    return await issue_token(engine, DEMO_OPERATOR)


async def issue_demo_passwords(engine: AsyncEngine) -> dict[str, str]:
    """Fresh random board passwords for the demo operator and supervisor (shown once, in
    the demo's log); none is written anywhere in the code."""
    passwords = {}
    for username, *_ in _DEMO_ACCOUNTS:
        passwords[username] = secrets.token_urlsafe(9)
        await set_password(engine, username, passwords[username])
    return passwords


async def _demo_operators(config: Config) -> tuple[str, dict[str, str]]:
    """The demo operator and supervisor exist; a fresh API token for the operator and
    fresh board passwords for both."""
    engine = create_engine(config.database_url)
    try:
        token = await ensure_demo_operators(engine, SystemClock().now())
        return token, await issue_demo_passwords(engine)
    finally:
        await engine.dispose()


async def _report(server: Running, simulation: Simulation, stop: asyncio.Event) -> None:
    """Every 10 s: the households' events sent and stored, and ingest's counters."""
    stored_before = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 10)
        counters = simulation.counters()
        log.info(
            "households: %d events sent (presses, cancels, low batteries), %d stored by the "
            "server, %d of them in the last 10 s",
            counters.events_generated,
            counters.events_acknowledged,
            counters.events_acknowledged - stored_before,
        )
        stored_before = counters.events_acknowledged
        stats = server.ingest.stats
        report = {
            "events_stored": stats.events_stored,
            "duplicates": stats.duplicates,
            "heartbeats": stats.heartbeats,
            "dead_letters": dict(stats.dead_letters),
        }
        if isinstance(server.ingest, Ingest):  # a child process keeps its registry
            report["devices_online"] = sum(1 for d in server.ingest.registry.all() if d.online)
        log.info("ingest: %s", json.dumps(report))
