"""The one rule for phone numbers (domain/phones.py), and the places that check numbers
keeping to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.config import ConfigError, load_config
from callcenter.domain.phones import is_e164
from callcenter.engine.accounts import OperatorAccountError, _check
from callcenter.web.twilio_form import SHAPES

WRITTEN_WELL = ["+8613912345678", "+869718123456", "+861064812345678", "+4930123456", "+123456"]
WRITTEN_BADLY = [
    "",
    "13912345678",  # no "+"
    "+86 139 1234 5678",  # spaces
    "+86-139-12345678",  # dashes
    "+12345",  # too short
    "+1234567890123456",  # too long
    "+0123456789",  # no country code starts with 0
    "+86１３912345678",  # full-width digits
    "+8613912345678\n",  # a line's end glued on
    "tel:+8613912345678",
]


@pytest.mark.parametrize("number", WRITTEN_WELL)
def test_international_numbers_pass(number: str) -> None:
    """Test that "+" and 6 to 15 ASCII digits, the first not 0, is E.164."""
    assert is_e164(number)


@pytest.mark.parametrize("number", WRITTEN_BADLY)
def test_other_writings_do_not(number: str) -> None:
    """Test that local forms, separators, lengths outside 6-15, a leading 0, full-width
    digits and anything glued on are not E.164."""
    assert not is_e164(number)


@pytest.mark.parametrize("number", WRITTEN_WELL + WRITTEN_BADLY[1:])
def test_every_check_of_a_number_agrees_with_the_rule(tmp_path: Path, number: str) -> None:
    """Test that the configuration, operators' accounts and Twilio's webhook fields take
    exactly the numbers the domain's rule takes."""
    path = tmp_path / "callcenter.toml"
    path.write_text(f'[district]\ndesk_phone = "{number}"\n'.replace('\n"', '\\n"'))
    try:
        load_config(path, environ={})
        config_takes = True
    except ConfigError:
        config_takes = False
    try:
        _check("li.na", number)
        accounts_take = True
    except OperatorAccountError:
        accounts_take = False
    webhooks_take = SHAPES["From"].pattern.fullmatch(number) is not None

    assert config_takes == accounts_take == webhooks_take == is_e164(number)
