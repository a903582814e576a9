"""The district's register as the centre keeps it: what each record may hold, and the
one set of rules every change is checked by, whoever makes it (the administration
pages, the API, a spreadsheet import).

A rule that fails is a ``Problem``: the field it is about, a code and the facts, said
in the reader's language by ``say``. The pages show what the server says, so a rule and
its words live here only. Rules that need the rest of the register (does this station
exist, is this serial taken) read it from a ``Known``, which the engine fills from the
database and an import from the file being read.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time

from callcenter.domain.geo import Transport
from callcenter.domain.phones import E164_HOW, PhoneKind, is_e164

# A household code or a serial is a level of a device's MQTT topics (docs/protocol.md).
_TOPIC_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A station's, carer's or shift pattern's code: short, plain, as on the rota.
_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")


def is_topic_name(text: str) -> bool:
    """Whether ``text`` may be a household code or serial: one level of a device topic."""
    return _TOPIC_NAME.fullmatch(text) is not None


class DeviceKind(enum.StrEnum):
    BASE_UNIT = "base_unit"
    CALL_BUTTON = "call_button"
    PAGER = "pager"


class Mobility(enum.StrEnum):
    INDEPENDENT = "independent"
    WALKING_AID = "walking_aid"
    WHEELCHAIR = "wheelchair"
    BEDBOUND = "bedbound"


class Sex(enum.StrEnum):
    UNKNOWN = ""
    FEMALE = "female"
    MALE = "male"


class Sense(enum.StrEnum):
    """How well a resident hears, or sees."""

    UNKNOWN = ""
    GOOD = "good"
    IMPAIRED = "impaired"
    NONE = "none"  # deaf, or blind


class CarerRole(enum.StrEnum):
    CARER = "carer"
    STATION_LEAD = "station_lead"


LANGUAGES = ("zh", "en")
# Lengths as the tables keep them (store/models.py).
NAME_MAX = 80
ADDRESS_MAX = 240
NOTE_MAX = 2000
LIST_ITEMS_MAX = 30
LIST_ITEM_MAX = 120
FIRST_BIRTH_YEAR = 1890


# --- the records -----------------------------------------------------------------------


@dataclass(frozen=True)
class HouseholdPhoneRecord:
    kind: str
    number: str
    label: str = ""


@dataclass(frozen=True)
class ResidentRecord:
    name: str
    # The register's number for the resident (welfare calls name it); None: a new one.
    id: int | None = None
    birth_year: int | None = None
    birth_date: date | None = None
    sex: str = ""
    mobility: str = Mobility.INDEPENDENT
    conditions: tuple[str, ...] = ()
    medicines: tuple[str, ...] = ()
    allergies: tuple[str, ...] = ()
    doctor: str = ""
    clinic: str = ""
    clinic_phone: str = ""
    do_not_resuscitate: bool = False
    hospital: str = ""
    wishes: str = ""
    speaks: str = ""
    hearing: str = ""
    sight: str = ""
    care_notes: str = ""

    @property
    def year(self) -> int | None:
        """The birth year kept: the birth date's when it is known."""
        return self.birth_date.year if self.birth_date is not None else self.birth_year


@dataclass(frozen=True)
class ContactRecord:
    """One of a household's contacts; their order in the list is the order to call."""

    name: str
    relation: str
    phone: str
    phone_alt: str = ""
    language: str = "zh"
    holds_key: bool = False
    call_from: time | None = None
    call_until: time | None = None
    portal: bool = True


@dataclass(frozen=True)
class HouseholdRecord:
    code: str
    address: str
    lat: float | None  # None: not given (a form left empty)
    lon: float | None
    home_station: str
    backup_station: str
    access_notes: str = ""
    phones: tuple[HouseholdPhoneRecord, ...] = ()
    residents: tuple[ResidentRecord, ...] = ()
    contacts: tuple[ContactRecord, ...] = ()


@dataclass(frozen=True)
class DeviceRecord:
    serial: str
    kind: str
    household: str


@dataclass(frozen=True)
class StationRecord:
    code: str
    name: str
    address: str
    lat: float | None  # None: not given (a form left empty)
    lon: float | None
    phone: str
    backup_station: str | None = None


@dataclass(frozen=True)
class CarerRecord:
    code: str
    name: str
    phone: str
    station: str
    shift_pattern: str
    language: str = "zh"
    role: str = CarerRole.CARER
    skills: tuple[str, ...] = ()
    transport: str = Transport.WALK
    active: bool = True


@dataclass(frozen=True)
class ShiftPatternRecord:
    code: str
    name: str
    starts_at: time
    duration_minutes: int
    weekdays: tuple[int, ...]


@dataclass(frozen=True)
class RosterRecord:
    """One carer's duty on one date: a day off, or a duty on a named pattern."""

    carer: str
    day: date
    on_duty: bool
    shift_pattern: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Known:
    """What the rest of the register holds, for the rules that look beyond one record.

    ``taken_*`` are the codes, serials and numbers other records already use (the record
    being edited leaves its own out). ``today`` is the district's date, for birth dates.
    """

    today: date
    stations: frozenset[str] = frozenset()
    shift_patterns: frozenset[str] = frozenset()
    households: frozenset[str] = frozenset()
    carers: frozenset[str] = frozenset()
    taken_codes: frozenset[str] = frozenset()
    taken_serials: frozenset[str] = frozenset()
    taken_phones: frozenset[str] = frozenset()


# --- problems and their words ----------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One rule a record breaks: where (a field, e.g. ``residents.1.birth_date``), what
    (a code) and the facts its words need."""

    field: str
    code: str
    facts: Mapping[str, str | int | float] = dataclasses.field(default_factory=dict)

    def said(self, language: str) -> str:
        return say(self, language)


_WORDS: dict[str, tuple[str, str]] = {
    "required": ("必填", "is required"),
    "too_long": ("太长：最多 {max} 个字", "is too long: at most {max} characters"),
    "too_many": ("太多：最多 {max} 项", "has too many items: at most {max}"),
    "not_e164": (
        "不是国际格式的号码：请写“+”、国家代码和号码，不带空格或横线，例如 +8613912345678",
        "is not a phone number in international form: write " + E164_HOW,
    ),
    "not_topic_name": (
        "只能用 1-{max} 个字母、数字、_ 或 -",
        "may hold only 1-{max} of A-Z a-z 0-9 _ -",
    ),
    "one_of": ("须是以下之一：{allowed}", "must be one of: {allowed}"),
    "out_of_range": ("须在 {min} 到 {max} 之间", "must be between {min} and {max}"),
    "unknown_station": ("没有代码为 {code} 的服务站", "names no station: {code}"),
    "unknown_shift_pattern": ("没有代码为 {code} 的班次", "names no shift pattern: {code}"),
    "unknown_household": ("没有代码为 {code} 的住户", "names no household: {code}"),
    "unknown_carer": ("没有代码为 {code} 的护理员", "names no carer: {code}"),
    "taken": ("{value} 已被使用", "{value} is already in use"),
    "repeated": ("{value} 在此出现了不止一次", "{value} appears more than once here"),
    "same_as_home": ("备用服务站不能与所属服务站相同", "must differ from the home station"),
    "same_as_own": ("不能是本站自己", "cannot be the station itself"),
    "in_future": ("不能晚于今天", "cannot be later than today"),
    "year_mismatch": (
        "出生年份 {year} 与出生日期不符",
        "birth year {year} does not match the birth date",
    ),
    "hours_half_set": (
        "可呼叫时段须同时写开始和结束，或都不写",
        "give both ends of the hours they may be called, or neither",
    ),
    "no_residents": ("至少要有一位居民", "needs at least one resident"),
    "no_weekdays": ("至少要有一天", "needs at least one weekday"),
    "pattern_when_off": ("休息日不能有班次", "a day off takes no shift pattern"),
    "bad_value": ("无法读取：{value}", "cannot be read: {value}"),
    "unknown_resident": (
        "此住户没有编号为 {id} 的居民",
        "names no resident of this household: {id}",
    ),
    "same_household": ("设备已属于住户 {code}", "the device already serves household {code}"),
    "fixed": (
        "代码 {value} 不能更改：设备、记录和报表都以它为名",
        "the code {value} cannot be changed: devices, histories and reports go by it",
    ),
}


def say(problem: Problem, language: str) -> str:
    """The problem in words, in ``language`` (zh or en; anything else is en)."""
    zh, en = _WORDS.get(problem.code, ("无效", "is not valid"))
    template = zh if language == "zh" else en
    try:
        return template.format(**problem.facts)
    except (KeyError, IndexError, ValueError):
        return template


def problem_codes() -> frozenset[str]:
    """Every problem code the rules may give (for the pages and the tests)."""
    return frozenset(_WORDS)


# --- the rules -------------------------------------------------------------------------


def _text(name: str, value: str, max_length: int, *, required: bool = False) -> Iterator[Problem]:
    if required and not value.strip():
        yield Problem(name, "required")
    elif len(value) > max_length:
        yield Problem(name, "too_long", {"max": max_length})


def _one_of(name: str, value: str, allowed: Iterable[str]) -> Iterator[Problem]:
    options = [str(a) for a in allowed]
    if value not in options:
        shown = ", ".join(o if o else '""' for o in options)
        yield Problem(name, "one_of", {"allowed": shown})


def _phone(name: str, value: str, *, required: bool = True) -> Iterator[Problem]:
    if not value:
        if required:
            yield Problem(name, "required")
    elif not is_e164(value):
        yield Problem(name, "not_e164")


def _items(name: str, values: tuple[str, ...]) -> Iterator[Problem]:
    if len(values) > LIST_ITEMS_MAX:
        yield Problem(name, "too_many", {"max": LIST_ITEMS_MAX})
    for i, value in enumerate(values, start=1):
        yield from _text(f"{name}.{i}", value, LIST_ITEM_MAX, required=True)


def _place(lat: float | None, lon: float | None) -> Iterator[Problem]:
    if lat is None:
        yield Problem("lat", "required")
    elif not -90 <= lat <= 90:
        yield Problem("lat", "out_of_range", {"min": -90, "max": 90})
    if lon is None:
        yield Problem("lon", "required")
    elif not -180 <= lon <= 180:
        yield Problem("lon", "out_of_range", {"min": -180, "max": 180})


def _code(
    name: str,
    value: str,
    pattern: re.Pattern[str],
    max_length: int,
    taken: frozenset[str] = frozenset(),
) -> Iterator[Problem]:
    """A record's code: given, of the plain characters a code may hold, no longer than
    its column, and no other record's."""
    if not value:
        yield Problem(name, "required")
    elif pattern.fullmatch(value) is None or len(value) > max_length:
        yield Problem(name, "not_topic_name", {"max": max_length})
    elif value in taken:
        yield Problem(name, "taken", {"value": value})


def _within(prefix: str, problems: Iterable[Problem]) -> Iterator[Problem]:
    for problem in problems:
        yield Problem(f"{prefix}.{problem.field}", problem.code, problem.facts)


def resident_problems(record: ResidentRecord, known: Known) -> list[Problem]:
    found = [*_text("name", record.name, NAME_MAX, required=True)]
    if record.birth_date is not None:
        if record.birth_date > known.today:
            found.append(Problem("birth_date", "in_future"))
        elif record.birth_date.year < FIRST_BIRTH_YEAR:
            found.append(
                Problem(
                    "birth_date", "out_of_range", {"min": FIRST_BIRTH_YEAR, "max": known.today.year}
                )
            )
        if record.birth_year is not None and record.birth_year != record.birth_date.year:
            found.append(Problem("birth_year", "year_mismatch", {"year": record.birth_year}))
    elif record.birth_year is None:
        found.append(Problem("birth_year", "required"))
    elif not FIRST_BIRTH_YEAR <= record.birth_year <= known.today.year:
        found.append(
            Problem(
                "birth_year", "out_of_range", {"min": FIRST_BIRTH_YEAR, "max": known.today.year}
            )
        )
    found += _one_of("sex", record.sex, Sex)
    found += _one_of("mobility", record.mobility, Mobility)
    found += _one_of("hearing", record.hearing, Sense)
    found += _one_of("sight", record.sight, Sense)
    for name in ("conditions", "medicines", "allergies"):
        found += _items(name, getattr(record, name))
    found += _text("doctor", record.doctor, NAME_MAX)
    found += _text("clinic", record.clinic, 120)
    found += _phone("clinic_phone", record.clinic_phone, required=False)
    found += _text("hospital", record.hospital, 120)
    found += _text("speaks", record.speaks, 32)
    found += _text("wishes", record.wishes, NOTE_MAX)
    found += _text("care_notes", record.care_notes, NOTE_MAX)
    return found


def contact_problems(record: ContactRecord, known: Known) -> list[Problem]:
    found = [*_text("name", record.name, NAME_MAX, required=True)]
    found += _text("relation", record.relation, 32, required=True)
    found += _phone("phone", record.phone)
    found += _phone("phone_alt", record.phone_alt, required=False)
    found += _one_of("language", record.language, LANGUAGES)
    if (record.call_from is None) != (record.call_until is None):
        found.append(Problem("call_from", "hours_half_set"))
    return found


def household_problems(record: HouseholdRecord, known: Known) -> list[Problem]:
    """Every rule a household with its residents, contacts and numbers breaks."""
    found = [*_code("code", record.code, _TOPIC_NAME, 32, known.taken_codes)]
    found += _text("address", record.address, ADDRESS_MAX, required=True)
    found += _place(record.lat, record.lon)
    stations = (("home_station", record.home_station), ("backup_station", record.backup_station))
    for name, code in stations:
        if not code:
            found.append(Problem(name, "required"))
        elif code not in known.stations:
            found.append(Problem(name, "unknown_station", {"code": code}))
    if record.home_station and record.home_station == record.backup_station:
        found.append(Problem("backup_station", "same_as_home"))
    found += _text("access_notes", record.access_notes, NOTE_MAX)
    if not record.residents:
        found.append(Problem("residents", "no_residents"))
    for i, resident in enumerate(record.residents, start=1):
        found += _within(f"residents.{i}", resident_problems(resident, known))
    for i, contact in enumerate(record.contacts, start=1):
        found += _within(f"contacts.{i}", contact_problems(contact, known))
    numbers: list[str] = []
    for i, phone in enumerate(record.phones, start=1):
        found += _within(
            f"phones.{i}",
            [*_one_of("kind", phone.kind, PhoneKind), *_phone("number", phone.number)],
        )
        found += _text(f"phones.{i}.label", phone.label, NAME_MAX)
        if phone.number in numbers:
            found.append(Problem(f"phones.{i}.number", "repeated", {"value": phone.number}))
        numbers.append(phone.number)
    return found


def device_problems(record: DeviceRecord, known: Known) -> list[Problem]:
    found = [*_code("serial", record.serial, _TOPIC_NAME, 64)]
    if record.serial in known.taken_serials:
        found.append(Problem("serial", "taken", {"value": record.serial}))
    found += _one_of("kind", record.kind, DeviceKind)
    if not record.household:
        found.append(Problem("household", "required"))
    elif record.household not in known.households:
        found.append(Problem("household", "unknown_household", {"code": record.household}))
    return found


def station_problems(record: StationRecord, known: Known) -> list[Problem]:
    found = [*_code("code", record.code, _CODE, 16, known.taken_codes)]
    found += _text("name", record.name, 120, required=True)
    found += _text("address", record.address, ADDRESS_MAX, required=True)
    found += _place(record.lat, record.lon)
    found += _phone("phone", record.phone)
    if record.backup_station:
        if record.backup_station == record.code:
            found.append(Problem("backup_station", "same_as_own"))
        elif record.backup_station not in known.stations:
            found.append(
                Problem("backup_station", "unknown_station", {"code": record.backup_station})
            )
    return found


def carer_problems(record: CarerRecord, known: Known) -> list[Problem]:
    found = [*_code("code", record.code, _CODE, 16, known.taken_codes)]
    found += _text("name", record.name, NAME_MAX, required=True)
    found += _phone("phone", record.phone)
    if record.phone in known.taken_phones:
        found.append(Problem("phone", "taken", {"value": record.phone}))
    found += _one_of("language", record.language, LANGUAGES)
    found += _one_of("role", record.role, CarerRole)
    found += _one_of("transport", record.transport, Transport)
    found += _items("skills", record.skills)
    if not record.station:
        found.append(Problem("station", "required"))
    elif record.station not in known.stations:
        found.append(Problem("station", "unknown_station", {"code": record.station}))
    if not record.shift_pattern:
        found.append(Problem("shift_pattern", "required"))
    elif record.shift_pattern not in known.shift_patterns:
        found.append(
            Problem("shift_pattern", "unknown_shift_pattern", {"code": record.shift_pattern})
        )
    return found


def shift_pattern_problems(record: ShiftPatternRecord, known: Known) -> list[Problem]:
    found = [*_code("code", record.code, _CODE, 16, known.taken_codes)]
    found += _text("name", record.name, NAME_MAX, required=True)
    if not 1 <= record.duration_minutes <= 24 * 60:
        found.append(Problem("duration_minutes", "out_of_range", {"min": 1, "max": 24 * 60}))
    if not record.weekdays:
        found.append(Problem("weekdays", "no_weekdays"))
    elif any(not 1 <= day <= 7 for day in record.weekdays):
        found.append(Problem("weekdays", "out_of_range", {"min": 1, "max": 7}))
    elif len(set(record.weekdays)) != len(record.weekdays):
        found.append(Problem("weekdays", "repeated", {"value": "weekday"}))
    return found


def roster_problems(record: RosterRecord, known: Known) -> list[Problem]:
    found: list[Problem] = []
    if record.carer not in known.carers:
        found.append(Problem("carer", "unknown_carer", {"code": record.carer}))
    if not record.on_duty and record.shift_pattern:
        found.append(Problem("shift_pattern", "pattern_when_off"))
    if record.shift_pattern and record.shift_pattern not in known.shift_patterns:
        found.append(
            Problem("shift_pattern", "unknown_shift_pattern", {"code": record.shift_pattern})
        )
    found += _text("note", record.note, NOTE_MAX)
    return found
