"""Operational routes: ``/healthz``, ``/metrics`` and ``/api/v1/openapi.json``."""

from __future__ import annotations

import json
from importlib import metadata

import structlog
from aiohttp import web

from signaling.keys import METRICS_KEY, STORE_KEY
from signaling.openapi import build_openapi
from signaling.problems import Problem
from signaling.routing import ROUTES_KEY, RouteSpec, respond
from signaling.schemas import Health

API = "/api/v1"


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 when the store answers, else 503."""
    try:
        await request.app[STORE_KEY].list_sites()
    except Exception as exc:
        # The reason goes to the log, not to an unauthenticated caller.
        structlog.get_logger("signaling.http").warning("health_check_failed", error=type(exc).__name__)
        raise Problem(503, "unavailable", "Service unavailable", "the store does not answer") from None
    return respond(Health(status="ok"))


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition of this application's registry."""
    registry = request.app[METRICS_KEY]
    return web.Response(body=registry.exposition(), headers={"Content-Type": registry.content_type})


async def openapi(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of every route."""
    try:
        version = metadata.version("courtlink")
    except metadata.PackageNotFoundError:
        version = "0"
    doc = build_openapi(request.app, request.app[ROUTES_KEY], title="courtlink", version=version)
    return web.Response(text=json.dumps(doc), content_type="application/json")


def register(app: web.Application) -> None:
    """Add the operational routes to ``app``."""
    routes = app[ROUTES_KEY]
    routes.add(
        app.router,
        RouteSpec("GET", "/healthz", "Health of the service and its store", "healthz", "operations",
                  response=Health, errors=(503,)),
        healthz,
    )  # fmt: skip
    routes.add(
        app.router,
        RouteSpec("GET", "/metrics", "Prometheus metrics", "metrics", "operations", content_type="text/plain"),
        metrics,
    )
    routes.add(
        app.router,
        RouteSpec("GET", f"{API}/openapi.json", "This document", "openapi", "operations"),
        openapi,
    )
