"""Carers' SMS replies end to end: a real mosquitto, a real seeded database, the whole
server on a virtual clock, and Twilio's inbound webhook posted to it, signed the way
Twilio signs it (the twilio library's RequestValidator)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from callcenter.broker import EmbeddedBroker
from callcenter.clock import ManualClock
from callcenter.web.sms_webhooks import INBOUND_PATH, SIGNATURE_HEADER, webhook_auth_token
from tests.api_support import Api, add_test_operators, api_config
from tests.desk_support import MONDAY_MORNING, running_desk
from tests.sms_support import answer_of, inbound, paged, phone_of, sms

# Used only when the server checks signatures with the configured token (no local fake).
TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_URL = "https://desk.example.org/twilio"
REPEATED = "SM" + "1" * 32


@contextlib.asynccontextmanager
async def _running(
    broker: EmbeddedBroker, prefix: str, database_url: str, **sms: Any
) -> AsyncIterator[Api]:
    config = api_config(broker, prefix, database_url)
    config = config.model_copy(
        update={"sms": config.sms.model_copy(update={"auth_token": TOKEN, **sms})}
    )
    clock = ManualClock(MONDAY_MORNING)
    async with running_desk(config, clock) as server:
        await add_test_operators(server)
        async with aiohttp.ClientSession(base_url=server.web_url) as http:
            yield Api(server, clock, http, broker, prefix)


@pytest.fixture
async def api(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> AsyncIterator[Api]:
    """The server with a known Twilio auth token, and an API client for it."""
    async with _running(broker, topic_prefix, seeded_database_url) as running:
        yield running


async def test_a_carer_accepts_arrives_and_resolves_by_sms(api: Api) -> None:
    """Test that the dispatch SMS gives the codes, and that the paged carer's "a", "s" and
    "r" replies accept, reach the scene and resolve the call an operator owns, each
    confirmed in TwiML,
    kept in inbound_sms and written to the history as the carer."""
    call_id, carer, phone = await paged(api)
    dispatch = [o for o in (await api.call(call_id))["outbox"] if o["channel"] == "sms"]
    assert f"{call_id}a" in dispatch[0]["body"] and f"{call_id}r" in dispatch[0]["body"]
    # An operator owns the call, so the carer's "done" closes it.
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200

    accepted = answer_of(await sms(api, phone, f"{call_id}a"))
    assert f"call {call_id} for H0001" in accepted or f"呼叫{call_id}" in accepted
    assert (await api.call(call_id))["state"] == "accepted"

    assert f"{call_id}" in answer_of(await sms(api, phone, f" {call_id} S "))
    assert (await api.call(call_id))["state"] == "on_scene"

    resolved = answer_of(await sms(api, phone, f"{call_id}r"))
    assert str(call_id) in resolved
    detail = await api.call(call_id)
    assert detail["state"] == "resolved"
    assert detail["outcome"] == "helped_at_home"

    by_carer = [
        (h["action"], h["actor"]) for h in detail["history"] if h["actor"] == f"carer:{carer}"
    ]
    assert by_carer == [
        ("accepted", f"carer:{carer}"),
        ("on_scene", f"carer:{carer}"),
        ("resolved", f"carer:{carer}"),
    ]
    kept = await inbound(api)
    assert [(outcome, call) for _, outcome, call, _ in kept] == [
        ("accept", call_id),
        ("on_scene", call_id),
        ("resolved", call_id),
    ]
    assert [answer for *_, answer in kept] == [accepted, kept[1][3], resolved]

    # A new message with the closed call's code is refused politely and changes nothing.
    late = answer_of(await sms(api, phone, f"{call_id}a"))
    assert str(call_id) in late and ("closed" in late or "已结束" in late)
    assert (await inbound(api))[-1][1] == "refused"
    assert (await api.call(call_id))["history"] == detail["history"]


async def test_a_carers_done_on_an_emergency_nobody_at_the_desk_took_awaits_review(
    api: Api,
) -> None:
    """Test that "r" on an emergency no operator ever owned finishes the carer's part and
    leaves the call open awaiting review with what the carer reported, that the carer is
    told the desk will review it (also when they send "r" again), and that it ends only
    when an operator resolves it."""
    call_id, carer, phone = await paged(api)
    answer_of(await sms(api, phone, f"{call_id}s"))
    said = answer_of(await sms(api, phone, f"{call_id}r"))
    assert str(call_id) in said and ("复核" in said or "review" in said), said
    assert "结案" not in said and "closed" not in said, said
    detail = await api.call(call_id)
    assert detail["state"] == "awaiting_review"
    assert (detail["closed_at"], detail["outcome"], detail["owner"]) == (None, None, None)
    assert detail["reported"]["by"] == f"carer:{carer}"
    assert detail["reported"]["outcome"] == "helped_at_home"
    assert [a["state"] for a in detail["assignments"]] == ["finished"]
    assert detail["history"][-1]["action"] == "reported_done"
    assert (await inbound(api))[-1][1:3] == ("reported_done", call_id)
    listed = await api.get("/api/calls")
    assert call_id in [c["id"] for c in listed.body["calls"]]  # still on the board
    again = answer_of(await sms(api, phone, f"{call_id}r"))
    assert "复核" in again or "review" in again, again
    assert (await api.call(call_id))["history"] == detail["history"]

    resolved = await api.post(f"/api/calls/{call_id}/resolve", {"outcome": "helped_at_home"})
    assert resolved.status == 200, resolved
    assert (resolved.body["state"], resolved.body["owner"]) == ("resolved", "operator:li.na")


async def test_a_bare_code_answers_the_carers_open_dispatch(api: Api) -> None:
    """Test that a code without a call number ("a", "出发") answers the carer's open
    dispatch, and that with no open dispatch the carer is told so."""
    call_id, _, phone = await paged(api)
    assert str(call_id) in answer_of(await sms(api, phone, "A"))
    assert str(call_id) in answer_of(await sms(api, phone, "出发"))
    detail = await api.call(call_id)
    assert detail["state"] == "on_the_way"
    assert detail["assignments"][0]["state"] == "on_the_way"

    other = next(c["code"] for c in await api.carers() if c["state"] == "free")
    nothing = answer_of(await sms(api, await phone_of(api, other), "s"))
    assert "12a" in nothing
    assert (await inbound(api))[-1][1:3] == ("no_open_call", None)


async def test_forged_and_unsigned_webhooks_are_refused(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Test that a request with a wrong signature, a wrong token, no signature, or a body
    changed after signing gets 403 and a log line, and changes nothing."""
    call_id, _, phone = await paged(api)
    caplog.set_level(logging.WARNING, logger="callcenter.sms")
    forged = [
        await sms(api, phone, f"{call_id}a", token="not-the-token"),
        await sms(api, phone, f"{call_id}a", signed=False),
        await sms(api, phone, f"{call_id}a", url="http://elsewhere.example/sms/inbound"),
    ]
    for reply in forged:
        assert reply.status == 403, reply
        assert reply.body["error"] == "forbidden"
    assert "signature" in forged[0].body["message"]
    assert "not signed" in forged[1].body["message"]

    validator = RequestValidator(webhook_auth_token(api.server.sms_account))
    params = {"MessageSid": "SMtampered", "From": phone, "Body": f"{call_id}d"}
    signature = validator.compute_signature(api.server.web_url + INBOUND_PATH, params)
    tampered = {**params, "Body": f"{call_id}a"}
    async with api.http.post(
        INBOUND_PATH, data=tampered, headers={SIGNATURE_HEADER: signature}
    ) as reply:
        assert reply.status == 403

    refusals = [r for r in caplog.records if "refused an SMS webhook" in r.getMessage()]
    assert len(refusals) == 4
    assert await inbound(api) == []
    assert (await api.call(call_id))["state"] == "dispatched"


async def test_a_repeated_message_sid_does_nothing_more(api: Api) -> None:
    """Test that Twilio re-posting a MessageSid gets the first answer again and changes
    nothing: no second history entry, one inbound_sms row."""
    call_id, _, phone = await paged(api)
    first = await sms(api, phone, f"{call_id}a", sid=REPEATED)
    again = await sms(api, phone, f"{call_id}a", sid=REPEATED)
    assert answer_of(again) == answer_of(first)
    # The same sid with other content (a replay attack) is not read either.
    third = await sms(api, phone, f"{call_id}d", sid=REPEATED)
    assert answer_of(third) == answer_of(first)

    detail = await api.call(call_id)
    assert [h["action"] for h in detail["history"]].count("accepted") == 1
    assert detail["state"] == "accepted"
    assert [(sid, outcome) for sid, outcome, *_ in await inbound(api)] == [(REPEATED, "accept")]


async def test_unknown_numbers_and_garbage_get_a_helpful_answer(api: Api) -> None:
    """Test that a number no carer has is told so politely, that an unreadable reply
    gets the codes, and that neither changes the call."""
    call_id, _, phone = await paged(api)

    unknown = answer_of(await sms(api, "+8613000000000", f"{call_id}a"))
    assert "not registered" in unknown and "未在呼叫中心登记" in unknown

    garbage = answer_of(await sms(api, phone, f"{call_id}x"))
    for code in ("a", "d", "o", "s", "r"):
        assert f"{call_id}{code}" in garbage

    for nonsense in ("", "hello?", "<Message>&amp;"):
        assert answer_of(await sms(api, phone, nonsense))

    outcomes = [(outcome, call) for _, outcome, call, _ in await inbound(api)]
    assert outcomes == [("unknown_sender", None)] + [("not_understood", None)] * 4
    assert (await api.call(call_id))["state"] == "dispatched"


async def test_a_reply_to_someone_elses_call_is_refused(api: Api) -> None:
    """Test that a carer who is not on a call cannot answer it: never on it, not yours;
    after the desk stood them down and another carer accepted, taken by that carer."""
    call_id, carer, phone = await paged(api)
    other = next(
        c["code"] for c in await api.carers() if c["state"] == "free" and c["code"] != carer
    )
    other_phone = await phone_of(api, other)

    not_yours = answer_of(await sms(api, other_phone, f"{call_id}a"))
    assert str(call_id) in not_yours and ("not yours" in not_yours or "不是派给您的" in not_yours)
    assert (await inbound(api))[-1][1:3] == ("refused", call_id)

    # A call that does not exist at all: the same answer, the text kept unlinked.
    no_such = call_id + 9000
    nowhere = answer_of(await sms(api, other_phone, f"{no_such}a"))
    assert str(no_such) in nowhere and ("not yours" in nowhere or "不是派给您的" in nowhere)
    assert (await inbound(api))[-1][1:3] == ("refused", None)

    # The desk replaces the first carer by the other, who accepts.
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
    stood = await api.post(f"/api/calls/{call_id}/carers/{carer}/stand-down", {"why": "test"})
    assert stood.status == 200, stood
    detail = await api.call(call_id)
    replacement = next(a["carer"] for a in detail["assignments"] if a["state"] == "dispatched")
    answer_of(await sms(api, await phone_of(api, replacement), f"{call_id}a"))

    taken = answer_of(await sms(api, phone, f"{call_id}a"))
    assert replacement in taken
    assert (await api.call(call_id))["assignments"][0]["state"] == "stood_down"


async def test_a_carer_may_not_resolve_before_arriving_and_may_opt_out(api: Api) -> None:
    """Test that "r" before "s" is refused with the reason in the carer's language, and
    that STOP and START are recorded and confirmed."""
    call_id, _, phone = await paged(api)
    answer_of(await sms(api, phone, f"{call_id}a"))
    early = answer_of(await sms(api, phone, f"{call_id}r"))
    # In the carer's language (Chinese here): arrive first, then close the call.
    assert str(call_id) in early and "到达后才能结案" in early, early
    assert (await api.call(call_id))["state"] == "accepted"

    assert "START" in answer_of(await sms(api, phone, "STOP"))
    assert answer_of(await sms(api, phone, "start"))
    outcomes = [outcome for _, outcome, *_ in await inbound(api)]
    assert outcomes == ["accept", "refused", "opted_out", "opted_in"]


async def test_missing_fields_are_a_bad_request(api: Api) -> None:
    """Test that a signed request without a Body is a 400 naming the field, not a 500."""
    reply = await sms(api, "+8613000000000", None)
    assert reply.status == 400
    assert "Body" in reply.body["message"]


async def test_the_public_url_is_what_twilio_signs_behind_a_proxy(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that with sms.public_url set, a signature over the public URL is accepted
    and one over the server's own address is not."""
    async with _running(
        broker, topic_prefix, seeded_database_url, public_url=PUBLIC_URL
    ) as running:
        own = await sms(running, "+8613000000000", "a")
        assert own.status == 403
        public = await sms(running, "+8613000000000", "a", url=PUBLIC_URL + INBOUND_PATH)
        assert "not registered" in answer_of(public)
