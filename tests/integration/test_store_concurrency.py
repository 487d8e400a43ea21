"""Concurrent conflicting bookings: exactly as many win as the schedule allows, on both backends, across processes."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from rooms.backends.redis import RedisStore
from rooms.errors import ScheduleConflict
from rooms.model import Courtroom, Hearing, HearingKind, Participant, Role, Site, SiteKind, identity_of
from rooms.store import HearingFilter, Store, Trace
from tests.integration.backends import BACKENDS, REDIS_FIXTURES, Backend, backend_for

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
ADMIN = Trace(actor="key:admin", action="created")
N = 50
ROOT = str(Path(__file__).resolve().parents[2])
"""The checkout, put on the worker processes' sys.path."""

# Each scenario: how hearing i is booked so that every pair collides, and how many may win.
SCENARIOS = {
    "courtroom": 1,  # all in cr0
    "participant": 1,  # each in its own courtroom, all with the same defendant
    "site_terminals": 2,  # each in its own courtroom, each with a different person at dc1 (2 terminals)
}


def contender(scenario: str, i: int) -> Hearing:
    """Booking number ``i`` of a scenario; every booking overlaps every other by at least half an hour."""
    if scenario == "courtroom":
        courtroom, name = "cr0", f"Person {i}"
    elif scenario == "participant":
        courtroom, name = f"cr{i}", "Zhang San"
    else:
        courtroom, name = f"cr{i}", f"Person {i}"
    start = T0 + timedelta(minutes=i % 30)
    return Hearing(
        id=f"h{scenario[:4]}{i}",
        case_number=f"(2030) Case {i}",
        kind=HearingKind.arraignment,
        courtroom_id=courtroom,
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        participants=(
            Participant(id=f"p{i}", name=name, role=Role.defendant, site_id="dc1", identity=identity_of(name, "dc1")),
        ),
    )


async def prepare(store: Store) -> None:
    """A detention center with two terminals and N courtrooms."""
    await store.create_site(Site(id="court1", name="Court", kind=SiteKind.court), ADMIN)
    await store.create_site(Site(id="dc1", name="Detention Center", kind=SiteKind.detention_center, terminals=2), ADMIN)
    for i in range(N):
        await store.create_courtroom(Courtroom(id=f"cr{i}", name=f"Courtroom {i}", site_id="court1"), ADMIN)


async def race(store: Store, scenario: str, numbers: range) -> tuple[int, int]:
    """Book the given contenders all at once; (stored, refused with a conflict)."""
    results = await asyncio.gather(
        *(store.book(contender(scenario, i), Trace("key:clerk", "hearing_booked")) for i in numbers),
        return_exceptions=True,
    )
    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, ScheduleConflict)]
    assert unexpected == []
    conflicts = sum(isinstance(r, ScheduleConflict) for r in results)
    return len(results) - conflicts, conflicts


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Where the store under test keeps its data."""
    async for b in backend_for(request, tmp_path):
        yield b


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_concurrent_conflicting_bookings_have_exactly_the_allowed_winners(
    backend: Backend, scenario: str
) -> None:
    """50 simultaneous mutually conflicting bookings store exactly as many as the schedule allows, the rest conflict."""
    store = await backend.open()
    await prepare(store)
    stored, refused = await race(store, scenario, range(N))
    assert (stored, refused) == (SCENARIOS[scenario], N - SCENARIOS[scenario])
    assert len(await store.list_hearings(HearingFilter())) == SCENARIOS[scenario]


async def test_two_sqlite_stores_on_one_file_have_one_winner(tmp_path: Path) -> None:
    """Two stores (two connections) on the same SQLite file booking at once still store exactly one of 50."""
    backend = Backend("sqlite", tmp_path)
    try:
        first, second = await backend.open(), await backend.open()
        await prepare(first)
        (a, _), (b, _) = await asyncio.gather(
            race(first, "courtroom", range(0, N, 2)), race(second, "courtroom", range(1, N, 2))
        )
        assert a + b == 1
        assert len(await second.list_hearings(HearingFilter())) == 1
    finally:
        await backend.close_all()


WORKER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from rooms.backends import open_store
from tests.integration.test_store_concurrency import race

async def main(url, prefix, first):
    store = await open_store(url, Path('.'), key_prefix=prefix)
    print("ready", flush=True)
    await store._redis.blpop([prefix + "go"], timeout=60)
    stored, refused = await race(store, "courtroom", range(first, 50, 2))
    await store.close()
    print(json.dumps({"stored": stored, "refused": refused}), flush=True)

asyncio.run(main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.mark.redis
async def test_two_processes_booking_on_one_redis_have_one_winner(redis_server: str, tmp_path: Path) -> None:
    """Two OS processes each making 25 conflicting bookings at once against one Redis store exactly one in total."""
    backend = Backend("redis", tmp_path, redis_url=redis_server)
    store = await backend.open()
    procs: list[asyncio.subprocess.Process] = []
    try:
        await prepare(store)
        for first in (0, 1):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    WORKER,
                    ROOT,
                    redis_server,
                    backend.prefix,
                    str(first),
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            # Skip the worker's log lines (structlog writes to stdout) up to its "ready".
            line = b"start"
            while line and line.strip() != b"ready":
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready"
        client = aioredis.Redis.from_url(redis_server)
        # Release both processes together so their bookings really interleave.
        await client.rpush(backend.prefix + "go", "go", "go")
        await client.aclose()
        outputs = [await asyncio.wait_for(proc.communicate(), 120) for proc in procs]
        counts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        assert [p.returncode for p in procs] == [0, 0]
        assert sum(c["stored"] for c in counts) == 1
        assert sum(c["refused"] for c in counts) == N - 1
        assert len(await store.list_hearings(HearingFilter())) == 1
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await backend.close_all()


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_a_booking_racing_a_neighbours_extension_is_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A booking checked against a neighbour another process lengthens (same start) before it commits is refused."""
    backend = Backend(kind, tmp_path, redis_url=request.getfixturevalue(REDIS_FIXTURES[kind]))
    try:
        booker, clerk = await backend.open(), await backend.open()
        assert isinstance(booker, RedisStore)
        await prepare(booker)
        await booker.book(contender("courtroom", 0), ADMIN)  # cr0 09:00-10:00
        late = contender("courtroom", 1).model_copy(
            update={"id": "late", "starts_at": T0 + timedelta(minutes=90), "ends_at": T0 + timedelta(minutes=150)}
        )
        original = booker._check
        raced: list[bool] = []

        async def check_then_race(hearing: Hearing, *, new: bool) -> object:
            # The booking has checked (no conflict yet) and not committed: now the other process
            # lengthens the 09:00 hearing to 11:00, over the booking's 10:30.
            last = await original(hearing, new=new)
            if not raced:
                raced.append(True)
                await clerk.mutate_hearing(
                    "hcour0",
                    lambda h: (h.model_copy(update={"ends_at": T0 + timedelta(hours=2)}), Trace("key:clerk", "moved")),
                )
            return last

        monkeypatch.setattr(booker, "_check", check_then_race)
        with pytest.raises(ScheduleConflict):
            await booker.book(late, Trace("key:clerk", "hearing_booked"))
        assert [h.id for h in await clerk.list_hearings(HearingFilter())] == ["hcour0"]
    finally:
        await backend.close_all()
