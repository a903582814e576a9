"""The register's rules (domain/register.py): each rule on its own, every problem said
in both languages, and any text in any field judged, never a crash."""

from __future__ import annotations

import dataclasses
from datetime import date, time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callcenter.domain import register as r

TODAY = date(2026, 12, 7)
KNOWN = r.Known(
    today=TODAY,
    stations=frozenset({"S01", "S02"}),
    shift_patterns=frozenset({"EARLY"}),
    households=frozenset({"H0001"}),
    carers=frozenset({"C001"}),
)
RESIDENT = r.ResidentRecord(name="周桂兰", birth_date=date(1938, 4, 2))
HOUSEHOLD = r.HouseholdRecord(
    code="H9001",
    address="南山路 88 号",
    lat=36.61,
    lon=101.78,
    home_station="S01",
    backup_station="S02",
    residents=(RESIDENT,),
    contacts=(r.ContactRecord("周丽", "女儿", "+8613800009001"),),
    phones=(r.HouseholdPhoneRecord("landline", "+8697112345678"),),
)


def codes(problems: list[r.Problem]) -> dict[str, str]:
    return {p.field: p.code for p in problems}


def test_a_good_household_breaks_no_rule() -> None:
    assert r.household_problems(HOUSEHOLD, KNOWN) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"code": "H 9001"}, {"code": "not_topic_name"}),
        ({"code": ""}, {"code": "required"}),
        # A topic level may be 64 long, but a household's code is kept in 32.
        ({"code": "H" * 33}, {"code": "not_topic_name"}),
        ({"lat": 91.0}, {"lat": "out_of_range"}),
        ({"backup_station": "S01"}, {"backup_station": "same_as_home"}),
        ({"home_station": "S99"}, {"home_station": "unknown_station"}),
        ({"residents": ()}, {"residents": "no_residents"}),
        (
            {"phones": (r.HouseholdPhoneRecord("landline", "+8697112345678"),) * 2},
            {"phones.2.number": "repeated"},
        ),
        (
            {"contacts": (r.ContactRecord("周丽", "女儿", "13800009001", call_from=time(8)),)},
            {"contacts.1.phone": "not_e164", "contacts.1.call_from": "hours_half_set"},
        ),
        (
            {"residents": (dataclasses.replace(RESIDENT, birth_date=date(2027, 1, 1)),)},
            {"residents.1.birth_date": "in_future"},
        ),
        (
            {"residents": (dataclasses.replace(RESIDENT, birth_year=1939),)},
            {"residents.1.birth_year": "year_mismatch"},
        ),
        (
            {"residents": (r.ResidentRecord(name="无名"),)},
            {"residents.1.birth_year": "required"},
        ),
        (
            {"residents": (dataclasses.replace(RESIDENT, allergies=("",)),)},
            {"residents.1.allergies.1": "required"},
        ),
        (
            {"residents": (dataclasses.replace(RESIDENT, hearing="partial"),)},
            {"residents.1.hearing": "one_of"},
        ),
    ],
)
def test_each_household_rule_names_its_field(
    change: dict[str, object], expected: dict[str, str]
) -> None:
    """Test that each broken rule is one problem naming the field it is about."""
    record = dataclasses.replace(HOUSEHOLD, **change)  # type: ignore[arg-type]
    assert codes(r.household_problems(record, KNOWN)) == expected


def test_a_code_taken_by_another_household_is_refused() -> None:
    known = dataclasses.replace(KNOWN, taken_codes=frozenset({"H9001"}))
    assert codes(r.household_problems(HOUSEHOLD, known)) == {"code": "taken"}


def test_devices_carers_stations_patterns_and_the_roster_have_their_rules() -> None:
    assert codes(r.device_problems(r.DeviceRecord("CB-1", "toaster", "H0002"), KNOWN)) == {
        "kind": "one_of",
        "household": "unknown_household",
    }
    carer = r.CarerRecord("C009", "李", "+8613800000009", "S01", "EARLY")
    assert r.carer_problems(carer, KNOWN) == []
    taken = dataclasses.replace(KNOWN, taken_phones=frozenset({"+8613800000009"}))
    assert codes(r.carer_problems(carer, taken)) == {"phone": "taken"}
    assert codes(
        r.carer_problems(dataclasses.replace(carer, shift_pattern="LATE", transport="boat"), KNOWN)
    ) == {"shift_pattern": "unknown_shift_pattern", "transport": "one_of"}
    station = r.StationRecord("S03", "东", "东关大街", 36.6, 101.8, "+8697100000000", "S03")
    assert codes(r.station_problems(station, KNOWN)) == {"backup_station": "same_as_own"}
    pattern = r.ShiftPatternRecord("N", "夜班", time(23), 0, (1, 1))
    assert codes(r.shift_pattern_problems(pattern, KNOWN)) == {
        "duration_minutes": "out_of_range",
        "weekdays": "repeated",
    }
    day_off = r.RosterRecord("C001", TODAY, on_duty=False, shift_pattern="EARLY")
    assert codes(r.roster_problems(day_off, KNOWN)) == {"shift_pattern": "pattern_when_off"}


@pytest.mark.parametrize("language", ["zh", "en"])
def test_every_problem_is_said_in_each_language_with_its_facts(language: str) -> None:
    """Test that each problem code has its words in zh and en, with the facts filled in
    (no brace left over), so the page never shows a code instead of a sentence."""
    facts = {
        "max": 80,
        "min": 1,
        "allowed": "a, b",
        "code": "S99",
        "value": "x",
        "year": 1939,
        "id": 7,
    }
    for code in r.problem_codes():
        said = r.say(r.Problem("f", code, facts), language)
        assert said and "{" not in said, (code, said)
    assert r.say(r.Problem("f", "same_as_home"), "zh") != r.say(
        r.Problem("f", "same_as_home"), "en"
    )


_ANY_TEXT = st.text(max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    code=_ANY_TEXT,
    address=_ANY_TEXT,
    name=_ANY_TEXT,
    phone=_ANY_TEXT,
    items=st.lists(_ANY_TEXT, max_size=40),
    lat=st.floats(allow_nan=True, allow_infinity=True),
    year=st.none() | st.integers(min_value=-(10**6), max_value=10**6),
    sense=_ANY_TEXT,
)
def test_any_text_in_any_field_is_judged_never_a_crash(
    code: str,
    address: str,
    name: str,
    phone: str,
    items: list[str],
    lat: float,
    year: int | None,
    sense: str,
) -> None:
    """Test that whatever a spreadsheet or a form holds, the rules answer with a list of
    problems, each with a field and a code they can say, and never raise."""
    resident = r.ResidentRecord(
        name=name, birth_year=year, medicines=tuple(items), hearing=sense, clinic_phone=phone
    )
    record = dataclasses.replace(
        HOUSEHOLD,
        code=code,
        address=address,
        lat=lat,
        residents=(resident,),
        contacts=(r.ContactRecord(name, name, phone, phone_alt=phone),),
    )
    for problem in r.household_problems(record, KNOWN):
        assert problem.field and problem.code in r.problem_codes()
        assert r.say(problem, "zh") and r.say(problem, "en")
