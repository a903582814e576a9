"""Operations endpoints on a running server: /metrics, and a clear error when the API's
port is taken. (/healthz has tests/test_health.py.)"""

from __future__ import annotations

import socket
from datetime import timedelta

import aiomqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callcenter.app import running_server
from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.ingest.protocol import Channel, DeadLetterReason, topic_for
from callcenter.store import models as m
from callcenter.web import WebStartError
from tests.api_support import Api, api_config
from tests.desk_support import MONDAY_MORNING, count
from tests.fixtures.database import DatabaseFactory
from tests.ingest_support import eventually


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample in a Prometheus text exposition, by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_exposes_the_call_centre_in_prometheus_format(api: Api) -> None:
    """Test that /metrics needs no token and carries events in, dead letters by reason,
    open calls by state, timer lateness, outbox backlog, uncovered stations, overdue
    deadlines and events applied, with the values the server's state implies."""
    call_id = await api.press("H0001")
    async with aiomqtt.Client(api.broker.host, api.broker.port) as client:
        await client.publish(
            topic_for(api.prefix, "H0001", "CB-H0001", Channel.EVENT), b"not json", qos=1
        )

    async def dead_lettered() -> bool:
        return api.server.ingest.stats.dead_letters[DeadLetterReason.MALFORMED_JSON] == 1

    await eventually(dead_lettered, what="the malformed message dead-lettered")
    # 31 s on, the "unacknowledged" step falls due and fires one second late.
    api.clock.advance(timedelta(seconds=31))

    async def fired() -> bool:
        return api.server.scheduler.fired >= 1

    await eventually(fired, what="the unacknowledged step to fire")
    await api.server.watchdog.check()

    reply = await api.get("/metrics", who=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    samples = _samples(reply.body)

    # The press, and the server's note that the button came online with it.
    logged = await count(api.server, m.DeviceEvent)
    assert logged >= 1
    assert samples[("callcenter_events_stored_total", ())] == logged
    assert samples[("callcenter_events_applied_total", ())] == logged
    for reason in DeadLetterReason:
        expected = 1 if reason is DeadLetterReason.MALFORMED_JSON else 0
        assert samples[("callcenter_dead_letters_total", (("reason", reason.value),))] == expected
    state = (await api.call(call_id))["state"]
    assert samples[("callcenter_open_calls", (("state", state),))] == 1
    assert samples[("callcenter_open_calls", (("state", "on_scene"),))] == 0
    assert samples[("callcenter_timer_lateness_seconds_count", ())] == 1
    assert samples[("callcenter_timer_lateness_seconds_sum", ())] == pytest.approx(1.0)
    assert samples[("callcenter_timer_lateness_seconds_bucket", (("le", "1.0"),))] == 1
    assert samples[("callcenter_timers_fired_total", ())] == 1
    # The texts go out to the local fake Twilio as they come: whether one is still in
    # flight right now is a race, so only the series is checked.
    assert ("callcenter_outbox_backlog", (("channel", "sms"),)) in samples
    assert ("callcenter_outbox_backlog", (("channel", "device_command"),)) in samples
    assert samples[("callcenter_stations_without_free_carer", ())] >= 0
    assert samples[("callcenter_overdue_deadlines", ())] == 0
    assert samples[("callcenter_broker_connected", ())] == 1
    assert samples[("callcenter_database_up", ())] == 1
    assert samples[("callcenter_follower_lag_events", ())] == 0
    assert ("process_cpu_seconds_total", ()) in samples


async def test_a_taken_port_is_a_clear_error(
    broker: EmbeddedBroker, topic_prefix: str, database_factory: DatabaseFactory
) -> None:
    """Test that a server whose API port is taken stops with a WebStartError naming the
    address and the way to fix it, rather than running without its API."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = api_config(broker, topic_prefix, await database_factory("seeded"))
        config = config.model_copy(update={"web": config.web.model_copy(update={"port": port})})
        with pytest.raises(WebStartError) as raised:
            async with running_server(config, ManualClock(MONDAY_MORNING)):
                pass
    assert raised.value.port == port
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "[web]" in str(raised.value)
