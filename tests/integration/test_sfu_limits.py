"""Offers with too many media sections and sources declared for the wrong kind are refused (real aiortc peers)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from media.node import InProcessNode
from media.peer import MAX_MLINES, offer_mline_limit
from media.settings import NodeSettings
from protocol.node import (
    ApplyOffer,
    CreatePeer,
    DeclareTrack,
    Refused,
    SdpAnswer,
    SetPublishing,
    SetReceiving,
    TrackPublished,
)
from rooms.model import Role, Source
from tests.media_clients import CodeVideoTrack, DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_limits"
ALL = (Source.camera, Source.microphone, Source.evidence)


@pytest.fixture
async def node() -> InProcessNode:
    """An in-process media node."""
    return InProcessNode(NodeSettings(node_id="node-limits"))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    """Signaling for one hearing; closes clients and the node afterwards."""
    async with hearing(node, HEARING) as sig:
        yield sig


def with_extra_sections(sdp: str, count: int) -> str:
    """``sdp`` with ``count`` minimal receive-only audio sections appended, each under a new mid."""
    copies = [
        f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\na=mid:extra{i}\r\n" for i in range(count)
    ]
    return sdp.rstrip("\r\n") + "\r\n" + "".join(copies)


async def refused_offer(node: InProcessNode, client: MediaClient, sdp: str) -> Refused:
    """Send ``sdp`` as ``client``'s offer; the node must refuse it and leave the peer without transceivers."""
    reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id=client.name, sdp=sdp))
    assert isinstance(reply, Refused), reply
    peer = node.peer(HEARING, client.name)
    assert peer is not None
    assert peer.pc.getTransceivers() == []
    assert peer.pc.signalingState == "stable"
    return reply


async def test_too_many_sending_sections_refused_and_node_keeps_working(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """An offer with 4 sending m-lines (audio + 3 video) is refused invalid_sdp; other participants still flow."""
    attacker = MediaClient("attacker", tag=60)
    for tag in (61, 62):
        attacker.pc.addTransceiver(CodeVideoTrack(tag), direction="sendonly")
    try:
        await node.call(CreatePeer(hearing_id=HEARING, participant_id=attacker.name, role=Role.party))
        reply = await refused_offer(node, attacker, await attacker.offer())
    finally:
        await attacker.close()  # not relayed by signaling: its own offer stays pending
    assert reply.code == "invalid_sdp"
    assert "sending" in reply.message
    assert "> 3" in reply.message

    party = MediaClient("party", tag=63)
    viewer = MediaClient("clerk", video=False, audio=False)
    await signaling.join(party, Role.party)
    await signaling.join(viewer, Role.clerk)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="party", sources=ALL))
    await node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("party",)))
    assert await eventually(lambda: len(viewer.codes(63)) >= 3, within=15)
    assert not signaling.failures


async def test_too_many_sections_in_all_refused(node: InProcessNode, signaling: DirectSignaling) -> None:
    """An offer munged to carry more m-lines than the hearing's size allows (most receive-only) is refused."""
    client = MediaClient("party", tag=64)
    try:
        await node.call(CreatePeer(hearing_id=HEARING, participant_id=client.name, role=Role.party))
        limit = offer_mline_limit(1)
        sdp = with_extra_sections(await client.offer(), limit)
        reply = await refused_offer(node, client, sdp)
        assert reply.code == "too_many_media_sections"
        assert f"> {limit}" in reply.message
        reply = await refused_offer(node, client, with_extra_sections(await client.offer(), MAX_MLINES))
        assert reply.code == "too_many_media_sections"
    finally:
        await client.close()


async def test_source_of_the_wrong_kind_is_refused(node: InProcessNode, signaling: DirectSignaling) -> None:
    """Declaring a video track microphone, or an audio track camera, is refused invalid_source; sources unchanged."""
    party = MediaClient("party", tag=65)
    await signaling.join(party, Role.party)
    assert party.video is not None
    assert party.audio is not None
    for track_id, source in ((party.video.id, Source.microphone), (party.audio.id, Source.camera)):
        reply = await node.call(
            DeclareTrack(hearing_id=HEARING, participant_id="party", track_id=track_id, source=source)
        )
        assert isinstance(reply, Refused), reply
        assert reply.code == "invalid_source"
    peer = node.peer(HEARING, "party")
    assert peer is not None
    assert await eventually(lambda: len(peer.published) == 2, within=5)
    assert {(p.kind, p.source) for p in peer.published.values()} == {
        ("audio", Source.microphone),
        ("video", Source.camera),
    }


async def test_wrong_kind_declared_before_the_offer_is_ignored(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A video track declared microphone before it arrives is published with its default source, camera."""
    party = MediaClient("party", tag=66, audio=False)
    assert party.video is not None
    track_id = party.video.id
    await node.call(CreatePeer(hearing_id=HEARING, participant_id="party", role=Role.party))
    declare = DeclareTrack(hearing_id=HEARING, participant_id="party", track_id=track_id, source=Source.microphone)
    assert not isinstance(await node.call(declare), Refused)
    signaling.clients[party.name] = party
    reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="party", sdp=await party.offer()))
    assert isinstance(reply, SdpAnswer), reply
    await party.accept_answer(reply.sdp)
    assert await eventually(
        lambda: any(isinstance(e, TrackPublished) and e.track_id == track_id for e in signaling.events),
        within=5,
    )
    published = [e for e in signaling.events if isinstance(e, TrackPublished) and e.track_id == track_id]
    assert {e.source for e in published} == {Source.camera}
