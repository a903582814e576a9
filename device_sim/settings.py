"""What a simulation run is told: broker, pace, mix of events, limits.

Everything a person can get wrong here raises ``SimulatorConfigError`` with a message
that says what to change, before any connection is opened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from callcenter.brokers import BrokerAddress, parse_addresses
from callcenter.domain.events import EventKind


class SimulatorConfigError(Exception):
    """A simulator setting or device list that cannot work; ``detail`` says what to fix."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


# Mostly emergency presses from the wearable buttons, as a district's log looks.
DEFAULT_KIND_WEIGHTS: Mapping[EventKind, float] = MappingProxyType(
    {
        EventKind.EMERGENCY_PRESS: 70.0,
        EventKind.SERVICE_REQUEST: 12.0,
        EventKind.CANCEL: 8.0,
        EventKind.FALL_DETECTED: 6.0,
        EventKind.LOW_BATTERY: 4.0,
    }
)


def parse_kind_weights(text: str) -> dict[EventKind, float]:
    """Parse ``"emergency_press=70,cancel=5"``; kinds left out get weight 0."""
    weights = dict.fromkeys(EventKind, 0.0)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise SimulatorConfigError(f"kind weight {item!r} is not of the form kind=number")
        try:
            kind = EventKind(name.strip())
        except ValueError:
            raise SimulatorConfigError(
                f"unknown event kind {name.strip()!r}; expected one of "
                + ", ".join(k.value for k in EventKind)
            ) from None
        try:
            weight = float(value)
        except ValueError:
            raise SimulatorConfigError(
                f"weight of {kind.value} is not a number: {value!r}"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise SimulatorConfigError(f"weight of {kind.value} must be >= 0, got {value!r}")
        weights[kind] = weight
    if sum(weights.values()) <= 0:
        raise SimulatorConfigError("at least one event kind needs a weight above 0")
    return weights


def parse_brokers(text: str, default_port: int) -> tuple[BrokerAddress, ...]:
    """Parse ``"mqtt1:1883,mqtt2"`` for ``--broker-host`` (the port ``default_port``
    where left out)."""
    if not 0 < default_port < 65536:
        raise SimulatorConfigError(f"broker port {default_port} is not a TCP port (1-65535)")
    try:
        return parse_addresses(text.split(","), default_port)
    except ValueError as error:
        raise SimulatorConfigError(f"--broker-host {text!r}: {error}") from None


def parse_storm(text: str) -> tuple[int, float]:
    """Parse ``"10000:60"`` (presses, seconds) for ``--storm``."""
    count, sep, seconds = text.partition(":")
    try:
        presses = int(count)
        spread = float(seconds) if sep else math.nan
    except ValueError:
        presses, spread = 0, math.nan
    if presses < 1 or not math.isfinite(spread) or spread <= 0:
        raise SimulatorConfigError(
            f"storm {text!r} is not COUNT:SECONDS with COUNT >= 1 and SECONDS > 0, e.g. 10000:60"
        )
    return presses, spread


@dataclass(frozen=True)
class SimulationSettings:
    """How to run the simulated district; defaults suit a local demo."""

    # The brokers each device tries in turn, as the server's clients do (brokers.py).
    brokers: tuple[BrokerAddress, ...] = (BrokerAddress("127.0.0.1", 1883),)
    prefix: str = "eldercare"
    # Presses across the whole district, events per second (Poisson); 0 = none.
    press_rate: float = 0.2
    kind_weights: Mapping[EventKind, float] = field(default_factory=lambda: DEFAULT_KIND_WEIGHTS)
    # Share of events published twice with the same id on purpose.
    duplicate_rate: float = 0.0
    heartbeat_interval_s: float = 60.0  # 0 = no heartbeats
    duration_s: float | None = None
    max_events: int | None = None
    # A storm: this many emergency presses, each from a different household's call
    # button, evenly spread over storm_seconds, starting storm_after_s after every
    # device is online (besides the Poisson presses); 0 = no storm.
    storm_presses: int = 0
    storm_seconds: float = 60.0
    storm_after_s: float = 0.0
    drain_timeout_s: float = 30.0
    # None: one MQTT connection per device, client id = serial, last will per device.
    connections: int | None = None
    # Each device's broker password by serial (user name = serial), as the server issued
    # them (broker.device_logins); empty: devices connect without a login. Per-device
    # connections only: a shared connection cannot speak as many devices.
    logins: Mapping[str, str] = field(default_factory=dict, repr=False)
    connect_concurrency: int = 64
    ground_truth: Path | None = None
    seed: int | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    keepalive_s: int = 60
    # aiomqtt's timeout for connect, subscribe and status publishes.
    timeout_s: float = 10.0
    max_inflight_per_connection: int = 64
    report_interval_s: float = 10.0
    # How long a graceful close may take before the remaining connections are dropped;
    # raised to half a millisecond per device for large districts.
    close_timeout_s: float = 10.0

    def problems(self) -> list[str]:
        """Every setting that cannot work, as sentences a person can act on."""
        found: list[str] = []
        if not self.brokers:
            found.append("no broker to connect to")
        for broker in self.brokers:
            if not 0 < broker.port < 65536:
                found.append(f"broker port {broker.port} is not a TCP port (1-65535)")
        if len(set(self.brokers)) < len(self.brokers):
            found.append("a broker is named twice")
        if self.logins and self.connections is not None:
            found.append(
                "devices with broker logins connect one each: leave out the shared "
                "connections (--connections), or run against a broker without device logins"
            )
        if not self.prefix or any(c in self.prefix for c in "/+#"):
            found.append(f"topic prefix {self.prefix!r} must be non-empty without / + #")
        if not math.isfinite(self.press_rate) or self.press_rate < 0:
            found.append(f"press rate must be >= 0 events/s, got {self.press_rate}")
        if sum(self.kind_weights.values()) <= 0 or any(w < 0 for w in self.kind_weights.values()):
            found.append("event kind weights must be >= 0 with at least one above 0")
        if not 0 <= self.duplicate_rate <= 1:
            found.append(f"duplicate rate must be between 0 and 1, got {self.duplicate_rate}")
        if self.heartbeat_interval_s < 0:
            found.append("heartbeat interval must be >= 0 seconds (0 turns heartbeats off)")
        if self.duration_s is not None and self.duration_s <= 0:
            found.append(f"duration must be > 0 seconds, got {self.duration_s}")
        if self.max_events is not None and self.max_events <= 0:
            found.append(f"event limit must be > 0, got {self.max_events}")
        if self.max_events is not None and self.press_rate <= 0 and self.storm_presses <= 0:
            found.append(
                "an event limit needs a press rate above 0 or a storm, or it is never reached"
            )
        if self.storm_presses < 0:
            found.append(f"storm presses must be >= 0, got {self.storm_presses}")
        if self.storm_presses and not (
            math.isfinite(self.storm_seconds) and self.storm_seconds > 0
        ):
            found.append(f"a storm must last > 0 seconds, got {self.storm_seconds}")
        if not math.isfinite(self.storm_after_s) or self.storm_after_s < 0:
            found.append(f"storm delay must be >= 0 seconds, got {self.storm_after_s}")
        if self.drain_timeout_s < 0:
            found.append("drain timeout must be >= 0 seconds")
        if self.connections is not None and self.connections < 1:
            found.append(f"connections must be >= 1, got {self.connections}")
        if self.connect_concurrency < 1:
            found.append("connect concurrency must be >= 1")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            found.append("reconnect backoff needs 0 < initial <= max")
        if self.keepalive_s < 1:
            found.append("keepalive must be >= 1 second")
        if self.timeout_s <= 0 or self.close_timeout_s <= 0:
            found.append("timeouts must be > 0 seconds")
        if self.max_inflight_per_connection < 1:
            found.append("in-flight limit per connection must be >= 1")
        if self.report_interval_s <= 0:
            found.append("report interval must be > 0 seconds")
        return found

    def check(self) -> None:
        """Raise SimulatorConfigError listing every problem, if there is any."""
        found = self.problems()
        if found:
            raise SimulatorConfigError("; ".join(found))
