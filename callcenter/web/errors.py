"""Every failure as JSON: ``{"error": code, "message": text, ...}`` with the right status.

Errors a person can cause (a bad body, an unknown call, a call another operator owns)
get a 4xx and a message saying what to do; only a fault of ours is a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import DBAPIError

from callcenter.domain.calls import AlreadyOwnedError, CallError, NotOwnerError, NotPossibleError
from callcenter.domain.register import say
from callcenter.engine.desk import CallNotFoundError, CarerUnavailableError
from callcenter.engine.register import (
    BrokerRefusedError,
    RecordInUseError,
    RecordNotFoundError,
    RegisterRefusedError,
)
from callcenter.store.db import database_unavailable
from callcenter.web.responses import json_reply
from callcenter.web.state import CALL, OPERATOR, REFUSAL

log = logging.getLogger("callcenter.web")


class ApiError(Exception):
    """A request refused with ``status``; ``detail`` is added to the JSON body."""

    def __init__(self, status: int, code: str, message: str, **detail: Any) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(message)


def bad_request(message: str, **detail: Any) -> ApiError:
    return ApiError(400, "bad_request", message, **detail)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def error_response(error: ApiError, request: web.Request | None = None) -> web.Response:
    """The JSON response for ``error``; noted on the request for the request log."""
    if request is not None:
        request[REFUSAL] = error.message
    body = {"error": error.code, "message": error.message, **error.detail}
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return json_reply(body, status=error.status, headers=headers)


def from_domain(error: Exception, language: str = "en") -> ApiError | None:
    """The API's answer to an error the desk or the register raised, or None if it is not
    the user's. ``language``: the asker's, for the register's problems."""
    if isinstance(error, RegisterRefusedError):
        problems = [
            {"field": p.field, "code": p.code, "message": say(p, language)} for p in error.problems
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return ApiError(422, "invalid", f"the record is not right: {summary}", problems=problems)
    if isinstance(error, RecordNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, RecordInUseError):
        return ApiError(409, "in_use", str(error))
    if isinstance(error, BrokerRefusedError):
        return ApiError(503, "broker_unavailable", f"{error}; nothing was changed, try again")
    if isinstance(error, CallNotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, AlreadyOwnedError):
        return ApiError(409, "already_owned", str(error), owner=error.owner)
    if isinstance(error, NotOwnerError):
        return ApiError(409, "not_owner", str(error), owner=error.owner)
    if isinstance(error, CarerUnavailableError):
        busy = {"carer_state": error.carer_state, "on_call": error.on_call}
        return ApiError(
            409,
            "carer_unavailable",
            str(error),
            carer=error.carer,
            **{k: v for k, v in busy.items() if v is not None},
        )
    if isinstance(error, NotPossibleError):  # reason_needed, unknown_question
        return ApiError(422, error.code, str(error))
    if isinstance(error, CallError):  # IllegalTransitionError and kin
        return ApiError(409, "conflict", str(error))
    return None


def _about(request: web.Request) -> str:
    """The "call N household CODE: " prefix of log lines about a call, if this is one."""
    return f"{request[CALL]}: " if CALL in request else ""


_HTTP_CODES = {
    404: ("not_found", "there is nothing at this address; see docs/api.md for the routes"),
    405: ("method_not_allowed", "this address does not take that method"),
    413: ("too_large", "the request body is too large"),
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into a JSON error response."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error, request)
    except web.HTTPException as error:
        if error.status < 400:
            raise  # redirects and the like are not errors
        code, message = _HTTP_CODES.get(error.status, ("http_error", error.reason))
        detail: dict[str, Any] = {}
        if isinstance(error, web.HTTPMethodNotAllowed):
            detail["allowed"] = sorted(error.allowed_methods)
        response = error_response(ApiError(error.status, code, message, **detail), request)
        if "allowed" in detail:
            # HTTP requires a 405 to name the methods the address does take.
            response.headers["Allow"] = ", ".join(detail["allowed"])
        return response
    except Exception as error:
        if isinstance(error, ConnectionError) and _client_gone(request):
            # The caller hung up mid-request (a board closed, a phone lost its signal):
            # nothing failed here, and there is nobody left to answer.
            log.info(
                "%s%s %s: the client went away (%s)", _about(request), request.method,
                request.path, error,
            )  # fmt: skip
            return web.Response(status=499)
        if not (isinstance(error, DBAPIError) or database_unavailable(error)):
            return _unexpected(error, request)
        log.error(
            "%s%s %s: database unavailable: %s",
            _about(request),
            request.method,
            request.path,
            error,
        )
        return error_response(
            ApiError(503, "unavailable", "the database is not answering; try again shortly"),
            request,
        )


def _client_gone(request: web.Request) -> bool:
    """Whether the caller's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _unexpected(error: Exception, request: web.Request) -> web.StreamResponse:
    """A domain refusal in the caller's words, else an internal error, logged."""
    operator = request.get(OPERATOR)
    mapped = from_domain(error, operator.language if operator is not None else "en")
    if mapped is not None:
        return error_response(mapped, request)
    log.exception("%s%s %s failed", _about(request), request.method, request.path)
    return error_response(
        ApiError(500, "internal_error", "the server failed on this request; it is logged"),
        request,
    )
