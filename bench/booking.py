"""Booking latency of each store backend with many hearings already booked.

    .venv/bin/python bench/booking.py [--n 100000] [--bookings 1000] [--backends sqlite,redis]

For each backend: a baseline of bookings into an empty store, then N existing
non-conflicting hearings are loaded (bulk path, 200 courtrooms x N/200
back-to-back one-hour slots, 40 courts, 50 detention centers), then the measured bookings (normal
``book`` API, one at a time) go into the middle of that schedule, where every
lookup finds real neighbours, plus a set of refused (conflicting) bookings.
SQLite runs in a temporary directory; Redis is a redis-server this script
starts on a free loopback port (no persistence) and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import structlog

from rooms.backends.redis import RedisStore
from rooms.backends.sqlite import SqliteStore
from rooms.errors import ScheduleConflict
from rooms.model import Courtroom, Hearing, HearingKind, Participant, Role, Site, SiteKind, identity_of
from rooms.store import Trace

T0 = datetime(2031, 1, 6, 8, 0, tzinfo=UTC)
COURTROOMS = 200
COURTS = 40
"""Courts hosting the courtrooms (5 each); a courtroom's judge sits at its court."""
NEW_COURTROOMS = 50
SITES = 50
"""Detention centers the defendants join from."""
TERMINALS = 8
SLOT = timedelta(hours=1)
ADMIN_TRACE = ("key:bench", "created")

Store = SqliteStore | RedisStore


def participant(pid: str, name: str, role: Role, site: str) -> Participant:
    """A participant with the default identity key."""
    return Participant(id=pid, name=name, role=role, site_id=site, identity=identity_of(name, site))


def existing(i: int) -> Hearing:
    """Existing hearing ``i``: courtroom i % 200, slot i // 200, that courtroom's judge, a defendant of its own."""
    room, slot = i % COURTROOMS, i // COURTROOMS
    start = T0 + slot * SLOT
    site, court = f"site{room % SITES}", f"court{room % COURTS}"
    return Hearing(
        id=f"old{i}",
        case_number=f"(2031) Old {i}",
        kind=HearingKind.trial,
        courtroom_id=f"cr{room}",
        starts_at=start,
        ends_at=start + SLOT,
        participants=(
            participant(f"old{i}j", f"Judge {room}", Role.judge, court),
            participant(f"old{i}d", f"Defendant {i}", Role.defendant, site),
        ),
    )


def new(j: int, slots: int, prefix: str, conflicting: bool = False) -> Hearing:
    """Measured booking ``j`` in a spare courtroom inside the filled schedule; a conflicting one reuses a judge."""
    room = j % NEW_COURTROOMS
    slot = max(slots // 2, 1) + j // NEW_COURTROOMS
    start = T0 + slot * SLOT + timedelta(minutes=15)
    # A conflicting booking takes the judge of a busy courtroom, who sits at court{room % COURTS}.
    judge = f"Judge {room}" if conflicting else f"Judge new {room}"
    return Hearing(
        id=f"{prefix}{j}",
        case_number=f"(2031) New {j}",
        kind=HearingKind.arraignment,
        courtroom_id=f"new{room}",
        starts_at=start,
        ends_at=start + timedelta(minutes=30),
        participants=(
            participant(f"{prefix}{j}j", judge, Role.judge, f"court{room % COURTS}"),
            participant(f"{prefix}{j}d", f"Defendant new {j}", Role.defendant, f"site{j % SITES}"),
        ),
    )


async def prepare(store: Store) -> None:
    """Sites and courtrooms through the normal API."""
    trace = Trace(*ADMIN_TRACE)
    for c in range(COURTS):
        await store.create_site(Site(id=f"court{c}", name=f"Court {c}", kind=SiteKind.court, terminals=20), trace)
    for s in range(SITES):
        await store.create_site(
            Site(id=f"site{s}", name=f"Detention Center {s}", kind=SiteKind.detention_center, terminals=TERMINALS),
            trace,
        )
    for c in range(COURTROOMS):
        await store.create_courtroom(Courtroom(id=f"cr{c}", name=f"Courtroom {c}", site_id=f"court{c % COURTS}"), trace)
    for c in range(NEW_COURTROOMS):
        await store.create_courtroom(Courtroom(id=f"new{c}", name=f"Spare {c}", site_id=f"court{c % COURTS}"), trace)


async def timed(call: Callable[[Hearing], Awaitable[object]], hearings: list[Hearing]) -> list[float]:
    """Latency in ms of ``call`` on each hearing, one after another."""
    out: list[float] = []
    for hearing in hearings:
        t = time.perf_counter()
        await call(hearing)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def refused(store: Store, hearing: Hearing) -> None:
    """A booking that must be refused with a conflict."""
    try:
        await store.book(hearing, Trace("key:bench", "hearing_booked"))
    except ScheduleConflict:
        return
    raise AssertionError(f"{hearing.id} was expected to conflict")


async def run_backend(store: Store, n: int, bookings: int) -> dict[str, list[float]]:
    """Baseline on the empty schedule, bulk load, then measured and refused bookings."""
    trace = Trace("key:bench", "hearing_booked")
    await prepare(store)
    slots = n // COURTROOMS
    base = [new(j, 0, "base") for j in range(bookings)]
    # The baseline goes far after the loaded schedule so it never meets it.
    base = [
        h.model_copy(update={"starts_at": h.starts_at + 10 * n * SLOT, "ends_at": h.ends_at + 10 * n * SLOT})
        for h in base
    ]
    results: dict[str, list[float]] = {}

    async def book(hearing: Hearing) -> None:
        await store.book(hearing, trace)

    async def refuse(hearing: Hearing) -> None:
        await refused(store, hearing)

    results["baseline (empty)"] = await timed(book, base)
    t = time.perf_counter()
    await store.load_unchecked([existing(i) for i in range(n)], Trace("key:bench", "hearing_imported"))
    print(f"  loaded {n} hearings in {time.perf_counter() - t:.1f} s", flush=True)
    results[f"book (n={n})"] = await timed(book, [new(j, slots, "m") for j in range(bookings)])
    conflicting = [new(j, slots, "c", conflicting=True) for j in range(max(bookings // 5, 1))]
    results["refused (conflict)"] = await timed(refuse, conflicting)
    return results


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away redis-server on loopback (no RDB, no AOF)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(200):
        try:
            client.ping()
            client.close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def main() -> None:
    """Parse arguments, run each backend, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="existing hearings to load first")
    parser.add_argument("--bookings", type=int, default=1000, help="measured bookings per backend")
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated: sqlite, redis")
    args = parser.parse_args()
    rows: list[tuple[str, str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="courtlink-bench-") as tmp:
        for backend in args.backends.split(","):
            print(f"{backend}:")
            if backend == "sqlite":
                sqlite = await SqliteStore.open(Path(tmp) / "bench.sqlite3")
                try:
                    results = await run_backend(sqlite, args.n, args.bookings)
                finally:
                    await sqlite.close()
            elif backend == "redis":
                proc, url = start_redis(Path(tmp))
                try:
                    store = await RedisStore.open(url, key_prefix="bench:")
                    try:
                        results = await run_backend(store, args.n, args.bookings)
                    finally:
                        await store.close()
                finally:
                    proc.terminate()
                    proc.wait()
            else:
                raise SystemExit(f"unknown backend {backend!r}")
            rows += [(backend, what, values) for what, values in results.items()]
    print()
    heads = ("count", "p50 ms", "p99 ms", "max ms", "mean ms", "p99/base")
    print(f"{'backend':8} {'what':22} " + " ".join(f"{h:>8}" for h in heads))
    base: dict[str, float] = {}
    for backend, what, values in rows:
        p99 = pct(values, 99)
        base.setdefault(backend, p99)
        print(
            f"{backend:8} {what:22} {len(values):>8} {pct(values, 50):>8.2f} {p99:>8.2f} {max(values):>8.2f} "
            f"{statistics.fmean(values):>8.2f} {p99 / base[backend]:>8.2f}"
        )
    print("\ngoal: p99 of 'book' <= 20 ms")


if __name__ == "__main__":
    # Figures only: the recorder's and stores' per-event logs would drown them.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
