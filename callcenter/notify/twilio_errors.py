"""What Twilio's error codes mean to the call centre (docs/sms.md, "Sending" and
"Delivery status"): the codes of a send Twilio refused, and the codes of a delivery
report saying a text did not arrive. The sender (notify/sms.py) and the status webhook
(web/sms_webhooks.py) both read them here.
"""

from __future__ import annotations

from callcenter.store.models import PhoneProblem

# Twilio is limiting our sending rate (with HTTP 429).
RATE_LIMITED = 20429
# Refusals of our credentials or account (authentication failed, account suspended).
ACCOUNT_REFUSED = frozenset({20003, 20005})

# Refused sends: a number that cannot get our texts, as a person should read it.
REFUSED_NUMBER: dict[int, tuple[PhoneProblem, str]] = {
    21211: (
        PhoneProblem.INVALID_NUMBER,
        "the phone number is not a valid number (Twilio 21211); correct it in the records",
    ),
    21610: (
        PhoneProblem.OPTED_OUT,
        "the phone has opted out of our texts with STOP (Twilio 21610); they reach it again "
        "only after its owner texts START",
    ),
    21614: (
        PhoneProblem.NOT_MOBILE,
        "the number is not a mobile phone and cannot receive texts (Twilio 21614)",
    ),
}

# Delivery reports: why a text did not arrive, as a person should read it.
DELIVERY_ERRORS = {
    "30003": "unreachable handset: the phone is switched off or out of coverage",
    "30005": "unknown destination: the number does not exist or is out of service",
    "30006": "landline or unreachable carrier: the number cannot receive texts",
    "30007": "carrier filtered: the carrier blocked the message (spam filter)",
    "30008": "unknown error: the carrier gave no reason",
}
# Delivery errors that say the number itself cannot get texts: it is marked broken.
BROKEN_BY_DELIVERY = {
    "30005": PhoneProblem.INVALID_NUMBER,
    "30006": PhoneProblem.NOT_MOBILE,
}


def delivery_error(code: str) -> str:
    """Twilio's delivery error code with its meaning, e.g. "Twilio 30003, unreachable ..."."""
    meaning = DELIVERY_ERRORS.get(code)
    return f"Twilio {code}, {meaning}" if meaning else f"Twilio {code}"
