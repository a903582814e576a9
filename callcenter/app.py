"""Composition root: builds the broker, database, ingest and the call desk (event
follower, timer scheduler, outbox relay, watchdog), runs them in one TaskGroup, and shuts
everything down cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.broker import BrokerStartError, EmbeddedBroker
from callcenter.broker_logins import BrokerLogin
from callcenter.broker_refusals import RefusalWatch
from callcenter.brokers import BrokerAddress
from callcenter.clock import Clock, SystemClock
from callcenter.config import Config, DeviceLoginsMode
from callcenter.engine.bridges import RecordingKeeper
from callcenter.engine.desk import Desk, DeskSettings
from callcenter.engine.device_logins import (
    DeviceLoginError,
    DeviceLogins,
    DynamicSecurityLogins,
    NoDeviceLogins,
    RefusedPublishes,
    active_devices,
)
from callcenter.engine.district import District
from callcenter.engine.feed import Update
from callcenter.engine.follower import EventFollower
from callcenter.engine.leadership import Leadership, Work, holder_name
from callcenter.engine.offers import Offers
from callcenter.engine.outbox import OutboxRelay, Sender, TextLimit
from callcenter.engine.peers import NoPeers, Peers
from callcenter.engine.scheduler import Scheduler
from callcenter.engine.watchdog import Watchdog
from callcenter.engine.welfare import WelfareList
from callcenter.fake_twilio import FakeTwilio
from callcenter.health import Health
from callcenter.ingest.adopt import NOTICE, SessionAdoption
from callcenter.ingest.commands import DeviceCommandSender
from callcenter.ingest.process import IngestProcess
from callcenter.ingest.service import Ingest, ingest_topic
from callcenter.notify.sms import TwilioAccount, TwilioSms
from callcenter.notify.voice import TwilioVoice, VoiceLine
from callcenter.store.db import create_engine, shown_url
from callcenter.store.migrate import SchemaNotCurrentError, require_current_schema
from callcenter.web import WebServer, WebStartError, serving_web
from callcenter.web.sms_webhooks import INBOUND_PATH
from callcenter.web.voice_inbound import INCOMING_PATH

log = logging.getLogger("callcenter.app")

# The number the local fake Twilio's texts come from when none is configured.
FAKE_FROM_NUMBER = "+15005550006"


@dataclass
class Running:
    """What a running server is made of, for the demo, the simulator and tests."""

    config: Config
    clock: Clock
    engine: AsyncEngine
    # In this process, or (``ingest.own_process``) the server's side of a child process.
    ingest: Ingest | IngestProcess
    # The brokers its MQTT clients try in turn (the embedded one's address when it runs).
    brokers: tuple[BrokerAddress, ...]
    desk: Desk
    follower: EventFollower
    scheduler: Scheduler
    relay: OutboxRelay
    watchdog: Watchdog
    # Whether every part gets its work done (/healthz, the boards' banner).
    health: Health
    # The Twilio account texts go from (the local fake's while it runs): its auth token
    # signs the webhooks Twilio posts back.
    sms_account: TwilioAccount
    # The operator API's address (the real port when config.web.port is 0); set once
    # it listens.
    web_url: str = ""
    web_port: int = 0
    # The local fake Twilio every SMS goes to when no account is configured.
    fake_twilio: FakeTwilio | None = None
    # The operator API's server, once it listens.
    web: WebServer | None = None
    # Devices' broker logins, issued, moved and revoked by the register.
    device_logins: DeviceLogins = field(default_factory=NoDeviceLogins)
    # The embedded broker's refused publishes (None: not watched, e.g. external broker).
    broker_refusals: RefusalWatch | None = None
    # Whether this server does the desk's once-only work, and the other servers on the
    # same database (None: built by assembled_server for a caller that drives the parts).
    leadership: Leadership | None = None
    peers: Peers | NoPeers = field(default_factory=NoPeers)


class Loop(Protocol):
    """One of the server's long-running parts: runs until stopped."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


def build_desk(config: Config, engine: AsyncEngine, clock: Clock) -> Desk:
    """The call desk for this configuration."""
    district = District(
        engine,
        zone=ZoneInfo(config.district.timezone),
        holidays=config.district.holidays,
    )
    settings = DeskSettings(
        topic_prefix=config.broker.topic_prefix,
        desk_phone=config.district.desk_phone,
        service_circle_s=config.calls.service_circle_min * 60,
    )
    desk = Desk(engine, clock, district, config.policy_book(), settings)
    desk.offers = Offers(
        engine,
        clock,
        enabled=config.desk.offers,
        timeout_s=config.desk.offer_timeout_s,
        grace_s=config.desk.offer_board_grace_s,
        call_types=config.desk.offer_call_types,
        feed=desk.feed,
    )
    desk.offers.desk = desk
    return desk


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (where the loop can catch them)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


@contextlib.asynccontextmanager
async def running_server(config: Config, clock: Clock | None = None) -> AsyncIterator[Running]:
    """Start broker (if embedded), database and ingest; stop them in reverse on exit."""
    async with (
        assembled_server(config, clock or SystemClock()) as (running, loops),
        asyncio.TaskGroup() as tasks,
    ):
        for name, loop in loops.items():
            tasks.create_task(loop.run(), name=f"callcenter.{name}")
        try:
            yield running
        finally:
            try:
                if running.web is not None:
                    await running.web.close()
            finally:
                for loop in loops.values():
                    loop.stop()


@contextlib.asynccontextmanager
async def assembled_server(
    config: Config,
    clock: Clock,
    *,
    devices: Sender | None = None,
    private_database: bool = False,
    ingest_in_process: bool = False,
) -> AsyncIterator[tuple[Running, dict[str, Loop]]]:
    """Everything a server is made of, built, connected to each other and listening for
    the API, but with none of its loops running: ``running_server`` runs them, and the
    simulator on virtual time drives them step by step instead (``catch_up``,
    ``fire_due``, ``drain``). ``devices`` replaces the MQTT sender of device commands.
    ``private_database``: no other process uses the (SQLite) database, so its calls are
    made on the event loop's thread (see ``store.db.create_engine``).
    ``ingest_in_process``: ingest is an ``Ingest`` in this process even when
    ``ingest.own_process`` is set, for a caller that hands it messages itself."""
    async with contextlib.AsyncExitStack() as stack:
        refusals: RefusalWatch | None = None
        own_admin: BrokerLogin | None = None
        if config.embedded_broker_wanted:
            broker = EmbeddedBroker(
                config.data.dir / "mosquitto",
                executable=config.embedded_broker.mosquitto,
                port=config.embedded_broker.port,
                max_queued_messages=config.embedded_broker.max_queued_messages,
                device_logins=config.broker.device_logins == DeviceLoginsMode.DYNAMIC_SECURITY,
                topic_prefix=config.broker.topic_prefix,
                plugin=config.embedded_broker.dynamic_security_plugin,
            )
            await stack.enter_async_context(broker)
            brokers: tuple[BrokerAddress, ...] = (BrokerAddress(broker.host, broker.port),)
            config = _with_own_logins(config, broker)
            refusals = broker.refusals
            own_admin = broker.logins.admin if broker.logins is not None else None
        else:
            brokers = config.broker.addresses
        device_logins = _device_logins(config, brokers[0], own_admin)
        holder = holder_name(config.cluster.instance or socket.gethostname())
        engine = create_engine(
            config.database_url,
            echo=config.database.echo,
            inline=private_database,
            application_name=holder,
        )
        stack.push_async_callback(engine.dispose)
        await require_current_schema(engine)
        ingest: Ingest | IngestProcess
        if config.ingest.own_process and not ingest_in_process:
            ingest = IngestProcess(config, clock, brokers=brokers)
        else:
            ingest = Ingest(config, engine, clock, brokers=brokers)
        desk = build_desk(config, engine, clock)
        if isinstance(ingest, Ingest):
            # A change through the API reaches ingest before its next batch; ingest in a
            # process of its own asks the database each second (docs/register.md).
            desk.district.also_tell(ingest.register_changed)
        follower = EventFollower(engine, desk, clock, poll_s=config.calls.event_poll_s)
        ingest.on_events(follower.on_events)
        scheduler = Scheduler(engine, desk, clock)
        commands: Sender
        if devices is None:
            commands = DeviceCommandSender(config.broker, brokers=brokers, clock=clock)
        else:
            commands = devices
        fake_twilio, account = await _sms_account(config, stack, clock)
        texts = await stack.enter_async_context(TwilioSms(account))
        senders: dict[str, Sender] = {commands.channel: commands, texts.channel: texts}
        calls: TwilioVoice | None = None
        if config.voice.enabled:
            line = VoiceLine.from_config(config.voice, account)
            calls = await stack.enter_async_context(TwilioVoice(account, line))
            senders[calls.channel] = calls
        desk.rings = calls is not None
        relay = OutboxRelay(
            engine,
            desk,
            clock,
            senders,
            retry_max_s=config.calls.outbox_retry_max_s,
            lanes=config.calls.outbox_lanes,
            text_limit=TextLimit(config.sms.recipient_limit, config.sms.recipient_window_s)
            if config.sms.recipient_limit
            else None,
        )
        watchdog = Watchdog(
            engine,
            desk,
            clock,
            interval_s=config.calls.watchdog_interval_s,
            overdue_s=config.calls.overdue_alarm_s,
        )
        welfare = WelfareList(
            engine,
            clock,
            zone=ZoneInfo(config.district.timezone),
            min_age=config.welfare.min_age,
        )
        # The work that must happen once, whichever server does it (engine/leadership.py).
        once: dict[str, Work] = {
            "follower": follower,
            "scheduler": scheduler,
            "outbox": relay,
            "watchdog": watchdog,
            "welfare": welfare,
        }
        if desk.offers is not None:
            once["offers"] = desk.offers
        if calls is not None:  # recordings past voice.recording_retention_days, deleted
            once["recordings"] = RecordingKeeper(engine, clock, calls)
        peers = (
            Peers(engine, clock, me=holder) if engine.dialect.name == "postgresql" else NoPeers()
        )
        adoption: SessionAdoption | None = None
        if isinstance(peers, Peers) and config.broker.shared_group:
            # A gone server's share of the presses waits in its broker session: the
            # holder takes it in (ingest/adopt.py).
            adoption = _adopt_sessions(config, engine, clock, brokers, peers, ingest)
            adoption.on_events(follower.on_events)
            once["sessions"] = adoption
        leadership = Leadership(
            engine,
            clock,
            holder=holder,
            work=once,
            ttl_s=config.cluster.lease_ttl_s,
            poll_s=config.cluster.lease_poll_s,
        )
        _tell_each_other(peers, desk, follower, leadership)
        ingest.on_events(_told_of_events(peers))
        loops: dict[str, Loop] = {
            "ingest": ingest,
            "district": desk.district,
            "peers": peers,
            "leadership": leadership,
        }
        link = commands if isinstance(commands, DeviceCommandSender) else None
        if link is not None:
            loops["commands"] = link
            # Commands that waited for the link go out as soon as it is back.
            link.when_connected(functools.partial(relay.link_back, link.channel))
        health = Health(
            engine=engine,
            clock=clock,
            ingest=ingest,
            brokers=brokers,
            scheduler=scheduler,
            relay=relay,
            commands=link,
            feed=desk.feed,
            stuck_after_s=config.health.stuck_after_s,
            leadership=leadership,
            peers=peers,
            adoption=adoption,
        )
        loops["health"] = health
        if refusals is not None:
            refusals.listen(RefusedPublishes(engine, clock).heard)
        running = Running(
            config,
            clock,
            engine,
            ingest,
            brokers,
            desk,
            follower,
            scheduler,
            relay,
            watchdog,
            health,
            account,
            fake_twilio=fake_twilio,
            device_logins=device_logins,
            broker_refusals=refusals,
            leadership=leadership,
            peers=peers,
        )
        await _check_device_logins(device_logins, engine)
        await desk.district.registry()  # read once now, not by the first alarm
        # This week's list is made before anyone can sign in and write, so the hundreds
        # of rows of a new week never land in the middle of someone's transaction.
        await welfare.bring_up_to_date()
        # The API listens before the loops start, so a taken port stops the server at
        # once; on the way out it closes first, before the loops it drives.
        web_server = await stack.enter_async_context(serving_web(running))
        running.web = web_server
        running.web_url, running.web_port = web_server.url, web_server.port
        if not texts.account.public_url:  # Twilio's status callbacks come to the API
            texts.account = replace(texts.account, public_url=running.web_url)
        if calls is not None:  # and what to say on a call, and how it went
            calls.account = texts.account
        # Carers open their dispatch links from their phones: the public address if any.
        desk.link_base = config.sms.public_url or running.web_url
        if fake_twilio is not None:  # answers typed on the fake's page come to our webhook
            fake_twilio.inbound_url = texts.account.public_url.rstrip("/") + INBOUND_PATH
            # Calls to the fake's number (fake.ring_centre) come to our voice URL.
            fake_twilio.voice_url = texts.account.public_url.rstrip("/") + INCOMING_PATH
        yield running, loops


def _tell_each_other(
    peers: Peers | NoPeers, desk: Desk, follower: EventFollower, leadership: Leadership
) -> None:
    """What this server's desk does that the other servers must know at once, and what
    it does when they say something (engine/peers.py has the table)."""
    desk.feed.outward = lambda update: peers.tell("feed", **update.to_notice())

    def told_of_update(notice: dict[str, Any]) -> None:
        try:
            update = Update.from_notice(notice)
        except ValueError as error:
            log.warning("an update from %s that is not one: %s", notice.get("from"), error)
            return
        desk.feed.deliver(update)

    def elsewhere(kind: str, at: datetime | None) -> None:
        peers.tell(kind, at=None if at is None else at.isoformat())

    def told_of_timers(notice: dict[str, Any]) -> None:
        try:
            at = datetime.fromisoformat(notice["at"])
        except (KeyError, TypeError, ValueError):
            desk.timers_changed.set()  # no time said: the scheduler looks again
            return
        desk.timers_armed(at, here=False)

    def gap() -> None:
        desk.feed.resync()
        follower.prompt()
        desk.outbox_changed.set()
        desk.timers_changed.set()

    desk.elsewhere = elsewhere
    peers.listen("feed", told_of_update)
    peers.listen("events", lambda _notice: follower.prompt())
    peers.listen("timers", told_of_timers)
    peers.listen("outbox", lambda _notice: desk.outbox_written(here=False))
    peers.listen("lease", lambda _notice: leadership.wake())
    peers.on_gap(gap)
    leadership.on_change(lambda leading: None if leading else peers.tell("lease"))
    offers = desk.offers
    if offers is not None:

        def told_of_boards(notice: dict[str, Any]) -> None:
            operators = notice.get("operators")
            if isinstance(operators, list) and all(isinstance(o, int) for o in operators):
                offers.boards_elsewhere(str(notice["from"]), operators)

        offers.boards_told = lambda here: peers.tell("boards", operators=here)
        peers.repeat("boards", lambda: {"operators": offers.presence.here()})
        peers.listen("boards", told_of_boards)


def _adopt_sessions(
    config: Config,
    engine: AsyncEngine,
    clock: Clock,
    brokers: tuple[BrokerAddress, ...],
    peers: Peers,
    ingest: Ingest | IngestProcess,
) -> SessionAdoption:
    """The holder's taking in of gone servers' broker sessions; each server says, again
    and again, which session its ingest holds."""
    adoption = SessionAdoption(config, engine, clock, brokers=brokers)
    topic = ingest_topic(config)
    client_id = config.broker.client_id
    peers.repeat(
        NOTICE, lambda: {"client_id": client_id, "topic": topic, "broker": ingest.stats.broker}
    )
    peers.listen(NOTICE, adoption.heard)
    adoption.on_events(_told_of_events(peers))
    return adoption


def _told_of_events(peers: Peers | NoPeers) -> Callable[[Sequence[Any]], Awaitable[None]]:
    """Ingest's listener that tells the other servers events were stored."""

    async def stored(_events: Sequence[Any]) -> None:
        peers.tell("events")

    return stored


def _with_own_logins(config: Config, broker: EmbeddedBroker) -> Config:
    """The configuration with the embedded broker's login for this server's clients."""
    if broker.logins is None:
        return config
    login = broker.logins.server
    own = config.broker.model_copy(update={"username": login.username, "password": login.password})
    return config.model_copy(update={"broker": own})


def _device_logins(
    config: Config, broker: BrokerAddress, own_admin: BrokerLogin | None
) -> DeviceLogins:
    """Who issues the devices' broker logins: the broker's dynamic-security plugin, as
    its administrator (the embedded broker's own, or the configured one), or nobody.
    The plugin is one mosquitto's: the configuration refuses it with several brokers."""
    if config.broker.device_logins == DeviceLoginsMode.NONE:
        return NoDeviceLogins()
    admin, password = config.broker.admin_username, config.broker.admin_password
    if own_admin is not None:
        admin, password = own_admin.username, own_admin.password
    return DynamicSecurityLogins(
        host=broker.host,
        port=broker.port,
        admin_username=admin,
        admin_password=password,
        topic_prefix=config.broker.topic_prefix,
        timeout_s=config.broker.admin_timeout_s,
    )


async def _check_device_logins(logins: DeviceLogins, engine: AsyncEngine) -> None:
    """At start: remove the logins of devices no longer registered (a retire whose
    revoke was lost) and say which registered devices have none. A broker that will not
    answer is said in the log; the server serves on (alarms come first)."""
    if not logins.takes_logins:
        return
    try:
        report = await logins.sync(await active_devices(engine))
    except DeviceLoginError as error:
        log.error("device logins could not be checked: %s", error.detail)
        return
    log.info("%s", report.describe())
    if report.missing:
        log.warning(
            "%d registered devices have no broker login and cannot connect until one is "
            "issued, e.g. %s",
            len(report.missing),
            ", ".join(report.missing[:5]),
        )
    for serial, household in sorted(report.misplaced.items())[:5]:
        log.warning(
            "device %s's broker login is for household %s: issue it again", serial, household
        )


async def _sms_account(
    config: Config, stack: contextlib.AsyncExitStack, clock: Clock
) -> tuple[FakeTwilio | None, TwilioAccount]:
    """The Twilio account to send from; without one, a local fake Twilio started here.

    The fake learns the inbound webhook's URL (and the account its status-callback URL)
    only once the operator API listens: see ``running_server``."""
    if not config.sms.fake:
        return None, TwilioAccount.from_config(config.sms)
    fake = await stack.enter_async_context(
        FakeTwilio(
            port=config.sms.fake_port,
            clock=clock,
            number=config.sms.from_number or FAKE_FROM_NUMBER,
        )
    )
    log.warning(
        "no Twilio account configured: SMS go to the local fake Twilio at %s; "
        "no real phone receives them (they are listed at %s, on loopback only)",
        fake.base_url,
        fake.page_url,
    )
    account = TwilioAccount(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        from_number=config.sms.from_number or FAKE_FROM_NUMBER,
        messaging_service_sid=config.sms.messaging_service_sid,
        api_base_url=fake.base_url,
        public_url=config.sms.public_url,
        timeout_s=config.sms.timeout_s,
    )
    return fake, account


async def serve(config: Config) -> int:
    """Run the server until SIGTERM/SIGINT. Returns the process exit code."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        async with running_server(config) as server:
            log.info(
                "callcenter serving: broker %s, database %s, operator API %s",
                " or ".join(str(broker) for broker in server.brokers),
                shown_url(server.engine.url),
                server.web_url,
            )
            # What start-up loaded lives as long as the process: out of the collector's
            # way, full collections stay short instead of pausing the loop ~100 ms.
            gc.freeze()
            await stop.wait()
            log.info("shutting down: finishing the batch in hand")
    except BrokerStartError as error:
        log.error("cannot start the embedded broker: %s", error.detail)
        return 2
    except (SchemaNotCurrentError, WebStartError) as error:
        log.error("%s", error)
        return 2
    return 0
