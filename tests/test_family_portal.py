"""The family portal over HTTP, against the whole server on a real broker and the seeded
demo database: codes texted through the fake Twilio, their expiry on the virtual clock,
single use, the brute-force pause, rate limits, every endpoint tried with other
households' codes and calls, and the audit rows every read leaves."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m
from callcenter.web.family import signin as family
from callcenter.web.sessions import CSRF_HEADER
from tests.api_support import Api
from tests.board_support import Browser, browser
from tests.desk_support import count, rows, scalar
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.sms_support import paged, sms

UNKNOWN_PHONE = "+8613300000000"


async def contact_phone(api: Api, household: str) -> str:
    """The first family contact's phone of ``household`` in the demo district."""
    phone: str = await scalar(
        api.server,
        select(m.FamilyContact.phone)
        .join(m.Household, m.Household.id == m.FamilyContact.household_id)
        .where(m.Household.code == household)
        .order_by(m.FamilyContact.position)
        .limit(1),
    )
    return phone


async def body(reply: aiohttp.ClientResponse) -> Any:
    return await reply.json()


async def ask_for_code(client: Browser, phone: str) -> aiohttp.ClientResponse:
    """Ask for a code as the sign-in page does: a fresh sign-in token first."""
    if not client.csrf:
        token = await client.get("/family/api/sign-in")
        client.csrf = (await token.json())["csrf_token"]
    return await client.post("/family/api/code", json={"phone": phone})


async def texted_code(api: Api, phone: str, nth: int = 1) -> str:
    """The code in the ``nth`` text the fake Twilio got for ``phone``."""
    fake = fake_of(api.server)

    async def arrived() -> bool:
        return len(fake.sent_to(phone)) >= nth

    await eventually(arrived, what=f"sign-in text {nth} to {phone}")
    found = re.search(r"\b(\d{6})\b", fake.sent_to(phone)[nth - 1].body)
    assert found is not None, fake.sent_to(phone)[nth - 1].body
    return found.group(1)


async def verify(client: Browser, phone: str, code: str) -> aiohttp.ClientResponse:
    return await client.post("/family/api/verify", json={"phone": phone, "code": code})


async def sign_in(api: Api, client: Browser, phone: str) -> None:
    """The whole sign-in: ask, read the SMS at the fake, type the code."""
    already = len(fake_of(api.server).sent_to(phone))
    assert (await ask_for_code(client, phone)).status == 202
    reply = await verify(client, phone, await texted_code(api, phone, already + 1))
    assert reply.status == 200, await reply.text()
    client.csrf = (await reply.json())["csrf_token"]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def audit_rows(api: Api, phone: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/api/audit?actor={quote(f'family:{phone}')}", who="sun.admin")
    assert reply.status == 200, reply
    entries: list[dict[str, Any]] = reply.body["entries"]
    return entries


async def test_a_family_member_signs_in_with_the_texted_code_and_sees_their_calls(
    api: Api,
) -> None:
    """Test that a contact's phone gets a 6-digit code by SMS (in the contact's language,
    through the outbox to the fake Twilio, only its hash stored), signs in with it, and
    sees their household, its call with who answered and the response times, the call's
    steps; and that every read is in the audit log administrators query."""
    phone = await contact_phone(api, "H0001")
    call_id = await api.press("H0001")
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
    async with browser(api) as client:
        reply = await ask_for_code(client, phone)
        assert reply.status == 202
        code = await texted_code(api, phone)
        stored = await rows(api.server, select(m.FamilyCode.code_sha256, m.FamilyCode.expires_at))
        assert len(stored) == 1 and code not in stored[0][0]
        assert stored[0][1] == api.clock.now() + timedelta(minutes=10)
        outbox = await rows(
            api.server,
            select(m.OutboxItem.call_id, m.OutboxItem.channel).where(
                m.OutboxItem.recipient == f"family:{phone}"
            ),
        )
        assert outbox == [(None, "sms")]

        reply = await verify(client, phone, code)
        assert reply.status == 200, await reply.text()
        cookie = reply.cookies[family.FAMILY_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        client.csrf = (await reply.json())["csrf_token"]
        assert (await client.get("/family")).status == 200

        homes = await body(await client.get("/family/api/households"))
        assert [h["code"] for h in homes["households"]] == ["H0001"]
        assert homes["households"][0]["open_calls"] == 1

        calls = await body(await client.get("/family/api/households/H0001/calls"))
        (seen,) = calls["calls"]
        assert seen["id"] == call_id
        assert seen["answered_by"] == "李娜"
        assert seen["raised_at"] is not None and seen["closed_at"] is None
        assert seen["response"]["to_acknowledge_s"] is not None
        assert seen["live"]["stage"] in {"carer_asked", "on_the_way"}
        assert seen["live"]["carer"]

        detail = await body(await client.get(f"/family/api/households/H0001/calls/{call_id}"))
        assert detail["id"] == call_id
        assert detail["steps"][0]["state"] == "raised"

    actions = [(e["action"], e["household"]) for e in await audit_rows(api, phone)]
    assert ("read_household", "H0001") in actions
    assert ("read_calls", "H0001") in actions
    assert ("read_call", "H0001") in actions
    assert (family.CODE_ASKED, None) in actions and (family.SIGNED_IN, None) in actions


async def test_an_unknown_phone_gets_the_same_answer_and_no_text(api: Api) -> None:
    """Test that asking for a code for a number that is nobody's contact answers exactly
    as for a known one, and nothing is queued or sent."""
    known = await contact_phone(api, "H0001")
    async with browser(api) as client:
        unknown_reply = await ask_for_code(client, UNKNOWN_PHONE)
        known_reply = await ask_for_code(client, known)
        assert unknown_reply.status == known_reply.status == 202
        assert await unknown_reply.json() == await known_reply.json()
    await texted_code(api, known)
    assert fake_of(api.server).sent_to(UNKNOWN_PHONE) == []
    assert await count(api.server, m.OutboxItem, m.OutboxItem.address == UNKNOWN_PHONE) == 0


async def test_a_code_expires_after_ten_minutes_and_works_only_once(api: Api) -> None:
    """Test that a code typed 10 minutes after it was sent is refused, and that a code
    that signed in once does not sign in again."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        await ask_for_code(client, phone)
        stale = await texted_code(api, phone)
        api.clock.advance(timedelta(minutes=10, seconds=1))
        reply = await verify(client, phone, stale)
        assert reply.status == 401
        assert "expired" in (await reply.json())["message"]

        await ask_for_code(client, phone)
        fresh = await texted_code(api, phone, 2)
        assert (await verify(client, phone, fresh)).status == 200
    async with browser(api) as someone_else:
        await ask_for_code(someone_else, phone)  # a sign-in token, and a third code
        reply = await verify(someone_else, phone, fresh)
        assert reply.status == 401
        assert (await someone_else.get("/family/api/households")).status == 401


async def test_guessing_codes_is_cut_off_after_five_wrong_tries(api: Api) -> None:
    """Test the brute-force pause: five wrong codes for a phone, then even the right code
    is refused with 429 and a wait a person understands; the code itself is dead after
    its five tries; after the window, the phone may try again with a new code."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        await ask_for_code(client, phone)
        code = await texted_code(api, phone)
        for _ in range(family.FAILURES_PER_PHONE):
            assert (await verify(client, phone, wrong(code))).status == 401
        paused = await verify(client, phone, code)
        assert paused.status == 429
        message = (await paused.json())["message"]
        assert "Too many wrong codes" in message and "15 min" in message
        attempts = await scalar(api.server, select(m.FamilyCode.attempts))
        assert attempts == family.CODE_TRIES

        api.clock.advance(family.LIMIT_WINDOW + timedelta(seconds=1))
        assert (await verify(client, phone, code)).status == 401  # dead and expired
        await ask_for_code(client, phone)
        assert (await verify(client, phone, await texted_code(api, phone, 2))).status == 200


async def test_wrong_codes_from_one_address_pause_it_for_every_phone(api: Api) -> None:
    """Test that guessing across many phones from one address is paused too."""
    async with browser(api) as client:
        await ask_for_code(client, UNKNOWN_PHONE)
        for n in range(family.FAILURES_PER_ADDRESS):
            reply = await verify(client, f"+86133000{n:05d}", "123456")
            assert reply.status == 401
        reply = await verify(client, "+8613300099999", "123456")
        assert reply.status == 429


async def test_codes_asked_for_are_limited_per_phone_and_per_address(api: Api) -> None:
    """Test that a phone gets at most three codes in 15 minutes and an address at most
    ten asks, with a 429 that says when to try again; the window frees on the clock."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        for _ in range(family.CODES_PER_PHONE):
            assert (await ask_for_code(client, phone)).status == 202
        refused = await ask_for_code(client, phone)
        assert refused.status == 429
        assert "Too many codes asked for" in (await refused.json())["message"]
        await texted_code(api, phone, family.CODES_PER_PHONE)
        assert len(fake_of(api.server).sent_to(phone)) == family.CODES_PER_PHONE

        for n in range(family.CODES_PER_ADDRESS - family.CODES_PER_PHONE):
            assert (await ask_for_code(client, f"+86133000{n:05d}")).status == 202
        assert (await ask_for_code(client, "+8613300099999")).status == 429

        api.clock.advance(family.LIMIT_WINDOW + timedelta(seconds=1))
        assert (await ask_for_code(client, phone)).status == 202


async def test_no_endpoint_shows_another_households_data(api: Api) -> None:
    """Test that a family member signed in for H0001 gets 404 for every URL naming
    another household, another household's call, a call id that does not exist or is
    not a number, and that nothing about the other household is read or audited."""
    phone = await contact_phone(api, "H0001")
    own_call = await api.press("H0001")
    other_call = await api.press("H0002")
    assert await contact_phone(api, "H0002") != phone
    async with browser(api) as client:
        await sign_in(api, client, phone)
        homes = await body(await client.get("/family/api/households"))
        assert [h["code"] for h in homes["households"]] == ["H0001"]
        for path in (
            "/family/api/households/H0002/calls",
            f"/family/api/households/H0002/calls/{other_call}",
            f"/family/api/households/H0002/calls/{own_call}",
            f"/family/api/households/H0001/calls/{other_call}",
            "/family/api/households/H9999/calls",
            "/family/api/households/H9999/calls/1",
            "/family/api/households/h0001/calls",
            "/family/api/households/H0001/calls/0",
            "/family/api/households/H0001/calls/-1",
            "/family/api/households/H0001/calls/abc",
            f"/family/api/households/H0001/calls/{2**70}",
            f"/family/api/households/{'H' * 300}/calls",
        ):
            reply = await client.get(path)
            assert reply.status == 404, path
            assert "H0002" not in str(reply.headers) or "H0002" in path
        own = await body(await client.get(f"/family/api/households/H0001/calls/{own_call}"))
        assert own["id"] == own_call
    other_home = await scalar(api.server, select(m.Household.id).where(m.Household.code == "H0002"))
    read_other = await count(
        api.server,
        m.AuditEntry,
        m.AuditEntry.actor == f"family:{phone}",
        m.AuditEntry.household_id == other_home,
    )
    assert read_other == 0


async def test_a_phone_that_is_a_contact_of_two_households_sees_both(api: Api) -> None:
    """Test that a phone listed for two households sees both and their calls, and still
    nothing of a third."""
    phone = await contact_phone(api, "H0001")
    h3 = await scalar(api.server, select(m.Household.id).where(m.Household.code == "H0003"))
    async with AsyncSession(api.server.engine) as session, session.begin():
        await session.execute(
            insert(m.FamilyContact).values(
                household_id=h3, position=9, name="李明", relation="son", phone=phone, language="en"
            )
        )
    call = await api.press("H0003")
    async with browser(api) as client:
        await sign_in(api, client, phone)
        homes = await body(await client.get("/family/api/households"))
        assert [h["code"] for h in homes["households"]] == ["H0001", "H0003"]
        calls = await body(await client.get("/family/api/households/H0003/calls"))
        assert [c["id"] for c in calls["calls"]] == [call]
        assert (await client.get("/family/api/households/H0002/calls")).status == 404


async def test_the_live_status_counts_down_the_carers_travel_estimate(api: Api) -> None:
    """Test that once the paged carer accepts by SMS the open call reads "on the way"
    with their name and about as many minutes as their travel estimate less the time
    since they accepted, then "on scene" once they arrive, "being reviewed" once the
    carer reports done on this emergency nobody at the desk took, and no live line once
    an operator resolved it with the outcome shown."""
    phone = await contact_phone(api, "H0001")
    call_id, carer, carer_phone = await paged(api, "H0001")
    await sms(api, carer_phone, "a")
    travel_s, name = (
        await rows(
            api.server,
            select(m.CallAssignment.travel_s, m.Carer.name)
            .join(m.Carer, m.Carer.id == m.CallAssignment.carer_id)
            .where(m.CallAssignment.call_id == call_id, m.Carer.code == carer),
        )
    )[0]
    api.clock.advance(timedelta(minutes=2))
    async with browser(api) as client:
        await sign_in(api, client, phone)
        path = f"/family/api/households/H0001/calls/{call_id}"
        live = (await body(await client.get(path)))["live"]
        assert live == {
            "stage": "on_the_way",
            "carer": name,
            "eta_min": max(1, math.ceil((travel_s - 120) / 60)),
        }
        await sms(api, carer_phone, "s")
        seen = await body(await client.get(path))
        assert seen["live"] == {"stage": "on_scene", "carer": name, "eta_min": None}
        assert seen["response"]["to_on_scene_s"] == 120
        await sms(api, carer_phone, "r")
        # Nobody at the desk took this emergency: it is still being handled until an
        # operator has reviewed the carer's done.
        seen = await body(await client.get(path))
        assert seen["closed_at"] is None
        assert seen["live"] == {"stage": "being_reviewed", "carer": name, "eta_min": None}
        resolved = await api.post(f"/api/calls/{call_id}/resolve", {"outcome": "helped_at_home"})
        assert resolved.status == 200, resolved

        async def closed() -> bool:
            return (await body(await client.get(path)))["closed_at"] is not None

        await eventually(closed, what="the call closed")
        seen = await body(await client.get(path))
        assert seen["live"] is None and seen["carer"] == name and seen["outcome"]


async def test_signed_out_requests_and_forged_changes_are_refused(api: Api) -> None:
    """Test that without a session every data endpoint is a 401 and the portal sends to
    the sign-in page; that a code request without the page's token, or from another
    origin, is a 403; and that signing out needs the session's CSRF token and ends it."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        portal = await client.get("/family")
        assert portal.status == 303 and portal.headers["Location"] == "/family/login"
        assert (await client.get("/family/login")).status == 200
        for path in (
            "/family/api/me",
            "/family/api/households",
            "/family/api/households/H0001/calls",
            "/family/api/households/H0001/calls/1",
        ):
            assert (await client.get(path)).status == 401, path
        no_token = await client.post("/family/api/code", json={"phone": phone})
        assert no_token.status == 403
        await ask_for_code(client, phone)
        foreign = await client.post(
            "/family/api/code",
            json={"phone": phone},
            headers={"Origin": "https://evil.example"},
        )
        assert foreign.status == 403
        bad = await client.post("/family/api/code", json={"phone": "call me"})
        assert bad.status == 400

        await verify(client, phone, await texted_code(api, phone))
        # Reaching here means verify signed in; use its token for the rest.
        me = await body(await client.get("/family/api/me"))
        client.csrf = me["csrf_token"]
        forged = await client.post(
            "/family/api/logout", csrf=False, headers={CSRF_HEADER: "not-the-token"}
        )
        assert forged.status == 403
        assert (await client.get("/family/api/households")).status == 200
        assert (await client.post("/family/api/logout")).status == 200
        assert (await client.get("/family/api/households")).status == 401


async def test_a_session_ends_after_an_idle_hour(api: Api) -> None:
    """Test that a family session unused for an hour has ended."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        await sign_in(api, client, phone)
        assert (await client.get("/family/api/households")).status == 200
        api.clock.advance(family.SESSION_IDLE)
        assert (await client.get("/family/api/households")).status == 401
