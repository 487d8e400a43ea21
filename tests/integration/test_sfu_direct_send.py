"""The node's direct send path (media.sending.FrameSender): NACK -> RTX, sender reports, aiortc-identical packets."""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import AsyncIterator
from typing import Any

import pylibsrtp
import pytest
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
)
from aiortc.rtp import RtcpSrPacket, RtpPacket

from media.aiortc_compat import RTP_HISTORY_SIZE
from media.bandwidth import NACK_MAX_AGE, NackBudget
from media.node import InProcessNode
from media.passthrough import NTP_UNIX_OFFSET, TappedFrame
from media.sending import STALE_NACK_SECONDS, FrameSender, srtp_protector
from media.settings import NodeSettings
from protocol.node import SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing
from tests.sender_fixtures import stand_in_sender

HEARING = "hrg_direct"
TAG = 5
SSRC = 0xDEADBEEF
MID = "3"


@pytest.fixture
async def node() -> InProcessNode:
    return InProcessNode(NodeSettings(node_id="node-direct", direct_send=True))


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


class _Tap:
    """Records, at the RTP/RTCP level, what one receiving transceiver of a subscriber gets."""

    def __init__(self, receiver: Any) -> None:
        self.rtp: list[RtpPacket] = []
        self.reports: list[tuple[float, RtcpSrPacket]] = []
        original_rtp = receiver._handle_rtp_packet
        original_rtcp = receiver._handle_rtcp_packet

        async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            self.rtp.append(packet)
            await original_rtp(packet, arrival_time_ms)

        async def on_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                self.reports.append((time.time(), packet))
            await original_rtcp(packet)

        receiver._handle_rtp_packet = on_rtp
        receiver._handle_rtcp_packet = on_rtcp


async def _forwarding(node: InProcessNode, signaling: DirectSignaling) -> tuple[MediaClient, Any, _Tap]:
    """A publisher forwarded to a receive-only subscriber; the subscriber's video receiver and its tap."""
    pub = MediaClient("judge", tag=TAG)
    sub = MediaClient("clerk", video=False, audio=False)
    await signaling.join(pub, Role.judge)
    await signaling.join(sub, Role.clerk)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=(Source.camera,)))
    await node.call(SetReceiving(hearing_id=HEARING, participant_id="clerk", publishers=("judge",)))
    assert await eventually(lambda: len(sub.codes(TAG)) >= 10, within=15)
    receiver = next(t for t in sub.pc.getTransceivers() if t.kind == "video").receiver
    return sub, receiver, _Tap(receiver)


async def test_nack_is_answered_with_rtx_of_the_nacked_packet(node: InProcessNode, signaling: DirectSignaling) -> None:
    """A subscriber's NACK makes the direct path resend the packet as RTX carrying the original sequence number."""
    _, receiver, tap = await _forwarding(node, signaling)
    assert await eventually(lambda: len(tap.rtp) > 20)
    media = tap.rtp[-5]
    before = len(tap.rtp)
    await receiver._send_rtcp_nack(media.ssrc, [media.sequence_number])

    def rtx_of_nacked() -> list[RtpPacket]:
        return [
            p
            for p in tap.rtp[before:]
            if p.ssrc != media.ssrc and int.from_bytes(p.payload[:2], "big") == media.sequence_number
        ]

    assert await eventually(lambda: bool(rtx_of_nacked()), within=5)
    rtx = rtx_of_nacked()[0]
    assert rtx.payload_type != media.payload_type  # the negotiated RTX payload type, not the media one
    assert rtx.payload[2:] == media.payload
    assert rtx.timestamp == media.timestamp


async def test_sender_report_matches_the_forwarded_stream(node: InProcessNode, signaling: DirectSignaling) -> None:
    """Sender reports name the forwarded SSRC, carry a fresh NTP time and an RTP timestamp of the media sent."""
    _, _, tap = await _forwarding(node, signaling)
    assert await eventually(lambda: len(tap.reports) >= 2 and len(tap.rtp) > 0, within=15)
    arrived, report = tap.reports[-1]
    media_ssrc = tap.rtp[0].ssrc
    assert report.ssrc == media_ssrc
    info = report.sender_info
    assert info.packet_count > 0
    assert info.octet_count > 0
    ntp_unix = (info.ntp_timestamp >> 32) + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32 - NTP_UNIX_OFFSET
    assert 0 <= arrived - ntp_unix < 2  # the last frame sent before the report, not a stale clock
    # The report's RTP timestamp is one the stream carried: that of a packet received up to the report.
    stamps = {p.timestamp for p in tap.rtp if p.ssrc == media_ssrc}
    assert info.rtp_timestamp in stamps


# --- byte identity with aiortc's serialization (no network: the sender's transport is a stand-in) ----------------


def _frame_sender(mime: str, clock_rate: int, payload_type: int, sent: list[bytes]) -> tuple[FrameSender, Any]:
    """A FrameSender over a stand-in sender whose SRTP is the identity and whose socket appends to ``sent``."""
    pair = types.SimpleNamespace(
        protocol=types.SimpleNamespace(transport=types.SimpleNamespace(sendto=lambda data, addr: sent.append(data))),
        remote_addr=("127.0.0.1", 9),
    )
    fake, ext_map = stand_in_sender(
        pair, types.SimpleNamespace(protect=lambda data: data), ssrc=SSRC, mid=MID, kind=mime.split("/")[0]
    )
    fs = FrameSender(fake, None)  # type: ignore[arg-type]
    fs._sendto = lambda protocol: protocol.transport.sendto  # type: ignore[method-assign]
    assert fs._prepare(RTCRtpCodecParameters(mimeType=mime, clockRate=clock_rate, payloadType=payload_type))
    return fs, ext_map


def _reference(
    payload_type: int, sequence: int, timestamp: int, payload: bytes, marker: bool, ours: RtpPacket, ext_map: Any
) -> bytes:
    """What aiortc's own RtpPacket.serialize makes of the same packet (abs-send-time copied from ours)."""
    ref = RtpPacket(payload_type=payload_type, sequence_number=sequence & 0xFFFF, timestamp=timestamp & 0xFFFFFFFF)
    ref.ssrc = SSRC
    ref.payload = payload
    ref.marker = 1 if marker else 0
    ref.extensions.abs_send_time = ours.extensions.abs_send_time
    ref.extensions.mid = MID
    return bytes(ref.serialize(ext_map))


@pytest.mark.parametrize("size", [1, 100, 1295, 1296, 1297, 2592, 4200, 12000, 65000])
@pytest.mark.parametrize("wrap", [False, True])
def test_vp8_packets_are_byte_identical_to_aiortc(size: int, wrap: bool) -> None:
    """VP8 frames of many sizes (and across sequence/timestamp/picture-id wrap) packetize exactly as aiortc does."""
    sent: list[bytes] = []
    fs, ext_map = _frame_sender("video/VP8", 90000, 96, sent)
    seq0, ts0, pid0 = (65534, 0xFFFFFF00, 32766) if wrap else (1000, 5000, 10)
    fs._sequence, fs._timestamp_origin, fs._picture_id = seq0, ts0, pid0
    pids = []
    for n in range(3):  # consecutive frames: the picture id advances (and wraps) as aiortc's does
        data = os.urandom(size)
        sent.clear()
        pts = 3000 * (n + 1)
        fs._send(data, pts, 90000, TappedFrame(data, 1))
        payloads = Vp8Encoder._packetize(data, (pid0 + n) & 0x7FFF)
        assert len(sent) == len(payloads)
        for i, (payload, raw) in enumerate(zip(payloads, sent, strict=True)):
            ours = RtpPacket.parse(raw, ext_map)
            ref = _reference(96, seq0 + i, ts0 + pts, payload, i == len(payloads) - 1, ours, ext_map)
            assert raw == ref, (size, n, i)
        seq0 += len(payloads)
        pids.append(fs._picture_id)
    assert pids == [(pid0 + n + 1) & 0x7FFF for n in range(3)]


@pytest.mark.parametrize("size", [1, 80, 400, 1275])
def test_opus_packets_are_byte_identical_to_aiortc(size: int) -> None:
    """Opus frames go out as one packet each, exactly as aiortc serializes them, timestamps wrapping."""
    sent: list[bytes] = []
    fs, ext_map = _frame_sender("audio/opus", 48000, 111, sent)
    fs._sequence, fs._timestamp_origin = 65535, 0xFFFFFE00
    for n in range(3):
        data = os.urandom(size)
        sent.clear()
        fs._send(data, 960 * n, 48000, TappedFrame(data, 1))
        assert len(sent) == 1
        ours = RtpPacket.parse(sent[0], ext_map)
        assert sent[0] == _reference(111, 65535 + n, 0xFFFFFE00 + 960 * n, data, True, ours, ext_map)


def test_abs_send_time_is_current() -> None:
    """The one field allowed to differ, abs-send-time, is the send time in 6.18 fixed point."""
    sent: list[bytes] = []
    fs, ext_map = _frame_sender("video/VP8", 90000, 96, sent)
    data = os.urandom(50)
    now = time.time() + NTP_UNIX_OFFSET
    fs._send(data, 0, 90000, TappedFrame(data, 1))
    ast = RtpPacket.parse(sent[0], ext_map).extensions.abs_send_time
    expected = int(now * (1 << 18)) & 0xFFFFFF
    assert ast is not None
    assert (ast - expected) & 0xFFFFFF < (1 << 18)  # within a second, modulo the 64 s wrap


def _srtp_twins() -> tuple[pylibsrtp.Session, pylibsrtp.Session, pylibsrtp.Session]:
    """Two sending SRTP sessions with one key (as aiortc makes them), and the receiving side."""
    key = os.urandom(44)

    def policy(ssrc_type: int) -> pylibsrtp.Policy:
        p = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM)
        p.allow_repeat_tx = True
        p.window_size = 1024
        return p

    outbound = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return (
        pylibsrtp.Session(policy(outbound)),
        pylibsrtp.Session(policy(outbound)),
        pylibsrtp.Session(policy(pylibsrtp.Policy.SSRC_ANY_INBOUND)),
    )


def test_fast_srtp_protect_sends_what_pylibsrtp_sends() -> None:
    """The send path's SRTP gives byte for byte what pylibsrtp's protect gives, and the receiver decrypts it."""
    ours, reference, receiver = _srtp_twins()
    fast = srtp_protector(ours.protect)
    assert fast is not ours.protect
    for seq in range(65530, 65540):  # across the sequence wrap (the rollover counter)
        packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=seq * 3000, ssrc=SSRC)
        packet.payload = os.urandom(1 + seq % 1200)
        raw = packet.serialize()
        protected = fast(raw)
        assert protected == reference.protect(raw)
        assert receiver.unprotect(protected) == raw


def test_fast_srtp_protect_raises_pylibsrtp_errors() -> None:
    """A packet SRTP refuses, or one too long, raises pylibsrtp's own error, as the stock protect does."""
    ours, _, _ = _srtp_twins()
    fast = srtp_protector(ours.protect)
    with pytest.raises(pylibsrtp.Error):
        fast(b"\x80\x60")  # shorter than an RTP header
    with pytest.raises(ValueError, match="too long"):
        fast(b"\x80" * 1500)
    assert srtp_protector(bytes) is bytes  # not a pylibsrtp session's protect: used as it is


def test_nacks_of_packets_before_the_last_keyframe_sent_are_not_resent() -> None:
    """With a resend budget, a NACK of a packet from before the last VP8 keyframe sent is refused without spending
    the budget (the keyframe replaces every reference before it); the keyframe's own packets are resent."""
    sent: list[bytes] = []
    fs, _ = _frame_sender("video/VP8", 90000, 96, sent)
    fs.budget = NackBudget(share=0.2)
    fs.budget.set_estimate(300_000)
    internals = fs._internals
    assert internals is not None
    delta = bytes([0x01]) + os.urandom(2500)  # the VP8 frame tag's lowest bit set: an inter frame
    fs._send(delta, 3000, 90000, TappedFrame(delta, 1))
    before = list(sent)
    keyframe = bytes([0x00]) + os.urandom(2500)
    fs._send(keyframe, 6000, 90000, TappedFrame(keyframe, 2))
    of_keyframe = sent[len(before) :]
    assert fs._budget_allows(before[-1], internals) is False
    assert fs.budget.stale == 1
    assert fs.budget.resent == fs.budget.dropped == 0  # refused before the budget: nothing spent, nothing counted
    assert fs._budget_allows(of_keyframe[0], internals) is True
    assert fs.budget.resent == 1
    # Long after the keyframe the rule no longer applies (age and budget decide, as before it).
    assert fs._keyframe_sent is not None
    fs._keyframe_sent = (fs._keyframe_sent[0], time.monotonic() - STALE_NACK_SECONDS - 0.1)
    assert fs._budget_allows(before[-2], internals) is True
    assert fs.budget.stale == 1


async def test_a_paced_packet_is_judged_old_from_when_it_left_the_pacer() -> None:
    """A NACK of a paced packet counts its age from when the packet left the pacer, not by its RTP timestamp against
    the last frame queued (which would count its wait in the pacer too): resent within NACK_MAX_AGE of leaving,
    refused (and counted as too old) after."""
    sent: list[bytes] = []
    fs, _ = _frame_sender("video/VP8", 90000, 96, sent)
    fs.budget = NackBudget(share=0.2)  # (no estimate: only the age decides)
    fs._done = asyncio.get_running_loop().create_future()
    fs._source = types.SimpleNamespace(pace_bps=400_000)
    internals = fs._internals
    assert internals is not None
    first = bytes([0x01]) + os.urandom(6000)
    fs._send(first, 0, 90000, TappedFrame(first, 1))
    assert fs.backlog_bytes > 0  # (it waits in the pacer: 6 kB at 400 kbit/s)
    assert await eventually(lambda: fs.backlog_bytes == 0)
    last = RtpPacket.parse(sent[-1]).sequence_number
    # The next frame queued is 1.2 s later by its RTP timestamp: by that the packet would be past NACK_MAX_AGE.
    later = bytes([0x01]) + os.urandom(200)
    fs._source = types.SimpleNamespace(pace_bps=None)
    fs._send(later, int(90000 * (NACK_MAX_AGE + 0.2)), 90000, TappedFrame(later, 2))
    raw = fs._history[last % RTP_HISTORY_SIZE]
    assert fs._budget_allows(raw, internals) is True
    assert fs.budget.resent == 1
    # One that left longer ago than NACK_MAX_AGE is refused as too old.
    slot = (last - 1) % RTP_HISTORY_SIZE
    held, left = fs._departed[slot]
    fs._departed[slot] = (held, left - NACK_MAX_AGE - 0.1)
    assert fs._budget_allows(fs._history[slot], internals) is False
    assert fs.budget.too_old == fs.budget.dropped == 1
