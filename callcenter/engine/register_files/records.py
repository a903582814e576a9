"""Tables of text into the register's records, and the records back into tables.

Reading checks every row by the register's own rules (``domain.register``), with a
``Known`` made of what the database holds and what the file adds, so a household may
name a station the same file brings. Each problem comes back with its sheet, row and
column. Rules that need the whole file (a code or serial twice, a carer's phone another
carer keeps) are checked here against the database and the file together.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, TypeVar

from callcenter.domain.register import (
    CarerRecord,
    ContactRecord,
    DeviceRecord,
    HouseholdPhoneRecord,
    HouseholdRecord,
    Known,
    Problem,
    ResidentRecord,
    RosterRecord,
    ShiftPatternRecord,
    StationRecord,
    carer_problems,
    device_problems,
    household_problems,
    roster_problems,
    shift_pattern_problems,
    station_problems,
)
from callcenter.engine.register_files import sheets as s
from callcenter.engine.register_files.files import FileProblem, Table

_R = TypeVar("_R")


@dataclass(frozen=True)
class Register:
    """The register, or the part of it a file holds, in the order of its sheets."""

    stations: tuple[StationRecord, ...] = ()
    shift_patterns: tuple[ShiftPatternRecord, ...] = ()
    carers: tuple[CarerRecord, ...] = ()
    households: tuple[HouseholdRecord, ...] = ()
    devices: tuple[DeviceRecord, ...] = ()
    roster: tuple[RosterRecord, ...] = ()


@dataclass(frozen=True)
class Existing:
    """What the database holds that a file's rows are checked against."""

    today: date
    stations: frozenset[str] = frozenset()
    shift_patterns: frozenset[str] = frozenset()
    households: frozenset[str] = frozenset()
    carers: frozenset[str] = frozenset()
    # Each carer's phone, by the carer's code.
    carer_phones: Mapping[str, str] = field(default_factory=dict)
    # Devices out of service keep their serial: a new device cannot take it.
    retired_serials: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Contents:
    """What a file holds as records, and every problem found reading it."""

    register: Register
    problems: tuple[FileProblem, ...]
    # Rows read, by sheet.
    rows: Mapping[str, int]


class _Cells:
    """One row's cells, read as the values their columns hold; a cell that cannot be
    read is a problem, and its value a stand-in the record's rules then say nothing of."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[tuple[str, str, dict[str, Any]]] = []

    def text(self, name: str) -> str:
        return self.values.get(name, "")

    def _read(self, name: str, reader: Callable[[str], _R], empty: _R, *, required: bool) -> _R:
        text = self.text(name)
        if not text:
            if required:
                self.problems.append((name, "required", {}))
            return empty
        try:
            return reader(text)
        except s.UnreadableCellError as refused:
            self.problems.append((name, refused.code, dict(refused.facts)))
            return empty

    def place(self, name: str) -> float | None:
        """A coordinate; left empty, None, which the register's rules call required."""
        found: float | None = self._read(name, s.read_float, None, required=False)
        return found

    def whole(self, name: str) -> int:
        return self._read(name, s.read_int, 0, required=True)

    def maybe_whole(self, name: str) -> int | None:
        found: int | None = self._read(name, s.read_int, None, required=False)
        return found

    def day(self, name: str) -> date:
        return self._read(name, s.read_date, date(2000, 1, 1), required=True)

    def maybe_day(self, name: str) -> date | None:
        found: date | None = self._read(name, s.read_date, None, required=False)
        return found

    def clock(self, name: str) -> time:
        return self._read(name, s.read_time, time(0, 0), required=True)

    def maybe_clock(self, name: str) -> time | None:
        found: time | None = self._read(name, s.read_time, None, required=False)
        return found

    def flag(self, name: str, default: bool) -> bool:
        return self._read(name, s.read_bool, default, required=False)

    def items(self, name: str) -> tuple[str, ...]:
        return s.read_list(self.text(name))

    def weekdays(self, name: str) -> tuple[int, ...]:
        days = []
        for item in s.read_list(self.text(name)):
            try:
                days.append(s.read_int(item))
            except s.UnreadableCellError as refused:
                self.problems.append((name, refused.code, dict(refused.facts)))
                return ()
        # In order, as the register keeps them (engine/register.py's pattern_record).
        return tuple(sorted(days))


def _station(c: _Cells) -> StationRecord:
    return StationRecord(
        code=c.text("code"),
        name=c.text("name"),
        address=c.text("address"),
        lat=c.place("lat"),
        lon=c.place("lon"),
        phone=c.text("phone"),
        backup_station=c.text("backup_station") or None,
    )


def _shift_pattern(c: _Cells) -> ShiftPatternRecord:
    return ShiftPatternRecord(
        code=c.text("code"),
        name=c.text("name"),
        starts_at=c.clock("starts_at"),
        duration_minutes=c.whole("duration_minutes"),
        weekdays=c.weekdays("weekdays"),
    )


def _carer(c: _Cells) -> CarerRecord:
    return CarerRecord(
        code=c.text("code"),
        name=c.text("name"),
        phone=c.text("phone"),
        station=c.text("station"),
        shift_pattern=c.text("shift_pattern"),
        language=c.text("language"),
        role=c.text("role"),
        skills=c.items("skills"),
        transport=c.text("transport"),
        active=c.flag("active", True),
    )


def _household(c: _Cells) -> HouseholdRecord:
    return HouseholdRecord(
        code=c.text("code"),
        address=c.text("address"),
        lat=c.place("lat"),
        lon=c.place("lon"),
        home_station=c.text("home_station"),
        backup_station=c.text("backup_station"),
        access_notes=c.text("access_notes"),
    )


def _resident(c: _Cells) -> ResidentRecord:
    return ResidentRecord(
        name=c.text("name"),
        birth_year=c.maybe_whole("birth_year"),
        birth_date=c.maybe_day("birth_date"),
        sex=c.text("sex"),
        mobility=c.text("mobility"),
        conditions=c.items("conditions"),
        medicines=c.items("medicines"),
        allergies=c.items("allergies"),
        doctor=c.text("doctor"),
        clinic=c.text("clinic"),
        clinic_phone=c.text("clinic_phone"),
        do_not_resuscitate=c.flag("do_not_resuscitate", False),
        hospital=c.text("hospital"),
        wishes=c.text("wishes"),
        speaks=c.text("speaks"),
        hearing=c.text("hearing"),
        sight=c.text("sight"),
        care_notes=c.text("care_notes"),
    )


def _contact(c: _Cells) -> ContactRecord:
    return ContactRecord(
        name=c.text("name"),
        relation=c.text("relation"),
        phone=c.text("phone"),
        phone_alt=c.text("phone_alt"),
        language=c.text("language"),
        holds_key=c.flag("holds_key", False),
        call_from=c.maybe_clock("call_from"),
        call_until=c.maybe_clock("call_until"),
        portal=c.flag("portal", True),
    )


def _phone(c: _Cells) -> HouseholdPhoneRecord:
    return HouseholdPhoneRecord(kind=c.text("kind"), number=c.text("number"), label=c.text("label"))


def _device(c: _Cells) -> DeviceRecord:
    return DeviceRecord(serial=c.text("serial"), kind=c.text("kind"), household=c.text("household"))


def _roster(c: _Cells) -> RosterRecord:
    return RosterRecord(
        carer=c.text("carer"),
        day=c.day("day"),
        on_duty=c.flag("on_duty", False) if c.text("on_duty") else _missing(c, "on_duty"),
        shift_pattern=c.text("shift_pattern") or None,
        note=c.text("note"),
    )


def _missing(c: _Cells, name: str) -> bool:
    c.problems.append((name, "required", {}))
    return False


@dataclass
class _Row:
    """A row read: its number, the record built from it and the cells that could not be
    read (the record's rules are not asked about those)."""

    number: int
    record: Any
    unread: set[str]


class _Reader:
    """Reads a file's tables into records, gathering every problem."""

    def __init__(self, tables: Mapping[str, Table], existing: Existing) -> None:
        self.tables = tables
        self.existing = existing
        self.problems: list[FileProblem] = []

    def rows(self, sheet: str, build: Callable[[_Cells], Any], key: str | None) -> list[_Row]:
        """The sheet's rows as records; a row whose ``key`` column repeats an earlier
        row's is a problem and left out."""
        table = self.tables.get(sheet)
        if table is None:
            return []
        found: list[_Row] = []
        seen: set[str] = set()
        for number, values in table.records():
            cells = _Cells(values)
            record = build(cells)
            for column, code, facts in cells.problems:
                self.problems.append(FileProblem(sheet, number, column, code, facts))
            if key is not None:
                value = _key(record, key)
                if value and value in seen:
                    self.problems.append(
                        FileProblem(sheet, number, key, "repeated", {"value": value})
                    )
                    continue
                seen.add(value)
            found.append(_Row(number, record, {column for column, _, _ in cells.problems}))
        return found

    def judge(
        self,
        sheet: str,
        row: _Row,
        problems: Iterable[Problem],
        where: Callable[[str], tuple[str, int, str]] | None = None,
    ) -> None:
        """Add the record's problems, each placed on its sheet, row and column."""
        for problem in problems:
            if where is None:
                place = (sheet, row.number, problem.field.split(".")[0])
                unread = row.unread
            else:
                place = where(problem.field)
                unread = set()
            if place[2] in unread:
                continue
            self.problems.append(FileProblem(*place, problem.code, problem.facts))


def _key(record: Any, key: str) -> str:
    if isinstance(record, RosterRecord):
        return f"{record.carer} {record.day.isoformat()}"
    value: str = getattr(record, key)
    return value


def read_register(tables: Mapping[str, Table], existing: Existing) -> Contents:
    """The records ``tables`` hold and every problem they have, by the register's rules
    with the database's ``existing`` records and the file's together."""
    reader = _Reader(tables, existing)
    stations = reader.rows(s.STATIONS.name, _station, "code")
    patterns = reader.rows(s.SHIFT_PATTERNS.name, _shift_pattern, "code")
    carers = reader.rows(s.CARERS.name, _carer, "code")
    households = reader.rows(s.HOUSEHOLDS.name, _household, "code")
    parts = {
        s.RESIDENTS.name: reader.rows(s.RESIDENTS.name, _with_household(_resident), None),
        s.CONTACTS.name: reader.rows(s.CONTACTS.name, _with_household(_contact), None),
        s.HOUSEHOLD_PHONES.name: reader.rows(
            s.HOUSEHOLD_PHONES.name, _with_household(_phone), None
        ),
    }
    devices = reader.rows(s.DEVICES.name, _device, "serial")
    roster = reader.rows(s.ROSTER.name, _roster, "day")
    _missing_sheets(tables, reader)

    def codes(rows: list[_Row]) -> frozenset[str]:
        return frozenset(row.record.code for row in rows)

    known = Known(
        today=existing.today,
        stations=existing.stations | codes(stations),
        shift_patterns=existing.shift_patterns | codes(patterns),
        households=existing.households | codes(households),
        carers=existing.carers | codes(carers),
    )
    for row in stations:
        reader.judge(s.STATIONS.name, row, station_problems(row.record, known))
    for row in patterns:
        reader.judge(s.SHIFT_PATTERNS.name, row, shift_pattern_problems(row.record, known))
    phones = {**existing.carer_phones, **{row.record.code: row.record.phone for row in carers}}
    holders: dict[str, set[str]] = defaultdict(set)
    for code, phone in phones.items():
        holders[phone].add(code)
    for row in carers:
        others = holders[row.record.phone] - {row.record.code}
        taken = frozenset({row.record.phone}) if others else frozenset()
        checked = dataclasses.replace(known, taken_phones=taken)
        reader.judge(s.CARERS.name, row, carer_problems(row.record, checked))
    whole = _households(reader, households, parts, known)
    for row in devices:
        checked = dataclasses.replace(known, taken_serials=existing.retired_serials)
        reader.judge(s.DEVICES.name, row, device_problems(row.record, checked))
    for row in roster:
        reader.judge(s.ROSTER.name, row, roster_problems(row.record, known))
    register = Register(
        stations=tuple(row.record for row in stations),
        shift_patterns=tuple(row.record for row in patterns),
        carers=tuple(row.record for row in carers),
        households=whole,
        devices=tuple(row.record for row in devices),
        roster=tuple(row.record for row in roster),
    )
    counted = {name: len(table.rows) for name, table in tables.items()}
    return Contents(register, tuple(reader.problems), counted)


def _with_household(build: Callable[[_Cells], Any]) -> Callable[[_Cells], Any]:
    def built(cells: _Cells) -> tuple[str, Any]:
        return cells.text("household"), build(cells)

    return built


def _missing_sheets(tables: Mapping[str, Table], reader: _Reader) -> None:
    """Households come whole: with their residents, contacts and phones, and those only
    with their households."""
    has_parts = [name for name in s.HOUSEHOLD_PARTS if name in tables]
    if s.HOUSEHOLDS.name in tables:
        missing = [name for name in s.HOUSEHOLD_PARTS if name not in tables]
    else:
        missing = [s.HOUSEHOLDS.name] if has_parts else []
    for name in missing:
        reader.problems.append(FileProblem(name, None, "", "missing_sheet"))


_PART_SHEETS = {
    "residents": s.RESIDENTS.name,
    "contacts": s.CONTACTS.name,
    "phones": s.HOUSEHOLD_PHONES.name,
}


def _households(
    reader: _Reader,
    households: list[_Row],
    parts: Mapping[str, list[_Row]],
    known: Known,
) -> tuple[HouseholdRecord, ...]:
    """Each household with its residents, contacts and phones (in the order of their
    rows), judged whole by the household's rules."""
    rows_of: dict[str, dict[str, list[_Row]]] = {
        row.record.code: {sheet: [] for sheet in s.HOUSEHOLD_PARTS} for row in households
    }
    for sheet, rows in parts.items():
        for row in rows:
            code, _record = row.record
            if code not in rows_of:
                problem = FileProblem(
                    sheet, row.number, "household", "household_not_in_file", {"code": code}
                )
                reader.problems.append(problem)
                continue
            rows_of[code][sheet].append(row)
    whole = []
    for row in households:
        mine = rows_of[row.record.code]
        record = dataclasses.replace(
            row.record,
            residents=tuple(part.record[1] for part in mine[s.RESIDENTS.name]),
            contacts=tuple(part.record[1] for part in mine[s.CONTACTS.name]),
            phones=tuple(part.record[1] for part in mine[s.HOUSEHOLD_PHONES.name]),
        )
        unread = {
            (sheet, part.number, column)
            for sheet, rows in mine.items()
            for part in rows
            for column in part.unread
        } | {(s.HOUSEHOLDS.name, row.number, column) for column in row.unread}

        def where(name: str, row: _Row = row, mine: dict[str, list[_Row]] = mine) -> Any:
            first, _, rest = name.partition(".")
            if first in _PART_SHEETS and rest:
                index, _, column = rest.partition(".")
                sheet = _PART_SHEETS[first]
                return sheet, mine[sheet][int(index) - 1].number, column.split(".")[0]
            column = "code" if first == "residents" else first
            return s.HOUSEHOLDS.name, row.number, column

        found = [
            problem
            for problem in household_problems(record, known)
            if where(problem.field) not in unread
        ]
        reader.judge(s.HOUSEHOLDS.name, row, found, where)
        whole.append(record)
    return tuple(whole)
