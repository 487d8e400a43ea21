"""Stopping background tasks for certain.

On Python 3.11 a cancel that lands as a timeout inside a Redis call (redis-py's ``asyncio.timeout`` around a read)
completes can be lost: the call returns as after its timeout and the task's loop goes on. A ``close()`` that
cancelled once and awaited the task then waited for ever (CI saw a media worker's stop hang in its heartbeat, and a
test hang 300 s at the end of a hearing recorded over the bus).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger(__name__)

CANCEL_EVERY = 0.5
"""Seconds between cancels of a task that has not ended."""


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, every: float = CANCEL_EVERY) -> None:
    """Cancel the ``tasks`` (None: none) together, again every ``every`` seconds, until all have ended.

    What one ended with other than its cancellation (a late exception) is logged, not raised: its owner is closing.
    """
    given = [task for task in tasks if task is not None]
    while pending := [task for task in given if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=every)
    for task in given:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task_failed_on_stop", task=repr(task)[:200], error=repr(task.exception())[:200])
