"""The fake Twilio's own page (``GET /``) and ``GET /messages.json``: what the texts'
phones got, newest first, escaped; and its form, which answers as a carer's phone
through the server's real inbound webhook (a real mosquitto, a real seeded SQLite file,
the whole server on a virtual clock)."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import aiohttp
from twilio.rest import Client

from callcenter.broker import EmbeddedBroker
from callcenter.notify.fake_twilio import FakeTwilio
from tests.api_support import running_api
from tests.fixtures.fake_twilio import fake_of

CARER = "+8613800138000"
OTHER_CARER = "+8613900139000"
DESK = "+8610955500"
HOSTILE = "<script>alert('x')</script> & \"quoted\" <b>bold</b>"
CHINESE = "呼叫12：王芳，莲花巷3号。回复 12a 接单，12d 拒绝"


class _MessageRows(HTMLParser):
    """The page's message table as rows of cell texts (entities decoded), top to bottom."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr" and dict(attrs).get("id"):
            self.rows.append([])
        elif tag == "td" and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _rows(page: str) -> list[list[str]]:
    parser = _MessageRows()
    parser.feed(page)
    return parser.rows


def _moment(fake: FakeTwilio, sid: str) -> str:
    """How the page shows the time the fake took message ``sid``."""
    message = fake.message(sid)
    assert message is not None
    return message.date_created.strftime("%Y-%m-%d %H:%M:%S")


async def _get(fake: FakeTwilio, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession(base_url=fake.base_url) as http,
        http.get(path) as answer,
    ):
        return answer.status, answer.content_type, await answer.text()


async def test_the_page_lists_every_text_newest_first_and_escaped(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that GET / lists the texts sent through the API newest first, with time, to,
    from, status and the text HTML-escaped (never markup), offers a form per phone, and
    that GET /messages.json lists the same, newest first."""
    send = twilio_client.messages.create_async
    oldest = await send(to=CARER, from_=DESK, body=CHINESE)
    middle = await send(to=OTHER_CARER, from_=DESK, body=HOSTILE)
    newest = await send(to=CARER, from_=DESK, body="Call 13: stood down, thank you")

    status, content_type, page = await _get(fake_twilio, "/")
    assert (status, content_type) == (200, "text/html")
    assert "<script>alert" not in page and "<b>bold</b>" not in page
    assert html.escape(HOSTILE) in page
    kind = "sent by the call centre"
    assert _rows(page) == [
        [_moment(fake_twilio, newest.sid), kind, CARER, DESK, "sent", newest.body],
        [_moment(fake_twilio, middle.sid), kind, OTHER_CARER, DESK, "sent", HOSTILE],
        # The Chinese text as it is, only escaped.
        [_moment(fake_twilio, oldest.sid), kind, CARER, DESK, "sent", CHINESE],
    ]
    assert page.count('action="/reply"') == 2  # one form per phone
    assert f'name="From" value="{CARER}"' in page
    assert f'name="From" value="{OTHER_CARER}"' in page
    assert "No inbound URL is set" in page

    status, content_type, listing = await _get(fake_twilio, "/messages.json")
    assert (status, content_type) == (200, "application/json")
    sids = [message.sid for message in (newest, middle, oldest)]
    assert sids == [m.sid for m in fake_twilio.everything()]
    assert listing.index(newest.sid) < listing.index(middle.sid) < listing.index(oldest.sid)


async def test_the_pages_form_answers_as_the_carer_and_shows_the_confirmation(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str
) -> None:
    """Test that answering on the fake's page as the paged carer's phone posts a signed
    reply to the server's /sms/inbound, which accepts the call, and that the page then
    shows the answer and the confirmation the phone got above the dispatch text; a form
    post with a number that is not E.164 is refused with what to type."""
    async with running_api(broker, topic_prefix, seeded_database_url) as api:
        fake = fake_of(api.server)
        call_id = await api.press("H0003")
        page = await fake.next_message()
        _, _, before = await _get(fake, "/")
        assert html.escape(page.body) in before
        assert f'name="From" value="{page.to}"' in before

        async with aiohttp.ClientSession(base_url=fake.base_url) as http:
            async with http.post(
                "/reply", data={"From": page.to, "Body": f"{call_id}a"}, allow_redirects=False
            ) as answer:
                assert (answer.status, answer.headers["Location"]) == (303, "/")
            async with http.post("/reply", data={"From": "13800138000", "Body": "1a"}) as bad:
                assert bad.status == 400
                assert "E.164" in await bad.text()

        assert (await api.call(call_id))["state"] == "accepted"
        (confirmation,) = fake.confirmations(page.to)
        assert str(call_id) in confirmation
        _, _, after = await _get(fake, "/")
        assert html.escape(fake.inbound_url) in after
        phone_rows = [row[1:] for row in _rows(after) if page.to in row[2:4]]
        assert phone_rows == [
            ["confirmation", page.to, page.from_, "sent", confirmation],
            ["the phone's answer", page.from_, page.to, "received", f"{call_id}a"],
            ["sent by the call centre", page.to, page.from_, "sent", page.body],
        ]
