"""Long media runs through the public doors: a 12-person hearing for two minutes, and 1,000 join/leave cycles.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node,
real aiortc clients (counting RTP packets, never decoding, so twelve fit on
two shared cores). Both tests are long (about 2.5 and 1 minute) and run in CI;
figures go to stdout (``-s``) for the closing note.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
from functools import partial
from typing import TYPE_CHECKING

import aioice.ice
import pytest

from media.settings import NodeSettings
from tests.media_clients import MediaClient
from tests.ws_fixtures import eventually

if TYPE_CHECKING:
    from tests.ws_fixtures import Court, Participant

pytest_plugins = ["tests.ws_fixtures"]

TWELVE = (
    "judge",
    "clerk",
    "prosecutor",
    "prosecutor2",
    "counsel",
    "counsel2",
    "defendant",
    "defendant2",
    "witness",
    "interpreter",
    "observer",
    "observer2",
)
SESSION_SECONDS = 120.0
SAMPLE_SECONDS = 5.0
CYCLES = 1000
WARM_UP_CYCLES = 500
"""Cycles before the baseline: the allocator, SQLite page cache and TLS contexts settle (measured: RSS growth
per 500 cycles falls 6.6, 3.9, 2.8, 2.6, 1.7, 0.9 MiB while the count of Python objects stays flat)."""
NEGOTIATED_EVERY = 10
"""Every this many cycles the joining participant also negotiates a real aiortc peer (offer/answer, then close)."""


@pytest.fixture
def node_settings() -> NodeSettings:
    """Every camera forwarded (last-N above the hearing's size), so every permitted flow is a fixed set.

    Without bandwidth adaptation: twelve aiortc clients share this process's event loop, and their REMBs measure
    that loop's lag (20-100 kbit/s, measured), not a link; adaptation would rightly pause their video.
    """
    return NodeSettings(announce_addresses=("127.0.0.1",), last_n=16, adaptation=False)


def _publishes(name: str) -> bool:
    return not name.startswith("observer")


def _flows(people: dict[str, Participant]) -> list[tuple[str, str, str]]:
    """(receiver, publisher, kind) of every permitted flow: in session, everyone receives every publisher."""
    return [(r, p, kind) for r in people for p in people if p != r and _publishes(p) for kind in ("audio", "video")]


def _count(people: dict[str, Participant], flow: tuple[str, str, str]) -> int:
    receiver, publisher, kind = flow
    return people[receiver].packets_from(people[publisher].id, kind)


class LoopLag:
    """How late the event loop wakes a 100 ms sleeper (the node, the server and twelve clients share it)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.1)
            self.lags.append(loop.time() - t - 0.1)

    async def stop(self) -> str:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        lags = sorted(self.lags) or [0.0]
        p50, p99, top = (lags[len(lags) // 2], lags[len(lags) * 99 // 100], lags[-1])
        return f"loop_lag p50={p50 * 1000:.0f}ms p99={p99 * 1000:.0f}ms max={top * 1000:.0f}ms"


@pytest.mark.timeout(900)  # two minutes in session after up to 90 s to converge, on a machine CI may share
async def test_twelve_clients_keep_every_permitted_flow_for_two_minutes(
    court: Court, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve people in session for two minutes: every permitted audio and video flow keeps delivering packets (at
    most 1% of 5 s flow-samples empty, never two in a row for one flow), and nobody needs a media restart.

    A sample in which most flows of one kind are empty at once is the shared machine starving every encoder (the twelve
    clients run in this one process), not a forwarding fault: at most two such samples are allowed, never two in
    a row, and the per-flow rules apply to the other samples."""
    # ICE consent (RFC 7675) waits 0.5 s for each answer; here the node's and all twelve clients' answers come from
    # one busy event loop, late now and then, and six misses in a row would end a connection after 30 s. A node
    # in its own process answers in time; the clients here get 5 minutes of misses instead of 30 s.
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 60)
    lag = LoopLag()
    b = await court.book(TWELVE)
    people: dict[str, Participant] = {}
    for i, name in enumerate(TWELVE):
        people[name] = await court.participant(
            name, b.tokens[name], tag=i + 1, count_only=True, loud=False, video=_publishes(name), audio=_publishes(name)
        )
    judge = people["judge"]
    for name in TWELVE[1:]:
        placement = people[name].joined["placement"]
        if placement == "lobby":
            reply = await judge.client.request("admit", "roster", participant_id=b.ids[name])
            assert reply["type"] == "roster", reply
    for action in ("open", "start"):
        reply = await judge.client.request("session", "state", action=action)
        assert reply["type"] == "state", reply
    reply = await judge.client.request("call_witness", "roster", participant_id=b.ids["witness"])
    assert reply["type"] == "roster", reply
    for p in people.values():
        await p.start_media(publish=_publishes(p.name))

    flows = _flows(people)
    assert len(flows) == 2 * 10 * 11
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await eventually(lambda: all(_count(people, f) > 0 for f in flows), 90.0), [
        f for f in flows if _count(people, f) == 0
    ]
    converged = loop.time() - started

    gaps: list[tuple[float, tuple[str, str, str]]] = []
    stalls: list[int] = []
    last = {f: _count(people, f) for f in flows}
    began = loop.time()
    samples = 0
    while loop.time() - began < SESSION_SECONDS:
        await asyncio.sleep(SAMPLE_SECONDS)
        samples += 1
        now = {f: _count(people, f) for f in flows}
        for kind in ("audio", "video"):
            empty = [f for f in flows if f[2] == kind and now[f] <= last[f]]
            if len(empty) > sum(1 for f in flows if f[2] == kind) // 2:
                stalls.append(samples)
            else:
                gaps += [(loop.time() - began, f) for f in empty]
        last = now
    per_kind = {
        kind: sum(v for f, v in last.items() if f[2] == kind) // sum(1 for f in flows if f[2] == kind)
        for kind in ("audio", "video")
    }
    refusals = sum(p.refusals for p in people.values())
    restarts = sum(len(p.restarts) for p in people.values())
    print(
        f"\nSCALE12 flows={len(flows)} converged_in={converged:.1f}s samples={samples} gaps={len(gaps)} "
        f"packets_per_flow={per_kind} refusals={refusals} restarts={restarts} {await lag.stop()}"
    )
    by_publisher: dict[str, int] = {}
    for _, (_, publisher, kind) in gaps:
        by_publisher[f"{publisher}/{kind}"] = by_publisher.get(f"{publisher}/{kind}", 0) + 1
    print(
        f"SCALE12 flow-samples without new packets: {len(gaps)} of {len(flows) * samples}, by publisher {by_publisher};"
        f" machine-wide stalls at samples {stalls}"
    )
    assert samples >= SESSION_SECONDS / SAMPLE_SECONDS - 1
    assert len(set(stalls)) <= 2, stalls
    assert all(b - a > 1 for a, b in itertools.pairwise(sorted(set(stalls)))), stalls
    # On two cores shared with other test runs a publisher's encoder can starve for a moment: a flow may miss one
    # 5 s sample, never two in a row, and at most 1% of all flow-samples may be empty.
    assert len(gaps) <= len(flows) * samples // 100, gaps[:20]
    gap_times = sorted({round(t / SAMPLE_SECONDS) for t, _ in gaps})
    for flow in {f for _, f in gaps}:
        missed = sorted(round(t / SAMPLE_SECONDS) for t, f in gaps if f == flow)
        assert all(b - a > 1 for a, b in itertools.pairwise(missed)), (flow, missed, gap_times)
    assert restarts == 0
    for p in people.values():
        assert not p.failures, (p.name, p.failures)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _cycle(court: Court, token: str, negotiate: bool) -> None:
    """Join (the node makes a peer), optionally negotiate a real aiortc peer, leave (the node closes it)."""
    client, joined = await court.join(token)
    assert joined["placement"] == "courtroom", joined
    court.clients.remove(client)
    if negotiate:
        media = MediaClient("cycler", video=False, audio=True, count_only=True)
        try:
            reply = await client.request("offer", "answer", sdp=await media.offer())
            assert reply["type"] == "answer", reply
            await media.accept_answer(reply["sdp"])
        finally:
            await media.close()
    await client.send("leave", id="bye")
    assert await client.close_code() == 1000
    await client.close()


def _baseline_reached(court: Court, tasks: int, peers: int) -> bool:
    return len(asyncio.all_tasks()) <= tasks and court.node.stats()[1] <= peers


@pytest.mark.timeout(600)  # about a minute alone; several on a shared machine
async def test_a_thousand_join_leave_cycles_leave_nothing_behind(court: Court, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 joins and leaves (each making and closing a peer on the node, every tenth negotiated with a real aiortc
    client) grow the process's memory by less than 5%, and asyncio tasks and node peers return to their baseline."""
    # One participant offers here 150 times in seconds, far beyond the per-participant offer budget that stops a
    # client from loading the node (tested in test_ws_media_rules); this test is about what cycles leave behind.
    monkeypatch.setattr("signaling.session.OFFER_RATE", 1000.0)
    b = await court.book(("judge", "clerk"))
    judge, _ = await court.join(b.tokens["judge"])
    reply = await judge.request("session", "state", action="open")
    assert reply["type"] == "state", reply
    token = b.tokens["clerk"]
    for i in range(WARM_UP_CYCLES):
        await _cycle(court, token, negotiate=i % NEGOTIATED_EVERY == 0)
    await asyncio.sleep(2.0)
    gc.collect()
    tasks0, peers0, rss0 = len(asyncio.all_tasks()), court.node.stats()[1], _rss_bytes()

    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(CYCLES):
        await _cycle(court, token, negotiate=i % NEGOTIATED_EVERY == 0)
        judge.skip_unread()
        if i % 50 == 0:
            judge.messages.clear()  # the test's own record of rosters, not the server's memory
    took = loop.time() - began
    back = await eventually(partial(_baseline_reached, court, tasks0, peers0), 30.0)
    gc.collect()
    tasks1, peers1, rss1 = len(asyncio.all_tasks()), court.node.stats()[1], _rss_bytes()
    growth = (rss1 - rss0) / rss0
    print(
        f"\nCYCLES {CYCLES} in {took:.1f}s ({CYCLES / took:.1f}/s); rss {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB "
        f"({growth * 100:+.2f}%); tasks {tasks0} -> {tasks1}; node peers {peers0} -> {peers1}"
    )
    assert back, (tasks0, tasks1, peers0, peers1)
    assert growth < 0.05
