"""Phones that cannot get our texts, end to end: marked by STOP or by Twilio's delivery
report, never paged while marked, texts to them failed at once and written on the call,
and START lifting the mark; on a real broker, a real database and the fake Twilio."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select

from callcenter.engine import phones
from callcenter.notify.sms import STATUS_PATH
from callcenter.store import models as m
from tests.api_support import Api
from tests.desk_support import history, page_rows, rows
from tests.fixtures.fake_twilio import fake_of
from tests.ingest_support import eventually
from tests.server_support import run_cli
from tests.sms_support import answer_of, paged, post_signed, sms

SUPERVISOR_PHONE = "+8613900000001"  # tests.api_support's supervisor


async def _texts_to(api: Api, phone: str) -> list[str]:
    return [message.body for message in fake_of(api.server).sent_to(phone)]


async def _broken(api: Api) -> dict[str, phones.Broken]:
    async with api.server.desk.transaction() as session:
        return await phones.every(session)


async def _handed_over(api: Api, call_id: int) -> list[m.OutboxItem]:
    """The call's pages, once the first has been handed to Twilio."""

    async def page_sent() -> bool:
        pages = await page_rows(api.server, call_id)
        return bool(pages) and pages[0].provider_ref is not None

    await eventually(page_sent, what="the page handed to Twilio")
    return await page_rows(api.server, call_id)


async def _undelivered(api: Api, sid: str, code: str) -> int:
    """Twilio's report that message ``sid`` was not delivered, with error ``code``."""
    report = {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": code}
    return await post_signed(api.server, STATUS_PATH, report)


async def _close(api: Api, call_id: int) -> None:
    assert (await api.post(f"/api/calls/{call_id}/acknowledge")).status == 200
    closed = await api.post(f"/api/calls/{call_id}/cancel", {"reason": "entered_in_error"})
    assert closed.status == 200, closed


async def _outbox_settled(api: Api, call_id: int) -> list[tuple[str, str, str]]:
    async def settled() -> bool:
        found = await rows(
            api.server,
            select(m.OutboxItem.state).where(
                m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "sms"
            ),
        )
        return all(state != m.OutboxState.PENDING for (state,) in found)

    await eventually(settled, what=f"every text of call {call_id} settled")
    found = await rows(
        api.server,
        select(m.OutboxItem.recipient, m.OutboxItem.state, m.OutboxItem.last_error)
        .where(m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "sms")
        .order_by(m.OutboxItem.id),
    )
    return [(recipient, state, error) for recipient, state, error in found]


async def test_a_carer_who_texts_stop_is_not_paged_until_start(api: Api) -> None:
    """Test STOP end to end: the phone is marked, the stand-down text to it is failed at
    once without reaching Twilio and written on the call, the carer is skipped by the next
    dispatch, and START makes them the first choice again."""
    first_call, carer, phone = await paged(api, "H0001")
    assert "START" in answer_of(await sms(api, phone, "STOP"))
    (mark,) = (await _broken(api)).values()
    assert (mark.phone, mark.problem, mark.recipient) == (
        phone,
        m.PhoneProblem.OPTED_OUT,
        f"carer:{carer}",
    )
    shown = {c["code"]: c for c in await api.carers()}
    assert "STOP" in shown[carer]["phone_problem"]
    pages_before = await _texts_to(api, phone)

    # Closing the call stands the carer down; that text cannot reach the phone.
    await _close(api, first_call)
    settled = await _outbox_settled(api, first_call)
    assert (f"carer:{carer}", m.OutboxState.FAILED) in [(r, s) for r, s, _ in settled]
    (why,) = [e for r, s, e in settled if r == f"carer:{carer}" and s == m.OutboxState.FAILED]
    assert why.startswith("not sent:") and "STOP" in why
    assert await _texts_to(api, phone) == pages_before  # Twilio never asked

    async def written_on_the_call() -> bool:
        return "text_failed" in [h.action for h in await history(api.server, first_call)]

    await eventually(written_on_the_call, what="the failed stand-down on the call")

    # The same household calls again: the carer would be first, but cannot be texted.
    second_call, other, _ = await paged(api, "H0001")
    assert other != carer
    await _close(api, second_call)

    assert answer_of(await sms(api, phone, "START"))
    assert await _broken(api) == {}
    third_call, again, _ = await paged(api, "H0001")
    assert again == carer
    assert third_call not in (first_call, second_call)


async def test_an_unknown_number_report_marks_the_phone_and_moves_on(api: Api) -> None:
    """Test that Twilio's 30005 (unknown destination) on a page marks the number as
    invalid, besides paging the next carer at once."""
    call_id, carer, phone = await paged(api, "H0002")
    (page,) = await _handed_over(api, call_id)
    assert await _undelivered(api, page.provider_ref or "", "30005") == 200
    marks = await _broken(api)
    assert marks[phone].problem is m.PhoneProblem.INVALID_NUMBER
    assert "30005" in marks[phone].detail
    detail = await api.call(call_id)
    states = [(a["carer"], a["state"]) for a in detail["assignments"]]
    assert states[0] == (carer, "unreachable") and states[1][1] == "dispatched"


async def test_an_undelivered_text_to_a_supervisor_is_written_on_the_call(api: Api) -> None:
    """Test that a text to someone other than a paged carer that does not arrive is
    written on the call (``text_failed``) and does not text the supervisors about their
    own phone."""
    call_id, _, _ = await paged(api, "H0003")
    (page,) = await _handed_over(api, call_id)
    # The page does not arrive: the carer is unreachable and the supervisor is told.
    assert await _undelivered(api, page.provider_ref or "", "30003") == 200

    async def supervisor_texted() -> bool:
        return bool(await _texts_to(api, SUPERVISOR_PHONE))

    await eventually(supervisor_texted, what="the supervisor texted")
    (told,) = fake_of(api.server).sent_to(SUPERVISOR_PHONE)

    async def recorded() -> bool:
        return bool(
            await rows(
                api.server,
                select(m.OutboxItem.id).where(m.OutboxItem.provider_ref == told.sid),
            )
        )

    await eventually(recorded, what="the supervisor's text recorded as sent")
    assert await _undelivered(api, told.sid, "30003") == 200
    entries = [h for h in await history(api.server, call_id) if h.action == "text_failed"]
    assert [(h.detail["phone"], "30003" in h.detail["why"]) for h in entries] == [
        (SUPERVISOR_PHONE, True)
    ]
    assert len(await _texts_to(api, SUPERVISOR_PHONE)) == 1  # not told about itself
    assert SUPERVISOR_PHONE not in await _broken(api)  # a phone switched off is not a broken number


async def test_the_phone_command_lists_and_clears_marks(
    api: Api, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that `callcenter phone list` shows a marked number with whose it is and why,
    and `callcenter phone clear` lifts it so the carer is paged again; clearing an
    unmarked number says so and exits 1."""
    config = tmp_path / "callcenter.toml"
    config.write_text(f'[database]\nurl = "{seeded_database_url}"\n')
    assert (await run_cli(config, "phone", "list")).out.startswith("no phone is marked")
    _, carer, phone = await paged(api, "H0004")
    answer_of(await sms(api, phone, "STOP"))

    listed = await run_cli(config, "phone", "list")
    assert listed.code == 0, listed.err
    assert re.search(rf"^{re.escape(phone)}\topted_out\tcarer:{carer}\t.*STOP", listed.out, re.M)

    cleared = await run_cli(config, "phone", "clear", phone)
    assert (cleared.code, cleared.err) == (0, "")
    assert await _broken(api) == {}
    assert {c["code"]: c for c in await api.carers()}[carer]["phone_problem"] is None
    again = await run_cli(config, "phone", "clear", phone)
    assert again.code == 1 and "not marked" in again.err
