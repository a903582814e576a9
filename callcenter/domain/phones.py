"""Phone numbers: the one rule for what a number the desk dials or texts looks like, and
the numbers that reach a household, in the order they are tried.

Every number the centre keeps or is given (the configuration's, operators', carers',
family contacts', a household's, Twilio's ``From`` and ``To``) is checked here, so a
number that passes one check passes them all.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# International (E.164) form: "+", then the country code and the number, 6 to 15 digits
# in all. No country code starts with 0; ASCII digits only (a full-width １ is not dialled).
E164 = re.compile(r"\+[1-9][0-9]{5,14}")
# How to write one, for the messages that refuse a number.
E164_HOW = (
    '"+", the country code and the number, 6 to 15 digits without spaces or dashes, '
    'e.g. "+8613912345678"'
)


def is_e164(text: str) -> bool:
    """Whether ``text`` is a phone number in international (E.164) form, exactly."""
    return E164.fullmatch(text) is not None


class PhoneKind(enum.StrEnum):
    """What kind of phone a household's number rings."""

    # The base unit's own SIM: it answers hands-free, beside the button that was pressed.
    UNIT = "unit"
    LANDLINE = "landline"
    # A resident's own mobile (the number's label says whose).
    MOBILE = "mobile"


@dataclass(frozen=True)
class HouseholdNumber:
    """One number that reaches a household; ``position`` 1 is tried first."""

    position: int
    kind: PhoneKind
    number: str
    # Whose it is, e.g. the resident whose mobile it is; "" when it is the home's.
    label: str = ""
