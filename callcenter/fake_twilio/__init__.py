"""A local fake of Twilio's SMS API with a page a person reads the texts on: where the
server's texts go when no Twilio account is configured, and what tests and the simulator
text through. Only the composition root (callcenter.app, callcenter.cli), the simulator
and tests use it; the rest of the server knows Twilio alone."""

from callcenter.fake_twilio.api import FakeTwilio
from callcenter.fake_twilio.message import (
    INBOUND,
    OUTBOUND_API,
    OUTBOUND_REPLY,
    FakeMessage,
    PlannedFailure,
)

__all__ = [
    "INBOUND",
    "OUTBOUND_API",
    "OUTBOUND_REPLY",
    "FakeMessage",
    "FakeTwilio",
    "PlannedFailure",
]
