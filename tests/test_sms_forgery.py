"""Forged Twilio webhooks made from real signed ones.

Twilio's signature covers the URL and every field's name and value run together, sorted
by name. Whoever captured one signed request (a proxy's log, a leaked capture) can cut
that same string into other fields and keep the signature: ``MessageSid=SM…`` with the
next field glued on (``SM…NumMedia0``) is a new MessageSid under the old signature. These
tests capture real requests from the fake Twilio on their way to the server, re-cut them
and post them again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.fake_twilio import FakeTwilio
from callcenter.notify.sms import STATUS_PATH
from callcenter.notify.twilio_errors import delivery_error
from callcenter.store import models as m
from callcenter.web.sms_webhooks import INBOUND_PATH, SIGNATURE_HEADER
from tests.api_support import Api, add_test_operators, api_config
from tests.desk_support import MONDAY_MORNING, count, rows, running_desk
from tests.sms_support import phone_of

_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True)
class Captured:
    """One request as it passed the proxy: what an eavesdropper there keeps."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def fields(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)

    @property
    def signature(self) -> str:
        return self.headers[SIGNATURE_HEADER]


class Proxy:
    """A proxy in front of the server (where Twilio's requests arrive, as a TLS
    terminator would sit), keeping a copy of every request it forwards."""

    def __init__(self) -> None:
        self.target = ""
        self.seen: list[Captured] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        self.seen.append(Captured(request.path_qs, headers, body))
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method, self.target + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={"Content-Type": answer.headers.get("Content-Type", "text/plain")},
            )

    def last(self, path: str) -> Captured:
        return [c for c in self.seen if c.path == path][-1]


@dataclass
class Scene:
    api: Api
    proxy: Proxy

    @property
    def fake(self) -> FakeTwilio:
        assert self.api.server.fake_twilio is not None
        return self.api.server.fake_twilio

    def signed_url(self, path: str) -> str:
        return self.proxy.url + path

    async def post(self, path: str, fields: list[tuple[str, str]], signature: str) -> int:
        """Post ``fields`` straight to the server under ``signature``."""
        async with self.api.http.post(
            path,
            data=urlencode(fields).encode(),
            headers={
                SIGNATURE_HEADER: signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        ) as reply:
            await reply.read()
            return reply.status


@pytest.fixture
async def scene(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> AsyncIterator[Scene]:
    """The server behind a recording proxy: Twilio (the fake) reaches it through the
    proxy, as ``sms.public_url`` says."""
    proxy = Proxy()
    await proxy.start()
    try:
        config = api_config(broker, topic_prefix, seeded_database_url)
        config = config.model_copy(
            update={"sms": config.sms.model_copy(update={"public_url": proxy.url})}
        )
        clock = ManualClock(MONDAY_MORNING)
        async with running_desk(config, clock) as server:
            proxy.target = server.web_url
            await add_test_operators(server)
            async with aiohttp.ClientSession(base_url=server.web_url) as http:
                yield Scene(Api(server, clock, http, broker, topic_prefix), proxy)
    finally:
        await proxy.stop()


def glued(fields: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every re-cut that glues a run of neighbouring fields (in the signature's order)
    into the first one's value: each keeps the signature of ``fields``."""
    ordered = sorted(fields)
    variants = []
    for first in range(len(ordered)):
        for last in range(first + 1, len(ordered)):
            name, value = ordered[first]
            value += "".join(k + v for k, v in ordered[first + 1 : last + 1])
            cut = [*ordered[:first], (name, value), *ordered[last + 1 :]]
            variants.append((f"{name} swallowing up to {ordered[last][0]}", cut))
    return variants


def doubled(fields: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each field posted twice with the same value: Twilio's signature counts a repeated
    value once, so these keep the signature too."""
    return [(f"{name} twice", [*fields, (name, value)]) for name, value in fields]


def assert_same_signature(
    scene: Scene, path: str, cut: list[tuple[str, str]], captured: Captured
) -> None:
    """The re-cut form really is signed: the attacker needs no key."""
    validator = RequestValidator(scene.fake.auth_token)
    assert validator.validate(scene.signed_url(path), MultiDict(cut), captured.signature), cut


async def _assignment(api: Api, call_id: int, carer: str) -> str | None:
    """The carer's latest part in the call, if any."""
    detail = await api.call(call_id)
    states = [a["state"] for a in detail["assignments"] if a["carer"] == carer]
    return states[-1] if states else None


async def test_a_captured_reply_recut_with_a_new_message_sid_cannot_answer_a_later_call(
    scene: Scene,
) -> None:
    """Test the attack: a carer's bare "a" accepting call 1, captured on its way in,
    re-cut so that its MessageSid swallows the next field (a new MessageSid, the same
    signature) and posted after the carer was sent to call 2, is refused and call 2 is
    not accepted; the plain replay changes nothing; the carer's own new "a" still
    accepts call 2."""
    api, fake = scene.api, scene.fake
    first = await api.press("H0001")
    # An operator owns it, so the carer's "r" closes it (calls.md, "Awaiting review").
    assert (await api.post(f"/api/calls/{first}/acknowledge")).status == 200
    carer = (await api.call(first))["assignments"][0]["carer"]
    phone = await phone_of(api, carer)

    status, _ = await fake.reply(phone, "a")
    assert status == 200
    assert await _assignment(api, first, carer) == "accepted"
    captured = scene.proxy.last(INBOUND_PATH)
    for answer in ("s", "r"):
        assert (await fake.reply(phone, answer))[0] == 200
    assert (await api.call(first))["state"] == "resolved"

    second = await api.press("H0001")
    if await _assignment(api, second, carer) is None:
        assert (await api.post(f"/api/calls/{second}/acknowledge")).status == 200
        sent = await api.post(f"/api/calls/{second}/dispatch", {"carer": carer})
        assert sent.status == 200, sent
    assert await _assignment(api, second, carer) == "dispatched"
    before = await count(api.server, m.InboundSms)

    # The forgery: MessageSid glued to the field after it, which is dropped.
    fields = sorted(captured.fields)
    names = [name for name, _ in fields]
    at = names.index("MessageSid")
    (sid_name, sid), (next_name, next_value) = fields[at], fields[at + 1]
    forged = [*fields[:at], (sid_name, sid + next_name + next_value), *fields[at + 2 :]]
    assert_same_signature(scene, INBOUND_PATH, forged, captured)

    assert await scene.post(INBOUND_PATH, forged, captured.signature) == 400
    assert await _assignment(api, second, carer) == "dispatched"
    assert await count(api.server, m.InboundSms) == before

    # The plain replay is a message seen before: answered as then, nothing done.
    assert await scene.post(INBOUND_PATH, captured.fields, captured.signature) == 200
    assert await _assignment(api, second, carer) == "dispatched"
    assert await count(api.server, m.InboundSms) == before

    # The carer's own answer, a new message, still works.
    assert (await fake.reply(phone, "a"))[0] == 200
    assert await _assignment(api, second, carer) == "accepted"


async def test_every_recut_of_a_signed_reply_is_refused(scene: Scene) -> None:
    """Test that every re-cut of a captured signed reply that keeps its signature (a run
    of fields glued into one, a field posted twice) is refused with 400 and stores
    nothing, and that the call it could have answered is untouched."""
    api, fake = scene.api, scene.fake
    call_id = await api.press("H0001")
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    phone = await phone_of(api, carer)
    # A reply the server does not act on ("hello"), so that the replays have a call to
    # change if any got through.
    assert (await fake.reply(phone, "hello"))[0] == 200
    captured = scene.proxy.last(INBOUND_PATH)
    kept = await count(api.server, m.InboundSms)

    variants = glued(captured.fields) + doubled(captured.fields)
    assert len(variants) > 40
    for what, cut in variants:
        assert_same_signature(scene, INBOUND_PATH, cut, captured)
        assert await scene.post(INBOUND_PATH, cut, captured.signature) == 400, what
    assert await count(api.server, m.InboundSms) == kept
    assert await _assignment(api, call_id, carer) == "dispatched"


async def test_every_recut_of_a_signed_status_report_is_refused(scene: Scene) -> None:
    """Test that every re-cut of a captured signed delivery report (glued fields, a
    field twice) is refused with 400, and that neither the page it reported on nor the
    call it moved on changes again."""
    api, fake = scene.api, scene.fake
    call_id = await api.press("H0001")
    page = await fake.next_message()
    assert await fake.report_status(page.sid, "undelivered", 30003) == 200
    captured = scene.proxy.last(STATUS_PATH)
    await fake.next_message()  # the next carer's page: the call has moved on

    async def what_the_report_did() -> tuple[list[Any], list[str]]:
        page_row = await rows(
            api.server,
            select(m.OutboxItem.delivery, m.OutboxItem.last_error).where(
                m.OutboxItem.provider_ref == page.sid
            ),
        )
        actions = [h["action"] for h in (await api.call(call_id))["history"]]
        return page_row, [a for a in actions if a == "unreachable"]

    reported = await what_the_report_did()
    assert reported[0] == [("undelivered", "undelivered: " + delivery_error("30003"))]
    assert reported[1] == ["unreachable"]
    for what, cut in glued(captured.fields) + doubled(captured.fields):
        assert_same_signature(scene, STATUS_PATH, cut, captured)
        assert await scene.post(STATUS_PATH, cut, captured.signature) == 400, what
    assert await what_the_report_did() == reported


# A field of a signed reply with the wrong shape (or another account's id), and why.
_MISSHAPEN = [
    ("AccountSid", "AC" + "1" * 32, "another account's"),
    ("MessageSid", "SM" + "A" * 32, "upper-case hex"),
    ("MessageSid", "XX" + "a" * 32, "not a message"),
    ("From", "+86 138 0000 0000", "spaces"),
    ("To", "", "empty"),
    ("Body", "12a\x00", "a NUL byte"),
]


async def test_a_signed_reply_with_a_field_of_the_wrong_shape_is_refused(scene: Scene) -> None:
    """Test that a reply signed with the right token but carrying a Twilio id, number or
    text of the wrong shape, or another account's id, is refused and stores nothing."""
    api, fake = scene.api, scene.fake
    call_id = await api.press("H0001")
    carer = (await api.call(call_id))["assignments"][0]["carer"]
    phone = await phone_of(api, carer)
    for field, value, why in _MISSHAPEN:
        fields = {
            "AccountSid": fake.account_sid,
            "ApiVersion": "2010-04-01",
            "Body": f"{call_id}a",
            "From": phone,
            "MessageSid": "SM" + "c" * 32,
            "NumMedia": "0",
            "To": "+15005550006",
            field: value,
        }
        signature = RequestValidator(fake.auth_token).compute_signature(
            scene.signed_url(INBOUND_PATH), fields
        )
        assert await scene.post(INBOUND_PATH, list(fields.items()), signature) == 400, why
    assert await count(api.server, m.InboundSms) == 0
    assert await _assignment(api, call_id, carer) == "dispatched"
