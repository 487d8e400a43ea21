"""``courtlink media-node --workers N``: several media nodes on one machine under one supervisor, as real processes.

Real parts throughout: a real redis-server of this module's own, the supervisor as a real OS process (its workers
real ``courtlink media-node`` processes), and signaling in the test process exactly as ``courtlink signaling``
wires it (the real app, a :class:`signaling.node_pool.NodePool` over Redis reaching the workers through
:class:`signaling.remote_node.RemoteNode`), with real aiortc participants on loopback. The supervisor's output goes
to a file (never a pipe that could fill up); its log facts (JSON) and the workers' ready lines are read from it.

Figures (printed with ``-s``, logged ``node_workers_figures``): worker start, restart after ``kill -9``, the time
until the killed worker's hearing has media again, the longest pause in the other hearing's audio meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import pytest
import structlog

from courtlink.workers import FIRST_BACKOFF_SECONDS, SUPERVISOR_READY
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.cluster import NodeRecord, node_record_key
from protocol.node import NodeControl
from rooms.backends import open_bus, open_store
from rooms.bus import Records
from signaling.node_pool import CHECK_SECONDS, NodePool, store_regions
from signaling.remote_node import RemoteNode
from signaling.rest_directory import directory_routes
from signaling.ws import WsSettings, ws_registrar
from tests.conftest import start_redis, stop_redis
from tests.serve_process import clean_env
from tests.topology import Proc, courtlink
from tests.ws_fixtures import Court, Participant, _bounded, _serve, eventually, ws_config

ROOT = Path(__file__).resolve().parents[2]
CAPACITY_PEERS = 8
"""The machine's ``capacity_peers``: 4 per worker, so two peers make a worker's load 0.5 (placement sees it)."""
UDP_PORTS = 40
"""The node's UDP range: 20 ports per worker."""
RESTART_LOOSE_SECONDS = 30.0
"""Loose bound (asserted) on a killed worker's restart and on its hearing's media coming back."""
CAST = ("judge", "defendant")

log = structlog.get_logger("tests.node_workers")


def _free_frame_ports(count: int) -> int:
    """A TCP port ``p`` on 127.0.0.1 such that p .. p+count-1 are all free now."""
    for _ in range(50):
        base = random.randrange(20000, 30000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free TCP ports found")


@dataclass
class SupervisorProc:
    """A ``courtlink media-node --workers N`` process (output in a file) and what it said."""

    proc: Proc
    node_id: str
    udp_base: int
    frame_base: int

    def facts(self, event: str, **where: Any) -> list[dict[str, Any]]:
        """Its JSON log facts named ``event`` (and matching ``where``), oldest first."""
        found = []
        for line in self.proc.log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                fact = json.loads(line)
            except ValueError:
                continue
            if fact.get("event") == event and all(fact.get(k) == v for k, v in where.items()):
                found.append(fact)
        return found

    def ready_lines(self, worker_id: str) -> int:
        """How many times worker ``worker_id`` printed its ready line (one per life)."""
        pattern = re.compile(rf"^courtlink: media node {re.escape(worker_id)} ready", re.M)
        return len(pattern.findall(self.proc.log.read_text(errors="replace")))

    def reap(self) -> None:
        """Kill the supervisor and any worker of it still running (a failed test leaves no process behind)."""
        self.proc.kill()
        for fact in self.facts("media_worker_started"):
            if _alive(int(fact["pid"])):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(fact["pid"]), signal.SIGKILL)

    def pid(self, worker_id: str) -> int:
        """The process id of the worker's current life."""
        return int(self.facts("media_worker_started", node_id=worker_id)[-1]["pid"])


def start_supervisor(
    folder: Path, redis_url: str, workers: int, *, frame_base: int | None = None, event_loop: str = "asyncio"
) -> SupervisorProc:
    """Start the supervisor with a UDP range of ``UDP_PORTS`` ports and frame ports from ``frame_base``, its workers
    on ``event_loop`` (``COURTLINK_EVENT_LOOP``)."""
    node_id = f"wk-{uuid.uuid4().hex[:6]}"
    udp_base = random.Random().randrange(20000, 29000, UDP_PORTS)
    frame_base = frame_base if frame_base is not None else _free_frame_ports(workers)
    env = clean_env(
        {
            "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
            "COURTLINK_REDIS_URL": redis_url,
            "COURTLINK_LOG_LEVEL": "info",
            "COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": '["127.0.0.1"]',
            "COURTLINK_MEDIA__UDP_PORT_MIN": str(udp_base),
            "COURTLINK_MEDIA__UDP_PORT_MAX": str(udp_base + UDP_PORTS - 1),
            "COURTLINK_MEDIA__FRAME_PORT": str(frame_base),
            "COURTLINK_MEDIA__CAPACITY_PEERS": str(CAPACITY_PEERS),
            "COURTLINK_EVENT_LOOP": event_loop,
        }
    )
    ready = re.compile(re.escape(SUPERVISOR_READY.split("{", 1)[0] + node_id + " ready"))
    proc = Proc(
        f"media-node --workers {workers}",
        courtlink("media-node", "--workers", str(workers), "--node-id", node_id),
        folder / f"{node_id}.log",
        env=env,
        ready=ready,
    )
    sup = SupervisorProc(proc, node_id, udp_base, frame_base)
    return sup


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own (the registry holds only this test's nodes)."""
    proc, url = start_redis(tmp_path / "redis")
    try:
        yield url
    finally:
        stop_redis(proc)


@dataclass
class Network:
    """Signaling here, over Redis, in front of the supervisor's workers."""

    court: Court
    pool: NodePool
    records: Records
    supervisor: SupervisorProc
    started_in: float
    remotes: list[RemoteNode] = field(default_factory=list)


@pytest.fixture
def node_event_loop() -> str:
    """The event loop the workers run on (a test parametrizes it to run on uvloop too)."""
    return "asyncio"


@pytest.fixture
async def network(tmp_path: Path, redis_url: str, node_event_loop: str) -> AsyncIterator[Network]:
    """The supervisor with two workers, and the real signaling app placing hearings on them through a NodePool."""
    sup = start_supervisor(tmp_path, redis_url, 2, event_loop=node_event_loop)
    began = time.monotonic()
    await asyncio.to_thread(sup.proc.start, 90)
    started_in = time.monotonic() - began
    async with AsyncExitStack() as stack:
        stack.callback(sup.reap)
        store = await open_store(None, tmp_path / "data")
        stack.push_async_callback(store.close)
        bus, records = await open_bus(redis_url, process_id="test-signaling")
        stack.push_async_callback(records.close)
        stack.push_async_callback(bus.close)
        remotes: list[RemoteNode] = []

        async def connect(node_id: str) -> NodeControl:
            node = RemoteNode(bus, node_id, attempt_seconds=2.0, retries=2)
            await node.start()
            remotes.append(node)
            return node

        async def disconnect(node: NodeControl) -> None:
            if isinstance(node, RemoteNode):
                await node.close()

        pool = NodePool(records, connect, disconnect=disconnect, region_of=store_regions(store), pool_id="test")
        await pool.start()
        stack.push_async_callback(pool.close)
        app = create_app_with(store, pool)
        runner, base = await _serve(app)
        stack.push_async_callback(runner.cleanup)
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        unused = InProcessNode(NodeSettings(announce_addresses=("127.0.0.1",)))
        stack.push_async_callback(unused.close)
        court = Court(base, http, store, unused, app, pool=pool)
        try:
            yield Network(court, pool, records, sup, started_in, remotes)
        finally:
            await asyncio.gather(*(_bounded(p.close()) for p in court.participants))
            await asyncio.gather(*(_bounded(c.close()) for c in court.clients))
            if sup.proc.proc is not None and sup.proc.proc.poll() is None:
                await asyncio.to_thread(sup.proc.stop)


def create_app_with(store: Any, pool: NodePool) -> Any:
    """The signaling app as ``courtlink signaling`` builds it (WebSocket session, REST, node directory)."""
    from signaling.app import create_app

    registrars = [ws_registrar(pool, WsSettings(resume_grace_seconds=30)), directory_routes(None, pool, pool)]
    return create_app(ws_config(), store, registrars=registrars)


async def seat(court: Court, roles: tuple[str, ...] = CAST) -> tuple[str, dict[str, Participant]]:
    """Book a hearing, join everyone (counting packets, never decoding), admit, start media, open and start it."""
    b = await court.book(roles)
    people: dict[str, Participant] = {}
    for i, name in enumerate(roles):
        people[name] = await court.participant(name, b.tokens[name], tag=i + 1, count_only=True, loud=False)
    judge = people["judge"]
    for name in roles[1:]:
        if people[name].joined["placement"] == "lobby":
            await judge.client.request_ok("admit", "roster", participant_id=b.ids[name])
            await people[name].client.expect("admitted")
    for p in people.values():
        await p.start_media()
    for action in ("open", "start"):
        await judge.client.request_ok("session", "state", action=action)
    return b.hearing_id, people


def flowing(people: dict[str, Participant]) -> bool:
    """Everyone receives audio and video from everyone else (on their current connection)."""
    return all(
        p.packets_from(q.id, kind) > 0 for p in people.values() for q in people.values() if q is not p
        for kind in ("audio", "video")
    )  # fmt: skip


def audio_in(people: dict[str, Participant]) -> int:
    """Audio packets received by everyone so far."""
    return sum(p.packets_from(q.id, "audio") for p in people.values() for q in people.values() if q is not p)


def node_ports(p: Participant) -> set[int]:
    """The UDP ports of the node's host candidates in the node's last description to ``p``."""
    description = p.media.pc.remoteDescription
    assert description is not None
    return {
        int(m.group(1))
        for m in re.finditer(r"a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 (\d+) typ host", description.sdp)
    }


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


async def record_of(records: Records, node_id: str) -> NodeRecord | None:
    """A node's heartbeat record in the registry, if it has one."""
    raw = await records.get(node_record_key(node_id))
    return NodeRecord.model_validate_json(raw) if raw is not None else None


@pytest.mark.redis
@pytest.mark.timeout(420)
@pytest.mark.parametrize("node_event_loop", ["asyncio", "uvloop"])
async def test_two_workers_carry_two_hearings_and_one_killed_comes_back_without_touching_the_other(
    network: Network, monkeypatch: pytest.MonkeyPatch, node_event_loop: str
) -> None:
    """``--workers 2``: two nodes in the registry, each pinned to its CPU with its own UDP ports and frame port;
    two hearings land on different workers (the pool's less-loaded rule) and both have media; ``kill -9`` of one
    worker: the supervisor restarts it, its hearing gets media again, the other hearing is never interrupted;
    SIGTERM stops every worker and the supervisor exits 0 with the registry empty. On both event loops: on uvloop a
    hearing failed over to a worker whose random first port was taken got no media (uvloop's bind error)."""
    # Four peers and their clients share this process's event loop: give ICE consent a separate process's slack.
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 60)
    sup, court, records = network.supervisor, network.court, network.records
    w0, w1 = f"{sup.node_id}-w0", f"{sup.node_id}-w1"
    slices = {w0: range(sup.udp_base, sup.udp_base + 20), w1: range(sup.udp_base + 20, sup.udp_base + UDP_PORTS)}

    # Every worker runs on the loop asked for. (Waited for: a worker may register before its log line is read; CI saw
    # an empty set once.)
    def loops() -> set[str]:
        return {f["event_loop"] for f in sup.facts("event_loop_selected")}

    await eventually(lambda: bool(loops()), within=15)
    assert loops() == {node_event_loop}, loops()
    # Two nodes registered on their own, each its own frame port and a share of the capacity.
    status, listed = await court.rest("GET", "/api/v1/nodes")
    assert status == 200, listed
    assert [n["id"] for n in listed["items"]] == [w0, w1]
    assert {n["capacity_peers"] for n in listed["items"]} == {CAPACITY_PEERS // 2}
    for k, wid in enumerate((w0, w1)):
        rec = await record_of(records, wid)
        assert rec is not None
        assert rec.frame_address == f"127.0.0.1:{sup.frame_base + k}"
        started = sup.facts("media_worker_started", node_id=wid)[-1]
        assert started["udp_ports"] == [slices[wid].start, slices[wid].stop - 1]
        if started["cpu"] is not None:  # pinned where the platform allows: the worker says which CPU
            assert os.sched_getaffinity(sup.pid(wid)) == {started["cpu"]}
            assert sup.facts("media_node_started", node_id=wid)[-1]["cpu"] == started["cpu"]
    cpus = [sup.facts("media_worker_started", node_id=w)[-1]["cpu"] for w in (w0, w1)]
    if len(os.sched_getaffinity(0)) >= 2 and None not in cpus:
        assert cpus[0] != cpus[1], "two workers on a machine of two cores share one"

    # Hearing A: placed on one worker, media flows.
    a_id, a = await seat(court)
    assert await eventually(lambda: flowing(a), 60), {n: p.failures for n, p in a.items()}
    placed_a = await network.pool.placement(a_id)
    assert placed_a is not None
    x = placed_a.node_id
    y = w1 if x == w0 else w0
    for p in a.values():
        assert node_ports(p), p.name
        assert node_ports(p) <= set(slices[x]), (x, node_ports(p))

    # The pool places on the less loaded of two random workers (both, here): once the registry shows A's two peers
    # on x (load 2/4), hearing B goes to y.
    deadline = time.monotonic() + 20
    while (rec := await record_of(records, x)) is None or rec.peers < 2:
        assert time.monotonic() < deadline, "the registry never showed hearing A's peers"
        await asyncio.sleep(0.3)
    await asyncio.sleep(2 * CHECK_SECONDS)  # the pool reads the registry every CHECK_SECONDS
    b_id, b = await seat(court)
    assert await eventually(lambda: flowing(b), 60), {n: p.failures for n, p in b.items()}
    placed_b = await network.pool.placement(b_id)
    assert placed_b is not None
    assert placed_b.node_id == y, (placed_a, placed_b)
    for p in b.values():
        assert node_ports(p) <= set(slices[y]), (y, node_ports(p))

    # kill -9 of hearing A's worker.
    loop = asyncio.get_running_loop()
    victim = sup.pid(x)
    lives_before = sup.ready_lines(x)
    old_life = await record_of(records, x)
    assert old_life is not None
    b_before = audio_in(b)
    b_stall, b_last, b_count = 0.0, loop.time(), b_before
    killed = loop.time()
    os.kill(victim, signal.SIGKILL)
    times: dict[str, float] = {}
    while loop.time() - killed < 2 * RESTART_LOOSE_SECONDS and len(times) < 4:
        now = loop.time()
        if (count := audio_in(b)) > b_count:
            b_stall, b_last, b_count = max(b_stall, now - b_last), now, count
        if "deregistered" not in times and sup.facts("media_worker_deregistered", node_id=x):
            times["deregistered"] = now - killed
        if "restarted" not in times and sup.ready_lines(x) > lives_before:
            times["restarted"] = now - killed
        if "registered" not in times:
            rec = await record_of(records, x)
            if rec is not None and rec.started_at != old_life.started_at:
                times["registered"] = now - killed
        if "media_back" not in times and all(p.media.resets >= 1 for p in a.values()) and flowing(a):
            times["media_back"] = now - killed
        await asyncio.sleep(0.05)
    b_stall = max(b_stall, loop.time() - b_last)
    exited = sup.facts("media_worker_exited", node_id=x)
    assert exited, sup.proc.tail()
    assert exited[-1]["signal"] == "SIGKILL", exited
    assert exited[-1]["restart_in_seconds"] == FIRST_BACKOFF_SECONDS
    # Out of the registry at once (not after the record's time to live), restarted, back in the registry.
    assert {"deregistered", "restarted", "registered", "media_back"} <= set(times), (times, sup.proc.tail())
    assert sup.pid(x) != victim
    assert max(times.values()) <= RESTART_LOOSE_SECONDS, times
    placed_again = await network.pool.placement(a_id)
    assert placed_again is not None
    assert (placed_again.reason, placed_again.previous_node_id) == ("failover", x)
    for p in a.values():
        assert [r for _, r in p.restarts] == ["node_lost"], (p.name, p.restarts)
        assert node_ports(p) <= set(slices[placed_again.node_id])
    # The other worker's hearing: same node, no restart, its media went on throughout.
    assert (await network.pool.placement(b_id)) == placed_b
    for p in b.values():
        assert p.restarts == [], (p.name, p.restarts)
        assert p.media.resets == 0, p.name
        assert not p.failures, (p.name, p.failures)
    assert audio_in(b) > b_before

    figures = {
        "supervisor_ready_seconds": round(network.started_in, 2),
        **{f"{k}_after_kill_seconds": round(v, 2) for k, v in times.items()},
        "failed_over_to": "restarted worker" if placed_again.node_id == x else "other worker",
        "other_hearing_longest_audio_gap_seconds": round(b_stall, 2),
    }
    log.info("node_workers_figures", **figures)
    print(f"\nWORKERS {figures}")

    # SIGTERM: every worker stops, the supervisor exits 0 and the registry is empty at once.
    await asyncio.gather(*(_bounded(p.close()) for p in court.participants))
    pids = [sup.pid(w) for w in (w0, w1)]
    assert await asyncio.to_thread(sup.proc.stop) == 0, sup.proc.tail()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert await record_of(records, w0) is None
    assert await record_of(records, w1) is None
    assert len(sup.facts("media_worker_stopped")) == 2


@pytest.mark.redis
@pytest.mark.timeout(240)
async def test_a_worker_that_cannot_start_is_retried_with_growing_delays_then_runs(
    tmp_path: Path, redis_url: str
) -> None:
    """A worker whose frame port is taken dies at start again and again: the supervisor retries it after 0.5, 1,
    2 s... (never in a tight loop) while the other worker serves, and once the port is free it runs and the
    supervisor says it is ready; a supervisor killed -9 leaves no worker behind (each stops cleanly)."""
    frame_base = _free_frame_ports(2)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", frame_base + 1))
    blocker.listen()
    sup = start_supervisor(tmp_path, redis_url, 2, frame_base=frame_base)
    w0, w1 = f"{sup.node_id}-w0", f"{sup.node_id}-w1"
    sup.proc.ready = re.compile(rf"courtlink: media node {re.escape(w0)} ready")
    try:
        await asyncio.to_thread(sup.proc.start, 90)

        async def exits(n: int) -> bool:
            return len(sup.facts("media_worker_exited", node_id=w1)) >= n

        deadline = time.monotonic() + 90
        while not await exits(3):
            assert time.monotonic() < deadline, sup.proc.tail()
            await asyncio.sleep(0.2)
        blocker.close()
        delays = [f["restart_in_seconds"] for f in sup.facts("media_worker_exited", node_id=w1)]
        assert delays[:3] == [FIRST_BACKOFF_SECONDS, 2 * FIRST_BACKOFF_SECONDS, 4 * FIRST_BACKOFF_SECONDS], delays
        assert all(f["code"] == 1 for f in sup.facts("media_worker_exited", node_id=w1))
        assert "cannot start" in sup.proc.log.read_text(errors="replace")
        assert sup.ready_lines(w0) == 1
        assert not sup.facts("media_worker_exited", node_id=w0)

        ready = SUPERVISOR_READY.split("{", 1)[0] + sup.node_id + " ready"
        deadline = time.monotonic() + 90
        while ready not in sup.proc.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, sup.proc.tail()
            await asyncio.sleep(0.2)
        assert sup.ready_lines(w1) == 1

        # kill -9 of the supervisor itself: its workers are told to stop (SIGTERM) and leave the registry at once.
        pids = [sup.pid(w) for w in (w0, w1)]
        await asyncio.to_thread(sup.proc.kill)
        bus, records = await open_bus(redis_url, process_id="test-workers")
        try:
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in pids) or any([await record_of(records, w) for w in (w0, w1)]):
                assert time.monotonic() < deadline, sup.proc.tail()
                await asyncio.sleep(0.1)
        finally:
            await records.close()
            await bus.close()
        assert {f["node_id"] for f in sup.facts("node_service_stopped")} == {w0, w1}
    finally:
        blocker.close()
        sup.reap()


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--workers", "0"], {}, "courtlink: --workers must be between 1 and 64 (one per core), not 0"),
        (["--workers", "65"], {}, "courtlink: --workers must be between 1 and 64 (one per core), not 65"),
        (
            ["--workers", "3"],
            {"COURTLINK_MEDIA__UDP_PORT_MIN": "40000", "COURTLINK_MEDIA__UDP_PORT_MAX": "40001"},
            "courtlink: media.udp_port_min..udp_port_max (40000-40001, 2 ports) cannot be shared by 3 workers: each "
            "needs ports of its own (size the range to capacity_peers plus a margin)",
        ),
        (
            ["--workers", "2"],
            {"COURTLINK_MEDIA__FRAME_ADVERTISE": "recorders-only"},
            "courtlink: media.frame_advertise 'recorders-only' must be host:port (a port free for 2 workers: worker "
            "k advertises port + k)",
        ),
    ],
)
def test_media_node_refuses_workers_it_cannot_run_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    """An operator's --workers that cannot work (out of bounds, a UDP range too small to share, a frame address
    without a port) gets exit code 2 and one line saying why, before anything starts."""
    done = subprocess.run(
        [sys.executable, "-m", "courtlink.cli", "media-node", *args],
        cwd=tmp_path,
        env=clean_env({"COURTLINK_REDIS_URL": "redis://127.0.0.1:1/0", **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [line]
