"""Typed keys for what the API's handlers share: the server's services they call (set
once, in app.py), the signed-in operator, and the call a request is about (for the
request log)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from aiohttp import web

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from callcenter.clock import Clock
    from callcenter.config import Config
    from callcenter.engine.desk import Desk
    from callcenter.engine.device_logins import DeviceLogins
    from callcenter.health import Health
    from callcenter.notify.sms import TwilioAccount
    from callcenter.web.auth import DeskOperator
    from callcenter.web.board import BoardData
    from callcenter.web.board_watch import OpenBoards
    from callcenter.web.contract import Contract
    from callcenter.web.metrics import Metrics


@dataclass(frozen=True)
class CallRef:
    """The call a request is about, named as every log line about a call names it."""

    call_id: int
    household: str

    def __str__(self) -> str:
        return f"call {self.call_id} household {self.household}"


@dataclass(frozen=True)
class Credential:
    """What a request signed in with: a board session's cookie or an API token, by the
    digest the database keeps (open boards are closed when it stops being valid)."""

    kind: Literal["session", "token"]
    digest: str


# The server's services the handlers call.
CONFIG: web.AppKey[Config] = web.AppKey("callcenter.config")
CLOCK: web.AppKey[Clock] = web.AppKey("callcenter.clock")
DATABASE: web.AppKey[AsyncEngine] = web.AppKey("callcenter.database")
DESK: web.AppKey[Desk] = web.AppKey("callcenter.desk")
# Whether every part gets its work done, as of the last look (/healthz, the boards).
HEALTH: web.AppKey[Health] = web.AppKey("callcenter.health")
# Devices' broker logins: issued, moved and revoked with the register's devices.
DEVICE_LOGINS: web.AppKey[DeviceLogins] = web.AppKey("callcenter.device_logins")
# The Twilio account whose auth token signs the webhooks Twilio posts back.
SMS_ACCOUNT: web.AppKey[TwilioAccount] = web.AppKey("callcenter.sms_account")
METRICS: web.AppKey[Metrics] = web.AppKey("callcenter.metrics")
# What every connected board shares: rendered cards, the snapshot in the making, sockets.
BOARD: web.AppKey[BoardData] = web.AppKey("callcenter.board")
# The open boards and what each signed in with, to close those whose sign-in ended.
OPEN_BOARDS: web.AppKey[OpenBoards] = web.AppKey("callcenter.open_boards")
# Whether an answer off its declared model is a 500 (web.strict_answers), or logged.
STRICT_ANSWERS: web.AppKey[bool] = web.AppKey("callcenter.strict_answers")
# Which household each call belongs to never changes, so it is remembered for log lines.
HOUSEHOLD_OF_CALL: web.AppKey[dict[int, str]] = web.AppKey("callcenter.household_of_call")

OPERATOR: web.RequestKey[DeskOperator] = web.RequestKey("callcenter.operator")
# The board session's CSRF token, when the request came with the sign-in cookie.
CSRF: web.RequestKey[str] = web.RequestKey("callcenter.csrf")
CREDENTIAL: web.RequestKey[Credential] = web.RequestKey("callcenter.credential")
CALL: web.RequestKey[CallRef] = web.RequestKey("callcenter.call")
# Why a request was refused, for the request log (the response carries it too).
REFUSAL: web.RequestKey[str] = web.RequestKey("callcenter.refusal")
# What the route serving the request declared about itself (callcenter/web/contract.py).
CONTRACT: web.RequestKey[Contract] = web.RequestKey("callcenter.contract")
