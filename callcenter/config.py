"""Configuration: one TOML file, overridden by environment variables.

Every key has a default that runs the whole system on one machine. Secrets (broker
password, Twilio token, a database URL with a password in it) come only from the
environment; a secret found in the file is a configuration error, so it never ends up
in version control.

Environment overrides are named ``CALLCENTER_<SECTION>__<KEY>``, for example
``CALLCENTER_DATABASE__URL`` or ``CALLCENTER_INGEST__MAX_BATCH=1000``. Escalation
policies (``calls.policies``) are tables and are read only from the file.
"""

from __future__ import annotations

import datetime
import difflib
import enum
import ipaddress
import os
import shutil
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from callcenter.broker_logins import find_plugin
from callcenter.brokers import ENTRY_FORM, BrokerAddress, parse_addresses
from callcenter.domain.call_types import CallType
from callcenter.domain.phones import E164_HOW, is_e164
from callcenter.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    CountedFrom,
    Milestone,
    Policy,
    PolicyBook,
    Step,
)
from callcenter.logs import LogFormat

ENV_PREFIX = "CALLCENTER_"
DEFAULT_CONFIG_FILE = "callcenter.toml"

# Keys whose values are secrets: allowed from the environment, refused in the file.
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset(
    {("broker", "password"), ("broker", "admin_password"), ("sms", "auth_token")}
)
# Keys holding tables, which an environment variable cannot express.
FILE_ONLY_KEYS: frozenset[tuple[str, str]] = frozenset({("calls", "policies")})

# Errors raised by our own validators; their ctx carries the sub-key and the fix.
_RULE_ERRORS = frozenset({"unknown_call_type", "policy_rule"})


def _url_has_password(value: object) -> bool:
    """True for a URL string that carries a password, e.g. postgresql+asyncpg://u:pw@h/db,
    or in its query (?password=pw, which the driver takes too)."""
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        return parts.password is not None or "password" in urllib.parse.parse_qs(parts.query)
    except ValueError:
        return False


def _comma_list(value: object) -> object:
    """A list given as one comma-separated string (as the environment gives lists)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _international(value: str) -> str:
    """``value`` if empty or an E.164 phone number, else a ValueError saying how to write it."""
    if value and not is_e164(value):
        raise ValueError(f"not an international (E.164) phone number: write {E164_HOW}")
    return value


class DistrictConfig(_Section):
    name: str = Field("Demo district", description="shown on the board and in messages")
    timezone: str = Field("Asia/Shanghai", description="IANA time zone name, e.g. Asia/Shanghai")
    holidays: list[datetime.date] = Field(
        default_factory=list,
        description=(
            "public holidays as dates, e.g. [2026-10-01, 2026-10-02]; "
            "a holiday runs the Sunday timetable"
        ),
    )
    desk_phone: str = Field(
        "",
        description=(
            "the call centre's number families are told to ring, in E.164 form "
            '("+", country code, number), e.g. "+861012345678"; empty: none'
        ),
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value

    @field_validator("holidays", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # The environment can only say "2026-10-01,2026-10-02".
        return _comma_list(value)

    @field_validator("desk_phone")
    @classmethod
    def _international_number(cls, value: str) -> str:
        return _international(value)


class DataConfig(_Section):
    dir: Path = Field(Path("var"), description="directory for the database, broker files, logs")


class DatabaseConfig(_Section):
    url: str = Field(
        "",
        description=(
            "SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db; "
            "empty means a SQLite file in the data directory"
        ),
    )
    echo: bool = Field(False, description="log every SQL statement (debugging only)")

    @field_validator("url")
    @classmethod
    def _supported_driver(cls, value: str) -> str:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "unsupported database URL; use sqlite+aiosqlite:///path/file.db "
                "or postgresql+asyncpg://user@host:5432/dbname"
            )
        if value.startswith("postgresql"):
            _check_hosts(value)
        return value


# What a server that writes may ask of the host it connects to (asyncpg's
# target_session_attrs): a writable primary.
_WRITABLE_TARGETS = ("read-write", "primary")


def _check_hosts(url: str) -> None:
    """Refuse, before any connection, a PostgreSQL URL whose hosts the driver would
    refuse or that could land the server on a standby (docs/database.md, "Failover")."""
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        # The dialect's own reading, as the engine will read it (it is untyped).
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _, options = dialect.create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    except (ArgumentError, ValueError) as error:
        raise ValueError(
            f"the database URL cannot be read ({error}); several hosts are written "
            "?host=HOST1:PORT1&host=HOST2:PORT2, each with its port"
        ) from None
    target = options.get("target_session_attrs")
    if target is not None and target not in _WRITABLE_TARGETS:
        raise ValueError(
            f"target_session_attrs={target} could connect the server to a standby, where "
            "it cannot write; use target_session_attrs=read-write"
        )
    if isinstance(options.get("host"), list) and target is None:
        raise ValueError(
            "a database URL naming several hosts needs target_session_attrs=read-write, "
            "or the server takes the first host that answers, which may be a standby"
        )


class DeviceLoginsMode(enum.StrEnum):
    """Whether the server issues each device its own broker login (docs/operations.md)."""

    DYNAMIC_SECURITY = "dynamic_security"
    NONE = "none"


class BrokerConfig(_Section):
    host: str = Field(
        "",
        description=(
            "MQTT broker host; empty (and no broker.hosts) runs a private mosquitto for this server"
        ),
    )
    # Also the port of an entry of ``hosts`` written without one.
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    hosts: list[str] = Field(
        default_factory=list,
        description=(
            f"several MQTT brokers, tried in turn: each {ENTRY_FORM}, the port "
            "broker.port when left out; instead of broker.host"
        ),
    )
    username: str = Field("", description="MQTT user name (password from the environment)")
    password: str = Field("", description="secret: set CALLCENTER_BROKER__PASSWORD instead")
    client_id: str = Field(
        "callcenter-ingest",
        min_length=1,
        max_length=64,
        description="MQTT client id; the broker keeps this server's session under it",
    )
    topic_prefix: str = Field(
        "eldercare", min_length=1, description="first topic level of every device topic"
    )
    shared_group: str = Field(
        "",
        description="shared-subscription group ($share) for several server instances; empty: none",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds")
    reconnect_max_s: float = Field(
        30.0, gt=0, description="longest wait between reconnect attempts"
    )
    device_logins: DeviceLoginsMode = Field(
        DeviceLoginsMode.DYNAMIC_SECURITY,
        description=(
            "how devices log in to the broker: dynamic_security, each its own login and "
            "rules issued by this server through mosquitto's dynamic-security plugin; none, "
            "this server issues none (the broker takes any device, or logins are managed "
            "elsewhere)"
        ),
    )
    admin_username: str = Field(
        "",
        description=(
            "the dynamic-security administrator this server manages device logins as, on "
            "an external broker (password from the environment); the embedded broker "
            "makes its own"
        ),
    )
    admin_password: str = Field(
        "", description="secret: set CALLCENTER_BROKER__ADMIN_PASSWORD instead"
    )
    admin_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="how long to wait for the broker's answer when changing device logins",
    )

    @field_validator("host")
    @classmethod
    def _one_host(cls, value: str) -> str:
        if "," in value or value.strip() != value or " " in value:
            raise ValueError(
                "one host name or address; to name several brokers, list them in "
                'broker.hosts, e.g. hosts = ["mqtt1:1883", "mqtt2:1883"]'
            )
        return value

    @field_validator("hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # The environment can only say "mqtt1:1883,mqtt2:1883".
        if isinstance(value, str):
            return [part.strip() for part in value.split(",")]
        return value

    @field_validator("hosts")
    @classmethod
    def _brokers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value:
            parse_addresses(value, info.data.get("port", 1883))
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _plain_level(cls, value: str) -> str:
        if any(ch in value for ch in "/+#$") or value.strip() != value:
            raise ValueError("must be one topic level without '/', '+', '#', '$' or spaces")
        return value

    @property
    def addresses(self) -> tuple[BrokerAddress, ...]:
        """The configured brokers in the order to try them; none: the embedded one."""
        if self.hosts:
            return parse_addresses(self.hosts, self.port)
        return (BrokerAddress(self.host, self.port),) if self.host else ()

    @model_validator(mode="after")
    def _one_way_to_name_brokers(self) -> BrokerConfig:
        if self.host and self.hosts:
            raise _rule_error(
                "broker.host is set too: the brokers are named in one place",
                "hosts",
                "name one broker in broker.host, or several in broker.hosts, not both",
            )
        return self

    @model_validator(mode="after")
    def _logins_on_one_broker(self) -> BrokerConfig:
        if len(self.hosts) > 1 and self.device_logins == DeviceLoginsMode.DYNAMIC_SECURITY:
            raise _rule_error(
                'device_logins = "dynamic_security" keeps the devices\' logins in one '
                "mosquitto's dynamic-security plugin, and a device may land on any of "
                "several brokers",
                "device_logins",
                'with an EMQX cluster, set device_logins = "none" and keep the devices\' '
                'logins and rules in EMQX (docs/operations.md, "The broker tier")',
            )
        return self

    @model_validator(mode="after")
    def _administrator_for_logins(self) -> BrokerConfig:
        external = bool(self.host or self.hosts)
        if (
            external
            and self.device_logins == DeviceLoginsMode.DYNAMIC_SECURITY
            and not (self.admin_username and self.admin_password)
        ):
            raise ValueError(
                'device_logins = "dynamic_security" on an external broker needs its '
                "administrator: set admin_username, and CALLCENTER_BROKER__ADMIN_PASSWORD in "
                'the environment (docs/operations.md, "Broker logins"); or set '
                'device_logins = "none" when the broker\'s logins are managed elsewhere'
            )
        return self


class EmbeddedBrokerConfig(_Section):
    mosquitto: str = Field(
        "mosquitto", description="mosquitto executable (name on PATH or full path)"
    )
    port: int = Field(
        0, ge=0, le=65535, description="port for the private broker; 0 picks a free one"
    )
    max_queued_messages: int = Field(
        1_000_000,
        ge=1000,
        description="QoS 1 messages kept per offline client (mosquitto's own default is 1000)",
    )
    dynamic_security_plugin: str = Field(
        "",
        description=(
            "path of mosquitto's mosquitto_dynamic_security.so, loaded when "
            "broker.device_logins is dynamic_security; empty: looked for where Debian, "
            "Ubuntu and Fedora install it"
        ),
    )


class IngestConfig(_Section):
    max_batch: int = Field(
        1000, ge=1, le=100_000, description="most events committed in one transaction"
    )
    max_payload_bytes: int = Field(
        8192, ge=256, description="larger payloads are dead-lettered as too large"
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        description=(
            "a device timestamp further ahead of the server than this means the device's "
            "clock is wrong: the message is kept, its skew recorded, a device_clock fault raised"
        ),
    )
    max_clock_lag_s: float = Field(
        86400.0,
        gt=0,
        description=(
            "a device timestamp further behind the server than this means the device's clock "
            "is wrong (long, because a device keeps an event until the broker takes it)"
        ),
    )
    heartbeat_interval_s: float = Field(
        60.0, gt=0, description="how often devices send a heartbeat"
    )
    offline_after_missed: int = Field(
        3, ge=1, description="missed heartbeats after which a device is declared offline"
    )
    registry_refresh_s: float = Field(
        30.0,
        gt=0,
        description=(
            "how often ingest, between batches, looks whether the district's registry "
            "changed, and then reads its devices again (every time with "
            "broker.shared_group); while messages come it also asks before each batch, at "
            "most once a second (docs/register.md)"
        ),
    )
    own_process: bool = Field(
        False,
        description=(
            "run ingest in a process of its own beside the call engine, so the two use "
            "two cores (for tens of thousands of devices)"
        ),
    )


class WebConfig(_Section):
    host: str = Field("127.0.0.1", description="address the HTTP server listens on")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one")
    session_idle_hours: float = Field(
        12.0, gt=0, le=168, description="a board sign-in ends after this long unused"
    )
    session_max_hours: float = Field(
        24.0, gt=0, le=720, description="a board sign-in ends this long after it began"
    )
    secure_cookies: bool = Field(
        False,
        description=(
            "send the sign-in cookie only over HTTPS; turn on whenever the board is reached "
            "through HTTPS (e.g. behind a proxy)"
        ),
    )
    map_tiles_url: str = Field(
        "",
        description=(
            "map tile URL template for the board, e.g. https://tile.example.org/{z}/{x}/{y}.png; "
            "empty: no tiles, positions on a plain grid (works offline)"
        ),
    )
    map_attribution: str = Field("", description="attribution shown under the map tiles")
    strict_answers: bool = Field(
        False,
        description=(
            "an API answer that does not match its declared model (a fault of ours) is a 500 "
            "instead of going out as it is with an ERROR in the log; for tests and staging"
        ),
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "addresses or networks of reverse proxies in front of this server, e.g. "
            '["10.0.0.5", "fd00::/64"]; a request from one of them is taken to come from '
            "the address its X-Forwarded-For names; empty: the connection's own address, "
            "X-Forwarded-For ignored"
        ),
    )
    sign_in_window_min: float = Field(
        15.0, gt=0, le=1440, description="board sign-in failures are counted over this long"
    )
    sign_in_failures_per_source: int = Field(
        20,
        ge=1,
        description="failures from one address (any names) that pause sign-in from it",
    )
    sign_in_failures_per_user_source: int = Field(
        5,
        ge=1,
        description="failures for one person from one address that pause them there",
    )
    sign_in_failures_per_user: int = Field(
        100,
        ge=1,
        description=(
            "failures for one person from everywhere that pause them, except from "
            "addresses they signed in from in the last 30 days"
        ),
    )
    board_session_check_s: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description=(
            "how often each server checks that its open boards' sign-ins still hold "
            "(one query); a board whose sign-in ended is closed within this long"
        ),
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        # The environment can only say "10.0.0.5,10.0.0.6".
        return _comma_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network, e.g. 10.0.0.5 or 10.0.0.0/24"
                ) from None
        return value


class SmsConfig(_Section):
    account_sid: str = Field(
        "",
        description=(
            "Twilio account SID (AC...); empty runs a local fake Twilio and every SMS goes "
            "there, never to a real phone"
        ),
    )
    auth_token: str = Field("", description="secret: set CALLCENTER_SMS__AUTH_TOKEN instead")
    from_number: str = Field(
        "", description="the number SMS are sent from, E.164 (or set messaging_service_sid)"
    )
    messaging_service_sid: str = Field(
        "", description="Twilio messaging service (MG...) to send from instead of from_number"
    )
    api_base_url: str = Field(
        "", description="Twilio's API address; empty: Twilio itself (or the local fake)"
    )
    public_url: str = Field(
        "",
        description=(
            "the address Twilio reaches this server's webhooks at, e.g. "
            "https://desk.example.org behind a proxy; empty: the operator API's own URL"
        ),
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="longest wait for one Twilio call")
    fake_port: int = Field(
        0, ge=0, le=65535, description="port of the local fake Twilio; 0 picks a free one"
    )
    recipient_limit: int = Field(
        5,
        ge=0,
        le=100,
        description=(
            "texts one phone gets at most per recipient_window_s; more are bundled into one "
            "text, never dropped, and a dispatch page is never held back; 0: no limit"
        ),
    )
    recipient_window_s: float = Field(
        60.0, gt=0, le=3600, description="the window recipient_limit counts in, seconds"
    )

    @field_validator("from_number")
    @classmethod
    def _sender_number(cls, value: str) -> str:
        return _international(value)

    @model_validator(mode="after")
    def _complete_account(self) -> SmsConfig:
        if self.account_sid and not self.auth_token:
            raise ValueError(
                "with a Twilio account_sid, set the auth token in CALLCENTER_SMS__AUTH_TOKEN"
            )
        if self.account_sid and not (self.from_number or self.messaging_service_sid):
            raise ValueError(
                "with a Twilio account_sid, set from_number (or messaging_service_sid) too"
            )
        return self

    @property
    def fake(self) -> bool:
        """True when no Twilio account is configured and the local fake is used."""
        return not self.account_sid


class VoiceConfig(_Section):
    enabled: bool = Field(
        True,
        description=(
            "place phone calls (ring_carer escalation steps) through the [sms] Twilio "
            "account; false: a ring_carer step is written on the call and rings nobody"
        ),
    )
    from_number: str = Field(
        "",
        description=(
            "the number calls come from, E.164, a voice-capable number of the account; "
            "empty: sms.from_number"
        ),
    )
    ring_timeout_s: int = Field(
        25,
        ge=5,
        le=60,
        description="seconds a phone rings before the call counts as not picked up",
    )
    speech_zh: str = Field(
        "cmn-CN",
        min_length=2,
        max_length=16,
        description="Twilio's <Say language> for what is said to people whose language is zh",
    )
    speech_en: str = Field(
        "en-US",
        min_length=2,
        max_length=16,
        description=(
            "Twilio's <Say language> for what is said in English (to anyone whose language "
            "is not zh)"
        ),
    )

    inbound_ring_s: int = Field(
        20,
        ge=5,
        le=60,
        description=(
            "seconds a call to the centre's number rings the operators on duty (then as "
            "long the supervisors on duty) before the caller hears the recorded message "
            "and the call escalates"
        ),
    )
    record: bool = Field(
        False,
        description=(
            "record what operator and household say on a click-to-call bridge; the "
            "recording stays at Twilio and its reference is kept on the call"
        ),
    )
    recording_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description=(
            "days a bridge's recording is kept; then its reference is removed from the "
            "call and the recording deleted at Twilio"
        ),
    )

    def speech_language(self, language: str) -> str:
        """The <Say language> for someone whose language is ``language``."""
        return self.speech_zh if language == "zh" else self.speech_en

    @field_validator("from_number")
    @classmethod
    def _caller_number(cls, value: str) -> str:
        return _international(value)


def _rule_error(reason: str, key: str, fix: str) -> PydanticCustomError:
    """A validation error that names the sub-key at fault and how to fix it."""
    return PydanticCustomError(
        "policy_rule", "{reason}", {"reason": reason, "key": key, "fix": fix}
    )


class StepConfig(_Section):
    """One escalation step of a policy; mirrors ``callcenter.domain.policy.Step``."""

    name: str = Field(min_length=1, description="the step's name, unique within its policy")
    # Strict numbers: the same model reads a supervisor's edit over the API, where true or
    # "30" must be refused, not read as 1 or 30 seconds.
    after_s: StrictFloat = Field(
        ge=0,
        description=(
            "seconds from the step's starting point (counted_from) to its actions, "
            "unless the milestone is reached first"
        ),
    )
    unless: Milestone = Field(description="the milestone that, once reached, cancels the step")
    counted_from: CountedFrom = Field(
        CountedFrom.OPENED,
        description='where the step\'s clock starts; "dispatched" runs once per dispatched carer',
    )
    actions: list[Action] = Field(min_length=1, description="what the step does, at least one")

    @model_validator(mode="after")
    def _domain_rules(self) -> Self:
        try:
            self.to_step()
        except ValueError as exc:
            key, fix = "", "see the escalation steps in docs/configuration.md"
            # Name the key the domain's rule is about, so the fix can be precise.
            if (
                self.counted_from is CountedFrom.DISPATCHED
                and self.unless is not Milestone.ACCEPTED
            ):
                key = "unless"
                fix = (
                    'set unless = "accepted", or count the step from the call opening '
                    '(counted_from = "opened") to wait for another milestone'
                )
            raise _rule_error(str(exc), key, fix) from None
        return self

    def to_step(self) -> Step:
        """The domain step this configures."""
        return Step(
            name=self.name,
            after_s=self.after_s,
            unless=self.unless,
            actions=tuple(self.actions),
            counted_from=self.counted_from,
        )


class PolicyConfig(_Section):
    """How one call type is handled; mirrors ``callcenter.domain.policy.Policy``."""

    auto_dispatch: StrictBool = Field(
        description="page the nearest free carer as soon as the call opens (false: by hand)"
    )
    carers_required: StrictInt = Field(1, ge=1, description="carers sent to each call")
    skills: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description='skills every carer sent must have, e.g. ["lift"]'
    )
    cancel_grace_s: StrictFloat = Field(
        60.0,
        ge=0,
        description="seconds after opening during which the resident may still cancel the call",
    )
    steps: list[StepConfig] = Field(
        description=(
            "the escalation steps; a policy given in the file replaces the default one "
            "wholesale, so list every step wanted (steps = [] for none)"
        )
    )

    @model_validator(mode="after")
    def _domain_rules(self) -> Self:
        try:
            self.to_policy()
        except ValueError as exc:
            key, fix = "", "see the escalation policies in docs/configuration.md"
            names = [step.name for step in self.steps]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                key = "steps"
                fix = f"give each step its own name; repeated: {', '.join(repeated)}"
            raise _rule_error(str(exc), key, fix) from None
        return self

    def to_policy(self) -> Policy:
        """The domain policy this configures."""
        return Policy(
            auto_dispatch=self.auto_dispatch,
            steps=tuple(step.to_step() for step in self.steps),
            carers_required=self.carers_required,
            skills=tuple(self.skills),
            cancel_grace_s=self.cancel_grace_s,
        )


def _known_call_type(value: str) -> str:
    known = [call_type.value for call_type in CallType]
    if value not in known:
        close = difflib.get_close_matches(value, known, n=1)
        fix = (
            f"did you mean {close[0]!r}? " if close else ""
        ) + f"known call types: {', '.join(known)}"
        raise PydanticCustomError(
            "unknown_call_type", "{reason}", {"reason": "unknown call type", "key": "", "fix": fix}
        )
    return value


class CallsConfig(_Section):
    """The call engine: dispatch ranking, escalation policies, watchdog and outbox."""

    service_circle_min: float = Field(
        15.0,
        gt=0,
        description=(
            "a carer should reach any household within this many minutes; "
            "ranking prefers carers inside it"
        ),
    )
    event_poll_s: float = Field(
        1.0,
        gt=0,
        description="how often the call engine reads the event log when ingest has not prompted it",
    )
    watchdog_interval_s: float = Field(
        5.0, gt=0, description="how often the watchdog looks for overdue calls, in seconds"
    )
    overdue_alarm_s: float = Field(
        5.0,
        ge=0,
        description=(
            "seconds by which an open call's next deadline may be overdue before the "
            "watchdog alarms"
        ),
    )
    outbox_retry_max_s: float = Field(
        300.0, gt=0, description="longest wait between attempts to carry out a failed outbox effect"
    )
    outbox_lanes: int = Field(
        16,
        ge=1,
        le=64,
        description=(
            "texts (and device commands) the outbox sends at the same time; each phone's "
            "messages still go out one after another, in order"
        ),
    )
    policies: dict[Annotated[str, AfterValidator(_known_call_type)], PolicyConfig] = Field(
        default_factory=dict,
        description=(
            "escalation policy by call type (file only); a type given replaces its default "
            "policy, the others keep theirs"
        ),
    )

    @property
    def service_circle_s(self) -> float:
        """The service circle in seconds, as dispatch ranking takes it."""
        return self.service_circle_min * 60


class DeskConfig(_Section):
    """Alarm calls handed to the operators on duty, one at a time (docs/calls.md, "Offers")."""

    offers: bool = Field(
        True,
        description=(
            "offer each new alarm call to one free operator on duty at a time, then to "
            "everyone; false: calls wait on every board for whoever takes them"
        ),
    )
    offer_timeout_s: float = Field(
        15.0,
        ge=3,
        le=300,
        description=(
            "seconds an operator has to accept a call offered to them before it is offered "
            "to the next free operator"
        ),
    )
    offer_board_grace_s: float = Field(
        10.0,
        ge=0,
        le=120,
        description=(
            "seconds an operator's board may be disconnected (a reconnect, a server "
            "restart) before they stop being offered calls and an offer they hold moves on"
        ),
    )
    offer_call_types: list[Annotated[str, AfterValidator(_known_call_type)]] = Field(
        default_factory=lambda: [CallType.EMERGENCY.value, CallType.FALL.value],
        description="the call types offered to operators (the others wait on every board)",
    )


class WelfareConfig(_Section):
    """The weekly welfare calls operators make to the oldest residents (docs/welfare.md)."""

    min_age: int = Field(
        80,
        ge=0,
        le=130,
        description=(
            "residents this old or older in a week (the year the week ends in, less their "
            "birth year) get a welfare call that week"
        ),
    )
    ring_retries: int = Field(
        2,
        ge=0,
        le=5,
        description=(
            "times a welfare call rung from the panel is rung again when none of the "
            "household's numbers answered; after the last, its outcome is no_answer"
        ),
    )
    ring_retry_after_min: int = Field(
        120,
        ge=1,
        le=1440,
        description="minutes between a welfare ring nobody answered and the next try",
    )


class ClusterConfig(_Section):
    """Several servers on one PostgreSQL: which one does the desk's once-only work
    (docs/operations.md, "Several servers")."""

    instance: str = Field(
        "",
        max_length=40,
        pattern=r"^[A-Za-z0-9._-]*$",
        description=(
            "this server's name in the logs, /healthz and the database's connections "
            "(letters, digits, . _ -); empty: the machine's host name"
        ),
    )
    lease_ttl_s: float = Field(
        3.0,
        ge=1.0,
        le=60.0,
        description=(
            "how long the desk's lease lasts unrenewed (seconds): a server that stops "
            "renewing it (power lost, network cut) is taken over after at most this long "
            "plus lease_poll_s; a killed one at once"
        ),
    )
    lease_poll_s: float = Field(
        0.5,
        gt=0,
        le=10.0,
        description="how often a server not doing the once-only work looks at the lease (seconds)",
    )


class HealthConfig(_Section):
    """When ``/healthz`` and the board call a part of the server stuck (docs/api.md)."""

    stuck_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description=(
            "a part that has had work waiting without making progress for longer than this "
            "(seconds) fails /healthz (503) and puts a banner on every board"
        ),
    )


class LoggingConfig(_Section):
    """How the processes write their log (docs/operations.md, "Logs")."""

    format: LogFormat = Field(
        LogFormat.TEXT,
        description=(
            'how log records are written: "text", a line a person reads, or "json", one '
            "JSON object a line with the call, household, carer and event as fields "
            "(serve and demo take --log-format to override it)"
        ),
    )


class Config(BaseModel):
    """The whole configuration, after the file and the environment are merged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    district: DistrictConfig = DistrictConfig()
    data: DataConfig = DataConfig()
    database: DatabaseConfig = DatabaseConfig()
    broker: BrokerConfig = BrokerConfig()
    embedded_broker: EmbeddedBrokerConfig = EmbeddedBrokerConfig()
    ingest: IngestConfig = IngestConfig()
    web: WebConfig = WebConfig()
    sms: SmsConfig = SmsConfig()
    voice: VoiceConfig = VoiceConfig()
    calls: CallsConfig = CallsConfig()
    desk: DeskConfig = DeskConfig()
    welfare: WelfareConfig = WelfareConfig()
    health: HealthConfig = HealthConfig()
    cluster: ClusterConfig = ClusterConfig()
    logging: LoggingConfig = LoggingConfig()

    def policy_book(self) -> PolicyBook:
        """Every call type's escalation policy: the configured ones, else the defaults."""
        configured = {
            CallType(name): policy.to_policy() for name, policy in self.calls.policies.items()
        }
        return PolicyBook(policies={**DEFAULT_POLICIES, **configured})

    @property
    def database_url(self) -> str:
        """The database URL in force: the configured one or the SQLite file under data.dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data.dir / 'callcenter.db').resolve()}"

    @property
    def embedded_broker_wanted(self) -> bool:
        """True when no external broker is configured and we run our own mosquitto."""
        return not self.broker.addresses


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, said so a person can fix it."""

    source: str
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}\n    fix: {self.fix}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _env_variable(section: str, key: str) -> str:
    """The environment variable that sets ``section.key``: CALLCENTER_<SECTION>__<KEY>."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Collect CALLCENTER_<SECTION>__<KEY> variables as {section: {key: (value, var)}}."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX) :].partition("__")
        found.setdefault(section.lower(), {})[key.lower()] = (value, var)
    return found


def _walk(loc: Sequence[str]) -> tuple[Any, FieldInfo | None, str]:
    """Follow a location through the models: the type reached (None when it runs off the
    models), and the last named field on the way with its name."""
    annotation: Any = Config
    field: FieldInfo | None = None
    name = ""
    for part in loc:
        if get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]  # the part is a dict key or list index
        elif (
            isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
            and part in annotation.model_fields
        ):
            field, name = annotation.model_fields[part], part
            annotation = field.annotation
        else:
            return None, field, name
    return annotation, field, name


def _known_keys(container: Sequence[str]) -> list[str]:
    """The keys allowed inside the table at ``container`` (the sections at the top)."""
    model, _, _ = _walk(container)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return list(Config.model_fields)


def _enum_in(annotation: Any) -> type[enum.Enum] | None:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    for arg in get_args(annotation):
        found = _enum_in(arg)
        if found is not None:
            return found
    return None


def _field_hint(loc: Sequence[str]) -> str:
    """What the key at ``loc`` means, its allowed values and its default."""
    _, field, name = _walk(loc)
    if field is None or field.description is None:
        return ""
    hint = field.description
    choices = _enum_in(field.annotation)
    if choices is not None:
        hint += f"; one of: {', '.join(str(member.value) for member in choices)}"
    if not field.is_required():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, enum.Enum):
            default = default.value
        shown = f'"{default}"' if isinstance(default, (str, Path)) else repr(default).lower()
        hint += f"; default {name} = {shown}"
    return hint


def _problems_from_validation(
    error: ValidationError, origin: dict[tuple[str, str], str], default_source: str
) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        # A bad dict key is reported at "[key]" below it; the key itself is the name to show.
        loc = [str(part) for part in item["loc"] if part != "[key]"]
        ctx = item.get("ctx") or {}
        ours = item["type"] in _RULE_ERRORS
        if ours and ctx["key"]:
            loc.append(str(ctx["key"]))
        section = loc[0] if loc else ""
        key = loc[1] if len(loc) > 1 else ""
        dotted = ".".join(loc) if loc else "(top level)"
        source = origin.get((section, key), default_source)
        if item["type"] == "extra_forbidden":
            candidates = _known_keys(loc[:-1])
            close = difflib.get_close_matches(loc[-1], candidates, n=1)
            fix = (
                f"did you mean {close[0]!r}? " if close else ""
            ) + f"known keys here: {', '.join(candidates)}"
            problems.append(ConfigProblem(source, dotted, "unknown key", fix))
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        got = item.get("input")
        if not isinstance(got, dict):
            message = f"{message} (got {got!r})"
        hint = str(ctx["fix"]) if ours else (_field_hint(loc) or "see docs/configuration.md")
        problems.append(ConfigProblem(source, dotted, message, hint))
    return problems


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any) and the environment; raise ConfigError listing all problems.

    With no path, ``callcenter.toml`` in the working directory is read when it exists.
    """
    environ = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    raw: dict[str, Any] = {}
    origin: dict[tuple[str, str], str] = {}
    source = "(defaults)"

    if path is None and Path(DEFAULT_CONFIG_FILE).exists():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        source = str(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                [
                    ConfigProblem(
                        source,
                        "(file)",
                        "file not found",
                        "create it (see docs/configuration.md) or leave out --config",
                    )
                ]
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                [ConfigProblem(source, "(file)", f"not valid TOML: {exc}", "fix the syntax")]
            ) from None
        for section, body in raw.items():
            if isinstance(body, dict):
                for key in body:
                    origin[(section, key)] = source
                    if (section, key) in SECRET_KEYS:
                        problems.append(
                            ConfigProblem(
                                source,
                                f"{section}.{key}",
                                "secrets are not read from the configuration file",
                                f"remove it from the file and set {_env_variable(section, key)} "
                                "in the environment",
                            )
                        )
                    elif (section, key) == ("database", "url") and _url_has_password(body[key]):
                        problems.append(
                            ConfigProblem(
                                source,
                                "database.url",
                                "a database URL with a password is a secret and is not read "
                                "from the configuration file",
                                "remove it from the file and set CALLCENTER_DATABASE__URL "
                                "in the environment",
                            )
                        )

    for section, keys in _env_overrides(environ).items():
        if section not in raw:
            # A section only the environment names: an error in it is the variable's.
            origin[(section, "")] = f"environment {next(iter(keys.values()))[1]}"
        body = raw.setdefault(section, {})
        if not isinstance(body, dict):
            continue
        for key, (value, var) in keys.items():
            # CALLCENTER_CALLS__POLICIES__FALL__... names a table: file only.
            table = key.partition("__")[0]
            if (section, table) in FILE_ONLY_KEYS:
                problems.append(
                    ConfigProblem(
                        f"environment {var}",
                        f"{section}.{table}",
                        f"{section}.{table} is read only from the configuration file",
                        f"remove {var} from the environment and write the setting as "
                        f"[{section}.{table}.<name>] tables in the file (docs/configuration.md)",
                    )
                )
                continue
            body[key] = value
            origin[(section, key)] = f"environment {var}"

    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_problems_from_validation(exc, origin, source))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return config


def check_environment(config: Config) -> list[ConfigProblem]:
    """Problems that only show against this machine: missing programs, unwritable dirs."""
    problems = []
    if config.embedded_broker_wanted and shutil.which(config.embedded_broker.mosquitto) is None:
        problems.append(
            ConfigProblem(
                "(machine)",
                "embedded_broker.mosquitto",
                f"no mosquitto executable found as {config.embedded_broker.mosquitto!r}",
                "install it (Debian: apt-get install -y mosquitto) or set broker.host "
                "(or broker.hosts) to use an existing broker",
            )
        )
    if (
        config.embedded_broker_wanted
        and config.broker.device_logins == DeviceLoginsMode.DYNAMIC_SECURITY
        and find_plugin(config.embedded_broker.dynamic_security_plugin) is None
    ):
        problems.append(
            ConfigProblem(
                "(machine)",
                "embedded_broker.dynamic_security_plugin",
                "mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found",
                "install mosquitto 2.0 or later, set its path here, or set "
                'broker.device_logins = "none" to let any client publish anywhere',
            )
        )
    data_dir = config.data.dir
    probe = (
        data_dir
        if data_dir.exists()
        else next((p for p in data_dir.resolve().parents if p.exists()), Path("/"))
    )
    if not os.access(probe, os.W_OK):
        problems.append(
            ConfigProblem(
                "(machine)",
                "data.dir",
                f"{probe} is not writable",
                "point data.dir at a directory this user can write",
            )
        )
    return problems


DatabaseKind = Literal["sqlite", "postgresql"]


def database_kind(url: str) -> DatabaseKind:
    """Which of the two supported databases a URL names."""
    return "postgresql" if url.startswith("postgresql") else "sqlite"
