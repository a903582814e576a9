"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the API, built from the
routes' own declarations (callcenter/web/contract.py), never written by hand.

It covers the desk's API under /api/, the family portal's API, the carer page's answer,
Twilio's webhooks and /healthz and /metrics. Pages, their files and the board's
WebSocket are not operations a client calls with JSON; they are listed in NOT_DESCRIBED
with the reason, and a test fails for any route that is neither declared nor listed.
docs/api.md keeps the prose.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from callcenter.web.contract import Access, Contract, contract, contract_of

routes = web.RouteTableDef()

OPENAPI_PATH = "/api/openapi.json"

# Routes outside the description, and why (method, path as the router writes it).
NOT_DESCRIBED = {
    ("GET", "/"): "a redirect to the board",
    ("GET", "/board"): "the board's page (HTML)",
    ("GET", "/static/{path}"): "the board's scripts, styles and sounds",
    ("GET", "/static/vendor/{package}/{path}"): (
        "Leaflet's and Leaflet.markercluster's files for the board's map"
    ),
    ("GET", "/login"): "the board's sign-in page (HTML)",
    ("GET", "/login/static/login.css"): "the sign-in page's style",
    ("POST", "/login"): "the sign-in form's post; answers with a redirect or the page",
    ("POST", "/logout"): "the board's sign-out button; answers with a redirect",
    ("GET", "/reports"): "the reports' chart page (HTML)",
    ("GET", "/wall"): "the supervisors' wallboard (HTML)",
    ("GET", "/admin"): "the administration page: the register and the audit (HTML)",
    ("GET", "/family"): "the family portal's page (HTML)",
    ("GET", "/family/login"): "the family portal's sign-in page (HTML)",
    ("GET", "/family/static/{name}"): "the family portal's script and style",
    ("GET", "/c/{token}"): "the carer's page behind the SMS link (HTML)",
    ("GET", "/carer/static/{name}"): "the carer page's script and style",
    ("GET", "/api/board/feed"): "the board's WebSocket; its messages are in docs/board.md",
}

_SECURITY: dict[Access, list[dict[str, list[str]]]] = {
    Access.DESK: [{"bearer": []}, {"boardSession": []}],
    Access.FAMILY: [{"familySession": []}],
    Access.FAMILY_SIGN_IN: [{"familySignIn": []}],
    Access.TWILIO: [{"twilioSignature": []}],
    Access.CARER_LINK: [],
    Access.PUBLIC: [],
}

_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "an operator's token (`callcenter operator token USERNAME`)",
    },
    "boardSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "callcenter_session",
        "description": "the board's sign-in cookie (POST /login); a change also needs the "
        "session's token from GET /api/me in X-CSRF-Token",
    },
    "familySession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "callcenter_family",
        "description": "a family member's session (POST /family/api/verify); a change also "
        "needs its CSRF token in X-CSRF-Token",
    },
    "familySignIn": {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRF-Token",
        "description": "the token of GET /family/api/sign-in, also sent back in its cookie",
    },
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Twilio's signature of the URL and the form with the auth token",
    },
}


def _version() -> str:
    try:
        return version("eldercare-callcenter")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


def described_routes(app: web.Application) -> Iterator[tuple[str, str, Contract | None]]:
    """Every route of ``app`` as (method, path, its contract or None); the HEAD routes
    aiohttp adds beside each GET are left out."""
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            continue
        yield route.method, path, contract_of(route.handler)


_Key = tuple[type[BaseModel], JsonSchemaMode]


def _members(model: Any) -> tuple[type[BaseModel], ...]:
    """The models an answer's type is made of: itself, or each of a union's."""
    return tuple(getattr(model, "__args__", (model,)))


def _models(contracts: list[Contract]) -> list[_Key]:
    wanted: dict[_Key, None] = {}
    for declared in contracts:
        for model in (declared.path, declared.query, declared.body, declared.form):
            if model is not None:
                wanted[(model, "validation")] = None
        for reply in declared.answers.values():
            if reply.model is not None:
                for member in _members(reply.model):
                    wanted[(member, "serialization")] = None
    return list(wanted)


class _Schemas:
    """Every model's schema, made in one go so that same-named models stay apart."""

    def __init__(self, contracts: list[Contract]) -> None:
        self._refs, top = models_json_schema(
            _models(contracts), ref_template="#/components/schemas/{model}"
        )
        self.components: dict[str, Any] = dict(top.get("$defs", {}))

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self._refs[(model, mode)])

    def of(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        name = str(self.ref(model, mode)["$ref"]).rsplit("/", 1)[-1]
        found: dict[str, Any] = self.components[name]
        return found

    def answer(self, model: Any) -> dict[str, Any]:
        members = [self.ref(member, "serialization") for member in _members(model)]
        return members[0] if len(members) == 1 else {"anyOf": members}


def _parameters(
    model: type[BaseModel] | None, where: str, schemas: _Schemas
) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = schemas.of(model, "validation")
    required = set(schema.get("required", ()))
    parameters = []
    for name, given in schema.get("properties", {}).items():
        prop = {k: v for k, v in given.items() if k not in ("description", "title")}
        description = given.get("description")
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": prop,
        }
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _operation(method: str, path: str, declared: Contract, schemas: _Schemas) -> dict[str, Any]:
    description = declared.description
    if declared.role is not None:
        description = f"{description} Only a {declared.role.value} or above.".strip()
    name = f"{method.lower()}{path}".replace("/", "_").replace("{", "").replace("}", "")
    operation: dict[str, Any] = {
        "operationId": name.replace(".", "_").replace("-", "_"),
        "summary": declared.summary,
        "tags": [declared.tag] if declared.tag else [],
        "security": _SECURITY[declared.access],
        "parameters": _parameters(declared.path, "path", schemas)
        + _parameters(declared.query, "query", schemas),
        "responses": {},
    }
    if description:
        operation["description"] = description
    if declared.role is not None:
        operation["x-role"] = declared.role.value
    for model, media in (
        (declared.body, "application/json"),
        (declared.form, "application/x-www-form-urlencoded"),
    ):
        if model is not None:
            operation["requestBody"] = {
                # An empty JSON body counts as {} where no field is required.
                "required": media != "application/json"
                or bool(schemas.of(model, "validation").get("required")),
                "content": {media: {"schema": schemas.ref(model, "validation")}},
            }
    if declared.upload:
        binary = {"type": "string", "format": "binary"}
        operation["requestBody"] = {
            "required": True,
            "content": {
                media: {
                    "schema": {"type": "object", "properties": {"file": binary}}
                    if media == "multipart/form-data"
                    else binary
                }
                for media in declared.upload
            },
        }
    for status, reply in sorted(declared.answers.items()):
        answer: dict[str, Any] = {"description": reply.description}
        if reply.media:
            content: dict[str, Any] = {}
            if reply.model is not None:
                content["schema"] = schemas.answer(reply.model)
            answer["content"] = {media: content for media in (reply.media, *reply.more_media)}
        operation["responses"][str(status)] = answer
    return operation


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 description of every declared route of ``app``."""
    described = [(m, p, c) for m, p, c in described_routes(app) if c is not None]
    schemas = _Schemas([c for _, _, c in described])
    paths: dict[str, dict[str, Any]] = {}
    for method, path, declared in sorted(described, key=lambda d: (d[1], d[0])):
        assert declared is not None
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, declared, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Eldercare call centre",
            "version": _version(),
            "description": "The desk's API, the family portal's, the carer page's answer, "
            "Twilio's webhooks and the operations endpoints. The prose, with examples, "
            "is docs/api.md.",
        },
        "paths": paths,
        "components": {"schemas": schemas.components, "securitySchemes": _SECURITY_SCHEMES},
    }


class _Document(BaseModel):
    """The OpenAPI 3.1 description of this API."""

    model_config = {"extra": "allow"}

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


# Each application's description as JSON, built on its first request: its routes are
# fixed once it serves, and building it holds the loop for tens of milliseconds.
_BUILT: weakref.WeakKeyDictionary[web.Application, str] = weakref.WeakKeyDictionary()


@routes.get(OPENAPI_PATH)
@contract(answers={200: _Document}, tag="operations")
async def openapi(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 description, built from the routes' declarations."""
    text = _BUILT.get(request.app)
    if text is None:
        text = json.dumps(openapi_document(request.app), ensure_ascii=False)
        _BUILT[request.app] = text
    return web.json_response(text=text)
