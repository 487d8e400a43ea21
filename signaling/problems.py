"""RFC 9457 problem details: every refusal of the REST API has one shape.

Handlers raise :class:`Problem` (or let a :class:`~rooms.errors.DomainError`,
a pydantic ``ValidationError`` or an aiohttp ``HTTPException`` escape); the
middleware in :mod:`signaling.app` turns each into an
``application/problem+json`` answer. Unexpected exceptions become a bare 500
without any traceback in the body.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rooms.errors import (
    AlreadyExists,
    DomainError,
    InvalidReference,
    InvalidTransition,
    NotAllowed,
    NotFound,
    ScheduleConflict,
    StoreBusy,
)
from signaling.json_input import JsonRefused

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:courtlink:problem:"
"""Problem ``type`` URIs are ``urn:courtlink:problem:<code>``; the code is stable snake_case."""


class FieldError(BaseModel):
    """One offending field of a request."""

    model_config = ConfigDict(frozen=True)

    loc: list[str | int] = Field(description="Path to the field, e.g. ['participants', 0, 'role'].")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(default="value_error", description="Machine-readable kind of error.")


class ConflictItem(BaseModel):
    """One collision of a refused booking."""

    model_config = ConfigDict(frozen=True)

    what: str = Field(description="courtroom, site_terminals or participant.")
    hearing_id: str = Field(description="The already-booked hearing it collides with.")
    detail: str = Field(description="Human-readable explanation.")
    subject: str = Field(default="", description="The courtroom id, site id or identity key that collides.")


class ProblemDocument(BaseModel):
    """The body of every error answer (RFC 9457)."""

    type: str = Field(description="URI naming the kind of problem, 'urn:courtlink:problem:<code>'.")
    title: str = Field(description="Short summary of the kind of problem.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this request, in words a client can show.")
    instance: str | None = Field(default=None, description="The request path.")
    request_id: str | None = Field(default=None, description="Correlates with the X-Request-Id header and the logs.")
    errors: list[FieldError] | None = Field(default=None, description="Offending fields of a validation error.")
    conflicts: list[ConflictItem] | None = Field(default=None, description="Collisions of a refused booking.")


class Problem(Exception):
    """A refusal to answer with a problem document; nothing has changed when it is raised."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def response(self, *, instance: str | None = None, request_id: str | None = None) -> web.Response:
        """The ``application/problem+json`` answer."""
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        if request_id is not None:
            body["request_id"] = request_id
        body.update(self.extra)
        return web.Response(
            status=self.status,
            text=json.dumps(body, ensure_ascii=False),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def validation_problem(exc: ValidationError, *, where: str = "body") -> Problem:
    """422 naming every offending field of a request body or query."""
    errors = [
        {"loc": list(e["loc"]), "msg": _clean_msg(e["msg"]), "type": e["type"]} for e in exc.errors(include_url=False)
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    loc = ".".join(str(part) for part in first["loc"]) or where
    detail = f"{loc}: {first['msg']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more invalid field(s))"
    return Problem(422, "validation_error", f"Invalid request {where}", detail, errors=errors)


def _clean_msg(msg: str) -> str:
    # pydantic prefixes errors raised by our own validators; the client needs only the reason.
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def json_problem(exc: JsonRefused) -> Problem:
    """400 for a body that is not JSON a client may send (malformed, too deeply nested)."""
    if exc.code == "json_too_deep":
        return Problem(400, exc.code, "JSON nested too deeply", f"the request body is refused: {exc.detail}")
    return Problem(400, exc.code, "Malformed JSON", f"the request body is {exc.detail}")


def invalid_field(loc: list[str | int], msg: str) -> Problem:
    """422 for one offending field found after parsing (e.g. a window that ends before it starts)."""
    return Problem(
        422,
        "validation_error",
        "Invalid request body",
        f"{'.'.join(str(p) for p in loc)}: {msg}",
        errors=[{"loc": loc, "msg": msg, "type": "value_error"}],
    )


def domain_problem(exc: DomainError) -> Problem:
    """The problem a domain refusal maps to (see PROTOCOL.md, REST errors)."""
    if isinstance(exc, NotFound):
        return Problem(404, exc.code, "Not found", exc.detail)
    if isinstance(exc, InvalidReference):
        return Problem(422, exc.code, "Unknown reference", exc.detail)
    if isinstance(exc, ScheduleConflict):
        conflicts = [
            {"what": c.what, "hearing_id": c.hearing_id, "detail": c.detail, "subject": c.subject}
            for c in exc.collisions
        ]
        return Problem(409, exc.code, "Schedule conflict", exc.detail, conflicts=conflicts)
    if isinstance(exc, InvalidTransition):
        return Problem(409, exc.code, "Not possible in the hearing's state", exc.detail)
    if isinstance(exc, AlreadyExists):
        return Problem(409, exc.code, "Already exists", exc.detail)
    if isinstance(exc, NotAllowed):
        return Problem(403, exc.code, "Not allowed", exc.detail)
    if isinstance(exc, StoreBusy):
        return Problem(503, exc.code, "Busy", exc.detail, headers={"Retry-After": "1"})
    return Problem(422, exc.code, "Refused", exc.detail)


_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    406: ("not_acceptable", "Not acceptable"),
    408: ("request_timeout", "Request timeout"),
    411: ("length_required", "Length required"),
    413: ("body_too_large", "Request body too large"),
    414: ("uri_too_long", "URI too long"),
    415: ("unsupported_media_type", "Unsupported media type"),
    431: ("headers_too_large", "Request header fields too large"),
}


def http_problem(exc: web.HTTPException, path: str, method: str) -> Problem:
    """A problem for aiohttp's own refusals (unknown route, wrong method, body too large)."""
    status = exc.status
    code, title = _HTTP_CODES.get(status, ("http_error", exc.reason or "HTTP error"))
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = sorted(exc.allowed_methods)
        headers["Allow"] = ", ".join(allowed)
        detail = f"{method} is not allowed on {path}; allowed: {', '.join(allowed)}"
    elif status == 404:
        detail = f"no such resource: {path}"
    elif status == 413:
        detail = f"request body exceeds the limit of {_limit_of(exc)} bytes"
    else:
        detail = exc.text if exc.text and not exc.text.startswith(f"{status}:") else title
    return Problem(status, code, title, detail, headers=headers)


def _limit_of(exc: web.HTTPException) -> str:
    # aiohttp's 413 carries the limit in its text: "Maximum request body size N exceeded, actual body size M".
    text = exc.text or ""
    for word in text.split():
        if word.isdigit():
            return word
    return "configured"
