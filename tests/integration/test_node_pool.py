"""Hearings placed on media nodes by region through the public doors, stored for every process, moved when a node dies.

Real signaling app (REST, WebSocket) over a real SQLite store, real in-process media nodes with real heartbeats
(6 s TTL) in shared in-process records, and the real NodePool between them. No media flows here (WebSocket
clients only); tests/e2e/test_node_failover.py runs real aiortc peers through a node's death.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from courtlink.nodes import NodeHeartbeat
from media.node import InProcessNode
from protocol.cluster import NodeRecord, Placement, node_record_key, placement_key
from protocol.node import Ack, CreatePeer, MediaNodeLost, NodeEvent, Refused
from rooms.backends import open_bus
from rooms.bus import Records
from rooms.model import Role
from signaling.node_pool import NodePool
from tests.bus_fixtures import pings, redis_with_aof, until
from tests.conftest import free_port, stop_redis
from tests.pool_fixtures import Farm, book_in, placement
from tests.ws_fixtures import Court, eventually


async def test_a_hearing_is_placed_on_a_node_of_its_courtrooms_region(pool_court: Court, farm: Farm) -> None:
    """The judge's join places the hearing on the west node for a west courtroom; the details and node list show it."""
    await farm.add("east-1", "east")
    await farm.add("west-1", "west")
    await farm.add("east-2", "east")
    b = await book_in(pool_court, "west")
    assert await placement(pool_court, b.hearing_id) is None  # nobody needs media yet
    await pool_court.join(b.tokens["judge"])
    assert await eventually(lambda: farm.nodes["west-1"].peer(b.hearing_id, b.ids["judge"]) is not None)
    shown = await placement(pool_court, b.hearing_id)
    assert shown is not None
    assert (shown["node_id"], shown["region"], shown["reason"]) == ("west-1", "west", "region")
    assert shown["previous_node_id"] is None
    status, body = await pool_court.rest("GET", "/api/v1/nodes")
    assert status == 200, body
    listed = {n["id"]: n for n in body["items"]}
    assert set(listed) == {"east-1", "east-2", "west-1"}
    west = listed["west-1"]
    assert (west["region"], west["state"], west["capacity_peers"]) == ("west", "up", 300)
    assert west["started_at"] is not None
    assert 0 <= west["heartbeat_age_seconds"] < 10


async def test_no_node_in_the_region_falls_back_to_another(pool_court: Court, farm: Farm) -> None:
    """A courtroom in a region without a node is placed on another region's node, reason fallback."""
    await farm.add("east-1", "east")
    b = await book_in(pool_court, "north")
    await pool_court.join(b.tokens["judge"])
    assert await eventually(lambda: farm.nodes["east-1"].peer(b.hearing_id, b.ids["judge"]) is not None)
    shown = await placement(pool_court, b.hearing_id)
    assert shown is not None
    assert (shown["node_id"], shown["reason"]) == ("east-1", "fallback")


async def test_no_node_at_all_is_a_named_error_to_the_client(pool_court: Court, farm: Farm) -> None:
    """With no media node up, a participant's offer is answered error no_media_node; the session carries on."""
    b = await book_in(pool_court, "east")
    judge, _ = await pool_court.join(b.tokens["judge"])
    reply = await judge.request("offer", "answer", sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
    assert reply["type"] == "error", reply
    assert reply["code"] == "no_media_node"
    assert (await judge.ping())["type"] == "pong"
    assert await placement(pool_court, b.hearing_id) is None
    status, body = await pool_court.rest("GET", "/api/v1/nodes")
    assert (status, body["items"]) == (200, [])


async def test_an_adjourned_hearing_gives_its_placement_up(pool_court: Court, farm: Farm) -> None:
    """Adjourning closes the hearing's room on its node and removes its placement."""
    node = await farm.add("east-1", "east")
    b = await book_in(pool_court, "east", ("judge", "clerk"))
    judge, _ = await pool_court.join(b.tokens["judge"])
    assert await eventually(lambda: node.peer(b.hearing_id, b.ids["judge"]) is not None)
    for action in ("open", "adjourn"):
        reply = await judge.request("session", "state", action=action)
        assert reply["type"] == "state", reply
    assert await eventually(lambda: node.stats() == (0, 0))
    assert await placement(pool_court, b.hearing_id) is None


async def test_two_signaling_processes_place_a_hearing_on_the_same_node(farm: Farm) -> None:
    """Two pools (two signaling processes) placing one hearing at once agree on one node: the first writer wins."""
    for i in range(6):
        await farm.add(f"n{i}", "east")
    pools = [NodePool(farm.records, farm.connect, rng=random.Random(seed)) for seed in range(2)]
    for pool in pools:
        await pool.start()
    try:
        for n in range(10):
            hearing = f"hrg_same_{n}"
            replies = await asyncio.gather(
                *(p.call(CreatePeer(hearing_id=hearing, participant_id="p", role=Role.judge)) for p in pools)
            )
            assert all(isinstance(r, Ack) for r in replies), replies
            first, second = [await p.placement(hearing) for p in pools]
            assert first is not None
            assert first == second
            assert [i for i, node in farm.nodes.items() if node.peer(hearing, "p") is not None] == [first.node_id]
    finally:
        for pool in pools:
            await pool.close()


@pytest.mark.timeout(120)
async def test_a_lapsed_node_moves_its_hearings_and_announces_it(farm: Farm) -> None:
    """A node whose heartbeat stops: within its TTL and a check, its hearing is placed again (failover, previous
    node named), MediaNodeLost is emitted once, and the dead node's late events no longer count."""
    await farm.add("a", "east")
    pool = NodePool(farm.records, farm.connect)
    await pool.start()
    seen: list[NodeEvent] = []

    async def handler(event: NodeEvent) -> None:
        seen.append(event)

    pool.subscribe(handler)
    try:
        reply = await pool.call(CreatePeer(hearing_id="hrg_f", participant_id="p1", role=Role.judge))
        assert isinstance(reply, Ack), reply
        await farm.add("b", "west")
        killed = time.monotonic()
        await farm.kill("a")
        assert await eventually(lambda: any(isinstance(e, MediaNodeLost) for e in seen), within=30)
        detected = time.monotonic() - killed
        print(f"\nFAILOVER_DETECT node record lapsed and hearing moved {detected:.1f}s after the kill")
        lost = [e for e in seen if isinstance(e, MediaNodeLost)]
        assert lost == [MediaNodeLost(hearing_id="hrg_f", node_id="a", new_node_id="b")]
        stored = await pool.placement("hrg_f")
        assert stored is not None
        assert (stored.node_id, stored.reason, stored.previous_node_id) == ("b", "failover", "a")
        # Commands now go to the new node.
        reply = await pool.call(CreatePeer(hearing_id="hrg_f", participant_id="p1", role=Role.judge))
        assert isinstance(reply, Ack)
        assert farm.nodes["b"].peer("hrg_f", "p1") is not None
        await asyncio.sleep(1.5)
        assert len([e for e in seen if isinstance(e, MediaNodeLost)]) == 1  # announced once
    finally:
        await pool.close()


@pytest.mark.timeout(120)
async def test_a_hearing_without_any_node_is_placed_again_when_one_comes_up(farm: Farm) -> None:
    """The only node dies: MediaNodeLost without a new node, commands refused no_media_node; a node comes up: the
    hearing is placed on it and MediaNodeLost names it."""
    await farm.add("a", "east")
    pool = NodePool(farm.records, farm.connect)
    await pool.start()
    seen: list[MediaNodeLost] = []

    async def handler(event: NodeEvent) -> None:
        if isinstance(event, MediaNodeLost):
            seen.append(event)

    pool.subscribe(handler)
    try:
        assert isinstance(await pool.call(CreatePeer(hearing_id="h", participant_id="p", role=Role.judge)), Ack)
        await farm.kill("a")
        assert await eventually(lambda: len(seen) == 1, within=30)
        assert seen[0].new_node_id is None
        reply = await pool.call(CreatePeer(hearing_id="h", participant_id="p", role=Role.judge))
        assert isinstance(reply, Refused)
        assert reply.code == "no_media_node"
        assert await pool.placement("h") is None
        await farm.add("c", "east")
        assert await eventually(lambda: len(seen) == 2, within=10)
        assert seen[1] == MediaNodeLost(hearing_id="h", node_id="a", new_node_id="c")
        stored = await pool.placement("h")
        assert stored is not None
        assert (stored.node_id, stored.reason) == ("c", "failover")
    finally:
        await pool.close()


async def test_a_placement_on_a_dead_node_is_replaced_on_first_use(farm: Farm) -> None:
    """A stored placement naming a node without a record (its process died with the signaling process that placed
    it) is replaced when the hearing next needs media, not used."""
    await farm.add("b", "east")
    dead = Placement(hearing_id="h2", node_id="gone", region="east", reason="region", placed_at=1.0)
    await farm.records.put(placement_key("h2"), dead.model_dump_json().encode())
    pool = NodePool(farm.records, farm.connect)
    await pool.start()
    try:
        assert isinstance(await pool.call(CreatePeer(hearing_id="h2", participant_id="p", role=Role.judge)), Ack)
        stored = await pool.placement("h2")
        assert stored is not None
        assert (stored.node_id, stored.reason, stored.previous_node_id) == ("b", "failover", "gone")
        assert "gone" not in farm.connects
    finally:
        await pool.close()


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_a_redis_restart_longer_than_the_node_ttl_moves_no_hearing(farm: Farm, tmp_path: Path) -> None:
    """Redis (with AOF) down longer than a node record's TTL: the records expire meanwhile, yet the pool waits for
    the live nodes' next heartbeats and moves no hearing (media would otherwise restart for nothing)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_proc = redis_with_aof(tmp_path / "aof", port)
    opened: list[Records] = []
    pool: NodePool | None = None
    try:
        assert await until(lambda: pings(url), 10) is not None
        _, records = await open_bus(url, process_id="test-pool")
        opened.append(records)
        node = InProcessNode(farm.node_settings.model_copy(update={"node_id": "r1"}))
        farm.nodes["r1"] = node
        # A slow heartbeat (every 4 s, lives 6 s): after Redis returns, the pool reads the registry before it.
        farm.beats["r1"] = NodeHeartbeat(node, records, region="east", capacity_peers=10, ttl=6.0, every=4.0)
        await farm.beats["r1"].start()
        pool = NodePool(records, farm.connect)
        await pool.start()
        seen: list[NodeEvent] = []

        async def handler(event: NodeEvent) -> None:
            seen.append(event)

        pool.subscribe(handler)
        assert isinstance(await pool.call(CreatePeer(hearing_id="hr", participant_id="p", role=Role.judge)), Ack)
        stop_redis(redis_proc)
        await asyncio.sleep(7.0)  # past the record's TTL: it is gone when Redis comes back
        redis_proc = redis_with_aof(tmp_path / "aof", port)
        assert await until(lambda: pings(url), 10) is not None
        assert await until(lambda: records_has(records, "r1"), 15) is not None, "no heartbeat after the restart"
        await asyncio.sleep(2.0)
        assert [e for e in seen if isinstance(e, MediaNodeLost)] == []
        stored = await pool.placement("hr")
        assert stored is not None
        assert (stored.node_id, stored.reason) == ("r1", "region")
    finally:
        if pool is not None:
            await pool.close()
        for beat in farm.beats.values():
            await beat.stop(forget=False)
        farm.beats.clear()
        for closing in opened:
            await closing.close()
        stop_redis(redis_proc)


async def records_has(records: Records, node_id: str) -> bool:
    """Whether the node's heartbeat record is there."""
    return await records.get(node_record_key(node_id)) is not None


async def test_a_drained_node_takes_no_new_hearing_and_keeps_its_own(pool_court: Court, farm: Farm) -> None:
    """An admin drains the node holding a hearing: that hearing stays on it, new hearings go to the other node,
    the node list and the node's own heartbeat say draining (also after the node restarts), the system audit
    trail names who did it, an unknown node is 404 node_not_found, and undrain puts the node back."""
    for node_id in ("east-1", "east-2"):
        await farm.add(node_id, "east")
    a = await book_in(pool_court, "east", ("judge", "clerk"))
    await pool_court.join(a.tokens["judge"])
    assert await eventually(lambda: any(n.peer(a.hearing_id, a.ids["judge"]) for n in farm.nodes.values()))
    shown = await placement(pool_court, a.hearing_id)
    assert shown is not None
    home = shown["node_id"]
    other = ({"east-1", "east-2"} - {home}).pop()

    status, body = await pool_court.rest("POST", f"/api/v1/nodes/{home}/drain")
    assert status == 200, body
    assert (body["id"], body["state"]) == (home, "draining")
    for _ in range(4):  # two random choices would put about half of them on the drained node
        b = await book_in(pool_court, "east", ("judge", "clerk"))
        await pool_court.join(b.tokens["judge"])
        assert await eventually(seated(farm.nodes[other], b.hearing_id, b.ids["judge"]))
        placed = await placement(pool_court, b.hearing_id) or {}
        assert placed.get("node_id") == other, placed
    assert farm.nodes[home].peer(a.hearing_id, a.ids["judge"]) is not None  # its hearing stays where it is
    assert (await placement(pool_court, a.hearing_id) or {}).get("node_id") == home

    await farm.beats[home].beat()
    assert await announced(farm, home) == "draining"
    status, body = await pool_court.rest("GET", "/api/v1/nodes")
    assert {n["id"]: n["state"] for n in body["items"]} == {home: "draining", other: "up"}

    status, body = await pool_court.rest("POST", "/api/v1/nodes/east-9/drain")
    assert (status, body["type"]) == (404, "urn:courtlink:problem:node_not_found"), body
    async with pool_court.http.post(f"{pool_court.base_url}/api/v1/nodes/{home}/drain") as resp:
        assert resp.status == 401  # no key

    status, body = await pool_court.rest("DELETE", f"/api/v1/nodes/{home}/drain")
    assert (status, body["state"]) == (200, "up"), body
    await farm.beats[home].beat()
    assert await announced(farm, home) == "up"

    # A drained node that restarts comes back drained: the flag is not in its heartbeat but beside it.
    await farm.add("east-3", "east")
    status, body = await pool_court.rest("POST", "/api/v1/nodes/east-3/drain")
    assert status == 200, body
    await farm.kill("east-3")
    await farm.add("east-3", "east")
    assert await announced(farm, "east-3") == "draining"

    trail = [(e.action, e.actor, e.data) for e in await pool_court.store.audit_log("system")]
    drains = [t for t in trail if t[0].startswith("node_drain")]
    assert [(action, data["node_id"]) for action, _, data in drains] == [
        ("node_drain_started", home),
        ("node_drain_ended", home),
        ("node_drain_started", "east-3"),
    ], trail
    assert all(actor for _, actor, _ in drains)


async def announced(farm: Farm, node_id: str) -> str:
    """The state the node's heartbeat record announces ("" without a record)."""
    raw = await farm.records.get(node_record_key(node_id))
    return NodeRecord.model_validate_json(raw).state if raw is not None else ""


def seated(node: InProcessNode, hearing_id: str, participant_id: str) -> Callable[[], bool]:
    """Whether the participant has a peer on the node (for ``eventually``)."""
    return lambda: node.peer(hearing_id, participant_id) is not None
