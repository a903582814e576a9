"""What an import does to each record, decided from the file's records and the
database's before anything is written: a record is found by its code (a device by its
serial, a roster day by its carer and date); one that is not there is added, one that
differs is updated, one the same is left untouched and not audited. Records the file
does not hold are left as they are. A household comes whole: its contacts and phones
become the file's, in the file's order; its residents are matched by name, so each keeps
its id and its welfare calls, and a resident the file does not name stays.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callcenter.domain.register import HouseholdRecord, ResidentRecord
from callcenter.engine.register import record_json
from callcenter.engine.register_files.records import Register

# The kinds of record an import changes, in the order it writes them.
KINDS = ("stations", "shift_patterns", "carers", "households", "devices", "roster")


@dataclass(frozen=True)
class Change:
    """One record an import adds (``before`` None) or changes."""

    kind: str
    key: str
    before: Any
    after: Any
    # As the audit log keeps them, made with the plan, before the import takes its lock.
    before_json: dict[str, Any] | None = None
    after_json: dict[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    # Per kind: records the file holds, added, updated, the same.
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def _key(kind: str, record: Any) -> str:
    if kind == "devices":
        return str(record.serial)
    if kind == "roster":
        return f"{record.carer} {record.day.isoformat()}"
    return str(record.code)


def merged_household(before: HouseholdRecord | None, after: HouseholdRecord) -> HouseholdRecord:
    """The household as an import leaves it: the file's fields, contacts and phones;
    its residents matched by name (the n-th of a name in the file is the n-th of that
    name stored), each matched one taking the stored one's id and place, those the file
    does not name kept, new ones (no id yet) last."""
    if before is None:
        return after
    places: dict[str, list[int]] = defaultdict(list)
    for place, resident in enumerate(before.residents):
        places[resident.name].append(place)
    residents: list[ResidentRecord] = list(before.residents)
    for resident in after.residents:
        free = places.get(resident.name)
        if free:
            place = free.pop(0)
            residents[place] = dataclasses.replace(resident, id=before.residents[place].id)
        else:
            residents.append(resident)
    return dataclasses.replace(after, residents=tuple(residents))


def plan(incoming: Register, stored: Register) -> Plan:
    """What importing ``incoming`` into ``stored`` changes, record by record."""
    changes: list[Change] = []
    counts: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        have = {_key(kind, record): record for record in getattr(stored, kind)}
        tally = {"in_file": 0, "added": 0, "updated": 0, "unchanged": 0}
        for record in getattr(incoming, kind):
            key = _key(kind, record)
            before = have.get(key)
            after = merged_household(before, record) if kind == "households" else record
            tally["in_file"] += 1
            if before == after:
                tally["unchanged"] += 1
                continue
            tally["added" if before is None else "updated"] += 1
            changes.append(
                Change(kind, key, before, after, as_json(kind, before), as_json(kind, after))
            )
        counts[kind] = tally
    return Plan(tuple(changes), counts)


def as_json(kind: str, record: Any) -> dict[str, Any] | None:
    """A record as the audit log keeps it, as the register's own changes write it
    (engine/register.py): a device with its ``retired_at``, which an import never sets."""
    if record is None:
        return None
    found = record_json(record)
    return {**found, "retired_at": None} if kind == "devices" else found
