"""Carers' links: the short signed address in a dispatch SMS that opens the carer page.

A link is ``<base>/c/<token>``. The token is base64url of the call id, the carer id and
the expiry (12 bytes) followed by the first 9 bytes of HMAC-SHA256 over them: 28
characters, so the page fits in the same text as the dispatch. Only the server can make
one; a changed character breaks the signature. The key is made by the server itself on
first use and kept in ``server_secrets`` (name ``carer_links``), so links survive a
restart and the key never sits in code or configuration files.

A live token answers as the carer, so only the carer's SMS carries it: everything else
that shows or keeps a text or a path (the API's outbox rows, the audit log, every log
line) shows it through ``masked``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callcenter.store import models as m

KEY_NAME = "carer_links"
LINK_PATH = "/c/"
# A link works this long after the dispatch: a whole shift and its paperwork, not days.
LINK_LIFETIME = timedelta(hours=12)
_FIELDS = struct.Struct(">III")  # call id, carer id, expiry (Unix seconds)
_MAC_BYTES = 9  # 72 bits: guessing one is hopeless, and the token stays short
_TOKEN_CHARS = (4 * (_FIELDS.size + _MAC_BYTES)) // 3
_KEY_BYTES = 32
# Where link_key keeps the key for the rest of a transaction (in its session's info).
_KEY_IN_TRANSACTION = "callcenter.link_key"
# Whatever follows LINK_PATH up to the end of the path segment: a token, or a mangled
# one (a token one character off is still nearly one).
_TOKEN_IN_TEXT = re.compile(f"(?<={re.escape(LINK_PATH)})" + r"[^\s/?#&\"'<>]+")
MASK = "***"


class LinkError(Exception):
    """A token that is not one of ours: malformed or wrongly signed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class CarerLink:
    """What a link stands for: this carer's part in this call, until ``expires``."""

    call_id: int
    carer_id: int
    expires: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires


def _mac(key: bytes, fields: bytes) -> bytes:
    return hmac.new(key, fields, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(key: bytes, link: CarerLink) -> str:
    """The signed token for ``link``."""
    fields = _FIELDS.pack(link.call_id, link.carer_id, int(link.expires.timestamp()))
    return base64.urlsafe_b64encode(fields + _mac(key, fields)).decode("ascii")


def read_token(key: bytes, token: str) -> CarerLink:
    """The link ``token`` stands for; ``LinkError`` unless we signed it. An expired link
    is still returned: whether it may act is the caller's question."""
    if len(token) != _TOKEN_CHARS or not token.isascii():
        raise LinkError(f"a link token has {_TOKEN_CHARS} characters")
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (binascii.Error, ValueError):
        raise LinkError("the token is not base64url") from None
    fields, mac = raw[: _FIELDS.size], raw[_FIELDS.size :]
    if not hmac.compare_digest(mac, _mac(key, fields)):
        raise LinkError("the signature does not match")
    call_id, carer_id, expires = _FIELDS.unpack(fields)
    return CarerLink(call_id, carer_id, datetime.fromtimestamp(expires, UTC))


async def stored_key(session: AsyncSession) -> bytes | None:
    """The key, if any link was ever made; reading a link never makes one."""
    stored = await session.scalar(
        select(m.ServerSecret.value).where(m.ServerSecret.name == KEY_NAME)
    )
    return base64.urlsafe_b64decode(stored.encode("ascii")) if stored is not None else None


async def link_key(session: AsyncSession, now: datetime) -> bytes:
    """The key that signs carers' links, made and kept on first use (in ``session``'s
    transaction; a second server making one at the same moment loses and reads ours).
    Read once per transaction: a batch of presses pages many carers."""
    kept: bytes | None = session.info.get(_KEY_IN_TRANSACTION)
    if kept is None:
        kept = session.info[_KEY_IN_TRANSACTION] = await _link_key(session, now)
    return kept


async def _link_key(session: AsyncSession, now: datetime) -> bytes:
    stored = await session.scalar(
        select(m.ServerSecret.value).where(m.ServerSecret.name == KEY_NAME)
    )
    if stored is None:
        made = base64.urlsafe_b64encode(secrets.token_bytes(_KEY_BYTES)).decode("ascii")
        try:
            async with session.begin_nested():
                await session.execute(
                    insert(m.ServerSecret).values(name=KEY_NAME, value=made, created_at=now)
                )
            stored = made
        except IntegrityError:
            stored = await session.scalar(
                select(m.ServerSecret.value).where(m.ServerSecret.name == KEY_NAME)
            )
            if stored is None:
                raise
    return base64.urlsafe_b64decode(stored.encode("ascii"))


def masked(text: str) -> str:
    """``text`` with the token of every carer link in it replaced by ``***``
    (``https://desk.example.org/c/***``); the one function that hides tokens."""
    return _TOKEN_IN_TEXT.sub(MASK, text)


def link_url(base: str, key: bytes, call_id: int, carer_id: int, dispatched: datetime) -> str:
    """The address a dispatched carer opens: ``base`` + ``/c/`` + a token good for
    ``LINK_LIFETIME`` after the dispatch."""
    token = make_token(key, CarerLink(call_id, carer_id, dispatched + LINK_LIFETIME))
    return base.rstrip("/") + LINK_PATH + token
