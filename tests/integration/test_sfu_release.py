"""The node's receive-side pieces without a network: marker-bit release of frames and speaker detection."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from media.aiortc_compat import padding_packet
from media.passthrough import ReleaseOnMarker, TappedFrame, is_keyframe
from media.speaker import SpeakerDetector


def _vp8(seq: int, ts: int, *, start: bool, marker: bool, body: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=ts, marker=int(marker))
    packet.payload = bytes([0x10 if start else 0x00]) + body
    packet._data = body  # type: ignore[attr-defined]  # what aiortc's depayload leaves on the packet
    return packet


def _buffer(kind: str = "video") -> tuple[ReleaseOnMarker, list[TappedFrame]]:
    out: list[TappedFrame] = []
    return ReleaseOnMarker(kind, lambda pt: "VP8", out.append), out


def test_video_frame_is_released_by_its_marker_packet() -> None:
    """A frame leaves as soon as its marker packet arrives, without waiting for the next frame."""
    buffer, out = _buffer()
    buffer.add(_vp8(10, 3000, start=True, marker=False, body=b"\x00ab"))
    assert out == []
    buffer.add(_vp8(11, 3000, start=False, marker=True, body=b"cd"))
    assert [f.data for f in out] == [b"\x00abcd"]
    assert out[0].rtp_timestamp == 3000
    assert is_keyframe("VP8", out[0].data)


def test_reordered_packets_complete_frames_in_order() -> None:
    """A late packet completes its frame, and a later frame that was already complete follows it."""
    buffer, out = _buffer()
    buffer.add(_vp8(65535, 0, start=True, marker=False, body=b"\x00a"))
    buffer.add(_vp8(1, 3000, start=True, marker=True, body=b"\x01c"))
    assert out == []
    buffer.add(_vp8(0, 0, start=False, marker=True, body=b"b"))
    assert [f.data for f in out] == [b"\x00ab", b"\x01c"]


def test_a_lost_packet_is_skipped_with_picture_loss() -> None:
    """When a missing packet never comes, the buffer skips ahead, reports picture loss and marks the resync."""
    buffer, out = _buffer()
    buffer.add(_vp8(0, 0, start=True, marker=True, body=b"\x00k"))
    buffer.add(_vp8(1, 3000, start=True, marker=False, body=b"\x01x"))
    # seq 2 (end of the frame at 3000) is lost; frames keep coming
    lost = False
    for i in range(3, 12):
        pli, _ = buffer.add(_vp8(i, 3000 * i, start=True, marker=True, body=b"\x01d"))
        lost = lost or pli
    assert lost
    assert out[0].data == b"\x00k"
    assert any(f.resync for f in out[1:])
    assert all(f.rtp_timestamp != 3000 for f in out)
    assert buffer.pending <= 1


def test_a_whole_keyframe_beyond_a_gap_is_released_at_once() -> None:
    """A keyframe that arrives whole after a gap needs nothing before it: it is released at its marker packet, with
    the resync mark, and no picture loss is reported, even when the gap held no packet at all (as when the last
    packets before a pause were lost and never resent: the resumed keyframe used to wait 200 ms, and then be skipped
    with the gap, and the subscriber waited for the next keyframe). A delta frame beyond a gap still waits."""
    buffer, out = _buffer()
    buffer.add(_vp8(0, 0, start=True, marker=True, body=b"\x00k"))
    # seq 1-2 (the frame at 3000) are lost whole; the frame at 6000 is a delta: it waits for the gap.
    buffer.add(_vp8(3, 6000, start=True, marker=True, body=b"\x01d"))
    assert [f.rtp_timestamp for f in out] == [0]
    # A keyframe at 9000 in three packets, its middle one late.
    assert buffer.add(_vp8(4, 9000, start=True, marker=False, body=b"\x00K")) == (False, None)
    assert buffer.add(_vp8(6, 9000, start=False, marker=True, body=b"M")) == (False, None)
    assert [f.rtp_timestamp for f in out] == [0]  # (not whole yet)
    assert buffer.add(_vp8(5, 9000, start=False, marker=False, body=b"L")) == (False, None)
    assert [f.rtp_timestamp for f in out] == [0, 9000]
    assert out[1].data == b"\x00KLM"
    assert out[1].resync
    assert buffer.pending == 0
    buffer.add(_vp8(7, 12000, start=True, marker=True, body=b"\x01e"))
    assert [f.rtp_timestamp for f in out] == [0, 9000, 12000]
    assert not out[2].resync
    # Far beyond (a resume after 45 s, the gap 28 packets): the keyframe goes at once too.
    buffer.add(_vp8(40, 9000 + 90_000 * 45, start=True, marker=False, body=b"\x00P"))
    buffer.add(_vp8(41, 9000 + 90_000 * 45, start=False, marker=True, body=b"Q"))
    assert out[-1].data == b"\x00PQ"


def _padding(seq: int, ts: int) -> RtpPacket:
    """A padding-only packet as the node sends it (``FrameSender.send_media_padding``) and aiortc parses it: no
    payload (the padding is cut off), nothing depayloaded."""
    packet = RtpPacket.parse(padding_packet(96, seq & 0xFFFF, ts, 1234, b"", 1))
    assert packet.payload == b""
    assert packet.padding_size == 1
    packet._data = b""  # type: ignore[attr-defined]
    return packet


def test_padding_on_the_media_stream_takes_sequence_numbers_and_holds_nothing_back() -> None:
    """Padding-only packets on the video stream itself (a sender's probe without RTX, the node's padding on a paused
    video while it waits for a lift) take sequence numbers between frames: the frame after them is released at its
    marker whether the padding came before it, after it or not at all (a lost padding packet is a gap no resend
    fills: before the keyframe that resumes a paused video, the keyframe goes at once), no padding is ever a frame,
    and none is reported as picture loss."""
    buffer, out = _buffer()
    buffer.add(_vp8(0, 0, start=True, marker=True, body=b"\x00k"))
    # Padding in order, then a delta frame: released at its marker.
    for seq in (1, 2, 3):
        assert buffer.add(_padding(seq, 0)) == (False, None)
    assert buffer.pending == 0
    buffer.add(_vp8(4, 3000, start=True, marker=True, body=b"\x01a"))
    assert [f.rtp_timestamp for f in out] == [0, 3000]
    # Padding late, behind the frame after it: the frame waits for it as for any packet, then both go.
    buffer.add(_vp8(6, 6000, start=True, marker=True, body=b"\x01b"))
    assert [f.rtp_timestamp for f in out] == [0, 3000]
    assert buffer.add(_padding(5, 3000)) == (False, None)
    assert [f.rtp_timestamp for f in out] == [0, 3000, 6000]
    assert not any(f.resync for f in out)
    # A paused video's padding, some of it lost (8 and 10), then its resumed keyframe 45 s later: at once.
    buffer.add(_padding(7, 6000))
    buffer.add(_padding(9, 6000))
    buffer.add(_padding(11, 6000))
    later = 6000 + 90_000 * 45
    buffer.add(_vp8(12, later, start=True, marker=False, body=b"\x00K"))
    assert buffer.add(_vp8(13, later, start=False, marker=True, body=b"L")) == (False, None)
    assert [f.rtp_timestamp for f in out] == [0, 3000, 6000, later]
    assert out[-1].data == b"\x00KL"
    assert buffer.pending == 0
    # A delta beyond lost padding still waits (the gap may be media), and a give-up skips to it, not to padding.
    buffer.add(_padding(15, later))
    buffer.add(_vp8(16, later + 3000, start=True, marker=True, body=b"\x01c"))
    assert [f.rtp_timestamp for f in out][-1] == later
    for seq in range(17, 24):
        buffer.add(_vp8(seq, later + 3000 * (seq - 15), start=True, marker=True, body=b"\x01d"))
    assert [f.rtp_timestamp for f in out][4] == later + 3000
    assert out[4].resync
    assert all(f.data for f in out)


def test_audio_is_released_per_packet_and_late_packets_dropped() -> None:
    """Audio leaves packet by packet (no prefetch); a packet older than the last released is dropped."""
    buffer, out = _buffer("audio")
    for seq in (5, 6, 4, 7):
        packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
        packet._data = bytes([seq])  # type: ignore[attr-defined]
        buffer.add(packet)
    assert [f.data for f in out] == [b"\x05", b"\x06", b"\x07"]


def test_speaker_needs_to_lead_for_the_hold_time() -> None:
    """A participant becomes the active speaker only after leading for the hold time, and moves to the front."""
    detector = SpeakerDetector(window=1.0, hold=0.5, silence_dbov=60)
    for pid in ("a", "b"):
        detector.join(pid)
    detector.set_audiences({"a": {"a", "b"}})
    changes = []
    t = 0.0
    while t < 2.0:
        changes.append(detector.observe("b", 10, t))
        detector.observe("a", 127, t)
        t += 0.02
    assert [c for c in changes if c] == [[("a", "b")]]
    assert detector.active_for("a") == "b"
    assert detector.order_for("a") == ["b", "a"]
    first = next(i for i, c in enumerate(changes) if c) * 0.02
    assert first >= 0.5
