"""Passthrough is arranged per connection: the node's receivers never decode, every other peer still does."""

from __future__ import annotations

import asyncio

import aiortc.codecs
import aiortc.jitterbuffer
import aiortc.rtcrtpreceiver
from aiortc import RTCRtpReceiver

from media.node import InProcessNode
from media.passthrough import is_tapped
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import MediaClient, eventually, hearing

HEARING = "hrg_passthrough"


async def _connect_directly(sender: MediaClient, receiver: MediaClient) -> None:
    offer = await sender.offer()
    answer = await receiver.answer(offer)
    await sender.accept_answer(answer)


async def test_node_taps_only_its_own_receivers() -> None:
    """With a node forwarding in this process, a plain peer pair still decodes, and node receivers decode nothing."""
    node = InProcessNode(NodeSettings(node_id="node-test"))
    async with hearing(node, HEARING) as signaling:
        pub = MediaClient("judge", tag=11)
        sub = MediaClient("clerk", video=False, audio=False)
        await signaling.join(pub, Role.judge)
        await signaling.join(sub, Role.clerk)
        await node.call(
            SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera, Source.microphone))
        )
        await node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge",)))

        # A pair of peers that never touches the node, in the same process and loop.
        left = MediaClient("left", tag=12)
        right = MediaClient("right", video=False, audio=False)
        try:
            await _connect_directly(left, right)
            assert await eventually(lambda: len(sub.codes(11)) >= 10 and len(right.codes(12)) >= 10, within=15)
            assert await eventually(lambda: right.frames("audio") >= 10)
        finally:
            await left.close()
            await right.close()

        # Nothing module-wide was replaced.
        assert aiortc.rtcrtpreceiver.get_decoder is aiortc.codecs.get_decoder  # type: ignore[attr-defined]
        assert aiortc.rtcrtpreceiver.JitterBuffer is aiortc.jitterbuffer.JitterBuffer  # type: ignore[attr-defined]

        peer = node.peer(HEARING, "judge")
        assert peer is not None
        receivers: list[RTCRtpReceiver] = [t.receiver for t in peer.pc.getTransceivers()]
        assert receivers
        assert all(is_tapped(r) for r in receivers)
        assert not any(is_tapped(t.receiver) for t in sub.pc.getTransceivers())
        await asyncio.sleep(0.2)
        # The node's remote tracks never got a decoded frame: frames went to forwarding instead.
        assert all(r.track._queue.qsize() == 0 for r in receivers)  # type: ignore[attr-defined]
        assert all(t.frames_in > 0 for t in peer.published.values())


async def test_node_announces_only_its_configured_addresses() -> None:
    """The node's ICE candidates are the announced addresses only (loopback in tests), for every peer."""
    node = InProcessNode(NodeSettings(node_id="node-test"))
    async with hearing(node, HEARING) as signaling:
        client = MediaClient("judge", tag=1)
        await signaling.join(client, Role.judge)
        peer = node.peer(HEARING, "judge")
        assert peer is not None
        candidates = [line for line in peer.pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")]
        assert candidates
        assert all(line.split()[4] == "127.0.0.1" for line in candidates)
