"""Simulcast through the real node: a publisher sends its camera in two layers on one m-line, the way a browser does
(a=rid/a=simulcast, one SSRC per layer named by the rtp-stream-id header extension, no a=ssrc lines), next to a
plain evidence video with the same payload type; aiortc subscribers get the layer their tile size calls for.

The publisher is an aiortc peer whose camera sender is replaced by a loop that encodes two sizes of the same
painted picture (a VP8 encoder per layer, the layer's tag painted in) and sends each as its own RTP stream, with a
keyframe every second. What the subscribers decode (size, tag, counter) tells which layer reached them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import itertools
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPsfbPacket, RtpPacket
from av import VideoFrame

from media.forwarding import PublishedTrack
from media.keyframes import Reason
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.node import DeclareTrack, SetPublishing, SetReceiving, SetView, TileSize
from rooms.model import Role, Source
from tests.integration.test_sfu_speakers_and_recorder import CollectingSink
from tests.media_clients import CodeVideoTrack, DirectSignaling, MediaClient, eventually, hearing, paint_code, read_code

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
RRID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_ID, RRID_ID = 10, 11
LAYERS = (("q", 160, 120, 1), ("f", 320, 240, 2))
"""rid, width, height and the tag painted into that layer's pictures."""


class Silent(MediaStreamTrack):
    """A video track that never yields a frame: the camera's own aiortc sender stays idle (the layers go apart)."""

    kind = "video"

    async def recv(self) -> VideoFrame:
        """Wait forever (until stopped)."""
        await asyncio.Future()
        raise MediaStreamError


def with_layers(sdp: str, mid: str) -> str:
    """The publisher's offer with, in its camera m-section, the rid header extensions and two send layers."""
    out: list[str] = []
    current = None
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            current = None
        if line.startswith("a=mid:"):
            current = line[6:]
        out.append(line)
        if current == mid and line.startswith("a=mid:"):
            out += [f"a=extmap:{RID_ID} {RID_URI}", f"a=extmap:{RRID_ID} {RRID_URI}"]
            out += [f"a=rid:{rid} send" for rid, *_ in LAYERS]
            out.append("a=simulcast:send " + ";".join(rid for rid, *_ in LAYERS))
    return "\r\n".join(out)


class SimulcastPublisher(MediaClient):
    """A participant publishing its camera in two simulcast layers (and, optionally, a plain evidence video).

    Like a browser whose estimate grows, it adds the full layer ``full_after`` frames after the quarter one. Once, it
    holds back a packet of the full layer and sends it a frame later as RTX (``repaired-rtp-stream-id``, no
    ``a=ssrc-group``), as a browser answers a NACK.
    """

    def __init__(
        self, name: str, *, full_after: int = 0, resend_at: int | None = None, keyframe_every: int = 15
    ) -> None:
        super().__init__(name, video=False, audio=False)
        self.camera = self.pc.addTransceiver(Silent(), direction="sendonly")
        self.sent: dict[str, int] = {}
        self.full_after = full_after
        self.resend_at = resend_at
        self.resent = 0
        self.keyframe_every = keyframe_every
        """Frames between two keyframes of a layer (0: only its first frame and when a PLI asks)."""
        self.deaf: dict[str, int] = {}
        """PLIs to ignore, by layer (as Chromium ignores one less than 300 ms after its last keyframe)."""
        self.plis: dict[str, int] = {}
        """PLIs received (ignored ones included), by layer."""
        self._asked: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        """The offer with the camera's layers (only the first offer of the connection is munged here)."""
        sdp = await super().offer()
        return with_layers(sdp, str(self.camera.mid))

    def start_layers(self) -> None:
        """Start sending both layers (after the answer)."""
        self._task = asyncio.ensure_future(self._send_layers())

    async def _send_layers(self) -> None:
        transport: Any = self.camera.sender.transport
        assert await eventually(lambda: transport.state == "connected", within=15)
        mid_id = next(e.id for e in self.camera._headerExtensions if e.uri == MID_URI)
        extensions = HeaderExtensionsMap()
        extensions.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI),
                    RTCRtpHeaderExtensionParameters(id=RID_ID, uri=RID_URI),
                    RTCRtpHeaderExtensionParameters(id=RRID_ID, uri=RRID_URI),
                ]
            )
        )
        payload_type = int(next(c.payloadType for c in self.camera._codecs if c.name == "VP8") or 0)
        rtx_type = int(next(c.payloadType for c in self.camera._codecs if c.name == "rtx") or 0)
        rtx_ssrc, rtx_sequence = random.getrandbits(32), random.getrandbits(16)
        held: RtpPacket | None = None
        streams = [
            (rid, width, height, tag, Vp8Encoder(), random.getrandbits(32), random.getrandbits(16))
            for rid, width, height, tag in LAYERS
        ]
        sequence = {rid: seq for rid, *_, seq in streams}
        rids = {ssrc: rid for rid, _, _, _, _, ssrc, _ in streams}
        router: Any = transport._rtp_router
        route_rtcp = router.route_rtcp

        def on_rtcp(packet: Any) -> Any:
            # A PLI to a layer's SSRC (aiortc's own sender knows none of them): a keyframe of that layer next.
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == 1 and packet.media_ssrc in rids:
                rid = rids[packet.media_ssrc]
                self.plis[rid] = self.plis.get(rid, 0) + 1
                if self.deaf.get(rid, 0) > 0:
                    self.deaf[rid] -= 1
                else:
                    self._asked.add(rid)
            return route_rtcp(packet)

        router.route_rtcp = on_rtcp
        started: set[str] = set()
        counter = 0
        while True:
            if held is not None:
                # The held-back packet, now as RTX: original sequence number first, on the layer's RTX stream.
                rtx = RtpPacket(
                    payload_type=rtx_type,
                    marker=held.marker,
                    sequence_number=rtx_sequence,
                    timestamp=held.timestamp,
                    ssrc=rtx_ssrc,
                    payload=held.sequence_number.to_bytes(2, "big") + held.payload,
                )
                rtx.extensions.mid = str(self.camera.mid)
                rtx.extensions.repaired_rtp_stream_id = "f"
                await transport._send_rtp(rtx.serialize(extensions))
                held = None
                self.resent += 1
            for rid, width, height, tag, encoder, ssrc, _ in streams:
                if rid == "f" and counter < self.full_after:
                    continue
                frame = VideoFrame.from_ndarray(paint_code(width, height, tag, counter), format="yuv420p")
                frame.pts = counter * 6000
                frame.time_base = fractions.Fraction(1, 90_000)
                periodic = self.keyframe_every > 0 and counter % self.keyframe_every == 0
                keyframe = periodic or rid not in started or rid in self._asked
                started.add(rid)
                self._asked.discard(rid)
                payloads, timestamp = encoder.encode(frame, force_keyframe=keyframe)
                for i, payload in enumerate(payloads):
                    packet = RtpPacket(
                        payload_type=payload_type,
                        marker=int(i == len(payloads) - 1),
                        sequence_number=sequence[rid],
                        timestamp=(timestamp + ssrc) & 0xFFFFFFFF,  # each layer its own timestamp base
                        ssrc=ssrc,
                        payload=payload,
                    )
                    packet.extensions.mid = str(self.camera.mid)
                    packet.extensions.rtp_stream_id = rid
                    sequence[rid] = (sequence[rid] + 1) & 0xFFFF
                    if rid == "f" and counter == self.resend_at and i == 0:
                        held = packet  # "lost": the frame stays incomplete until its RTX comes
                        continue
                    await transport._send_rtp(packet.serialize(extensions))
                self.sent[rid] = self.sent.get(rid, 0) + 1
            counter += 1
            await asyncio.sleep(1 / 15)

    async def close(self) -> None:
        """Stop the layers, then close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().close()


class Viewer(MediaClient):
    """A subscriber that notes the size and painted code of every decoded frame."""

    def __init__(self, name: str) -> None:
        super().__init__(name, video=False, audio=False)
        self.seen: list[tuple[int, int, int]] = []
        """(width, tag, counter) per decoded video frame."""

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, VideoFrame):
                    tag, counter = read_code(frame)
                    self.seen.append((frame.width, tag, counter))

    def last_tag(self) -> int | None:
        return self.seen[-1][1] if self.seen else None

    async def packets_lost(self) -> int:
        """What the subscriber's receivers count as lost (a sequence number jump would show here)."""
        report = await self.pc.getStats()
        return sum(int(getattr(s, "packetsLost", 0) or 0) for s in report.values() if s.type == "inbound-rtp")


@contextlib.asynccontextmanager
async def simulcast_hearing() -> AsyncIterator[tuple[DirectSignaling, InProcessNode]]:
    node = InProcessNode(NodeSettings(node_id="node-simulcast"))
    async with hearing(node, "hrg_simulcast") as sig:
        yield sig, node


async def seat_viewers(sig: DirectSignaling, node: InProcessNode, *viewers: Viewer) -> PublishedTrack:
    """Join ``viewers`` and let them receive the publisher; the publisher's camera track (its layers inside)."""
    for viewer in viewers:
        await sig.join(viewer)
        await node.call(SetReceiving(hearing_id="hrg_simulcast", participant_id=viewer.name, publishers=("publisher",)))
    peer = node.peer("hrg_simulcast", "publisher")
    assert peer is not None
    return next(t for t in peer.published.values() if t.source is Source.camera)


async def view(node: InProcessNode, viewer: Viewer, mid: str, width: int, height: int) -> None:
    reply = await node.call(
        SetView(
            hearing_id="hrg_simulcast",
            participant_id=viewer.name,
            tiles=(TileSize(mid=mid, width=width, height=height),),
        )
    )
    assert reply.type == "ack", reply


async def test_two_subscribers_get_the_layer_their_tile_needs_and_switch_cleanly() -> None:
    """A big tile gets the full layer, a thumbnail the quarter; growing the thumbnail switches it up without loss."""
    async with simulcast_hearing() as (sig, node):
        publisher = SimulcastPublisher("publisher", full_after=20, resend_at=60)
        evidence = CodeVideoTrack(tag=9)
        publisher.add_track(evidence)
        big, small = Viewer("big"), Viewer("small")
        await sig.join(publisher, Role.judge)
        publisher.start_layers()
        hid = "hrg_simulcast"
        await node.call(
            DeclareTrack(hearing_id=hid, participant_id="publisher", track_id=evidence.id, source=Source.evidence)
        )
        await node.call(
            SetPublishing(hearing_id=hid, participant_id="publisher", sources=(Source.camera, Source.evidence))
        )
        camera = await seat_viewers(sig, node, big, small)
        assert [layer.rid for layer in camera.layers] == ["q", "f"]
        # The recorder starts while only the quarter layer flows, and moves to the full one once it does.
        assert await eventually(lambda: camera.layers[0].frames_in > 3, within=15)
        sink = CollectingSink()
        await node.call(SetReceiving(hearing_id=hid, participant_id="recorder", publishers=("publisher",)))
        node.attach_recorder(hid, "recorder", sink)

        def camera_mid(viewer: Viewer) -> str | None:
            return next((str(t.mid) for t in viewer.tracks if t.source is Source.camera), None)

        assert await eventually(lambda: camera_mid(big) is not None and camera_mid(small) is not None, within=15)
        await view(node, big, str(camera_mid(big)), 1280, 720)
        await view(node, small, str(camera_mid(small)), 120, 90)

        # Routing by mid: the layers (no a=ssrc lines) reach the camera although the evidence has the same PT.
        assert await eventually(lambda: all(layer.frames_in > 10 for layer in camera.layers), within=15)
        assert await eventually(lambda: big.last_tag() == 2 and small.last_tag() == 1, within=15), (
            big.seen[-3:],
            small.seen[-3:],
        )
        assert big.seen[-1][0] == 320
        assert small.seen[-1][0] == 160
        # The evidence (a plain stream) still flows to both.
        assert await eventually(
            lambda: any(tag == 9 for _, tag, _ in big.seen) and any(tag == 9 for _, tag, _ in small.seen), within=10
        )

        # The thumbnail grows: after the up-switch hold, the small viewer gets the full layer from a keyframe on,
        # on the same stream (its receiver counts no loss: no sequence jump).
        switched_at = len(small.seen)
        await view(node, small, str(camera_mid(small)), 1280, 720)
        assert await eventually(lambda: small.last_tag() == 2, within=15)
        camera_frames = [(w, tag, n) for w, tag, n in small.seen[switched_at:] if tag != 9]
        first_full = next(i for i, (_, tag, _) in enumerate(camera_frames) if tag == 2)
        assert all(tag == 1 for _, tag, _ in camera_frames[:first_full])
        assert all(tag == 2 for _, tag, _ in camera_frames[first_full:])
        # Counters go on from where the old layer was (both layers paint the same picture number).
        if first_full > 0:
            assert camera_frames[first_full][2] >= camera_frames[first_full - 1][2]
        assert await small.packets_lost() == 0
        slot = next(s for s in node.peer(hid, "small").slots if s.track.publisher is camera)  # type: ignore[union-attr]
        assert slot.track.layer_switches >= 1
        assert slot.track.rid == "f"
        # Keyframe requests went to the layer switched to, not to every layer.
        assert camera.layers[1].keyframe_requests >= 1

        # The full layer's RTX (named by repaired-rtp-stream-id) filled its gap: no frame given up after loss.
        assert await eventually(lambda: publisher.resent == 1, within=15)
        assert camera.layers[1].keyframe_counts.sent.get(Reason.loss, 0) == 0

        # The recorder: first the quarter layer, then the full one from a keyframe on, all decodable, on one
        # timeline.
        track_id = camera.recording_id
        assert await eventually(
            lambda: any(
                f.track_id == track_id and f.keyframe and f.payload[6:8] == (320).to_bytes(2, "little")
                for f in sink.frames
            ),
            within=15,
        )
        recorded = [f for f in sink.frames if f.track_id == track_id]
        decoder = av.CodecContext.create("vp8", "r")
        decoded = [
            (frame.width, read_code(frame)[0]) for f in recorded for frame in decoder.decode(av.Packet(f.payload))
        ]
        assert len(decoded) == len(recorded)
        assert decoded[0] == (160, 1)
        first_full = decoded.index((320, 2))
        assert all(d == (160, 1) for d in decoded[:first_full])
        assert all(d == (320, 2) for d in decoded[first_full:])
        stamps = [f.rtp_timestamp for f in recorded]
        assert all(0 < (b - a) & 0xFFFFFFFF < 90_000 for a, b in itertools.pairwise(stamps))
        assert not sig.failures


async def test_a_thin_link_steps_the_subscriber_down_a_layer_instead_of_pausing() -> None:
    """With adaptation on, a subscriber whose link turns thin and lossy gets the smaller layer (not a pause) while
    another subscriber keeps the full one; when its link recovers a padding probe shows it and it goes back up."""
    from tests.integration.test_bandwidth_node import Losses, force_estimate

    node = InProcessNode(
        NodeSettings(node_id="node-simulcast-bw", adaptation=True, adapt_hold_seconds=1.0, health_interval=0.5)
    )
    async with hearing(node, "hrg_simulcast") as sig:
        hid = "hrg_simulcast"
        publisher = SimulcastPublisher("publisher")
        thin, wide = Viewer("thin"), Viewer("wide")
        await sig.join(publisher, Role.judge)
        publisher.start_layers()
        await node.call(SetPublishing(hearing_id=hid, participant_id="publisher", sources=(Source.camera,)))
        camera = await seat_viewers(sig, node, thin, wide)
        assert await eventually(lambda: thin.last_tag() == 2 and wide.last_tag() == 2, within=15)
        await asyncio.sleep(2.0)  # a few seconds of each layer's bitrate
        quarter, full = (layer.bitrate(time.monotonic()) for layer in camera.layers)
        assert 0 < quarter < full, (quarter, full)

        # The thin link: REMBs between the two layers' bitrates, and loss.
        forced: dict[int, Any] = {}
        losses = Losses()
        losses.install(thin)
        force_estimate(thin, forced, (quarter + full) // 2)
        losses.every = 0.3
        assert await eventually(lambda: thin.last_tag() == 1, within=15), thin.seen[-3:]
        state = node.bandwidth(hid, "thin")
        assert state is not None
        assert state.paused == ()  # stepped down, not paused
        before = len(thin.seen)
        await asyncio.sleep(1.5)
        assert len(thin.seen) >= before + 10  # and it keeps decoding
        assert thin.last_tag() == 1
        assert wide.last_tag() == 2  # the other subscriber's link is fine: full layer

        # The link recovers: a padding probe the size of the step up shows it carries the full layer again, and the
        # subscriber goes back up at once (without the probe: after the retry hold, RETRY_HOLD once no loss is seen).
        losses.every = None
        force_estimate(thin, forced, None)
        recovered = time.monotonic()
        assert await eventually(lambda: thin.last_tag() == 2, within=40), thin.seen[-3:]
        print(f"\nLAYER_UP back on the full layer {time.monotonic() - recovered:.1f} s after the link recovered")
        losses.stop()
        state = node.bandwidth(hid, "thin")
        assert state is not None
        assert state.probes_succeeded >= 1, state
        assert not sig.failures


async def test_a_layer_switch_whose_keyframe_request_goes_unanswered_asks_again() -> None:
    """A subscriber switching up a layer gets it although the publisher ignored the first keyframe request (a lost
    PLI, or Chromium's rule of no keyframe within 300 ms of the last): the pending switch asks again (fails without
    the re-ask: the slot stays on the old layer for ever, the publisher making keyframes only when asked)."""
    async with simulcast_hearing() as (sig, node):
        publisher = SimulcastPublisher("publisher", keyframe_every=0)
        viewer = Viewer("viewer")
        await sig.join(publisher, Role.judge)
        publisher.start_layers()
        hid = "hrg_simulcast"
        await node.call(SetPublishing(hearing_id=hid, participant_id="publisher", sources=(Source.camera,)))
        await sig.join(viewer)
        await node.call(SetReceiving(hearing_id=hid, participant_id=viewer.name, publishers=("publisher",)))

        def camera_mid() -> str | None:
            return next((str(t.mid) for t in viewer.tracks if t.source is Source.camera), None)

        assert await eventually(lambda: camera_mid() is not None, within=15)
        await view(node, viewer, str(camera_mid()), 120, 90)
        assert await eventually(lambda: viewer.last_tag() == 1, within=15), viewer.seen[-3:]
        asked_before = publisher.plis.get("f", 0)
        publisher.deaf["f"] = 1
        await view(node, viewer, str(camera_mid()), 1280, 720)
        assert await eventually(lambda: viewer.last_tag() == 2, within=20), (viewer.seen[-3:], publisher.plis)
        assert publisher.deaf["f"] == 0  # the first request was ignored
        assert publisher.plis["f"] >= asked_before + 2
        assert not sig.failures
