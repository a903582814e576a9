"""Ingest in a process of its own, beside the call engine (``ingest.own_process``).

At tens of thousands of devices the heartbeats alone keep a core half busy: reading
MQTT packets, checking payloads, writing liveness. In one process that is time the
call engine does not get in a storm of presses. With ``ingest.own_process`` the server
runs ingest as a child process instead, and the two use two cores.

The child is the same ``Ingest``: it holds the MQTT session, writes the event log and
acknowledges each message only after its commit. The engine follows the log as it
always does; the log and its cursor stay the truth. What crosses between the two
processes is small:

- to the child, once, on its standard input: the configuration and the brokers'
  addresses, one JSON line (secrets never go on a command line);
- from the child, on its standard output, one JSON line each:
  ``{"stored": [[id, device_id, household_id, event_id, kind], ...]}`` after every
  commit that added events (the engine's prompt), and
  ``{"connected": bool, "stats": {...}}`` when the connection changes and every second;
- the child's log lines go to the server's standard error, as the server's own do,
  in the same format.

The child stops when its standard input closes (the server stopping, or dying: a
child is never left behind) or on SIGTERM/SIGINT, in both cases finishing the batch in
hand as in-process ingest does. A child that ends while the server runs is started
again, with a growing wait, and the server says so in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import signal
import sys
import typing
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from callcenter import logs
from callcenter.brokers import BrokerAddress
from callcenter.clock import Clock, SystemClock
from callcenter.config import Config
from callcenter.ingest.mqtt import backoff_delays
from callcenter.ingest.service import EventListener, Ingest, IngestStats
from callcenter.ingest.writer import StoredEvent

log = logging.getLogger("callcenter.ingest.process")

# How often the child reports its counters (and whether it is connected) when nothing
# else changes.
REPORT_EVERY_S = 1.0
# A connected child that has said nothing for this long is held up.
SILENT_S = 5 * REPORT_EVERY_S
# How long a stopping child may take to finish its batch before it is killed.
STOP_WITHIN_S = 30.0
# A child that lived at least this long starts again after the shortest wait.
_STEADY_S = 60.0
# Longest line the child may write: a commit of ingest.max_batch (at most 100,000)
# events is about 6 MB; asyncio's default of 64 kB would end the pipe at ~1,000.
_LINE_LIMIT = 32 * 1024 * 1024


def report_line(report: dict[str, Any]) -> bytes:
    """One report as the child writes it: compact JSON and a newline."""
    return json.dumps(report, separators=(",", ":")).encode() + b"\n"


def stored_report(events: list[StoredEvent]) -> dict[str, Any]:
    """The report of the events one commit added."""
    return {"stored": [dataclasses.astuple(event) for event in events]}


# The fields of IngestStats that are times (ISO 8601 on the pipe).
_TIMES = frozenset(
    name
    for name, hint in typing.get_type_hints(IngestStats).items()
    if hint in (datetime, datetime | None)
)


def stats_document(stats: IngestStats) -> dict[str, Any]:
    """The counters (and progress times) as JSON-ready data."""
    document = dataclasses.asdict(stats)
    document["dead_letters"] = dict(stats.dead_letters)
    for name in _TIMES:
        moment = document[name]
        document[name] = None if moment is None else moment.isoformat()
    return document


def stats_from(document: dict[str, Any]) -> IngestStats:
    """The counters a child reported, known fields only."""
    known = {f.name for f in dataclasses.fields(IngestStats)}
    values = {key: value for key, value in document.items() if key in known}
    values["dead_letters"] = Counter(values.get("dead_letters") or {})
    for name in _TIMES & values.keys():
        written = values[name]
        values[name] = None if written is None else datetime.fromisoformat(written)
    return IngestStats(**values)


class IngestProcess:
    """The server's side of ingest in a child process: starts it, restarts it when it
    ends unasked, and offers what in-process ingest offers the rest of the server
    (``connected``, ``stats``, ``on_events``).

    Whether the link is up is the server's own view (``stats.link_down_since`` by its
    clock): it knows when no child runs at all, and it keeps the time the link first went
    down across children that come and go. ``reported_at``: when the child last said
    anything about its state; a child that stops reporting is held up, whatever its last
    report said."""

    def __init__(self, config: Config, clock: Clock, *, brokers: Sequence[BrokerAddress]) -> None:
        self._config = config
        self._brokers = tuple(brokers)
        self._clock = clock
        self._listeners: list[EventListener] = []
        self._stopping = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self.stats = IngestStats(link_down_since=self._clock.now())
        self.connected = asyncio.Event()
        self.reported_at: datetime | None = None
        self.starts = 0
        self.pid: int | None = None

    def on_events(self, listener: EventListener) -> None:
        """Call ``listener`` with each committed batch of new events."""
        self._listeners.append(listener)

    def silent_since(self, now: datetime) -> datetime | None:
        """Since when a connected child has said nothing, once that is longer than
        SILENT_S (its last report); None while it reports (or is known to be down)."""
        heard = self.reported_at
        if not self.connected.is_set() or heard is None:
            return None
        return heard if (now - heard).total_seconds() > SILENT_S else None

    def stop(self) -> None:
        """Ask the child to finish its batch and stop (by closing its standard input)."""
        self._stopping.set()
        self._close_input()

    async def run(self) -> None:
        """Keep a child running until stop()."""
        delays = backoff_delays(first_s=0.5, cap_s=10.0)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                code = await self._run_child()
            except OSError as error:  # e.g. no processes left to start one with
                log.error("cannot start the ingest process: %s", error)
                code = None
            self._link(up=False)
            self.reported_at = None
            if self._stopping.is_set():
                log.info("ingest process stopped (exit code %s)", code)
                break
            if loop.time() - started >= _STEADY_S:
                delays = backoff_delays(first_s=0.5, cap_s=10.0)
            wait = next(delays)
            log.error(
                "ingest process ended while the server runs (exit code %s); its messages "
                "not yet acknowledged stay with the broker; starting it again in %.1f s",
                code,
                wait,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def _run_child(self) -> int | None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callcenter.ingest.process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # The child's log lines go where the server's own go.
            stderr=None,
            # Ctrl-C in a terminal reaches the whole process group; the child stops
            # when the server closes its input, so it needs no signal of its own.
            start_new_session=True,
            limit=_LINE_LIMIT,
        )
        self._process = process
        self.pid = process.pid
        self.starts += 1
        log.info("ingest process %d started", process.pid)
        try:
            assert process.stdin is not None and process.stdout is not None
            handshake = {
                "config": self._config.model_dump(mode="json"),
                "brokers": [[broker.host, broker.port] for broker in self._brokers],
                "log_level": logging.getLogger().getEffectiveLevel(),
            }
            process.stdin.write(json.dumps(handshake).encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await process.stdin.drain()
            if self._stopping.is_set():
                self._close_input()
            async for line in process.stdout:
                await self._take(line)
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(process.wait(), STOP_WITHIN_S)
            log.error(
                "ingest process %d did not stop within %.0f s; killing it",
                process.pid,
                STOP_WITHIN_S,
            )
            process.kill()
            return await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        finally:
            self._process = None

    def _close_input(self) -> None:
        process = self._process
        if process is not None and process.stdin is not None:
            process.stdin.close()

    async def _take(self, line: bytes) -> None:
        try:
            report = json.loads(line)
        except ValueError:
            log.warning("ingest process said something unreadable: %r", line[:200])
            return
        if "stored" in report:
            stored = [StoredEvent(*fields) for fields in report["stored"]]
            for listener in self._listeners:
                try:
                    await listener(stored)
                except Exception:
                    log.exception(
                        "event listener %r failed on %d new events", listener, len(stored)
                    )
        if "stats" in report:
            down_since = self.stats.link_down_since
            self.stats = stats_from(report["stats"])
            self.stats.link_down_since = down_since
            self.reported_at = self._clock.now()
        if "connected" in report:
            self._link(up=bool(report["connected"]))

    def _link(self, *, up: bool) -> None:
        if up:
            self.connected.set()
            self.stats.link_down_since = None
        else:
            self.connected.clear()
            self.stats.link_down_since = self.stats.link_down_since or self._clock.now()
            self.stats.broker = ""


class _Reports:
    """The child's side of the pipe: JSON lines to standard output."""

    def __init__(self, ingest: Ingest, writer: asyncio.StreamWriter) -> None:
        self._ingest = ingest
        self._writer = writer
        self._connected: bool | None = None

    def _send(self, report: dict[str, Any]) -> None:
        if not self._writer.is_closing():
            self._writer.write(report_line(report))

    async def stored(self, events: list[StoredEvent]) -> None:
        """Ingest listener: the events a commit added, for the engine's prompt."""
        self._send(stored_report(events))

    def state(self) -> None:
        """Whether ingest is connected, and its counters."""
        self._connected = self._ingest.connected.is_set()
        self._send({"connected": self._connected, "stats": stats_document(self._ingest.stats)})

    async def keep_reporting(self) -> None:
        """The state every REPORT_EVERY_S, and within a tenth of a second of a change
        of connection."""
        loop = asyncio.get_running_loop()
        last = -REPORT_EVERY_S
        while True:
            now = loop.time()
            if self._ingest.connected.is_set() != self._connected or now - last >= REPORT_EVERY_S:
                self.state()
                last = now
            await asyncio.sleep(0.1)

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()


async def _child(config: Config, brokers: list[BrokerAddress]) -> None:
    from callcenter.store.db import create_engine

    loop = asyncio.get_running_loop()
    engine = create_engine(config.database_url)
    ingest = Ingest(config, engine, SystemClock(), brokers=brokers)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingest.stop)

    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout.buffer
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    reports = _Reports(ingest, writer)
    ingest.on_events(reports.stored)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)

    async def until_input_closes() -> None:
        await reader.read()  # the server wrote all it had to say; EOF means stop
        log.info("the server closed the pipe: stopping")
        ingest.stop()

    # What start-up loaded lives as long as the process: out of the collector's way, as
    # the server's own process has it (app.serve). Left in, every full collection walked
    # it, which under a backlog was a fifth of ingest's time (docs/benchmarks.md).
    gc.freeze()
    try:
        async with asyncio.TaskGroup() as tasks:
            watch = tasks.create_task(until_input_closes(), name="ingest.process.input")
            report = tasks.create_task(reports.keep_reporting(), name="ingest.process.report")
            await ingest.run()
            watch.cancel()
            report.cancel()
        reports.state()
        await reports.drain()
    finally:
        await engine.dispose()


def main() -> int:
    """The child: read the handshake, run ingest until told to stop."""
    line = sys.stdin.buffer.readline()
    if not line:
        return 0  # the server went away before saying anything
    handshake = json.loads(line)
    config = Config.model_validate(handshake["config"])
    # The server's configuration in force, --log-format included: its child's lines
    # read as its own.
    logs.configure(handshake["log_level"], log_format=config.logging.format)
    brokers = [BrokerAddress(str(host), int(port)) for host, port in handshake["brokers"]]
    asyncio.run(_child(config, brokers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
