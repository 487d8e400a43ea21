"""The node's native receive path (media/receiving.py) with real aiortc peers and real SRTP over 127.0.0.1: the
packets and frames the node takes from a publisher are the ones it sent, loss is repaired by NACK and RTX, and the
publisher gets the node's receiver reports and REMB, on the native path as on aiortc's own."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtp import RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket, RtpPacket, is_rtcp

from media import receiving
from media.aiortc_compat import native_estimator, rtp_intake
from media.node import InProcessNode
from media.passthrough import TappedFrame
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_receiving"
TAG = 5

PATHS = [
    pytest.param(
        "native",
        marks=pytest.mark.skipif(receiving.receive_path() != "native", reason="the native receive path is off here"),
    ),
    "aiortc",
]


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    """The receive path the node's connections are set up with."""
    before = receiving.receive_path() == "native"
    receiving.use_native(request.param == "native")
    yield str(request.param)
    receiving.use_native(before)


@pytest.fixture
async def signaling(path: str) -> AsyncIterator[DirectSignaling]:
    node = InProcessNode(NodeSettings(node_id="node-receiving", direct_send=True))
    async with hearing(node, HEARING) as sig:
        yield sig


class Sent:
    """What the publisher's DTLS transport sent: plain RTP (before SRTP) and the RTCP its senders received."""

    def __init__(self, client: MediaClient, drop_every: int = 0) -> None:
        transceivers = client.pc.getTransceivers()
        self.dtls: Any = transceivers[0].sender.transport
        self.video_ssrc = next(int(t.sender._ssrc) for t in transceivers if t.kind == "video")
        self.rtp: list[bytes] = []
        self.dropped: set[int] = set()
        self.rtx: list[bytes] = []
        self.feedback: list[Any] = []
        original_send = self.dtls._send_rtp

        async def send_rtp(data: bytes) -> None:
            if not is_rtcp(data):
                ssrc = int.from_bytes(data[8:12], "big")
                seq = int.from_bytes(data[2:4], "big")
                if ssrc == self.video_ssrc:
                    if drop_every and seq % drop_every == 0 and seq not in self.dropped:
                        self.dropped.add(seq)  # lost on the way: only its retransmission reaches the node
                        self.rtp.append(data)
                        return
                    self.rtp.append(data)
                elif any(ssrc == int(t.sender._ssrc) for t in transceivers):
                    self.rtp.append(data)
                else:
                    self.rtx.append(data)
            await original_send(data)

        dtls: Any = self.dtls
        dtls._send_rtp = send_rtp
        for transceiver in transceivers:
            sender: Any = transceiver.sender
            original_rtcp = sender._handle_rtcp_packet

            async def handle_rtcp(packet: Any, _original: Any = original_rtcp) -> None:
                self.feedback.append(packet)
                await _original(packet)

            sender._handle_rtcp_packet = handle_rtcp

    def nacks(self) -> int:
        return sum(1 for p in self.feedback if isinstance(p, RtcpRtpfbPacket) and p.fmt == 1)

    def rembs(self) -> int:
        return sum(1 for p in self.feedback if isinstance(p, RtcpPsfbPacket) and p.fmt == 15)

    def report_blocks(self, ssrc: int) -> list[Any]:
        return [
            r for p in self.feedback if isinstance(p, RtcpRrPacket | RtcpSrPacket) for r in p.reports if r.ssrc == ssrc
        ]


def _node_receivers(sig: DirectSignaling) -> dict[str, Any]:
    node: Any = sig.node
    peer = node.peer(HEARING, "judge")
    assert peer is not None
    return {str(t.kind): t.receiver for t in peer.pc.getTransceivers() if t.receiver.track is not None}


def _record_frames(receiver: Any) -> list[TappedFrame]:
    frames: list[TappedFrame] = []
    buffer = receiver._courtlink_tapped
    original = buffer._deliver

    def deliver(frame: TappedFrame) -> None:
        frames.append(frame)
        original(frame)

    buffer._deliver = deliver
    return frames


def _sent_frames(sent: list[bytes], ssrc: int) -> dict[int, bytes]:
    """Video frames the publisher packetized, by RTP timestamp, where every packet of the frame was recorded."""
    packets = sorted(
        (p for p in (RtpPacket.parse(d) for d in sent) if p.ssrc == ssrc and p.payload),
        key=lambda p: p.sequence_number,
    )
    by_ts: dict[int, list[RtpPacket]] = {}
    for p in packets:
        by_ts.setdefault(p.timestamp, []).append(p)
    frames: dict[int, bytes] = {}
    for ts, parts in by_ts.items():
        seqs = [p.sequence_number for p in parts]
        whole = parts[-1].marker and all(b == (a + 1) & 0xFFFF for a, b in itertools.pairwise(seqs))
        if whole and vp8_depayload(parts[0].payload) and parts[0].payload[0] & 0x10:
            frames[ts] = b"".join(vp8_depayload(p.payload) for p in parts)
    return frames


async def _publish(sig: DirectSignaling, drop_every: int = 0) -> tuple[MediaClient, MediaClient, Sent]:
    pub = MediaClient("judge", tag=TAG)
    sub = MediaClient("clerk", video=False, audio=False)
    sent = Sent(pub, drop_every)
    await sig.join(pub, Role.judge)
    await sig.join(sub, Role.clerk)
    await sig.node.call(
        SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera, Source.microphone))
    )
    await sig.node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge",)))
    return pub, sub, sent


async def test_the_node_takes_the_packets_and_frames_the_publisher_sent(path: str, signaling: DirectSignaling) -> None:
    """Every RTP packet the node's receive path hands on is, field for field, the one the publisher's aiortc
    packetized (through real SRTP), every video frame the node's tap reassembles is the publisher's frame byte for byte,
    the subscriber decodes; and on the native path the publisher's RTP and RTCP were taken below aiortc's loop."""
    pub, sub, sent = await _publish(signaling)
    receivers = _node_receivers(signaling)
    video_frames = _record_frames(receivers["video"])
    audio_frames = _record_frames(receivers["audio"])
    taken: list[RtpPacket] = []
    intake: Any = rtp_intake(receivers["video"].transport)
    if path == "native":
        assert intake is not None
        native_recv = intake._recv

        def recording(*args: Any) -> Any:
            packet = native_recv(*args)
            if isinstance(packet, RtpPacket):
                taken.append(packet)
            return packet

        intake._recv = recording
    else:
        assert intake is None
    assert await eventually(lambda: len(video_frames) >= 60 and len(audio_frames) >= 100, within=30)
    assert await eventually(lambda: len(sub.codes(TAG)) >= 10, within=20)

    expected = _sent_frames(sent.rtp, sent.video_ssrc)
    compared = [f for f in video_frames if f.rtp_timestamp in expected]
    assert len(compared) >= 50
    for frame in compared:
        assert frame.data == expected[frame.rtp_timestamp]
    audio_sent = {
        (p.ssrc, p.timestamp): p.payload for p in (RtpPacket.parse(d) for d in sent.rtp) if p.ssrc != sent.video_ssrc
    }
    audio_compared = [f for f in audio_frames if any(k[1] == f.rtp_timestamp for k in audio_sent)]
    assert len(audio_compared) >= 80
    for frame in audio_compared:
        assert frame.data in {v for k, v in audio_sent.items() if k[1] == frame.rtp_timestamp}

    if path == "native":
        mapping = receivers["video"].transport._rtp_header_extensions_map
        by_key = {(p.ssrc, p.sequence_number): p for p in (RtpPacket.parse(d, mapping) for d in sent.rtp)}
        matched = [(p, by_key[(p.ssrc, p.sequence_number)]) for p in taken if (p.ssrc, p.sequence_number) in by_key]
        assert len(matched) >= 100
        for got, want in matched:
            # _data is set later, by the receiver (depayloaded)
            fields = {
                k: v for k, v in vars(got).items() if k not in ("extensions", "_data")
            }  # _data: depayloaded later
            assert fields == {k: v for k, v in vars(want).items() if k != "extensions"}
            assert got.extensions == want.extensions
        assert intake.packets >= len(taken) > 0
        assert await eventually(lambda: intake.rtcp > 0, within=10)  # the publisher's sender reports, in C too
        assert receivers["video"].transport._RTCDtlsTransport__rx_packets >= intake.packets
    await pub.close()


async def test_lost_packets_are_nacked_repaired_by_rtx_and_reported(path: str, signaling: DirectSignaling) -> None:
    """With every 12th video packet lost on its way to the node, the node NACKs each, the publisher's RTX resend
    fills the gap, every frame reaches the node's tap whole (byte for byte the publisher's), the subscriber decodes,
    and the publisher gets the node's receiver reports and REMB."""
    pub, sub, sent = await _publish(signaling, drop_every=12)
    video_frames = _record_frames(_node_receivers(signaling)["video"])
    assert await eventually(lambda: len(video_frames) >= 90 and len(sent.dropped) >= 15, within=40)
    assert await eventually(lambda: len(sub.codes(TAG)) >= 20, within=20)
    assert await eventually(lambda: sent.rembs() >= 1 and len(sent.report_blocks(sent.video_ssrc)) >= 2, within=20)
    estimator: Any = _node_receivers(signaling)["video"]._RTCRtpReceiver__remote_bitrate_estimator
    estimator = getattr(estimator, "_estimator", estimator)  # behind the node's RembLimiter (adaptation on)
    if path == "native" and native_estimator() is not None:
        # the REMBs came from the C copy of aiortc's estimator (media/_rate.c), fed below aiortc's loop
        assert type(estimator).__module__ == "media._rate"
        assert sent.video_ssrc in estimator.ssrcs  # with the RTX stream's
    else:
        assert type(estimator).__module__ == "aiortc.rate"
    print(
        f"{path}: {len(sent.dropped)} dropped, {sent.nacks()} NACKs, {len(sent.rtx)} RTX resends, "
        f"{len(video_frames)} frames at the node, {sent.rembs()} REMBs"
    )
    assert sent.nacks() >= len(sent.dropped) // 2
    assert len(sent.rtx) >= len(sent.dropped) // 2
    expected = _sent_frames(sent.rtp, sent.video_ssrc)
    repaired = [
        f
        for f in video_frames
        if f.rtp_timestamp in expected
        and any(
            RtpPacket.parse(d).timestamp == f.rtp_timestamp
            for d in sent.rtp
            if int.from_bytes(d[2:4], "big") in sent.dropped
        )
    ]
    assert len(repaired) >= 5  # frames that lost a packet on the way, and still arrived whole
    for frame in video_frames:
        if frame.rtp_timestamp in expected:
            assert frame.data == expected[frame.rtp_timestamp]
    blocks = sent.report_blocks(sent.video_ssrc)
    assert blocks[-1].highest_sequence > 0
    await pub.close()
