"""Devices' broker logins: a device added to the register gets its own MQTT user name
and password, and rules that let it publish only its own household's topics; a device
moved gets a new password under its new household's rules; a device retired loses its
login (docs/operations.md, "Broker logins"; docs/protocol.md, "Who may publish where").

The register calls ``DeviceLogins``. Two kinds exist, chosen by ``[broker]
device_logins``:

- ``DynamicSecurityLogins`` speaks to mosquitto's dynamic-security plugin on its
  control topic, as the broker's administrator: one role per device (its topics) and one
  client (user name = serial, client id = serial) holding it.
- ``NoDeviceLogins`` for a broker whose logins are managed elsewhere, or none at all:
  it issues nothing and says so (``takes_logins`` is false).

A password is made here from the operating system's random source, handed back once in
the ``DeviceLogin`` and never stored by us: the broker keeps only its salted hash. A
device that lost its password is given a new one (``issue`` again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import aiomqtt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.broker_logins import CONTROL_TOPIC, CONTROL_TOPICS, allow
from callcenter.clock import Clock
from callcenter.ingest.protocol import Channel, is_device_name, topic_for
from callcenter.store import models as m
from callcenter.store.db import write_turn

if TYPE_CHECKING:
    from callcenter.broker_refusals import Refusal

log = logging.getLogger("callcenter.device_logins")

RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
# What a device publishes (device -> server) and the one topic it reads.
DEVICE_PUBLISHES = (Channel.EVENT, Channel.HEARTBEAT, Channel.STATUS)
# Commands per control message. The plugin rewrites its whole file after every change,
# so a message of many takes the broker a while: with 2,000 devices' logins on file, a
# hundred changes take about a second.
_COMMANDS_PER_MESSAGE = 100
# The plugin's answer to a delete of what is not there: nothing to do.
_NOT_THERE = ("Client not found", "Role not found")


class DeviceLoginError(Exception):
    """The broker did not do what was asked; ``detail`` says why and what to do."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


@dataclass(frozen=True)
class DeviceLogin:
    """A device's broker login as issued: shown once, kept by nobody but the device."""

    serial: str
    household: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SyncReport:
    """What ``sync`` found and did."""

    # False when the broker takes no per-device logins: nothing was looked at.
    checked: bool
    # Logins of devices no longer active, removed now (a retire whose revoke was lost).
    removed: list[str] = field(default_factory=list)
    # Active devices without a login: they cannot connect until one is issued.
    missing: list[str] = field(default_factory=list)
    # Active devices whose login's rules are for another household than the register's
    # (a move whose new login was lost): they publish under the old household's code.
    misplaced: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the log."""
        if not self.checked:
            return "the broker takes no per-device logins: nothing to check"
        return (
            f"device logins checked: {len(self.removed)} of retired devices removed, "
            f"{len(self.missing)} active devices without one, "
            f"{len(self.misplaced)} for another household"
        )


class DeviceLogins(Protocol):
    """What the register calls when it adds, moves or retires a device."""

    @property
    def takes_logins(self) -> bool:
        """Whether the broker takes per-device logins from us."""
        ...

    async def issue(self, serial: str, household: str) -> DeviceLogin | None:
        """A fresh login for the device (replacing any it had); None without logins."""
        ...

    async def issue_many(self, devices: Mapping[str, str]) -> dict[str, DeviceLogin]:
        """Fresh logins for many devices ({serial: household}), by serial."""
        ...

    async def move(self, serial: str, household: str) -> DeviceLogin | None:
        """The device's login under its new household: a new password, the old stops."""
        ...

    async def revoke(self, serial: str) -> None:
        """The device's login removed (and its connection closed); harmless if none."""
        ...

    async def sync(self, active: Mapping[str, str]) -> SyncReport:
        """Remove logins of devices not in ``active`` ({serial: household}); report the
        active ones without a login, or with one for another household."""
        ...


class NoDeviceLogins:
    """A broker that takes no per-device logins from us (``device_logins = "none"``)."""

    takes_logins = False

    async def issue(self, serial: str, household: str) -> DeviceLogin | None:
        return None

    async def issue_many(self, devices: Mapping[str, str]) -> dict[str, DeviceLogin]:
        return {}

    async def move(self, serial: str, household: str) -> DeviceLogin | None:
        return None

    async def revoke(self, serial: str) -> None:
        return None

    async def sync(self, active: Mapping[str, str]) -> SyncReport:
        return SyncReport(checked=False)


def device_role(topic_prefix: str, serial: str) -> str:
    """The name of the role holding one device's rules."""
    return f"{topic_prefix}-device-{serial}"


def device_acls(topic_prefix: str, household: str, serial: str) -> list[dict[str, Any]]:
    """A device's rules: publish its own event, heartbeat and status (its last will is
    its status); subscribe to and receive its own commands. Nothing else."""
    command = topic_for(topic_prefix, household, serial, Channel.COMMAND)
    return [
        *(
            allow("publishClientSend", topic_for(topic_prefix, household, serial, c))
            for c in DEVICE_PUBLISHES
        ),
        allow("subscribeLiteral", command),
        allow("publishClientReceive", command),
    ]


def _check_names(serial: str, household: str | None = None) -> None:
    for what, name in (("serial", serial), ("household code", household)):
        if name is not None and not is_device_name(name):
            raise ValueError(
                f"{what} {name!r} cannot be a topic level: use 1 to 64 of A-Z a-z 0-9 _ -"
            )


class DynamicSecurityLogins:
    """Devices' logins on mosquitto's dynamic-security plugin, managed as its
    administrator over ``$CONTROL/dynamic-security/v1``.

    Each call opens its own connection as the administrator and closes it; calls are
    taken one at a time. A broker that refuses the administrator, does not answer within
    ``timeout_s`` or refuses a command raises ``DeviceLoginError`` saying what to check.
    """

    takes_logins = True

    def __init__(
        self,
        *,
        host: str,
        port: int,
        admin_username: str,
        admin_password: str,
        topic_prefix: str,
        timeout_s: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._admin = admin_username
        self._password = admin_password
        self._prefix = topic_prefix
        self._timeout_s = timeout_s
        self._turn = asyncio.Lock()
        self._ids = itertools.count(1)

    # --- what the register calls ------------------------------------------------------

    async def issue(self, serial: str, household: str) -> DeviceLogin | None:
        return (await self.issue_many({serial: household}))[serial]

    async def issue_many(self, devices: Mapping[str, str]) -> dict[str, DeviceLogin]:
        """Logins for many devices at once, in few messages. What each takes depends on
        what the broker has: a new device two commands (its role, its login); a device
        whose login has the right household's rules one (a new password); a device
        whose rules are another household's four (both removed and made anew)."""
        for serial, household in devices.items():
            _check_names(serial, household)
        logins = {s: self._new_login(s, h) for s, h in devices.items()}
        has = await self._households() if logins else {}
        commands: list[dict[str, Any]] = []
        checks: list[tuple[str, int, tuple[str, ...]]] = []  # serial, commands, allowed
        for login in logins.values():
            if has.get(login.serial) == login.household:
                steps = [self._new_password(login)]
                allowed: tuple[str, ...] = ()
            else:  # new, or moved: whatever it had goes, in the same message
                steps = [*self._delete(login.serial), self._create_role(login)]
                steps.append(self._create_client(login))
                allowed = _NOT_THERE
            commands += steps
            checks.append((login.serial, len(steps), allowed))
        answers = iter(await self._run(commands))
        for serial, count, allowed in checks:
            _raise_for(*itertools.islice(answers, count), serial=serial, allowed=allowed)
        return logins

    async def move(self, serial: str, household: str) -> DeviceLogin | None:
        return (await self.issue_many({serial: household}))[serial]

    async def revoke(self, serial: str) -> None:
        _check_names(serial)
        answers = await self._run(self._delete(serial))
        _raise_for(*answers, serial=serial, allowed=_NOT_THERE)

    async def sync(self, active: Mapping[str, str]) -> SyncReport:
        household_of = await self._households()
        retired = sorted(serial for serial in household_of if serial not in active)
        commands = [command for serial in retired for command in self._delete(serial)]
        if commands:
            answers = await self._run(commands)
            for serial, pair in zip(retired, _pairs(answers), strict=True):
                _raise_for(*pair, serial=serial, allowed=_NOT_THERE)
        return SyncReport(
            checked=True,
            removed=retired,
            missing=sorted(serial for serial in active if serial not in household_of),
            misplaced={
                serial: household_of[serial]
                for serial in sorted(household_of.keys() & active.keys())
                if household_of[serial] != active[serial]
            },
        )

    async def _households(self) -> dict[str, str]:
        """The devices with a login on the broker, and the household each one's rules
        are for: a device login is a client holding its device role."""
        listed = await self._run(
            [
                {"command": "listClients", "verbose": False, "count": -1, "offset": 0},
                {"command": "listRoles", "verbose": True, "count": -1, "offset": 0},
            ]
        )
        _raise_for(*listed, serial="(all)")
        clients = set(listed[0].get("data", {}).get("clients", []))
        marker = device_role(self._prefix, "")
        found = {}
        for role in listed[1].get("data", {}).get("roles", []):
            name = str(role.get("rolename", ""))
            serial = name[len(marker) :]
            if name.startswith(marker) and serial in clients:
                found[serial] = _household_in(role, self._prefix)
        return found

    # --- the commands -----------------------------------------------------------------

    def _new_login(self, serial: str, household: str) -> DeviceLogin:
        return DeviceLogin(serial, household, serial, secrets.token_urlsafe(18))

    def _create_role(self, login: DeviceLogin) -> dict[str, Any]:
        return {
            "command": "createRole",
            "rolename": device_role(self._prefix, login.serial),
            "textdescription": f"device {login.serial} of household {login.household}",
            "acls": device_acls(self._prefix, login.household, login.serial),
        }

    def _create_client(self, login: DeviceLogin) -> dict[str, Any]:
        return {
            "command": "createClient",
            "username": login.username,
            "password": login.password,
            # Bound to its serial as client id too: nobody else's session can use the
            # login, and the broker's log names the device by the id it shows.
            "clientid": login.serial,
            "textname": f"device {login.serial}",
            "roles": [{"rolename": device_role(self._prefix, login.serial)}],
        }

    def _new_password(self, login: DeviceLogin) -> dict[str, Any]:
        # The plugin closes the device's connection: the old password stops at once.
        return {"command": "modifyClient", "username": login.username, "password": login.password}

    def _delete(self, serial: str) -> list[dict[str, Any]]:
        # Deleting the client closes the device's connection at once.
        return [
            {"command": "deleteClient", "username": serial},
            {"command": "deleteRole", "rolename": device_role(self._prefix, serial)},
        ]

    # --- speaking to the plugin -------------------------------------------------------

    async def _run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send ``commands`` in order, a few devices' worth per message; their answers in
        the same order."""
        if not commands:
            return []
        size = _COMMANDS_PER_MESSAGE
        answers: list[dict[str, Any]] = []
        async with self._turn, self._admin_session() as (client, responses):
            for start in range(0, len(commands), size):
                answers += await self._exchange(client, responses, commands[start : start + size])
        return answers

    @contextlib.asynccontextmanager
    async def _admin_session(
        self,
    ) -> AsyncIterator[tuple[aiomqtt.Client, AsyncIterator[aiomqtt.Message]]]:
        where = f"{self._host}:{self._port}"
        client = aiomqtt.Client(
            self._host,
            self._port,
            identifier=f"{self._admin}-{secrets.token_hex(4)}",
            username=self._admin,
            password=self._password,
            protocol=aiomqtt.ProtocolVersion.V311,
            clean_session=True,
            timeout=self._timeout_s,
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.__aenter__()
        except aiomqtt.MqttCodeError as error:
            raise DeviceLoginError(
                f"the broker at {where} refused the login {self._admin!r} ({error}): check "
                "[broker] admin_username and CALLCENTER_BROKER__ADMIN_PASSWORD (the embedded "
                "broker keeps its own in credentials.json in its data directory)"
            ) from None
        except (aiomqtt.MqttError, OSError, TimeoutError) as error:
            raise DeviceLoginError(
                f"cannot reach the broker at {where} to manage device logins "
                f"({error or 'no answer within ' + str(self._timeout_s) + ' s'}): is it running, "
                "and are [broker] host and port right?"
            ) from None
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    await client.subscribe(RESPONSE_TOPIC, qos=1)
            except (aiomqtt.MqttError, TimeoutError) as error:
                raise DeviceLoginError(
                    f"the broker at {where} did not let {self._admin!r} read "
                    f"{RESPONSE_TOPIC} ({error or 'no answer'}): its role must allow "
                    f"subscribing to {CONTROL_TOPICS}"
                ) from None
            yield client, client.messages
        finally:
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                async with asyncio.timeout(self._timeout_s):
                    await client.__aexit__(None, None, None)

    async def _exchange(
        self,
        client: aiomqtt.Client,
        responses: AsyncIterator[aiomqtt.Message],
        commands: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """One control message and its answers, matched by correlation data."""
        tagged = []
        for command in commands:
            tagged.append({**command, "correlationData": f"c{next(self._ids)}"})
        wanted = {command["correlationData"] for command in tagged}
        answers: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
                while not wanted <= answers.keys():
                    message = await anext(responses)
                    for answer in _answers(message):
                        answers[str(answer.get("correlationData"))] = answer
        except TimeoutError:
            raise DeviceLoginError(
                f"the broker at {self._host}:{self._port} did not answer "
                f"{len(wanted) - len(wanted & answers.keys())} of {len(wanted)} commands on "
                f"{CONTROL_TOPIC} within {self._timeout_s:g} s: is mosquitto's "
                "dynamic-security plugin loaded (plugin and plugin_opt_config_file in "
                f"mosquitto.conf), and may {self._admin!r} publish to "
                f"{CONTROL_TOPICS} and read its answers?"
            ) from None
        except (aiomqtt.MqttError, StopAsyncIteration) as error:
            raise DeviceLoginError(
                f"the connection to the broker at {self._host}:{self._port} ended while "
                f"device logins were being changed ({error}); some of this batch may be "
                "done: run it again (an issue or move replaces what is there)"
            ) from None
        log.debug(
            "%d dynamic-security commands answered in %.3f s",
            len(tagged),
            time.monotonic() - started,
        )
        return [answers[command["correlationData"]] for command in tagged]


def _answers(message: aiomqtt.Message) -> Iterable[dict[str, Any]]:
    if not message.topic.matches(RESPONSE_TOPIC) or not isinstance(message.payload, bytes):
        return []
    try:
        body = json.loads(message.payload)
    except ValueError:
        return []
    responses = body.get("responses") if isinstance(body, dict) else None
    return [r for r in responses or [] if isinstance(r, dict)]


def _pairs(answers: list[dict[str, Any]]) -> Iterable[tuple[dict[str, Any], dict[str, Any]]]:
    return zip(answers[0::2], answers[1::2], strict=True)


def _raise_for(*answers: dict[str, Any], serial: str, allowed: Iterable[str] = ()) -> None:
    """A DeviceLoginError for the first refused command, unless its refusal is allowed."""
    for answer in answers:
        error = answer.get("error")
        if error and error not in allowed:
            raise DeviceLoginError(
                f"the broker refused {answer.get('command')} for device {serial}: {error}"
            )


def _household_in(role: Mapping[str, Any], topic_prefix: str) -> str:
    """The household code in a device role's first publish rule ("" when none)."""
    start = f"{topic_prefix}/v1/"
    for acl in role.get("acls", []):
        topic = str(acl.get("topic", ""))
        if acl.get("acltype") == "publishClientSend" and topic.startswith(start):
            return topic[len(start) :].split("/", maxsplit=1)[0]
    return ""


async def active_devices(engine: AsyncEngine) -> dict[str, str]:
    """Every registered device not retired: its serial and its household's code."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(m.Device.serial, m.Household.code)
            .join(m.Household, m.Household.id == m.Device.household_id)
            .where(m.Device.retired_at.is_(None))
        )
        return {serial: code for serial, code in rows}


# A device that keeps publishing where it may not is written down at most this often.
REFUSAL_NOTE_EVERY = timedelta(minutes=1)
REFUSED_PUBLISH = "refused_publish"


class RefusedPublishes:
    """A publish the broker refused, made visible at the centre: a warning in the log and
    a row in the audit log (``GET /api/audit``, action ``refused_publish``, actor
    ``device:<serial>``, the topic in its detail), at most one a minute per device with
    the number refused since. ``/metrics`` counts every one (the broker's own count)."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._noted: dict[str, datetime] = {}
        self._unnoted: dict[str, int] = {}
        self._writing: set[asyncio.Task[None]] = set()

    def heard(self, refusal: Refusal) -> None:
        """Told of a refusal on the event loop: returns at once, writes in a task."""
        client = refusal.client_id
        self._unnoted[client] = self._unnoted.get(client, 0) + 1
        now = self._clock.now()
        last = self._noted.get(client)
        if last is not None and now - last < REFUSAL_NOTE_EVERY:
            return
        self._noted[client] = now
        refused = self._unnoted.pop(client)
        log.warning(
            "the broker refused a publish of %s on %s: not one of its own topics "
            "(%d refused since the last note)",
            client,
            refusal.topic,
            refused,
        )
        task = asyncio.create_task(
            self._write(refusal, refused, now), name="callcenter.device_logins.refused"
        )
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _write(self, refusal: Refusal, refused: int, now: datetime) -> None:
        try:
            async with (
                write_turn(self._engine),
                AsyncSession(self._engine) as session,
                session.begin(),
            ):
                household_id = await session.scalar(
                    select(m.Device.household_id).where(m.Device.serial == refusal.client_id)
                )
                session.add(
                    m.AuditEntry(
                        at=now,
                        actor=f"device:{refusal.client_id}"[:96],
                        household_id=household_id,
                        action=REFUSED_PUBLISH,
                        path=refusal.topic[:255],
                        address="",
                        detail={"topic": refusal.topic, "qos": refusal.qos, "refused": refused},
                    )
                )
        except Exception:  # the note is lost, the count in /metrics is not
            log.exception("could not write the refused publish of %s", refusal.client_id)
