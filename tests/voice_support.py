"""Carers rung about their page, end to end: the paged carer's phone at the fake Twilio
the server runs itself, and Twilio's voice webhooks posted by hand (replayed, forged)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callcenter.fake_twilio import FakeCall, FakeTwilio
from callcenter.store import models as m
from callcenter.web.sms_webhooks import SIGNATURE_HEADER, webhook_account_sid, webhook_auth_token
from tests.api_support import Api, Reply
from tests.desk_support import scalar
from tests.ingest_support import eventually

# The default ring_carer step: a page not accepted in this long rings the carer.
RING_AFTER = timedelta(seconds=60)


async def paged_phone(api: Api, call_id: int) -> tuple[str, str]:
    """The code and phone of the carer the call's first page went to."""
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    phone = await scalar(api.server, select(m.Carer.phone).where(m.Carer.code == carer))
    return str(carer), str(phone)


async def ring_of(api: Api, fake: FakeTwilio, phone: str) -> FakeCall:
    """The page's minute runs out (virtual time): the call the server places to
    ``phone``, once it rings there."""
    api.clock.advance(RING_AFTER + timedelta(seconds=1))
    ring = await fake.next_call(timeout=10)
    assert ring.to == phone, f"the carer's phone is rung, not {ring.to}"
    return ring


async def rung(
    api: Api, household: str, phone_does: str = "ring"
) -> tuple[int, str, str, FakeCall]:
    """A press in ``household``, its page not accepted for a minute: the call's id, the
    paged carer's code and phone, and the ring at that phone (which does
    ``phone_does``, a behaviour of the fake's plan_phone)."""
    call_id = await api.press(household)
    carer, phone = await paged_phone(api, call_id)
    fake = api.server.fake_twilio
    assert fake is not None
    fake.plan_phone(phone, phone_does)
    return call_id, carer, phone, await ring_of(api, fake, phone)


async def history_of(api: Api, call_id: int) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = (await api.call(call_id))["history"]
    return history


async def rings_in_history(api: Api, call_id: int, *statuses: str) -> list[dict[str, Any]]:
    """The call's "ring" history lines, once each of ``statuses`` is among them."""
    return await lines_in_history(api, call_id, "ring", "status", *statuses)


async def lines_in_history(
    api: Api, call_id: int, action: str, key: str, *values: str
) -> list[dict[str, Any]]:
    """The call's ``action`` history lines, once each of ``values`` is among their
    ``detail[key]``."""
    found: list[dict[str, Any]] = []

    async def written() -> bool:
        found[:] = [h for h in await history_of(api, call_id) if h["action"] == action]
        return set(values) <= {h["detail"][key] for h in found}

    await eventually(written, within_s=10, what=f"{action} {values} in the history")
    return found


async def voice_post(
    api: Api,
    path: str,
    fields: dict[str, str],
    *,
    token: str | None = None,
    signed: bool = True,
) -> Reply:
    """Post a voice webhook as Twilio does: form fields signed over the URL and fields
    (with the server's own token unless ``token``)."""
    account = api.server.sms_account
    params = {"AccountSid": webhook_account_sid(account), "ApiVersion": "2010-04-01", **fields}
    headers = {}
    if signed:
        validator = RequestValidator(token or webhook_auth_token(account))
        headers[SIGNATURE_HEADER] = validator.compute_signature(api.server.web_url + path, params)
    async with api.http.post(path, data=params, headers=headers) as reply:
        return Reply(reply.status, await reply.text(), dict(reply.headers))


def call_fields(ring: FakeCall, status: str, **more: str) -> dict[str, str]:
    """The fields Twilio posts about ``ring`` with ``status``."""
    return {
        "CallSid": ring.sid,
        "From": ring.from_,
        "To": ring.to,
        "CallStatus": status,
        "Direction": "outbound-api",
        **more,
    }
