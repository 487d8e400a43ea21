"""A clean stop that hangs says where: ``courtlink.logs.watch_stop``."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest
import structlog

from courtlink.logs import configure_logging, stop_on_signals, watch_stop


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """The session's logging as it was before the test configured the processes' JSON facts."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def _watch_timers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if isinstance(t, threading.Timer)}


async def _stderr_once_the_watch_reported(capfd: pytest.CaptureFixture[str], before: set[threading.Thread]) -> str:
    """stderr, read once after the watch's timer thread has ended (a bound, not a timing).

    Read only then: ``readouterr`` rewinds and truncates the captured file, so a read while the timer thread is still
    writing (its JSON fact, then faulthandler's stacks straight to the file descriptor) can drop what lands between
    the read and the truncation."""
    started: set[threading.Thread] = set()
    for _ in range(200):
        started |= _watch_timers() - before  # an ended thread leaves threading.enumerate(): keep those seen
        if started and not any(t.is_alive() for t in started):
            break
        await asyncio.to_thread(threading.Event().wait, 0.05)
    return capfd.readouterr().err


async def _stuck_in_close(released: asyncio.Event) -> None:
    await _waiting_for_a_lock(released)


async def _waiting_for_a_lock(released: asyncio.Event) -> None:
    await released.wait()


async def test_a_stop_still_running_after_its_bound_names_the_tasks_it_waits_for(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    released = asyncio.Event()
    stuck = asyncio.get_running_loop().create_task(_stuck_in_close(released), name="closing-rooms")
    before = _watch_timers()
    end = watch_stop("signaling", after=0.05)
    err = await _stderr_once_the_watch_reported(capfd, before)
    released.set()
    await stuck
    end()
    facts = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    overdue = [f for f in facts if f.get("event") == "stop_overdue"]
    assert len(overdue) == 1, err
    assert overdue[0]["process"] == "signaling"
    # the whole chain of awaits, down to what the innermost coroutine waits for
    chain = next(t for t in overdue[0]["tasks"] if t.startswith("closing-rooms: "))
    assert [step.split(":")[0] for step in chain.removeprefix("closing-rooms: ").split(" > ")] == [
        "_stuck_in_close",
        "_waiting_for_a_lock",
        "Event.wait",
        "-> a future",
    ], chain
    assert "Thread" in err  # every thread's stack follows


async def test_a_stop_that_ends_in_time_says_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    end = watch_stop("media-node", after=0.2)
    end()
    await asyncio.to_thread(threading.Event().wait, 0.4)
    assert "stop_overdue" not in capfd.readouterr().err


async def test_sigterm_stops_a_process_and_its_stop_is_watched_once(capfd: pytest.CaptureFixture[str]) -> None:
    """Every courtlink process stops on SIGINT or SIGTERM through one helper; the stop that follows is watched, once
    however many signals come."""
    configure_logging("info", "json")
    stop = stop_on_signals("serve", overdue_after=0.05)
    before = _watch_timers()
    try:
        assert not stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 10)
        os.kill(os.getpid(), signal.SIGINT)  # an impatient operator: no second watch
        err = await _stderr_once_the_watch_reported(capfd, before)
        await asyncio.to_thread(threading.Event().wait, 0.2)  # a second watch, were there one, would have fired
        err += capfd.readouterr().err
        overdue = [json.loads(line) for line in err.splitlines() if '"stop_overdue"' in line]
        assert [f["process"] for f in overdue] == ["serve"], err
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
