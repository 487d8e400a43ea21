"""Encoded passthrough on one aiortc receiver: reassembled frames go to the SFU, never to a decoder.

aiortc's ``RTCRtpReceiver`` reassembles frames in its jitter buffer and hands
them to a decoder thread. :func:`tap_receiver` replaces, on one receiver
instance and before its ``receive()`` starts, the jitter buffer with
:class:`ReleaseOnMarker`: it releases video on the RTP marker bit and audio
per packet (the stock buffer holds video one frame and audio four packets)
and delivers every frame straight to the SFU on the event loop, returning
none to aiortc. The decoder thread still starts (aiortc starts it
unconditionally) but idles until end of stream; no decoder is ever created.

Nothing module-wide is patched: every other receiver in the process, the test
clients' included, still decodes. Everything else of the receiver stays
aiortc's own: SRTP, statistics, receiver reports, NACK, RTX, REMB. The
receiver internals this needs (its jitter buffer, codecs, RTCP handler, the
depayloaded packet bytes) are reached through :mod:`media.aiortc_compat`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver

from media.aiortc_compat import (
    JitterFrame,
    RtcpByePacket,
    RtcpSrPacket,
    RtpPacket,
    install_jitter_buffer,
    receiver_codec_name,
    rtp_depayloaded,
    wrap_rtcp_handler,
)

NTP_UNIX_OFFSET = 2_208_988_800
"""Seconds from the NTP epoch (1900) to the Unix epoch (1970)."""

_MAX_PENDING = 512
"""Video packets held while a frame is incomplete (NACK may still fill the gap) before giving up on it."""

_MAX_HOLD_TICKS = 90_000 // 5
"""An incomplete video frame is given up once a frame 200 ms (90 kHz ticks) newer arrives."""

_TAPPED = "_courtlink_tapped"


def _seq_gt(a: int, b: int) -> bool:
    """RTP sequence ``a`` is after ``b`` (16-bit wrap-around)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


def _ts_diff(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, signed."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


def starts_frame(codec_name: str, payload: bytes) -> bool:
    """Whether an RTP payload is the first packet of an encoded video frame (when the codec tells)."""
    if not payload:
        return False
    if codec_name == "VP8":
        # VP8 payload descriptor: S bit set on the first packet of partition 0.
        return bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0
    if codec_name == "H264":
        nal_type = payload[0] & 0x1F
        if nal_type == 24 and len(payload) > 3:  # STAP-A: look at its first NAL unit
            nal_type = payload[3] & 0x1F
        # Access unit delimiter or sequence parameter set: how keyframes and many frames start.
        return nal_type in (7, 9)
    return False


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether a reassembled encoded frame can be decoded on its own."""
    if codec_name == "VP8":
        # VP8 frame tag: the lowest bit of the first byte is 0 on a key frame (RFC 6386 9.1).
        return bool(data) and not data[0] & 0x01
    if codec_name == "H264":
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F in (5, 7):  # IDR slice or sequence parameter set
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
        return False
    return True


class TappedFrame(JitterFrame):
    """A reassembled frame that also keeps its RTP timestamp (aiortc rewrites ``timestamp`` to start at 0)."""

    def __init__(self, data: bytes, timestamp: int, keyframe_hint: bool = False) -> None:
        super().__init__(data=data, timestamp=timestamp)
        self.rtp_timestamp = timestamp
        self.arrival = time.time()
        self.resync = keyframe_hint
        self.payloads: dict[str, list[bytes]] = {}
        """RTP payloads made from ``data`` by codec, made once and shared by every subscriber's sender."""
        self.origin: object | None = None
        """The source of frames it came from (its published track, or the simulcast layer): set by that source."""


class ReleaseOnMarker:
    """Drop-in for aiortc's ``JitterBuffer``: releases a video frame as soon as its marker packet completes it.

    Frames leave strictly in order. A frame missing a packet waits for NACK
    retransmission until a frame 200 ms newer arrives or too many packets pile
    up; then the buffer skips to the next frame start and reports picture loss
    (to ``on_picture_lost`` if given, else as aiortc's ``pli_flag``, which makes
    aiortc send a PLI itself), and the frame after the gap carries ``resync`` so
    the SFU holds delta frames until a keyframe. Audio is released packet by
    packet, old or duplicate packets dropped.
    """

    def __init__(
        self,
        kind: str,
        codec_name: Callable[[int], str],
        deliver: Callable[[TappedFrame], None],
        on_picture_lost: Callable[[], None] | None = None,
    ) -> None:
        self._video = kind == "video"
        self._deliver = deliver
        self._on_picture_lost = on_picture_lost
        self._codec_name = codec_name
        self._packets: dict[int, RtpPacket] = {}
        self._next: int | None = None  # first sequence number of the next frame to release
        # Sequence number of the held packet nearest ``_next``, kept up to date as packets arrive; None when
        # ``_next`` moved (and so packets left): recomputed once then, not per packet.
        self._oldest: int | None = None
        self._resync = False
        self._max_seq: int | None = None
        self._last_audio: int | None = None
        self.on_packet: Callable[[RtpPacket], None] | None = None

    @property
    def capacity(self) -> int:
        """Packets held at most (aiortc reads it for statistics only)."""
        return _MAX_PENDING

    @property
    def pending(self) -> int:
        """Packets held now."""
        return len(self._packets)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Take one depayloaded packet and deliver what it completes; return (picture lost, None).

        Completed frames go straight to ``deliver`` (in order, several at once
        after a retransmission fills a gap), so aiortc never queues them for
        its decoder thread.
        """
        if self.on_packet is not None:
            self.on_packet(packet)
        if not self._video:
            if self._last_audio is None or _seq_gt(packet.sequence_number, self._last_audio):
                self._last_audio = packet.sequence_number
                self._deliver(TappedFrame(rtp_depayloaded(packet), packet.timestamp))
            return False, None
        return self._add_video(packet), None

    def _add_video(self, packet: RtpPacket) -> bool:
        seq = packet.sequence_number
        if not packet.payload:
            self._padding(seq, packet)
            return False
        if self._next is None:
            if starts_frame(self._codec_name(packet.payload_type), packet.payload):
                self._next = seq
                self._oldest = None
            else:
                if packet.marker:
                    # Joined mid-frame: start with the frame after this one.
                    self._next = (seq + 1) & 0xFFFF
                    self._oldest = None
                    self._resync = True
                return False
        # Per packet, so the 16-bit comparisons are written out (_seq_gt, _distance) rather than called.
        nxt = self._next
        ahead = (seq - nxt) & 0xFFFF
        if ahead >= 0x8000:
            return False  # already released or skipped
        packets = self._packets
        packets[seq] = packet
        oldest = self._oldest
        if oldest is not None and ahead < ((oldest - nxt) & 0xFFFF):
            self._oldest = seq
        latest = self._max_seq
        newest = latest is None or (seq != latest and ((seq - latest) & 0xFFFF) < 0x8000)
        if newest:
            self._max_seq = seq
        # A frame can only complete with its marker packet or with a packet that fills a gap.
        if packet.marker or not newest:
            if self._release():
                return False
            if ahead and (start := self._keyframe_at(seq)) is not None:
                # A whole keyframe beyond the gap: it needs nothing before it, so the frames in the gap are given up
                # now, not once a frame 200 ms newer came (when the gap held no packet, the give-up skipped the
                # keyframe too: a paused video resumed behind such a gap came back a second late, at the next).
                for held in [s for s in packets if (s - nxt) & 0xFFFF < (start - nxt) & 0xFFFF]:
                    del packets[held]
                self._next = start
                self._oldest = None
                self._resync = True
                self._release()
                return False
        if len(packets) < _MAX_PENDING:
            first = packets.get(nxt)
            if first is not None and first.timestamp == packet.timestamp:
                return False  # a packet of the frame being completed: nothing waited too long (as _gave_up says)
        if self._gave_up(packet):
            self._release()
            if self._on_picture_lost is not None:
                # The node's keyframe requests go through one throttle per track (media.keyframes).
                self._on_picture_lost()
                return False
            return True
        return False

    def _padding(self, seq: int, packet: RtpPacket) -> None:
        """A padding-only packet: it takes a sequence number of the stream and carries nothing (a sender's probe
        sent on the media stream, as libwebrtc does without RTX, or the node's lift watch on a paused video,
        media.sending.FrameSender.send_media_padding). At the head it is passed over at once; beyond a gap it is
        held as a filler that :meth:`_take_frame` passes over, so the frame after it waits for no more than the gap
        before it. Never a frame start for a give-up (:meth:`_gave_up`)."""
        nxt = self._next
        if nxt is None:
            return
        ahead = (seq - nxt) & 0xFFFF
        if ahead >= 0x8000:
            return
        if ahead:
            if len(self._packets) < _MAX_PENDING:
                self._packets[seq] = packet
            return
        self._next = (seq + 1) & 0xFFFF
        self._oldest = None
        self._release()

    def _keyframe_at(self, seq: int) -> int | None:
        """The first sequence number of the frame held packet ``seq`` belongs to, if that frame is whole (from a
        packet that starts a frame to its marker) and a keyframe; else None."""
        packets = self._packets
        packet = packets[seq]
        timestamp = packet.timestamp
        start = seq
        while not starts_frame(self._codec_name(packet.payload_type), packet.payload):
            start = (start - 1) & 0xFFFF
            packet = packets.get(start)  # type: ignore[assignment]
            if packet is None or packet.timestamp != timestamp:
                return None
        first = packet
        parts = [rtp_depayloaded(first)]
        end = start
        while not packet.marker:
            end = (end + 1) & 0xFFFF
            packet = packets.get(end)  # type: ignore[assignment]
            if packet is None or packet.timestamp != timestamp:
                return None
            parts.append(rtp_depayloaded(packet))
        return start if is_keyframe(self._codec_name(first.payload_type), b"".join(parts)) else None

    def _release(self) -> bool:
        released = False
        while self._next is not None and (frame := self._take_frame()) is not None:
            self._deliver(frame)
            released = True
        return released

    def _take_frame(self) -> TappedFrame | None:
        """Release the next frame if all its packets, up to the marker, are here."""
        assert self._next is not None
        seq = self._next
        first = self._packets.get(seq)
        while first is not None and not first.payload:  # a padding filler (_padding): passed over
            del self._packets[seq]
            seq = self._next = (seq + 1) & 0xFFFF
            self._oldest = None
            first = self._packets.get(seq)
        if first is None:
            return None
        parts: list[bytes] = []
        while True:
            packet = self._packets.get(seq)
            if packet is None or packet.timestamp != first.timestamp:
                return None
            parts.append(rtp_depayloaded(packet))
            if packet.marker:
                break
            seq = (seq + 1) & 0xFFFF
        for s in range(len(parts)):
            self._packets.pop((self._next + s) & 0xFFFF, None)
        self._next = (seq + 1) & 0xFFFF
        self._oldest = None
        frame = TappedFrame(b"".join(parts), first.timestamp, keyframe_hint=self._resync)
        self._resync = False
        return frame

    def _distance(self, seq: int) -> int:
        """How far a sequence number lies after ``_next`` (modulo 2**16)."""
        assert self._next is not None
        return (seq - self._next) & 0xFFFF

    def _oldest_held(self) -> RtpPacket:
        """The held packet nearest ``_next``: O(1) unless ``_next`` itself is missing right after a release."""
        assert self._next is not None
        first = self._packets.get(self._next)
        if first is not None:
            return first
        if self._oldest is None:
            self._oldest = min(self._packets, key=self._distance)
        return self._packets[self._oldest]

    def _gave_up(self, newest: RtpPacket) -> bool:
        """Skip an incomplete frame that waited too long; True if something was skipped."""
        assert self._next is not None
        oldest = self._oldest_held()
        if len(self._packets) < _MAX_PENDING and _ts_diff(newest.timestamp, oldest.timestamp) < _MAX_HOLD_TICKS:
            return False
        # Resume at the first held packet that starts a frame after the gap: right after a marker packet.
        ordered = sorted(self._packets, key=lambda s: (s - self._next) & 0xFFFF)  # type: ignore[operator]
        restart: int | None = None
        for s in ordered:
            before = self._packets.get((s - 1) & 0xFFFF)
            packet = self._packets[s]
            if not packet.payload:
                continue  # (a padding filler starts no frame)
            begins = (before is not None and before.marker) or starts_frame(
                self._codec_name(packet.payload_type), packet.payload
            )
            if begins and packet.timestamp != oldest.timestamp:
                restart = s
                break
        if restart is None:
            self._packets.clear()
            self._next = None
            self._oldest = None
            self._max_seq = None
        else:
            for s in ordered:
                if s == restart:
                    break
                del self._packets[s]
            self._next = restart
            self._oldest = None
        self._resync = True
        return True


@dataclass(frozen=True, slots=True)
class ReportTimes:
    """The NTP and RTP times of one received RTCP sender report."""

    ssrc: int
    ntp_time: float
    rtp_timestamp: int


@dataclass
class ReceiverTap:
    """What a tapped receiver calls, on the event loop; every callback must return at once."""

    on_frame: Callable[[TappedFrame], None]
    on_packet: Callable[[RtpPacket], None]
    on_sender_report: Callable[[ReportTimes], None]
    on_bye: Callable[[], None]
    on_picture_lost: Callable[[], None] | None = None
    """A video frame was given up after loss; None: aiortc sends its own PLI to the remote sender."""


def tap_receiver(receiver: RTCRtpReceiver, kind: str, tap: ReceiverTap) -> ReleaseOnMarker:
    """Turn one not yet started receiver into an encoded-frame source (idempotent); return its buffer."""
    existing: ReleaseOnMarker | None = getattr(receiver, _TAPPED, None)
    if existing is not None:
        return existing

    buffer = ReleaseOnMarker(kind, receiver_codec_name(receiver), tap.on_frame, tap.on_picture_lost)
    buffer.on_packet = tap.on_packet
    install_jitter_buffer(receiver, buffer)
    wrap_rtcp_handler(receiver, lambda original_rtcp: _reporting_rtcp(original_rtcp, tap))
    setattr(receiver, _TAPPED, buffer)
    return buffer


def _reporting_rtcp(
    original_rtcp: Callable[[Any], Awaitable[None]], tap: ReceiverTap
) -> Callable[[Any], Awaitable[None]]:
    async def handle_rtcp(packet: Any) -> None:
        # aiortc keeps sender reports to itself; the recorder needs their NTP <-> RTP mapping.
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            tap.on_sender_report(
                ReportTimes(
                    ssrc=packet.ssrc,
                    ntp_time=(info.ntp_timestamp >> 32)
                    + (info.ntp_timestamp & 0xFFFFFFFF) / (1 << 32)
                    - NTP_UNIX_OFFSET,
                    rtp_timestamp=info.rtp_timestamp,
                )
            )
        elif isinstance(packet, RtcpByePacket):
            tap.on_bye()
        await original_rtcp(packet)

    return handle_rtcp


def is_tapped(receiver: RTCRtpReceiver) -> bool:
    """Whether :func:`tap_receiver` was applied to this receiver."""
    return getattr(receiver, _TAPPED, None) is not None


class LayerDemux:
    """Drop-in for aiortc's ``JitterBuffer`` on a receiver that gets a browser's simulcast layers.

    Each layer is its own RTP stream (SSRC), named by the ``rtp-stream-id`` header extension on its first packets.
    Packets are sorted by SSRC into one :class:`ReleaseOnMarker` per layer, so each layer reassembles its own
    frames and is, to the forwarding code, its own source of frames (its own taps). A packet of an SSRC not yet
    named (its first packets lost) is dropped until one names it. Sender reports go to the layer of their SSRC.
    """

    def __init__(
        self,
        codec_name: Callable[[int], str],
        layers: dict[str, ReceiverTap],
        on_packet: Callable[[RtpPacket], None],
    ) -> None:
        self._codec_name = codec_name
        self._layers = layers
        self._on_packet = on_packet
        self._by_ssrc: dict[int, tuple[ReleaseOnMarker, ReceiverTap]] = {}
        self._ssrc_of: dict[str, int] = {}
        self.unnamed = 0
        """Packets dropped because no packet of their SSRC had named its layer yet."""

    @property
    def capacity(self) -> int:
        """Packets held at most (aiortc reads it for statistics only)."""
        return _MAX_PENDING

    def ssrc_of(self, rid: str) -> int | None:
        """The SSRC a layer arrives on (None before its first named packet)."""
        return self._ssrc_of.get(rid)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Hand the packet to its layer's buffer; a layer's frames go straight to that layer's tap."""
        entry = self._by_ssrc.get(packet.ssrc)
        if entry is None:
            rid = packet.extensions.rtp_stream_id
            tap = self._layers.get(rid) if rid is not None else None
            if tap is None:
                self.unnamed += 1
                return False, None
            old = self._ssrc_of.get(rid)
            if old is not None:
                self._by_ssrc.pop(old, None)  # the layer restarted on a new SSRC
            buffer = ReleaseOnMarker("video", self._codec_name, tap.on_frame, tap.on_picture_lost)
            buffer.on_packet = tap.on_packet
            entry = self._by_ssrc[packet.ssrc] = (buffer, tap)
            self._ssrc_of[rid] = packet.ssrc
        self._on_packet(packet)
        return entry[0].add(packet)

    def on_sender_report(self, report: ReportTimes) -> None:
        """A sender report: to the layer whose SSRC it is about."""
        entry = self._by_ssrc.get(report.ssrc)
        if entry is not None:
            entry[1].on_sender_report(report)


def tap_layers(
    receiver: RTCRtpReceiver,
    layers: dict[str, ReceiverTap],
    on_packet: Callable[[RtpPacket], None],
    on_bye: Callable[[], None],
) -> LayerDemux:
    """Turn one not yet started video receiver of a simulcast m-line into one frame source per layer (``layers``
    by rid); ``on_packet`` sees every packet of every layer (the track's own counts). Idempotent."""
    existing = getattr(receiver, _TAPPED, None)
    if isinstance(existing, LayerDemux):
        return existing
    demux = LayerDemux(receiver_codec_name(receiver), layers, on_packet)
    install_jitter_buffer(receiver, demux)
    tap = ReceiverTap(
        on_frame=lambda frame: None, on_packet=on_packet, on_sender_report=demux.on_sender_report, on_bye=on_bye
    )
    wrap_rtcp_handler(receiver, lambda original_rtcp: _reporting_rtcp(original_rtcp, tap))
    setattr(receiver, _TAPPED, demux)
    return demux
