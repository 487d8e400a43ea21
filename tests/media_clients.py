"""Real aiortc client peers for media tests: publish readable synthetic media, count and decode what arrives.

- :class:`CodeVideoTrack` paints a code (an 8-bit publisher tag and a 16-bit
  frame counter) as 24 black/white blocks into every frame;
  :func:`read_code` reads it back from a decoded frame.
- :class:`ToneAudioTrack` sends a loud tone or silence, so aiortc's sender
  sets a matching ``ssrc-audio-level`` header extension.
- :class:`MediaClient` is one participant: it publishes those tracks, counts
  received RTP packets per media id at the RTP level, decodes received video
  and reads the codes, and counts keyframe requests reaching its senders.
- :class:`DirectSignaling` plays signaling against a node's ``NodeControl``
  (create peer, offer/answer, relay node offers), for tests without the
  WebSocket layer.

Negotiation follows docs/protocol.md: the client is the polite side. aiortc
has no rollback, so a client's re-offer (after the first) is only *created*
when sent and applied locally once the node answers it; a node offer that
arrives meanwhile simply replaces it (that is the rollback), and the client
offers again afterwards only if it still has something to negotiate.

Everything stays on 127.0.0.1 with no ICE servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.sdp import SessionDescription
from av import AudioFrame, VideoFrame
from pyee.asyncio import AsyncIOEventEmitter

from media import receiving
from media.ice import restrict_host_candidates, rtc_configuration
from media.passthrough import ReceiverTap, tap_receiver
from protocol.node import (
    ApplyAnswer,
    ApplyOffer,
    CreatePeer,
    NodeControl,
    NodeEvent,
    Offer,
    Refused,
    SdpAnswer,
    TrackRef,
    Tracks,
)
from rooms.model import Role

LOOPBACK = ("127.0.0.1",)


def _ignore(_: Any) -> None:
    pass


def _count_packet(entry: Received, _: Any) -> None:
    entry.rtp_packets += 1


def _nothing() -> None:
    pass


_COLS, _ROWS = 6, 4
_BITS = _COLS * _ROWS


def paint_code(width: int, height: int, tag: int, counter: int) -> np.ndarray:
    """A yuv420p frame buffer with ``tag`` (8 bits) and ``counter`` (16 bits) as black/white blocks."""
    buf = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    value = ((tag & 0xFF) << 16) | (counter & 0xFFFF)
    bw, bh = width // _COLS, height // _ROWS
    for bit in range(_BITS):
        row, col = divmod(bit, _COLS)
        luma = 235 if value >> (_BITS - 1 - bit) & 1 else 16
        buf[row * bh : (row + 1) * bh, col * bw : (col + 1) * bw] = luma
    return buf


def read_code(frame: VideoFrame) -> tuple[int, int]:
    """Read (tag, counter) back from a decoded frame painted by :func:`paint_code`."""
    luma = frame.to_ndarray(format="gray")
    height, width = luma.shape
    bw, bh = width // _COLS, height // _ROWS
    value = 0
    for bit in range(_BITS):
        row, col = divmod(bit, _COLS)
        block = luma[row * bh + bh // 4 : (row + 1) * bh - bh // 4, col * bw + bw // 4 : (col + 1) * bw - bw // 4]
        value = (value << 1) | int(block.mean() > 128)
    return value >> 16, value & 0xFFFF


class CodeVideoTrack(VideoStreamTrack):
    """Synthetic video whose every frame carries its publisher tag and frame number."""

    def __init__(self, tag: int, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.tag = tag
        self.width = width
        self.height = height
        self.counter = 0

    async def recv(self) -> VideoFrame:
        """The next painted frame, paced at 30 fps by aiortc's clock."""
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(paint_code(self.width, self.height, self.tag, self.counter), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.counter += 1
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A 440 Hz tone (loud) or silence, 20 ms mono frames at 48 kHz."""

    def __init__(self, loud: bool = True) -> None:
        super().__init__()
        self.loud = loud
        self._sample = 0

    async def recv(self) -> AudioFrame:
        """The next 20 ms frame, paced by aiortc's clock."""
        frame = await super().recv()
        assert isinstance(frame, AudioFrame)
        if self.loud:
            n = frame.samples
            t = (np.arange(n) + self._sample) / frame.sample_rate
            samples = (np.sin(2 * math.pi * 440 * t) * 16000).astype(np.int16)
            frame.planes[0].update(samples.tobytes())
            self._sample += n
        return frame


T = TypeVar("T", bound=MediaStreamTrack | None)


def _renewed(track: T) -> T:
    """A live copy of a track aiortc stopped (same source and settings, a new id and no listeners)."""
    if track is None:
        return track
    fresh = copy.copy(track)
    AsyncIOEventEmitter.__init__(fresh)
    fresh._MediaStreamTrack__ended = False  # type: ignore[attr-defined]
    fresh._id = str(uuid.uuid4())
    return fresh


@dataclass
class Received:
    """What one client got on one media id."""

    kind: str
    rtp_packets: int = 0
    frames: int = 0
    codes: list[tuple[int, int]] = field(default_factory=list)


def audio_nack_mids(sdp: str) -> set[str]:
    """The mids of the audio m-lines whose Opus the remote side offers ``nack`` feedback on."""
    return _opus_mids(sdp, lambda codec: any(f.type == "nack" and not f.parameter for f in codec.rtcpFeedback))


def opus_fec_mids(sdp: str) -> set[str]:
    """The mids of the audio m-lines whose Opus the SDP's author takes in-band FEC on (``useinbandfec=1``)."""
    return _opus_mids(sdp, lambda codec: str(codec.parameters.get("useinbandfec")) == "1")


def _opus_mids(sdp: str, has: Callable[[Any], bool]) -> set[str]:
    """The mids of the audio m-lines with an Opus codec for which ``has`` holds."""
    return {
        str(media.rtp.muxId)
        for media in SessionDescription.parse(sdp).media
        if media.kind == "audio"
        and any(str(codec.mimeType).lower() == "audio/opus" and has(codec) for codec in media.rtp.codecs)
    }


def nack_lost_audio(receiver: RTCRtpReceiver) -> None:
    """NACK lost audio as Chromium does when the node's offer asks it (``a=rtcp-fb:<opus> nack``): aiortc's receiver
    NACKs video only. (aiortc's generator asks for its whole missing list at each new gap, never on a timer.)"""
    if getattr(receiver, "_RTCRtpReceiver__nack_generator", None) is None:
        receiver._RTCRtpReceiver__nack_generator = NackGenerator()  # type: ignore[attr-defined]


class MediaClient:
    """One participant as a real aiortc peer on loopback."""

    def __init__(
        self,
        name: str,
        *,
        tag: int = 0,
        video: bool = True,
        audio: bool = True,
        loud: bool = True,
        video_codec: str | None = None,
        decode_video: bool = True,
        count_only: bool = False,
        configuration: RTCConfiguration | None = None,
        nack_audio: bool = False,
    ) -> None:
        self.name = name
        self.nack_audio = nack_audio
        """NACK lost audio where the node's offer asks it, as Chromium does (:func:`nack_lost_audio`)."""
        self.configuration = configuration
        """The peer connection's configuration (default: no ICE servers, host candidates only)."""
        self.pc = RTCPeerConnection(configuration=self.configuration or rtc_configuration(()))
        self.video = CodeVideoTrack(tag) if video else None
        self.audio = ToneAudioTrack(loud) if audio else None
        self.received: dict[str, Received] = {}
        self.tracks: tuple[TrackRef, ...] = ()
        self.keyframe_requests = 0
        self.decode_video = decode_video
        self.count_only = count_only
        """Received media is only counted (RTP level), never decoded: for many clients in one process."""
        self.on_failed: Callable[[], None] | None = None
        """Called when the connection's state becomes ``failed`` (the client then asks for a media restart)."""
        self.video_codec = video_codec
        self.extra: list[MediaStreamTrack] = []
        """Tracks added after the start (e.g. evidence), re-added on a media restart."""
        self.resets = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._counted: set[int] = set()
        self._deferred: RTCSessionDescription | None = None
        self._setup()

    def _setup(self) -> None:
        for track in (self.audio, self.video, *self.extra):
            if track is not None:
                self._add(track)

        pc = self.pc

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc is self.pc and pc.connectionState == "failed" and self.on_failed is not None:
                self.on_failed()

    def _add(self, track: MediaStreamTrack) -> None:
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video" and self.video_codec is not None:
            caps = RTCRtpSender.getCapabilities("video").codecs
            prefs = [c for c in caps if c.mimeType.lower() in (f"video/{self.video_codec}".lower(), "video/rtx")]
            transceiver.setCodecPreferences(prefs)
        self._count_keyframe_requests(transceiver.sender)

    def add_track(self, track: MediaStreamTrack) -> None:
        """Publish one more track (negotiated by the next offer)."""
        self.extra.append(track)
        self._add(track)

    def needs_negotiation(self) -> bool:
        """A track was added since the last completed exchange (the ``negotiationneeded`` of aiortc clients)."""
        return any(t.mid is None and not t.stopped for t in self.pc.getTransceivers())

    async def reset(self) -> None:
        """Media restart: close the connection and make a new one with the same tracks (the next offer is a first)."""
        await self._close_pc()
        # aiortc's senders stop their tracks on close: the new connection sends new tracks of the same kind.
        self.video = _renewed(self.video)
        self.audio = _renewed(self.audio)
        self.extra = [_renewed(t) for t in self.extra]
        self.pc = RTCPeerConnection(configuration=self.configuration or rtc_configuration(()))
        self.received = {}
        self.tracks = ()
        self._counted = set()
        self._deferred = None
        self.resets += 1
        self._setup()

    def _count_keyframe_requests(self, sender: RTCRtpSender) -> None:
        original: Callable[[], None] = sender._send_keyframe

        def counted() -> None:
            self.keyframe_requests += 1
            original()

        sender._send_keyframe = counted  # type: ignore[method-assign]

    def _count_rtp(self) -> None:
        """Count RTP packets of every receiving transceiver at the RTP level (before any jitter buffer)."""
        remote = self.pc.remoteDescription
        nacked = audio_nack_mids(remote.sdp) if self.nack_audio and remote is not None else set()
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if id(receiver) in self._counted or transceiver.mid is None:
                continue
            self._counted.add(id(receiver))
            if transceiver.kind == "audio" and str(transceiver.mid) in nacked:
                nack_lost_audio(receiver)
            entry = self.received.setdefault(str(transceiver.mid), Received(kind=transceiver.kind))
            if self.count_only:
                # Hand received frames to nobody instead of a decoder (called before the receiver starts), and count
                # packets as they reach the receiver's buffer.
                tap_receiver(
                    receiver,
                    transceiver.kind,
                    ReceiverTap(
                        on_frame=_ignore,
                        on_packet=partial(_count_packet, entry),
                        on_sender_report=_ignore,
                        on_bye=_nothing,
                    ),
                )
                continue
            original = receiver._handle_rtp_packet

            async def counting(packet: Any, arrival_time_ms: int, _orig: Any = original, _e: Received = entry) -> None:
                _e.rtp_packets += 1
                await _orig(packet, arrival_time_ms)

            receiver._handle_rtp_packet = counting  # type: ignore[method-assign]
        if self.count_only:
            # Twelve clients read in one process: they receive as the node does (media.receiving), or one process's
            # event loop cannot read what a node sends twelve people and the kernel drops it.
            receiving.install(self.pc)

    async def _consume(self, track: MediaStreamTrack) -> None:
        # Drain every remote track (aiortc's track queue is unbounded) and read the codes of video.
        mid = next((str(t.mid) for t in self.pc.getTransceivers() if t.receiver.track is track), "?")
        entry = self.received.setdefault(mid, Received(kind=track.kind))
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                entry.frames += 1
                if isinstance(frame, VideoFrame) and self.decode_video:
                    entry.codes.append(read_code(frame))

    # --- signaling ----------------------------------------------------------------------------

    async def offer(self) -> str:
        """The client's offer (publishing its tracks).

        The first offer of a connection is applied at once (it carries the ICE candidates, and the node never
        offers before answering it). A later one is applied only with the node's answer (:meth:`accept_answer`),
        so a crossing node offer can still be applied: aiortc cannot roll back.
        """
        if self.configuration is None or self.configuration.iceTransportPolicy != RTCIceTransportPolicy.RELAY:
            # (aioice gathers no host candidates under the relay policy; restricting would add them back.)
            restrict_host_candidates(self.pc, LOOPBACK)
        if self.pc.remoteDescription is None:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            return str(self.pc.localDescription.sdp)
        self._deferred = await self.pc.createOffer()
        return str(self._deferred.sdp)

    def rollback(self) -> None:
        """Forget a re-offer the node refused or that a node offer crossed (nothing was applied locally)."""
        self._deferred = None

    @property
    def offering(self) -> bool:
        """A re-offer awaits the node's answer."""
        return self._deferred is not None

    async def accept_answer(self, sdp: str) -> None:
        """Apply the node's answer to our offer."""
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            await self.pc.setLocalDescription(deferred)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._count_rtp()

    async def answer(self, sdp: str) -> str:
        """Apply a node offer and return our answer (a pending re-offer of ours is dropped: polite side)."""
        self._deferred = None
        # aiortc pairs a remote m-line with any transceiver of its kind that has no mid yet, also one we added
        # for a track not negotiated yet (JSEP never pairs an addTransceiver() one): keep those out of it.
        transceivers: list[Any] = self.pc._RTCPeerConnection__transceivers  # type: ignore[attr-defined]
        unnegotiated = [t for t in transceivers if t.mid is None]
        for t in unnegotiated:
            transceivers.remove(t)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self._count_rtp()
            restrict_host_candidates(self.pc, LOOPBACK)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        finally:
            transceivers.extend(unnegotiated)
        return str(self.pc.localDescription.sdp)

    # --- what arrived -------------------------------------------------------------------------

    def mids_of(self, participant_id: str, kind: str | None = None) -> list[str]:
        """Media ids that currently carry ``participant_id``'s tracks (from the last Tracks event)."""
        return [
            str(t.mid) for t in self.tracks if t.participant_id == participant_id and (kind is None or t.kind == kind)
        ]

    def rtp_packets(self, kind: str | None = None) -> int:
        """RTP packets received so far on all media ids (of one kind)."""
        return sum(r.rtp_packets for r in self.received.values() if kind is None or r.kind == kind)

    def codes(self, tag: int | None = None) -> list[tuple[int, int]]:
        """Every code read from decoded video (of one publisher tag)."""
        return [c for r in self.received.values() for c in r.codes if tag is None or c[0] == tag]

    def frames(self, kind: str) -> int:
        """Frames decoded so far of one kind."""
        return sum(r.frames for r in self.received.values() if r.kind == kind)

    async def close(self) -> None:
        """Close the connection and stop consuming."""
        await self._close_pc()

    async def _close_pc(self) -> None:
        await self.pc.close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, MediaStreamError):
                await task


class DirectSignaling:
    """Plays signaling between :class:`MediaClient` objects and a node: SDP both ways, Tracks events."""

    delay = 0.0
    """Seconds each client waits before it answers a node offer (a subclass sets it for a slow client or link)."""

    def __init__(self, node: NodeControl, hearing_id: str) -> None:
        self.node = node
        self.hearing_id = hearing_id
        self.clients: dict[str, MediaClient] = {}
        self.events: list[NodeEvent] = []
        self._queue: asyncio.Queue[NodeEvent] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._relay())
        self.failures: list[str] = []
        self._answered: dict[str, str] = {}
        node.subscribe(self._on_event)

    async def _on_event(self, event: NodeEvent) -> None:
        # Never block the node's dispatcher: answer offers from our own task.
        self.events.append(event)
        self._queue.put_nowait(event)

    async def _relay(self) -> None:
        while True:
            event = await self._queue.get()
            client = self.clients.get(getattr(event, "participant_id", ""))
            if client is None or getattr(event, "hearing_id", None) != self.hearing_id:
                continue
            if isinstance(event, Offer):
                if event.sdp == self._answered.get(client.name):
                    continue  # the node re-sent an offer we answered already (its answer is on the way)
                self._answered[client.name] = event.sdp
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = await client.answer(event.sdp)
                reply = await self.node.call(
                    ApplyAnswer(hearing_id=self.hearing_id, participant_id=client.name, sdp=answer)
                )
                if isinstance(reply, Refused):
                    self.failures.append(f"{client.name}: {reply.code} {reply.message}")
            elif isinstance(event, Tracks):
                client.tracks = event.tracks

    async def join(self, client: MediaClient, role: Role = Role.party) -> None:
        """Create the client's peer on the node and complete its first offer/answer."""
        self.clients[client.name] = client
        await self.node.call(CreatePeer(hearing_id=self.hearing_id, participant_id=client.name, role=role))
        reply = await self.node.call(
            ApplyOffer(hearing_id=self.hearing_id, participant_id=client.name, sdp=await client.offer())
        )
        assert isinstance(reply, SdpAnswer), reply
        await client.accept_answer(reply.sdp)

    async def close(self) -> None:
        """Stop relaying and close every client."""
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        for client in self.clients.values():
            await client.close()


async def eventually(check: Callable[[], bool], within: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass (a bound, never asserted as a duration)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return check()


@contextlib.asynccontextmanager
async def hearing(node: Any, hearing_id: str = "hrg_test") -> AsyncIterator[DirectSignaling]:
    """A :class:`DirectSignaling` for one hearing on ``node``; closes clients and the node afterwards."""
    sig = DirectSignaling(node, hearing_id)
    try:
        yield sig
    finally:
        await sig.close()
        await node.close()
