"""Operator accounts: add one, issue a new token, set a board password, list them,
switch them off and on; and what is kept of their secrets.

A token is shown once, when it is issued; the database keeps only its SHA-256 (as it does
of every session cookie and family code: ``token_digest``). A password is kept only as
its Argon2 hash; setting one, or switching an operator off, signs them out of every
board. The command line (``callcenter operator``, ``callcenter users``), the API's
account routes and the board's sign-in all use this module.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callcenter.domain.phones import E164_HOW, is_e164
from callcenter.store import models as m
from callcenter.store.db import locked_transaction

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 200

_hasher = PasswordHasher()


@functools.cache
def _nobody_hash() -> str:
    """Checked when the username is unknown, so a wrong name costs as long as a wrong
    password. Made at the first such check, not at import: a hash is made slow on
    purpose, and every server start (and takeover) would pay for it."""
    return _hasher.hash(secrets.token_urlsafe(16))


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database keeps of a token (an API token, a board's or a family's session
    cookie, a family's code): its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    """The Argon2 hash kept for ``password``."""
    return _hasher.hash(password)


def password_problem(password: str) -> str | None:
    """Why ``password`` will not do, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password may have at most {MAX_PASSWORD_CHARS} characters"
    return None


def password_matches(stored: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` hashes; with nothing stored (no such
    person, or no password set) it is checked against a hash of nobody's, so that costs
    the same time, and never matches. Slow on purpose: call it off the event loop."""
    try:
        return _hasher.verify(stored or _nobody_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


async def end_sessions(session: AsyncSession, operator_id: int) -> None:
    """Sign an operator out everywhere (new password, switched off)."""
    await session.execute(delete(m.WebSession).where(m.WebSession.operator_id == operator_id))


class OperatorAccountError(Exception):
    """An account change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class OperatorAccount:
    """An operator as listed (never with the token)."""

    username: str
    name: str
    role: str
    phone: str | None
    language: str
    active: bool
    created_at: datetime
    can_sign_in: bool = False  # has a board password


def _check(username: str, phone: str | None) -> None:
    if not _USERNAME.fullmatch(username):
        raise OperatorAccountError(
            f"username {username!r} is not allowed: use 2-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (e.g. li.na)"
        )
    if phone is not None and not is_e164(phone):
        raise OperatorAccountError(
            f"phone {phone!r} is not an international (E.164) number: write {E164_HOW}"
        )


async def add_operator(
    engine: AsyncEngine,
    username: str,
    *,
    name: str,
    now: datetime,
    role: m.OperatorRole = m.OperatorRole.OPERATOR,
    phone: str | None = None,
    language: str = "zh",
    password: str | None = None,
) -> str:
    """Add an operator (with a board password, if given); returns their token (shown
    once)."""
    _check(username, phone)
    if not name.strip():
        raise OperatorAccountError("an operator needs a name (--name)")
    password_hash = None if password is None else _hashed(password)
    token = new_token()
    try:
        async with AsyncSession(engine) as session, session.begin():
            session.add(
                m.Operator(
                    username=username,
                    name=name.strip(),
                    role=role.value,
                    phone=phone,
                    language=language,
                    token_sha256=token_digest(token),
                    password_hash=password_hash,
                    active=True,
                    created_at=now,
                )
            )
    except IntegrityError:
        raise OperatorAccountError(
            f"there is already an operator {username!r}; "
            f"`callcenter operator token {username}` issues them a new token"
        ) from None
    return token


async def issue_token(engine: AsyncEngine, username: str) -> str:
    """A new token for ``username``; their old one stops working at once."""
    token = new_token()
    async with AsyncSession(engine) as session, session.begin():
        changed = await session.execute(
            update(m.Operator)
            .where(m.Operator.username == username)
            .values(token_sha256=token_digest(token))
        )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise OperatorAccountError(
            f"there is no operator {username!r}; `callcenter operator list` shows them"
        )
    return token


def _hashed(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise OperatorAccountError(problem)
    return hash_password(password)


async def _operator_id(session: AsyncSession, username: str) -> int:
    found = await session.scalar(select(m.Operator.id).where(m.Operator.username == username))
    if found is None:
        raise OperatorAccountError(
            f"there is no operator {username!r}; `callcenter users list` shows them"
        )
    return found


async def set_password(engine: AsyncEngine, username: str, password: str) -> None:
    """Set the operator's board password; every board they were signed in to signs out."""
    password_hash = await asyncio.to_thread(_hashed, password)
    # Read then write: the write lock from the start, or another writer committing in
    # between makes SQLite refuse the write ("database is locked").
    async with locked_transaction(engine) as session:
        operator_id = await _operator_id(session, username)
        await session.execute(
            update(m.Operator)
            .where(m.Operator.id == operator_id)
            .values(password_hash=password_hash)
        )
        await end_sessions(session, operator_id)


async def set_active(engine: AsyncEngine, username: str, active: bool) -> None:
    """Let an operator work the desk again, or stop them (their token is then refused
    and their boards are signed out)."""
    async with locked_transaction(engine) as session:
        operator_id = await _operator_id(session, username)
        await session.execute(
            update(m.Operator).where(m.Operator.id == operator_id).values(active=active)
        )
        if not active:
            await end_sessions(session, operator_id)


async def list_operators(engine: AsyncEngine) -> list[OperatorAccount]:
    """Every operator, in the order they were added."""
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(select(m.Operator).order_by(m.Operator.id))).all()
    return [
        OperatorAccount(
            r.username,
            r.name,
            r.role,
            r.phone,
            r.language,
            r.active,
            r.created_at,
            r.password_hash is not None,
        )
        for r in rows
    ]
