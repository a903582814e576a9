"""A local fake of Twilio's SMS and Voice APIs with a page a person reads the texts on
and answers the phones from: where the server's texts and calls go when no Twilio account
is configured, and what tests and the simulator text and ring through. Only the
composition root (callcenter.app, callcenter.cli), the simulator
and tests use it; the rest of the server knows Twilio alone."""

from callcenter.fake_twilio.api import FakeTwilio
from callcenter.fake_twilio.calls import FakeCall, FakeRecording, Spoken
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
    "FakeCall",
    "FakeMessage",
    "FakeRecording",
    "FakeTwilio",
    "PlannedFailure",
    "Spoken",
]
