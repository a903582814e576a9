"""The register's records as the file's tables of text: the export, and the template's
example rows and notes (the reverse of ``records.read_register``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from callcenter.domain.register import HouseholdRecord
from callcenter.engine.register_files import sheets as s
from callcenter.engine.register_files.records import Register


def _row(spec: s.SheetSpec, values: Mapping[str, str]) -> list[str]:
    return [values[name] for name in spec.names]


def tables_of(register: Register) -> dict[str, list[list[str]]]:
    """The register as the file's sheets: each sheet's header row, then its rows."""
    out: dict[str, list[list[str]]] = {spec.name: [list(spec.names)] for spec in s.SHEETS}

    def add(spec: s.SheetSpec, values: Mapping[str, str]) -> None:
        out[spec.name].append(_row(spec, values))

    for station in register.stations:
        add(
            s.STATIONS,
            {
                "code": station.code,
                "name": station.name,
                "address": station.address,
                "lat": s.number(station.lat),
                "lon": s.number(station.lon),
                "phone": station.phone,
                "backup_station": station.backup_station or "",
            },
        )
    for pattern in register.shift_patterns:
        add(
            s.SHIFT_PATTERNS,
            {
                "code": pattern.code,
                "name": pattern.name,
                "starts_at": s.clock(pattern.starts_at),
                "duration_minutes": str(pattern.duration_minutes),
                "weekdays": s.listed(pattern.weekdays),
            },
        )
    for carer in register.carers:
        add(
            s.CARERS,
            {
                "code": carer.code,
                "name": carer.name,
                "phone": carer.phone,
                "station": carer.station,
                "shift_pattern": carer.shift_pattern,
                "language": carer.language,
                "role": str(carer.role),
                "skills": s.listed(carer.skills),
                "transport": str(carer.transport),
                "active": s.yes_no(carer.active),
            },
        )
    for household in register.households:
        _household_rows(household, add)
    for device in register.devices:
        add(
            s.DEVICES,
            {"serial": device.serial, "kind": device.kind, "household": device.household},
        )
    for duty in register.roster:
        add(
            s.ROSTER,
            {
                "carer": duty.carer,
                "day": duty.day.isoformat(),
                "on_duty": s.yes_no(duty.on_duty),
                "shift_pattern": duty.shift_pattern or "",
                "note": duty.note,
            },
        )
    return out


def _household_rows(
    household: HouseholdRecord, add: Callable[[s.SheetSpec, Mapping[str, str]], None]
) -> None:
    code = household.code
    add(
        s.HOUSEHOLDS,
        {
            "code": code,
            "address": household.address,
            "lat": s.number(household.lat),
            "lon": s.number(household.lon),
            "home_station": household.home_station,
            "backup_station": household.backup_station,
            "access_notes": household.access_notes,
        },
    )
    for r in household.residents:
        add(
            s.RESIDENTS,
            {
                "household": code,
                "name": r.name,
                "birth_year": "" if r.birth_year is None else str(r.birth_year),
                "birth_date": "" if r.birth_date is None else r.birth_date.isoformat(),
                "sex": str(r.sex),
                "mobility": str(r.mobility),
                "conditions": s.listed(r.conditions),
                "medicines": s.listed(r.medicines),
                "allergies": s.listed(r.allergies),
                "doctor": r.doctor,
                "clinic": r.clinic,
                "clinic_phone": r.clinic_phone,
                "do_not_resuscitate": s.yes_no(r.do_not_resuscitate),
                "hospital": r.hospital,
                "wishes": r.wishes,
                "speaks": r.speaks,
                "hearing": str(r.hearing),
                "sight": str(r.sight),
                "care_notes": r.care_notes,
            },
        )
    for c in household.contacts:
        add(
            s.CONTACTS,
            {
                "household": code,
                "name": c.name,
                "relation": c.relation,
                "phone": c.phone,
                "phone_alt": c.phone_alt,
                "language": c.language,
                "holds_key": s.yes_no(c.holds_key),
                "call_from": s.clock(c.call_from),
                "call_until": s.clock(c.call_until),
                "portal": s.yes_no(c.portal),
            },
        )
    for p in household.phones:
        add(
            s.HOUSEHOLD_PHONES,
            {"household": code, "kind": str(p.kind), "number": p.number, "label": p.label},
        )


def example_tables() -> dict[str, list[list[str]]]:
    """The template's sheets: each header and one example row, which import together."""
    return {
        spec.name: [
            list(spec.names),
            [c.example for c in spec.columns],
            *(list(row) for row in spec.more_examples),
        ]
        for spec in s.SHEETS
    }


def notes_rows() -> list[list[str]]:
    """The template's notes sheet: every column of every sheet, explained in zh and en."""
    rows = [["sheet", "column", "说明", "notes"]]
    rows.append(
        [
            "",
            "",
            f"每张表第一行是列名，不要改动。列表在一个格子里用 {s.SEPARATOR} 分隔。"
            "按代码（设备按序列号）新增或更新；文件中没有的记录保持不变。"
            "先“检查”（dry run）：有任何问题，什么都不会写入。",
            f"The first row of each sheet names its columns; keep it. A list is one cell, "
            f"its items separated by {s.SEPARATOR}. A row adds or updates the record with its "
            "code (a device: its serial); records not in the file are left as they are. "
            "Check first (dry run): while any problem is found, nothing is written.",
        ]
    )
    for spec in s.SHEETS:
        rows.append([spec.name, "", spec.zh, spec.en])
        rows.extend([spec.name, c.name, c.zh, c.en] for c in spec.columns)
    return rows


def ordered(register: Register) -> Register:
    """The register in the export's order: each kind by its code, serial or (carer,
    day); a household's residents, contacts and phones as they are."""
    return Register(
        stations=tuple(sorted(register.stations, key=lambda r: r.code)),
        shift_patterns=tuple(sorted(register.shift_patterns, key=lambda r: r.code)),
        carers=tuple(sorted(register.carers, key=lambda r: r.code)),
        households=tuple(sorted(register.households, key=lambda r: r.code)),
        devices=tuple(sorted(register.devices, key=lambda r: (r.household, r.serial))),
        roster=tuple(sorted(register.roster, key=lambda r: (r.carer, r.day))),
    )
