"""The snapshot keeper: when a live room's snapshot record is written, rewritten and deleted (in-process records)."""

from __future__ import annotations

import asyncio

from protocol.cluster import room_snapshot_key
from rooms.bus import InProcessRecords
from rooms.model import Source
from signaling.session import HearingRoom
from signaling.snapshot import RoomSnapshot, SnapshotKeeper, parse_snapshot
from tests.unit.test_session_snapshot import Court, full_court

KEY = room_snapshot_key("hrg_snap")


class Rooms:
    """The hub's side of the keeper: the live rooms by hearing id."""

    def __init__(self, court: Court) -> None:
        self.court = court
        self.rooms: dict[str, HearingRoom] = {"hrg_snap": court.room}

    def take(self, hearing_id: str) -> RoomSnapshot | None:
        room = self.rooms.get(hearing_id)
        return room.snapshot() if room is not None else None


async def settled(keeper: SnapshotKeeper) -> None:
    """Let the keeper's task write what it was told (a few loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_changes_are_written_once_and_an_unchanged_room_not_again() -> None:
    """A burst of changes costs one write of the latest state; marking an unchanged room writes nothing."""
    rooms, records = Rooms(full_court()), InProcessRecords()
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=30, refresh_seconds=60)
    court = rooms.court
    court.do(court.room.mute(court.c("judge"), "observer", Source.microphone))
    for _ in range(10):
        keeper.changed("hrg_snap")
    await settled(keeper)
    assert keeper.writes == 1
    stored = await records.get(KEY)
    assert stored is not None
    assert (
        Source.microphone
        in next(m for m in parse_snapshot(stored, "hrg_snap").members if m.info.id == "observer").muted_by
    )
    court.clock.now += 2  # only the time moves
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert keeper.writes == 1
    court.do(court.room.lower_hand(court.c("judge"), "prosecutor"))
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert keeper.writes == 2
    await keeper.close()


async def test_a_forgotten_room_loses_its_record() -> None:
    """When the process has no room for the hearing any more, its snapshot record is deleted."""
    rooms, records = Rooms(full_court()), InProcessRecords()
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=30, refresh_seconds=60)
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert await records.get(KEY) is not None
    del rooms.rooms["hrg_snap"]
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert await records.get(KEY) is None
    await keeper.close()


async def test_an_idle_room_is_rewritten_with_a_fresh_time_and_expires_without_its_process() -> None:
    """The record of an idle room is rewritten every refresh interval (its grace clock), and has a TTL."""
    rooms = Rooms(full_court())
    now = [0.0]
    records = InProcessRecords(clock=lambda: now[0])
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=0.3, refresh_seconds=0.05)
    assert keeper.ttl_seconds > 0.3
    keeper.changed("hrg_snap")
    await settled(keeper)
    first = await records.get(KEY)
    assert first is not None
    rooms.court.clock.now += 1
    await asyncio.sleep(0.2)
    second = await records.get(KEY)
    assert second is not None
    assert parse_snapshot(second, "hrg_snap").taken_at > parse_snapshot(first, "hrg_snap").taken_at
    await keeper.close()
    now[0] += keeper.ttl_seconds + 1  # nobody refreshes it any more: it lapses
    assert await records.get(KEY) is None


class FlakyRecords(InProcessRecords):
    """In-process records whose first ``failures`` puts fail (Redis away for a moment)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis away")
        await super().put(key, value, ttl=ttl)


async def test_a_failed_write_is_retried() -> None:
    """A write that fails (Redis away) is tried again, and the room's input never sees the failure."""
    rooms, records = Rooms(full_court()), FlakyRecords(failures=1)
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=30, refresh_seconds=60)
    keeper.changed("hrg_snap")
    for _ in range(50):
        if await records.get(KEY) is not None:
            break
        await asyncio.sleep(0.05)
    assert await records.get(KEY) is not None
    await keeper.close()


async def test_a_bad_record_reads_as_none() -> None:
    """A record that is not a snapshot of this version reads as no snapshot (the hub makes a fresh room)."""
    records = InProcessRecords()
    keeper = SnapshotKeeper(records, lambda _: None, grace_seconds=30)
    await records.put(KEY, b'{"version": 0}')
    assert await keeper.read("hrg_snap") is None
    await keeper.close()


async def test_a_room_handed_over_keeps_its_record() -> None:
    """A room this process lost to another one (disown) is not deleted when it drops it: the new owner's stays."""
    rooms, records = Rooms(full_court()), InProcessRecords()
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=30, refresh_seconds=60)
    keeper.changed("hrg_snap")
    await settled(keeper)
    del rooms.rooms["hrg_snap"]
    keeper.disown("hrg_snap")
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert await records.get(KEY) is not None
    await keeper.close()


async def test_close_right_after_a_change_stops_the_keeper() -> None:
    """A change and the close in the same turn of the loop (a room changed as the process stops): the keeper stops.

    On Python 3.11, ``asyncio.wait_for`` returns the inner result and drops a cancellation that arrives once the
    awaited event is set: the keeper's task, idling between refreshes, took the change, went on, and ``close`` waited
    for it for ever (a signaling process that did not stop in 20 s after SIGTERM, seen in CI with ``stop_overdue``).
    """
    rooms, records = Rooms(full_court()), InProcessRecords()
    keeper = SnapshotKeeper(records, rooms.take, grace_seconds=30, refresh_seconds=60)
    keeper.changed("hrg_snap")
    await settled(keeper)  # written; the task now idles until the next refresh
    assert keeper.writes == 1
    court = rooms.court
    court.do(court.room.lower_hand(court.c("judge"), "prosecutor"))
    keeper.changed("hrg_snap")  # sets the event the idle task waits for ...
    closing = asyncio.ensure_future(keeper.close())  # ... and the close cancels it in the same turn
    done, _ = await asyncio.wait({closing}, timeout=5)  # a bound for a hang, not a timing
    if not done:
        closing.cancel()  # (cancelling close() cancels the keeper's task again, and that one takes)
        await asyncio.gather(closing, return_exceptions=True)
    assert done, "close() waited for the keeper's task, which never ended"
    assert not keeper.running
    assert keeper.writes == 2  # the change was written on the way out
    keeper.changed("hrg_snap")
    await settled(keeper)
    assert keeper.writes == 2  # closed: nothing more
