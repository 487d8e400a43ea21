"""rooms.tasks.cancel_and_wait: a task whose cancel is lost (as inside a Redis read's timeout on 3.11) still ends."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from rooms.tasks import cancel_and_wait


def _reader(swallowed: list[int]) -> asyncio.Future[None]:
    """A task whose first cancel is swallowed, as a read's timeout swallows it, and whose loop goes on."""

    async def reader() -> None:
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed[0]:
                    raise
                swallowed[0] += 1  # returns as after its timeout: the cancel is gone
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    return asyncio.ensure_future(reader())


async def test_a_task_that_loses_a_cancel_is_cancelled_again_until_it_ends() -> None:
    """The first cancel is swallowed and the loop goes on; the second ends it."""
    swallowed = [0]
    task = _reader(swallowed)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), 5)
    assert task.cancelled()
    assert swallowed == [1]


async def test_several_tasks_that_each_lose_a_cancel_all_end() -> None:
    """Tasks (and a None among them) that each lose their first cancel are all cancelled again until they end."""
    swallowed = [[0] for _ in range(3)]
    tasks = [_reader(s) for s in swallowed]
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_and_wait(*tasks, None, every=0.05), 5)
    assert all(task.cancelled() for task in tasks)
    assert swallowed == [[1], [1], [1]]


async def test_nothing_and_an_ended_task_are_left_as_they_are() -> None:
    """None and a finished task: nothing to cancel; a late exception is logged, not raised."""
    await cancel_and_wait(None)

    async def fails() -> None:
        raise RuntimeError("late")

    task = asyncio.ensure_future(fails())
    await asyncio.wait({task})
    with capture_logs() as logs:
        await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)
    assert [entry["event"] for entry in logs] == ["task_failed_on_stop"]
    assert "late" in logs[0]["error"]
