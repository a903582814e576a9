"""The ground-truth log: every event the simulator generated, and when it was acknowledged.

One JSON object per line, appended as things happen, so a killed simulator still
leaves a usable log (at worst a truncated last line, which the reader skips).
Records, told apart by ``"record"``:

- ``run``: ``boot``, ``started_at`` (ISO 8601), ``prefix``, ``devices``, ``connections``
- ``event``: ``boot``, ``serial``, ``household``, ``id``, ``kind``, ``ts`` (device time,
  ms since the epoch), ``duplicate`` (true if it is to be published twice on purpose),
  ``storm`` (true for a storm's press; left out otherwise)
- ``ack``: ``serial``, ``id``, ``acked_ts`` (ms since the epoch, first PUBACK)
- ``duplicate``: ``serial``, ``id``, ``sent_ts`` (the forced second copy was acknowledged)
- ``summary``: the run's final counters, as printed by the CLI

Several runs may append to one file; event ids never repeat across runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from device_sim.device import OutboxEvent

EventKey = tuple[str, str]  # (serial, event id)


class GroundTruthLog:
    """Appends records to the ground-truth file; one line each, flushed per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Line-buffered: a reader (or a crash) sees every completed line.
        self._file: IO[str] | None = path.open("a", encoding="utf-8", buffering=1)

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def run_started(self, *, boot_id: str, prefix: str, devices: int, connections: int) -> None:
        self._write(
            {
                "record": "run",
                "boot": boot_id,
                "started_at": datetime.now(UTC).isoformat(),
                "prefix": prefix,
                "devices": devices,
                "connections": connections,
            }
        )

    def event_generated(self, event: OutboxEvent, *, boot_id: str) -> None:
        record: dict[str, Any] = {
            "record": "event",
            "boot": boot_id,
            "serial": event.serial,
            "household": event.household,
            "id": event.event_id,
            "kind": event.kind.value,
            "ts": event.ts_ms,
            "duplicate": event.duplicate,
        }
        if event.storm:
            record["storm"] = True
        self._write(record)

    def acknowledged(self, event: OutboxEvent, *, acked_ts_ms: int) -> None:
        self._write(
            {"record": "ack", "serial": event.serial, "id": event.event_id, "acked_ts": acked_ts_ms}
        )

    def duplicate_sent(self, event: OutboxEvent, *, sent_ts_ms: int) -> None:
        self._write(
            {
                "record": "duplicate",
                "serial": event.serial,
                "id": event.event_id,
                "sent_ts": sent_ts_ms,
            }
        )

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        self._write({"record": "summary", **summary})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class GroundTruthEvent:
    """One generated event as the log remembers it."""

    serial: str
    household: str
    event_id: str
    kind: str
    ts_ms: int
    boot_id: str
    duplicate_requested: bool
    acked_ts_ms: int | None = None
    duplicates_sent: int = 0
    storm: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.acked_ts_ms is not None


@dataclass(frozen=True)
class GroundTruth:
    """Everything a ground-truth log says was generated, keyed by (serial, event id)."""

    events: Mapping[EventKey, GroundTruthEvent]
    runs: int

    @property
    def sent(self) -> frozenset[EventKey]:
        """Every (serial, event id) generated, acknowledged or not."""
        return frozenset(self.events)

    @property
    def acknowledged(self) -> int:
        return sum(1 for event in self.events.values() if event.acknowledged)

    @property
    def pending(self) -> int:
        return len(self.events) - self.acknowledged

    @property
    def pending_events(self) -> list[GroundTruthEvent]:
        return [event for event in self.events.values() if not event.acknowledged]

    @property
    def duplicates_sent(self) -> int:
        return sum(event.duplicates_sent for event in self.events.values())

    @property
    def storm_events(self) -> list[GroundTruthEvent]:
        """The storm's presses, in the order they were generated."""
        return [event for event in self.events.values() if event.storm]


class GroundTruthError(Exception):
    """A ground-truth log that cannot be read; says which line and why."""

    def __init__(self, path: Path, line: int, detail: str) -> None:
        self.path = path
        self.line = line
        self.detail = detail
        super().__init__(f"{path}:{line}: {detail}")


def read_ground_truth(path: Path) -> GroundTruth:
    """Read a ground-truth log back; a truncated last line (a killed run) is skipped."""
    events: dict[EventKey, GroundTruthEvent] = {}
    runs = 0
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # no newline after it: the writer was cut off
                break
            raise GroundTruthError(path, number, "not JSON") from None
        try:
            kind = record["record"]
            if kind == "run":
                runs += 1
            elif kind == "event":
                key = (record["serial"], record["id"])
                events[key] = GroundTruthEvent(
                    serial=record["serial"],
                    household=record["household"],
                    event_id=record["id"],
                    kind=record["kind"],
                    ts_ms=record["ts"],
                    boot_id=record["boot"],
                    duplicate_requested=record["duplicate"],
                    storm=bool(record.get("storm", False)),
                )
            elif kind == "ack":
                key = (record["serial"], record["id"])
                events[key] = replace(events[key], acked_ts_ms=record["acked_ts"])
            elif kind == "duplicate":
                key = (record["serial"], record["id"])
                events[key] = replace(events[key], duplicates_sent=events[key].duplicates_sent + 1)
        except KeyError as exc:
            raise GroundTruthError(path, number, f"missing or unknown {exc}") from None
        except TypeError:
            raise GroundTruthError(path, number, "not a JSON object") from None
    return GroundTruth(events=events, runs=runs)


@dataclass(frozen=True)
class LossCheck:
    """A ground-truth log held against what a store kept: every acknowledged event must
    be there exactly once; a pending one may or may not be (its PUBACK may have been lost)."""

    generated: int
    acknowledged: int
    # Acknowledged by the broker, never stored.
    lost: tuple[GroundTruthEvent, ...]
    # Stored more than once.
    doubled: tuple[GroundTruthEvent, ...]
    # Stored, but not in the log: another run's events, or a bug.
    unknown: tuple[EventKey, ...]
    # Pending at the end of the run, yet stored after all.
    pending_stored: int

    @property
    def clean(self) -> bool:
        """True when nothing acknowledged was lost or doubled and nothing unknown appeared."""
        return not (self.lost or self.doubled or self.unknown)

    def as_dict(self) -> dict[str, int]:
        return {
            "events_generated": self.generated,
            "events_acknowledged": self.acknowledged,
            "events_lost": len(self.lost),
            "events_doubled": len(self.doubled),
            "events_unknown": len(self.unknown),
            "pending_stored": self.pending_stored,
        }


def check_losses(truth: GroundTruth, stored: Mapping[EventKey, int]) -> LossCheck:
    """Compare the log with ``stored``: how many copies of each (serial, event id) a store
    holds (for example ``device_events`` of the runs' boots)."""
    lost: list[GroundTruthEvent] = []
    doubled: list[GroundTruthEvent] = []
    pending_stored = 0
    for key, event in truth.events.items():
        copies = stored.get(key, 0)
        if copies > 1:
            doubled.append(event)
        if event.acknowledged and copies == 0:
            lost.append(event)
        if not event.acknowledged and copies:
            pending_stored += 1
    return LossCheck(
        generated=len(truth.events),
        acknowledged=truth.acknowledged,
        lost=tuple(lost),
        doubled=tuple(doubled),
        unknown=tuple(sorted(key for key in stored if key not in truth.events)),
        pending_stored=pending_stored,
    )
