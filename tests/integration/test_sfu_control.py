"""What signaling's commands make the media node forward: permissions, refusals, bounds; real peers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import (
    Ack,
    AddCandidate,
    ApplyAnswer,
    ApplyOffer,
    ClosePeer,
    CreatePeer,
    DeclareTrack,
    Offer,
    PublishRefused,
    Refused,
    SdpAnswer,
    SetPublishing,
    SetReceiving,
    TrackEnded,
)
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_control"
BOTH = (Source.camera, Source.microphone)
SETTLE = 0.5
"""Seconds without a new packet after which what was already on the wire has landed."""


@pytest.fixture
async def node() -> InProcessNode:
    return InProcessNode(NodeSettings(node_id="node-test", video_queue_frames=8, audio_queue_packets=10))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


async def _receive(node: InProcessNode, subscriber: str, *publishers: str) -> None:
    reply = await node.call(SetReceiving(hearing_id=HEARING, participant_id=subscriber, publishers=publishers))
    assert isinstance(reply, Ack)


async def _settled(client: MediaClient) -> int:
    """The client's RTP packet count once packets already sent have landed (no change for SETTLE seconds)."""
    count = -1
    for _ in range(40):
        if client.rtp_packets() == count:
            break
        count = client.rtp_packets()
        await asyncio.sleep(SETTLE)
    return count


async def test_excluded_subscriber_gets_no_packets_until_readmitted(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """A subscriber taken off the allowed set (consultation) gets zero RTP packets, then resumes when re-added."""
    pub = MediaClient("defendant", tag=5)
    counsel = MediaClient("counsel", video=False, audio=False)
    judge = MediaClient("judge", video=False, audio=False)
    await signaling.join(pub, Role.defendant)
    await signaling.join(counsel, Role.counsel)
    await signaling.join(judge, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="defendant", sources=BOTH))
    await _receive(node, "counsel", "defendant")
    await _receive(node, "judge", "defendant")
    assert await eventually(lambda: judge.frames("video") >= 10 and judge.frames("audio") >= 10, within=15)

    await _receive(node, "judge")  # consultation: the judge may no longer hear or see the defendant
    frozen = await _settled(judge)
    counsel_before = counsel.rtp_packets()
    await asyncio.sleep(1.5)
    assert judge.rtp_packets() == frozen
    assert counsel.rtp_packets() > counsel_before  # the defendant still publishes
    assert await eventually(lambda: judge.tracks == ())

    await _receive(node, "judge", "defendant")
    decoded = len(judge.codes(5))
    assert await eventually(lambda: len(judge.codes(5)) >= decoded + 10, within=15)
    assert await eventually(lambda: judge.rtp_packets("audio") > 0 and len(judge.tracks) == 2)
    assert not signaling.failures


async def test_source_not_allowed_is_not_forwarded(node: InProcessNode, signaling: DirectSignaling) -> None:
    """Without camera in SetPublishing, subscribers get the publisher's audio but no video packets."""
    pub = MediaClient("witness", tag=6)
    sub = MediaClient("judge", video=False, audio=False)
    await signaling.join(pub, Role.witness)
    await signaling.join(sub, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="witness", sources=(Source.microphone,)))
    await _receive(node, "judge", "witness")
    assert await eventually(lambda: sub.rtp_packets("audio") >= 20, within=15)
    assert sub.rtp_packets("video") == 0
    assert [t.kind for t in sub.tracks] == ["audio"]

    await node.call(SetPublishing(hearing_id=HEARING, participant_id="witness", sources=BOTH))
    assert await eventually(lambda: len(sub.codes(6)) >= 5, within=15)


async def test_observer_publishing_is_refused(node: InProcessNode, signaling: DirectSignaling) -> None:
    """An observer who sends media gets PublishRefused and nothing of it is forwarded."""
    observer = MediaClient("observer", tag=8)
    judge = MediaClient("judge", video=False, audio=False)
    await signaling.join(observer, Role.observer)
    await signaling.join(judge, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="observer", sources=()))
    await _receive(node, "judge", "observer")
    assert await eventually(
        lambda: {e.kind for e in signaling.events if isinstance(e, PublishRefused)} == {"audio", "video"}
    )
    await asyncio.sleep(1.0)
    assert judge.rtp_packets() == 0
    assert judge.tracks == ()  # nothing to receive


async def test_declared_source_decides_what_is_allowed(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A video track declared as evidence is forwarded only when evidence is allowed, not camera."""
    pub = MediaClient("prosecutor", tag=2, audio=False)
    sub = MediaClient("judge", video=False, audio=False)
    assert pub.video is not None
    await node.call(CreatePeer(hearing_id=HEARING, participant_id="prosecutor", role=Role.prosecutor))
    await node.call(
        DeclareTrack(hearing_id=HEARING, participant_id="prosecutor", track_id=pub.video.id, source=Source.evidence)
    )
    await signaling.join(pub, Role.prosecutor)
    await signaling.join(sub, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="prosecutor", sources=(Source.camera,)))
    await _receive(node, "judge", "prosecutor")
    await asyncio.sleep(1.0)
    assert sub.rtp_packets("video") == 0
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="prosecutor", sources=(Source.evidence,)))
    assert await eventually(lambda: len(sub.codes(2)) >= 5, within=15)
    assert [t.source for t in sub.tracks] == [Source.evidence]


async def test_bad_commands_are_refused_and_the_node_keeps_working(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """Malformed SDP, unknown peers and bad candidates get Refused; nothing breaks."""
    unknown = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="nobody", sdp="v=0"))
    assert isinstance(unknown, Refused)
    assert unknown.code == "no_such_peer"
    await node.call(CreatePeer(hearing_id=HEARING, participant_id="clerk", role=Role.clerk))
    for sdp in ("", "garbage", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"):
        reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="clerk", sdp=sdp))
        assert isinstance(reply, Refused)
        assert reply.code == "invalid_sdp"
    answer = await node.call(ApplyAnswer(hearing_id=HEARING, participant_id="clerk", sdp="v=0"))
    assert isinstance(answer, Refused)
    assert answer.code == "no_offer_pending"
    candidate = await node.call(AddCandidate(hearing_id=HEARING, participant_id="clerk", candidate="candidate:x"))
    assert isinstance(candidate, Refused)
    assert candidate.code == "invalid_candidate"
    closed = await node.call(ClosePeer(hearing_id=HEARING, participant_id="clerk"))
    assert isinstance(closed, Ack)
    again = await node.call(ClosePeer(hearing_id=HEARING, participant_id="clerk"))
    assert isinstance(again, Refused)
    assert again.code == "no_such_peer"

    pub = MediaClient("judge", tag=1, audio=False)
    sub = MediaClient("clerk", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(sub, Role.clerk)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=BOTH))
    await _receive(node, "clerk", "judge")
    assert await eventually(lambda: len(sub.codes(1)) >= 5, within=15)


async def test_stalled_subscriber_queues_stay_bounded(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A subscriber that never answers (nothing drains its senders) holds at most the queue bound; offers cross."""
    pub = MediaClient("judge", tag=1)
    await signaling.join(pub, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=BOTH))
    stalled = MediaClient("stalled", video=False, audio=False)
    await node.call(CreatePeer(hearing_id=HEARING, participant_id="stalled", role=Role.observer))
    reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="stalled", sdp=await stalled.offer()))
    assert isinstance(reply, SdpAnswer)  # never applied by the client: ICE never connects
    await _receive(node, "stalled", "judge")
    assert await eventually(
        lambda: any(isinstance(e, Offer) and e.participant_id == "stalled" for e in signaling.events)
    )
    peer = node.peer(HEARING, "stalled")
    assert peer is not None
    assert await eventually(lambda: sum(s.track.dropped for s in peer.slots) > 20, within=15)
    for slot in peer.slots:
        assert slot.track.queued <= slot.track.bound
    # The node's offer is unanswered: a crossing client offer is refused, not applied.
    glare = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="stalled", sdp=await pub.offer()))
    assert isinstance(glare, Refused)
    assert glare.code == "renegotiation_pending"
    await stalled.close()


async def test_offer_without_a_common_codec_changes_nothing(node: InProcessNode, signaling: DirectSignaling) -> None:
    """An offer whose only codec the node lacks is refused before aiortc creates anything."""
    client = MediaClient("clerk", tag=1, audio=False)
    await node.call(CreatePeer(hearing_id=HEARING, participant_id="clerk", role=Role.clerk))
    offer = await client.offer()
    foreign = "\r\n".join(
        line.replace("VP8/90000", "AV1/90000") if line.startswith("a=rtpmap:") else line
        for line in offer.splitlines()
        if not line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")) or "VP8" in line
    )
    reply = await node.call(ApplyOffer(hearing_id=HEARING, participant_id="clerk", sdp=foreign))
    assert isinstance(reply, Refused)
    assert reply.code == "unsupported_codec"
    peer = node.peer(HEARING, "clerk")
    assert peer is not None
    assert peer.pc.getTransceivers() == []
    assert peer.pc.signalingState == "stable"
    await client.close()


async def _witness_to_judge(node: InProcessNode, signaling: DirectSignaling) -> MediaClient:
    """A witness publishes camera and microphone to the judge; the judge's client, once both tracks and 3 video
    frames arrived."""
    pub = MediaClient("witness", tag=3)
    sub = MediaClient("judge", video=False, audio=False)
    await signaling.join(pub, Role.witness)
    await signaling.join(sub, Role.judge)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="witness", sources=BOTH))
    await _receive(node, "judge", "witness")
    assert await eventually(lambda: len(sub.tracks) == 2)
    assert await eventually(lambda: sub.frames("video") >= 3, within=15)
    return sub


async def test_closed_publisher_ends_its_tracks_everywhere(node: InProcessNode, signaling: DirectSignaling) -> None:
    """When a publisher leaves, its tracks end (TrackEnded) and subscribers are told they receive nothing."""
    sub = await _witness_to_judge(node, signaling)
    await node.call(ClosePeer(hearing_id=HEARING, participant_id="witness"))
    published = {t.track_id for t in sub.tracks}
    assert await eventually(lambda: {e.track_id for e in signaling.events if isinstance(e, TrackEnded)} == published)
    assert await eventually(lambda: sub.tracks == ())


async def test_a_close_cut_short_by_a_cancel_does_not_hang_the_next_close(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """A peer's close cancelled midway (a command's timeout, a shutdown) still ends, and the node's close after it.

    aiortc's ``close()`` sets a future at its end that a second ``close()`` waits on: cut short, it never would.
    """
    sub = await _witness_to_judge(node, signaling)
    peer = node.peer(HEARING, "witness")
    assert peer is not None
    first = asyncio.ensure_future(peer.close())
    for _ in range(3):  # into aiortc's close: its transceivers are stopping
        await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    reply = await asyncio.wait_for(node.call(ClosePeer(hearing_id=HEARING, participant_id="witness")), 30)
    assert isinstance(reply, Ack)
    assert peer.pc.connectionState == "closed"
    assert await eventually(lambda: sub.tracks == ())
    assert node.peer(HEARING, "judge") is not None  # the others go on
