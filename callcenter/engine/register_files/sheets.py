"""The register as a spreadsheet: its sheets, their columns in order, what each column
holds (in zh and en, for the template's notes sheet and docs/register.md), and how a
cell's text is written and read.

Every cell is text. The export writes each value as text (a phone number stays
"+8613912345678", a time "07:00", never a number or a fraction of a day), and the
import reads what Excel typed just as well (a number, a date, a time, TRUE/FALSE). A list
(conditions, medicines, allergies, skills, weekdays) is one cell, its items separated by
``;`` (a full-width ``；`` is read the same).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time

# Items of a list in one cell; the full-width semicolon a Chinese keyboard types is read too.
SEPARATOR = ";"
_SEPARATORS = re.compile("[;；]")
YES, NO = "yes", "no"
_TRUE = frozenset({"yes", "y", "true", "1", "是", "对"})
_FALSE = frozenset({"no", "n", "false", "0", "否", "不"})


@dataclass(frozen=True)
class Column:
    """One column of a sheet: its name in the header row, an example value and what it
    holds, in zh and en."""

    name: str
    example: str
    zh: str
    en: str


@dataclass(frozen=True)
class SheetSpec:
    """One sheet: its name (also the CSV file's, ``<name>.csv``) and its columns."""

    name: str
    zh: str
    en: str
    columns: tuple[Column, ...]
    # Further example rows for the template, beyond the columns' own examples.
    more_examples: tuple[tuple[str, ...], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


_LIST_ZH = "，多项用分号 ; 隔开"
_LIST_EN = "; several separated by ;"
_BOOL_ZH = "yes 或 no（也可写 是/否、true/false、1/0）"
_BOOL_EN = "yes or no (是/否, true/false and 1/0 are read too)"
_HOUSEHOLD_ZH = "所属住户的代码，须在本文件的 households 表中"
_HOUSEHOLD_EN = "the household's code; the household must be in this file's households sheet"

STATIONS = SheetSpec(
    "stations",
    "服务站",
    "service stations",
    (
        Column(
            "code",
            "S01",
            "服务站代码：1-16 个字母、数字、_ 或 -；按代码新增或更新",
            "the station's code: 1-16 of A-Z a-z 0-9 _ -; a row adds or updates the station "
            "with this code",
        ),
        Column("name", "城东日间照料中心", "名称", "name"),
        Column("address", "西宁市城东区八一路 12 号", "地址", "address"),
        Column("lat", "36.6171", "纬度（-90 到 90）", "latitude (-90 to 90)"),
        Column("lon", "101.7782", "经度（-180 到 180）", "longitude (-180 to 180)"),
        Column(
            "phone",
            "+869718100001",
            "电话，国际格式，如 +8613912345678",
            "phone, international form such as +8613912345678",
        ),
        Column(
            "backup_station",
            "S02",
            "备用服务站的代码（本站无法出勤时由它接手）；可空",
            "the backup station's code (who serves when this one cannot); may be empty",
        ),
    ),
    # A household needs a backup station besides its home one.
    more_examples=(
        (
            "S02",
            "城西日间照料中心",
            "西宁市城西区五四大街 8 号",
            "36.6252",
            "101.7570",
            "+869718100002",
            "S01",
        ),
    ),
)
SHIFT_PATTERNS = SheetSpec(
    "shift_patterns",
    "班次",
    "shift patterns",
    (
        Column(
            "code",
            "EARLY",
            "班次代码：1-16 个字母、数字、_ 或 -",
            "the pattern's code: 1-16 of A-Z a-z 0-9 _ -",
        ),
        Column("name", "早班", "名称", "name"),
        Column("starts_at", "07:00", "开始时间 HH:MM（当地时间）", "starts at HH:MM (local time)"),
        Column("duration_minutes", "480", "时长（分钟，1-1440）", "length in minutes (1-1440)"),
        Column(
            "weekdays",
            "1;2;3;4;5",
            "星期几上班：1=周一 … 7=周日" + _LIST_ZH,
            "weekdays worked: 1 = Monday ... 7 = Sunday" + _LIST_EN,
        ),
    ),
)
CARERS = SheetSpec(
    "carers",
    "护理员",
    "carers",
    (
        Column(
            "code",
            "C001",
            "护理员代码：1-16 个字母、数字、_ 或 -",
            "the carer's code: 1-16 of A-Z a-z 0-9 _ -",
        ),
        Column("name", "王芳", "姓名", "name"),
        Column(
            "phone",
            "+8613800000001",
            "手机号，国际格式；每位护理员的号码不能重复",
            "mobile, international form; no two carers share one",
        ),
        Column("station", "S01", "所属服务站的代码", "their station's code"),
        Column("shift_pattern", "EARLY", "班次代码", "their shift pattern's code"),
        Column("language", "zh", "短信语言：zh 或 en", "language of their texts: zh or en"),
        Column("role", "carer", "carer（护理员）或 station_lead（站长）", "carer or station_lead"),
        Column("skills", "lift;dementia", "技能" + _LIST_ZH, "skills" + _LIST_EN),
        Column(
            "transport",
            "ebike",
            "出行方式：walk、bicycle、ebike 或 car",
            "how they travel: walk, bicycle, ebike or car",
        ),
        Column("active", YES, "是否在职：" + _BOOL_ZH, "still working: " + _BOOL_EN),
    ),
)
HOUSEHOLDS = SheetSpec(
    "households",
    "住户",
    "households",
    (
        Column(
            "code",
            "H0001",
            "住户代码（也是设备 MQTT 主题的一级）：1-32 个字母、数字、_ 或 -",
            "the household's code (a level of its devices' MQTT topics): 1-32 of A-Z a-z 0-9 _ -",
        ),
        Column("address", "西宁市城东区八一路 3 号 2 单元 501", "地址", "address"),
        Column("lat", "36.6180", "纬度", "latitude"),
        Column("lon", "101.7790", "经度", "longitude"),
        Column("home_station", "S01", "所属服务站的代码", "the home station's code"),
        Column(
            "backup_station",
            "S02",
            "备用服务站的代码，须与所属服务站不同",
            "the backup station's code, not the home station",
        ),
        Column(
            "access_notes",
            "钥匙在隔壁 502",
            "进门须知（钥匙、门禁、宠物）；可空",
            "how to get in (keys, door codes, pets); may be empty",
        ),
    ),
)
RESIDENTS = SheetSpec(
    "residents",
    "居民（每户至少一位）",
    "residents (at least one a household)",
    (
        Column("household", "H0001", _HOUSEHOLD_ZH, _HOUSEHOLD_EN),
        Column(
            "name",
            "李秀英",
            "姓名；同一户内按姓名对应已有居民",
            "name; matches the household's resident of that name",
        ),
        Column(
            "birth_year",
            "1941",
            "出生年份（知道出生日期时可空）",
            "birth year (may be empty when the birth date is given)",
        ),
        Column(
            "birth_date", "", "出生日期 YYYY-MM-DD；可空", "birth date YYYY-MM-DD; may be empty"
        ),
        Column("sex", "female", "female、male 或空", "female, male or empty"),
        Column(
            "mobility",
            "walking_aid",
            "independent、walking_aid、wheelchair 或 bedbound",
            "independent, walking_aid, wheelchair or bedbound",
        ),
        Column("conditions", "高血压;糖尿病", "疾病" + _LIST_ZH, "conditions" + _LIST_EN),
        Column("medicines", "二甲双胍", "用药" + _LIST_ZH, "medicines" + _LIST_EN),
        Column("allergies", "青霉素", "过敏" + _LIST_ZH, "allergies" + _LIST_EN),
        Column("doctor", "", "医生；可空", "doctor; may be empty"),
        Column("clinic", "", "诊所；可空", "clinic; may be empty"),
        Column(
            "clinic_phone",
            "",
            "诊所电话，国际格式；可空",
            "clinic's phone, international form; may be empty",
        ),
        Column(
            "do_not_resuscitate", NO, "不做心肺复苏：" + _BOOL_ZH, "do not resuscitate: " + _BOOL_EN
        ),
        Column("hospital", "", "希望送往的医院；可空", "the hospital they want; may be empty"),
        Column("wishes", "", "其他意愿；可空", "other wishes; may be empty"),
        Column(
            "speaks",
            "青海话",
            "与其交谈用的语言或方言；可空",
            "the language or dialect to speak to them in; may be empty",
        ),
        Column(
            "hearing",
            "impaired",
            "听力：good、impaired、none 或空",
            "hearing: good, impaired, none or empty",
        ),
        Column(
            "sight", "", "视力：good、impaired、none 或空", "sight: good, impaired, none or empty"
        ),
        Column("care_notes", "", "护理备注；可空", "care notes; may be empty"),
    ),
)
CONTACTS = SheetSpec(
    "contacts",
    "联系人（按行的先后顺序拨打）",
    "contacts (called in the order of their rows)",
    (
        Column("household", "H0001", _HOUSEHOLD_ZH, _HOUSEHOLD_EN),
        Column("name", "张伟", "姓名", "name"),
        Column("relation", "儿子", "关系", "relation"),
        Column("phone", "+8613900000001", "电话，国际格式", "phone, international form"),
        Column("phone_alt", "", "第二个号码；可空", "a second number; may be empty"),
        Column("language", "zh", "短信语言：zh 或 en", "language: zh or en"),
        Column("holds_key", YES, "有钥匙：" + _BOOL_ZH, "holds a key: " + _BOOL_EN),
        Column(
            "call_from",
            "",
            "可呼叫时段开始 HH:MM；与结束同时填写或都空",
            "may be called from HH:MM; give both ends or neither",
        ),
        Column("call_until", "", "可呼叫时段结束 HH:MM", "may be called until HH:MM"),
        Column(
            "portal",
            YES,
            "可登录家属页面：" + _BOOL_ZH,
            "may sign in to the family portal: " + _BOOL_EN,
        ),
    ),
)
HOUSEHOLD_PHONES = SheetSpec(
    "household_phones",
    "住户电话（按行的先后顺序拨打）",
    "household phones (tried in the order of their rows)",
    (
        Column("household", "H0001", _HOUSEHOLD_ZH, _HOUSEHOLD_EN),
        Column(
            "kind",
            "unit",
            "unit（基站 SIM 卡）、landline（座机）或 mobile（居民手机）",
            "unit (the base unit's SIM), landline or mobile (a resident's own)",
        ),
        Column("number", "+8614700000001", "号码，国际格式", "number, international form"),
        Column(
            "label",
            "",
            "谁的号码，例如居民姓名；可空",
            "whose it is, e.g. the resident's name; may be empty",
        ),
    ),
)
DEVICES = SheetSpec(
    "devices",
    "设备",
    "devices",
    (
        Column(
            "serial",
            "BU-0001",
            "序列号（设备 MQTT 主题的一级）：1-64 个字母、数字、_ 或 -",
            "serial (a level of the device's MQTT topics): 1-64 of A-Z a-z 0-9 _ -",
        ),
        Column(
            "kind",
            "base_unit",
            "base_unit、call_button 或 pager",
            "base_unit, call_button or pager",
        ),
        Column(
            "household",
            "H0001",
            "所属住户的代码（本文件或系统中已有）",
            "the household's code (in this file or already registered)",
        ),
    ),
)
ROSTER = SheetSpec(
    "roster",
    "排班调整（某人某天休息或换班）",
    "duty roster (a carer's day off or other shift on one date)",
    (
        Column("carer", "C001", "护理员代码", "the carer's code"),
        Column("day", "2026-12-24", "日期 YYYY-MM-DD", "date YYYY-MM-DD"),
        Column("on_duty", NO, "当天上班：" + _BOOL_ZH, "on duty that day: " + _BOOL_EN),
        Column(
            "shift_pattern",
            "",
            "上班时的班次代码；休息日须空",
            "the pattern worked that day; empty on a day off",
        ),
        Column("note", "年假", "备注；可空", "note; may be empty"),
    ),
)

# In the order a file holds them, and the order they are written in: what a sheet names
# comes before it.
SHEETS: tuple[SheetSpec, ...] = (
    STATIONS,
    SHIFT_PATTERNS,
    CARERS,
    HOUSEHOLDS,
    RESIDENTS,
    CONTACTS,
    HOUSEHOLD_PHONES,
    DEVICES,
    ROSTER,
)
BY_NAME = {sheet.name: sheet for sheet in SHEETS}
# A household is imported whole: with it come its residents, contacts and phones.
HOUSEHOLD_PARTS = (RESIDENTS.name, CONTACTS.name, HOUSEHOLD_PHONES.name)
# The template's explanations; a sheet of this name in a file being imported is skipped.
NOTES = "notes"


# --- a cell's text -------------------------------------------------------------------


def cell_text(value: object) -> str:
    """What a cell holds, as the text the export would have written: Excel's numbers,
    dates, times and booleans read as the text a person would type for them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M") if value.second == 0 else value.isoformat()
    return str(value).strip()


def yes_no(value: bool) -> str:
    return YES if value else NO


def listed(items: Iterable[object]) -> str:
    return SEPARATOR.join(str(item) for item in items)


def clock(value: time | None) -> str:
    return "" if value is None else value.strftime("%H:%M")


def number(value: float | None) -> str:
    """A coordinate as text that reads back to the same float ("" for none)."""
    return "" if value is None else repr(float(value))


class UnreadableCellError(ValueError):
    """A cell's text is not a value of its column's kind; ``facts`` for its words."""

    def __init__(self, code: str, **facts: str | int) -> None:
        super().__init__(code)
        self.code = code
        self.facts = facts


def _shown(text: str) -> str:
    return text if len(text) <= 40 else text[:39] + "…"


def read_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UnreadableCellError("bad_value", value=_shown(text)) from None
    if not math.isfinite(value):
        raise UnreadableCellError("bad_value", value=_shown(text))
    return value


_WHOLE = re.compile(r"[+-]?[0-9]{1,9}")


def read_int(text: str) -> int:
    if _WHOLE.fullmatch(text) is None:
        raise UnreadableCellError("bad_value", value=_shown(text))
    return int(text)


def read_date(text: str) -> date:
    if len(text) != 10:
        raise UnreadableCellError("bad_value", value=_shown(text))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UnreadableCellError("bad_value", value=_shown(text)) from None


_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])(?::00)?")


def read_time(text: str) -> time:
    found = _CLOCK.fullmatch(text)
    if found is None:
        raise UnreadableCellError("bad_value", value=_shown(text))
    return time(int(found.group(1)), int(found.group(2)))


def read_bool(text: str) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise UnreadableCellError("one_of", allowed=f"{YES}, {NO}")


def read_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _SEPARATORS.split(text) if item.strip())
