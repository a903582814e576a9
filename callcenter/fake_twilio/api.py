"""A local fake of the part of Twilio's REST API that sending SMS and placing calls use.

The real ``twilio`` library talks to it unchanged; only its base URL is pointed here.
Measured with twilio 9.13: the client must be created inside a running loop, and
``client.api.base_url`` is the attribute that works (the ``Api`` domain joins it with
``/2010-04-01/...``; pagination follows ``next_page_uri`` against the same base)::

    client = Client(fake.account_sid, fake.auth_token, http_client=AsyncTwilioHttpClient())
    client.api.base_url = fake.base_url
    try:
        message = await client.messages.create_async(to="+8613800000000", from_="+1...", body="hi")
    finally:
        await client.http_client.close()

This only holds while no edge or region is configured (``TWILIO_EDGE``/``TWILIO_REGION``
unset): with either set the library rewrites the host name of every URL.

Spoken: ``POST`` and ``GET .../Accounts/{sid}/Messages.json`` and
``GET .../Messages/{MessageSid}.json``, with HTTP basic auth, Twilio's error JSON and its
page format. Planned failures (``fail_next``) let tests of the sender see 429s and
permanent errors; planned delays (``delay_next``) accept a message but answer late, so
the sender's timeout fires with the outcome unknown. ``report_status`` posts a delivery
report to a message's StatusCallback, signed as Twilio signs it; with ``auto_deliver``
every accepted message is reported "sent" then "delivered" by itself.

The other way round, ``reply`` is a carer texting back: the fake posts the text to the
call centre's inbound webhook (``inbound_url``) with Twilio's form fields and signature,
and records the TwiML answer's ``<Message>`` as the confirmation the carer's phone gets.
``GET /`` on the fake is a page of everything it saw, newest first, with a form per phone
to answer as that phone; ``GET /messages.json`` is the same for scripts.

Calls (``.../Calls.json``, ``.../Calls/{CallSid}.json``: create, list, fetch, update)
are routed to the phone network this class inherits (network.py, with its interpreter
and switchboard): see docs/voice.md. The page lists the calls too, with buttons that act
as their phones (``POST /call``), and ``GET /calls.json`` gives them to scripts.

That page shows every text, family sign-in codes and carer links included, and answers as
any carer's phone: the fake listens on loopback only (it refuses any other address),
answers only requests whose Host is a loopback name (a site that rebinds its own name to
127.0.0.1 gets nothing), and its form carries a token of this process's own, checked with
the Origin on every ``POST /reply`` and ``POST /call``, so no other site's page can answer
through it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import secrets
import xml.etree.ElementTree as ET
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import MultiDictProxy
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from callcenter.clock import Clock, SystemClock
from callcenter.fake_twilio import network, rest
from callcenter.fake_twilio.calls import E164
from callcenter.fake_twilio.message import (
    API_VERSION,
    INBOUND,
    OUTBOUND_REPLY,
    FakeMessage,
    PlannedFailure,
    segments,
)
from callcenter.fake_twilio.network import PhoneNetwork
from callcenter.fake_twilio.page import (
    PAGE_HEADERS,
    PAGE_SCRIPT,
    PAGE_STYLE,
    call_json,
    page_file,
    render_page,
)

# Twilio's magic test number; the fake's own number when a reply does not name one.
DEFAULT_NUMBER = "+15005550006"
_AUTO_DELIVER_AFTER_S = 0.2
# Longest wait for the call centre's inbound webhook to answer a reply.
_WEBHOOK_TIMEOUT_S = 30.0
LOOPBACK_ONLY = (
    "the fake Twilio listens on loopback only: its page shows every text, family sign-in "
    "codes and carer links included, and answers as any carer's phone"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name, without port) is this machine alone."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class FakeTwilio(PhoneNetwork):
    """A local HTTP server speaking Twilio's Messages and Calls APIs, with a phone network
    behind the calls (``PhoneNetwork``); an async context manager. Loopback only: any
    other ``host`` is a ValueError."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        clock: Clock | None = None,
        auto_deliver: bool = False,
        inbound_url: str = "",
        number: str = DEFAULT_NUMBER,
        pause_scale: float = 1.0,
    ) -> None:
        if not is_loopback(host):
            raise ValueError(
                f"{LOOPBACK_ONLY}; it will not listen on {host!r} (use 127.0.0.1, ::1 or localhost)"
            )
        self.host = host
        # Report "sent" then "delivered" to each accepted message's StatusCallback.
        self.auto_deliver = auto_deliver
        # Where carers' replies are posted: the call centre's /sms/inbound, as configured
        # for "A message comes in" on a Twilio number. Settable once the server listens.
        self.inbound_url = inbound_url
        # The number a reply is sent to when the carer's phone never got a text from us.
        super().__init__(
            account_sid=account_sid or "AC" + secrets.token_hex(16),
            auth_token=auth_token or secrets.token_hex(16),
            clock=clock or SystemClock(),
            number=number,
            pause_scale=pause_scale,
        )
        # Messages created through the API (outbound-api): what the call centre sent.
        self.messages: list[FakeMessage] = []
        # Carers' texts to us (inbound) and the TwiML confirmations they got back
        # (outbound-reply). Kept apart from ``messages`` so that neither the message list
        # the sender reconciles against nor ``next_message`` ever shows them.
        self.replies: list[FakeMessage] = []
        # Every message of both lists by its sid, and the number that last texted each
        # phone: looked up on every answer, and a simulated week holds thousands.
        self._by_sid: dict[str, FakeMessage] = {}
        self._last_sender: dict[str, str] = {}
        self._requested_port = port
        self._port: int | None = None
        self._failures: collections.deque[PlannedFailure] = collections.deque()
        self._delays: collections.deque[float] = collections.deque()
        self._order = itertools.count(1)
        self._handed_out = 0
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._reports: set[asyncio.Task[None]] = set()
        # The page's form sends it back: only a page this process served can answer.
        self._form_token = secrets.token_urlsafe(32)

    @property
    def port(self) -> int:
        """The port it listens on (known once started)."""
        if self._port is None:
            raise RuntimeError("FakeTwilio is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """What to set as ``client.api.base_url``, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.port}"

    @property
    def page_url(self) -> str:
        """The page listing everything the fake saw, for a person's browser."""
        return f"{self.base_url}/"

    async def start(self) -> None:
        """Start listening; with port 0 the system picks a free port."""
        self._stopping.clear()
        app = web.Application(middlewares=[_loopback_names_only, self._account_only])
        base = f"/{API_VERSION}/Accounts/{{account_sid}}"
        app.router.add_post(f"{base}/Messages.json", self._create)
        app.router.add_get(f"{base}/Messages.json", self._list)
        app.router.add_get(f"{base}/Messages/{{sid}}.json", self._fetch)
        app.router.add_post(f"{base}/Calls.json", self._create_call)
        app.router.add_get(f"{base}/Calls.json", self._list_calls)
        app.router.add_get(f"{base}/Calls/{{sid}}.json", self._fetch_call)
        app.router.add_post(f"{base}/Calls/{{sid}}.json", self._update_call)
        app.router.add_delete(f"{base}/Recordings/{{sid}}.json", self._delete_recording)
        app.router.add_get("/", self._page)
        app.router.add_get("/page.js", page_file(PAGE_SCRIPT, "text/javascript"))
        app.router.add_get("/page.css", page_file(PAGE_STYLE, "text/css"))
        app.router.add_get("/messages.json", self._everything)
        app.router.add_post("/reply", self._reply_from_page)
        app.router.add_post("/call", self._phone_from_page)
        app.router.add_get("/calls.json", self._calls_for_scripts)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening and drop open connections; reports still under way are cancelled,
        and create calls held back by ``delay_next`` are answered at once."""
        self._stopping.set()
        reports, self._reports = self._reports, set()
        for task in reports:
            task.cancel()
        await asyncio.gather(*reports, return_exceptions=True)
        await self.hang_up_everything()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTwilio:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def fail_next(
        self, status: int = 429, code: int = 20429, times: int = 1, message: str | None = None
    ) -> None:
        """Make the next ``times`` create calls fail with this HTTP status and Twilio code."""
        text = message or rest.ERROR_MESSAGES.get(code, "Planned failure")
        self._failures.extend(PlannedFailure(status, code, text) for _ in range(times))

    def stop_failing(self) -> None:
        """Drop the failures planned with ``fail_next`` that are still to come."""
        self._failures.clear()

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Hold back the answer to the next ``times`` accepted create calls by ``seconds``.

        The message is accepted and recorded at once (lists and fetches show it), only the
        create call's answer comes late: a sender whose timeout is shorter gives up not
        knowing whether it was sent, which is what its reconciliation is for."""
        if seconds < 0:
            raise ValueError(f"a delay cannot be negative: {seconds} s")
        self._delays.extend(seconds for _ in range(times))

    # A timeout argument, not asyncio.timeout at the call site: tests read better this way.
    async def next_message(self, timeout: float = 5.0) -> FakeMessage:  # noqa: ASYNC109
        """Each recorded message once, in order; waits up to ``timeout`` s for one to arrive."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self._handed_out < len(self.messages))
            message = self.messages[self._handed_out]
            self._handed_out += 1
            return message

    def message(self, sid: str) -> FakeMessage | None:
        """The recorded message with this SID (sent, replied or confirmed), if any."""
        return self._by_sid.get(sid)

    def sent_to(self, phone: str) -> list[FakeMessage]:
        """The messages the API was asked to send to ``phone``, in arrival order."""
        return [m for m in self.messages if m.to == phone]

    def everything(self) -> list[FakeMessage]:
        """Every message the fake saw, in whichever direction, newest first."""
        return sorted((*self.messages, *self.replies), key=lambda m: m.order, reverse=True)

    def confirmations(self, phone: str) -> list[str]:
        """The texts Twilio sent back to ``phone`` from the webhook's TwiML, in order."""
        return [
            m.body
            for m in sorted(self.replies, key=lambda m: m.order)
            if m.direction == OUTBOUND_REPLY and m.to == phone
        ]

    async def reply(
        self, from_number: str, body: str, *, to: str | None = None, auth_token: str | None = None
    ) -> tuple[int, str]:
        """A phone texts ``body`` to our number: post it to ``inbound_url`` with Twilio's
        form fields, signed as Twilio signs (``auth_token`` signs with another token, to
        see a forgery refused). The webhook's HTTP status and answer; the TwiML's
        ``<Message>`` texts are recorded as sent back to the phone.

        ``to`` is the number texted; by default the one that last texted this phone."""
        if not self.inbound_url:
            raise RuntimeError(
                "the fake Twilio has no inbound URL to post replies to: set "
                "fake.inbound_url to the call centre's /sms/inbound"
            )
        if not E164.fullmatch(from_number):
            raise ValueError(f"a reply comes from an E.164 number (+8613...), not {from_number!r}")
        ours = to or self._number_that_texted(from_number)
        sid = "SM" + secrets.token_hex(16)
        form = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": body,
            "From": from_number,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": str(segments(body)),
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": ours,
        }
        received = FakeMessage(
            sid=sid,
            account_sid=self.account_sid,
            to=ours,
            from_=from_number,
            body=body,
            messaging_service_sid=None,
            status_callback=None,
            date_created=self._clock.now(),
            status="received",
            form=form,
            direction=INBOUND,
        )
        self._record_reply(received)
        return await self._post_inbound(received, auth_token)

    async def replay(self, sid: str) -> tuple[int, str]:
        """Post a phone's earlier text again, same MessageSid and fields, as Twilio does
        when it retries a webhook; the webhook's HTTP status and answer."""
        received = self.message(sid)
        if received is None or received.direction != INBOUND:
            raise LookupError(f"the fake Twilio has no text from a phone with sid {sid}")
        return await self._post_inbound(received, None)

    def _number_that_texted(self, phone: str) -> str:
        return self._last_sender.get(phone, self.number)

    def _record_reply(self, message: FakeMessage) -> None:
        message.order = next(self._order)
        self.replies.append(message)
        self._by_sid[message.sid] = message

    async def _post_inbound(self, received: FakeMessage, auth_token: str | None) -> tuple[int, str]:
        url = self.inbound_url
        params = received.form
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(url, params)
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT_S)
                ) as http,
                http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as answer,
            ):
                status, text = answer.status, await answer.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            received.note = f"not delivered to {url}: {error!r}"
            raise
        if status != 200:
            received.note = f"the webhook answered HTTP {status}: {text[:200]}"
            return status, text
        try:
            confirmations = _twiml_messages(text)
        except ET.ParseError as error:
            received.note = f"the webhook's answer is not TwiML ({error}): {text[:200]}"
            return status, text
        received.note = ""
        for confirmation in confirmations:
            self._record_reply(
                FakeMessage(
                    sid="SM" + secrets.token_hex(16),
                    account_sid=self.account_sid,
                    to=received.from_ or "",
                    from_=received.to,
                    body=confirmation,
                    messaging_service_sid=None,
                    status_callback=None,
                    date_created=self._clock.now(),
                    status="sent",
                    date_sent=self._clock.now(),
                    direction=OUTBOUND_REPLY,
                )
            )
        return status, text

    async def report_status(self, sid: str, status: str, error_code: int | None = None) -> int:
        """Post Twilio's delivery report for message ``sid`` to its StatusCallback, signed
        with this account's auth token; the HTTP status the callback answered."""
        message = self.message(sid)
        if message is None:
            raise LookupError(f"the fake Twilio has no message {sid}")
        if not message.status_callback:
            raise ValueError(f"message {sid} was sent without a StatusCallback")
        message.status = status
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": message.from_ or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        url = message.status_callback
        signature = RequestValidator(self.auth_token).compute_signature(url, params)
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, data=params, headers={"X-Twilio-Signature": signature}) as answer,
        ):
            await answer.read()
            return answer.status

    async def _deliver(self, sid: str) -> None:
        # As with Twilio, reports come a moment after the create answer, not before it.
        await asyncio.sleep(_AUTO_DELIVER_AFTER_S)
        for status in ("sent", "delivered"):
            try:
                await self.report_status(sid, status)
            except aiohttp.ClientError:
                return  # nobody listens: as with Twilio, the report is lost

    async def _create(self, request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        if self._failures:
            return self._planned_failure()
        to = form.get("To", "")
        if not to:
            return rest.error(400, 21604)
        if not E164.fullmatch(to):
            return rest.error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return rest.error(400, 21603)
        if not form.get("Body"):
            return rest.error(400, 21602)
        message = FakeMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=form.get("From"),
            body=form["Body"],
            messaging_service_sid=form.get("MessagingServiceSid"),
            status_callback=form.get("StatusCallback"),
            date_created=self._clock.now(),
            form=form,
        )
        # The create answer says "queued", as Twilio's does; the stored message is then
        # handed to the "carrier" at once, so fetches and lists see it sent.
        answer = message.to_json()
        message.status = "sent"
        message.date_sent = message.date_created
        message.order = next(self._order)
        async with self._arrived:
            self.messages.append(message)
            self._by_sid[message.sid] = message
            if message.from_:
                self._last_sender[message.to] = message.from_
            self._arrived.notify_all()
        await self._hold_back()
        if self.auto_deliver and message.status_callback:
            task = asyncio.create_task(self._deliver(message.sid), name="fake_twilio.report")
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)
        return web.json_response(answer, status=201)

    @web.middleware
    async def _account_only(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Twilio's REST routes answer this account's credentials only (401, or 404 for
        another account), and a request they refuse gets Twilio's error JSON."""
        if "account_sid" in request.match_info:
            refusal = rest.refusal(request, self.account_sid, self.auth_token)
            if refusal is not None:
                return refusal
        try:
            return await handler(request)
        except rest.RefusedError as refused:
            return refused.response()

    def _planned_failure(self) -> web.Response:
        failure = self._failures.popleft()
        return rest.error(failure.status, failure.code, failure.message)

    async def _hold_back(self) -> None:
        """Answer a create late if ``delay_next`` asked: it is recorded already, so to
        the caller the outcome is unknown."""
        if self._delays:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._delays.popleft())

    async def _create_call(self, request: web.Request) -> web.Response:
        """``POST .../Calls.json``: the call rings at once; planned failures and delays
        apply as to messages (one queue for both)."""
        form = await request.post()
        if self._failures:
            return self._planned_failure()
        answer = self.place(form).to_json()  # "queued", as Twilio answers
        await self._hold_back()
        return web.json_response(answer, status=201)

    async def _fetch_call(self, request: web.Request) -> web.Response:
        return web.json_response(self.known(request.match_info["sid"]).to_json())

    async def _update_call(self, request: web.Request) -> web.Response:
        call = await self.update(request.match_info["sid"], await request.post())
        return web.json_response(call.to_json())

    async def _delete_recording(self, request: web.Request) -> web.Response:
        """``DELETE .../Recordings/{RE}.json``: 204, or 20404 for one it does not hold."""
        if not self.delete_recording(request.match_info["sid"]):
            return rest.error(404, 20404)
        return web.Response(status=204)

    async def _list_calls(self, request: web.Request) -> web.Response:
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json"
        return rest.listing(self.newest_first(), network.matches, request.query, path, "calls")

    async def _fetch(self, request: web.Request) -> web.Response:
        message = self.message(request.match_info["sid"])
        if message is None:
            return rest.error(404, 20404)
        return web.json_response(message.to_json())

    async def _list(self, request: web.Request) -> web.Response:
        path = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        newest_first = list(reversed(self.messages))
        return rest.listing(newest_first, _matches, request.query, path, "messages")

    async def _everything(self, request: web.Request) -> web.Response:
        """``GET /messages.json``: the page's content for scripts, newest first."""
        return web.json_response(
            {
                "inbound_url": self.inbound_url,
                "messages": [{**m.to_json(), "note": m.note} for m in self.everything()],
            }
        )

    async def _page(self, request: web.Request) -> web.Response:
        """``GET /``: what every phone got and sent, newest first, and a form per phone."""
        return web.Response(
            text=render_page(
                self.everything(),
                self._form_token,
                self.inbound_url,
                self.newest_first(),
                self.voice_url,
            ),
            content_type="text/html",
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    async def _form_from_page(self, request: web.Request) -> MultiDictProxy[Any]:
        """The form of a POST made by the page itself: its token, and its own Origin when
        the browser sends one; 403 otherwise (another site's page cannot act here)."""
        try:
            form = await request.post()
        except (UnicodeDecodeError, LookupError, ValueError):
            raise web.HTTPBadRequest(text="the form is not UTF-8 text") from None
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise web.HTTPForbidden(text=f"answers come from this page only, not {origin[:80]}")
        token = str(form.get("token", ""))
        if not secrets.compare_digest(token.encode(), self._form_token.encode()):
            raise web.HTTPForbidden(text="the form's token is missing or stale: reload the page")
        return form

    async def _phone_from_page(self, request: web.Request) -> web.Response:
        """``POST /call`` (the page's buttons): the phone on call ``sid`` answers, is
        busy, hangs up or presses ``digits``; back to the page. Protected as /reply is."""
        form = await self._form_from_page(request)
        sid, action = str(form.get("sid", "")), str(form.get("action", ""))
        hooks = {"answer": self.answer, "busy": self.reject, "hang_up": self.hang_up}
        try:
            if action == "press":
                await self.press(sid, str(form.get("digits", "")))
            elif action in hooks:
                await hooks[action](sid)
            else:
                raise web.HTTPBadRequest(
                    text=f"action is answer, busy, hang_up or press: {action!r}"
                )
        except LookupError:
            raise web.HTTPNotFound(text=f"no call {sid[:40]!r}") from None
        except (ValueError, TimeoutError) as refused:
            raise web.HTTPConflict(
                text=str(refused) or "the call is not listening for keys"
            ) from None
        raise web.HTTPSeeOther("/")

    async def _calls_for_scripts(self, request: web.Request) -> web.Response:
        """``GET /calls.json``: every call newest first, with what happened on it."""
        return web.json_response(
            {"voice_url": self.voice_url, "calls": [call_json(c) for c in self.newest_first()]}
        )

    async def _reply_from_page(self, request: web.Request) -> web.Response:
        """``POST /reply`` (the page's form): the phone ``From`` texts ``Body``; back to
        the page, which shows the text and the confirmation (or what went wrong). Only
        from the page itself: its token, and its own Origin when the browser sends one."""
        form = await self._form_from_page(request)
        phone, body = str(form.get("From", "")).strip(), str(form.get("Body", ""))
        if not E164.fullmatch(phone):
            raise web.HTTPBadRequest(text=f"From must be an E.164 number (+8613...), not {phone!r}")
        if not body.strip():
            raise web.HTTPBadRequest(text="Body is empty: type the answer, e.g. 12a")
        if not self.inbound_url:
            raise web.HTTPConflict(
                text="no inbound URL is set: replies have nowhere to go "
                "(callcenter fake-twilio --inbound-url http://HOST:PORT/sms/inbound)"
            )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await self.reply(phone, body)  # a failure is noted on the message shown
        raise web.HTTPSeeOther("/")


def _matches(message: FakeMessage, query: Any) -> bool:
    if "To" in query and message.to != query["To"]:
        return False
    if "From" in query and message.from_ != query["From"]:
        return False
    return rest.within_bounds(message.date_sent or message.date_created, "DateSent", query)


@web.middleware
async def _loopback_names_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """403 unless the request names this machine as its host: a page on another site
    whose name was made to point at 127.0.0.1 (DNS rebinding) names itself."""
    host = request.url.host or ""
    if not is_loopback(host):
        raise web.HTTPForbidden(text=f"{LOOPBACK_ONLY}; open it as http://127.0.0.1:PORT/")
    return await handler(request)


def _twiml_messages(text: str) -> list[str]:
    """The texts a TwiML answer tells Twilio to send back (its ``<Message>`` elements);
    none for an empty answer. ET.ParseError when it is not XML at all."""
    if not text.strip():
        return []
    root = ET.fromstring(text)
    return ["".join(element.itertext()) for element in root.iter("Message")]
