"""Configuration: one TOML file, overridden by environment variables.

Every key has a default that runs the whole system on one machine. Secrets (broker
password, Twilio token, a database URL with a password in it) come only from the
environment; a secret found in the file is a configuration error, so it never ends up
in version control.

Environment overrides are named ``CALLCENTER_<SECTION>__<KEY>``, for example
``CALLCENTER_DATABASE__URL`` or ``CALLCENTER_INGEST__MAX_BATCH=1000``.
"""

from __future__ import annotations

import difflib
import os
import shutil
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "CALLCENTER_"
DEFAULT_CONFIG_FILE = "callcenter.toml"

# Keys whose values are secrets: allowed from the environment, refused in the file.
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset({("broker", "password")})
# Environment variables holding secrets that have no key in the file at all.
SECRET_ENV = {
    ("broker", "password"): "CALLCENTER_BROKER__PASSWORD",
}


def _url_has_password(value: object) -> bool:
    """True for a URL string that carries a password, e.g. postgresql+asyncpg://u:pw@h/db."""
    if not isinstance(value, str) or "://" not in value:
        return False
    try:
        return urllib.parse.urlsplit(value).password is not None
    except ValueError:
        return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DistrictConfig(_Section):
    name: str = Field("Demo district", description="shown on the board and in messages")
    timezone: str = Field("Asia/Shanghai", description="IANA time zone name, e.g. Asia/Shanghai")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value


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
        return value


class BrokerConfig(_Section):
    host: str = Field(
        "", description="MQTT broker host; empty runs a private mosquitto for this server"
    )
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
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

    @field_validator("topic_prefix")
    @classmethod
    def _plain_level(cls, value: str) -> str:
        if any(ch in value for ch in "/+#$") or value.strip() != value:
            raise ValueError("must be one topic level without '/', '+', '#', '$' or spaces")
        return value


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


class IngestConfig(_Section):
    max_batch: int = Field(
        1000, ge=1, le=100_000, description="most events committed in one transaction"
    )
    max_payload_bytes: int = Field(
        8192, ge=256, description="larger payloads are dead-lettered as too large"
    )
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="device timestamps further ahead than this are dead-lettered"
    )
    heartbeat_interval_s: float = Field(
        60.0, gt=0, description="how often devices send a heartbeat"
    )
    offline_after_missed: int = Field(
        3, ge=1, description="missed heartbeats after which a device is declared offline"
    )
    registry_refresh_s: float = Field(
        30.0, gt=0, description="how often the device registry is reloaded from the database"
    )


class WebConfig(_Section):
    host: str = Field("127.0.0.1", description="address the HTTP server listens on")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one")


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

    @property
    def database_url(self) -> str:
        """The database URL in force: the configured one or the SQLite file under data.dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.data.dir / 'callcenter.db').resolve()}"

    @property
    def embedded_broker_wanted(self) -> bool:
        """True when no external broker is configured and we run our own mosquitto."""
        return not self.broker.host


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


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """Collect CALLCENTER_<SECTION>__<KEY> variables as {section: {key: (value, var)}}."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        section, _, key = var[len(ENV_PREFIX) :].partition("__")
        found.setdefault(section.lower(), {})[key.lower()] = (value, var)
    return found


def _field_hint(section: str, key: str) -> str:
    section_model = Config.model_fields.get(section)
    if section_model is None or section_model.annotation is None:
        return ""
    fields = getattr(section_model.annotation, "model_fields", {})
    field = fields.get(key)
    if field is None:
        return ""
    default = field.default
    shown = f'"{default}"' if isinstance(default, (str, Path)) else repr(default).lower()
    return f"{field.description}; default {key} = {shown}"


def _known_keys(section: str) -> list[str]:
    section_model = Config.model_fields.get(section)
    if section_model is None or section_model.annotation is None:
        return list(Config.model_fields)
    return list(getattr(section_model.annotation, "model_fields", {}))


def _problems_from_validation(
    error: ValidationError, origin: dict[tuple[str, str], str], default_source: str
) -> list[ConfigProblem]:
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        section = loc[0] if loc else ""
        key = loc[1] if len(loc) > 1 else ""
        dotted = ".".join(loc) if loc else "(top level)"
        source = origin.get((section, key), default_source)
        if item["type"] == "extra_forbidden":
            candidates = _known_keys(section) if key else list(Config.model_fields)
            name = key or section
            close = difflib.get_close_matches(name, candidates, n=1)
            fix = (
                f"did you mean {close[0]!r}? " if close else ""
            ) + f"known keys here: {', '.join(candidates)}"
            problems.append(ConfigProblem(source, dotted, "unknown key", fix))
            continue
        message = str(item["msg"]).removeprefix("Value error, ")
        got = item.get("input")
        if not isinstance(got, dict):
            message = f"{message} (got {got!r})"
        hint = _field_hint(section, key) or "see docs/configuration.md"
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
                                f"remove it from the file and set {SECRET_ENV[(section, key)]} "
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
                "to use an existing broker",
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
