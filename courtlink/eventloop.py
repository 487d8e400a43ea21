"""The event loop a media-carrying process runs on (``courtlink serve``, ``courtlink media-node`` and its workers):
asyncio's own, or uvloop with ``COURTLINK_EVENT_LOOP=uvloop`` (installed as a dependency on Linux).

A media node's cost per received packet is mostly the turn of the event loop that reads it. asyncio's loop is
Python; uvloop's is libuv (the loop under Node.js, and the kind Janus and mediasoup run on): the same node on it
cost 16-40% less CPU for a publisher alone (1.19-1.67x, three runs), measured side by side with
``bench/forwarding.py --asyncio-counts`` (docs/operations.md, "The event loop and the bandwidth estimator"). libuv
also reads up to 32 queued datagrams per readiness of a socket, as ``media.aiortc_compat.drain_reads`` makes
asyncio's loop do.

uvloop is opt-in until it has run longer under the process tests: in its first day it showed one bug there (a taken
port of a node's range failed an offer, since fixed) and the topology test failed once on it (a recorder's gap
named ``no_media`` where ``node_lost`` was expected; not understood yet).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

EVENT_LOOP_ENV = "COURTLINK_EVENT_LOOP"
"""``uvloop``: uvloop where installed; ``asyncio`` or unset: asyncio's own loop."""

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop chosen for this process (None: asyncio's own)."""
    if os.environ.get(EVENT_LOOP_ENV, "").strip().lower() == "uvloop":
        try:
            import uvloop
        except ImportError:
            return None
        return uvloop.new_event_loop
    return None


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop (``main`` logs it, :func:`announce`, once its logging is set up)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def running() -> str:
    """The event loop this coroutine runs on: ``uvloop`` or ``asyncio``."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def announce() -> None:
    """Log ``event_loop_selected`` (``event_loop``: :func:`running`); call it after ``configure_logging``."""
    log.info("event_loop_selected", event_loop=running())
