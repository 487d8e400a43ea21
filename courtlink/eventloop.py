"""The event loop a media-carrying process runs on (``courtlink serve``, ``courtlink media-node`` and its workers):
uvloop where it is installed (a dependency on Linux), else asyncio's own.

A media node's cost per received packet is mostly the turn of the event loop that reads it. asyncio's loop is
Python; uvloop's is libuv (the loop under Node.js, and the kind Janus and mediasoup run on): the same node on it
cost 16-22% less CPU for a publisher alone, measured side by side with ``bench/forwarding.py --asyncio-counts``
(docs/operations.md, "The event loop and the bandwidth estimator"). libuv also reads up to 32 queued datagrams
per readiness of a socket, as ``media.aiortc_compat.drain_reads`` makes asyncio's loop do.

``COURTLINK_EVENT_LOOP=asyncio`` runs asyncio's own loop instead (an A/B, or a platform without uvloop).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

EVENT_LOOP_ENV = "COURTLINK_EVENT_LOOP"
"""``asyncio``: asyncio's own loop even where uvloop is installed; ``uvloop`` (or unset): uvloop where installed."""

T = TypeVar("T")


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop chosen for this process (``uvloop`` or ``asyncio``) and its factory (None: asyncio's default)."""
    if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop (``main`` logs it, :func:`announce`, once its logging is set up)."""
    _, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running() -> str:
    """The event loop this coroutine runs on: ``uvloop`` or ``asyncio``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def announce() -> None:
    """Log ``event_loop_selected`` (``event_loop``: :func:`running`); call it after ``configure_logging``."""
    log.info("event_loop_selected", event_loop=running())
