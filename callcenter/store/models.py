"""Database tables: the district's registry, the device event log, dead letters, and the
call desk's calls, history, timers and outbox.

The same models serve SQLite (the embedded default) and PostgreSQL. Times are stored
as UTC and always come back timezone-aware.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    false,
    select,
    text,
    true,
)
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from callcenter.domain.geo import Transport
from callcenter.domain.phones import PhoneKind
from callcenter.domain.register import CarerRole, DeviceKind

# Re-exported: the registry and the domain share one vocabulary.
__all__ = ["CarerRole", "DeviceKind", "PhoneKind", "Transport"]

# Stable constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-numbers INTEGER PRIMARY KEY, not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC, as a UTC column takes it; a naive value is refused."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column; attach a time zone")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp kept in UTC; naive values are refused so local time never sneaks in."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Station(Base):
    """A service station (day-care centre) that carers start from."""

    __tablename__ = "stations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    address: Mapped[str] = mapped_column(String(240))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    phone: Mapped[str] = mapped_column(String(32))
    # The B post: where calls go when this station cannot serve.
    backup_station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"))

    carers: Mapped[list[Carer]] = relationship(back_populates="station")


class ShiftPattern(Base):
    """A named, repeating shift (e.g. early 07:00 for 8 h, Monday to Friday)."""

    __tablename__ = "shift_patterns"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    starts_at: Mapped[time] = mapped_column(Time)
    duration_minutes: Mapped[int] = mapped_column(Integer)
    # ISO weekday numbers, Monday = 1.
    weekdays: Mapped[list[int]] = mapped_column(JSON)


class Carer(Base):
    """A field carer (or station lead) who receives dispatches on an ordinary phone."""

    __tablename__ = "carers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    phone: Mapped[str] = mapped_column(String(32), unique=True)
    language: Mapped[str] = mapped_column(String(8), default="zh")
    role: Mapped[str] = mapped_column(String(16), default=CarerRole.CARER)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), index=True)
    skills: Mapped[list[str]] = mapped_column(JSON, default=list)
    transport: Mapped[str] = mapped_column(String(16), default=Transport.WALK)
    shift_pattern_code: Mapped[str] = mapped_column(ForeignKey("shift_patterns.code"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    station: Mapped[Station] = relationship(back_populates="carers")


class Household(Base):
    """An enrolled home with its residents, family contacts and devices."""

    __tablename__ = "households"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The code is the household's name on MQTT topics and on the board.
    code: Mapped[str] = mapped_column(String(32), unique=True)
    address: Mapped[str] = mapped_column(String(240))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    home_station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), index=True)
    backup_station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"))
    access_notes: Mapped[str] = mapped_column(Text, default="")

    residents: Mapped[list[Resident]] = relationship(
        back_populates="household", order_by="Resident.id"
    )
    contacts: Mapped[list[FamilyContact]] = relationship(
        back_populates="household", order_by="FamilyContact.position"
    )
    devices: Mapped[list[Device]] = relationship(back_populates="household")
    phones: Mapped[list[HouseholdPhone]] = relationship(
        back_populates="household", order_by="HouseholdPhone.position"
    )


class Resident(Base):
    """A person living in a household who may press the button."""

    __tablename__ = "residents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    birth_year: Mapped[int] = mapped_column(SmallInteger)
    care_notes: Mapped[str] = mapped_column(Text, default="")
    mobility: Mapped[str] = mapped_column(String(32), default="independent")
    # The resident's record (migration 0018; domain/register.py says what each may hold).
    # When the birth date is known, birth_year is its year.
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str] = mapped_column(String(8), default="", server_default="")
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    medicines: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    allergies: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    doctor: Mapped[str] = mapped_column(String(80), default="", server_default="")
    clinic: Mapped[str] = mapped_column(String(120), default="", server_default="")
    clinic_phone: Mapped[str] = mapped_column(String(32), default="", server_default="")
    # Advance wishes: no resuscitation, the hospital they want, anything else in words.
    do_not_resuscitate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    hospital: Mapped[str] = mapped_column(String(120), default="", server_default="")
    wishes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The language or dialect to speak to them in, e.g. "粤语".
    speaks: Mapped[str] = mapped_column(String(32), default="", server_default="")
    hearing: Mapped[str] = mapped_column(String(16), default="", server_default="")
    sight: Mapped[str] = mapped_column(String(16), default="", server_default="")

    household: Mapped[Household] = relationship(back_populates="residents")


class FamilyContact(Base):
    """Someone to call for a household, in order (position 1 first): a relative, a
    neighbour with a key. ``portal``: they may sign in to the family portal."""

    __tablename__ = "family_contacts"
    __table_args__ = (UniqueConstraint("household_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    name: Mapped[str] = mapped_column(String(80))
    relation: Mapped[str] = mapped_column(String(32))
    phone: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8), default="zh")
    # Migration 0018: a second number, a key to the home, the hours they may be called
    # (local time; both None: any time; from > until runs over midnight), the portal.
    phone_alt: Mapped[str] = mapped_column(String(32), default="", server_default="")
    holds_key: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    call_from: Mapped[time | None] = mapped_column(Time)
    call_until: Mapped[time | None] = mapped_column(Time)
    portal: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    household: Mapped[Household] = relationship(back_populates="contacts")


class HouseholdPhone(Base):
    """A number that reaches a household (migration 0013), in the order to try them
    (position 1 first): the base unit's own SIM, a landline, a resident's mobile. The
    number is E.164; the registry leaves out one that is not (domain/phones.py)."""

    __tablename__ = "household_phones"
    __table_args__ = (
        UniqueConstraint("household_id", "position"),
        CheckConstraint("position >= 1", name="position"),
        CheckConstraint("kind IN (" + ", ".join(f"'{k}'" for k in PhoneKind) + ")", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    position: Mapped[int] = mapped_column(SmallInteger)
    # domain/phones.py's PhoneKind.
    kind: Mapped[str] = mapped_column(String(16))
    number: Mapped[str] = mapped_column(String(32))
    # Whose it is, e.g. the resident whose mobile it is; "" for the home's own.
    label: Mapped[str] = mapped_column(String(80), default="", server_default="")

    household: Mapped[Household] = relationship(back_populates="phones")


class Device(Base):
    """A base unit, call button or pager registered to one household."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    battery_pct: Mapped[int | None] = mapped_column(SmallInteger)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the device left service (migration 0018): ingest no longer takes its
    # messages, its broker login is revoked, its events stay.
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The signal strength (dBm) the last written heartbeat reported (migration 0018);
    # kept as liveness is, not at every heartbeat.
    rssi_dbm: Mapped[int | None] = mapped_column(SmallInteger)

    household: Mapped[Household] = relationship(back_populates="devices")


class DeviceMove(Base):
    """A device moved from one household to another (migration 0018). Its events stay
    with the device; this says which household it served when."""

    __tablename__ = "device_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    from_household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    to_household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    # As call histories name people, e.g. "operator:admin".
    by: Mapped[str] = mapped_column(String(96))


class EscalationPolicy(Base):
    """A call type's escalation policy as a supervisor set it (migration 0018); it takes
    the place of the configuration's and the built-in one for calls opened after. Each
    call keeps the policy it opened with (``calls.policy``)."""

    __tablename__ = "escalation_policies"

    call_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    # domain/policy.py's Policy.to_json().
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    edited_by: Mapped[str] = mapped_column(String(96))
    edited_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeviceEvent(Base):
    """One event a device reported: the append-only log everything else is built from.

    ``(device_id, event_id)`` is unique: a redelivered event is recognised and kept once.
    """

    __tablename__ = "device_events"
    __table_args__ = (UniqueConstraint("device_id", "event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    device_time: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Device time minus server time, in seconds, when the device's clock is off by more
    # than ingest allows (docs/protocol.md, "Timestamps"); None when it was right.
    clock_skew_s: Mapped[float | None] = mapped_column(Float)


class EventConflict(Base):
    """A device event whose id was already in the log with other content (a device whose
    id counter started again): the first stays as stored, the second is kept here, and
    an alarm among them is raised all the same under an id of the server's
    (``raised_id``). ``digest`` tells one second content from another, so a redelivery
    of the second is recorded once."""

    __tablename__ = "event_conflicts"
    __table_args__ = (UniqueConstraint("device_id", "event_id", "digest"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    event_id: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(16))
    # The event stored first under this id.
    stored_id: Mapped[int] = mapped_column(ForeignKey("device_events.id"))
    kind: Mapped[str] = mapped_column(String(32))
    device_time: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The second, stored under the server's id because it is an alarm; None otherwise.
    raised_id: Mapped[int | None] = mapped_column(ForeignKey("device_events.id"))


class DeadLetter(Base):
    """A message that could not be accepted, kept with the reason so nothing is lost."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    topic: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(Text)
    payload_size: Mapped[int] = mapped_column(Integer)
    # Kept up to the size limit; payload_size says how much there was.
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class OperatorRole(enum.StrEnum):
    """What someone at the desk may do; each role may do everything the one before may."""

    OPERATOR = "operator"  # works calls
    SUPERVISOR = "supervisor"  # also works other operators' calls, is texted on escalations
    ADMIN = "admin"  # also manages the accounts of the desk


ROLE_RANK = {OperatorRole.OPERATOR: 0, OperatorRole.SUPERVISOR: 1, OperatorRole.ADMIN: 2}


class Operator(Base):
    """Someone who works the desk. The API token is kept only as its SHA-256."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(16), default=OperatorRole.OPERATOR)
    # Supervisors are texted when a call escalates; an operator may leave it empty.
    phone: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8), default="zh")
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Argon2 hash of the board sign-in password; None: they cannot sign in to the board.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is kept,
    with the session's CSRF token and when it ends."""

    __tablename__ = "web_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Idle sessions end this long after last_seen_at; every session ends at expires_at.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SignInOutcome(enum.StrEnum):
    # Wrong name or password, or a switched-off account; and an attempt still being
    # judged: recorded as failed until the session it makes is.
    FAILED = "failed"
    SIGNED_IN = "signed_in"


class SignInAttempt(Base):
    """One try at the board's sign-in, kept so guessing is paused per address and per
    person across restarts and instances (migration 0010). ``source`` is the client's
    address, an IPv6 one as its /64 network (one subscriber's share)."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (
        Index("ix_sign_in_attempts_source_at", "source", "at"),
        Index("ix_sign_in_attempts_username_at", "username", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # As typed (lower-cased, at most 64 characters): unknown names are counted too.
    username: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))


class DutyRoster(Base):
    """One carer's duty on one local date, overriding their shift pattern (leave, swaps,
    holiday duty)."""

    __tablename__ = "duty_roster"
    __table_args__ = (UniqueConstraint("carer_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    carer_id: Mapped[int] = mapped_column(ForeignKey("carers.id"))
    day: Mapped[date] = mapped_column(Date, index=True)
    on_duty: Mapped[bool] = mapped_column(Boolean)
    shift_pattern_code: Mapped[str | None] = mapped_column(ForeignKey("shift_patterns.code"))
    note: Mapped[str] = mapped_column(Text, default="")


class CarerPosition(Base):
    """Where a carer was last known to be; without a row, they are at their station."""

    __tablename__ = "carer_positions"

    carer_id: Mapped[int] = mapped_column(ForeignKey("carers.id"), primary_key=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class Call(Base):
    """One call from a household, from the first press to its closure.

    ``state`` is the domain's derived state, stored so the board can filter on it.
    ``version`` goes up with every change: a client can tell it missed something.
    """

    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_household_id_closed_at", "household_id", "closed_at"),
        Index("ix_calls_owner_closed_at", "owner", "closed_at"),
        # An operator is offered one call at a time, however two writers race (0011).
        Index(
            "uq_calls_offer_to",
            "offer_to",
            unique=True,
            sqlite_where=text("offer_to IS NOT NULL"),
            postgresql_where=text("offer_to IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # None: a call to the centre's number from a number the register does not know (0015).
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"))
    call_type: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    presses: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    last_press_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    press_noted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    owner: Mapped[str | None] = mapped_column(String(80))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(String(32))
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    # What a carer reported on an emergency or fall no operator had owned (the call then
    # awaits an operator's review): the outcome, the carer (carer:C012) and when.
    reported_outcome: Mapped[str | None] = mapped_column(String(32))
    reported_by: Mapped[str | None] = mapped_column(String(96))
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The escalation policy in force when the call opened (see domain/policy.py).
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    fired_steps: Mapped[list[str]] = mapped_column(JSON, default=list)
    alerts: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The device event that opened the call.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("device_events.id"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The call's offer to the operators on duty (domain/offers.py; migration 0011):
    # offered_at set while one is out, to ``offer_to`` until ``offer_expires_at`` or, with
    # ``offer_to_all``, to everyone; ``offer_tried``: the operators offered it, in order.
    offer_to: Mapped[str | None] = mapped_column(String(80))
    offered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    offer_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    offer_to_all: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    offer_tried: Mapped[list[str] | None] = mapped_column(JSON)
    # The family rung in their order until one pressed 1 (domain FamilyRound; 0016):
    # {"step", "ringing" (the contact rung now or last), "heard_by"}; null: never rung.
    family_round: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OperatorDuty(Base):
    """Whether an operator is working the desk (domain/offers.py's Duty), since when, and
    since when no work was handed to them (the longest idle is offered a call first)."""

    __tablename__ = "operator_duty"

    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id"), primary_key=True)
    duty: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    idle_since: Mapped[datetime] = mapped_column(UtcDateTime)


class CallHistory(Base):
    """Append-only: who did what to a call, when, and why."""

    __tablename__ = "call_history"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(96))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CallAssignment(Base):
    """A carer sent to a call. A carer has at most one active assignment at a time: the
    partial unique index makes a double dispatch impossible, whatever races."""

    __tablename__ = "call_assignments"
    __table_args__ = (
        Index(
            "uq_call_assignments_active_carer",
            "carer_id",
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    carer_id: Mapped[int] = mapped_column(ForeignKey("carers.id"))
    # Position of this assignment among the call's assignments, in dispatch order.
    seq: Mapped[int] = mapped_column(SmallInteger)
    state: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean)
    dispatched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dispatched_by: Mapped[str] = mapped_column(String(96))
    travel_s: Mapped[float | None] = mapped_column(Float)
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class TimerState(enum.StrEnum):
    PENDING = "pending"
    FIRED = "fired"
    CANCELLED = "cancelled"


class Timer(Base):
    """A deadline: an escalation step due at ``due_at`` unless cancelled first."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_state_due_at", "state", "due_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    step: Mapped[str] = mapped_column(String(64))
    carer_id: Mapped[int | None] = mapped_column(ForeignKey("carers.id"))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(String(16), default=TimerState.PENDING)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"  # no longer wanted when its turn came (e.g. the carer had accepted)
    FAILED = "failed"  # refused for good by the far end; an operator must act


class OutboxItem(Base):
    """An effect to carry out after the change that caused it committed: an SMS or a
    device command. Written in the same transaction as the change; its id is the key that
    keeps a retry from sending twice."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    recipient: Mapped[str] = mapped_column(String(96))
    address: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)
    # When to skip instead of sending: {"carer_id": n} or {"unless": milestone}.
    guard: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # The provider's id for what was sent (Twilio's MessageSid), for status callbacks.
    provider_ref: Mapped[str | None] = mapped_column(String(64), index=True)
    # The provider's own delivery status (queued, sent, delivered, undelivered, failed).
    delivery: Mapped[str | None] = mapped_column(String(16))
    # When the earliest attempt whose outcome is not known began: set when an attempt is
    # claimed, cleared once the row is settled. Pending with this set: "in doubt", and the
    # next attempt asks the provider what became of it before sending again.
    sending_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class InboundSms(Base):
    """A text message received from a phone (a carer's reply), kept once per MessageSid
    with what became of it."""

    __tablename__ = "inbound_sms"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_sid: Mapped[str] = mapped_column(String(64), unique=True)
    from_number: Mapped[str] = mapped_column(String(32), index=True)
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    # What the reply did: accepted, declined, on_scene, refused, unknown_sender, ...
    outcome: Mapped[str] = mapped_column(String(32))
    # The confirmation sent back, as text.
    answer: Mapped[str] = mapped_column(Text, default="")


class VoiceStatus(Base):
    """A status Twilio reported for a phone call the desk placed, kept once per CallSid
    and SequenceNumber: a status callback posted again is recognised and changes nothing."""

    __tablename__ = "voice_statuses"
    __table_args__ = (UniqueConstraint("call_sid", "sequence"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(34))
    sequence: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # The outbox row that placed the call.
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class VoiceBridge(Base):
    """Click-to-call: the ring to the operator's phone (its outbox row) and what it is
    about, a call or a welfare call ringing the resident; which try (welfare calls ring
    again when nobody answered), how it ended, and its recording's reference while kept."""

    __tablename__ = "voice_bridges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), unique=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"), index=True)
    welfare_id: Mapped[int | None] = mapped_column(ForeignKey("welfare_calls.id"), index=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    try_number: Mapped[int] = mapped_column(SmallInteger, default=1)
    # "answered" (a number picked up) or "no_answer" (none did); None while it goes on.
    result: Mapped[str | None] = mapped_column(String(16))
    recording_sid: Mapped[str | None] = mapped_column(String(34))
    recording_url: Mapped[str | None] = mapped_column(String(255))
    recording_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PhoneProblem(enum.StrEnum):
    """Why a phone number cannot get our texts."""

    INVALID_NUMBER = "invalid_number"  # not a phone number at all (Twilio 21211)
    OPTED_OUT = "opted_out"  # its owner texted STOP (Twilio 21610); START lifts it
    NOT_MOBILE = "not_mobile"  # a landline or other number that takes no texts (21614)


class BrokenPhone(Base):
    """A phone number known not to get our texts, and why. Nothing is sent to it and no
    carer with it is paged until the mark is lifted (START, a corrected number, or
    ``callcenter phone clear``)."""

    __tablename__ = "broken_phones"

    phone: Mapped[str] = mapped_column(String(32), primary_key=True)
    problem: Mapped[str] = mapped_column(String(16))
    # In words a person can act on, e.g. "the number is not a valid number (Twilio 21211)".
    detail: Mapped[str] = mapped_column(Text, default="")
    # Whose number it was when marked (outbox recipient, e.g. "carer:C012").
    recipient: Mapped[str] = mapped_column(String(64), default="")
    since: Mapped[datetime] = mapped_column(UtcDateTime)


class Cursor(Base):
    """How far a reader of the event log has got: for the call engine, the newest event
    it has applied and when it last applied one (what it has still to apply is
    ``unapplied_events``)."""

    __tablename__ = "cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class UnappliedEvent(Base):
    """An event in the log the call engine has not applied yet (migration 0020).

    Ingest adds the row in the transaction that stores the event; the engine deletes it
    in the transaction that applies the event. A position in the log would not do when
    several servers store events: their transactions take ids in one order and may
    commit in another, so an event can become visible below a position already passed."""

    __tablename__ = "unapplied_events"

    id: Mapped[int] = mapped_column(BigId, ForeignKey("device_events.id"), primary_key=True)


# --- families, carers' links, audit, welfare calls (migration 0007) ------------------


class FamilyCode(Base):
    """A one-time sign-in code texted to a family member's phone; only its SHA-256 is
    kept. Short-lived, single-use, and given up after a few wrong tries."""

    __tablename__ = "family_codes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), index=True)
    code_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The address that asked for it, for rate limits per address and the audit.
    requested_from: Mapped[str] = mapped_column(String(64), default="")


class FamilySession(Base):
    """A family member signed in on their phone's browser: the cookie's token as its
    SHA-256, the phone it proved, and its CSRF token. The phone decides which
    households it may see: those listing it as a contact."""

    __tablename__ = "family_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    phone: Mapped[str] = mapped_column(String(32), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One read (or change) of a household's data, by whom: families, operators,
    carers through their links. Administrators query it; nothing deletes from it.
    A change to the register keeps the record as it was (``before``, None for a new
    one) and as it became (``after``, None for one removed)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    # As call histories name people: "family:+8613...", "operator:li.na", "carer:C003".
    actor: Mapped[str] = mapped_column(String(96), index=True)
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"), index=True)
    # What was done, e.g. "read_calls", "read_call", "read_household".
    action: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(255), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ServerSecret(Base):
    """A secret the server made itself on first start when the configuration gives none
    (e.g. the key that signs carers' links), so it survives restarts and never sits in
    code."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Lease(Base):
    """Which server does a piece of once-only work ("desk": following the event log,
    firing timers, the outbox relay, the watchdog, the welfare list), until when, and
    the fencing number (``epoch``) that goes up by one at every takeover. Every
    transaction of that work checks the epoch it was given is still the row's
    (store/leases.py), so a server that lost the lease changes nothing."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Who holds it: "callcenter:<instance>:<pid>:<nonce>", also the application_name of
    # its database connections (empty: nobody).
    holder: Mapped[str] = mapped_column(String(63))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RegistryVersion(Base):
    """One row whose ``version`` goes up whenever anything the desk's district registry
    holds changes (stations, shift patterns, carers, residents, family contacts, a
    device's household or kind, households, operators' role, phone or name). Database
    triggers bump it (migration 0008), whoever makes the change: the API, the command
    line or plain SQL. The server re-reads the registry only when it has moved."""

    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


async def registry_version(reader: AsyncSession | AsyncConnection) -> int | None:
    """The district registry's version now; None if its row is missing, and then every
    look reads the registry again (the desk's registry and ingest's devices alike)."""
    version = await reader.scalar(select(RegistryVersion.version).where(RegistryVersion.id == 1))
    return None if version is None else int(version)


class WelfareState(enum.StrEnum):
    DUE = "due"  # on this week's list, not yet made
    DONE = "done"  # made, with an outcome
    MISSED = "missed"  # the week ended without it


class WelfareCall(Base):
    """A weekly welfare call to one resident (over the configured age): due, done with
    its outcome, or missed."""

    __tablename__ = "welfare_calls"
    __table_args__ = (UniqueConstraint("resident_id", "week_start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    resident_id: Mapped[int] = mapped_column(ForeignKey("residents.id"), index=True)
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), index=True)
    # The Monday (district time) of the week the call belongs to.
    week_start: Mapped[date] = mapped_column(Date, index=True)
    state: Mapped[str] = mapped_column(String(16), default=WelfareState.DUE)
    outcome: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text, default="")
    done_by: Mapped[str | None] = mapped_column(String(96))
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
