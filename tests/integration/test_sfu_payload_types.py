"""Node re-offers keep the payload types and header extension ids a client negotiated (real aiortc peers)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription

from media.ice import restrict_host_candidates
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import ApplyOffer, CreatePeer, Offer, SdpAnswer, SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import LOOPBACK, DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_pt"
BOTH = (Source.camera, Source.microphone)

# Chromium-like numbering instead of aiortc's (opus 96, VP8 97, RTX 98; extensions mid 1, audio level 2,
# abs-send-time 3).
PT_MAP = {"audio": {96: 111}, "video": {97: 100, 98: 101}}
EXT_MAP = {1: 4, 2: 5, 3: 6}


def munge(sdp: str) -> str:
    """Renumber an aiortc offer's Opus/VP8/RTX payload types and extension ids to Chromium-like ones."""
    head, *sections = sdp.split("\r\nm=")
    out = []
    for body in sections:
        kind = body.split(" ", 1)[0]
        pts = PT_MAP.get(kind, {})

        def pt(match: re.Match[str], pts: dict[int, int] = pts) -> str:
            return str(pts.get(int(match.group(0)), int(match.group(0))))

        lines = body.split("\r\n")
        first = lines[0].split(" ")
        lines[0] = " ".join(first[:3] + [str(pts.get(int(f), int(f))) for f in first[3:]])
        fixed = [lines[0]]
        for line in lines[1:]:
            line = re.sub(r"(?<=^a=rtpmap:)\d+|(?<=^a=fmtp:)\d+|(?<=^a=rtcp-fb:)\d+|(?<=apt=)\d+", pt, line)
            line = re.sub(r"(?<=^a=extmap:)\d+", lambda m: str(EXT_MAP.get(int(m.group(0)), m.group(0))), line)
            fixed.append(line)
        out.append("\r\n".join(fixed))
    return "\r\nm=".join([head, *out])


def numbers(sdp: str, mid: str) -> tuple[dict[str, int], dict[str, int]]:
    """The payload type of each codec name and the id of each extension URI in one m-line."""
    media = next(m for m in SessionDescription.parse(sdp).media if m.rtp.muxId == mid)
    codecs = {c.name.lower(): int(c.payloadType or 0) for c in media.rtp.codecs}
    return codecs, {str(e.uri): int(e.id) for e in media.rtp.headerExtensions}


@pytest.fixture
async def node() -> InProcessNode:
    return InProcessNode(NodeSettings(node_id="node-pt"))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


async def join_munged(node: InProcessNode, sig: DirectSignaling, client: MediaClient) -> str:
    """Join with an offer renumbered like Chromium's; returns the node's answer."""
    sig.clients[client.name] = client
    await node.call(CreatePeer(hearing_id=HEARING, participant_id=client.name, role=Role.judge))
    restrict_host_candidates(client.pc, LOOPBACK)
    offer = await client.pc.createOffer()
    await client.pc.setLocalDescription(RTCSessionDescription(sdp=munge(offer.sdp), type="offer"))
    reply = await node.call(
        ApplyOffer(hearing_id=HEARING, participant_id=client.name, sdp=client.pc.localDescription.sdp)
    )
    assert isinstance(reply, SdpAnswer), reply
    await client.accept_answer(reply.sdp)
    return reply.sdp


async def test_reoffer_keeps_the_clients_numbers_and_media_flows(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """After a node re-offer to a client that used VP8 100/Opus 111 and other extension ids, numbers and media stay."""
    a = MediaClient("judge", tag=21, video_codec="VP8")
    answer = await join_munged(node, signaling, a)
    first = {mid: numbers(answer, mid) for mid in ("0", "1")}
    assert first["0"][0]["opus"] == 111
    assert first["1"][0]["vp8"] == 100
    assert first["1"][0]["rtx"] == 101
    assert first["1"][1]["urn:ietf:params:rtp-hdrext:sdes:mid"] == 4

    b = MediaClient("clerk", tag=22)
    await signaling.join(b, Role.clerk)
    for pid in ("judge", "clerk"):
        await node.call(SetPublishing(hearing_id=HEARING, participant_id=pid, sources=BOTH))
    await node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge",)))
    assert await eventually(lambda: len(b.codes(21)) >= 5, within=15)

    # A second publisher to receive: the node re-offers to the judge, adding slots.
    await node.call(SetReceiving(hearing_id=HEARING, participant_id="judge", publishers=("clerk",)))
    assert await eventually(lambda: len(a.codes(22)) >= 5, within=15)
    offers = [e.sdp for e in signaling.events if isinstance(e, Offer) and e.participant_id == "judge"]
    assert offers
    for sdp in offers:
        for mid in ("0", "1"):
            assert numbers(sdp, mid) == first[mid]
        # New slots reuse the connection's numbers: no codec or extension collision within the bundle.
        for media in SessionDescription.parse(sdp).media:
            codecs, extensions = numbers(sdp, str(media.rtp.muxId))
            assert codecs.get("vp8", 100) == 100
            assert codecs.get("opus", 111) == 111
            assert extensions.get("urn:ietf:params:rtp-hdrext:sdes:mid", 4) == 4
            assert extensions.get("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time", 6) == 6
    # The judge's media still flows to the clerk after the renegotiation, in the judge's numbering.
    seen = len(b.codes(21))
    assert await eventually(lambda: len(b.codes(21)) >= seen + 10, within=15)
    assert await eventually(lambda: b.frames("audio") >= 10, within=10)
    node_peer = node.peer(HEARING, "judge")
    assert node_peer is not None
    received = {str(t.mid): t for t in node_peer.pc.getTransceivers()}
    assert received["1"]._codecs[0].payloadType == 100
    assert received["0"]._codecs[0].payloadType == 111
    assert not signaling.failures
