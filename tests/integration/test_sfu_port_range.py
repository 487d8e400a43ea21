"""A media node with a UDP port range ([media] udp_port_min/max): real aiortc peers on loopback, ports kept in range."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import AsyncIterator

import pytest

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import (
    ApplyOffer,
    ClosePeer,
    CreatePeer,
    CreateProbe,
    Refused,
    SdpAnswer,
    SetPublishing,
    SetReceiving,
)
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_ports"
RANGE_SIZE = 4


def _free_block(size: int) -> int:
    """The first port of ``size`` consecutive UDP ports free on 127.0.0.1 now (below the ephemeral range)."""
    for _ in range(200):
        base = random.randrange(20_000, 32_000 - size)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no free block of UDP ports on loopback")


def _candidate_ports(sdp: str) -> list[int]:
    """The ports of every ``a=candidate`` line (the fields after the priority: address, port)."""
    return [int(line.split()[5]) for line in sdp.splitlines() if line.startswith("a=candidate:")]


@pytest.fixture
async def ports() -> tuple[int, int]:
    base = _free_block(RANGE_SIZE)
    return base, base + RANGE_SIZE - 1


@pytest.fixture
async def node(ports: tuple[int, int]) -> InProcessNode:
    return InProcessNode(NodeSettings(node_id="node-ports", udp_port_min=ports[0], udp_port_max=ports[1]))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


async def _offer_of(client: MediaClient) -> str:
    return await client.offer()


async def test_peers_bind_in_the_range_and_one_too_many_is_refused_by_name(
    node: InProcessNode, signaling: DirectSignaling, ports: tuple[int, int]
) -> None:
    """Every node candidate port is in the range; a peer beyond it gets `udp_ports_exhausted`, others keep media."""
    low, high = ports
    judge = MediaClient("judge", tag=6)
    await signaling.join(judge, Role.judge)
    await node.call(
        SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera, Source.microphone))
    )
    viewers = [MediaClient(f"viewer{i}", video=False, loud=False) for i in range(RANGE_SIZE - 1)]
    for viewer in viewers:
        await signaling.join(viewer)
        await node.call(SetReceiving(hearing_id=HEARING, participant_id=viewer.name, publishers=("judge",)))
    assert await eventually(lambda: all(len(v.codes(6)) >= 5 for v in viewers), within=20)

    used: set[int] = set()
    for name in ["judge", *(v.name for v in viewers)]:
        peer = node.peer(HEARING, name)
        assert peer is not None
        found = _candidate_ports(str(peer.pc.localDescription.sdp))
        assert found, name
        assert all(low <= port <= high for port in found), (name, found, ports)
        used.update(found)
    assert len(used) == RANGE_SIZE  # one port per connection: the range is full

    extra = MediaClient("late", video=False, loud=False)
    try:
        await node.call(CreatePeer(hearing_id=HEARING, participant_id="late", role=Role.party))
        reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="late", sdp=await _offer_of(extra)))
        assert isinstance(reply, Refused), reply
        assert reply.code == "udp_ports_exhausted"
        assert node.peer(HEARING, "late") is None  # dropped: signaling makes a new one when it asks again

        probe_client = MediaClient("probing", video=False, loud=False)
        try:
            probe = await node.call(
                CreateProbe(hearing_id=HEARING, participant_id="probing", sdp=await probe_client.offer())
            )
            assert isinstance(probe, Refused), probe
            assert probe.code == "udp_ports_exhausted"
            assert node.probes() == 0
        finally:
            await probe_client.close()

        # The others are untouched.
        counts = [len(v.codes(6)) for v in viewers]
        assert await eventually(lambda: all(len(v.codes(6)) > c + 10 for v, c in zip(viewers, counts, strict=True)))

        # A port freed is a port for the next one.
        await node.call(ClosePeer(hearing_id=HEARING, participant_id=viewers[-1].name))
        await extra.close()
        extra = MediaClient("late", video=False, loud=False)
        await node.call(CreatePeer(hearing_id=HEARING, participant_id="late", role=Role.party))
        reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="late", sdp=await _offer_of(extra)))
        assert isinstance(reply, SdpAnswer), reply
        assert all(low <= port <= high for port in _candidate_ports(reply.sdp))
    finally:
        await extra.close()


async def test_network_check_probe_binds_in_the_range(node: InProcessNode, ports: tuple[int, int]) -> None:
    """The network check's echo peer announces only ports of the node's range."""
    low, high = ports
    client = MediaClient("probing", tag=2)
    try:
        reply = await node.call(CreateProbe(hearing_id=HEARING, participant_id="probing", sdp=await client.offer()))
        assert isinstance(reply, SdpAnswer), reply
        found = _candidate_ports(reply.sdp)
        assert found
        assert all(low <= port <= high for port in found), (found, ports)
    finally:
        await client.close()
        with contextlib.suppress(Exception):
            await node.close()
