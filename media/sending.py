"""A lean RTP send path for one subscriber slot: frames go out synchronously, packetized once per publisher frame.

aiortc's ``RTCRtpSender._run_rtp`` costs about 100 µs of CPU per forwarded
packet on the node (measured with py-spy, ``bench/forwarding.py`` at N=16): a
task wake-up per frame and subscriber, an ``av.Packet`` and ``Fraction`` per
frame, then per packet two ``datetime``-based NTP clock reads, an
``RtpPacket`` with a ``HeaderExtensions`` object, header-extension
serialization, and four nested coroutine calls down to ``sendto``.

:func:`install` replaces, on one sender instance only, its ``_run_rtp`` (and
``_retransmit``, which must read the history this path keeps). The
replacement does not loop: it attaches a :class:`FrameSender` to the slot's
:class:`~media.forwarding.ForwardedTrack`, which from then on calls
:meth:`FrameSender.send` straight from the publisher's receive path, on the
event loop: no queue, no per-frame task wake-up, no per-packet await. Per
frame, the codec payloads are made once and shared by every subscriber of the
publisher (VP8: the frame is chunked once and each subscriber adds its own
4-byte payload descriptor with its own picture id; other codecs: the codec's
``pack()`` output); the header-extension block (mid, abs-send-time) is made
once per frame and subscriber. Per packet and subscriber remain what must
differ: the 12-byte header (SSRC, sequence number, timestamp, marker), SRTP,
``sendto``. Measured the same way, this path cost 43-47 µs per packet, about
70% of it SRTP and the kernel's ``sendto``; the packets are byte for byte
those aiortc would send, but for abs-send-time, read once per frame. SRTP
then skips pylibsrtp's Python wrapper (:func:`srtp_protector`), and the
``sendto`` and the per-packet prefix are made once per connection and frame:
about 15% less node CPU at N=32 in an A/B run. ``bench/forwarding.py`` (N=32,
against Janus in the same run): 11-18 µs of node CPU per forwarded packet, a
quarter of it the ``sendto`` system call (docs/operations.md, "Benchmarks").

What aiortc's sender still does itself: the parsing of RTCP that reaches it, NACK
handling (served by :meth:`FrameSender.retransmit` from this path's history,
RTX-wrapped when negotiated), PLI/FIR (``Peer`` carries them to the publisher),
REMB. Its sender reports are made from the counters this path keeps up to date:
by the node's one timer (:mod:`media.reports`) on the node's senders, by
aiortc's own task per sender elsewhere (the network-check probe).

A publisher frame goes to all its subscribers at once (:mod:`media.fanout`): each sender the native loop serves
adds its *lane* (:meth:`FrameSender.send_batched`: socket, address, SRTP session, history, payload type, SSRC,
extension template, made once per connection) to a :class:`NativeBatch`, and one ``_fastpath.send_lanes`` call
makes each subscriber's timestamp, prefixes and packets, sends them and advances its sequence number, picture id
and counters; what it cannot send comes back to this module's Python loop.

The aiortc/aioice internals this needs (the sender's private state, the DTLS
transport's SRTP session, aioice's nominated pair) are reached through
:mod:`media.aiortc_compat` (:class:`~media.aiortc_compat.SenderInternals`,
resolved once when the sender starts); if one is missing then, the stock loop
runs instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import av
import structlog
from aiortc import RTCRtpSender

from media.aiortc_compat import (
    RTP_HISTORY_SIZE,
    HeaderExtensions,
    RtpPacket,
    SenderInternals,
    datagram_socket,
    direct_sendto,
    get_encoder,
    padding_packet,
    random16,
    random32,
    replace_rtp_loop,
    sender_enabled,
    sender_rtt,
    wrap_rtx,
)
from media.bandwidth import NackBudget, PacingBucket, RepairTrigger, ResendGuard
from media.passthrough import NTP_UNIX_OFFSET

if TYPE_CHECKING:
    from media.passthrough import TappedFrame

try:
    from media import _fastpath
except ImportError:  # not built (no C compiler where it was installed): the Python loop sends
    _fastpath = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)

SEND_PATH_ENV = "COURTLINK_SEND_PATH"
"""Set to ``python`` to make the node send through the Python loop even where the native one is built (A/B)."""

_native = _fastpath is not None and os.environ.get(SEND_PATH_ENV, "") != "python"

GSO_ENV = "COURTLINK_UDP_GSO"
"""Set to ``0`` to make the native loop send one datagram per packet instead of one per run of equal-size packets
of a frame with UDP segmentation offload (the wire is the same; packet filters on the node's host see one packet
per run with it)."""

_gso = os.environ.get(GSO_ENV, "") != "0"


def send_path() -> str:
    """``native`` if senders started from now on send each frame with one C call (``media/_fastpath.c``), else
    ``python`` (the module is not built, or ``COURTLINK_SEND_PATH=python``). The bytes sent are the same."""
    return "native" if _native else "python"


def use_gso(on: bool) -> None:
    """Whether native senders started from now on use UDP segmentation offload (tests and the bench; see
    :data:`GSO_ENV`)."""
    global _gso
    _gso = on


def node_send_path(direct_send: bool) -> str:
    """What a node with ``NodeSettings.direct_send`` so set sends through: :func:`send_path`, or ``aiortc``."""
    return send_path() if direct_send else "aiortc"


_announced = False


def _announce() -> None:
    """Log, once per process, which loop the first direct sender sends through (then every sender, until
    :func:`use_native` changes it)."""
    global _announced
    if not _announced:
        _announced = True
        log.info(
            "send_path_selected", send_path=send_path(), native_built=_fastpath is not None, udp_gso=_native and _gso
        )


def use_native(on: bool) -> None:
    """Choose the send path of senders started from now on (``on`` needs the native module; tests and the bench)."""
    global _native
    _native = on and _fastpath is not None


VP8_PACKET_MAX = 1300
"""aiortc's VP8 payload size limit (``codecs/vpx.py`` ``PACKET_MAX``), descriptor included."""

_VP8_DESCRIPTOR = struct.Struct("!BBH")
"""VP8 payload descriptor as aiortc writes it: X=1, S, PID=0; I=1; 15-bit picture id (RFC 7741 4.2)."""

_VP8_CHUNK = VP8_PACKET_MAX - _VP8_DESCRIPTOR.size

_RTP_HEADER = struct.Struct("!BBHLL")

SEQUENCE_JUMP = 600
"""How far a slot's RTP sequence number jumps when it takes another publisher, or the same one anew
(``media.forwarding.ForwardedTrack.assign``; see :meth:`FrameSender.skip`). A bandwidth pause's resume keeps its
numbers: it starts again at a keyframe, which a browser's receive buffer, and ``media.passthrough.ReleaseOnMarker``,
release beyond any gap the pause left (stock aiortc's buffer would wait behind it, as below).

aiortc's video jitter buffer holds 512 packets and releases frames strictly in sequence order: a packet the
subscriber dropped right after a pause (its receiver not yet enabled) leaves a hole that stalls it until 512
newer packets have come, about 17 s at 30 fps, and NACK cannot fill a hole it never saw open. A jump of more
than 512 makes it restart at the first packet that arrives. Other receivers see a burst of loss, which they
answer at most with a keyframe request (the node sends a keyframe first anyway).
"""

_NTP_SCALE = float(1 << 32)

STALE_NACK_SECONDS = 2.0
"""Seconds after a video keyframe went to a subscriber with a resend budget during which its NACKs of packets sent
before that keyframe are not answered (a resend would mend nothing; afterwards ``NACK_MAX_AGE`` refuses them
anyway)."""

PADDING_SIZE = 255
"""Bytes of padding in one probe packet: the most an RTP padding count can say."""

MEDIA_PADDING_KEPT = 4096
"""Sequence numbers of padding sent on a media stream that a sender remembers, to tell their NACKs apart
(``FrameSender.padded_within``): some 8 s at the lift watch's rate."""

_LANE_EXT_MAX = 256
"""The longest header-extension block ``_fastpath.send_lanes`` takes (``EXT_MAX`` in ``media/_fastpath.c``)."""

_SRTP_MAX_TRAILER = 144
"""libsrtp's ``SRTP_MAX_TRAILER_LEN`` (auth tag and MKI), the room pylibsrtp leaves after a packet."""


class FrameSource(Protocol):
    """What :class:`FrameSender` is attached to: the slot's forwarded track."""

    @property
    def readyState(self) -> str:
        """``live`` until the track ends."""
        ...

    def attach(self, sender: FrameSender | None) -> None:
        """Send frames through ``sender`` from now on (``None``: queue them again); flush what is queued."""
        ...

    @property
    def pace_bps(self) -> int | None:
        """Bandwidth adaptation: spread this video's packets at this rate (None: send each frame at once)."""
        ...

    def stop(self) -> None:
        """End the track."""
        ...


def shared_payloads(frame: TappedFrame, key: str, make: Callable[[bytes], list[bytes]]) -> list[bytes]:
    """The payloads of ``frame`` packed by ``make``, computed once per frame and shared by all its subscribers."""
    cache = frame.payloads
    payloads = cache.get(key)
    if payloads is None:
        payloads = cache[key] = make(frame.data)
    return payloads


def vp8_chunks(data: bytes) -> list[bytes]:
    """Split a VP8 frame into the pieces aiortc's packetizer puts after each 4-byte payload descriptor."""
    return [data[pos : pos + _VP8_CHUNK] for pos in range(0, len(data), _VP8_CHUNK)]


class FrameSender:
    """The RTP side of one ``RTCRtpSender`` that carries forwarded frames (see the module docstring)."""

    # What media/_fastpath.c reads and writes per frame (fan_hot, send_lanes): slots, each a fixed offset; everything
    # else in the instance dict.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_clock_rate",
        "_codec_key",
        "_hot",
        "_keyframe_sent",
        "_lane",
        "_paced",
        "_picture_id",
        "_sender",
        "_sequence",
        "_timestamp_origin",
        "_vp8",
        "frames_sent",
        "native_frames",
        "packets_sent",
    )

    def __init__(self, sender: RTCRtpSender, source: FrameSource) -> None:
        self._sender = sender
        self._source = source
        self._original_run: Callable[[Any], Awaitable[None]] | None = None  # aiortc's own loop, set by install()
        self._internals: SenderInternals | None = None
        self._done: asyncio.Future[None] | None = None
        self._history: dict[int, bytes] = {}
        self._payload_type = 0
        self._codec_key = ""
        self._vp8 = False
        self._clock_rate = 0
        self._encoder: Any = None
        self._sequence = 0
        self._timestamp_origin = 0
        self._picture_id = 0
        self._ext_template = b""
        self._ext_abs_offset = -1
        self._ext_map: Any = None
        self._mid: str | None = None
        self._ext_dynamic = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._protocol: Any = None  # the ICE pair's protocol _sendto_fn was made for
        self._sendto_fn: Callable[[bytes, Any], None] | None = None
        self._srtp_session: Any = None  # the SRTP session _protect was made for
        self._protect: Callable[[bytes], bytes] | None = None
        self.native = False
        """Whether this sender sends through ``media._fastpath`` (decided when it starts; see :func:`send_path`)."""
        self._native_srtp: tuple[int, int, int] | None = None  # libsrtp session, srtp_protect, longest packet
        self._native_socket: tuple[Any, int] | None = None  # the pair's asyncio transport and its socket's fd
        self._addr: Any = None  # the remote address _sockaddr was made for
        self._sockaddr: bytes | None = None
        self._lane: tuple[Any, ...] | None = None
        """What ``_fastpath.send_lanes`` needs that changes only with the connection (:meth:`_lane_config`)."""
        self._hot: tuple[Any, ...] | None = None
        """``(lane, link state, transport)``: what ``_fastpath.fan_hot`` checks at each frame to send through the lane
        without :meth:`_ready_lane` (the lane is still this sender's, the link unchanged, the socket's buffer empty)."""
        self.gso = False
        """Whether the native loop hands the kernel a frame's equal-size packets as one UDP_SEGMENT send (until the
        socket refuses it)."""
        self.frames_sent = 0
        self.packets_sent = 0
        """Packets sent or handed to the pacer (:attr:`packets_departed`: only those that left it)."""
        self.native_frames = 0
        """Frames whose packets the native loop sent (all or some of them; ``media._fastpath``)."""
        self.budget: NackBudget | None = None
        """The subscriber's resend budget (bandwidth adaptation); None: every NACK is answered, as aiortc does."""
        self.on_unrepairable: Callable[[], None] | None = None
        """Called when this video keeps losing packets it cannot resend (ask the publisher for a keyframe)."""
        self._repair = RepairTrigger()
        self._resends = ResendGuard()
        self._pacer: PacingBucket | None = None
        self._paced: collections.deque[tuple[bytes, float]] = collections.deque()
        self._pace_timer: asyncio.TimerHandle | None = None
        self._departed: dict[int, tuple[bytes, float]] = {}
        """By history slot: the paced packet (the history's own bytes) that left the pacer last from it, and when
        (``time.monotonic()``): a NACK's age counts from there (``media.bandwidth.NACK_MAX_AGE``)."""
        self.padding_sent = 0
        """Padding-only packets sent for bandwidth probes (:meth:`send_padding`)."""
        self.media_padding_sent = 0
        """Padding-only packets sent on the media stream itself (:meth:`send_media_padding`)."""
        self._padded: dict[int, float] = {}
        """Sequence numbers of the last :data:`MEDIA_PADDING_KEPT` of those, and when each left (monotonic)."""
        self.resends = 0
        """Packets resent after the subscriber's NACKs."""
        self._keyframe_sent: tuple[int, float] | None = None
        """The sequence number of the first packet of the last VP8 keyframe sent, and when (None: none lately, or
        the frames since went through the native lane, whose sequence numbers Python does not follow)."""

    @property
    def next_sequence(self) -> int:
        """The sequence number the next packet of the stream gets (the native lane's included)."""
        return self._sequence

    @property
    def enabled(self) -> bool:
        """Whether the transceiver's direction lets the sender send now (aiortc's ``_enabled``)."""
        return sender_enabled(self._sender)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def run(self, codec: Any) -> None:
        """Stand-in for ``RTCRtpSender._run_rtp``: attach to the track and wait until the sender stops."""
        if not self._prepare(codec):
            log.warning("fast_sender_unavailable", kind=self._sender.kind)
            assert self._original_run is not None
            await self._original_run(codec)
            return
        sender = self._sender
        internals = self._internals
        assert internals is not None
        internals.started()
        self._done = asyncio.get_running_loop().create_future()
        try:
            self._source.attach(self)
            if self._source.readyState != "live":
                self.close("track_ended")  # the stock loop also ends at once on an ended track
            await self._done
        except asyncio.CancelledError:
            pass
        finally:
            self._source.attach(None)
            # As the stock loop does on exit: stop the track, so its publisher stops feeding it.
            if sender.track is not None:
                sender.track.stop()
            internals.exited()

    def _prepare(self, codec: Any) -> bool:
        """Resolve everything the send path needs once; False if this aiortc/aioice lacks a piece."""
        try:
            internals = SenderInternals(self._sender)
        except AttributeError:
            return False
        self._internals = internals
        self.native = _native
        self.gso = _native and _gso
        _announce()
        ext_map, mid = internals.extensions_map, internals.mid
        self._payload_type = int(codec.payloadType)
        self._clock_rate = int(codec.clockRate)
        self._codec_key = str(codec.mimeType).lower()
        self._vp8 = self._codec_key == "video/vp8"
        if not self._vp8:
            self._encoder = get_encoder(codec)
        self._sequence = int(random16()) % 32768  # lower half, as aiortc: avoids early wrap-arounds (SRTP)
        self._timestamp_origin = int(random32())
        self._picture_id = int(random16()) % (1 << 15)
        # The extension block differs per frame only in abs-send-time: find its 3 bytes once.
        low = _extension_block(ext_map, mid, 0)
        high = _extension_block(ext_map, mid, 0xFFFFFF)
        self._ext_template = low
        self._ext_map, self._mid = ext_map, mid
        self._ext_dynamic = low != high
        diff = [i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b] if len(low) == len(high) else []
        self._ext_abs_offset = diff[0] if len(diff) == 3 and diff[2] - diff[0] == 2 else -1
        return True

    def skip(self, count: int) -> None:
        """Leave ``count`` sequence numbers unused before the next packet (a new start for the subscriber)."""
        self._sequence = (self._sequence + count) & 0xFFFF

    def close(self, reason: str) -> None:
        """End the send path (the sender's RTP task then exits as the stock one would)."""
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None
        self._paced.clear()
        if self._done is not None and not self._done.done():
            if reason != "track_ended":
                log.info("fast_sender_stopped", kind=self._sender.kind, reason=reason)
            self._done.set_result(None)

    def _failed(self, exc: Exception) -> bool:
        """Close the path after a failed send (called in the ``except`` block); always False. Never lets one
        subscriber's failure reach the publisher's receive path."""
        if isinstance(exc, ConnectionError):
            self.close("connection_lost")
        else:
            log.exception("fast_sender_failed", kind=self._sender.kind)
            self.close("failed")
        return False

    # --- sending -----------------------------------------------------------------------------------

    def send(self, data: bytes, pts: int, clock_rate: int, frame: TappedFrame | None) -> bool:
        """Packetize and send one encoded frame now; False if the connection is gone (the path then closes).

        ``frame`` is the publisher's frame when ``data`` is its payload unchanged: its packetization is
        shared with the other subscribers.
        """
        try:
            self._send(data, pts, clock_rate, frame)
        except Exception as exc:
            return self._failed(exc)
        return True

    def send_batched(
        self, data: bytes, pts: int, clock_rate: int, frame: TappedFrame, batch: NativeBatch
    ) -> bool | None:
        """:meth:`send`, but where the native loop would send the frame, its call joins ``batch`` instead (one C call
        for all the subscribers of a publisher frame, :mod:`media.fanout`): None then, and :meth:`NativeBatch.run`
        finishes it. Otherwise what :meth:`send` returns, the frame sent (or not) already."""
        try:
            lane = self._ready_lane()
            if lane is not None:
                if clock_rate != self._clock_rate:
                    pts = pts * self._clock_rate // clock_rate
                chunks = self._hot_chunks(frame)
                self._keyframe_sent = None
                batch.add_lane(self, lane, pts, chunks)
                return None
            queued = self._send(data, pts, clock_rate, frame, batch)
        except Exception as exc:
            return self._failed(exc)
        return None if queued else True

    def _finish_batched(self, left: Any, rest_of_send: tuple[Any, ...]) -> bool:
        """What :meth:`send` does after the native call, for a frame sent by :meth:`NativeBatch.run` (``left``: what
        ``send_frame`` returned for it, or the exception it raised)."""
        try:
            if isinstance(left, BaseException):
                raise left
            self._after_native(left, *rest_of_send)
        except Exception as exc:
            return self._failed(exc)
        return True

    def _send(
        self, data: bytes, pts: int, clock_rate: int, frame: TappedFrame | None, batch: NativeBatch | None = None
    ) -> bool:
        """Send one frame; True if its native call joined ``batch`` (then :meth:`_after_native` finishes it)."""
        internals = self._internals
        assert internals is not None
        addr = self._relink()
        srtp, sendto = self._protect, self._sendto_fn
        assert srtp is not None
        assert sendto is not None
        if clock_rate != self._clock_rate:
            pts = pts * self._clock_rate // clock_rate
        timestamp = (self._timestamp_origin + pts) & 0xFFFFFFFF
        ntp = int((time.time() + NTP_UNIX_OFFSET) * _NTP_SCALE)
        ext = self._ext_template
        if self._ext_abs_offset >= 0:
            at = self._ext_abs_offset
            ext = ext[:at] + ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big") + ext[at + 3 :]
        elif self._ext_dynamic:
            ext = _extension_block(self._ext_map, self._mid, (ntp >> 14) & 0xFFFFFF)
        first_byte = 0x90 if ext else 0x80

        if self._vp8:
            chunks = shared_payloads(frame, "vp8", vp8_chunks) if frame is not None else vp8_chunks(data)
            if not chunks:
                return False
            pid = 0x8000 | self._picture_id
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            # The payload descriptor and the fixed header fields go in one prefix per packet: the first
            # packet's descriptor has S=1, the others S=0 (RFC 7741 4.2).
            head = ext + _VP8_DESCRIPTOR.pack(0x90, 0x80, pid)
            rest = ext + _VP8_DESCRIPTOR.pack(0x80, 0x80, pid)
            octets = len(data) + _VP8_DESCRIPTOR.size * len(chunks)
        else:
            chunks = shared_payloads(frame, self._codec_key, self._pack) if frame is not None else self._pack(data)
            if not chunks:
                return False
            head = rest = ext
            octets = sum(map(len, chunks))

        seq = self._sequence
        if self._vp8 and not data[0] & 0x01:  # a VP8 keyframe (its frame tag; vp8_chunks refused an empty frame)
            self._keyframe_sent = (seq, time.monotonic())
        ssrc = internals.ssrc
        pt = self._payload_type
        pace: int | None = getattr(self._source, "pace_bps", None)  # (tests drive a FrameSender without a source)
        paced = pace is not None or bool(self._paced)
        srtp_ctx, native_socket, sockaddr = self._native_srtp, self._native_socket, self._sockaddr
        if (
            not paced
            and srtp_ctx is not None
            and native_socket is not None
            and sockaddr is not None
            and not native_socket[0].get_write_buffer_size()
            and not native_socket[0].is_closing()
        ):
            # One C call builds, records, protects and sends the frame's packets (media/_fastpath.c). What it
            # hands back (a send that would block or failed, a packet it cannot protect) goes on as below.
            args = (
                native_socket[1],
                sockaddr,
                srtp_ctx[0],
                srtp_ctx[1],
                srtp_ctx[2],
                self._history,
                RTP_HISTORY_SIZE,
                chunks,
                head,
                rest,
                first_byte,
                pt,
                seq,
                timestamp,
                ssrc,
                self.gso,
            )
            rest_of_send = (chunks, head, rest, first_byte, seq, timestamp, ssrc, addr, ntp, octets)
            if batch is not None:
                batch.add(self, args, rest_of_send)
                return True
            self._after_native(_fastpath.send_frame(*args), *rest_of_send)
            return False
        self._send_packets(chunks, 0, head, rest, first_byte, seq, timestamp, ssrc, pace, paced, addr)
        self._sent(chunks, seq, timestamp, ntp, octets)
        return False

    def _relink(self) -> Any:
        """The remote address of the connection now; ConnectionError if the transport is gone. What is made per
        connection (SRTP, the send function, the native socket and address, the lane) is made again if it changed."""
        internals = self._internals
        assert internals is not None
        protect, protocol, addr = internals.link()  # ConnectionError if the transport is gone
        # Both are made once per connection, not per frame: the SRTP session and the ICE pair rarely change.
        session = getattr(protect, "__self__", protect)
        if session is not self._srtp_session:
            self._srtp_session, self._protect = session, srtp_protector(protect)
            self._native_srtp = native_srtp(protect) if self.native else None
            self._lane = None
        if protocol is not self._protocol:
            self._protocol, self._sendto_fn = protocol, self._sendto(protocol)
            self._native_socket = datagram_socket(protocol) if self.native else None
            self._lane = None
        if addr is not self._addr and addr != self._addr:  # (a new pair or session: a new tuple)
            self._addr = addr
            self._sockaddr = native_sockaddr(addr) if self.native else None
            self._lane = None
        return addr

    def _lane_config(self) -> tuple[Any, ...] | None:
        """What ``_fastpath.send_lanes`` needs of this sender that changes only with the connection (see
        ``media/_fastpath.c``, ``send_lane``); None where the lane does not apply (the Python loop, a relayed pair,
        abs-send-time not at a fixed place, a module built before lanes)."""
        srtp_ctx, native_socket, sockaddr = self._native_srtp, self._native_socket, self._sockaddr
        if (
            not self.native
            or srtp_ctx is None
            or native_socket is None
            or sockaddr is None
            or (self._ext_dynamic and self._ext_abs_offset < 0)
            or len(self._ext_template) > _LANE_EXT_MAX
            or not hasattr(_fastpath, "send_lanes")
        ):
            return None
        assert self._internals is not None
        return (
            native_socket[1],
            sockaddr,
            srtp_ctx[0],
            srtp_ctx[1],
            srtp_ctx[2],
            self._history,
            RTP_HISTORY_SIZE,
            self._payload_type,
            self._internals.ssrc,
            self.gso,
            self._ext_template,
            self._ext_abs_offset,
            self._vp8,
            self,
            self._sender,
        )

    def _ready_lane(self) -> tuple[Any, ...] | None:
        """This sender's lane if the frame may go out through it now (connected, not paced, nothing buffered)."""
        self._relink()  # ConnectionError if the transport is gone
        if getattr(self._source, "pace_bps", None) is not None or self._paced:
            return None
        native_socket = self._native_socket
        if native_socket is None or native_socket[0].get_write_buffer_size() or native_socket[0].is_closing():
            return None
        lane = self._lane
        if lane is None:
            lane = self._lane = self._lane_config()
        hot = self._hot
        if lane is not None and (hot is None or hot[0] is not lane):
            assert self._internals is not None
            link = self._internals.link_state()
            self._hot = None if link is None else (lane, link, native_socket[0])
        return lane

    def _hot_chunks(self, frame: TappedFrame) -> list[bytes]:
        """The payloads of ``frame`` this sender sends (shared by all its subscribers): for ``_fastpath.fan_hot``,
        made once per frame, by the first hot subscriber."""
        if self._vp8:
            return shared_payloads(frame, "vp8", vp8_chunks)
        return shared_payloads(frame, self._codec_key, self._pack)

    def _finish_lane(self, left: Any, chunks: list[bytes]) -> bool:
        """What :meth:`send` does after the native call, for a frame sent through this sender's lane (``left``: what
        ``send_lanes`` returned for it, or the exception it raised)."""
        try:
            if isinstance(left, BaseException):
                raise left
            if left is not None:
                unsent, start, _, refused, head, rest, first_byte, seq, timestamp = left
                if refused:
                    self.gso = False
                    self._lane = None
                    log.info("udp_gso_refused", kind=self._sender.kind)
                sendto = self._sendto_fn
                assert sendto is not None
                for packet in unsent:
                    sendto(packet, self._addr)
                if start < len(chunks):
                    assert self._internals is not None
                    ssrc = self._internals.ssrc
                    self._send_packets(
                        chunks, start, head, rest, first_byte, seq, timestamp, ssrc, None, False, self._addr
                    )
        except Exception as exc:
            return self._failed(exc)
        return True

    def _after_native(
        self,
        left: tuple[list[bytes], int, int, bool] | None,
        chunks: list[bytes],
        head: bytes,
        rest: bytes,
        first_byte: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        addr: Any,
        ntp: int,
        octets: int,
    ) -> None:
        """The rest of a frame the native loop sent: what it handed back goes out as the Python loop sends it."""
        start = len(chunks)
        self.native_frames += 1
        if left is not None:
            unsent, start, _, refused = left
            if refused:
                self.gso = False
                self._lane = None
                log.info("udp_gso_refused", kind=self._sender.kind)
            sendto = self._sendto_fn
            assert sendto is not None
            for packet in unsent:
                sendto(packet, addr)
        if start < len(chunks):
            self._send_packets(chunks, start, head, rest, first_byte, seq, timestamp, ssrc, None, False, addr)
        self._sent(chunks, seq, timestamp, ntp, octets)

    def _sent(self, chunks: list[bytes], seq: int, timestamp: int, ntp: int, octets: int) -> None:
        """Counters and sender-report state after one frame whose first packet had sequence number ``seq``."""
        assert self._internals is not None
        self._sequence = (seq + len(chunks)) & 0xFFFF
        self.frames_sent += 1
        self.packets_sent += len(chunks)
        self._internals.record_sent(ntp, timestamp, octets, len(chunks))  # what aiortc's sender reports carry

    def _send_packets(
        self,
        chunks: list[bytes],
        start: int,
        head: bytes,
        rest: bytes,
        first_byte: int,
        seq: int,
        timestamp: int,
        ssrc: int,
        pace: int | None,
        paced: bool,
        addr: Any,
    ) -> None:
        """The Python send loop: packets ``start`` on of a frame whose first packet has sequence number ``seq``."""
        srtp, sendto = self._protect, self._sendto_fn
        assert srtp is not None
        assert sendto is not None
        history = self._history
        pt = self._payload_type
        pack = _RTP_HEADER.pack
        last = len(chunks) - 1
        now = time.monotonic() if paced else 0.0
        seq = (seq + start) & 0xFFFF
        for i in range(start, len(chunks)):
            prefix = rest if i else head
            raw = pack(first_byte, (0x80 | pt) if i == last else pt, seq, timestamp, ssrc) + prefix + chunks[i]
            history[seq % RTP_HISTORY_SIZE] = raw
            if paced:
                self._paced.append((raw, now))
            else:
                sendto(srtp(raw), addr)
            seq = (seq + 1) & 0xFFFF
        if paced:
            if pace is None:
                self._pacer = None
            elif self._pacer is None:
                self._pacer = PacingBucket(pace)
            else:
                self._pacer.rate_bps = pace
            self._drain()

    @property
    def packets_departed(self) -> int:
        """Packets that left the node: :attr:`packets_sent` less those still in the pacer. A paced keyframe takes
        0.5-1 s to leave behind 1 Mbit/s; counted when queued, its packets would count as out (and, unNACKed, as
        received) before they could have been lost (``media.bandwidth.LinkQuality.sent``)."""
        return self.packets_sent - len(self._paced)

    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting in the pacer (bandwidth adaptation; 0 when this video is not paced)."""
        return sum(len(raw) for raw, _ in self._paced)

    def _drain(self) -> None:
        """Send what the pacer lets go now; come back when the next packet may leave."""
        if self._pace_timer is not None:
            self._pace_timer.cancel()  # (called early: a new frame joined the queue)
            self._pace_timer = None
        queue = self._paced
        internals = self._internals
        srtp, sendto = self._protect, self._sendto_fn
        if not queue or internals is None or srtp is None or sendto is None or self._done is None or self._done.done():
            queue.clear()
            return
        try:
            _, _, addr = internals.link()
        except ConnectionError:
            queue.clear()
            self.close("connection_lost")
            return
        pacer = self._pacer
        offset = 12 + self._ext_abs_offset if self._ext_abs_offset >= 0 else -1
        departed = self._departed
        now = time.monotonic()
        while queue:
            raw, queued = queue[0]
            held = raw
            if pacer is not None:
                wait = pacer.wait(now, len(raw) + 50, queued)
                if wait > 0:
                    self._pace_timer = asyncio.get_running_loop().call_later(wait, self._drain)
                    return
            queue.popleft()
            if offset >= 0 and pacer is not None:
                # abs-send-time is when the packet leaves, as a pacing sender stamps it: the subscriber's delay
                # estimator must see the link's queue, not the pacer's.
                ntp = int((time.time() + NTP_UNIX_OFFSET) * _NTP_SCALE)
                raw = raw[:offset] + ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big") + raw[offset + 3 :]
            try:
                sendto(srtp(raw), addr)
            except ConnectionError:
                queue.clear()
                self.close("connection_lost")
                return
            departed[(raw[2] << 8 | raw[3]) % RTP_HISTORY_SIZE] = (held, now)

    def _sendto(self, protocol: Any) -> Callable[[bytes, Any], None]:
        """What ``Connection.send`` ends in for this ICE pair, without its three coroutine layers."""
        sendto = direct_sendto(protocol)
        if sendto is not None:
            return sendto

        def via_task(data: bytes, addr: Any) -> None:
            task = asyncio.ensure_future(protocol.send_data(data, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return via_task

    def _pack(self, data: bytes) -> list[bytes]:
        packet = av.Packet(data)
        packet.pts = 0
        packet.time_base = fractions.Fraction(1, self._clock_rate)  # pack() converts it; the timestamp is unused
        payloads, _ = self._encoder.pack(packet)
        return list(payloads)

    def sent_within(self, sequence_number: int, seconds: float) -> bool:
        """Whether the packet ``sequence_number`` left within ``seconds`` (it is in the resend history, and its age,
        as a resend reads it, is no more): a NACK of a number never sent (a jump of the sequence, ``SEQUENCE_JUMP``)
        or long gone names no loss of the link now."""
        raw = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        internals = self._internals
        if raw is None or internals is None or len(raw) < 12 or (raw[2] << 8 | raw[3]) != sequence_number:
            return False
        return self._age(raw, internals) <= seconds

    def _age(self, raw: bytes, internals: SenderInternals) -> float:
        """Seconds since the history packet ``raw`` left: a paced packet from when it left the pacer (by its RTP
        timestamp against the last frame queued, it would count the up to ``PACE_MAX_DELAY`` it waited there too),
        any other by its RTP timestamp against the last one sent."""
        departed = self._departed.get((raw[2] << 8 | raw[3]) % RTP_HISTORY_SIZE)
        if departed is not None and departed[0] is raw:
            return time.monotonic() - departed[1]
        return rtp_age(internals.last_timestamp(), int.from_bytes(raw[4:8], "big"), self._clock_rate)

    async def retransmit(self, sequence_number: int) -> None:
        """Stand-in for ``RTCRtpSender._retransmit``: resend a packet a subscriber NACKed, from this history.

        With a resend budget (bandwidth adaptation), a packet older than ``NACK_MAX_AGE`` or beyond the budget is
        not resent; a video that keeps losing such packets asks the publisher for a keyframe instead.
        """
        raw = self._history.get(sequence_number % RTP_HISTORY_SIZE)
        internals = self._internals
        if raw is None or internals is None or len(raw) < 12:
            return
        if (raw[2] << 8 | raw[3]) != sequence_number:
            return
        budget = self._budget_allows(raw, internals) if self.budget is not None else True
        if not budget:
            return
        ext_map = internals.current_extensions_map()
        packet = RtpPacket.parse(raw, ext_map)
        rtx = internals.next_rtx()
        if rtx is not None:
            rtx_payload_type, rtx_sequence, rtx_ssrc = rtx
            packet = wrap_rtx(packet, payload_type=rtx_payload_type, sequence_number=rtx_sequence, ssrc=rtx_ssrc)
        self.resends += 1
        with contextlib.suppress(ConnectionError):
            await internals.send_rtp(packet.serialize(ext_map))

    def send_padding(self, packets: int, size: int = PADDING_SIZE) -> int:
        """Send ``packets`` padding-only packets of ``size`` bytes of padding on this sender's RTX stream, now (a
        bandwidth probe, ``media.bandwidth.ProbeController``); the number sent: 0 without RTX negotiated, before the
        path runs or once the connection is gone.

        Padding goes on the RTX stream, as libwebrtc sends it: it takes no sequence number of the media stream, a
        receiver's estimator counts it (aiortc's ``RemoteBitrateEstimator`` counts padding bytes, and reads the
        abs-send-time each packet carries), and the receiver then drops it (an RTX packet without an original
        sequence number). It never enters the resend history.
        """
        internals = self._internals
        link = self._padding_link() if packets > 0 else None
        if internals is None or link is None:
            return 0
        srtp, sendto, addr, ext = link
        timestamp = internals.last_timestamp()
        sent = 0
        for _ in range(packets):
            rtx = internals.next_rtx()
            if rtx is None:
                break
            payload_type, sequence, ssrc = rtx
            raw = padding_packet(payload_type, sequence, timestamp, ssrc, ext, size)
            try:
                sendto(srtp(raw), addr)
            except ConnectionError:
                break
            sent += 1
        self.padding_sent += sent
        return sent

    def send_media_padding(self, packets: int, size: int = 1) -> int:
        """Send ``packets`` padding-only packets of ``size`` bytes of padding on the media stream itself, now: each
        takes the stream's next sequence number, so a receiver NACKs the ones it misses as it NACKs media (libwebrtc
        and aiortc both track padding in their NACK lists; padding on the RTX stream is never NACKed). The node
        sends them on a paused video while it waits for a lossy link's lift, so that the NACKs' silence is counted
        over more packets a second (``media.bandwidth.LIFT_PADDING_SHARE``). They carry the stream's last timestamp
        and enter the resend history: a NACKed one is resent as media is, within the budget, since a receiver whose
        jitter buffer releases frames strictly in sequence (aiortc's) would otherwise hold the resumed video behind
        the hole for good (:meth:`padded_within` tells their NACKs apart). The frames after them continue the
        sequence. They carry no header extension: without abs-send-time no
        receiver's delay estimator counts them (aiortc keeps one per received stream, and the padded stream's learned
        the padding's 30-60 kbit/s: resumed, it sent REMBs that low, rising 8% a second). The number sent: 0 before
        the path runs, while the pacer holds packets (they would go out of order), or once the connection is gone."""
        internals = self._internals
        link = self._padding_link() if packets > 0 and not self._paced else None
        if internals is None or link is None:
            return 0
        srtp, sendto, addr, _ = link
        timestamp, ssrc, payload_type = internals.last_timestamp(), internals.ssrc, self._payload_type
        now = time.monotonic()
        padded = self._padded
        sent = 0
        for _ in range(packets):
            sequence = self._sequence
            raw = padding_packet(payload_type, sequence, timestamp, ssrc, b"", size)
            try:
                sendto(srtp(raw), addr)
            except ConnectionError:
                break
            self._history[sequence % RTP_HISTORY_SIZE] = raw
            self._sequence = (sequence + 1) & 0xFFFF
            padded.pop(sequence, None)
            padded[sequence] = now
            sent += 1
        while len(padded) > MEDIA_PADDING_KEPT:
            del padded[next(iter(padded))]
        self.media_padding_sent += sent
        return sent

    def _padding_link(self) -> tuple[Callable[[bytes], bytes], Callable[[bytes, Any], None], Any, bytes] | None:
        """What a padding packet is sent with now (SRTP protect, send, remote address, header extensions with the
        abs-send-time of now); None before the path runs or once the connection is gone."""
        internals = self._internals
        if internals is None or self._done is None or self._done.done():
            return None
        try:
            protect, protocol, addr = internals.link()
        except ConnectionError:
            return None
        ntp = int((time.time() + NTP_UNIX_OFFSET) * _NTP_SCALE)
        ext = _extension_block(internals.current_extensions_map(), self._mid, (ntp >> 14) & 0xFFFFFF)
        return srtp_protector(protect), self._sendto(protocol), addr, ext

    def padded_within(self, sequence_number: int, seconds: float) -> bool:
        """Whether ``sequence_number`` was one of :meth:`send_media_padding`'s packets, sent within ``seconds``."""
        at = self._padded.get(sequence_number)
        return at is not None and time.monotonic() - at <= seconds

    def _budget_allows(self, raw: bytes, internals: SenderInternals) -> bool:
        """Whether the subscriber's resend budget lets this history packet go out again (counted either way)."""
        budget = self.budget
        assert budget is not None
        keyframe = self._keyframe_sent
        if (
            keyframe is not None
            and time.monotonic() - keyframe[1] < STALE_NACK_SECONDS
            and 0 < (keyframe[0] - (raw[2] << 8 | raw[3])) & 0xFFFF < 0x8000
        ):
            # A packet of a frame before the last keyframe sent: the keyframe replaces every reference before it, so
            # the resend would mend nothing. An aiortc receiver NACKs its whole missing list (up to ~200 packets back)
            # at each new gap; behind 1 Mbit/s those resends spent the budget (a fifth of the estimate) the lost
            # packets of the keyframes after them needed, and four keyframes in 2.5 s came incomplete: a 3.2 s freeze.
            budget.stale += 1
            return False
        return resend_allowed(
            budget,
            self._repair,
            self.on_unrepairable,
            audio=self._sender.kind == "audio",
            age=self._age(raw, internals),
            size=len(raw),
            guard=self._resends,
            sequence_number=raw[2] << 8 | raw[3],
            rtt=sender_rtt(self._sender),
        )


class NativeBatch:
    """The native calls of one publisher frame to all its subscribers, made with one ``_fastpath.send_frames``.

    :meth:`FrameSender.send_batched` adds a sender's call instead of making it; :meth:`run` makes them all, in the
    order added, then finishes each sender's frame as :meth:`FrameSender.send` would have (what the C loop handed
    back goes out through the Python loop; counters, history, sender-report state). A sender's failure is its own.
    """

    __slots__ = ("_jobs", "_lane_chunks", "_lane_senders", "_lanes", "_rests", "_senders")

    def __init__(self) -> None:
        self._senders: list[FrameSender] = []
        self._jobs: list[tuple[Any, ...]] = []
        self._rests: list[tuple[Any, ...]] = []
        self._lane_senders: list[FrameSender] = []
        self._lanes: list[tuple[Any, ...]] = []
        self._lane_chunks: list[list[bytes]] = []

    def __len__(self) -> int:
        return len(self._jobs) + len(self._lanes)

    def add_lane(self, sender: FrameSender, lane: tuple[Any, ...], pts: int, chunks: list[bytes]) -> None:
        """One sender's frame through its lane (``_fastpath.send_lanes``): the C loop also makes its prefixes and
        advances its state."""
        self._lane_senders.append(sender)
        self._lanes.append((lane, pts, chunks))
        self._lane_chunks.append(chunks)

    def add(self, sender: FrameSender, args: tuple[Any, ...], rest: tuple[Any, ...]) -> None:
        """One sender's ``send_frame`` arguments and what it needs to finish the frame afterwards."""
        self._senders.append(sender)
        self._jobs.append(args)
        self._rests.append(rest)

    def run(self) -> dict[FrameSender, bool]:
        """Send every frame added; per sender, whether it went out (False: its path closed)."""
        outcomes: dict[FrameSender, bool] = {}
        if self._lanes:
            ntp = ntp_now()  # one abs-send-time for the frame
            results = _fastpath.send_lanes(self._lanes, ntp)
            for sender, left, chunks in zip(self._lane_senders, results, self._lane_chunks, strict=True):
                outcomes[sender] = sender._finish_lane(left, chunks)
        if self._jobs:
            send_frames = getattr(_fastpath, "send_frames", None)
            results = send_frames(self._jobs) if send_frames is not None else [_one(job) for job in self._jobs]
            for sender, left, rest in zip(self._senders, results, self._rests, strict=True):
                outcomes[sender] = sender._finish_batched(left, rest)
        return outcomes


def ntp_now() -> int:
    """The wall clock as a 64-bit NTP time (what abs-send-time and sender reports are made from)."""
    return int((time.time() + NTP_UNIX_OFFSET) * _NTP_SCALE)


def _one(job: tuple[Any, ...]) -> Any:
    """``send_frame(*job)``, its exception as its result (a native module built before ``send_frames``)."""
    try:
        return _fastpath.send_frame(*job)
    except Exception as exc:
        return exc


def rtp_age(last_timestamp: int, packet_timestamp: int, clock_rate: int) -> float:
    """Seconds between a sent packet's RTP timestamp and the last one sent (0 if it looks newer)."""
    elapsed = (last_timestamp - packet_timestamp) & 0xFFFFFFFF
    return 0.0 if elapsed >= 1 << 31 else elapsed / (clock_rate or 90_000)


def resend_allowed(
    budget: NackBudget,
    repair: RepairTrigger,
    on_unrepairable: Callable[[], None] | None,
    *,
    audio: bool,
    age: float,
    size: int,
    guard: ResendGuard | None = None,
    sequence_number: int = 0,
    rtt: float | None = None,
) -> bool:
    """Whether a NACKed packet is resent within the subscriber's budget; a video that keeps losing what cannot be
    resent calls ``on_unrepairable`` (ask the publisher for a keyframe). With a ``guard``, a packet resent less than
    a round trip (``rtt``, seconds, None: unknown) ago is not resent again, and that costs nothing; a packet refused
    before counts towards a repair only the first time (a receiver NACKs its whole missing list at every new gap: the
    same refused packets, asked again, are no new damage)."""
    now = time.monotonic()
    if guard is not None and guard.recent(now, sequence_number, rtt):
        budget.repeated += 1
        return False
    if budget.allow(now, size, age, audio=audio):
        if guard is not None:
            guard.sent(now, sequence_number)
        return True
    first = guard is None or guard.refuse(now, sequence_number)
    if not audio and first and repair.dropped(now) and on_unrepairable is not None:
        on_unrepairable()
    return False


def srtp_protector(protect: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """pylibsrtp's ``Session.protect`` without its Python wrapper's per-call work, or ``protect`` itself.

    ``Session.protect`` checks its argument, allocates a C ``int`` and asserts the result in Python on
    every call: about a quarter of a microsecond per packet here. This one keeps the ``int`` and calls
    libsrtp on the session's own buffer (as ``protect`` does), and on any error, or a packet too long,
    hands over to ``protect`` itself, which raises pylibsrtp's named error. Anything but a pylibsrtp
    session's bound ``protect`` (or a pylibsrtp without these internals) is returned unchanged.
    """
    session = getattr(protect, "__self__", None)
    try:
        from pylibsrtp import Session
        from pylibsrtp._binding import ffi, lib

        if not isinstance(session, Session):
            return protect
        cdata, buffer, srtp = session._cdata, session._buffer, session._srtp
        srtp_protect, ok = lib.srtp_protect, lib.srtp_err_status_ok
    except (ImportError, AttributeError):
        return protect
    length = ffi.new("int *")
    limit = len(cdata) - _SRTP_MAX_TRAILER

    def fast_protect(data: bytes) -> bytes:
        size = len(data)
        if size > limit:
            return protect(data)
        length[0] = size
        buffer[0:size] = data
        if srtp_protect(srtp[0], cdata, length) != ok:
            return protect(data)
        out: bytes = buffer[0 : length[0]]
        return out

    return fast_protect


def native_srtp(protect: Callable[[bytes], bytes]) -> tuple[int, int, int] | None:
    """For ``media._fastpath``: the libsrtp session behind pylibsrtp's ``Session.protect``, the address of
    libsrtp's ``srtp_protect`` and the longest packet the session's buffer protects (what pylibsrtp refuses as too
    long); None for anything else (the Python loop then sends). The caller keeps the session alive."""
    session = getattr(protect, "__self__", None)
    try:
        from pylibsrtp import Session
        from pylibsrtp._binding import ffi, lib

        if not isinstance(session, Session):
            return None
        srtp, cdata = session._srtp, session._cdata
        function = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
        context = int(ffi.cast("uintptr_t", srtp[0]))
    except (ImportError, AttributeError, TypeError):
        return None
    return context, function, len(cdata) - _SRTP_MAX_TRAILER


def native_sockaddr(addr: Any) -> bytes | None:
    """For ``media._fastpath``: the C ``struct sockaddr`` of a remote ``(host, port)``, None if it has none."""
    if _fastpath is None or not isinstance(addr, tuple) or len(addr) < 2:
        return None
    host, port = addr[0], addr[1]
    if not isinstance(host, str) or not isinstance(port, int) or (len(addr) > 2 and any(addr[2:])):
        return None  # an IPv6 flow label or scope is not carried over
    return _fastpath.sockaddr(host, port)


def _extension_block(ext_map: Any, mid: str | None, abs_send_time: int) -> bytes:
    """The header-extension part of an RTP header (profile, length, values) exactly as aiortc serializes it."""
    values = HeaderExtensions()
    values.mid = mid
    values.abs_send_time = abs_send_time
    profile, value = ext_map.set(values)
    if not value:
        return b""
    return struct.pack("!HH", profile, len(value) >> 2) + bytes(value)


def install(sender: RTCRtpSender, source: FrameSource) -> FrameSender:
    """Give one sender the lean send path (per instance: other senders in the process are untouched)."""
    fast = FrameSender(sender, source)
    fast._original_run = replace_rtp_loop(sender, fast.run, fast.retransmit)
    return fast
