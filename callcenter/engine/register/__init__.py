"""Changes to the district's register, one record at a time, each in one transaction
with its audit row (who, when, the record before and after).

Every change is checked by the register's rules (domain/register.py) against what the
database holds, and refused whole with the problems found. What a change does to the
desk is the database's business: the registry triggers (migrations 0008, 0018) bump the
registry's version, which ingest and the desk read; the caller also tells the desk's
district to read again at once (``District.invalidate``).

A device's broker login is issued, moved and revoked here too, through ``DeviceLogins``
(engine/device_logins.py; ``NoDeviceLogins`` for a broker without them), inside the
transaction that records the change: a login the broker did not take leaves the
register as it was, and a commit that fails after the broker took a login takes the
login back.
"""

from callcenter.engine.register.changes import (
    REGISTER_LOCK,
    BrokerRefusedError,
    Change,
    RecordInUseError,
    RecordNotFoundError,
    RegisterRefusedError,
    known,
    record_json,
    station_codes,
)
from callcenter.engine.register.devices import (
    DeviceView,
    add_device,
    devices,
    move_device,
    renew_login,
    retire_device,
)
from callcenter.engine.register.households import (
    contact_record,
    household_record,
    household_summaries,
    read_household,
    resident_record,
    save_household,
)
from callcenter.engine.register.policies import policy_rows, set_policy
from callcenter.engine.register.rota import RotaGap, RotaShift, StationRota, rota
from callcenter.engine.register.staff import (
    carer_record,
    carers,
    clear_roster,
    pattern_record,
    roster,
    roster_record,
    save_carer,
    save_shift_pattern,
    save_station,
    set_roster,
    shift_patterns,
    station_record,
    stations,
)

__all__ = [
    "REGISTER_LOCK",
    "BrokerRefusedError",
    "Change",
    "DeviceView",
    "RecordInUseError",
    "RecordNotFoundError",
    "RegisterRefusedError",
    "RotaGap",
    "RotaShift",
    "StationRota",
    "add_device",
    "carer_record",
    "carers",
    "clear_roster",
    "contact_record",
    "devices",
    "household_record",
    "household_summaries",
    "known",
    "move_device",
    "pattern_record",
    "policy_rows",
    "read_household",
    "record_json",
    "renew_login",
    "resident_record",
    "retire_device",
    "roster",
    "roster_record",
    "rota",
    "save_carer",
    "save_household",
    "save_shift_pattern",
    "save_station",
    "set_policy",
    "set_roster",
    "shift_patterns",
    "station_codes",
    "station_record",
    "stations",
]
