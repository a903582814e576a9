"""The fake Twilio's own page (``GET /``) and ``GET /messages.json``: what the texts'
phones got, newest first, escaped; and its form, which answers as a carer's phone
through the server's real inbound webhook (a real mosquitto, a real seeded SQLite file,
the whole server on a virtual clock)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import aiohttp
import pytest
from twilio.rest import Client

from callcenter.broker import EmbeddedBroker
from callcenter.fake_twilio import FakeTwilio
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

        token = _form_token(before)
        async with aiohttp.ClientSession(base_url=fake.base_url) as http:
            async with http.post(
                "/reply",
                data={"From": page.to, "Body": f"{call_id}a", "token": token},
                allow_redirects=False,
            ) as answer:
                assert (answer.status, answer.headers["Location"]) == (303, "/")
            wrong_number = {"From": "13800138000", "Body": "1a", "token": token}
            async with http.post("/reply", data=wrong_number) as bad:
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


def _form_token(page: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', page)
    assert found is not None, "the answer form carries the page's token"
    return found.group(1)


async def _post_reply(
    fake: FakeTwilio, fields: dict[str, str], headers: dict[str, str] | None = None
) -> int:
    async with (
        aiohttp.ClientSession(base_url=fake.base_url) as http,
        http.post("/reply", data=fields, headers=headers or {}, allow_redirects=False) as answer,
    ):
        return answer.status


async def test_the_reply_form_answers_only_from_the_page_itself(
    fake_twilio: FakeTwilio, twilio_client: Client
) -> None:
    """Test that POST /reply is refused (403, nothing texted) without the page's token,
    with a wrong one, or from another site's page (a foreign Origin), even with the
    right token; and that the page's own form (its token, its origin or none) answers."""
    fake_twilio.inbound_url = "http://127.0.0.1:9/sms/inbound"  # nobody listens: fine here
    await twilio_client.messages.create_async(to=CARER, from_=DESK, body="Call 12")
    _, _, page = await _get(fake_twilio, "/")
    token = _form_token(page)
    answer = {"From": CARER, "Body": "12a"}
    own = fake_twilio.base_url

    assert await _post_reply(fake_twilio, answer) == 403
    assert await _post_reply(fake_twilio, {**answer, "token": token[:-1] + "x"}) == 403
    cross_site = {"Origin": "http://attacker.example"}
    assert await _post_reply(fake_twilio, {**answer, "token": token}, cross_site) == 403
    assert await _post_reply(fake_twilio, {**answer, "token": token}, {"Origin": "null"}) == 403
    assert fake_twilio.replies == []

    assert await _post_reply(fake_twilio, {**answer, "token": token}, {"Origin": own}) == 303
    assert await _post_reply(fake_twilio, {**answer, "token": token}) == 303
    assert [m.body for m in fake_twilio.replies] == ["12a", "12a"]


async def test_the_page_is_for_this_machine_only(fake_twilio: FakeTwilio) -> None:
    """Test that the page and its list answer only to a loopback host name (a site that
    rebinds its own name to 127.0.0.1 gets 403), that the page loads no inline script or
    style and says so in a strict Content-Security-Policy, and that a fake asked to
    listen on any other address refuses to start."""
    async with aiohttp.ClientSession(base_url=fake_twilio.base_url) as http:
        for path in ("/", "/messages.json"):
            async with http.get(path, headers={"Host": f"rebound.example:{fake_twilio.port}"}) as r:
                assert r.status == 403, path
            async with http.get(path, headers={"Host": f"localhost:{fake_twilio.port}"}) as r:
                assert r.status == 200, path
        async with http.get("/") as page:
            policy = page.headers["Content-Security-Policy"]
            text = await page.text()
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert "<style>" not in text and re.search(r"<script>\s*\S", text) is None
    for host in ("0.0.0.0", "192.0.2.10", "::", "example.org"):
        with pytest.raises(ValueError, match="loopback"):
            FakeTwilio(host=host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        FakeTwilio(host=host)
