"""SMS to carers, stations and families through Twilio; for now only the local fake Twilio."""

from callcenter.notify.fake_twilio import FakeMessage, FakeTwilio, PlannedFailure

__all__ = ["FakeMessage", "FakeTwilio", "PlannedFailure"]
