"""What a hung asyncio test was waiting for: every task of its loop, dumped shortly before pytest-timeout fires.

pytest-timeout prints the threads' stacks, which for an asyncio test show only the event loop idling in
``select``. This plugin takes, a little before the timeout, every task of each running loop with the chain of
coroutines it is suspended in (``file:line function > ...``, ending in what it awaits), and prints them at the end of
the run's summary, where a truncated CI log still shows them.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

# Seconds before the test's timeout at which the tasks are taken (the loop must still be turning to answer).
MARGIN_SECONDS = 15.0
MAX_TASKS = 40

_dumps: list[tuple[str, list[str]]] = []


def _where(frame: Any) -> str:
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"


def await_chain(task: asyncio.Task[Any]) -> str:
    """The coroutines ``task`` is suspended in, outermost first, and what the innermost one awaits."""
    steps: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        frame = frame or getattr(awaited, "ag_frame", None)
        if frame is None:
            steps.append(repr(awaited)[:160])
            break
        steps.append(_where(frame))
        inner = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        awaited = inner or getattr(awaited, "ag_await", None)
    return " > ".join(steps)


def _loops() -> list[asyncio.AbstractEventLoop]:
    return [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]


def _take(nodeid: str) -> None:
    for loop in _loops():

        def take(loop: asyncio.AbstractEventLoop = loop) -> None:
            tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
            lines = [f"{t.get_name()}: {await_chain(t)}" for t in tasks[:MAX_TASKS]]
            if len(tasks) > MAX_TASKS:
                lines.append(f"... and {len(tasks) - MAX_TASKS} more")
            _dumps.append((nodeid, lines))

        loop.call_soon_threadsafe(take)


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    try:
        return float(item.config.getini("timeout") or 0)
    except (ValueError, TypeError):
        return 0.0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    timeout = _timeout_of(item)
    timer = None
    if timeout > 2 * MARGIN_SECONDS:
        timer = threading.Timer(timeout - MARGIN_SECONDS, _take, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for nodeid, lines in _dumps:
        terminalreporter.section(f"asyncio tasks of {nodeid}, {MARGIN_SECONDS:g} s before its timeout", sep="-")
        for line in lines:
            terminalreporter.write_line(line)
