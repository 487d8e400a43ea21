"""The one middleware every request passes: request id, body deadline, logs, metrics, and problem answers.

Every refusal leaves as ``application/problem+json``; an unexpected exception
is logged with its traceback and answered with a bare 500 problem that shows
the client nothing but the request id. A request body is read in full before
the handler runs, within ``body_timeout_seconds`` (408 and the connection
closed otherwise); a body that breaks off or is badly framed is a 400
``malformed_body``, logged as one warning line.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from rooms.errors import DomainError
from signaling.keys import CONFIG_KEY, METRICS_KEY, REQUEST_ID_KEY
from signaling.problems import Problem, domain_problem, http_problem, validation_problem

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(request: web.Request) -> str:
    # Reuse a caller's id (a proxy's or the case system's) when it is safe to log; else make one.
    incoming = request.headers.get("X-Request-Id", "")
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


def _route_label(request: web.Request) -> str:
    # Route templates, not raw paths, keep the metric's label set bounded.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, answer every failure as a problem, count and log the answer."""
    request_id = _request_id(request)
    request[REQUEST_ID_KEY] = request_id
    log = structlog.get_logger("signaling.http")
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await _answer(request, handler, request_id, log)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        request.app[METRICS_KEY].observe(request.method, route, response.status, elapsed)
        log.info(
            "request_answered",
            method=request.method,
            route=route,
            path=request.path,
            status=response.status,
            ms=round(elapsed * 1000, 2),
        )
        return response


class BodyTimeout(Exception):
    """The request body did not arrive within the configured time."""


async def _read_body(request: web.Request) -> None:
    """Read (and keep) the whole body within ``body_timeout_seconds``; aiohttp refuses it past ``client_max_size``."""
    try:
        async with asyncio.timeout(request.app[CONFIG_KEY].body_timeout_seconds):
            await request.read()
    except TimeoutError:
        raise BodyTimeout from None


async def _answer(
    request: web.Request, handler: Handler, request_id: str, log: structlog.typing.FilteringBoundLogger
) -> web.StreamResponse:
    problem: Problem
    try:
        if request.body_exists:
            await _read_body(request)
        return await handler(request)
    except BodyTimeout:
        log.warning("request_body_timeout", method=request.method, path=request.path)
        timeout = request.app[CONFIG_KEY].body_timeout_seconds
        problem = Problem(
            408, "request_timeout", "Request timeout", f"the request body did not arrive within {timeout:g} s"
        )
        response = problem.response(instance=request.path, request_id=request_id)
        response.headers["X-Request-Id"] = request_id
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        # The rest of the body may never come: close now rather than linger reading it (aiohttp lingers 10 s).
        request.protocol.force_close()
        return response
    except web.RequestPayloadError as exc:
        log.warning("request_body_malformed", method=request.method, path=request.path, error=str(exc))
        problem = Problem(400, "malformed_body", "Malformed request body", f"the request body is broken: {exc}")
    except Problem as exc:
        problem = exc
    except DomainError as exc:
        problem = domain_problem(exc)
    except ValidationError as exc:
        problem = validation_problem(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem = http_problem(exc, request.path, request.method)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        problem = Problem(
            500,
            "internal_error",
            "Internal server error",
            f"the server failed to answer; quote request id {request_id} when reporting it",
        )
    return problem.response(instance=request.path, request_id=request_id)
