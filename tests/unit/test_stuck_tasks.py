"""tests/stuck_tasks.py: what a hung test's dump shows of its tasks (the plugin CI relies on to name a hang)."""

from __future__ import annotations

import asyncio

from tests import stuck_tasks


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _inner(event)


async def test_a_tasks_chain_names_every_coroutine_it_waits_in() -> None:
    """The chain runs from the task's coroutine to the innermost one and what that awaits."""
    event = asyncio.Event()
    task = asyncio.ensure_future(_outer(event))
    task.set_name("the-waiter")
    await asyncio.sleep(0)
    chain = stuck_tasks.await_chain(task)
    steps = chain.split(" > ")
    assert steps[0].startswith("test_stuck_tasks.py:")
    assert steps[0].endswith(" _outer")
    assert steps[1].endswith(" _inner")
    assert steps[2].endswith(" wait")  # asyncio.Event.wait
    event.set()
    await task


async def test_the_dump_takes_every_task_of_the_running_loop() -> None:
    """Taking the dump (as the timer thread does) records each task by name with its chain, for the summary."""
    event = asyncio.Event()
    task = asyncio.ensure_future(_outer(event))
    task.set_name("the-waiter")
    await asyncio.sleep(0)
    before = len(stuck_tasks._dumps)
    stuck_tasks._take("tests/unit/test_stuck_tasks.py::example")
    await asyncio.sleep(0.05)  # the dump is taken on the loop (call_soon_threadsafe)
    try:
        nodeid, lines = stuck_tasks._dumps[before]
        assert nodeid == "tests/unit/test_stuck_tasks.py::example"
        (waiter,) = [line for line in lines if line.startswith("the-waiter: ")]
        assert " _outer > " in waiter
        assert " _inner > " in waiter
    finally:
        del stuck_tasks._dumps[before:]
        event.set()
        await task
