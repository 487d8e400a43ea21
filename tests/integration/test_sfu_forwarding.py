"""Encoded passthrough forwarding through the in-process media node, with real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media.keyframes import Reason
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving, TrackPublished
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_test"
BOTH = (Source.camera, Source.microphone)


@pytest.fixture
async def node() -> InProcessNode:
    return InProcessNode(NodeSettings(node_id="node-test"))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


async def publish(node: InProcessNode, publisher: str, sources: tuple[Source, ...] = BOTH) -> None:
    await node.call(SetPublishing(hearing_id=HEARING, participant_id=publisher, sources=sources))


async def receive(node: InProcessNode, subscriber: str, *publishers: str) -> None:
    await node.call(SetReceiving(hearing_id=HEARING, participant_id=subscriber, publishers=publishers))


async def test_two_subscribers_decode_the_publishers_frames(node: InProcessNode, signaling: DirectSignaling) -> None:
    """Two subscribers decode the publisher's painted frames in order and receive its audio."""
    pub = MediaClient("judge", tag=7)
    subs = [MediaClient(f"sub{i}", video=False, audio=False) for i in range(2)]
    await signaling.join(pub, Role.judge)
    for s in subs:
        await signaling.join(s)
    await publish(node, "judge")
    for s in subs:
        await receive(node, s.name, "judge")
    assert await eventually(lambda: all(len(s.codes(7)) >= 10 for s in subs), within=15)
    assert await eventually(lambda: all(s.frames("audio") >= 10 for s in subs), within=10)
    for s in subs:
        counters = [c for _, c in s.codes(7)]
        assert counters == sorted(counters)
        assert {(t.participant_id, t.kind) for t in s.tracks} == {("judge", "audio"), ("judge", "video")}
    assert not signaling.failures


async def test_h264_is_passed_through(node: InProcessNode, signaling: DirectSignaling) -> None:
    """An H.264 publisher's frames reach a subscriber in H.264 and decode to the painted codes."""
    pub = MediaClient("judge", tag=9, audio=False, video_codec="H264")
    sub = MediaClient("clerk", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(sub, Role.clerk)
    await publish(node, "judge")
    await receive(node, "clerk", "judge")
    assert await eventually(lambda: len(sub.codes(9)) >= 10, within=15)
    published = node.peer(HEARING, "judge")
    assert published is not None
    assert {t.codec_name for t in published.published.values()} == {"H264"}
    assert "H264" in sub.pc.remoteDescription.sdp
    assert "VP8" not in sub.pc.remoteDescription.sdp


async def test_late_joiner_gets_a_keyframe_on_request(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A subscriber joining late decodes at once: the node asks the publisher for a keyframe for it."""
    pub = MediaClient("judge", tag=3, audio=False)
    early = MediaClient("early", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(early)
    await publish(node, "judge")
    await receive(node, "early", "judge")
    assert await eventually(lambda: len(early.codes(3)) >= 45, within=15)
    # aiortc's VP8 encoder makes a keyframe only at the start, every 3000 frames, or when asked.
    node_peer = node.peer(HEARING, "judge")
    assert node_peer is not None
    video = next(t for t in node_peer.published.values() if t.kind == "video")
    assert video.keyframes_in <= 1 + pub.keyframe_requests
    requests_before = pub.keyframe_requests
    late = MediaClient("late", video=False, audio=False)
    await signaling.join(late)
    await receive(node, "late", "judge")
    assert await eventually(lambda: len(late.codes(3)) >= 5, within=15)
    assert pub.keyframe_requests > requests_before
    assert late.codes(3)[0][1] > 40  # it started mid-stream, from the requested keyframe


async def test_subscriber_picture_loss_reaches_the_publisher(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A subscriber's PLI is carried to the publisher (aiortc alone drops it for forwarded frames)."""
    pub = MediaClient("judge", tag=4, audio=False)
    sub = MediaClient("clerk", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(sub, Role.clerk)
    await publish(node, "judge")
    await receive(node, "clerk", "judge")
    assert await eventually(lambda: len(sub.codes(4)) >= 5, within=15)
    before = pub.keyframe_requests
    receiver = next(t.receiver for t in sub.pc.getTransceivers() if t.kind == "video")
    ssrc = receiver.getSynchronizationSources()[0].source

    async def pli_until_answered() -> bool:
        for _ in range(40):
            await receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.1)
            if pub.keyframe_requests > before:
                return True
        return False

    assert await pli_until_answered()

    # Throttled: a burst of requests (PLI storms, gated deltas) reaches the publisher at most once.
    node_peer = node.peer(HEARING, "judge")
    assert node_peer is not None
    video = next(t for t in node_peer.published.values() if t.kind == "video")
    sent = video.keyframe_requests
    for _ in range(20):
        video.request_keyframe(Reason.subscriber)
    assert video.keyframe_requests - sent <= 1


async def test_track_published_events_carry_declared_sources(node: InProcessNode, signaling: DirectSignaling) -> None:
    """Published tracks are reported with their default sources (microphone, camera)."""
    pub = MediaClient("judge", tag=1)
    await signaling.join(pub, Role.judge)
    assert await eventually(lambda: sum(isinstance(e, TrackPublished) for e in signaling.events) == 2)
    kinds = {(e.kind, e.source) for e in signaling.events if isinstance(e, TrackPublished)}
    assert kinds == {("audio", Source.microphone), ("video", Source.camera)}


async def test_late_joiner_decodes_with_aiortcs_own_sender_loop() -> None:
    """With direct_send off (aiortc's stock sender loop) a late joiner is also served a keyframe and decodes."""
    node = InProcessNode(NodeSettings(node_id="node-stock", direct_send=False))
    async with hearing(node, HEARING) as signaling:
        pub = MediaClient("judge", tag=8, audio=False)
        await signaling.join(pub, Role.judge)
        await publish(node, "judge", (Source.camera,))
        await asyncio.sleep(2.0)  # well into the stream: aiortc's encoder makes no keyframe by itself
        late = MediaClient("late", video=False, audio=False)
        await signaling.join(late)
        await receive(node, "late", "judge")
        assert await eventually(lambda: len(late.codes(8)) >= 5, within=15)
        assert late.codes(8)[0][1] > 30
