"""A media node served on the bus (NodeService) and driven from elsewhere (RemoteNode), in-process and on Redis."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from media.node import InProcessNode
from media.service import NodeIdInUse, NodeService
from media.settings import NodeSettings
from protocol.cluster import (
    HEARTBEAT_SECONDS,
    NodeRecord,
    node_command_channel,
    node_drain_key,
    node_event_channel,
    node_record_key,
)
from protocol.node import (
    NODE_REPLY,
    Ack,
    ApplyOffer,
    ClosePeer,
    CreatePeer,
    NodeEvent,
    PeerState,
    PeerStateChanged,
    Refused,
    SetReceiving,
)
from rooms.backends import open_bus
from rooms.bus import Bus, Records
from rooms.model import Role
from signaling.remote_node import RemoteNode
from tests.bus_fixtures import BUS_KINDS, bus_url, eventually
from tests.media_clients import MediaClient

KINDS = BUS_KINDS


@dataclass
class Served:
    """A node behind its NodeService, and a RemoteNode driving it over the same bus."""

    node: InProcessNode
    service: NodeService
    remote: RemoteNode
    bus: Bus
    records: Records


@pytest.fixture(params=KINDS)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """A node ``n-<random>`` in region ``east`` served on the backend under test."""
    url = bus_url(request, request.param)
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    bus, records = await open_bus(url, process_id="node-proc", key_prefix=prefix)
    other = bus  # in-process: one bus for both sides; on Redis another process's connection
    if url:
        other, other_records = await open_bus(url, process_id="signaling-proc", key_prefix=prefix)
        await other_records.close()
    node = InProcessNode(NodeSettings(node_id=f"n-{uuid.uuid4().hex[:6]}"))
    service = NodeService(node, bus, records, region="east", capacity_peers=50, frame_address="127.0.0.1:7400")
    await service.start()
    remote = RemoteNode(other, node.node_id, attempt_seconds=2, retries=1)
    await remote.start()
    try:
        yield Served(node, service, remote, other, records)
    finally:
        await remote.close()
        await service.close()
        await node.close()
        for closing in {other.close, bus.close, records.close}:
            await closing()


async def test_commands_reach_the_node_and_replies_come_back(served: Served) -> None:
    """Signaling's commands over the bus are carried out by the node; its refusals come back as they are."""
    reply = await served.remote.call(SetReceiving(hearing_id="h1", participant_id="p1", publishers=("p2",)))
    assert reply == Ack()
    refused = await served.remote.call(ClosePeer(hearing_id="h1", participant_id="nobody"))
    assert isinstance(refused, Refused)
    assert refused.code == "no_such_peer"


async def test_bytes_that_are_no_command_are_refused_and_the_node_carries_on(served: Served) -> None:
    """Garbage, an unknown command type or an oversized field on node.<id>.cmd: Refused(invalid_command), no crash."""
    channel = node_command_channel(served.node.node_id)
    for garbage in (
        b"",
        b"\xff\xfe not json",
        b"[]",
        b'{"type":"explode","hearing_id":"h","participant_id":"p"}',
        b'{"type":"apply_offer","hearing_id":"h","participant_id":"p","sdp":"' + b"v" * 250_000 + b'"}',
        b'{"type":"close_peer"}',
    ):
        reply = NODE_REPLY.validate_json(await served.bus.request(channel, garbage, attempt_seconds=5))
        assert isinstance(reply, Refused), garbage[:40]
        assert reply.code == "invalid_command"
    assert await served.remote.call(SetReceiving(hearing_id="h1", participant_id="p1")) == Ack()


async def test_the_node_is_in_the_registry_with_its_region_and_load_until_it_stops(served: Served) -> None:
    """While it runs the node's heartbeat record names its region, capacity, load and frame pipe; a clean stop
    takes it out at once."""
    key = node_record_key(served.node.node_id)
    raw = await served.records.get(key)
    assert raw is not None
    record = NodeRecord.model_validate_json(raw)
    assert (record.id, record.region, record.capacity_peers, record.state) == (
        served.node.node_id,
        "east",
        50,
        "up",
    )
    assert record.frame_address == "127.0.0.1:7400"
    assert record.peers == 0
    assert record.load >= 0
    assert record.heartbeat_at >= record.started_at
    assert record.adaptation.paused_streams == 0  # the bandwidth adaptation figures ride along (none yet)
    assert record.adaptation.probes == 0
    # A record written before the figures existed still reads (as zeros).
    older = json.loads(raw)
    older.pop("adaptation")
    assert NodeRecord.model_validate(older).adaptation.nacks_dropped == 0
    assert key in await served.records.scan("node.")
    await served.service.close()
    assert await served.records.get(key) is None


async def test_a_drain_flag_beside_the_record_turns_the_heartbeat_draining_and_back(served: Served) -> None:
    """With the node's drain flag set (as ``POST /api/v1/nodes/{id}/drain`` sets it from any signaling process) its
    next heartbeat says draining; with the flag gone, up again."""
    key = node_record_key(served.node.node_id)
    await served.records.put(node_drain_key(served.node.node_id), b"1")

    async def becomes(expected: str) -> bool:
        deadline = time.monotonic() + 3 * HEARTBEAT_SECONDS
        while True:
            raw = await served.records.get(key)
            if raw is not None and NodeRecord.model_validate_json(raw).state == expected:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    assert await becomes("draining")
    await served.records.delete(node_drain_key(served.node.node_id))
    assert await becomes("up")


async def test_node_events_arrive_in_order_and_garbage_on_the_channel_is_dropped(served: Served) -> None:
    """Every node event reaches signaling in the order the node emitted it; an unreadable one is skipped."""
    got: list[NodeEvent] = []

    async def collect(event: NodeEvent) -> None:
        got.append(event)

    served.remote.subscribe(collect)
    states = [PeerState.connecting, PeerState.connected, PeerState.failed, PeerState.closed] * 25
    await served.bus.publish(node_event_channel(served.node.node_id), b"{not an event")
    for state in states:
        # The node's own emit path (what a peer's state change calls), so the real dispatcher and relay run.
        served.node._emit(PeerStateChanged(hearing_id="h1", participant_id="p1", state=state))
    assert await eventually(lambda: len(got) >= len(states))
    assert [e.state for e in got if isinstance(e, PeerStateChanged)] == states


@pytest.mark.parametrize("kind", KINDS)
async def test_a_node_nobody_serves_is_refused_node_unreachable(kind: str, request: pytest.FixtureRequest) -> None:
    """A command to a node that is gone answers Refused(node_unreachable) after its retries, never raises."""
    url = bus_url(request, kind)
    bus, records = await open_bus(url, process_id="sig", key_prefix=f"test:{uuid.uuid4().hex[:10]}:")
    try:
        remote = RemoteNode(bus, "ghost", attempt_seconds=0.2, retries=1)
        await remote.start()
        reply = await remote.call(SetReceiving(hearing_id="h", participant_id="p"))
        assert isinstance(reply, Refused)
        assert reply.code == "node_unreachable"
        await remote.close()
    finally:
        await bus.close()
        await records.close()


async def test_one_participants_commands_are_carried_out_in_the_order_sent(served: Served) -> None:
    """Commands for one participant sent without waiting for each other run one after the other, in order: an
    offer is answered before the close sent after it takes the peer away."""
    client = MediaClient("p1", tag=3)
    try:
        offer = await client.offer()
        for _ in range(2):
            replies = await asyncio.gather(
                served.remote.call(CreatePeer(hearing_id="h1", participant_id="p1", role=Role.party)),
                served.remote.call(ApplyOffer(hearing_id="h1", participant_id="p1", sdp=offer)),
                served.remote.call(ClosePeer(hearing_id="h1", participant_id="p1")),
            )
            assert [r.type for r in replies] == ["ack", "sdp_answer", "ack"], replies
            assert served.node.peer("h1", "p1") is None
    finally:
        await client.close()


async def test_a_second_node_with_the_same_id_is_refused_until_the_first_stops(served: Served) -> None:
    """Two nodes started with one node id would both carry out every command: the second is refused NodeIdInUse;
    once the first stops cleanly the id is free at once."""
    twin = InProcessNode(NodeSettings(node_id=served.node.node_id))

    def second() -> NodeService:
        return NodeService(twin, served.bus, served.records, region="east", capacity_peers=50, id_wait_seconds=0.3)

    try:
        with pytest.raises(NodeIdInUse, match=served.node.node_id):
            await second().start()
        await served.service.close()
        again = second()
        await again.start()
        await again.close()
    finally:
        await twin.close()
