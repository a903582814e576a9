"""Talking to the server as Twilio does: signed inbound SMS and status callbacks, and
reading what the server answered."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callcenter.app import Running
from callcenter.store import models as m
from callcenter.web.sms_webhooks import (
    INBOUND_PATH,
    SIGNATURE_HEADER,
    webhook_account_sid,
    webhook_auth_token,
)
from tests.api_support import Api, Reply
from tests.desk_support import rows, scalar

_sids = itertools.count(1)


async def sms(
    api: Api,
    phone: str,
    body: str | None,
    *,
    sid: str | None = None,
    url: str | None = None,
    token: str | None = None,
    signed: bool = True,
) -> Reply:
    """Post an inbound SMS as Twilio does: form fields, signed over the URL and fields."""
    params = {
        "MessageSid": sid or f"SM{next(_sids):032x}",
        "AccountSid": webhook_account_sid(api.server.sms_account),
        "From": phone,
        "To": "+8610690000000",
        "NumMedia": "0",
        "SmsStatus": "received",
    }
    if body is not None:
        params["Body"] = body
    headers = {}
    if signed:
        validator = RequestValidator(token or webhook_auth_token(api.server.sms_account))
        signed_url = url or api.server.web_url + INBOUND_PATH
        headers[SIGNATURE_HEADER] = validator.compute_signature(signed_url, params)
    async with api.http.post(INBOUND_PATH, data=params, headers=headers) as reply:
        answer = (
            await reply.json() if reply.content_type == "application/json" else await reply.text()
        )
        return Reply(reply.status, answer, dict(reply.headers))


def answer_of(reply: Reply) -> str:
    """The confirmation in a TwiML answer."""
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"].startswith("text/xml"), reply
    root = ET.fromstring(reply.body)
    assert root.tag == "Response"
    return root.findtext("Message") or ""


async def phone_of(api: Api, carer: str) -> str:
    phone: str = await scalar(api.server, select(m.Carer.phone).where(m.Carer.code == carer))
    return phone


async def paged(api: Api, household: str = "H0001") -> tuple[int, str, str]:
    """Press the household's button: the call, and the code and phone of the paged carer."""
    call_id = await api.press(household)
    detail = await api.call(call_id)
    carer = detail["assignments"][0]["carer"]
    return call_id, carer, await phone_of(api, carer)


async def inbound(api: Api) -> list[Any]:
    return await rows(
        api.server,
        select(
            m.InboundSms.message_sid,
            m.InboundSms.outcome,
            m.InboundSms.call_id,
            m.InboundSms.answer,
        ).order_by(m.InboundSms.id),
    )


async def post_signed(
    server: Running, path: str, params: dict[str, str], *, token: str | None = None
) -> int:
    """Post a form to the server as Twilio does, signed over the URL and the fields
    (with this server's AccountSid, as Twilio always sends it, unless ``params`` has one)."""
    params = {"AccountSid": webhook_account_sid(server.sms_account), **params}
    validator = RequestValidator(token or webhook_auth_token(server.sms_account))
    signature = validator.compute_signature(server.web_url + path, params)
    async with (
        aiohttp.ClientSession(base_url=server.web_url) as http,
        http.post(path, data=params, headers={SIGNATURE_HEADER: signature}) as reply,
    ):
        return reply.status
