"""structlog set-up for courtlink processes (one JSON or console line per event), and how a process stops: on
SIGINT or SIGTERM, watched (:func:`stop_on_signals`)."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Callable

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route structlog and stdlib logging to stderr with context variables merged in."""
    threshold = _LEVELS.get(level, logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(threshold, logging.WARNING), stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )


STOP_OVERDUE_SECONDS = 12.0
"""Seconds a clean stop may take before the process says what it still waits for (a supervisor, systemd or a test
gives up on it at some point; the fact says where it hung)."""


def watch_stop(process: str, after: float = STOP_OVERDUE_SECONDS) -> Callable[[], None]:
    """Call when a clean stop begins (on the event loop); returns the call that ends the watch.

    If the process is still stopping ``after`` seconds later, one ``stop_overdue`` fact lists the asyncio tasks not
    finished (each with where it waits), and every thread's stack goes to stderr: a stop that hangs says where.
    """
    loop = asyncio.get_running_loop()

    def report() -> None:
        waiting: list[str] = []
        with contextlib.suppress(RuntimeError):  # the loop's task set changed under us more than all_tasks retries
            for task in asyncio.all_tasks(loop):
                waiting.append(f"{task.get_name()}: {awaiting(task)}")
        structlog.get_logger("courtlink").warning(
            "stop_overdue", process=process, seconds=after, tasks=sorted(waiting)[:40]
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)

    timer = threading.Timer(after, report)
    timer.daemon = True  # never keeps a process alive
    timer.start()
    return timer.cancel


def awaiting(task: asyncio.Task[object], depth: int = 8) -> str:
    """Where a suspended task waits, outermost first: each coroutine's ``function:line`` down the chain of awaits
    (a task's own ``get_stack`` shows its outermost frame only), then the task or future at the bottom, if any."""
    steps: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(steps) < depth:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        steps.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    waiter = getattr(task, "_fut_waiter", None)  # what the task is suspended on (CPython's asyncio)
    if isinstance(waiter, asyncio.Task):
        steps.append(f"-> {waiter.get_name()}")
    elif isinstance(waiter, asyncio.Future):
        steps.append("-> a future")
    return " > ".join(steps)


def stop_on_signals(process: str, overdue_after: float = STOP_OVERDUE_SECONDS) -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets (caught from now on: a signal right after the ready line is a clean stop
    too); the stop that follows is watched (:func:`watch_stop`). Call it on the event loop, first thing."""
    stop = asyncio.Event()

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()
            watch_stop(process, overdue_after)  # the stop that follows says where it hangs, if it does

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop
