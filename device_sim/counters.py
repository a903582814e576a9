"""What a simulation has done so far: a mutable tally inside, frozen snapshots outside."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Tally:
    """Counters the running simulation updates; read them through a snapshot."""

    events_generated: int = 0
    events_acknowledged: int = 0
    # Storm presses generated so far (also counted in events_generated).
    storm_presses: int = 0
    duplicates_sent: int = 0
    # Events published again after an earlier attempt got no PUBACK.
    republished: int = 0
    # Successful connections after a link's first one.
    reconnects: int = 0
    connection_losses: int = 0
    connect_failures: int = 0
    heartbeats_sent: int = 0
    statuses_sent: int = 0
    commands_received: int = 0


@dataclass(frozen=True)
class SimulationCounters:
    """A snapshot of a simulation's counters."""

    devices: int
    connections: int
    devices_online: int
    events_generated: int
    events_acknowledged: int
    events_pending: int
    storm_presses: int
    duplicates_sent: int
    republished: int
    reconnects: int
    connection_losses: int
    connect_failures: int
    heartbeats_sent: int
    statuses_sent: int
    commands_received: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SimulationSummary:
    """How a run ended: its counters, why it stopped, and how its devices were connected."""

    boot_id: str
    stopped_by: str  # "duration", "events", "stop" (API or signal)
    elapsed_s: float
    # "per_device": every device its own connection and last will;
    # "per_connection": devices share connections, one last will per connection.
    last_will: str
    counters: SimulationCounters

    def as_dict(self) -> dict[str, Any]:
        """Flat, JSON-ready: the CLI prints this as its final line."""
        return {
            "boot_id": self.boot_id,
            "stopped_by": self.stopped_by,
            "elapsed_s": round(self.elapsed_s, 3),
            "last_will": self.last_will,
            **self.counters.as_dict(),
        }
