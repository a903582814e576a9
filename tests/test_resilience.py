"""Nothing lost, nothing doubled: the district's devices against ingest, while the broker
restarts and while the server is killed outright."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from callcenter.broker import EmbeddedBroker
from callcenter.broker_logins import own_logins
from callcenter.brokers import BrokerAddress
from callcenter.engine.device_logins import DynamicSecurityLogins
from device_sim.district import district_devices
from device_sim.groundtruth import read_ground_truth
from device_sim.settings import SimulationSettings
from device_sim.simulation import Simulation
from tests.ingest_support import (
    eventually,
    ingest_config,
    publish_events,
    running_ingest,
    stored_event_keys,
)
from tests.server_support import server_process, write_config


def _settings(
    broker: EmbeddedBroker, prefix: str, ground_truth: Path, **overrides: object
) -> SimulationSettings:
    values: dict[str, object] = {
        "brokers": (BrokerAddress(broker.host, broker.port),),
        "prefix": prefix,
        "ground_truth": ground_truth,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
        "timeout_s": 5.0,
        "seed": 7,
    }
    values.update(overrides)
    return SimulationSettings(**values)  # type: ignore[arg-type]


async def _assert_log_matches_ground_truth(database_url: str, ground_truth: Path) -> int:
    truth = read_ground_truth(ground_truth)
    assert truth.pending == 0, f"{truth.pending} events never acknowledged by the broker"
    stored = await stored_event_keys(database_url)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == set(truth.sent)
    return len(stored)


async def _wait_stored(database_url: str, count: int, within_s: float = 60.0) -> None:
    async def done() -> bool:
        return len(await stored_event_keys(database_url)) >= count

    await eventually(done, within_s=within_s, what=f"{count} events in the log")


async def test_every_event_of_900_households_is_stored_once_under_forced_redelivery(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that the 900 demo households (1800 devices, one connection each) sending events,
    a share of them twice on purpose, end up in the log exactly once each."""
    truth_file = tmp_path / "truth.jsonl"
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    simulation = Simulation(
        _settings(
            broker,
            topic_prefix,
            truth_file,
            press_rate=150.0,
            max_events=1500,
            duplicate_rate=0.3,
            heartbeat_interval_s=5.0,
            connect_concurrency=128,
        ),
        district_devices(900),
    )
    async with running_ingest(config, seeded_database_url) as ingest:
        summary = await asyncio.wait_for(simulation.run(), 120)
        await _wait_stored(seeded_database_url, 1500)
        sent = summary.as_dict()["duplicates_sent"]

        # The last copies may still be on their way once every first one is stored.
        async def duplicates_seen() -> bool:
            return ingest.stats.duplicates >= sent * 0.9

        await eventually(duplicates_seen, what=f"{sent} duplicates sent counted as such")
    assert await _assert_log_matches_ground_truth(seeded_database_url, truth_file) == 1500
    assert read_ground_truth(truth_file).duplicates_sent > 300


async def test_broker_restart_mid_stream_loses_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that stopping and restarting mosquitto (persistence on) in the middle of a
    stream loses no event: devices re-send, ingest reconnects and resumes its session."""
    truth_file = tmp_path / "truth.jsonl"
    config = ingest_config(host=broker.host, port=broker.port, prefix=topic_prefix)
    simulation = Simulation(
        _settings(
            broker,
            topic_prefix,
            truth_file,
            press_rate=100.0,
            max_events=1200,
            heartbeat_interval_s=0,
            drain_timeout_s=60.0,
        ),
        district_devices(50),
    )
    async with running_ingest(config, seeded_database_url) as ingest:
        run = asyncio.create_task(simulation.run())
        await _wait_stored(seeded_database_url, 300)
        await broker.stop()
        await asyncio.sleep(1.0)
        await broker.start()
        await asyncio.wait_for(run, 120)
        await _wait_stored(seeded_database_url, 1200)
        assert ingest.stats.reconnects >= 1
    assert await _assert_log_matches_ground_truth(seeded_database_url, truth_file) == 1200


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_server_killed_mid_stream_loses_nothing_and_doubles_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that SIGKILL of `callcenter serve` in the middle of a stream, then a restart,
    leaves every event in the log exactly once."""
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=tmp_path / "var",
        database_url=seeded_database_url,
        broker=broker,
        prefix=topic_prefix,
    )
    truth_file = tmp_path / "truth.jsonl"
    simulation = Simulation(
        _settings(
            broker,
            topic_prefix,
            truth_file,
            press_rate=300.0,
            max_events=3000,
            heartbeat_interval_s=0,
            drain_timeout_s=60.0,
        ),
        district_devices(100),
    )
    async with server_process(config_file) as server:
        await server.wait_for_line("ingest subscribed")
        run = asyncio.create_task(simulation.run())
        await _wait_stored(seeded_database_url, 600)
        server.send(signal.SIGKILL)
        assert await server.wait() == -signal.SIGKILL
        stored_at_kill = len(await stored_event_keys(seeded_database_url))
        await asyncio.sleep(1.0)  # devices keep publishing into the broker meanwhile
        await server.start()
        # The broker sends the session's backlog before the SUBACK: on a loaded machine
        # that took more than the default 20 s.
        await server.wait_for_line("ingest subscribed", within_s=90)
        await asyncio.wait_for(run, 120)
        await _wait_stored(seeded_database_url, 3000)
        server.send(signal.SIGTERM)
        try:
            assert await server.wait() == 0
        except BaseException:
            print("\n".join(server.lines[-60:]))
            raise
    assert stored_at_kill < 3000
    assert await _assert_log_matches_ground_truth(seeded_database_url, truth_file) == 3000


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_serve_runs_its_own_broker_and_stops_cleanly_on_sigterm(
    topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that with no broker configured, `callcenter serve` starts a private mosquitto,
    ingests through it, and on SIGTERM exits 0 and leaves no mosquitto running."""
    data_dir = tmp_path / "var"
    config_file = write_config(
        tmp_path / "callcenter.toml",
        data_dir=data_dir,
        database_url=seeded_database_url,
        broker=None,
        prefix=topic_prefix,
    )
    async with server_process(config_file) as server:
        match = await server.wait_for_line(r"embedded mosquitto listening on 127\.0\.0\.1:(\d+)")
        await server.wait_for_line("ingest subscribed")
        port = int(match.group(1))
        # Its broker takes only devices with their own login: the server's administrator
        # (kept by the server in the broker's directory) issues one, as the register does.
        admin = own_logins(data_dir / "mosquitto").admin
        login = await DynamicSecurityLogins(
            host="127.0.0.1",
            port=port,
            admin_username=admin.username,
            admin_password=admin.password,
            topic_prefix=topic_prefix,
        ).issue("CB-H0001", "H0001")
        assert login is not None
        await publish_events(
            "127.0.0.1",
            port,
            topic_prefix,
            [("H0001", "CB-H0001", "e1")],
            login=(login.username, login.password),
        )
        await _wait_stored(seeded_database_url, 1)
        server.send(signal.SIGTERM)
        assert await server.wait() == 0
    conf = (data_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert "persistence true" in conf
    assert "allow_anonymous false" in conf and "mosquitto_dynamic_security.so" in conf
    assert "max_queued_messages 1000000" in conf
    assert (data_dir / "mosquitto" / "mosquitto.db").exists(), "persistence written on stop"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
