"""Typed keys of the state the signaling application and its requests carry.

aiohttp "No Singletons Please": every shared object hangs on the application
under one of these keys; nothing lives at module level. Plug-ins (the
WebSocket session) read the store, config and token service through them.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from rooms.store import Store
from signaling.config import KeyScope, SignalingConfig
from signaling.metrics import ApiMetrics
from signaling.tokens import TokenService


@dataclass(frozen=True)
class Principal:
    """Who is calling: the configured API key's name and scope."""

    name: str
    scope: KeyScope

    @property
    def actor(self) -> str:
        """The audit actor, ``key:<name>``."""
        return f"key:{self.name}"


CONFIG_KEY = web.AppKey("signaling_config", SignalingConfig)
"""The front door's settings."""
STORE_KEY = web.AppKey[Store]("signaling_store")
"""The store every route reads and writes (opened and closed by whoever created it)."""
TOKENS_KEY = web.AppKey("signaling_tokens", TokenService)
"""Issues and verifies join tokens."""
METRICS_KEY = web.AppKey("signaling_metrics", ApiMetrics)
"""This application's own Prometheus registry and instruments."""
PRINCIPAL_KEY = web.RequestKey("signaling_principal", Principal)
"""The authenticated caller of a management request."""
REQUEST_ID_KEY = web.RequestKey("signaling_request_id", str)
"""The request id echoed in X-Request-Id and bound to every log line."""
