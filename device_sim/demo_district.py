"""The demo district: 9 stations, 60 carers and 900 households in Xining, from one seed.

:func:`build_demo_district` builds it in memory (a pure function of the seed), so the
device simulator knows household codes and serials without a database;
:func:`seed_demo_district` writes it into an empty, migrated database;
:func:`load_device_directory` reads the devices of any database back.

All names, addresses and phone numbers are invented. The phone numbers look like real
Chinese mobile numbers, so never run the demo district against a live SMS account (or
a live voice one: households' numbers are rung).
"""

from __future__ import annotations

import functools
import math
import random
import time as _time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import time
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from callcenter.domain.geo import Place, distance_m
from callcenter.domain.phones import HouseholdNumber, PhoneKind
from callcenter.store.db import create_engine, insert_rows
from callcenter.store.migrate import require_current_schema
from callcenter.store.models import (
    Carer,
    CarerRole,
    Device,
    DeviceKind,
    FamilyContact,
    Household,
    HouseholdPhone,
    Resident,
    ShiftPattern,
    Station,
    Transport,
)

DEMO_SEED = 2026
CITY = "西宁市"
SKILLS = ("lift", "dementia", "nursing", "wound_care")
MOBILITY = ("independent", "walking_aid", "wheelchair", "bedbound")

_T = TypeVar("_T")


# --- the district as plain data -------------------------------------------------------


@dataclass(frozen=True)
class DemoStation:
    """A service station (day-care centre); ``backup`` is the code of its B post."""

    code: str
    name: str
    district: str
    address: str
    lat: float
    lon: float
    phone: str
    backup: str


@dataclass(frozen=True)
class DemoShiftPattern:
    """A repeating shift; ``weekdays`` are ISO numbers (Monday = 1) on which it starts."""

    code: str
    name: str
    starts_at: time
    duration_minutes: int
    weekdays: tuple[int, ...]


@dataclass(frozen=True)
class DemoCarer:
    """A carer or station lead, working from ``station`` on ``shift_pattern``."""

    code: str
    name: str
    phone: str
    role: str
    station: str
    skills: tuple[str, ...]
    transport: str
    shift_pattern: str
    language: str = "zh"


@dataclass(frozen=True)
class DemoResident:
    """A person living in a household."""

    name: str
    birth_year: int
    care_notes: str
    mobility: str


@dataclass(frozen=True)
class DemoFamilyContact:
    """A relative to call; position 1 is called first."""

    position: int
    name: str
    relation: str
    phone: str
    language: str = "zh"


@dataclass(frozen=True)
class DemoDevice:
    """A device of a household; the serial is also an MQTT topic level."""

    serial: str
    kind: str


@dataclass(frozen=True)
class DemoHousehold:
    """An enrolled home; ``home_station`` is the nearest station, ``backup_station`` the next."""

    code: str
    address: str
    lat: float
    lon: float
    home_station: str
    backup_station: str
    access_notes: str
    residents: tuple[DemoResident, ...]
    contacts: tuple[DemoFamilyContact, ...]
    devices: tuple[DemoDevice, ...]
    # The base unit's SIM first, then a landline and residents' mobiles, where they have them.
    phones: tuple[HouseholdNumber, ...] = ()


@dataclass(frozen=True)
class DemoDistrict:
    """Everything the demo district is made of, in the order it is numbered."""

    seed: int
    stations: tuple[DemoStation, ...]
    shift_patterns: tuple[DemoShiftPattern, ...]
    carers: tuple[DemoCarer, ...]
    households: tuple[DemoHousehold, ...]

    def device_directory(self) -> list[tuple[str, str, str]]:
        """(household code, serial, kind) for every device, as :func:`load_device_directory`."""
        return [
            (household.code, device.serial, device.kind)
            for household in self.households
            for device in household.devices
        ]


@dataclass(frozen=True)
class SeedSummary:
    """What :func:`seed_demo_district` wrote."""

    seed: int
    stations: int
    shift_patterns: int
    carers: int
    households: int
    residents: int
    family_contacts: int
    devices: int
    household_phones: int = 0
    seconds: float = field(default=0.0, compare=False)

    def __str__(self) -> str:
        return (
            f"demo district seeded (seed {self.seed}): {self.stations} stations, "
            f"{self.shift_patterns} shift patterns, {self.carers} carers, "
            f"{self.households} households, {self.residents} residents, "
            f"{self.family_contacts} family contacts, {self.devices} devices, "
            f"{self.household_phones} household numbers "
            f"in {self.seconds:.2f} s"
        )


class DistrictAlreadySeededError(Exception):
    """The database already holds households; seeding would mix two districts."""

    def __init__(self, households: int) -> None:
        self.households = households
        super().__init__(
            f"the database already has {households} household(s); the demo district is "
            "only seeded into an empty database (point data.dir or CALLCENTER_DATABASE__URL "
            "at a fresh one and run `callcenter db upgrade` first)"
        )


# --- the city ---------------------------------------------------------------------------


class _Site(NamedTuple):
    code: str
    district: str
    street: str
    number: int
    lat: float
    lon: float
    # Streets nearby, for the addresses of the households this station serves.
    streets: tuple[str, ...]


# Sites spread over the four central districts, about 1-2 km apart.
# fmt: off
_SITES = (
    _Site("S01", "城中区", "南山路", 36, 36.6105, 101.7840,
          ("南山路", "南关街", "南大街", "玉井巷")),
    _Site("S02", "城中区", "长江路", 58, 36.6200, 101.7760,
          ("长江路", "解放路", "人民街", "西大街")),
    _Site("S03", "城东区", "东关大街", 112, 36.6190, 101.7960,
          ("东关大街", "七一路", "大众街", "南小街")),
    _Site("S04", "城东区", "八一路", 27, 36.6060, 101.8150,
          ("八一路", "互助路", "建国路", "德令哈路")),
    _Site("S05", "城西区", "西关大街", 75, 36.6245, 101.7620,
          ("西关大街", "昆仑路", "公园巷", "新宁路")),
    _Site("S06", "城西区", "五四大街", 41, 36.6300, 101.7470,
          ("五四大街", "胜利路", "同仁路", "冷湖路")),
    _Site("S07", "城西区", "黄河路", 16, 36.6370, 101.7640,
          ("黄河路", "文化街", "海晏路", "西川南路")),
    _Site("S08", "城北区", "柴达木路", 203, 36.6560, 101.7620,
          ("柴达木路", "宁张路", "门源路", "北川河东路")),
    _Site("S09", "城北区", "朝阳东路", 9, 36.6480, 101.7790,
          ("朝阳东路", "祁连路", "小桥大街", "北山路")),
)
# fmt: on
# Busier neighbourhoods get more households.
_STATION_WEIGHTS = (1.25, 1.15, 1.1, 0.8, 1.05, 0.9, 1.0, 0.8, 0.95)
_HOUSEHOLD_RADIUS_M = 1800.0

_SHIFT_PATTERNS = (
    DemoShiftPattern("EARLY", "早班 07:00-15:00", time(7, 0), 480, (1, 2, 3, 4, 5, 6, 7)),
    DemoShiftPattern("DAY", "白班 09:00-17:00（工作日）", time(9, 0), 480, (1, 2, 3, 4, 5)),
    DemoShiftPattern("LATE", "晚班 15:00-23:00", time(15, 0), 480, (1, 2, 3, 4, 5, 6, 7)),
    DemoShiftPattern("NIGHT", "夜班 23:00-07:00", time(23, 0), 480, (1, 2, 3, 4, 5, 6, 7)),
)
# Per station: the lead works office days; early + late + night keep the clock covered.
_STATION_ROTA = ("DAY", "EARLY", "LATE", "NIGHT", "EARLY", "LATE", "NIGHT")
_CARERS = 60

_SURNAMES = (
    *("王", "李", "张", "刘", "马") * 3,
    *("陈", "杨", "赵", "韩", "祁") * 2,
    *("黄", "周", "吴", "徐", "孙", "朱", "胡", "郭", "何", "高", "罗", "郑", "梁", "谢"),
    *("宋", "唐", "许", "冯", "曹", "彭", "田", "董", "袁", "冶", "鲁", "汪", "苏", "魏"),
)
_ELDER_MEN = (
    "建国", "国庆", "德明", "志强", "永福", "文华", "玉林", "长青", "振华", "富贵",
    "树林", "清海", "宝山", "福海", "成林", "万财", "国栋", "明德", "玉成", "正义",
    "守仁", "廷贵", "占魁", "秉忠", "生福", "进财", "学文", "海山", "有德", "世英",
)  # fmt: skip
_ELDER_WOMEN = (
    "秀英", "桂兰", "玉兰", "淑珍", "凤英", "秀兰", "桂英", "兰英", "翠花", "玉珍",
    "素芳", "金凤", "桂芳", "秀珍", "玉梅", "淑英", "春兰", "凤兰", "玉凤", "月英",
    "桂珍", "玉莲", "雪梅", "梅英", "素珍", "春梅", "秀芳", "玉华", "兰芳", "菊花",
)  # fmt: skip
_YOUNGER_MEN = (
    "建军", "志刚", "海涛", "伟", "磊", "强", "涛", "斌", "杰", "鹏", "军", "勇", "浩",
    "晓东", "建华", "永强", "海军", "国强", "文斌", "俊", "刚", "明", "宁", "亮", "超",
)  # fmt: skip
_YOUNGER_WOMEN = (
    "丽", "静", "敏", "婷", "芳", "娟", "海燕", "晓梅", "红梅", "丽萍", "春花", "秀梅",
    "燕", "霞", "玲", "晶", "雪", "莉", "慧", "琳", "倩", "佳", "丹", "颖", "蓉",
)  # fmt: skip
_MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
    "153", "155", "156", "157", "158", "159", "173", "177", "180", "181", "186", "187",
    "188", "189", "199",
)  # fmt: skip
_COMPOUNDS = (
    "园丁小区", "阳光花园", "锦绣家园", "康乐小区", "铁路新村", "电力小区", "兴旺小区",
    "和平苑", "建新小区", "幸福家园", "文苑小区", "夏都花园", "福利区", "团结小区",
)  # fmt: skip
_CARE_NOTES = (
    "高血压，每日早晚服药",
    "2型糖尿病，注意低血糖",
    "轻度认知障碍，可能说不清地址",
    "阿尔茨海默病，外出需有人陪同",
    "慢阻肺，家中有制氧机",
    "冠心病，床头柜有硝酸甘油",
    "去年跌倒致髋部骨折，已手术",
    "听力较差，请大声慢说",
    "白内障，视力差",
    "装有心脏起搏器",
    "只听得懂青海话",
    "独自在家时间长，子女在外地",
    "对青霉素过敏",
    "夜间常起床，易跌倒",
)
_MOBILITY_WEIGHTS = (0.5, 0.3, 0.12, 0.08)
_KEY_NOTES = (
    "钥匙盒在单元门右侧电表箱内，密码在站长处登记",
    "钥匙盒挂在防盗门把手上，密码在站长处登记",
    "备用钥匙放在对门邻居家",
    "备用钥匙在小区门卫室，出示工作证领取",
    "子女留有备用钥匙，需先电话联系",
    "无备用钥匙，紧急时联系物业开锁",
)
_EXTRA_NOTES = ("家中养狗，进门前请先敲门", "老人耳背，请多敲几次门")
_FLAT_NOTES = (
    "小区门卫24小时值班，出示工作证可进入",
    "楼道灯坏了，夜间请带手电",
    "单元门禁按房号呼叫，无人应答时拨物业电话",
)
_COURTYARD_NOTES = ("院门朝巷子东侧开", "院门晚上十点后上锁，敲门请大声")
_FIRST_RELATIONS = ("儿子", "女儿")
_OTHER_RELATIONS = ("儿子", "女儿", "儿媳", "女婿", "孙子", "孙女", "外孙女", "侄子", "外甥女")
_OWN_SURNAME_RELATIONS = frozenset({"儿子", "女儿", "孙子", "孙女", "侄子"})
_MALE_RELATIONS = frozenset({"儿子", "女婿", "孙子", "侄子"})
_TRANSPORT = (Transport.WALK, Transport.BICYCLE, Transport.EBIKE, Transport.CAR)
_TRANSPORT_WEIGHTS = (0.2, 0.15, 0.45, 0.2)


class _Dice:
    """Random choices built on ``Random.random()`` alone (for an int or str seed).

    Python only promises that ``random()`` keeps producing the same sequence for a seed;
    ``choice``, ``randint`` and friends may change between versions, and the demo district
    must stay the same wherever it is built.
    """

    def __init__(self, seed: int | str) -> None:
        self._random = random.Random(seed)

    def unit(self) -> float:
        return self._random.random()

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + min(int(self._random.random() * (high - low + 1)), high - low)

    def pick(self, options: Sequence[_T]) -> _T:
        return options[self.between(0, len(options) - 1)]

    def weighted(self, options: Sequence[_T], weights: Sequence[float]) -> _T:
        target = self._random.random() * sum(weights)
        for option, weight in zip(options, weights, strict=True):
            target -= weight
            if target < 0:
                return option
        return options[-1]

    def chance(self, probability: float) -> bool:
        return self._random.random() < probability

    def some(self, options: Sequence[_T], count: int) -> tuple[_T, ...]:
        """``count`` distinct options, in the order they appear in ``options``."""
        chosen: list[int] = []
        while len(chosen) < count:
            index = self.between(0, len(options) - 1)
            if index not in chosen:
                chosen.append(index)
        return tuple(options[i] for i in sorted(chosen))


def _apart_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return distance_m(Place(lat1, lon1), Place(lat2, lon2))


def stations_by_distance(
    stations: Sequence[DemoStation], lat: float, lon: float
) -> list[DemoStation]:
    """Stations ordered nearest first (ties broken by code)."""
    return sorted(stations, key=lambda s: (_apart_m(lat, lon, s.lat, s.lon), s.code))


class _Phones:
    """Unique invented mobile numbers in E.164."""

    def __init__(self, dice: _Dice) -> None:
        self._dice = dice
        self._used: set[str] = set()

    def mobile(self) -> str:
        while True:
            number = (
                "+86"
                + self._dice.pick(_MOBILE_PREFIXES)
                + f"{self._dice.between(0, 99_999_999):08d}"
            )
            if number not in self._used:
                self._used.add(number)
                return number

    def landline(self) -> str:
        while True:
            number = f"+869718{self._dice.between(0, 999_999):06d}"
            if number not in self._used:
                self._used.add(number)
                return number


# Households' numbers are drawn from ranges no station, carer or relative uses, so they are
# unique in the district whatever its size or team: the base units' SIMs from 147 (data
# SIMs), landlines from Xining's 0971-6, residents' mobiles from prefixes left out above.
_UNIT_PREFIX = "+86147"
_LANDLINE_PREFIX = "+869716"
_RESIDENT_PREFIXES = ("134", "182", "183", "184", "185", "198")
# How likely a home has a landline, and a resident their own mobile, by mobility.
_LANDLINE_CHANCE = 0.55
_MOBILE_CHANCE = {"independent": 0.7, "walking_aid": 0.6, "wheelchair": 0.5, "bedbound": 0.2}


class _HomeNumbers:
    """Unique invented household numbers in E.164, on their own dice: the rest of the
    district is drawn as it was before households had numbers."""

    def __init__(self, seed: int) -> None:
        self._dice = _Dice(f"{seed}:household numbers")
        self._used: set[str] = set()

    def _unique(self, prefix: str, digits: int) -> str:
        while True:
            number = prefix + f"{self._dice.between(0, 10**digits - 1):0{digits}d}"
            if number not in self._used:
                self._used.add(number)
                return number

    def of(self, household: DemoHousehold) -> tuple[HouseholdNumber, ...]:
        """The base unit's SIM, then maybe a landline, then residents' own mobiles."""
        found = [(PhoneKind.UNIT, self._unique(_UNIT_PREFIX, 8), "")]
        if self._dice.chance(_LANDLINE_CHANCE):
            found.append((PhoneKind.LANDLINE, self._unique(_LANDLINE_PREFIX, 6), ""))
        for resident in household.residents:
            if self._dice.chance(_MOBILE_CHANCE[resident.mobility]):
                prefix = "+86" + self._dice.pick(_RESIDENT_PREFIXES)
                found.append((PhoneKind.MOBILE, self._unique(prefix, 8), resident.name))
        return tuple(
            HouseholdNumber(position, kind, number, label)
            for position, (kind, number, label) in enumerate(found, start=1)
        )


def _build_stations(phones: _Phones) -> tuple[DemoStation, ...]:
    stations: list[DemoStation] = []
    for site in _SITES:
        others = [other for other in _SITES if other.code != site.code]
        backup = min(others, key=lambda o: (_apart_m(site.lat, site.lon, o.lat, o.lon), o.code))
        stations.append(
            DemoStation(
                code=site.code,
                name=f"{site.district}{site.street}日间照料中心",
                district=site.district,
                address=f"{CITY}{site.district}{site.street}{site.number}号",
                lat=site.lat,
                lon=site.lon,
                phone=phones.landline(),
                backup=backup.code,
            )
        )
    return tuple(stations)


def _person_name(dice: _Dice, surname: str, given_names: Sequence[str]) -> str:
    return surname + dice.pick(given_names)


def _build_carers(
    dice: _Dice,
    phones: _Phones,
    stations: Sequence[DemoStation],
    load: dict[str, int],
    team_size: int,
) -> tuple[DemoCarer, ...]:
    # The busiest stations get the carers left over after an even share.
    base, extra = divmod(team_size, len(stations))
    busiest = sorted(stations, key=lambda s: (-load[s.code], s.code))[:extra]
    busiest_codes = {s.code for s in busiest}
    names: set[str] = set()
    carers: list[DemoCarer] = []
    for station in stations:
        team = base + (1 if station.code in busiest_codes else 0)
        for slot in range(team):
            # Distinct names while there are enough; a team larger than the names on
            # offer (thousands, for load tests) has namesakes, as real ones do.
            for _attempt in range(20):
                woman = dice.chance(0.7)
                name = _person_name(
                    dice, dice.pick(_SURNAMES), _YOUNGER_WOMEN if woman else _YOUNGER_MEN
                )
                if name not in names:
                    break
            names.add(name)
            pattern = _STATION_ROTA[slot % len(_STATION_ROTA)]
            lead = slot == 0
            if lead:
                skills = tuple(sorted({"nursing", dice.pick(SKILLS)}, key=SKILLS.index))
                transport = dice.pick((Transport.EBIKE, Transport.CAR))
            else:
                skills = dice.some(SKILLS, dice.between(1, 3))
                transport = (
                    dice.pick((Transport.EBIKE, Transport.CAR))
                    if pattern == "NIGHT"
                    else dice.weighted(_TRANSPORT, _TRANSPORT_WEIGHTS)
                )
            carers.append(
                DemoCarer(
                    code=f"C{len(carers) + 1:03d}",
                    name=name,
                    phone=phones.mobile(),
                    role=(CarerRole.STATION_LEAD if lead else CarerRole.CARER).value,
                    station=station.code,
                    skills=skills,
                    transport=transport.value,
                    shift_pattern=pattern,
                )
            )
    return tuple(carers)


def _place(dice: _Dice, station: DemoStation) -> tuple[float, float]:
    # Uniform over a disc around the station.
    radius = _HOUSEHOLD_RADIUS_M * math.sqrt(dice.unit())
    bearing = 2 * math.pi * dice.unit()
    dlat = radius * math.cos(bearing) / 111_320.0
    dlon = radius * math.sin(bearing) / (111_320.0 * math.cos(math.radians(station.lat)))
    return round(station.lat + dlat, 6), round(station.lon + dlon, 6)


def _address(dice: _Dice, station: DemoStation, streets: Sequence[str]) -> tuple[str, int]:
    """An address near ``station`` and the floor it is on (0 for a courtyard house)."""
    street = dice.pick(streets)
    number = dice.between(1, 260)
    prefix = f"{CITY}{station.district}{street}{number}号"
    if dice.chance(0.1):
        return f"{prefix}院{dice.between(1, 12)}户", 0
    floor = dice.between(1, 7)
    return (
        f"{prefix}{dice.pick(_COMPOUNDS)}{dice.between(1, 24)}号楼"
        f"{dice.between(1, 4)}单元{floor}0{dice.between(1, 4)}室",
        floor,
    )


def _access_notes(dice: _Dice, floor: int, wheelchair: bool) -> str:
    notes = [dice.pick(_KEY_NOTES)]
    if dice.chance(0.5):
        notes.append(dice.pick(_FLAT_NOTES if floor else _COURTYARD_NOTES))
    if dice.chance(0.2):
        notes.append(dice.pick(_EXTRA_NOTES))
    if floor >= 4 and dice.chance(0.6):
        notes.append(f"无电梯，{floor}楼" + ("，需两人抬轮椅" if wheelchair else ""))
    return "；".join(notes)


def _residents(dice: _Dice) -> tuple[tuple[DemoResident, ...], str | None]:
    """The residents, and the husband's surname when a man lives here."""
    first_man = dice.chance(0.45)
    born = dice.between(1930, 1958)
    people = [(first_man, born)]
    if dice.chance(0.4):
        people.append((not first_man, max(1930, min(1958, born + dice.between(-5, 5)))))
    residents = []
    husband_surname = None
    for man, birth_year in people:
        surname = dice.pick(_SURNAMES)
        if man:
            husband_surname = surname
        notes = dice.some(_CARE_NOTES, dice.weighted((0, 1, 2), (0.25, 0.5, 0.25)))
        residents.append(
            DemoResident(
                name=_person_name(dice, surname, _ELDER_MEN if man else _ELDER_WOMEN),
                birth_year=birth_year,
                care_notes="；".join(notes),
                mobility=dice.weighted(MOBILITY, _MOBILITY_WEIGHTS),
            )
        )
    return tuple(residents), husband_surname


def _contacts(dice: _Dice, phones: _Phones, family_surname: str) -> tuple[DemoFamilyContact, ...]:
    contacts = []
    for position in range(1, dice.weighted((1, 2, 3), (0.3, 0.45, 0.25)) + 1):
        relation = dice.pick(_FIRST_RELATIONS if position == 1 else _OTHER_RELATIONS)
        surname = family_surname if relation in _OWN_SURNAME_RELATIONS else dice.pick(_SURNAMES)
        given = _YOUNGER_MEN if relation in _MALE_RELATIONS else _YOUNGER_WOMEN
        contacts.append(
            DemoFamilyContact(
                position=position,
                name=_person_name(dice, surname, given),
                relation=relation,
                phone=phones.mobile(),
            )
        )
    return tuple(contacts)


def _build_households(
    dice: _Dice, phones: _Phones, stations: Sequence[DemoStation], count: int
) -> tuple[DemoHousehold, ...]:
    streets = {site.code: site.streets for site in _SITES}
    addresses: set[str] = set()
    households: list[DemoHousehold] = []
    for number in range(1, count + 1):
        anchor = dice.weighted(stations, _STATION_WEIGHTS)
        lat, lon = _place(dice, anchor)
        home, backup = stations_by_distance(stations, lat, lon)[:2]
        while True:
            address, floor = _address(dice, home, streets[home.code])
            if address not in addresses:
                addresses.add(address)
                break
        residents, husband_surname = _residents(dice)
        # Children carry the father's surname when he lives here; otherwise any.
        family_surname = husband_surname or dice.pick(_SURNAMES)
        code = f"H{number:04d}"
        households.append(
            DemoHousehold(
                code=code,
                address=address,
                lat=lat,
                lon=lon,
                home_station=home.code,
                backup_station=backup.code,
                access_notes=_access_notes(
                    dice, floor, any(r.mobility == "wheelchair" for r in residents)
                ),
                residents=residents,
                contacts=_contacts(dice, phones, family_surname),
                devices=(
                    DemoDevice(f"BU-{code}", DeviceKind.BASE_UNIT.value),
                    DemoDevice(f"CB-{code}", DeviceKind.CALL_BUTTON.value),
                ),
            )
        )
    return tuple(households)


class DistrictShapeError(ValueError):
    """A district size or station choice that cannot be built; the message says why."""


@functools.lru_cache(maxsize=4)
def build_demo_district(
    seed: int = DEMO_SEED,
    households: int = 900,
    carers: int = _CARERS,
    staffed: tuple[str, ...] | None = None,
) -> DemoDistrict:
    """The demo district for ``seed``, built in memory; the same seed gives the same district.

    ``carers`` is the team size, shared out over the ``staffed`` stations (codes; all nine
    when None), the busiest first; stations left out keep their households but have no
    carers, as when a district closes or never opens a post. The households, residents
    and their phones do not depend on ``carers`` or ``staffed``, so staffing what-ifs
    compare the same district."""
    if households < 1:
        raise DistrictShapeError(f"a district needs at least 1 household, not {households}")
    known = [site.code for site in _SITES]
    chosen = known if staffed is None else list(staffed)
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise DistrictShapeError(
            f"no such station {', '.join(unknown)}: the stations are {', '.join(known)}"
        )
    if not chosen:
        raise DistrictShapeError("at least one station must be staffed")
    if carers < len(chosen):
        raise DistrictShapeError(
            f"{carers} carers cannot staff {len(chosen)} stations: at least one each"
        )
    dice = _Dice(seed)
    phones = _Phones(dice)
    stations = _build_stations(phones)
    homes = _build_households(dice, phones, stations, households)
    numbers = _HomeNumbers(seed)
    homes = tuple(replace(home, phones=numbers.of(home)) for home in homes)
    load = {s.code: 0 for s in stations}
    for household in homes:
        load[household.home_station] += 1
    # Carers come after the households, so the team never reshapes the households.
    team = _build_carers(
        dice,
        phones,
        [s for s in stations if s.code in chosen],
        load,
        carers,
    )
    return DemoDistrict(
        seed=seed,
        stations=stations,
        shift_patterns=_SHIFT_PATTERNS,
        carers=team,
        households=homes,
    )


# --- writing and reading a database ---------------------------------------------------


def _rows(district: DemoDistrict) -> dict[str, list[dict[str, Any]]]:
    """Table name -> rows, with ids numbered from 1 in district order."""
    station_id = {s.code: i for i, s in enumerate(district.stations, start=1)}
    rows: dict[str, list[dict[str, Any]]] = {
        "stations": [
            {
                "id": station_id[s.code],
                "code": s.code,
                "name": s.name,
                "address": s.address,
                "lat": s.lat,
                "lon": s.lon,
                "phone": s.phone,
                "backup_station_id": None,
            }
            for s in district.stations
        ],
        "shift_patterns": [
            {
                "code": p.code,
                "name": p.name,
                "starts_at": p.starts_at,
                "duration_minutes": p.duration_minutes,
                "weekdays": list(p.weekdays),
            }
            for p in district.shift_patterns
        ],
        "carers": [
            {
                "id": i,
                "code": c.code,
                "name": c.name,
                "phone": c.phone,
                "language": c.language,
                "role": c.role,
                "station_id": station_id[c.station],
                "skills": list(c.skills),
                "transport": c.transport,
                "shift_pattern_code": c.shift_pattern,
                "active": True,
            }
            for i, c in enumerate(district.carers, start=1)
        ],
        "households": [],
        "residents": [],
        "family_contacts": [],
        "devices": [],
        "household_phones": [],
    }
    for household_id, h in enumerate(district.households, start=1):
        rows["households"].append(
            {
                "id": household_id,
                "code": h.code,
                "address": h.address,
                "lat": h.lat,
                "lon": h.lon,
                "home_station_id": station_id[h.home_station],
                "backup_station_id": station_id[h.backup_station],
                "access_notes": h.access_notes,
            }
        )
        for r in h.residents:
            rows["residents"].append(
                {
                    "id": len(rows["residents"]) + 1,
                    "household_id": household_id,
                    "name": r.name,
                    "birth_year": r.birth_year,
                    "care_notes": r.care_notes,
                    "mobility": r.mobility,
                }
            )
        for c in h.contacts:
            rows["family_contacts"].append(
                {
                    "id": len(rows["family_contacts"]) + 1,
                    "household_id": household_id,
                    "position": c.position,
                    "name": c.name,
                    "relation": c.relation,
                    "phone": c.phone,
                    "language": c.language,
                }
            )
        for d in h.devices:
            rows["devices"].append(
                {
                    "id": len(rows["devices"]) + 1,
                    "serial": d.serial,
                    "kind": d.kind,
                    "household_id": household_id,
                    "battery_pct": None,
                    "last_seen_at": None,
                    "online": False,
                }
            )
        for n in h.phones:
            number = {**asdict(n), "kind": n.kind.value, "household_id": household_id}
            rows["household_phones"].append({"id": len(rows["household_phones"]) + 1, **number})
    return rows


_MODELS = {
    "stations": Station,
    "shift_patterns": ShiftPattern,
    "carers": Carer,
    "households": Household,
    "residents": Resident,
    "family_contacts": FamilyContact,
    "devices": Device,
    "household_phones": HouseholdPhone,
}


async def _insert(connection: AsyncConnection, district: DemoDistrict) -> None:
    rows = _rows(district)
    for table, table_rows in rows.items():
        # Many rows a statement: a row a statement, PostgreSQL's registry version
        # trigger made seeding slow down as it went (store/db.py, insert_rows).
        await insert_rows(connection, _MODELS[table], table_rows)
    # Backups point both ways between neighbours, so they are set once all stations exist.
    station_id = {s.code: i for i, s in enumerate(district.stations, start=1)}
    await connection.execute(
        update(Station)
        .where(Station.id == bindparam("station_id"))
        .values(backup_station_id=bindparam("backup_id"))
        .execution_options(synchronize_session=False),
        [
            {"station_id": station_id[s.code], "backup_id": station_id[s.backup]}
            for s in district.stations
        ],
    )
    if connection.dialect.name == "postgresql":
        # Explicit ids leave the serial sequences behind; move them past the seeded rows
        # so rows added later get fresh ids.
        for table in rows:
            if table == "shift_patterns":
                continue
            await connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )


async def seed_demo_district(
    url: str,
    seed: int = DEMO_SEED,
    *,
    households: int = 900,
    carers: int = _CARERS,
    staffed: tuple[str, ...] | None = None,
) -> SeedSummary:
    """Write the demo district (sized as :func:`build_demo_district`) into the empty,
    migrated database at ``url``.

    Raises SchemaNotCurrentError when the schema is missing (run ``callcenter db upgrade``)
    and DistrictAlreadySeededError when the database already has households.
    """
    started = _time.perf_counter()
    district = build_demo_district(seed, households, carers, staffed)
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await require_current_schema(connection)
            existing = await connection.scalar(select(func.count()).select_from(Household))
            if existing:
                raise DistrictAlreadySeededError(existing)
            await _insert(connection, district)
    finally:
        await engine.dispose()
    return SeedSummary(
        seed=seed,
        stations=len(district.stations),
        shift_patterns=len(district.shift_patterns),
        carers=len(district.carers),
        households=len(district.households),
        residents=sum(len(h.residents) for h in district.households),
        family_contacts=sum(len(h.contacts) for h in district.households),
        devices=sum(len(h.devices) for h in district.households),
        household_phones=sum(len(h.phones) for h in district.households),
        seconds=_time.perf_counter() - started,
    )


async def load_device_directory(url: str) -> list[tuple[str, str, str]]:
    """(household code, serial, kind) for every device in the database at ``url``."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await require_current_schema(connection)
            result = await connection.execute(
                select(Household.code, Device.serial, Device.kind)
                .join(Household, Device.household_id == Household.id)
                .order_by(Household.code, Device.serial)
            )
            return [(code, serial, kind) for code, serial, kind in result]
    finally:
        await engine.dispose()
