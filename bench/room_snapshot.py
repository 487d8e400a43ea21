"""What keeping a live room's snapshot costs: size, time to take, compare, serialize, restore, and store in Redis.

    python -m bench.room_snapshot [--rounds 2000] [--no-redis]

A 12-person trial (judge, clerk, prosecutor, two counsel, two defendants, an
interpreter, a witness in the witness lobby, three observers) is driven into
session through the room's real inputs, with a consultation, a court mute, a
raised hand and published tracks. Printed: the snapshot's JSON size, and per
call the mean and p95 of ``HearingRoom.snapshot()``, ``same_room`` (the
"did it change?" check run after every input), ``to_json``, parse + restore,
and one room input (a mute toggle) alone as the baseline those are weighed
against. With Redis (a redis-server started on a free loopback port), also
the SET of the record. The hub never awaits any of it in a room's input: the
keeper's task does it after the input, once per burst.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from protocol.client import Joined, ParticipantInfo
from rooms.model import Hearing, HearingKind, HearingState, Participant, Role, Source
from signaling.session import Effect, HearingRoom, Send
from signaling.snapshot import parse_snapshot
from tests.unit.test_session import Node

CAST: dict[str, Role] = {
    "judge": Role.judge,
    "clerk": Role.clerk,
    "prosecutor": Role.prosecutor,
    "counsel": Role.counsel,
    "counsel2": Role.counsel,
    "defendant": Role.defendant,
    "defendant2": Role.defendant,
    "interpreter": Role.interpreter,
    "witness": Role.witness,
    "observer": Role.observer,
    "observer2": Role.observer,
    "observer3": Role.observer,
}
REPRESENTS = {"counsel": ("defendant",), "counsel2": ("defendant2",)}


def hearing() -> Hearing:
    start = datetime(2026, 11, 30, 9, tzinfo=UTC)
    return Hearing(
        id="hrg_bench",
        case_number="(2026) Bench 1",
        kind=HearingKind.trial,
        courtroom_id="cr_1",
        starts_at=start,
        ends_at=start + timedelta(hours=2),
        participants=tuple(
            Participant(
                id=pid,
                name=f"{pid.title()} with a longer display name",
                role=role,
                site_id="site_1",
                identity=f"{pid}@site_1",
                token_id=f"tok_{pid}_0123456789abcdef",
                represents=REPRESENTS.get(pid, ()),
            )
            for pid, role in CAST.items()
        ),
    )


def court() -> tuple[HearingRoom, dict[str, int]]:
    """The 12-person room in session, driven through its inputs."""
    room = HearingRoom(hearing(), grace_seconds=30)
    node = Node()
    conns: dict[str, int] = {}

    def do(effects: list[Effect]) -> None:
        node.apply(effects)
        for m in list(room.members.values()):
            if m.has_peer and not m.negotiated and m.connected:
                node.apply(room.negotiated(m.id))

    for n, (pid, role) in enumerate(CAST.items(), 1):
        out = room.join(ParticipantInfo(id=pid, name=pid, role=role, site="site_1"), n, None, token_id=None)
        assert any(isinstance(e, Send) and isinstance(e.message, Joined) for e in out.effects)
        conns[pid] = n
        do(out.effects)
    for pid in CAST:
        if pid not in ("judge", "clerk", "witness") and room.members[pid].placement.value == "lobby":
            do(room.admit(conns["judge"], pid))
    for state in (HearingState.open, HearingState.in_session):
        h = room.hearing.model_copy(update={"state": state, "version": room.hearing.version + 1})
        do(room.session_changed(h, conns["judge"]))
    for pid in ("judge", "prosecutor", "counsel", "counsel2", "defendant", "defendant2", "interpreter"):
        for source in (Source.camera, Source.microphone):
            do(room.publish(conns[pid], source, True, f"{pid}-{source.value}-track-0123456789"))
    do(room.consult(conns["counsel"], ["counsel", "defendant"]))
    do(room.mute(conns["judge"], "defendant2", Source.microphone))
    do(room.raise_hand(conns["prosecutor"]))
    return room, conns


def timed(call: Callable[[], object], rounds: int) -> list[float]:
    out: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        call()
        out.append(time.perf_counter() - t)
    return out


def line(name: str, samples: list[float]) -> None:
    p95 = sorted(samples)[int(len(samples) * 0.95) - 1]
    print(f"  {name:<28} mean {statistics.fmean(samples) * 1e6:8.1f} us   p95 {p95 * 1e6:8.1f} us")


async def redis_set(data: bytes, rounds: int) -> list[float] | None:
    from redis.asyncio import Redis

    from tests.conftest import start_redis, stop_redis

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            client = Redis.from_url(url)
            out: list[float] = []
            for _ in range(rounds):
                t = time.perf_counter()
                await client.set("courtlink:{bus}:snapshot.room.hrg_bench", data, px=40_000)
                out.append(time.perf_counter() - t)
            await client.aclose()
            return out
        finally:
            stop_redis(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    room, conns = court()
    snap = room.snapshot()
    data = snap.to_json()
    print(f"room of {len(room.members)} members: snapshot JSON {len(data)} bytes")
    toggle = [True]

    def input_() -> None:
        toggle[0] = not toggle[0]
        room.mute(conns["observer"], "observer", Source.microphone, toggle[0])

    other = room.snapshot()
    line("room input (mute toggle)", timed(input_, args.rounds))
    line("snapshot()", timed(room.snapshot, args.rounds))
    line("same_room() (unchanged)", timed(lambda: snap.same_room(other), args.rounds))
    line("to_json()", timed(snap.to_json, args.rounds))

    def restore() -> None:
        HearingRoom.restore(room.hearing, parse_snapshot(data, "hrg_bench"), grace_seconds=30)

    line("parse + restore", timed(restore, max(args.rounds // 4, 10)))
    if not args.no_redis:
        samples = asyncio.run(redis_set(data, args.rounds))
        if samples:
            line("Redis SET (loopback)", samples)


if __name__ == "__main__":
    main()
