"""The media node's send path, native (media/_fastpath.c) and Python, with real aiortc peers over 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from media.node import InProcessNode
from media.sending import FrameSender, send_path, use_native
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_fastpath"
TAG = 7

try:
    from media import _fastpath
except ImportError:
    _fastpath = None  # type: ignore[assignment]

PATHS = [
    pytest.param("native", marks=pytest.mark.skipif(_fastpath is None, reason="the native loop is not built here")),
    "python",
]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """The send path the node's senders start with."""
    before = send_path() == "native"
    use_native(request.param == "native")
    yield str(request.param)
    use_native(before)


@pytest.fixture
async def signaling(path: str) -> AsyncIterator[DirectSignaling]:
    node = InProcessNode(NodeSettings(node_id="node-fastpath", direct_send=True))
    async with hearing(node, HEARING) as sig:
        yield sig


def _frame_senders(sig: DirectSignaling, participant_id: str) -> list[FrameSender]:
    node: Any = sig.node
    peer = node.peer(HEARING, participant_id)
    assert peer is not None
    return [s.track._sender for s in peer.slots if s.track._sender is not None]


async def test_media_and_nack_resends_flow_on_the_chosen_send_path(path: str, signaling: DirectSignaling) -> None:
    """A subscriber decodes the publisher's video and hears its audio through the node on either send path, and a
    NACK is answered with an RTX resend of the packet the chosen path sent (its history)."""
    pub = MediaClient("judge", tag=TAG)
    sub = MediaClient("clerk", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(sub, Role.clerk)
    await signaling.node.call(
        SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera, Source.microphone))
    )
    await signaling.node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge",)))
    started = time.monotonic()
    assert await eventually(lambda: len(sub.codes(TAG)) >= 10 and sub.frames("audio") >= 20, within=20)
    print(f"{path}: 10 decoded video frames and 20 audio frames after {time.monotonic() - started:.2f} s")
    senders = _frame_senders(signaling, "clerk")
    assert {s._sender.kind for s in senders} == {"audio", "video"}
    for fs in senders:
        assert fs.native is (path == "native")
        assert fs.frames_sent > 0
        # Every frame went through the chosen loop (none handed back on a quiet loopback).
        assert fs.native_frames == (fs.frames_sent if path == "native" else 0)

    receiver: Any = next(t for t in sub.pc.getTransceivers() if t.kind == "video").receiver
    seen: list[RtpPacket] = []
    original = receiver._handle_rtp_packet

    async def tap(packet: RtpPacket, arrival_time_ms: int) -> None:
        seen.append(packet)
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = tap
    assert await eventually(lambda: len(seen) > 20, within=10)
    media = seen[-5]
    before = len(seen)
    await receiver._send_rtcp_nack(media.ssrc, [media.sequence_number])

    def resent() -> list[RtpPacket]:
        return [
            p
            for p in seen[before:]
            if p.ssrc != media.ssrc and int.from_bytes(p.payload[:2], "big") == media.sequence_number
        ]

    assert await eventually(lambda: bool(resent()), within=5)
    rtx = resent()[0]
    assert rtx.payload[2:] == media.payload
    assert rtx.timestamp == media.timestamp
    assert rtx.marker == media.marker
    codes = len(sub.codes(TAG))
    assert await eventually(lambda: len(sub.codes(TAG)) > codes + 10, within=10)  # and media goes on
