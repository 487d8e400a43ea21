"""Documented routes: each REST route is registered with its spec (scope, body, answer).

:class:`ApiRoutes` wraps every handler with the API-key check its scope needs
and keeps the specs, from which :mod:`signaling.openapi` builds the OpenAPI
document. Helpers here read and validate bodies and queries into pydantic
models and write pydantic answers, so every handler refuses bad input the same
way.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from signaling import json_input
from signaling.config import KeyScope
from signaling.keys import CONFIG_KEY, PRINCIPAL_KEY, Principal
from signaling.problems import Problem, invalid_field, json_problem, validation_problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

_ALLOWED_BY: dict[KeyScope, frozenset[KeyScope]] = {
    KeyScope.clerk: frozenset({KeyScope.clerk, KeyScope.admin}),
    KeyScope.admin: frozenset({KeyScope.admin}),
}
"""Which key scopes may call a route of each required scope."""


@dataclass(frozen=True)
class RouteSpec:
    """What a route is, for the API-key check and the OpenAPI document."""

    method: str
    path: str
    summary: str
    operation_id: str
    tag: str
    scope: KeyScope | None = None
    """Least scope a key needs; None: no key needed."""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content_type: str = "application/json"
    errors: tuple[int, ...] = ()


class ApiRoutes:
    """The documented routes of one application."""

    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []

    def add(self, router: web.UrlDispatcher, spec: RouteSpec, handler: Handler) -> None:
        """Register ``handler`` under ``spec``, behind the API-key check when it has a scope."""
        self.specs.append(spec)
        router.add_route(spec.method, spec.path, _guarded(spec.scope, handler) if spec.scope else handler)


ROUTES_KEY = web.AppKey("signaling_routes", ApiRoutes)
"""Documented routes of the application; registrars add theirs here too."""


def _guarded(scope: KeyScope, handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        request[PRINCIPAL_KEY] = authenticate(request, scope)
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "handler")
    guarded.__doc__ = handler.__doc__
    return guarded


def authenticate(request: web.Request, scope: KeyScope) -> Principal:
    """The caller behind ``Authorization: Bearer <key>``; 401 without a known key, 403 below ``scope``."""
    header = request.headers.get("Authorization", "")
    challenge = {"WWW-Authenticate": 'Bearer realm="courtlink"'}
    if not header:
        raise Problem(
            401, "unauthorized", "Unauthorized", "missing 'Authorization: Bearer <api key>'", headers=challenge
        )
    kind, _, presented = header.partition(" ")
    if kind.lower() != "bearer" or not presented.strip():
        raise Problem(
            401, "unauthorized", "Unauthorized", "Authorization must be 'Bearer <api key>'", headers=challenge
        )
    presented_bytes = presented.strip().encode()
    found: Principal | None = None
    # Compare against every key in constant time so timing does not reveal which key is close.
    for key in request.app[CONFIG_KEY].api_keys:
        if hmac.compare_digest(presented_bytes, key.key.get_secret_value().encode()):
            found = Principal(key.name, key.scope)
    if found is None:
        raise Problem(401, "unauthorized", "Unauthorized", "the API key is not valid", headers=challenge)
    if found.scope not in _ALLOWED_BY[scope]:
        raise Problem(
            403,
            "forbidden",
            "Forbidden",
            f"this call needs an {scope.value} key; key {found.name!r} is {found.scope.value}",
        )
    return found


async def read_patch(request: web.Request, model: type[M], *, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields a PATCH body sets (validated as ``model``): null only where ``nullable`` (clears the value), and
    at least one field; else 422."""
    changes = (await read_body(request, model)).model_dump(exclude_unset=True)
    nulls = sorted(k for k, v in changes.items() if v is None and k not in nullable)
    if nulls:
        raise invalid_field([nulls[0]], "may not be null; omit the field to keep its value")
    if not changes:
        raise Problem(
            422, "validation_error", "Invalid request body", "nothing to change: give at least one field", errors=[]
        )
    return changes


async def read_body(request: web.Request, model: type[M]) -> M:
    """The request body validated as ``model``: 415 if not JSON, 400 if malformed or too deep, 422 if invalid."""
    ctype = request.content_type
    if (
        request.body_exists
        and ctype not in ("application/json", "application/octet-stream")
        and not (ctype.startswith("application/") and ctype.endswith("+json"))
    ):
        raise Problem(415, "unsupported_media_type", "Unsupported media type", "send the body as application/json")
    raw = await request.read()  # raises 413 past the application's client_max_size
    if not raw.strip():
        raise Problem(400, "malformed_json", "Malformed JSON", "the request body is empty; a JSON object is expected")
    try:
        parsed = json_input.loads(raw)
    except json_input.JsonRefused as exc:
        raise json_problem(exc) from None
    if not isinstance(parsed, dict):
        raise Problem(
            422,
            "validation_error",
            "Invalid request body",
            f"the request body must be a JSON object, not {type(parsed).__name__}",
            errors=[{"loc": [], "msg": "a JSON object is expected", "type": "model_type"}],
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def read_query(request: web.Request, model: type[M]) -> M:
    """The query string validated as ``model``; 422 naming the offending parameters."""
    query = request.query
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise Problem(
            422,
            "validation_error",
            "Invalid query",
            f"query parameter {repeated[0]!r} is given more than once",
            errors=[{"loc": [k], "msg": "given more than once", "type": "repeated"} for k in repeated],
        )
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise validation_problem(exc, where="query") from None


def respond(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer from a pydantic model."""
    return web.Response(
        status=status,
        body=model.model_dump_json().encode(),
        content_type="application/json",
        headers=headers,
    )
