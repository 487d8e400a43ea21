"""Declared track sources are matched by the msid of the client's SDP (real aiortc peers on loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiortc.sdp import SessionDescription

from media.ice import restrict_host_candidates
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import (
    ApplyOffer,
    CreatePeer,
    DeclareTrack,
    SdpAnswer,
    SetPublishing,
    SetReceiving,
    TrackPublished,
)
from rooms.model import Role, Source
from tests.media_clients import LOOPBACK, CodeVideoTrack, DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_evidence"
ALL = (Source.camera, Source.microphone, Source.evidence)


@pytest.fixture
async def node() -> InProcessNode:
    # last_n=1: only the most recent speaker's camera is forwarded; evidence must not count.
    return InProcessNode(NodeSettings(node_id="node-evidence", last_n=1))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


async def join_like_a_browser(
    node: InProcessNode, sig: DirectSignaling, client: MediaClient, declare: DeclareTrack | None = None
) -> str:
    """Join with an offer without ``a=msid-semantic`` (as browsers send); returns the offer sent."""
    sig.clients[client.name] = client
    await node.call(CreatePeer(hearing_id=HEARING, participant_id=client.name, role=Role.party))
    if declare is not None:
        await node.call(declare)
    restrict_host_candidates(client.pc, LOOPBACK)
    await client.pc.setLocalDescription(await client.pc.createOffer())
    sdp = "\r\n".join(
        line for line in client.pc.localDescription.sdp.split("\r\n") if not line.startswith("a=msid-semantic")
    )
    reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id=client.name, sdp=sdp))
    assert isinstance(reply, SdpAnswer), reply
    await client.accept_answer(reply.sdp)
    return sdp


def msid_track_ids(sdp: str, kind: str) -> list[str]:
    """The track ids of the ``a=msid`` lines of one kind's m-lines, in order."""
    return [str(m.msid).split()[1] for m in SessionDescription.parse(sdp).media if m.kind == kind and m.msid]


async def test_declared_evidence_is_forwarded_as_evidence_beyond_last_n(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """A second video track declared evidence by its msid track id reaches subscribers as evidence, despite last-N."""
    speaker = MediaClient("judge", tag=40)  # loud: the active speaker, so its camera takes the one last-N place
    party = MediaClient("party", tag=41, loud=False)
    evidence = CodeVideoTrack(42)
    party.pc.addTransceiver(evidence, direction="sendonly")
    viewer = MediaClient("clerk", video=False, audio=False)
    await signaling.join(speaker, Role.judge)
    sdp = await join_like_a_browser(node, signaling, party)
    await signaling.join(viewer, Role.clerk)

    camera_id, evidence_id = msid_track_ids(sdp, "video")
    assert evidence_id == evidence.id
    await node.call(
        DeclareTrack(hearing_id=HEARING, participant_id="party", track_id=evidence_id, source=Source.evidence)
    )
    for pid in ("judge", "party"):
        await node.call(SetPublishing(hearing_id=HEARING, participant_id=pid, sources=ALL))
    await node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge", "party")))
    assert await eventually(lambda: node.active_speaker(HEARING) == "judge", within=15)

    def received() -> set[tuple[str, str, str]]:
        return {(t.participant_id, t.kind, t.source.value) for t in viewer.tracks}

    expected = {("judge", "video", "camera"), ("party", "video", "evidence")}
    assert await eventually(lambda: expected <= received(), within=15)
    assert ("party", "video", "camera") not in received()  # last-N=1 left the quiet party's camera out
    evidence_ref = next(t for t in viewer.tracks if t.source is Source.evidence)
    assert evidence_ref.track_id == evidence_id
    assert await eventually(lambda: len(viewer.codes(42)) >= 5, within=15)  # the evidence pictures arrive
    events = [e for e in signaling.events if isinstance(e, TrackPublished) and e.participant_id == "party"]
    published = {(e.track_id, e.source) for e in events}
    assert (evidence_id, Source.evidence) in published
    assert (camera_id, Source.camera) in published
    assert not signaling.failures


async def test_declaration_before_the_offer_applies(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A DeclareTrack sent before the offer (as the web client does) gives the track its source when it arrives."""
    party = MediaClient("party", tag=43, audio=False)
    assert party.video is not None
    track_id = party.video.id
    declare = DeclareTrack(hearing_id=HEARING, participant_id="party", track_id=track_id, source=Source.evidence)
    await join_like_a_browser(node, signaling, party, declare)
    assert await eventually(
        lambda: any(
            isinstance(e, TrackPublished) and e.track_id == track_id and e.source is Source.evidence
            for e in signaling.events
        ),
        within=5,
    )
