"""The family portal's limits under truly simultaneous requests, on both databases: the
count of earlier tries and the try itself are one step per phone and per address, so a
burst gets exactly as many codes and judged guesses as the limits allow, not more."""

from __future__ import annotations

import asyncio
from collections import Counter

from callcenter.store import models as m
from callcenter.web.family import signin as family
from tests.api_support import Api
from tests.board_support import browser
from tests.desk_support import count
from tests.test_family_portal import ask_for_code, contact_phone, verify


async def test_simultaneous_wrong_codes_for_one_phone_are_judged_only_five_times(
    api: Api,
) -> None:
    """Test that 60 wrong codes for one phone sent at the same moment get exactly
    FAILURES_PER_PHONE judgements (401) and 429 for the rest."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        assert (await ask_for_code(client, phone)).status == 202
        replies = await asyncio.gather(*(verify(client, phone, "000000") for _ in range(60)))
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {401: family.FAILURES_PER_PHONE, 429: 60 - family.FAILURES_PER_PHONE}
    wrong = await count(api.server, m.AuditEntry, m.AuditEntry.action == family.CODE_WRONG)
    assert wrong == family.FAILURES_PER_PHONE


async def test_simultaneous_wrong_codes_from_one_address_are_judged_only_twenty_times(
    api: Api,
) -> None:
    """Test that 100 wrong codes for 100 phones from one address at the same moment get
    exactly FAILURES_PER_ADDRESS judgements."""
    async with browser(api) as client:
        await ask_for_code(client, "+8613300000000")
        replies = await asyncio.gather(
            *(verify(client, f"+86133100{n:05d}", "123456") for n in range(100))
        )
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {401: family.FAILURES_PER_ADDRESS, 429: 100 - family.FAILURES_PER_ADDRESS}


async def test_simultaneous_code_requests_for_one_phone_text_only_three_codes(api: Api) -> None:
    """Test that 40 code requests for one phone at the same moment queue exactly
    CODES_PER_PHONE texts, and the others are told to wait."""
    phone = await contact_phone(api, "H0001")
    async with browser(api) as client:
        token = await client.get("/family/api/sign-in")
        client.csrf = (await token.json())["csrf_token"]
        replies = await asyncio.gather(*(ask_for_code(client, phone) for _ in range(40)))
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {202: family.CODES_PER_PHONE, 429: 40 - family.CODES_PER_PHONE}
    texts = await count(api.server, m.OutboxItem, m.OutboxItem.recipient == f"family:{phone}")
    codes = await count(api.server, m.FamilyCode, m.FamilyCode.phone == phone)
    assert texts == codes == family.CODES_PER_PHONE
