"""What the register's routes share (web/register.py, web/rota.py): the roles, the bodies
and answers they declare, who made a change and the district's date. Bodies are read for
their types only (a 400 naming the field), with lengths generous enough for any rule's
limit; the register's rules (domain/register.py) then judge the record, and what they
refuse is a 422 whose ``problems`` say each field, code and message in the asker's
language (web/errors.py, ``from_domain``)."""

from __future__ import annotations

from datetime import date, time
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field, PlainSerializer, StrictBool, StringConstraints, WithJsonSchema

from callcenter.domain import register as rules
from callcenter.domain.call_types import CallType
from callcenter.domain.geo import Transport
from callcenter.domain.phones import PhoneKind
from callcenter.engine import register as reg
from callcenter.store import models as m
from callcenter.web.bodies import Body, Language
from callcenter.web.contract import Day, Parameters
from callcenter.web.state import CLOCK, CONFIG, DESK, OPERATOR
from callcenter.web.views import Shape

ADMIN = m.OperatorRole.ADMIN
SUPERVISOR = m.OperatorRole.SUPERVISOR

# Bodies are read for their types only, with lengths generous enough for any rule's
# limit; the rules say what is too long, in the asker's language.
Line = Annotated[str, StringConstraints(strip_whitespace=True, max_length=256)]
Words = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
Items = Annotated[list[Line], Field(max_length=100)]
# A time of day on the district's clock, written HH:MM (JSON Schema's "time" would want
# a zone, which a shift's start or a contact's hours do not have).
ClockTime = Annotated[
    time,
    PlainSerializer(lambda t: t.isoformat(timespec="minutes"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
            "description": "HH:MM, local time",
        }
    ),
]


class PhoneBody(Body):
    kind: PhoneKind
    number: Line
    label: Line = ""


class ResidentBody(Body):
    id: int | None = Field(None, description="the resident's number; leave out for a new one")
    name: Line
    birth_year: int | None = Field(None, description="needed when the birth date is unknown")
    birth_date: date | None = None
    sex: Line = Field("", description='"female", "male" or ""')
    mobility: Line = Field(
        "independent", description="independent, walking_aid, wheelchair, bedbound"
    )
    conditions: Items = Field(default_factory=list)
    medicines: Items = Field(default_factory=list)
    allergies: Items = Field(default_factory=list)
    doctor: Line = ""
    clinic: Line = ""
    clinic_phone: Line = ""
    do_not_resuscitate: StrictBool = False
    hospital: Line = Field("", description="the hospital of their choice")
    wishes: Words = Field("", description="advance wishes in words")
    speaks: Line = Field("", description="the language or dialect to speak to them in")
    hearing: Line = Field("", description='"good", "impaired", "none" or ""')
    sight: Line = Field("", description='"good", "impaired", "none" or ""')
    care_notes: Words = ""

    def record(self) -> rules.ResidentRecord:
        data = self.model_dump()
        for name in ("conditions", "medicines", "allergies"):
            data[name] = tuple(data[name])
        return rules.ResidentRecord(**data)


class ContactBody(Body):
    name: Line
    relation: Line
    phone: Line
    phone_alt: Line = ""
    language: Language = Language.ZH
    holds_key: StrictBool = False
    call_from: ClockTime | None = Field(None, description="leave out both for any time")
    call_until: ClockTime | None = Field(None, description="before call_from: overnight")
    portal: StrictBool = Field(True, description="whether they may sign in to the family portal")

    def record(self) -> rules.ContactRecord:
        return rules.ContactRecord(**{**self.model_dump(), "language": self.language.value})


class HouseholdBody(Body):
    code: Line
    address: Line
    lat: float | None = Field(None, description="required; -90 to 90")
    lon: float | None = Field(None, description="required; -180 to 180")
    home_station: Line
    backup_station: Line
    access_notes: Words = ""
    phones: Annotated[list[PhoneBody], Field(max_length=20)] = Field(default_factory=list)
    residents: Annotated[list[ResidentBody], Field(max_length=20)] = Field(default_factory=list)
    contacts: Annotated[list[ContactBody], Field(max_length=20)] = Field(
        [], description="in the order to call them"
    )

    def record(self) -> rules.HouseholdRecord:
        return rules.HouseholdRecord(
            code=self.code,
            address=self.address,
            lat=self.lat,
            lon=self.lon,
            home_station=self.home_station,
            backup_station=self.backup_station,
            access_notes=self.access_notes,
            phones=tuple(
                rules.HouseholdPhoneRecord(p.kind, p.number, p.label) for p in self.phones
            ),
            residents=tuple(r.record() for r in self.residents),
            contacts=tuple(c.record() for c in self.contacts),
        )


class DeviceBody(Body):
    serial: Line
    kind: Line = Field(description="base_unit, call_button or pager")
    household: Line


class MoveBody(Body):
    household: Line = Field(description="the household the device serves from now on")


class StationBody(Body):
    code: Line
    name: Line
    address: Line
    lat: float | None = Field(None, description="required; -90 to 90")
    lon: float | None = Field(None, description="required; -180 to 180")
    phone: Line
    backup_station: Line | None = Field(
        None, description="the B post: where calls go when this station cannot serve"
    )

    def record(self) -> rules.StationRecord:
        return rules.StationRecord(**self.model_dump())


class CarerBody(Body):
    code: Line
    name: Line
    phone: Line
    station: Line
    shift_pattern: Line
    language: Language = Language.ZH
    role: Line = Field("carer", description="carer or station_lead")
    skills: Items = Field(default_factory=list)
    transport: Line = Field(Transport.WALK.value, description="walk, bicycle, ebike or car")
    active: StrictBool = True

    def record(self) -> rules.CarerRecord:
        data = self.model_dump()
        data["skills"] = tuple(data["skills"])
        data["language"] = self.language.value
        return rules.CarerRecord(**data)


class ShiftPatternBody(Body):
    code: Line
    name: Line
    starts_at: ClockTime
    duration_minutes: int
    weekdays: Annotated[list[int], Field(max_length=7, description="ISO weekdays, Monday = 1")]

    def record(self) -> rules.ShiftPatternRecord:
        return rules.ShiftPatternRecord(
            self.code, self.name, self.starts_at, self.duration_minutes, tuple(self.weekdays)
        )


class RosterBody(Body):
    on_duty: StrictBool = Field(description="false: a day off; true: a duty on shift_pattern")
    shift_pattern: Line | None = None
    note: Words = ""


class CodePath(Parameters):
    code: Annotated[
        str, Field(min_length=1, max_length=64, description="a code, e.g. H0001 or S01")
    ]


class SerialPath(Parameters):
    serial: Annotated[str, Field(min_length=1, max_length=64, description="a device's serial")]


class RosterPath(Parameters):
    carer: Annotated[str, Field(min_length=1, max_length=16, description="a carer's code")]
    day: Day


class CallTypePath(Parameters):
    call_type: CallType


class HouseholdQuery(Parameters):
    station: Annotated[str, Field(max_length=16, description="a station's code")] | None = None
    q: (
        Annotated[
            str, Field(max_length=80, description="part of a code, address or resident's name")
        ]
        | None
    ) = None


class DeviceQuery(Parameters):
    household: Annotated[str, Field(max_length=64, description="a household's code")] | None = None


class RosterQuery(Parameters):
    first: Day
    last: Day


# --- answers ---------------------------------------------------------------------------


class DeviceView(Shape):
    serial: str
    kind: str
    household: str
    online: bool
    battery_pct: int | None
    rssi_dbm: int | None = Field(description="signal strength of the last heartbeat written")
    last_seen_at: str | None
    retired_at: str | None = Field(description="null while in service")


class HouseholdAnswer(Shape):
    """The household as the register keeps it (the same fields a change sends)."""

    household: HouseholdBody
    devices: list[DeviceView]


class HouseholdSummary(Shape):
    code: str
    address: str
    home_station: str
    residents: list[str]
    devices: int


class HouseholdList(Shape):
    households: list[HouseholdSummary]


class LoginView(Shape):
    """The device's MQTT login: the password is shown this once and kept nowhere."""

    username: str
    password: str


class DeviceAnswer(Shape):
    device: DeviceView
    login: LoginView | None = Field(description="null when the broker takes no per-device logins")


class DeviceList(Shape):
    devices: list[DeviceView]


class StationList(Shape):
    records: list[StationBody]


class StationAnswer(Shape):
    record: StationBody


class CarerList(Shape):
    records: list[CarerBody]


class CarerAnswer(Shape):
    record: CarerBody


class ShiftPatternList(Shape):
    records: list[ShiftPatternBody]


class ShiftPatternAnswer(Shape):
    record: ShiftPatternBody


class RosterEntry(Shape):
    carer: str
    day: date
    on_duty: bool
    shift_pattern: str | None
    note: str


class RosterList(Shape):
    records: list[RosterEntry]


class RosterAnswer(Shape):
    record: RosterEntry


class PolicyView(Shape):
    call_type: str
    source: str = Field(description='"edited" by a supervisor, or "configured" (file or built-in)')
    edited_by: str | None
    edited_at: str | None
    policy: dict[str, Any]
    preview: list[dict[str, Any]] = Field(description="the steps in the order they fire")


class PolicyList(Shape):
    policies: list[PolicyView]


REFUSED = {422: "the record breaks the register's rules; problems say which, field by field"}
NOT_FOUND = {404: "no such record"}


def change_of(request: web.Request) -> reg.Change:
    """Who makes this request's change, when and from where, for its audit row."""
    operator = request[OPERATOR]
    return reg.Change(
        actor=str(operator.actor),
        at=request.app[CLOCK].now(),
        path=request.path[:255],
        address=(request.remote or "")[:64],
    )


def district_today(request: web.Request) -> date:
    """Today's date on the district's clock (a birth date may not be after it)."""
    zone = ZoneInfo(request.app[CONFIG].district.timezone)
    return request.app[CLOCK].now().astimezone(zone).date()


def register_changed(request: web.Request) -> None:
    """The desk reads the register again before its next decision."""
    request.app[DESK].district.invalidate()
