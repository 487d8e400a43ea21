"""Serving the signaling application: the connection-level limits that live outside the application.

aiohttp reads the request line and headers before any handler or middleware
runs, so two front-door rules are settings of the runner, not of the
application; :func:`app_runner` applies them from the application's
:class:`~signaling.config.SignalingConfig`:

- ``header_timeout_seconds`` becomes aiohttp's ``keepalive_timeout``, which
  aiohttp arms when a connection opens and after every answer, and which closes
  a connection still waiting for a complete request head when it fires. So a
  half-sent request (or a connection that never sends one) is closed after that
  time, however slowly its bytes trickle in. (The body has its own limit,
  ``body_timeout_seconds``, in :mod:`signaling.middleware`.)
- Malformed requests (bad request line, bad header, oversized header) are
  answered 400 by aiohttp, which logs each with ``logger.exception``: an ERROR
  and a traceback per bad request from the internet. :class:`ProtocolLog` logs
  them as one ``http_request_malformed`` warning line without a traceback;
  anything else aiohttp reports keeps its traceback.

``courtlink serve`` and the tests build their runner here, so both run with the
same limits.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from signaling.keys import CONFIG_KEY

_SERVER_LOGGER = "aiohttp.server"


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's connection logger with malformed requests logged as one warning line (see the module doc)."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger(_SERVER_LOGGER), {})
        self._events = structlog.get_logger("signaling.http")

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """Log ``msg``; a malformed request's parse error becomes a warning without traceback."""
        error = exc_info if isinstance(exc_info, BaseException) else None
        if isinstance(error, HttpProcessingError):
            remote = args[0] if args else None
            self._events.warning(
                "http_request_malformed",
                status=error.code,
                error=" ".join(str(error.message).split())[:300],
                remote=str(remote) if remote is not None else None,
            )
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Pass messages through unchanged."""
        return msg, kwargs


def runner_options(app: web.Application) -> dict[str, Any]:
    """The aiohttp runner settings that carry the front door's connection limits."""
    config = app[CONFIG_KEY]
    return {"keepalive_timeout": config.header_timeout_seconds, "logger": ProtocolLog()}


def app_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """An :class:`aiohttp.web.AppRunner` for ``app`` with the front door's connection limits (``kwargs`` added)."""
    return web.AppRunner(app, **{**runner_options(app), **kwargs})
