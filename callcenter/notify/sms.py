"""SMS out through Twilio: the outbox relay's sender for the "sms" channel.

The official ``twilio`` library's async client does the talking, pointed at Twilio itself
or at any address speaking its API (the local fake by default, see docs/sms.md). Each send
is bounded by ``asyncio.timeout``: the library ignores its own timeout setting (twilio-python
issue #925). Its ``max_retries`` is never used: it re-POSTs on its own and can send a page
twice; the relay decides about retries, from the error classes below. A send whose
outcome is unknown (timeout, connection broken mid-request) is reconciled before it is
sent again: ``find_sent`` looks for it in Twilio's message list for that number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from twilio.base.exceptions import (  # type: ignore[import-untyped]
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from callcenter.config import SmsConfig
from callcenter.engine import repository
from callcenter.engine.outbox import OutboxMessage, Receipt, SendError
from callcenter.notify import twilio_errors

log = logging.getLogger("callcenter.sms")

STATUS_PATH = "/sms/status"

# How far before an attempt began Twilio's message list is searched: our clock and
# Twilio's may differ a little. And how many of that number's messages are looked at.
RECONCILE_MARGIN = timedelta(minutes=2)
RECONCILE_LIMIT = 100

_T = TypeVar("_T")


@dataclass(frozen=True)
class TwilioAccount:
    """Where and as whom to send: credentials, sender, API address, callback address."""

    account_sid: str
    auth_token: str
    from_number: str = ""
    messaging_service_sid: str = ""
    api_base_url: str = ""  # empty: Twilio itself
    public_url: str = ""  # where Twilio reaches our webhooks; empty: no status callbacks
    timeout_s: float = 10.0

    @classmethod
    def from_config(cls, config: SmsConfig, *, public_url: str = "") -> TwilioAccount:
        """The configured account; ``public_url`` when the configuration names none."""
        return cls(
            account_sid=config.account_sid,
            auth_token=config.auth_token,
            from_number=config.from_number,
            messaging_service_sid=config.messaging_service_sid,
            api_base_url=config.api_base_url,
            public_url=config.public_url or public_url,
            timeout_s=config.timeout_s,
        )


def classify(error: TwilioRestException | TwilioServiceException) -> SendError:
    """Twilio's refusal as a SendError: retry when waiting can help, else final."""
    status = int(error.status or 0)
    code = int(error.code) if error.code else None
    said = getattr(error, "msg", "") or getattr(error, "title", "") or str(error)
    if status == 429 or code == twilio_errors.RATE_LIMITED:
        return SendError(f"Twilio is limiting our sending rate (HTTP {status}, code {code})")
    if status >= 500 or status == 0:
        return SendError(f"Twilio had a fault (HTTP {status}, code {code}): {said}")
    if status in (401, 403) or code in twilio_errors.ACCOUNT_REFUSED:
        # Our account, not the recipient: nothing is wrong with the message, and once
        # the configuration is fixed everything queued must still go out. Escalation
        # meanwhile runs on its own timers, as for any page that is not answered.
        return SendError(
            f"Twilio refused our account (HTTP {status}, code {code}): {said}; check "
            "sms.account_sid and CALLCENTER_SMS__AUTH_TOKEN"
        )
    if code in twilio_errors.REFUSED_NUMBER:
        problem, detail = twilio_errors.REFUSED_NUMBER[code]
        return SendError(detail, phone_problem=problem)
    return SendError(
        f"Twilio refused the message (HTTP {status}, code {code}): {said}", permanent=True
    )


class TwilioApi:
    """One client of the twilio library for an account; an async context manager. The
    senders of texts (below) and of phone calls (notify/voice.py) are made of it."""

    # A number Twilio refuses for good is marked as unable to get texts (engine.phones).
    marks_phones = True

    def __init__(self, account: TwilioAccount) -> None:
        self.account = account
        self._client: Any = None

    async def __aenter__(self) -> Self:
        # The async HTTP client binds to the running loop: made here, not in __init__.
        client = Client(
            self.account.account_sid,
            self.account.auth_token,
            http_client=AsyncTwilioHttpClient(),
        )
        if self.account.api_base_url:
            client.api.base_url = self.account.api_base_url.rstrip("/")
        self._client = client
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.http_client.close()

    def client(self) -> Any:
        """The running client; SendError when the sender is not running."""
        if self._client is None:
            raise SendError(f"the {self.__class__.__name__} sender is not running")
        return self._client

    async def handing_over(
        self, request: Callable[[], Awaitable[_T]], message: OutboxMessage, what: str
    ) -> _T:
        """Run ``request``, which hands ``message`` (``what``: "SMS", "voice call") to
        Twilio, within the account's timeout; its refusals and failures as SendError."""
        try:
            async with asyncio.timeout(self.account.timeout_s):
                return await request()
        except (TwilioRestException, TwilioServiceException) as error:
            refused = classify(error)
            if refused.phone_problem is not None and not self.marks_phones:
                refused = SendError(refused.detail, permanent=True)
            raise refused from None
        except aiohttp.ClientConnectorError as error:
            # No connection, so no request went out: safe to send again later.
            raise SendError(f"cannot connect to Twilio, nothing sent: {error}") from None
        except (TimeoutError, aiohttp.ClientError) as error:
            # The request may have reached Twilio and been accepted: the outcome is unknown.
            # Retried later, after find_sent has looked for it (docs/sms.md, "Sending").
            said = (
                f"no answer within {self.account.timeout_s:g} s"
                if isinstance(error, TimeoutError)
                else f"connection broke: {error!r}"
            )
            log.warning(
                "outbox %d: %s to %s (%s): %s; outcome unknown, it may have been sent",
                message.id,
                what,
                message.recipient,
                message.about,
                said,
            )
            raise SendError(f"{said}; outcome unknown", outcome_unknown=True) from None

    async def listing(self, request: Callable[[], Awaitable[_T]], what: str) -> _T:
        """Run ``request``, which reads one of Twilio's lists (``what``: "message list"),
        within the account's timeout; SendError if it cannot be read."""
        try:
            async with asyncio.timeout(self.account.timeout_s):
                return await request()
        except (TwilioRestException, TwilioServiceException) as error:
            raise SendError(f"Twilio's {what} refused: {classify(error).detail}") from None
        except TimeoutError:
            raise SendError(
                f"Twilio's {what} did not answer within {self.account.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise SendError(f"Twilio's {what} could not be read: {error!r}") from None


class TwilioSms(TwilioApi):
    """Sends outbox SMS through Twilio; an async context manager holding one client."""

    channel = repository.SMS

    def _sender(self) -> dict[str, str]:
        if self.account.from_number:
            return {"from_": self.account.from_number}
        return {"messaging_service_sid": self.account.messaging_service_sid}

    async def send(self, message: OutboxMessage) -> Receipt:
        """Hand one text to Twilio; its MessageSid and first status, or SendError."""
        client = self.client()
        options: dict[str, str] = self._sender()
        if self.account.public_url:
            options["status_callback"] = self.account.public_url.rstrip("/") + STATUS_PATH
        sent = await self.handing_over(
            lambda: client.messages.create_async(to=message.address, body=message.body, **options),
            message,
            "SMS",
        )
        return Receipt(str(sent.sid), str(sent.status) if sent.status else None)

    async def find_sent(self, message: OutboxMessage, since: datetime) -> Sequence[Receipt]:
        """Messages Twilio took for ``message`` (same number; its text alone, marked as a
        repeat, or bundled with others) sent since ``since``, newest first; SendError if it
        cannot tell."""
        client = self.client()
        options: dict[str, str] = {}
        if self.account.from_number:
            options["from_"] = self.account.from_number
        listed = await self.listing(
            lambda: client.messages.list_async(
                to=message.address,
                date_sent_after=since - RECONCILE_MARGIN,
                limit=RECONCILE_LIMIT,
                **options,
            ),
            "message list",
        )
        # A text that carries it counts: alone, marked as a repeat, or in a bundle.
        return [
            Receipt(str(found.sid), str(found.status) if found.status else None)
            for found in listed
            if found.body and message.body in found.body
        ]
