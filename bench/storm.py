"""Storm benchmark: 100,000 devices heart-beating against the real server, then a storm
of 10,000 presses within a minute; events lost, press-to-dispatch and server memory,
next to the same presses' trip to a bare subscriber on the same broker.

    python bench/storm.py [--quick] [--database-url postgresql+asyncpg://...]

Starts everything itself, each in its own process: a private mosquitto, the server
(``callcenter serve``, with its embedded fake Twilio) on a SQLite file in a temporary
directory (or, given ``--database-url``, a database of its own on that PostgreSQL
server, dropped afterwards), and one ``device-sim`` process playing every device. The
district is seeded with ``--households`` (two devices each) and ``--carers`` and put in
service (every device known online, as after any ordinary day). Progress goes to
standard error; the last line printed is one JSON object.

SIGTERM or Ctrl-C stops a run at any point, seeding included: it stops what it started
(the simulator without its goodbyes, the bare subscriber, the server, the broker), drops
its PostgreSQL database, removes its temporary directory (a ``--workdir`` stays), and
exits 143 (130 for Ctrl-C) without a JSON line. The children also get SIGTERM from the
kernel should this process die outright (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.databases import throwaway_database
from callcenter.broker import EmbeddedBroker
from callcenter.domain.response_times import nearest_rank
from callcenter.engine.repository import SMS
from callcenter.store import models as m
from callcenter.store.db import create_engine
from callcenter.store.migrate import upgrade_async
from device_sim import GroundTruth, check_losses, parse_storm, read_ground_truth
from device_sim.demo_district import seed_demo_district

SEED = 2026
PREFIX = "storm"
SERVER_CLIENT_ID = "storm-server"
# The history actions that are a new call's dispatch decision.
DECISIONS = ("dispatched", "nobody_to_send")
TARGET_P99_MS = 1000.0
TARGET_RSS_MB = 500.0
# File descriptors the simulator needs besides its connections (as device_sim reserves).
FILE_HEADROOM = 64

_STARTED = time.perf_counter()
_T = TypeVar("_T")
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def die_with_bench() -> None:
    """Runs in each child before exec: SIGTERM from the kernel when this process dies,
    however it dies. The library is loaded beforehand: loading it after the fork could
    wait for a lock another thread of this process held at the fork."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench/storm {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def figures(name: str, values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {f"{name}_{k}_ms": None for k in ("p50", "p95", "p99", "max")}
    return {
        f"{name}_p50_ms": round(statistics.median(values), 1),
        f"{name}_p95_ms": nearest_rank(values, 95),
        f"{name}_p99_ms": nearest_rank(values, 99),
        f"{name}_max_ms": round(max(values), 1),
    }


# --- the database -----------------------------------------------------------------------


async def prepare_database(url: str, households: int, carers: int) -> None:
    """Migrate, seed the district, and put it in service: every device online, seen now
    (a fresh seed has never heard from a device; a district in service has)."""
    await upgrade_async(url)
    progress("schema migrated; seeding the district")
    summary = await seed_demo_district(url, seed=SEED, households=households, carers=carers)
    progress(f"seeded: {summary}")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                update(m.Device).values(online=True, last_seen_at=datetime.now(UTC))
            )
    finally:
        await engine.dispose()


def bench_database(
    workdir: Path, server_url: str | None, households: int, carers: int
) -> AbstractAsyncContextManager[str]:
    """A SQLite file in ``workdir``, or a new database on ``server_url``'s PostgreSQL
    server, dropped afterwards (the database named in the URL is only connected to)."""

    async def prepare(url: str) -> None:
        await prepare_database(url, households, carers)

    return throwaway_database(workdir, server_url, prepare, name="storm", say=progress)


async def decisions(engine: AsyncEngine) -> dict[int, tuple[str, datetime]]:
    """Each call's first dispatch decision: its action and when it was recorded."""
    first = (
        select(m.CallHistory.call_id, func.min(m.CallHistory.id).label("entry"))
        .where(m.CallHistory.action.in_(DECISIONS))
        .group_by(m.CallHistory.call_id)
        .subquery()
    )
    query = select(m.CallHistory.call_id, m.CallHistory.action, m.CallHistory.at).join(
        first, m.CallHistory.id == first.c.entry
    )
    async with engine.connect() as connection:
        return {row.call_id: (row.action, row.at) for row in await connection.execute(query)}


async def first_carer_texts(engine: AsyncEngine) -> dict[int, datetime]:
    """When the first dispatch page (a text guarded by the carer it pages; a station
    lead's notice is not one) of each call was accepted by (fake) Twilio."""
    query = select(m.OutboxItem.call_id, m.OutboxItem.done_at, m.OutboxItem.guard).where(
        m.OutboxItem.channel == SMS,
        m.OutboxItem.recipient.like("carer:%"),
        m.OutboxItem.state == m.OutboxState.SENT,
        m.OutboxItem.call_id.is_not(None),
    )
    first: dict[int, datetime] = {}
    async with engine.connect() as connection:
        for call_id, done_at, guard in await connection.execute(query):
            if guard.get("carer_id") is not None and (
                call_id not in first or done_at < first[call_id]
            ):
                first[call_id] = done_at
    return first


def dispatch_times(
    decided: dict[int, tuple[str, datetime]], texted: dict[int, datetime]
) -> dict[int, datetime]:
    """A call's dispatch went out when its first carer text reached Twilio, or, when
    nobody could be sent, when the desk escalated."""
    out: dict[int, datetime] = {}
    for call_id, (action, at) in decided.items():
        if action == "nobody_to_send":
            out[call_id] = at
        elif call_id in texted:
            out[call_id] = texted[call_id]
    return out


async def stored_events(engine: AsyncEngine, boot_id: str) -> list[Any]:
    """Every stored device event of the simulator's run, with its call if it opened one."""
    query = (
        select(
            m.Device.serial,
            m.DeviceEvent.event_id,
            m.DeviceEvent.id,
            m.DeviceEvent.received_at,
            m.DeviceEvent.household_id,
            m.Call.id.label("call_id"),
        )
        .join(m.Device, m.Device.id == m.DeviceEvent.device_id)
        .outerjoin(m.Call, m.Call.event_id == m.DeviceEvent.id)
        .where(m.DeviceEvent.event_id.like(f"%-{boot_id}-%"))
    )
    async with engine.connect() as connection:
        return list(await connection.execute(query))


async def unapplied_events(engine: AsyncEngine) -> set[int]:
    """The stored device events the call engine has not applied yet."""
    async with engine.connect() as connection:
        return set(await connection.scalars(select(m.UnappliedEvent.id)))


async def calls_by_household(engine: AsyncEngine) -> dict[int, list[tuple[int, datetime]]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(m.Call.household_id, m.Call.id, m.Call.opened_at))
        calls: dict[int, list[tuple[int, datetime]]] = {}
        for household_id, call_id, opened_at in rows:
            calls.setdefault(household_id, []).append((call_id, opened_at))
        return calls


# --- the processes ----------------------------------------------------------------------


def server_config(
    workdir: Path, database_url: str, broker: EmbeddedBroker, own_ingest_process: bool
) -> Path:
    """The server's configuration file: the defaults (fake Twilio included), on the
    benchmark's broker and database; ingest in a process of its own if asked."""
    path = workdir / "callcenter.toml"
    path.write_text(
        f"""[data]
dir = "{workdir / "server"}"

[broker]
host = "{broker.host}"
port = {broker.port}
topic_prefix = "{PREFIX}"
client_id = "{SERVER_CLIENT_ID}"
# The simulator shares connections among many devices: a storm's throughput, not
# who may publish (tests/test_device_logins.py).
device_logins = "none"

[ingest]
own_process = {"true" if own_ingest_process else "false"}

[web]
port = 0
"""
    )
    return path


def _stat(pid: int | str) -> list[str]:
    """/proc/PID/stat after the command name (field 3 on), empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time a process has used, in clock ticks (0 once it is gone)."""
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12]) if fields else 0


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the server's ingest process)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (fields := _stat(entry.name)) and int(fields[1]) == pid
    ]


class CpuShares:
    """How much of a core each process of the run used between start() and stop()."""

    def __init__(self, processes: dict[str, int]) -> None:
        self._processes = processes
        self._ticks: dict[str, int] = {}
        self._started = 0.0
        self.shares: dict[str, float] = {}

    def start(self) -> None:
        self._ticks = {name: cpu_ticks(pid) for name, pid in self._processes.items()}
        self._started = time.monotonic()

    def stop(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        per_second = os.sysconf("SC_CLK_TCK")
        self.shares = {
            name: round((cpu_ticks(pid) - self._ticks[name]) / per_second / elapsed, 2)
            for name, pid in self._processes.items()
        }


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB, from /proc."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


class Server:
    """``callcenter serve`` as a child process, its log in a file."""

    def __init__(
        self, config: Path, log_path: Path, database_url: str, profile: Path | None = None
    ) -> None:
        self.config = config
        self.profile = profile
        self.log_path = log_path
        self.database_url = database_url
        self.process: asyncio.subprocess.Process | None = None
        self.rss_samples: list[tuple[float, int]] = []

    async def start(self, timeout_s: float) -> None:
        log = self.log_path.open("wb")
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "CALLCENTER_DATABASE__URL": self.database_url,
        }
        profiling = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiling,
            "-m",
            "callcenter.cli",
            "--config",
            str(self.config),
            "serve",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            env=env,
            preexec_fn=die_with_bench,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while "ingest subscribed to" not in self.log_path.read_text(errors="replace"):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; its log:\n{self.log()}")
            await asyncio.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        return [line for line in self.log().splitlines() if " ERROR " in line]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def sample_memory(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            rss = memory_kb(self.pid).get("VmRSS")
            if rss is not None:
                self.rss_samples.append((loop.time(), rss))
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Simulator:
    """One ``device-sim`` process; its progress lines are passed on, marked."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.summary: dict[str, Any] | None = None
        self.storm_started = asyncio.Event()
        self.storm_over = asyncio.Event()
        self.online = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "device_sim",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=die_with_bench,
        )
        self._readers = [
            asyncio.create_task(self._read_progress(), name="bench.sim.stderr"),
            asyncio.create_task(self._read_summary(), name="bench.sim.stdout"),
        ]

    async def _read_progress(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if " alembic." in line:  # reading the device list checks the schema
                continue
            print(f"    [device-sim] {line}", file=sys.stderr, flush=True)
            if " devices connected in " in line:
                self.online.set()
            elif "storm: " in line:
                self.storm_started.set()
            elif "storm over" in line:
                self.storm_over.set()

    async def _read_summary(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.summary = json.loads(raw)

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def stop(self, timeout_s: float, *, hurry: bool = False) -> int:
        """SIGTERM: the simulator drains, says goodbye for every device, prints its summary.
        In a ``hurry`` (the run abandoned), or if this wait is cancelled (the bench
        stopped by a signal meanwhile), see :meth:`_hurry`."""
        if hurry:
            return await self._hurry()
        try:
            return await self._stop(timeout_s)
        except asyncio.CancelledError:
            await self._hurry()
            raise

    def _terminate(self) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    async def _hurry(self) -> int:
        """A second signal a moment after the first (sent together, the kernel would
        deliver one), which skips the drain; killed if it has not ended 3 s after the first."""
        assert self.process is not None
        for wait_s in (0.5, 2.5):
            self._terminate()
            with contextlib.suppress(TimeoutError):
                return await self._exited(wait_s)
        self.process.kill()
        return await self._exited(None)

    async def _stop(self, timeout_s: float) -> int:
        assert self.process is not None
        # Seen twice in long runs: a signal sent through the asyncio transport never got
        # there. os.kill directly, and once more if it has not ended 90 s later (a
        # second signal only skips the drain).
        for _ in range(2):
            self._terminate()
            with contextlib.suppress(TimeoutError):
                return await self._exited(min(90.0, timeout_s))
        self.process.kill()
        return await self._exited(None)

    async def _exited(self, timeout_s: float | None) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout_s)
        await asyncio.gather(*self._readers)
        return code


class BareSubscriber:
    """The raw limit: the same presses, through the same broker, to a plain aiomqtt
    subscriber in a process of its own (this script with ``--bare-subscriber``), which
    parses each one, notes when it arrived, and does nothing else."""

    def __init__(self, broker: EmbeddedBroker, out: Path) -> None:
        self.broker = broker
        self.out = out
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--bare-subscriber",
            f"{self.broker.host}:{self.broker.port}",
            str(self.out),
            preexec_fn=die_with_bench,
        )
        deadline = time.monotonic() + 20
        while not self.out.exists():
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise SystemExit("the bare subscriber did not start")
            await asyncio.sleep(0.05)

    async def stop(self) -> dict[str, float]:
        """Stop it; when each event id arrived (ms since the epoch)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        arrived: dict[str, float] = {}
        if self.out.exists():
            for line in self.out.read_text().splitlines():
                event_id, _, at = line.partition(" ")
                if at:
                    arrived.setdefault(event_id, float(at))
        return arrived


async def bare_subscriber(address: str, out: Path) -> None:
    """``--bare-subscriber HOST:PORT FILE``: one line per event, "id arrival_ms"."""
    host, _, port = address.rpartition(":")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with aiomqtt.Client(
        host, int(port), identifier="storm-bare-subscriber", protocol=aiomqtt.ProtocolVersion.V311
    ) as client:
        await client.subscribe(f"{PREFIX}/v1/+/+/event", qos=1)
        with out.open("w", buffering=1) as file:

            async def receive() -> None:
                async for message in client.messages:
                    at = time.time() * 1000
                    body = json.loads(message.payload)  # type: ignore[arg-type]
                    file.write(f"{body['id']} {at:.1f}\n")

            receiving = asyncio.create_task(receive())
            await stop.wait()
            receiving.cancel()


# --- the run ----------------------------------------------------------------------------


async def progress_counts(engine: AsyncEngine) -> tuple[int, int, int]:
    """Cheap counts while waiting: calls decided, carers paged among them, and calls
    whose dispatch (a carer's text accepted, or nobody to send) went out."""
    texted = (
        select(m.OutboxItem.id)
        .where(
            m.OutboxItem.call_id == m.Call.id,
            m.OutboxItem.channel == SMS,
            m.OutboxItem.recipient.like("carer:%"),
            m.OutboxItem.state == m.OutboxState.SENT,
        )
        .exists()
    )
    nobody = (
        select(m.CallHistory.id)
        .where(m.CallHistory.call_id == m.Call.id, m.CallHistory.action == "nobody_to_send")
        .exists()
    )
    decided = select(func.count(func.distinct(m.CallHistory.call_id))).where(
        m.CallHistory.action.in_(DECISIONS)
    )
    paged = select(func.count(func.distinct(m.CallHistory.call_id))).where(
        m.CallHistory.action == "dispatched"
    )
    out = select(func.count()).select_from(m.Call).where(or_(texted, nobody))
    async with engine.connect() as connection:
        return (
            int(await connection.scalar(decided) or 0),
            int(await connection.scalar(paged) or 0),
            int(await connection.scalar(out) or 0),
        )


async def wait_dispatched(
    engine: AsyncEngine, storm: int, timeout_s: float, simulator: Simulator
) -> dict[int, datetime]:
    """Until every storm call's dispatch went out (or the time is up), reporting as it
    goes; then each call's dispatch time."""
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while True:
        decided, paged, out = await progress_counts(engine)
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            progress(
                f"server: {decided} calls decided ({paged} carers paged, "
                f"{decided - paged} nobody to send); {out}/{storm} calls with a page "
                "out or escalated"
            )
        if simulator.storm_over.is_set() and out >= storm:
            # The exact count (a call's first decision, and its first page) is dearer.
            exact = len(dispatch_times(await decisions(engine), await first_carer_texts(engine)))
            progress(f"{exact}/{storm} dispatches out")
            if exact >= storm:
                break
            await asyncio.sleep(8.0)
        if time.monotonic() > deadline:
            progress(f"gave up waiting after {timeout_s:g} s")
            break
        if not simulator.running():
            raise SystemExit("the simulator ended before the storm was over")
        await asyncio.sleep(2.0)
    return dispatch_times(await decisions(engine), await first_carer_texts(engine))


def storm_figures(
    truth: GroundTruth,
    rows: Sequence[Any],
    dispatched: dict[int, datetime],
    calls: dict[int, list[tuple[int, datetime]]],
    arrived_ms: dict[str, float],
    gave_up_ms: float,
    unapplied: set[int],
    decided: dict[int, tuple[str, datetime]] | None = None,
) -> dict[str, Any]:
    """Press to dispatch, press to stored and the bare trip, over every storm press; and
    the presses that are stored but opened or joined no call. Beside press to dispatch,
    its two parts: press to the call engine's decision (``decided``: a carer chosen and
    the page written, or nobody to send), and, for the calls a carer was paged for,
    press to the page reaching Twilio. A call whose dispatch had
    not gone out when the run stopped waiting (``gave_up_ms``) counts with the time
    waited: its true figure is larger, so percentiles that include one are lower bounds.
    So does a press stored in the log that the call engine had not reached yet
    (``unapplied``); one it had applied without a call is a loss."""
    by_key = {(row.serial, row.event_id): row for row in rows}
    to_dispatch: list[float] = []
    to_decision: list[float] = []
    to_page: list[float] = []
    to_stored: list[float] = []
    to_bare: list[float] = []
    without_call = 0
    not_applied = 0
    undispatched = 0
    storm = truth.storm_events
    for event in storm:
        if event.event_id in arrived_ms:
            to_bare.append(arrived_ms[event.event_id] - event.ts_ms)
        row = by_key.get((event.serial, event.event_id))
        if row is None:
            continue  # lost: counted by the loss check
        to_stored.append(row.received_at.timestamp() * 1000 - event.ts_ms)
        call_id = row.call_id
        if call_id is None:
            # Joined a call the household already had open, if there is one.
            open_before = [
                c for c, opened in calls.get(row.household_id, []) if opened <= row.received_at
            ]
            call_id = open_before[-1] if open_before else None
        if call_id is None and row.id in unapplied:
            not_applied += 1
            to_dispatch.append(gave_up_ms - event.ts_ms)
            continue
        if call_id is None:
            without_call += 1
            continue
        at = dispatched.get(call_id)
        if at is None:
            undispatched += 1
            to_dispatch.append(gave_up_ms - event.ts_ms)
            continue
        to_dispatch.append(at.timestamp() * 1000 - event.ts_ms)
        action, decided_at = (decided or {}).get(call_id, ("", None))
        if decided_at is not None:
            to_decision.append(decided_at.timestamp() * 1000 - event.ts_ms)
        if action == "dispatched":
            to_page.append(at.timestamp() * 1000 - event.ts_ms)
    return {
        "storm_presses": len(storm),
        "storm_presses_without_call": without_call,
        # Not out when the run stopped waiting: counted at the time waited (lower bounds).
        "storm_calls_not_dispatched": undispatched,
        "storm_presses_not_yet_applied": not_applied,
        "press_to_dispatch_lower_bounds": undispatched + not_applied,
        **figures("press_to_dispatch", to_dispatch),
        **figures("press_to_decision", to_decision),
        **figures("press_to_page", to_page),
        **figures("press_to_stored", to_stored),
        **figures("bare_subscriber", to_bare),
        "bare_subscriber_received": len(to_bare),
    }


def simulator_args(
    args: argparse.Namespace, database_url: str, broker: EmbeddedBroker, truth: Path
) -> tuple[list[str], int | None]:
    devices = args.households * 2
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # One connection per device, as in the field, while the open-file limit allows.
    connections = args.connections
    if connections is None and devices + FILE_HEADROOM > limit:
        connections = 1000
    sim = [
        "--database",
        database_url,
        "--broker-host",
        broker.host,
        "--broker-port",
        str(broker.port),
        "--prefix",
        PREFIX,
        "--heartbeat-interval",
        "60",
        "--press-rate",
        "0",
        "--storm",
        f"{args.storm[0]}:{args.storm[1]:g}",
        "--storm-after",
        str(args.storm_after),
        "--connect-concurrency",
        str(args.connect_concurrency),
        "--seed",
        str(SEED),
        "--drain-timeout",
        "60",
        "--report-interval",
        str(args.report_interval),
        "--ground-truth",
        str(truth),
    ]
    if connections is not None:
        sim += ["--connections", str(connections)]
    return sim, connections


@dataclass
class Driven:
    """What the devices' part of the run left for the figures."""

    truth_path: Path
    dispatched: dict[int, datetime]
    gave_up_ms: float
    arrived_ms: dict[str, float]
    connections: int | None
    online_s: float
    rss_before_storm_kb: int
    rss_after: dict[str, int]
    # The same for the server's ingest process (--ingest own), else empty.
    ingest_rss_after: dict[str, int]
    sim_exit: int
    sim_summary: dict[str, Any] | None
    # Cores used by each process from the storm's start until its last dispatch.
    cpu_during_storm: dict[str, float]


async def drive(
    args: argparse.Namespace,
    url: str,
    broker: EmbeddedBroker,
    engine: AsyncEngine,
    server: Server,
    workdir: Path,
) -> Driven:
    """Bring every device online, storm, wait for every dispatch; the simulator and the
    bare subscriber are stopped on the way out whatever happens."""
    storm, storm_s = args.storm
    memory = asyncio.create_task(server.sample_memory(), name="bench.memory")
    bare = BareSubscriber(broker, workdir / "bare.txt")
    arrived_ms: dict[str, float] = {}
    try:
        await bare.start()
        truth_path = workdir / "truth.jsonl"
        sim_args, connections = simulator_args(args, url, broker, truth_path)
        simulator = Simulator(sim_args)
        progress(
            f"starting device-sim: {args.households * 2} devices over "
            f"{connections or args.households * 2} connections, storm {storm} presses "
            f"in {storm_s:g} s"
        )
        started = time.monotonic()
        await simulator.start()
        try:
            await simulator.online.wait()
            online_s = time.monotonic() - started
            await simulator.storm_started.wait()
            rss_before_storm = memory_kb(server.pid).get("VmRSS", 0)
            assert simulator.process is not None and bare.process is not None
            processes = {"server": server.pid, "simulator": simulator.process.pid}
            for child in children_of(server.pid):  # with --ingest own: the ingest process
                processes["ingest_process"] = child
            processes["broker"] = broker.pid or 0
            processes["bare_subscriber"] = bare.process.pid
            cpu = CpuShares(processes)
            cpu.start()
            dispatched = await wait_dispatched(engine, storm, storm_s + args.wait, simulator)
            cpu.stop()
            gave_up_ms = time.time() * 1000
            rss_after = memory_kb(server.pid)
            ingest_rss_after = memory_kb(processes.get("ingest_process", 0))
        except BaseException:
            progress("stopping device-sim, the run abandoned")
            await simulator.stop(timeout_s=0, hurry=True)
            raise
        progress("stopping device-sim (it says goodbye for every device)")
        sim_exit = await simulator.stop(timeout_s=300)
    finally:
        arrived_ms = await bare.stop()
        memory.cancel()
    return Driven(
        truth_path,
        dispatched,
        gave_up_ms,
        arrived_ms,
        connections,
        online_s,
        rss_before_storm,
        rss_after,
        ingest_rss_after,
        sim_exit,
        simulator.summary,
        cpu.shares,
    )


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    storm, storm_s = args.storm
    progress(
        f"seeding {args.households} households ({args.households * 2} devices), "
        f"{args.carers} carers"
    )
    async with (
        bench_database(workdir, args.database_url, args.households, args.carers) as url,
        EmbeddedBroker(workdir / "mosquitto") as broker,
    ):
        engine = create_engine(url)
        try:
            server = Server(
                server_config(workdir, url, broker, args.ingest == "own"),
                workdir / "server.log",
                url,
                args.profile,
            )
            progress("starting the server (callcenter serve)")
            try:
                await server.start(timeout_s=180)
                progress(f"server up (pid {server.pid}), {memory_kb(server.pid)}")
                run = await drive(args, url, broker, engine, server, workdir)
            finally:
                progress("stopping the server")
                await server.stop()
            truth = read_ground_truth(run.truth_path)
            rows = await stored_events(engine, truth_boot(run.truth_path))
            losses = check_losses(truth, Counter((row.serial, row.event_id) for row in rows))
            decided = await decisions(engine)
            figures_ = storm_figures(
                truth,
                rows,
                run.dispatched,
                await calls_by_household(engine),
                run.arrived_ms,
                run.gave_up_ms,
                await unapplied_events(engine),
                decided,
            )
        finally:
            await engine.dispose()
        errors = server.errors()
    peak_during = max((rss for _, rss in server.rss_samples), default=0)
    loss = losses.as_dict()
    events_lost = loss["events_lost"] + figures_["storm_presses_without_call"]
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "devices": args.households * 2,
        "households": args.households,
        "carers": args.carers,
        "connections": run.connections or args.households * 2,
        "last_will": "per_connection" if run.connections else "per_device",
        "storm": storm,
        "storm_seconds": storm_s,
        "heartbeat_interval_s": 60,
        "events_lost": events_lost,
        **{f"loss_check_{k}": v for k, v in loss.items()},
        **figures_,
        "storm_dispatched_to_carer": sum(1 for a, _ in decided.values() if a == "dispatched"),
        "storm_nobody_to_send": sum(1 for a, _ in decided.values() if a == "nobody_to_send"),
        # With ingest in its own process the server is both: the sum of their peaks.
        "server_rss_mb": round(
            (run.rss_after.get("VmHWM", 0) + run.ingest_rss_after.get("VmHWM", 0)) / 1024, 1
        ),
        "server_rss_main_process_mb": round(run.rss_after.get("VmHWM", 0) / 1024, 1),
        "server_rss_ingest_process_mb": round(run.ingest_rss_after.get("VmHWM", 0) / 1024, 1),
        "server_rss_now_mb": round(run.rss_after.get("VmRSS", 0) / 1024, 1),
        "server_rss_before_storm_mb": round(run.rss_before_storm_kb / 1024, 1),
        "server_rss_sampled_peak_mb": round(peak_during / 1024, 1),
        "all_online_s": round(run.online_s, 1),
        "ingest": args.ingest,
        # Cores each process used from the storm's start to its last dispatch: two in all.
        "cpu_during_storm": run.cpu_during_storm,
        "simulator_exit": run.sim_exit,
        "simulator_summary": run.sim_summary,
        "server_errors_logged": len(errors),
        "database": "postgresql" if args.database_url else "sqlite",
        "cpus": os.cpu_count(),
        # Other work on the machine shows here: the run shares two cores with it.
        "load_average_at_start": args.load_at_start,
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }
    result["targets_met"] = {
        "events_lost": events_lost == 0 and loss["events_doubled"] == 0,
        "press_to_dispatch_p99": result["press_to_dispatch_p99_ms"] is not None
        and result["press_to_dispatch_lower_bounds"] == 0
        and result["press_to_dispatch_p99_ms"] < TARGET_P99_MS,
        "server_rss": result["server_rss_mb"] < TARGET_RSS_MB,
    }
    for line in errors[:5]:
        progress(f"server logged: {line}")
    return result


async def stopped_by_sigterm(run: Coroutine[Any, Any, _T]) -> _T:
    """``run``, cancelled by SIGTERM as ``asyncio.run`` cancels it on Ctrl-C: at an
    await, so every part's clean-up runs (stop the children, drop the database). A
    KeyboardInterrupt raised wherever the signal found the process, as before, could land
    in the event loop or in a database driver's callback, where nothing expects it, and
    a stop could then hang. A second SIGTERM while stopping is only noted."""
    task = asyncio.current_task()
    assert task is not None
    signalled = False

    def on_sigterm() -> None:
        nonlocal signalled
        if signalled:
            progress("SIGTERM again: still stopping (Ctrl-C twice to break off)")
            return
        signalled = True
        progress("SIGTERM: stopping what the run started")
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
    return await run


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything in it, trying again shortly while something still
    adds files to it."""
    for _ in range(5):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)
    shutil.rmtree(path)


def truth_boot(path: Path) -> str:
    """The boot id of the (only) run in a ground-truth log."""
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("record") == "run":
            return str(record["boot"])
    raise SystemExit(f"{path} has no run record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 devices, 500 presses in 10 s")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server to run on")
    parser.add_argument("--households", type=int, default=None, help="two devices each")
    parser.add_argument("--carers", type=int, default=None, help="default 60 per 900 households")
    parser.add_argument("--storm", type=parse_storm, default=None, metavar="COUNT:SECONDS")
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="devices share N connections (default: one per device while the open-file "
        "limit allows, else 1000)",
    )
    parser.add_argument(
        "--ingest",
        choices=("own", "in-server"),
        default=None,
        help="ingest in a process of its own (ingest.own_process) or in the server's; "
        "default: own for the full run, in-server for --quick",
    )
    parser.add_argument("--storm-after", type=float, default=None, metavar="S")
    parser.add_argument("--connect-concurrency", type=int, default=None)
    parser.add_argument("--report-interval", type=float, default=None)
    parser.add_argument(
        "--wait", type=float, default=None, help="seconds after the storm to wait for dispatches"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="a new directory to run in and keep (database, logs, ground truth); "
        "default: a temporary one",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="run the server under cProfile, into FILE"
    )
    parser.add_argument(
        "--bare-subscriber", nargs=2, metavar=("HOST:PORT", "FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.bare_subscriber:
        asyncio.run(bare_subscriber(args.bare_subscriber[0], Path(args.bare_subscriber[1])))
        return
    households = args.households or (2_500 if args.quick else 50_000)
    args.households = households
    args.carers = args.carers or max(9, round(households * 60 / 900))
    args.storm = args.storm or ((500, 10.0) if args.quick else (10_000, 60.0))
    args.storm_after = (
        args.storm_after if args.storm_after is not None else (1.0 if args.quick else 10.0)
    )
    args.connect_concurrency = args.connect_concurrency or (256 if args.quick else 64)
    args.report_interval = args.report_interval or (2.0 if args.quick else 5.0)
    args.wait = args.wait if args.wait is not None else (60.0 if args.quick else 1800.0)
    args.ingest = args.ingest or ("in-server" if args.quick else "own")
    args.load_at_start = round(os.getloadavg()[0], 2)
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="bench-storm-")) if temporary else args.workdir
    if not temporary:
        workdir.mkdir(parents=True)
    stopped_by: signal.Signals | None = None
    try:
        result = asyncio.run(stopped_by_sigterm(run(args, workdir)))
    except asyncio.CancelledError:
        stopped_by = signal.SIGTERM
    except KeyboardInterrupt:
        stopped_by = signal.SIGINT
    finally:
        # Once the event loop is done: a SQLite connection cut off by a signal while it
        # opened may still be making the database's files on its thread for a moment.
        if temporary:
            remove_tree(workdir)
    if stopped_by is not None:
        progress(f"stopped by {stopped_by.name}; what the run started is stopped and removed")
        sys.exit(128 + stopped_by)
    result["wall_time_s"] = round(time.perf_counter() - _STARTED, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
