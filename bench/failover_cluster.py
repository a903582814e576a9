"""The servers of bench/failover.py and what is done to them: each ``callcenter serve``
in a child process, started again after a kill; the presses; the kills and takeovers;
the operator on duty, closing calls through any server's API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
from sqlalchemy import or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.storm import bench_database
from callcenter.broker import EmbeddedBroker, _detach_from_terminal_and_follow_parent
from callcenter.domain.events import EventKind
from callcenter.engine import accounts
from callcenter.engine.repository import SMS
from callcenter.fake_twilio import FakeTwilio
from callcenter.ingest.protocol import Channel, event_payload, topic_for
from callcenter.store import models as m
from callcenter.store.db import create_engine

PREFIX = "failover"
TAG = "fo"
READY_S = 120.0


def since_process_start_s() -> float:
    """Seconds since this process started, its imports included (from /proc)."""
    started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return uptime_s - started_ticks / os.sysconf("SC_CLK_TCK")


_STARTED = time.perf_counter() - since_process_start_s()


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    bench = Path(sys.argv[0]).stem  # failover, or spread using these parts
    print(f"[bench/{bench} {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


# --- the servers ------------------------------------------------------------------------

READY = re.compile(r"operator API (http://\S+)")
SUBSCRIBED = "ingest subscribed to"


def member_config(
    workdir: Path,
    name: str,
    broker: EmbeddedBroker,
    fake: FakeTwilio,
    group: str,
    more: str = "",
) -> Path:
    """One server's configuration: its own name, data directory, client id and port; the
    shared broker (one shared subscription), database (from the environment) and Twilio;
    then ``more`` (TOML tables of the benchmark's own)."""
    path = workdir / f"{name}.toml"
    path.write_text(
        f"""[data]
dir = "{workdir / name}"

[broker]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{PREFIX}"
client_id = "failover-{name}"
shared_group = "{group}"
reconnect_max_s = 1.0
# The presses come from a few connections for many households: a benchmark of the
# takeover, not of who may publish (tests/test_device_logins.py).
device_logins = "none"

[ingest]
# The call buttons never fall silent during the run.
heartbeat_interval_s = 31536000.0

[web]
port = 0

[desk]
offers = false

[cluster]
instance = "{name}"

[sms]
account_sid = "{fake.account_sid}"
from_number = "+15005550006"
api_base_url = "{fake.base_url}"
{more}"""
    )
    return path


class Member:
    """One server: ``callcenter serve`` in a child process, started again after a kill.

    It runs in a session of its own, so a Ctrl-C at the terminal reaches this benchmark,
    which stops the servers in order; and it is told to stop should this process die."""

    def __init__(self, name: str, config: Path, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.config = config
        self.env = env
        self.logs = logs
        self.lives = 0
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.up_at = 0.0  # wall clock: when it last subscribed

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}.{self.lives}.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        """Start it and wait until its API listens and its ingest has subscribed."""
        self.lives += 1
        self.url = ""
        serve = [sys.executable, "-m", "callcenter.cli", "--config", str(self.config), "serve"]
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *serve,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env=self.env,
                preexec_fn=_detach_from_terminal_and_follow_parent,
            )
        deadline = time.monotonic() + READY_S
        while True:
            said = self.log_path.read_text(errors="replace")
            found = READY.search(said)
            if found and SUBSCRIBED in said:
                self.url, self.up_at = found.group(1), time.time()
                return
            if not self.alive or time.monotonic() > deadline:
                tail = "\n".join(said.splitlines()[-20:])
                raise RuntimeError(f"server {self.name} did not start; its log ends:\n{tail}")
            await asyncio.sleep(0.05)

    async def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM (it gives the lease up and finishes its batch); SIGKILL after 30 s."""
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            progress(f"server {self.name} ignored SIGTERM for 30 s; killing it")
            self.process.kill()
            await self.process.wait()

    async def lease(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """The ``lease`` part of its /healthz; empty when it does not answer."""
        if not self.alive or not self.url:
            return {}
        try:
            async with http.get(
                f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
            ) as reply:
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return {}
        return dict(body.get("parts", {}).get("lease", {}))

    def errors(self) -> list[str]:
        """The ERROR lines of every life's log."""
        return [
            f"{self.name}.{life}: {line}"
            for life in range(1, self.lives + 1)
            for line in (self.logs / f"{self.name}.{life}.log")
            .read_text(errors="replace")
            .splitlines()
            if " ERROR " in line
        ]


@dataclass
class Cluster:
    """What a cluster benchmark runs on (see ``cluster``)."""

    workdir: Path
    broker: EmbeddedBroker
    fake: FakeTwilio
    engine: AsyncEngine  # the run's database
    members: list[Member]  # none started at first
    errors: list[str] = field(default_factory=list)  # the servers' ERROR lines, at the end


@contextlib.asynccontextmanager
async def cluster(
    name: str,
    workdir: Path | None,
    server_url: str,
    households: int,
    carers: int,
    names: Sequence[str],
    more: str = "",
) -> AsyncIterator[Cluster]:
    """A directory (``workdir``, made and kept; or a temporary one), a database of its own
    on ``server_url``'s PostgreSQL server with the demo district in service, a private
    mosquitto, a fake Twilio, and a server for each of ``names`` in one shared
    subscription group (``more``: see ``member_config``), not started. At the end the
    servers are stopped (their ERROR lines kept in ``errors``), then the rest."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-"))
            )
        else:
            workdir.mkdir(parents=True)
        progress(f"creating a database on {server_url}, {households} households")
        async with (
            bench_database(workdir, server_url, households, carers) as url,
            EmbeddedBroker(workdir / "mosquitto") as broker,
            FakeTwilio() as fake,
        ):
            progress(f"database {make_url(url).database}, broker on port {broker.port}")
            env = {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "CALLCENTER_DATABASE__URL": url,
                "CALLCENTER_SMS__AUTH_TOKEN": fake.auth_token,
            }
            members = [
                Member(n, member_config(workdir, n, broker, fake, "desk", more), env, workdir)
                for n in names
            ]
            ground = Cluster(workdir, broker, fake, create_engine(url), members)
            try:
                yield ground
            finally:
                progress("stopping the servers")
                await asyncio.gather(*(member.stop() for member in members))
                await ground.engine.dispose()
                ground.errors = [line for member in members for line in member.errors()]


async def leader_among(
    members: Sequence[Member], http: aiohttp.ClientSession, within_s: float = 30.0
) -> tuple[Member, int]:
    """The one member doing the desk's work, and its lease epoch, once there is one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        leases = await asyncio.gather(*(member.lease(http) for member in members))
        leading = [(mb, ls) for mb, ls in zip(members, leases, strict=True) if ls.get("leading")]
        if len(leading) == 1:
            return leading[0][0], int(leading[0][1].get("epoch", 0))
        if len(leading) > 1:
            raise RuntimeError(f"{len(leading)} servers say they hold the desk's lease")
        if loop.time() > deadline:
            raise RuntimeError(f"no server took the desk's lease within {within_s:.0f} s")
        await asyncio.sleep(0.05)


# --- presses ------------------------------------------------------------------------------


@dataclass
class Press:
    """One emergency press: when it was made (wall clock, s), and whether the broker
    acknowledged it."""

    event_id: str
    household: str
    phase: str  # "single" or "cluster"
    pressed_at: float = 0.0
    acked: bool = False


class Stream:
    """Presses at a steady rate, each from a household that has not pressed yet, each
    household's call button publishing through one shared connection (``buttons``)."""

    def __init__(self, buttons: aiomqtt.Client, households: Sequence[str]) -> None:
        self._buttons = buttons
        self._households = iter(households)
        self._count = len(households)
        self.presses: list[Press] = []

    async def run(
        self,
        phase: str,
        rate: float,
        *,
        count: int | None = None,
        until: asyncio.Event | None = None,
    ) -> None:
        """``count`` presses, or presses until ``until`` is set, ``rate`` a second; each
        publish is a task of its own, so a slow acknowledgement never delays the next."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        made = 0
        async with asyncio.TaskGroup() as group:
            while (count is None or made < count) and not (until is not None and until.is_set()):
                household = next(self._households, None)
                if household is None:
                    raise RuntimeError(f"every one of the {self._count} households has pressed")
                press = Press(f"{TAG}-{len(self.presses)}", household, phase)
                self.presses.append(press)
                group.create_task(self._publish(press))
                made += 1
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _publish(self, press: Press) -> None:
        topic = topic_for(PREFIX, press.household, f"CB-{press.household}", Channel.EVENT)
        press.pressed_at = time.time()
        payload = event_payload(
            press.event_id, EventKind.EMERGENCY_PRESS, int(press.pressed_at * 1000)
        )
        try:
            async with asyncio.timeout(10):
                await self._buttons.publish(topic, payload, qos=1)
        except (aiomqtt.MqttError, TimeoutError) as error:
            progress(f"press {press.event_id} not acknowledged by the broker: {error}")
            return
        press.acked = True


# --- takeovers ----------------------------------------------------------------------------


@dataclass
class Takeover:
    """One kill of the lease's holder and what followed."""

    killed: str
    taker: str
    killed_at: float  # wall clock
    took_s: float
    epoch: int
    back_at: float = 0.0  # when the killed server had subscribed again (wall clock)

    @property
    def taken_at(self) -> float:
        return self.killed_at + self.took_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "killed": self.killed,
            "taker": self.taker,
            "took_s": round(self.took_s, 3),
            "epoch": self.epoch,
            "killed_back_after_s": round(self.back_at - self.killed_at, 2),
        }


async def kill_the_leader(members: Sequence[Member], http: aiohttp.ClientSession) -> Takeover:
    """SIGKILL the lease's holder; start it again at once, as its supervisor would, while
    the others are watched until one of them holds the lease."""
    leader, epoch = await leader_among(members, http)
    others = [member for member in members if member is not leader]
    loop = asyncio.get_running_loop()
    killed_at, started = time.time(), loop.time()
    await leader.kill()
    supervisor = asyncio.create_task(leader.start(), name=f"bench.restart.{leader.name}")
    try:
        taker, taken_epoch = await leader_among(others, http)
        took_s = loop.time() - started
        if taken_epoch != epoch + 1:
            progress(f"the lease went from epoch {epoch} to {taken_epoch}, not {epoch + 1}")
        progress(f"killed {leader.name}; {taker.name} took over in {took_s:.2f} s")
        takeover = Takeover(leader.name, taker.name, killed_at, took_s, taken_epoch)
        await supervisor
    finally:
        if not supervisor.done():
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
    takeover.back_at = leader.up_at
    progress(f"{leader.name} is back as a standby {leader.up_at - killed_at:.1f} s after its kill")
    return takeover


# --- the operator -------------------------------------------------------------------------


class Operator:
    """The operator on duty, closing each call once its carer is paged (or nobody could
    be sent), through any server's API, as a desk in service does: carers come free
    again, and no call is left to escalate through the run."""

    def __init__(self, token: str, members: Sequence[Member], http: aiohttp.ClientSession) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._members = members
        self._http = http
        self._turn = 0
        self.closed: set[int] = set()

    @classmethod
    async def signed_up(
        cls, engine: AsyncEngine, members: Sequence[Member], http: aiohttp.ClientSession
    ) -> Operator:
        token = await accounts.add_operator(
            engine, "bench.operator", name="Failover benchmark", now=datetime.now(UTC)
        )
        return cls(token, members, http)

    async def run(self, engine: AsyncEngine, done: asyncio.Event) -> None:
        """Close what is through, every quarter of a second, until ``done`` is set; a
        close under way is finished (a request cut short is an error in a server's log)."""
        while not done.is_set():
            for call_id in await through(engine):
                if call_id not in self.closed and not done.is_set():
                    await self.close(call_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)

    async def close(self, call_id: int) -> None:
        """Resolve the call through one server, or the next should it not answer."""
        body = {"outcome": "false_alarm", "reason": "benchmark: closed once paged"}
        for _ in self._members:
            self._turn += 1
            member = self._members[self._turn % len(self._members)]
            if not member.alive or not member.url:
                continue
            url = f"{member.url}/api/calls/{call_id}/resolve"
            try:
                async with self._http.post(
                    url, json=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=5)
                ) as reply:
                    # 409: closed already, by an answer this run never got.
                    if reply.status not in (200, 409):
                        progress(f"closing call {call_id}: {reply.status} {await reply.text()}")
            except (aiohttp.ClientError, TimeoutError):
                continue
            self.closed.add(call_id)
            return


async def through(engine: AsyncEngine, *, nobody: bool = True) -> list[int]:
    """Open calls whose dispatch is through: a carer's page sent, or (``nobody``) nobody
    to send."""
    paged = select(m.OutboxItem.call_id).where(
        m.OutboxItem.channel == SMS,
        m.OutboxItem.recipient.like("carer:%"),
        m.OutboxItem.state == m.OutboxState.SENT,
    )
    done = m.Call.id.in_(paged)
    if nobody:
        done = or_(
            done,
            m.Call.id.in_(
                select(m.CallHistory.call_id).where(m.CallHistory.action == "nobody_to_send")
            ),
        )
    query = select(m.Call.id).where(m.Call.closed_at.is_(None), done)
    async with engine.connect() as connection:
        return list((await connection.scalars(query)).all())


# --- the command line ---------------------------------------------------------------------

DEFAULT_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def cluster_parser(doc: str, quick: str, workdir: str) -> argparse.ArgumentParser:
    """The options of every cluster benchmark: ``--quick`` (``quick`` says what it does),
    ``--database-url`` and ``--workdir`` (``workdir`` says what it keeps)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE,
        help="the PostgreSQL server to run on: the benchmark creates a database of its own "
        f"there and drops it afterwards (default {DEFAULT_DATABASE})",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help=f"a new directory to run in and keep: {workdir}; default: a temporary one",
    )
    return parser


async def interruptible(
    work: Callable[[], Coroutine[Any, Any, dict[str, Any]]], stopped_by: list[signal.Signals]
) -> dict[str, Any]:
    """``work()``, cancelled by SIGTERM or Ctrl-C (the signal noted in ``stopped_by``): the
    servers, the broker and the database are then stopped and dropped on the way out,
    as at the end of a run."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        if stopped_by:
            progress(f"{sig.name} again: still stopping")
            return
        stopped_by.append(sig)
        progress(f"{sig.name}: stopping the servers and dropping the database")
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    return await work()


def run_to_the_end(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    work: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
) -> None:
    """Run ``work()`` and print its figures, with the run's wall time, as the last line.
    Stopped by SIGTERM or Ctrl-C: no figures, exit 128 + the signal's number."""
    if not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a PostgreSQL URL: several servers need PostgreSQL")
    stopped_by: list[signal.Signals] = []
    try:
        result = asyncio.run(interruptible(work, stopped_by))
    except asyncio.CancelledError:
        progress("stopped before the end; no figures")
        sys.exit(128 + (stopped_by[0] if stopped_by else signal.SIGINT))
    result["wall_time_s"] = round(since_process_start_s(), 1)
    print(json.dumps(result))
