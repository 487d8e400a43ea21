"""rooms.tasks.cancel_and_wait: a task whose cancel is lost (as inside a Redis read's timeout on 3.11) still ends."""

from __future__ import annotations

import asyncio

from rooms.tasks import cancel_and_wait


async def test_a_task_that_loses_a_cancel_is_cancelled_again_until_it_ends() -> None:
    """The first cancel is swallowed, as a read's timeout swallows it, and the loop goes on; the second ends it."""
    swallowed = 0

    async def reader() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # returns as after its timeout: the cancel is gone
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), 5)
    assert task.cancelled()
    assert swallowed == 1


async def test_nothing_and_an_ended_task_are_left_as_they_are() -> None:
    """None and a finished task: nothing to cancel; a late exception is logged, not raised."""
    await cancel_and_wait(None)

    async def fails() -> None:
        raise RuntimeError("late")

    task = asyncio.ensure_future(fails())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)
