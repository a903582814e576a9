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
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from callcenter.broker import BrokerStartError, EmbeddedBroker
from callcenter.clock import Clock, SystemClock
from callcenter.config import Config
from callcenter.engine.bridges import RecordingKeeper
from callcenter.engine.desk import Desk, DeskSettings
from callcenter.engine.district import District
from callcenter.engine.follower import EventFollower
from callcenter.engine.offers import Offers
from callcenter.engine.outbox import OutboxRelay, Sender, TextLimit
from callcenter.engine.scheduler import Scheduler
from callcenter.engine.watchdog import Watchdog
from callcenter.engine.welfare import WelfareList
from callcenter.fake_twilio import FakeTwilio
from callcenter.health import Health
from callcenter.ingest.commands import DeviceCommandSender
from callcenter.ingest.process import IngestProcess
from callcenter.ingest.service import Ingest
from callcenter.notify.sms import TwilioAccount, TwilioSms
from callcenter.notify.voice import TwilioVoice, VoiceLine
from callcenter.store.db import create_engine
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
    broker_host: str
    broker_port: int
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
        if config.embedded_broker_wanted:
            broker = EmbeddedBroker(
                config.data.dir / "mosquitto",
                executable=config.embedded_broker.mosquitto,
                port=config.embedded_broker.port,
                max_queued_messages=config.embedded_broker.max_queued_messages,
            )
            await stack.enter_async_context(broker)
            host, port = broker.host, broker.port
        else:
            host, port = config.broker.host, config.broker.port
        engine = create_engine(
            config.database_url, echo=config.database.echo, inline=private_database
        )
        stack.push_async_callback(engine.dispose)
        await require_current_schema(engine)
        ingest: Ingest | IngestProcess
        if config.ingest.own_process and not ingest_in_process:
            ingest = IngestProcess(config, clock, broker_host=host, broker_port=port)
        else:
            ingest = Ingest(config, engine, clock, broker_host=host, broker_port=port)
        desk = build_desk(config, engine, clock)
        follower = EventFollower(engine, desk, clock, poll_s=config.calls.event_poll_s)
        ingest.on_events(follower.on_events)
        scheduler = Scheduler(engine, desk, clock)
        commands: Sender
        if devices is None:
            commands = DeviceCommandSender(config.broker, host=host, port=port, clock=clock)
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
        loops: dict[str, Loop] = {
            "ingest": ingest,
            "follower": follower,
            "scheduler": scheduler,
            "outbox": relay,
            "watchdog": watchdog,
            "district": desk.district,
            "welfare": welfare,
        }
        if desk.offers is not None:
            loops["offers"] = desk.offers
        if calls is not None:  # recordings past voice.recording_retention_days, deleted
            loops["recordings"] = RecordingKeeper(engine, clock, calls)
        link = commands if isinstance(commands, DeviceCommandSender) else None
        if link is not None:
            loops["commands"] = link
            # Commands that waited for the link go out as soon as it is back.
            link.when_connected(functools.partial(relay.link_back, link.channel))
        health = Health(
            engine=engine,
            clock=clock,
            ingest=ingest,
            broker=f"{host}:{port}",
            scheduler=scheduler,
            relay=relay,
            commands=link,
            feed=desk.feed,
            stuck_after_s=config.health.stuck_after_s,
        )
        loops["health"] = health
        running = Running(
            config,
            clock,
            engine,
            ingest,
            host,
            port,
            desk,
            follower,
            scheduler,
            relay,
            watchdog,
            health,
            account,
            fake_twilio=fake_twilio,
        )
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
                "callcenter serving: broker %s:%d, database %s, operator API %s",
                server.broker_host,
                server.broker_port,
                server.engine.url.render_as_string(hide_password=True),
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
