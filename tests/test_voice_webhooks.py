"""The voice webhooks as Twilio posts them, and as others might: a ring of the running
server at the fake Twilio, then /voice/ posts made by hand, signed with the server's
token, with another, or not at all (real broker, real database, the real twilio
library's RequestValidator).

The Must-show: forged voice webhooks get 403 and change nothing. And Twilio posting a
status again (same CallSid and SequenceNumber) changes nothing either.
"""

from __future__ import annotations

from sqlalchemy import func, select

from callcenter.app import Running
from callcenter.broker import EmbeddedBroker
from callcenter.notify.voice import GATHER_PATH, STATUS_PATH
from callcenter.store import models as m
from tests.api_support import running_api
from tests.desk_support import rows, scalar
from tests.fixtures.fake_twilio import fake_of
from tests.voice_support import (
    call_fields,
    history_of,
    rings_in_history,
    rung,
    voice_post,
)


async def _voice_row(server: Running, call_id: int) -> int:
    """The id of the call's one voice row (the ring)."""
    found = await rows(
        server,
        select(m.OutboxItem.id).where(
            m.OutboxItem.call_id == call_id, m.OutboxItem.channel == "voice"
        ),
    )
    ((row_id,),) = found
    return int(row_id)


async def test_forged_voice_webhooks_get_403_and_change_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that a "no-answer" status or a "1" key posted for a real ring without
    Twilio's signature, or signed with another token, is refused with 403; a signed post
    from another account or with a glued field is refused with 400; the carer stays
    paged, the ring rings on, and neither the history nor the kept statuses change."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, _, _, ring = await rung(api, "H0006")
        await rings_in_history(api, call_id, "ringing")
        row_id = await _voice_row(api.server, call_id)
        history = await history_of(api, call_id)
        kept = await scalar(api.server, select(func.count()).select_from(m.VoiceStatus))

        status_path = STATUS_PATH.format(outbox_id=row_id)
        gather_path = GATHER_PATH.format(outbox_id=row_id)
        no_answer = call_fields(ring, "no-answer", SequenceNumber="7", CallDuration="0")
        key = call_fields(ring, "in-progress", Digits="1")
        for path, fields in ((status_path, no_answer), (gather_path, key)):
            unsigned = await voice_post(api, path, fields, signed=False)
            assert unsigned.status == 403, unsigned
            assert "X-Twilio-Signature" in unsigned.body
            wrong = await voice_post(api, path, fields, token="0" * 32)
            assert wrong.status == 403, wrong
        other_account = {**no_answer, "AccountSid": "AC" + "1" * 32}
        assert (await voice_post(api, status_path, other_account)).status == 400
        glued = {**no_answer, "CallSid": ring.sid + "SequenceNumber7"}
        assert (await voice_post(api, status_path, glued)).status == 400

        assert await history_of(api, call_id) == history
        assert [a["state"] for a in (await api.call(call_id))["assignments"]] == ["dispatched"]
        assert await scalar(api.server, select(func.count()).select_from(m.VoiceStatus)) == kept
        still = fake.call(ring.sid)
        assert still is not None and still.status == "ringing"


async def test_a_status_posted_again_changes_nothing(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that Twilio posting a call's final status again (same CallSid and
    SequenceNumber) is answered 200 and records nothing: no second history line, no
    second release of the carer."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id, _, _, ring = await rung(api, "H0007", "busy")
        await fake.wait_for_status(ring.sid, "busy")
        await rings_in_history(api, call_id, "busy")
        row_id = await _voice_row(api.server, call_id)
        ((sequence,),) = await rows(
            api.server,
            select(m.VoiceStatus.sequence).where(
                m.VoiceStatus.call_sid == ring.sid, m.VoiceStatus.status == "busy"
            ),
        )
        detail = await api.call(call_id)

        again = call_fields(ring, "busy", SequenceNumber=str(sequence), CallDuration="0")
        replayed = await voice_post(api, STATUS_PATH.format(outbox_id=row_id), again)
        assert replayed.status == 200
        assert await api.call(call_id) == detail
        busy = [h for h in detail["history"] if h["action"] == "ring"]
        assert [h["detail"]["status"] for h in busy].count("busy") == 1
