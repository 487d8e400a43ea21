"""The signaling application: the REST front door, ready for plug-ins such as the WebSocket session.

:func:`create_app` builds an aiohttp application around a store that the
caller opened (and closes); everything the routes share hangs on typed
``AppKey``s (:mod:`signaling.keys`), nothing on module globals. Extra route
registrars (the WebSocket session, the web client) are called with the
application before it starts; they find the store, config and token service
under the same keys and may document their routes through ``ROUTES_KEY``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from rooms.store import Store
from signaling import rest_catalog, rest_hearings, rest_join, rest_system
from signaling.config import SignalingConfig
from signaling.keys import CONFIG_KEY, METRICS_KEY, PRINCIPAL_KEY, REQUEST_ID_KEY, STORE_KEY, TOKENS_KEY, Principal
from signaling.metrics import ApiMetrics
from signaling.middleware import front_door
from signaling.routing import ROUTES_KEY, ApiRoutes, RouteSpec
from signaling.tokens import TokenService

RouteRegistrar = Callable[[web.Application], None]
"""Adds routes (and startup/cleanup hooks) to the application before it starts."""

__all__ = [
    "CONFIG_KEY",
    "METRICS_KEY",
    "PRINCIPAL_KEY",
    "REQUEST_ID_KEY",
    "ROUTES_KEY",
    "STORE_KEY",
    "TOKENS_KEY",
    "Principal",
    "RouteRegistrar",
    "RouteSpec",
    "create_app",
    "token_service",
]


def token_service(config: SignalingConfig, store: Store) -> TokenService:
    """The join-token service the configuration describes."""
    return TokenService(
        config.token_secret.get_secret_value(),
        store,
        issuer=config.token_issuer,
        audience=config.token_audience,
        margin_before=config.token_margin_before,
        margin_after=config.token_margin_after,
    )


def create_app(
    config: SignalingConfig,
    store: Store,
    *,
    tokens: TokenService | None = None,
    registrars: Sequence[RouteRegistrar] = (),
) -> web.Application:
    """The signaling application on ``store`` with the REST API and every registrar's routes.

    The store stays the caller's: it is opened before and closed after the
    application runs (in the composition root's ``cleanup_ctx`` or a test fixture).
    """
    app = web.Application(middlewares=[front_door], client_max_size=config.max_body_bytes)
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[TOKENS_KEY] = tokens or token_service(config, store)
    app[METRICS_KEY] = ApiMetrics()
    app[ROUTES_KEY] = ApiRoutes()
    rest_system.register(app)
    rest_catalog.register(app)
    rest_hearings.register(app)
    rest_join.register(app)
    for register in registrars:
        register(app)
    return app
