"""Ingest benchmark: events persisted per second and press-to-commit latency, next to
the raw limit of a bare subscriber on the same broker in the same run.

    python bench/ingest.py [--quick] [--database-url postgresql+asyncpg://...]

Starts its own mosquitto and SQLite database (demo district), so it needs nothing
running; given ``--database-url``, a database of its own on that PostgreSQL server
instead, dropped at the end (bench/dispatch.py's ``bench_database``). Throughput is
measured the same way for both sides: a backlog of QoS 1 messages is queued in the
broker for a persistent session while the consumer is away, then the consumer connects
and the time to drain it is taken. The bare subscriber
parses each payload as JSON and stores nothing. Latency is measured at the demo
district's baseline load (every device heart-beating plus a steady trickle of presses).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dispatch import bench_database
from callcenter.broker import EmbeddedBroker
from callcenter.clock import SystemClock
from callcenter.config import Config
from callcenter.domain.events import EventKind
from callcenter.ingest.mqtt import ingest_client
from callcenter.ingest.protocol import (
    Channel,
    event_payload,
    heartbeat_payload,
    subscription,
    topic_for,
)
from callcenter.ingest.service import Ingest
from callcenter.ingest.writer import StoredEvent
from callcenter.store.db import create_engine

PREFIX = "bench"
HOUSEHOLDS = 900
PUBLISHER = Path(__file__).with_name("publisher.py")
RAW_SUBSCRIBER = Path(__file__).with_name("raw_subscriber.py")


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    elapsed = time.perf_counter() - _STARTED
    print(f"[bench/ingest {elapsed:5.1f}s] {message}", file=sys.stderr, flush=True)


def config_for(broker: EmbeddedBroker, client_id: str) -> Config:
    return Config.model_validate(
        {
            "broker": {
                "host": broker.host,
                "port": broker.port,
                "topic_prefix": PREFIX,
                "client_id": client_id,
                # The publishers speak for many devices over few connections: the
                # figure is ingest's throughput (--watch-refusals adds the log watch).
                "device_logins": "none",
            }
        }
    )


def queue_backlog(broker: EmbeddedBroker, count: int, run: str, processes: int = 2) -> None:
    """Publish ``count`` events from separate processes and wait until the broker has them."""
    per = count // processes
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(PUBLISHER),
                "--host",
                broker.host,
                "--port",
                str(broker.port),
                "--prefix",
                PREFIX,
                "--count",
                str(per),
                "--households",
                str(HOUSEHOLDS),
                "--run",
                f"{run}{i}",
            ]
        )
        for i in range(processes)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"publisher failed with exit code {proc.returncode}")


async def open_session(broker: EmbeddedBroker, client_id: str) -> None:
    client = ingest_client(config_for(broker, client_id).broker, host=broker.host, port=broker.port)
    async with client:
        await client.subscribe(subscription(PREFIX), qos=1)


async def close_session(broker: EmbeddedBroker, client_id: str) -> None:
    """Discard a finished phase's session, so later phases do not queue messages for it."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id, clean_session=True):
        pass


async def raw_subscriber_rate(broker: EmbeddedBroker, count: int) -> float:
    """Drain a backlog with a bare paho subscriber in its own process, storing nothing."""
    client_id = "raw"
    await open_session(broker, client_id)
    queue_backlog(broker, count, "raw")
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(RAW_SUBSCRIBER),
            "--host",
            broker.host,
            "--port",
            str(broker.port),
            "--client-id",
            client_id,
            "--count",
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rate: float = json.loads(result.stdout.strip().splitlines()[-1])["per_s"]
    await close_session(broker, client_id)
    return rate


async def broker_drain_rate(broker: EmbeddedBroker, count: int) -> float | None:
    """How fast the broker itself hands a backlog to its own C client (mosquitto_sub):
    the ceiling above every Python subscriber. None when mosquitto_sub is not installed."""
    base = [
        "mosquitto_sub",
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "-i",
        "c-client",
        "-c",
        "-q",
        "1",
        "-V",
        "mqttv311",
        "-t",
        subscription(PREFIX),
    ]
    if shutil.which("mosquitto_sub") is None:
        return None
    await asyncio.to_thread(subprocess.run, [*base, "-E"], check=True)
    queue_backlog(broker, count, "c")
    started = time.perf_counter()
    await asyncio.to_thread(
        subprocess.run, [*base, "-C", str(count)], check=True, stdout=subprocess.DEVNULL
    )
    rate = count / (time.perf_counter() - started)
    await close_session(broker, "c-client")
    return rate


async def aiomqtt_iterator_rate(broker: EmbeddedBroker, count: int) -> float:
    """Drain a backlog with plain aiomqtt ``async for`` (auto-ack, json.loads): the
    figure a naive subscriber gets, for reference."""
    await open_session(broker, "iterator")
    queue_backlog(broker, count, "itr")
    client = aiomqtt.Client(broker.host, broker.port, identifier="iterator", clean_session=False)
    received = 0
    start = time.perf_counter()
    async with client:
        async for message in client.messages:
            json.loads(message.payload)  # type: ignore[arg-type]
            received += 1
            if received >= count:
                break
        elapsed = time.perf_counter() - start
    await close_session(broker, "iterator")
    return received / elapsed


async def ingest_rate(broker: EmbeddedBroker, database_url: str, count: int) -> tuple[float, int]:
    """Drain a backlog through the real ingest into the database; events/s and batches."""
    config = config_for(broker, "ingest-throughput")
    engine = create_engine(database_url)
    await open_session(broker, "ingest-throughput")
    queue_backlog(broker, count, "thr")
    ingest = Ingest(config, engine, SystemClock(), brokers=config.broker.addresses)
    done = asyncio.Event()

    async def on_events(events: list[StoredEvent]) -> None:
        if ingest.stats.events_stored >= count:
            done.set()

    ingest.on_events(on_events)
    # As the server's process (app.serve) and ingest's own (ingest/process.py) do once
    # started: what start-up loaded is kept out of the collector's full collections.
    gc.freeze()
    # Timed from connecting to the last commit, as the bare subscriber is timed from
    # connecting to its last message.
    started = time.perf_counter()
    task = asyncio.create_task(ingest.run(), name="callcenter.ingest")
    # Not ingest.connected: on a resumed session that is set only after the backlog.
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    batches = ingest.stats.batches
    ingest.stop()
    await task
    await engine.dispose()
    await close_session(broker, "ingest-throughput")
    return ingest.stats.events_stored / elapsed, batches


async def baseline_latency(
    broker: EmbeddedBroker, database_url: str, seconds: float, press_rate: float
) -> list[float]:
    """Press-to-commit latency (ms) with every device heart-beating once a minute and
    ``press_rate`` presses per second across the district."""
    config = config_for(broker, "ingest-latency")
    engine = create_engine(database_url)
    ingest = Ingest(config, engine, SystemClock(), brokers=config.broker.addresses)
    sent: dict[str, float] = {}
    latencies: list[float] = []

    async def on_events(events: list[StoredEvent]) -> None:
        now = time.perf_counter()
        for event in events:
            at = sent.pop(event.event_id, None)
            if at is not None:
                latencies.append((now - at) * 1000)

    ingest.on_events(on_events)
    task = asyncio.create_task(ingest.run(), name="callcenter.ingest")
    await asyncio.wait_for(ingest.connected.wait(), 30)

    devices = [
        (f"H{n:04d}", f"{kind}-H{n:04d}") for n in range(1, HOUSEHOLDS + 1) for kind in ("BU", "CB")
    ]
    beat_rate = len(devices) / 60.0
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        max_inflight_messages=1000,
        # Like a device's firmware should: send each small alarm packet at once.
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        deadline = time.perf_counter() + seconds
        step = 1.0 / (press_rate + beat_rate)
        n = 0
        next_at = time.perf_counter()
        while time.perf_counter() < deadline:
            household, serial = devices[n % len(devices)]
            now_ms = int(time.time() * 1000)
            if n % max(1, int((press_rate + beat_rate) / press_rate)) == 0:
                event_id = f"lat-{n}"
                sent[event_id] = time.perf_counter()
                await client.publish(
                    topic_for(PREFIX, household, f"CB-{household}", Channel.EVENT),
                    event_payload(event_id, EventKind.EMERGENCY_PRESS, now_ms),
                    qos=1,
                )
            else:
                await client.publish(
                    topic_for(PREFIX, household, serial, Channel.HEARTBEAT),
                    heartbeat_payload(now_ms, battery=80),
                    qos=0,
                )
            n += 1
            next_at += step
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.sleep(1.0)
    ingest.stop()
    await task
    await engine.dispose()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    parser.add_argument(
        "--watch-refusals",
        action="store_true",
        help="the broker's whole log read for refused publishes, as the embedded broker "
        "with device logins has it (callcenter/broker_refusals.py): its cost on ingest",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server to make the bench's database on (default: SQLite)",
    )
    args = parser.parse_args()
    backlog = 20_000 if args.quick else 100_000
    latency_s = 5.0 if args.quick else 60.0
    press_rate = 20.0

    database = "postgresql" if args.database_url else "sqlite"
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        progress("creating the database and the demo district")
        async with (
            bench_database(workdir, args.database_url) as database_url,
            EmbeddedBroker(workdir / "mosquitto", watch_refusals=args.watch_refusals) as broker,
        ):
            progress(f"bare subscriber draining {backlog} queued messages")
            raw = await raw_subscriber_rate(broker, backlog)
            progress(f"bare subscriber: {raw:,.0f} msg/s")
            ceiling = await broker_drain_rate(broker, backlog // 2)
            progress(f"mosquitto's own C client: {ceiling or 0:,.0f} msg/s")
            iterator = await aiomqtt_iterator_rate(broker, backlog // 4)
            progress(f"plain aiomqtt iterator: {iterator:,.0f} msg/s")
            progress(f"ingest draining {backlog} queued events into {database}")
            rate, batches = await ingest_rate(broker, database_url, backlog)
            progress(f"ingest: {rate:,.0f} events/s in {batches} batches")
            progress(
                f"baseline load for {latency_s:.0f} s: 1800 devices heart-beating, "
                f"{press_rate} presses/s"
            )
            latencies = await baseline_latency(broker, database_url, latency_s, press_rate)
    result = {
        "events_per_s": round(rate),
        "raw_subscriber_per_s": round(raw),
        "ingest_share_of_raw": round(rate / raw, 3),
        "aiomqtt_iterator_per_s": round(iterator),
        "broker_c_client_per_s": round(ceiling) if ceiling else None,
        "backlog_events": backlog,
        "batches": batches,
        "mean_batch": round(backlog / batches, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_samples": len(latencies),
        "database": database,
        "quick": args.quick,
        "watch_refusals": args.watch_refusals,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
