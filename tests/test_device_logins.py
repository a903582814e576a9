"""Devices' broker logins on a real mosquitto with its dynamic-security plugin: each
device publishes only its own household's topics, a refused publish is seen at the
centre, and a moved or retired device's old login stops (docs/operations.md, "Broker
logins"; docs/protocol.md, "Who may publish where")."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiomqtt
import pytest
from sqlalchemy import select, update

from callcenter.app import Running, running_server
from callcenter.broker import BrokerStartError, EmbeddedBroker
from callcenter.broker_logins import CREDENTIALS_FILE, find_plugin, own_logins
from callcenter.broker_refusals import Refusal
from callcenter.config import Config, load_config
from callcenter.domain.events import EventKind
from callcenter.domain.register import DeviceRecord
from callcenter.engine import register
from callcenter.engine.device_logins import (
    REFUSED_PUBLISH,
    DeviceLogin,
    DeviceLoginError,
    DynamicSecurityLogins,
)
from callcenter.ingest.protocol import Channel, event_payload, heartbeat_payload, topic_for
from callcenter.store import models as m
from tests.ingest_support import eventually

pytestmark = pytest.mark.skipif(
    find_plugin() is None, reason="mosquitto's dynamic-security plugin is not installed"
)


@pytest.fixture
async def secured(tmp_path: Path, topic_prefix: str) -> AsyncIterator[EmbeddedBroker]:
    """A mosquitto on a free port that takes only logins it holds (dynamic security)."""
    async with EmbeddedBroker(
        tmp_path / "mosquitto", device_logins=True, topic_prefix=topic_prefix
    ) as running:
        yield running


def logins_on(
    broker: EmbeddedBroker, prefix: str, timeout_s: float = 10.0
) -> DynamicSecurityLogins:
    assert broker.logins is not None
    return DynamicSecurityLogins(
        host=broker.host,
        port=broker.port,
        admin_username=broker.logins.admin.username,
        admin_password=broker.logins.admin.password,
        topic_prefix=prefix,
        timeout_s=timeout_s,
    )


def as_device(
    broker: EmbeddedBroker, login: DeviceLogin, password: str | None = None
) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=login.serial,
        username=login.username,
        password=login.password if password is None else password,
        timeout=5,
    )


async def cannot_connect(broker: EmbeddedBroker, login: DeviceLogin) -> None:
    """Assert that the broker refuses ``login`` (revoked, replaced or never held)."""
    with pytest.raises(aiomqtt.MqttCodeError):
        async with as_device(broker, login):
            pass


async def heard_from(
    server: Running,
    broker: EmbeddedBroker,
    login: DeviceLogin,
    household: str,
    event_id: str,
    *,
    stored: int,
) -> None:
    """Publish event ``event_id`` as the device on ``household``'s topic; wait until the
    server has stored ``stored`` of the device's events in all."""
    topic = topic_for(server.config.broker.topic_prefix, household, login.serial, Channel.EVENT)
    async with as_device(broker, login) as device:
        await device.publish(topic, event_payload(event_id, EventKind.LOW_BATTERY, now_ms()), qos=1)
    await eventually(
        lambda: _has_events(server, login.serial, stored), what=f"{event_id} of {login.serial}"
    )


def as_server(broker: EmbeddedBroker, identifier: str = "listener") -> aiomqtt.Client:
    assert broker.logins is not None
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=identifier,
        username=broker.logins.server.username,
        password=broker.logins.server.password,
        timeout=5,
    )


async def heard(server: aiomqtt.Client, within_s: float = 1.5) -> list[str]:
    """The topics the server's client receives within ``within_s`` seconds."""
    topics: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(within_s):
            async for message in server.messages:
                topics.append(str(message.topic))
    return topics


def mosquitto_pub_v5(broker: EmbeddedBroker, login: DeviceLogin, topic: str) -> str:
    """What mosquitto's own client says publishing at QoS 1 over MQTT 5 as the device."""
    done = subprocess.run(
        ["mosquitto_pub", "-V", "5", "-h", broker.host, "-p", str(broker.port),
         "-i", login.serial, "-u", login.username, "-P", login.password,
         "-q", "1", "-t", topic, "-m", "{}"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


async def test_a_device_publishes_its_own_topics_and_no_other_households(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that a device with its login publishes its event, heartbeat and status and
    receives its commands; that its publish on another household's topic never reaches
    the server, and that the refusal is counted (the device, over MQTT 5, is told)."""
    refusals = secured.refusals
    assert refusals is not None
    told: list[Refusal] = []
    refusals.listen(told.append)
    login = await logins_on(secured, topic_prefix).issue("CB-7", "H0007")
    assert login is not None and login.username == "CB-7" and len(login.password) >= 24
    own = {c: topic_for(topic_prefix, "H0007", "CB-7", c) for c in Channel}
    foreign = topic_for(topic_prefix, "H0008", "CB-7", Channel.EVENT)
    async with as_server(secured) as server, as_device(secured, login) as device:
        await server.subscribe(f"{topic_prefix}/v1/#", qos=1)
        await device.subscribe(own[Channel.COMMAND], qos=1)
        await device.publish(
            own[Channel.EVENT], event_payload("e1", EventKind.EMERGENCY_PRESS, 1), qos=1
        )
        await device.publish(own[Channel.HEARTBEAT], heartbeat_payload(1, battery=90), qos=0)
        await device.publish(own[Channel.STATUS], b'{"v":1,"online":true}', qos=1)
        await device.publish(foreign, event_payload("e2", EventKind.EMERGENCY_PRESS, 2), qos=1)
        await server.publish(own[Channel.COMMAND], b'{"v":1}', qos=1)
        assert sorted(await heard(server)) == sorted(
            [own[Channel.EVENT], own[Channel.HEARTBEAT], own[Channel.STATUS], own[Channel.COMMAND]]
        )
        async with asyncio.timeout(5):
            command = await anext(device.messages)
        assert str(command.topic) == own[Channel.COMMAND]
    await eventually(lambda: _true(refusals.count == 1), within_s=5, what="the refusal read")
    assert [(refusal.client_id, refusal.topic) for refusal in told] == [("CB-7", foreign)]
    said = await asyncio.to_thread(mosquitto_pub_v5, secured, login, foreign)
    assert "Not authorized" in said, said
    await eventually(lambda: _true(refusals.count == 2), within_s=5, what="the second refusal")
    kept = (secured.log_file).read_text()
    assert "Denied PUBLISH from CB-7" in kept and "Received PUBLISH" not in kept


async def _true(value: bool) -> bool:
    return value


async def test_a_device_cannot_read_or_subscribe_beyond_its_commands(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that a device may not subscribe to the other devices' topics: the broker
    grants its own command topic only (SUBACK 0x80 for the rest)."""
    logins = logins_on(secured, topic_prefix)
    mine = await logins.issue("CB-1", "H0001")
    assert mine is not None
    async with as_device(secured, mine) as device:
        granted = await device.subscribe(
            [
                (topic_for(topic_prefix, "H0001", "CB-1", Channel.COMMAND), 1),
                (f"{topic_prefix}/v1/#", 1),
                (topic_for(topic_prefix, "H0002", "CB-2", Channel.COMMAND), 1),
            ]
        )
    assert [getattr(code, "value", code) for code in granted] == [1, 128, 128]


async def test_anonymous_and_unknown_clients_cannot_connect(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that the secured broker refuses a client without a login, one with a login
    it does not hold, and a device's login under another client id."""
    login = await logins_on(secured, topic_prefix).issue("CB-3", "H0003")
    assert login is not None
    for client in (
        aiomqtt.Client(secured.host, secured.port, identifier="anonymous", timeout=5),
        aiomqtt.Client(secured.host, secured.port, username="CB-9", password="guess", timeout=5),
        aiomqtt.Client(
            secured.host,
            secured.port,
            identifier="not-CB-3",
            username="CB-3",
            password=login.password,
            timeout=5,
        ),
    ):
        with pytest.raises(aiomqtt.MqttCodeError):
            async with client:
                pass


async def test_a_retired_device_cannot_connect_and_its_connection_ends(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that revoking a device's login closes its connection and refuses the next,
    and that revoking it again is harmless."""
    logins = logins_on(secured, topic_prefix)
    login = await logins.issue("CB-4", "H0004")
    assert login is not None
    async with as_device(secured, login) as device:
        await logins.revoke("CB-4")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(5):
                await anext(device.messages)
    await cannot_connect(secured, login)
    await logins.revoke("CB-4")


async def test_a_moved_device_publishes_under_its_new_household_with_a_new_password(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that a move gives a new password: the old one no longer connects, the new one
    publishes under the new household and not under the old one."""
    logins = logins_on(secured, topic_prefix)
    before = await logins.issue("CB-5", "H0005")
    after = await logins.move("CB-5", "H0006")
    assert before is not None and after is not None and before.password != after.password
    await cannot_connect(secured, before)
    new_topic = topic_for(topic_prefix, "H0006", "CB-5", Channel.EVENT)
    old_topic = topic_for(topic_prefix, "H0005", "CB-5", Channel.EVENT)
    async with as_server(secured) as server, as_device(secured, after) as device:
        await server.subscribe(f"{topic_prefix}/v1/#", qos=1)
        await device.publish(old_topic, b"{}", qos=1)
        await device.publish(new_topic, b"{}", qos=1)
        assert await heard(server) == [new_topic]


async def test_issue_many_then_sync_removes_the_retired_and_names_the_missing(
    secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that many logins are issued in one go, that issuing again gives new passwords
    (the old stop), and that sync removes logins of devices no longer active, names
    active devices without a login and those whose rules are another household's."""
    logins = logins_on(secured, topic_prefix)
    devices = {f"D{n:03d}": f"H{n // 2:03d}" for n in range(120)}
    first = await logins.issue_many(devices)
    again = await logins.issue_many({"D000": "H000", "D001": "H999"})
    assert set(first) == set(devices)
    assert again["D000"].password != first["D000"].password
    await cannot_connect(secured, first["D000"])
    async with as_device(secured, again["D000"]):
        pass
    active = {serial: devices[serial] for serial in list(devices)[:100]} | {"NEW-1": "H500"}
    report = await logins.sync(active)
    assert report.removed == sorted(list(devices)[100:])
    assert report.missing == ["NEW-1"]
    assert report.misplaced == {"D001": "H999"}
    await cannot_connect(secured, first["D119"])
    assert (await logins.sync(active)).removed == []


async def test_logins_survive_a_broker_restart(secured: EmbeddedBroker, topic_prefix: str) -> None:
    """Test that a restarted broker keeps the devices' logins and this server's own,
    and that the server's own are kept readable by this user only."""
    login = await logins_on(secured, topic_prefix).issue("CB-6", "H0006")
    assert login is not None and secured.logins is not None
    own = secured.logins
    await secured.stop()
    await secured.start()
    assert secured.logins == own
    credentials = secured.directory / CREDENTIALS_FILE
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    conf = (secured.directory / "mosquitto.conf").read_text()
    assert own.server.password not in conf
    async with as_device(secured, login) as device, as_server(secured) as server:
        await server.subscribe(f"{topic_prefix}/v1/#", qos=1)
        await device.publish(topic_for(topic_prefix, "H0006", "CB-6", Channel.EVENT), b"{}", qos=1)
        assert len(await heard(server)) == 1


async def test_a_broker_that_does_not_answer_is_a_clear_error_not_a_hang(
    broker: EmbeddedBroker, secured: EmbeddedBroker, topic_prefix: str
) -> None:
    """Test that a broker without the plugin (nobody answers on the control topic), one
    that refuses the administrator and one that is not there each give an error saying
    what to check, within the timeout."""
    silent = DynamicSecurityLogins(
        host=broker.host, port=broker.port, admin_username="admin", admin_password="x",
        topic_prefix=topic_prefix, timeout_s=1.0,
    )  # fmt: skip
    async with asyncio.timeout(5):
        with pytest.raises(DeviceLoginError, match=r"did not answer .* within 1 s: is mosquitto's"):
            await silent.issue("CB-1", "H0001")
    assert secured.logins is not None
    refused = DynamicSecurityLogins(
        host=secured.host, port=secured.port, admin_username=secured.logins.admin.username,
        admin_password="wrong", topic_prefix=topic_prefix, timeout_s=1.0,
    )  # fmt: skip
    with pytest.raises(
        DeviceLoginError, match=r"refused the login 'callcenter-admin'.*ADMIN_PASSWORD"
    ):
        await refused.revoke("CB-1")
    secured_port = secured.port
    await secured.stop()
    gone = logins_on(secured, topic_prefix, timeout_s=1.0)
    async with asyncio.timeout(5):
        with pytest.raises(
            DeviceLoginError, match=f"cannot reach the broker at 127.0.0.1:{secured_port}"
        ):
            await gone.sync({})
    with pytest.raises(ValueError, match="cannot be a topic level"):
        await logins_on(secured, topic_prefix).issue("CB/1", "H0001")


# --- the whole server, on its embedded broker ------------------------------------------


def embedded_config(tmp_path: Path, database_url: str, prefix: str) -> Config:
    return Config.model_validate(
        {
            "data": {"dir": str(tmp_path / "var")},
            "database": {"url": database_url},
            "broker": {"topic_prefix": prefix, "client_id": f"ingest-{prefix}"},
            "web": {"port": 0},
            "desk": {"offers": False},
            "ingest": {
                # Ingest looks for registry changes every half heartbeat interval.
                "registry_refresh_s": 0.2,
                "heartbeat_interval_s": 1.0,
                "max_clock_skew_s": 365 * 86400.0,
            },
        }
    )


async def events_of(server: Running, serial: str) -> list[tuple[str, str]]:
    """The device's own stored events (not the server's, "srv:…"): (event id, household
    code it was stored under)."""
    async with server.engine.connect() as connection:
        rows = await connection.execute(
            select(m.DeviceEvent.event_id, m.Household.code)
            .join(m.Device, m.Device.id == m.DeviceEvent.device_id)
            .join(m.Household, m.Household.id == m.DeviceEvent.household_id)
            .where(m.Device.serial == serial, m.DeviceEvent.event_id.not_like("srv:%"))
            .order_by(m.DeviceEvent.id)
        )
        return [(event_id, code) for event_id, code in rows]


async def test_the_server_on_its_embedded_broker_issues_moves_and_sees_refusals(
    tmp_path: Path, seeded_database_url: str, topic_prefix: str
) -> None:
    """Test the whole server on its embedded broker: its own clients log in with the
    logins it made; a device given a login through the server's interface is heard;
    its publish on another household's topic is refused by the broker and shows in
    /metrics and the audit log; moved to another household, it keeps its event history,
    its old password no longer connects and the new one is heard under the new code."""
    config = embedded_config(tmp_path, seeded_database_url, topic_prefix)
    async with running_server(config) as server:
        await asyncio.wait_for(server.ingest.connected.wait(), 15)
        assert server.device_logins.takes_logins
        login = await server.device_logins.issue("CB-H0001", "H0001")
        assert login is not None
        broker = _broker_of(server)
        own = topic_for(topic_prefix, "H0001", "CB-H0001", Channel.EVENT)
        foreign = topic_for(topic_prefix, "H0002", "CB-H0001", Channel.EVENT)
        async with as_device(broker, login) as device:
            await device.publish(
                own, event_payload("before-move", EventKind.LOW_BATTERY, now_ms()), qos=1
            )
            await device.publish(
                foreign, event_payload("foreign", EventKind.EMERGENCY_PRESS, now_ms()), qos=1
            )
        await eventually(
            lambda: _has_events(server, "CB-H0001", 1), what="the device's own event stored"
        )
        assert server.broker_refusals is not None
        refusals = server.broker_refusals
        await eventually(lambda: _true(refusals.count == 1), what="the refusal counted")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.web_url}/metrics") as reply,
        ):
            metrics = await reply.text()
        assert "callcenter_broker_refused_publishes_total 1.0" in metrics
        await eventually(lambda: _audited(server), what="the refusal in the audit log")

        async with server.engine.begin() as connection:
            target = await connection.scalar(
                select(m.Household.id).where(m.Household.code == "H0003")
            )
            await connection.execute(
                update(m.Device).where(m.Device.serial == "CB-H0001").values(household_id=target)
            )
        moved = await server.device_logins.move("CB-H0001", "H0003")
        assert moved is not None
        await cannot_connect(broker, login)
        await asyncio.sleep(1.5)  # ingest reads the moved registry (see embedded_config)
        await heard_from(server, broker, moved, "H0003", "after-move", stored=2)
        assert await events_of(server, "CB-H0001") == [
            ("before-move", "H0001"),
            ("after-move", "H0003"),
        ]
        assert "foreign" not in json.dumps(await events_of(server, "CB-H0001"))


def now_ms() -> int:
    return int(time.time() * 1000)


def _broker_of(server: Running) -> EmbeddedBroker:
    """The server's embedded broker as a test's clients reach it."""
    directory = server.config.data.dir / "mosquitto"
    broker = EmbeddedBroker(directory, port=server.brokers[0].port, device_logins=True)
    broker.logins = own_logins(directory)
    return broker


async def _has_events(server: Running, serial: str, count: int) -> bool:
    return len(await events_of(server, serial)) >= count


async def _audited(server: Running) -> bool:
    async with server.engine.connect() as connection:
        row = (
            await connection.execute(
                select(m.AuditEntry.actor, m.AuditEntry.detail, m.Household.code)
                .join(m.Household, m.Household.id == m.AuditEntry.household_id)
                .where(m.AuditEntry.action == REFUSED_PUBLISH)
            )
        ).first()
    if row is None:
        return False
    assert row.actor == "device:CB-H0001" and row.code == "H0001"
    assert row.detail["refused"] == 1 and "/H0002/CB-H0001/event" in row.detail["topic"]
    return True


async def test_the_server_on_an_external_mosquitto_manages_logins_as_its_administrator(
    tmp_path: Path,
    seeded_database_url: str,
    secured: EmbeddedBroker,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test the server on an external mosquitto with the plugin: its clients log in as
    [broker] username, it issues a device's login as [broker] admin_username (passwords
    from the environment), and at start it removes the login of a device the register
    no longer has."""
    assert secured.logins is not None
    leftover = await logins_on(secured, topic_prefix).issue("RETIRED-1", "H0001")
    assert leftover is not None
    monkeypatch.setenv("CALLCENTER_BROKER__PASSWORD", secured.logins.server.password)
    monkeypatch.setenv("CALLCENTER_BROKER__ADMIN_PASSWORD", secured.logins.admin.password)
    path = tmp_path / "callcenter.toml"
    path.write_text(
        f'[data]\ndir = "{tmp_path / "var"}"\n[database]\nurl = "{seeded_database_url}"\n'
        f'[broker]\nhost = "{secured.host}"\nport = {secured.port}\n'
        f'topic_prefix = "{topic_prefix}"\nclient_id = "ingest-{topic_prefix}"\n'
        f'username = "{secured.logins.server.username}"\n'
        f'admin_username = "{secured.logins.admin.username}"\n'
        "[web]\nport = 0\n[desk]\noffers = false\n"
    )
    config = load_config(path)
    async with running_server(config) as server:
        await asyncio.wait_for(server.ingest.connected.wait(), 15)
        assert server.broker_refusals is None  # an external broker's log is its own
        await cannot_connect(secured, leftover)
        login = await server.device_logins.issue("CB-H0002", "H0002")
        assert login is not None
        await heard_from(server, secured, login, "H0002", "external", stored=1)


async def test_without_the_plugin_the_embedded_broker_does_not_start_and_says_why(
    tmp_path: Path,
) -> None:
    """Test that an embedded broker asked for device logins without the plugin refuses
    to start with a message naming the setting, rather than taking anyone."""
    broker = EmbeddedBroker(tmp_path / "mosquitto", device_logins=True, plugin="/nowhere/x.so")
    with pytest.raises(BrokerStartError, match=r"dynamic_security_plugin.*device_logins"):
        await broker.start()
    assert broker.pid is None


async def test_the_register_issues_moves_and_revokes_logins_on_the_embedded_broker(
    tmp_path: Path, seeded_database_url: str, topic_prefix: str
) -> None:
    """Test the register's device changes (engine/register/) with the server's real
    logins: an added device gets a login that publishes its household's topics; moved,
    its old password stops and the new one is heard under the new household; given a
    new login, the one before stops; retired, it cannot connect and gets no new login;
    and a device's whole history stays with it."""
    config = embedded_config(tmp_path, seeded_database_url, topic_prefix)
    async with running_server(config) as server:
        await asyncio.wait_for(server.ingest.connected.wait(), 15)
        broker = _broker_of(server)
        logins = server.device_logins

        def change() -> register.Change:
            return register.Change(actor="operator:test", at=server.clock.now())

        added = await register.add_device(
            server.engine,
            DeviceRecord(serial="NEW-0001", kind="call_button", household="H0004"),
            change(),
            today=server.clock.now().date(),
            logins=logins,
        )
        assert added is not None and added.username == "NEW-0001"
        await heard_from(server, broker, added, "H0004", "first", stored=1)
        moved = await register.move_device(
            server.engine, "NEW-0001", "H0005", change(), logins=logins
        )
        assert moved is not None
        await cannot_connect(broker, added)
        await asyncio.sleep(1.5)  # ingest reads the moved registry (see embedded_config)
        await heard_from(server, broker, moved, "H0005", "second", stored=2)
        assert await events_of(server, "NEW-0001") == [("first", "H0004"), ("second", "H0005")]
        renewed = await register.renew_login(server.engine, "NEW-0001", change(), logins=logins)
        assert renewed is not None and renewed.password != moved.password
        await cannot_connect(broker, moved)
        await heard_from(server, broker, renewed, "H0005", "third", stored=3)
        await register.retire_device(server.engine, "NEW-0001", change(), logins=logins)
        await cannot_connect(broker, renewed)
        with pytest.raises(register.RecordInUseError):
            await register.renew_login(server.engine, "NEW-0001", change(), logins=logins)
