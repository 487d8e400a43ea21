"""Fan-out of one publisher track to its subscribers and recorders, with keyframe gating and bounded queues.

A :class:`PublishedTrack` receives reassembled frames from a tapped receiver
(:mod:`media.passthrough`) and hands each to its consumers:

- :class:`ForwardedTrack` — the track behind one subscriber's sender. Once
  the sender runs, frames go straight to its :class:`~media.sending.FrameSender`
  (packetized, encrypted and sent before ``push`` returns); before that they
  wait in a bounded queue. Its ``recv()`` still yields ``av.Packet`` items for
  a stock aiortc sender, which then only repacketizes, never encodes. It is a
  slot: it lives as long as the subscriber's transceiver and is re-pointed at
  other publishers (last-N), keeping its timestamps continuous.
- :class:`RecorderFeed` — hands frames and sender reports to a ``FrameSink``.

Keyframes: the decisions are :mod:`media.keyframes` (pure, tested without
aiortc); this module carries them out. Each consumer of video holds a
:class:`~media.keyframes.ConsumerGate` (closed from its start, a switch or a
queue overflow until a keyframe); each published video track holds one
:class:`~media.keyframes.KeyframeRequests` that every consumer, every
subscriber PLI/FIR and the recorder ask through, so the publisher gets one
request where many want one, at a bounded rate. The request itself is a PLI
to the publisher's current SSRC (:func:`media.aiortc_compat.keyframe_requester`).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import av
import structlog
from aiortc import MediaStreamError, MediaStreamTrack, RTCRtpReceiver

from media.aiortc_compat import RembLimiter, RtpPacket, keyframe_requester, limit_remb
from media.bandwidth import METER_WINDOW, PACE_MAX_DELAY, BitrateMeter
from media.fanout import fan_out, serve_hot
from media.keyframes import ConsumerGate, KeyframeCounts, KeyframeRequests, Reason, RepairHold
from media.passthrough import ReceiverTap, ReportTimes, TappedFrame, is_keyframe
from media.sending import SEQUENCE_JUMP, FrameSender
from media.simulcast import ACTIVE_WITHIN, LayerChooser, LayerInfo, best_layer, order_layers, vp8_size
from protocol.frames import EncodedFrame, FrameSink, SenderReport, TrackInfo
from protocol.node import MediaKind
from rooms.model import Source

log = structlog.get_logger(__name__)


class Consumer(Protocol):
    """Something a published track hands its frames to."""

    def push(self, frame: TappedFrame, keyframe: bool) -> None:
        """One frame (pts in ``frame.timestamp``, unwrapped); must return at once."""
        ...

    def sender_report(self, report: ReportTimes) -> None:
        """An RTCP sender report of the publisher."""
        ...


class PublishedTrack:
    """One track a participant publishes into the node."""

    def __init__(
        self,
        *,
        hearing_id: str,
        participant_id: str,
        track_id: str,
        kind: MediaKind,
        source: Source,
        receiver: RTCRtpReceiver,
        keyframe_interval: float,
        on_refused: Callable[[PublishedTrack], None],
        on_audio_level: Callable[[PublishedTrack, int], None],
    ) -> None:
        self.hearing_id = hearing_id
        self.participant_id = participant_id
        self.track_id = track_id
        # Track ids come from the client's SDP and two participants may send the same one; the archive
        # must never merge two people's media, so the recorder knows each track by participant and id.
        self.recording_id = f"{participant_id}:{track_id}"
        self.kind: MediaKind = kind
        self.source = source
        self.codec_name = ""
        self.clock_rate = 90_000 if kind == "video" else 48_000
        self.allowed = False
        self.held = True
        """An undeclared extra track (its kind's default source is taken by another track): never forwarded
        nor recorded, and not reported as refused, until a declaration gives it a source of its own."""
        self.ended = False
        self.ended_reported = False
        self.consumers: set[Consumer] = set()
        self.last_report: ReportTimes | None = None
        self.frames_in = 0
        self.keyframes_in = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.last_packet_at: float | None = None
        """``time.monotonic()`` of the last received packet (read by the node's health tick)."""
        self.active_since: float | None = None
        """When packets began to come again after :data:`ACTIVE_WITHIN` without one (a simulcast layer the publisher
        stopped and started again): its bitrate is read over the time since (:meth:`layer_infos`)."""
        self._receiver = receiver
        self._send_pli = keyframe_requester(receiver)
        self._keyframes = KeyframeRequests(min_interval=keyframe_interval)
        self._video = kind == "video"
        self._on_refused = on_refused
        self._on_audio_level = on_audio_level
        self._refusal_reported = False
        self._ssrc: int | None = None
        self._last_ts: int | None = None
        self._ts_high = 0
        self._requests: set[asyncio.Future[None]] = set()
        self.meter = BitrateMeter()
        """Its bitrate over the last seconds (bandwidth adaptation reads it when it decides)."""
        self.remb: RembLimiter | None = None
        """Video with bandwidth adaptation: the REMB the node sends the publisher, which the node may cap."""
        self.cap_raise_since: float | None = None
        """Since when a higher cap has been wanted for this video (``media.bandwidth.hold_raise``)."""
        self.rid: str | None = None
        """A simulcast layer: its rid (its ``parent`` is the published track); None: a track of its own."""
        self.parent: PublishedTrack | None = None
        self.layers: list[PublishedTrack] = []
        """A video published in simulcast: its layers, each its own source of frames (in the offer's order)."""
        self.width = 0
        """Video: pixels wide, from its last keyframe (0: unknown)."""
        self.height = 0

    def add_layers(self, rids: list[str]) -> list[PublishedTrack]:
        """Make this video a simulcast one with these layers (each a source of frames with its own SSRC)."""
        for rid in rids:
            layer = PublishedTrack(
                hearing_id=self.hearing_id,
                participant_id=self.participant_id,
                track_id=self.track_id,
                kind=self.kind,
                source=self.source,
                receiver=self._receiver,
                keyframe_interval=self._keyframes.min_interval,
                on_refused=lambda _: None,
                on_audio_level=lambda _, __: None,
            )
            layer.rid = rid
            layer.parent = self
            layer.codec_name = self.codec_name
            layer.clock_rate = self.clock_rate
            layer.recording_id = self.recording_id
            layer.set_allowed(self.allowed)
            self.layers.append(layer)
        return self.layers

    def layer(self, rid: str | None) -> PublishedTrack | None:
        """The layer of that rid (None: no such layer)."""
        return next((layer for layer in self.layers if layer.rid == rid), None)

    def layer_infos(self, now: float) -> list[LayerInfo]:
        """What the layer chooser reads of each layer (media.simulcast). A layer that started again within the
        meter's window (the publisher had stopped it) is read over the time since, not over a window mostly silent:
        a Chromium prosecutor's full layer, started again half a second before, read 8 kbit/s; the allocator
        resumed it for a thin-linked defendant on that, and 0.8 s later the link overflowed with its 400 kbit/s."""
        return [
            LayerInfo(
                rid=layer.rid or "",
                width=layer.width,
                height=layer.height,
                bitrate=_since_active(layer.bitrate(now), layer.active_since, now),
                active=layer.last_packet_at is not None and now - layer.last_packet_at < ACTIVE_WITHIN,
            )
            for layer in self.layers
        ]

    def top_layer(self) -> PublishedTrack:
        """The largest layer (by its keyframes' size, else its bitrate, else the offer's order); itself if none."""
        if not self.layers:
            return self
        infos = self.layer_infos(time.monotonic())
        return self.layers[order_layers(infos)[-1]]

    def limit_remb(self) -> RembLimiter | None:
        """Let the node cap the REMB it sends this track's publisher (video only; idempotent)."""
        if self.remb is None and self._video:
            self.remb = limit_remb(self._receiver)
        return self.remb

    def bitrate(self, now: float) -> int:
        """Payload bit/s received over the last seconds."""
        return self.meter.rate(now, self.bytes_in)

    @property
    def keyframe_counts(self) -> KeyframeCounts:
        """What this track's keyframe requests did (requests sent by reason, coalesced, deferred, keyframes)."""
        return self._keyframes.counts

    @property
    def keyframe_requests(self) -> int:
        """Keyframe requests sent to the publisher so far."""
        return self._keyframes.counts.requests

    def set_allowed(self, allowed: bool) -> None:
        """Whether the participant may publish this track's source now."""
        for layer in self.layers:
            layer.set_allowed(allowed)
        became = allowed and not self.allowed
        self.allowed = allowed
        if became:
            self._refusal_reported = False
            # An unmute: consumers waiting get a picture now, not after the throttle.
            if self._video and self._keyframes.restart(time.monotonic(), consumers=bool(self.consumers)):
                self._send_request()

    def on_packet(self, packet: RtpPacket) -> None:
        """Every received RTP packet (after RTX unwrap): count it, note the SSRC and feed speaker detection."""
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        now = time.monotonic()
        last = self.last_packet_at
        if last is None or now - last >= ACTIVE_WITHIN:
            self.active_since = now
        self.last_packet_at = now
        first = self._ssrc is None
        self._ssrc = packet.ssrc  # follows an SSRC change, so keyframe requests reach the current stream
        if first and self._video and self._keyframes.stream_known(now):
            self._send_request()  # asked before the first packet told where to send it
        if not self.allowed:
            if not self._refusal_reported and not self.held:
                self._refusal_reported = True
                self._on_refused(self)
            return
        level = packet.extensions.audio_level
        if level is not None and self.kind == "audio":
            self._on_audio_level(self, int(level[1]))

    def on_frame(self, frame: TappedFrame) -> None:
        """A reassembled frame from the receiver: drop it if not allowed, else hand it to every consumer."""
        frame.timestamp = self._unwrap(frame.rtp_timestamp)
        frame.origin = self
        if not self.allowed:
            return
        self.frames_in += 1
        keyframe = is_keyframe(self.codec_name, frame.data)
        if keyframe:
            self.keyframes_in += 1
            if self._video and (size := vp8_size(frame.data)) is not None:
                self.width, self.height = size
        if self._video:
            # After a gap the reference chain is broken: forward nothing until a keyframe.
            forward, send = self._keyframes.frame(
                time.monotonic(), keyframe=keyframe, resync=frame.resync, consumers=bool(self.consumers)
            )
            if send:
                self._send_request()
            if not forward:
                return
        fan_out(self.consumers, frame, keyframe)

    def on_sender_report(self, report: ReportTimes) -> None:
        """An RTCP sender report of this track's publisher."""
        self.last_report = report
        if self.allowed:
            for consumer in list(self.consumers):
                consumer.sender_report(report)

    def receiver_tap(self, on_bye: Callable[[], None]) -> ReceiverTap:
        """What the tapped receiver (or its layer's reassembly) hands this track: frames, packets, sender reports,
        lost pictures; ``on_bye`` when the publisher says goodbye."""
        return ReceiverTap(
            on_frame=self.on_frame,
            on_packet=self.on_packet,
            on_sender_report=self.on_sender_report,
            on_picture_lost=self.picture_lost,
            on_bye=on_bye,
        )

    def picture_lost(self) -> None:
        """The receive buffer gave up a frame after loss: ask now (the next frame is gated as ``resync``)."""
        if self._video:
            self._keyframes.broken = True
            self.request_keyframe(Reason.loss)

    def request_keyframe(self, reason: Reason) -> None:
        """Someone wants a keyframe of this track; a request goes to the publisher when
        :class:`~media.keyframes.KeyframeRequests` says so (coalesced, rate-limited)."""
        if not self._video or self.ended or (self.parent is not None and self.parent.ended):
            return
        if self.layers:
            # A simulcast video is its layers: whoever asks the track (a recorder's start) asks each layer.
            for layer in self.layers:
                layer.request_keyframe(reason)
            return
        if self._keyframes.ask(time.monotonic(), reason):
            self._send_request()

    def _send_request(self) -> None:
        if self._ssrc is None or self.ended or (self.parent is not None and self.parent.ended):
            return
        task = asyncio.ensure_future(self._send_pli(self._ssrc))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _unwrap(self, rtp_timestamp: int) -> int:
        if self._last_ts is not None and rtp_timestamp < self._last_ts and self._last_ts - rtp_timestamp > 1 << 31:
            self._ts_high += 1 << 32
        elif self._last_ts is not None and rtp_timestamp > self._last_ts and rtp_timestamp - self._last_ts > 1 << 31:
            return self._ts_high - (1 << 32) + rtp_timestamp  # a late frame from before a wrap
        self._last_ts = rtp_timestamp
        return self._ts_high + rtp_timestamp


LAYER_REASK = 1.0
"""Seconds a pending simulcast layer switch waits for the new layer's keyframe before asking for it again."""


class ForwardedTrack(MediaStreamTrack):
    """The track behind one subscriber sender: a bounded queue of encoded frames from one publisher at a time."""

    # What media/_fastpath.c's fan_hot reads of every subscriber at every frame: slots, not dict entries, so each read
    # is a fixed offset (the other attributes live in the instance dict aiortc's track has anyway).
    __slots__ = (
        "_clock_rate",
        "_last_out",
        "_last_out_time",
        "_offset",
        "_pending",
        "_queue",
        "_restart_sequence",
        "_sendable",
        "_sender",
        "forwarded",
        "gate",
        "hold_times",
        "pace_bps",
        "paused",
        "top_priority",
    )

    def __init__(self, kind: MediaKind, bound: int, max_age: float = 0.5) -> None:
        super().__init__()
        self.kind = kind
        self.bound = bound
        self.max_age = max_age
        """Seconds a frame may wait for the sender (e.g. before the subscriber connects) before it is stale."""
        self.publisher: PublishedTrack | None = None
        self.dropped = 0
        self.forwarded = 0
        self.hold_times: deque[float] = deque(maxlen=1024)
        """Seconds the last frames waited in the node, from reassembly to their sender taking them."""
        self._queue: deque[tuple[bytes, int, fractions.Fraction, float]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.gate: ConsumerGate | None = ConsumerGate() if kind == "video" else None
        """Video only: closed from a start, a switch or a queue overflow until a keyframe (media.keyframes)."""
        self._offset: int | None = None
        self._last_out: int | None = None
        self._last_out_time = 0.0
        self._clock_rate = 90_000
        self._time_base = fractions.Fraction(1, self._clock_rate)
        self._sender: FrameSender | None = None
        self._sendable = False
        """Whether the last frame found a sender that may send (attached, and its direction allows it)."""
        self._pulled = False
        """aiortc's own sender loop takes frames through :meth:`recv` (``direct_send`` off, or its fallback)."""
        self._restart_sequence = False
        """Video resumes after a pause: jump the sequence number first (``media.sending.SEQUENCE_JUMP``)."""
        self.paused = False
        """Bandwidth adaptation paused this video for the subscriber: frames are not sent (media.bandwidth)."""
        self.paused_frames = 0
        """Frames not sent because the slot was paused."""
        self.resumed_at = float("-inf")
        """When (monotonic) the last pause ended, or the slot took another publisher (its sequence numbers jumped)."""
        self._primed = False
        """Paused and primed (:meth:`prime`): the send queue keeps the frames from the next keyframe on for the
        resume, as it keeps them for a slot that cannot send yet."""
        self.primed_resumes = 0
        """Resumes that sent a keyframe kept while paused (:meth:`prime`), not one asked for then."""
        self.pace_bps: int | None = None
        """Bandwidth adaptation: the direct send path spreads this video's packets at this rate (the top video of a
        constrained subscriber; media.bandwidth.PacingBucket), None: each frame goes out at once."""
        self.keyframe_asks = 0
        """Keyframe requests (PLI, FIR) the subscriber sent about this slot."""
        self.repairs = RepairHold()
        """The top video's repair requests wait for a keyframe already on its way (media.keyframes.RepairHold)."""
        self.top_priority = False
        """Bandwidth adaptation: this is the top-priority video of a constrained subscriber; its repairs (PLI, loss
        it cannot get resent) ask the publisher urgently (``Reason.top``) instead of waiting for the throttle."""
        self.source: PublishedTrack | None = None
        """Where its frames come from: the publisher, or the simulcast layer of it forwarded now."""
        self._pending: PublishedTrack | None = None
        """A simulcast layer switched to: its frames are dropped until its first keyframe, then it is ``source``."""
        self._pending_asked = 0.0
        """When the pending layer was last asked for its keyframe (monotonic seconds)."""
        self.chooser = LayerChooser()
        """Simulcast: which layer this subscriber gets (media.simulcast), reset with each publisher."""
        self.tile: tuple[int, int] | None = None
        """Simulcast: the size (pixels) the subscriber shows this video at (None: not told)."""
        self.layer_budget: int | None = None
        """Simulcast with bandwidth adaptation: bit/s this video may take of the subscriber's link (None: any)."""
        self.layer_switches = 0
        """Simulcast layer switches carried out (at a keyframe of the new layer)."""

    @property
    def frame_sender(self) -> FrameSender | None:
        """The direct send path attached to this slot (None: aiortc's own loop, or not started yet)."""
        return self._sender

    @property
    def queued(self) -> int:
        """Frames waiting for the sender."""
        return len(self._queue)

    @property
    def rid(self) -> str | None:
        """The simulcast layer forwarded now (None: not a simulcast video)."""
        return None if self.source is None else self.source.rid

    def request_keyframe(self, reason: Reason) -> None:
        """Ask the source of the frames it forwards now for a keyframe (e.g. the subscriber's PLI)."""
        source = self.source or self.publisher
        if source is not None:
            source.request_keyframe(reason)

    def repair(self, reason: Reason, rtt: float | None = None) -> None:
        """The subscriber needs a keyframe to mend its picture (its PLI or FIR: ``Reason.subscriber``; loss the node
        cannot resend: ``Reason.repair``; ``rtt``: its round trip, seconds, if known).

        The top video of a constrained subscriber asks urgently (``Reason.top``), unless a keyframe is already on its
        way to it (:class:`~media.keyframes.RepairHold`); other videos ask through the publisher's throttle."""
        if self.top_priority:
            if not self.repairs.ask(time.monotonic(), rtt):
                return
            reason = Reason.top
        self.request_keyframe(reason)

    def assign(self, publisher: PublishedTrack | None) -> None:
        """Forward ``publisher`` from now on (``None``: nothing); video waits for a keyframe."""
        if publisher is self.publisher:
            return
        if self.source is not None:
            self.source.consumers.discard(self)
        if self._pending is not None:
            self._pending.consumers.discard(self)
        self.source = self._pending = None
        self.chooser = LayerChooser()
        self.publisher = publisher
        self._queue.clear()
        self._offset = None
        self._sendable = False
        self.paused = False  # a pause is about one publisher for one subscriber: the node decides anew
        self._primed = False
        if publisher is not None:
            self._restart_sequence = self.kind == "video" and self.forwarded > 0
            if self._restart_sequence:
                # Its receiver counts the sequence numbers the jump skips as lost and NACKs them: not the link's
                # loss (the node reads a slot's NACKs as such only _RESUME_NACKS after this).
                self.resumed_at = time.monotonic()
            self._clock_rate = publisher.clock_rate
            self._time_base = fractions.Fraction(1, self._clock_rate)
            source = publisher
            if publisher.layers:
                index = best_layer(publisher.layer_infos(time.monotonic()), self.tile, self.layer_budget)
                source = publisher.layers[index] if index is not None else publisher.top_layer()
                self.chooser.current = source.rid
            self.source = source
            source.consumers.add(self)
            if self.gate is not None:
                source.request_keyframe(self.gate.start())

    def select_layer(self, rid: str) -> bool:
        """Forward the publisher's simulcast layer ``rid`` from its next keyframe on (asked for now); until then
        the current layer goes on. Sequence numbers and timestamps continue across the switch. True if a switch
        started (or, when nothing is sent now, happened)."""
        publisher = self.publisher
        layer = publisher.layer(rid) if publisher is not None else None
        if layer is None:
            return False
        if layer is self._pending:
            # Still waiting for its keyframe: ask again now and then. A browser ignores a request that comes less
            # than 300 ms after its last keyframe (libwebrtc's EncoderRtcpFeedback), e.g. one made for another
            # subscriber's switch to this layer, and nothing else would make one: the slot would wait for ever.
            now = time.monotonic()
            if now - self._pending_asked >= LAYER_REASK:
                self._pending_asked = now
                layer.request_keyframe(Reason.layer)
            return False
        if self._pending is not None:
            self._pending.consumers.discard(self)
            self._pending = None
        if layer is self.source:
            return False
        if self.paused or self.source is None:
            # Nothing goes out now: take the layer at once; resume asks it for its keyframe.
            if self.source is not None:
                self.source.consumers.discard(self)
            self.source = layer
            layer.consumers.add(self)
            self._offset = None
            self.layer_switches += 1
            if self._primed:
                self.unprime()  # (what it kept is the old layer's: the resume needs the new layer's keyframe)
                self.prime()
            return True
        self._pending = layer
        self._pending_asked = time.monotonic()
        layer.consumers.add(self)
        layer.request_keyframe(Reason.layer)
        return True

    def _switch_layer(self) -> None:
        """The pending layer's keyframe came: it is the source from now on, on the same timeline."""
        pending = self._pending
        assert pending is not None
        if self.source is not None:
            self.source.consumers.discard(self)
        self.source = pending
        self._pending = None
        # Re-based on the wall clock like a publisher switch (_pts), but with no sequence jump: to the subscriber's
        # decoder it is one stream that got a keyframe of another size.
        self._offset = None
        self.layer_switches += 1

    def pause(self) -> None:
        """Stop sending the publisher's frames to this subscriber (its link cannot take them); they are dropped."""
        if not self.paused:
            self.paused = True
            self._queue.clear()
            self._primed = False

    def prime(self) -> None:
        """A resume of this paused video may come soon (a padding probe sized for it sent its padding, and its
        verdict is awaited): ask for a keyframe now, and keep the frames from it on while paused, so that the resume
        sends them at once instead of asking then and waiting for the publisher's keyframe (0.1-0.15 s after a
        lifted limit in the thin-link test). The frames wait in the send queue, gated and bounded as for a slot that
        cannot send yet (not on aiortc's own send loop, which takes what is queued); dropped by :meth:`unprime` (the
        probe failed), a pause or another publisher."""
        gate = self.gate
        primable = gate is not None and self.publisher is not None and self._pending is None and not self._pulled
        if self.paused and primable and not self._primed and gate is not None:
            self._primed = True
            self._queue.clear()
            gate.start()  # (closed until the keyframe asked for now)
            self.request_keyframe(Reason.resume)

    def unprime(self) -> None:
        """Keep no frames for a resume (the probe :meth:`prime` was for failed)."""
        if self._primed:
            self._primed = False
            self._queue.clear()

    @property
    def primed(self) -> int:
        """Frames kept for a resume (:meth:`prime`): a keyframe and those after it; 0: none."""
        return len(self._queue) if self._primed else 0

    def resume(self) -> None:
        """Send again from the next keyframe: the one kept since :meth:`prime`, with the frames after it, at once;
        else one asked for now. Sequence numbers continue where they stopped."""
        if self.paused:
            self.paused = False
            self.resumed_at = time.monotonic()
            primed = self._primed and bool(self._queue)  # (from a keyframe: the gate it opened stays open)
            self._primed = False
            if self.gate is not None and self.publisher is not None:
                if primed:
                    self.primed_resumes += 1
                    sender = self._sender
                    if sender is not None and sender.enabled:
                        self._flush(sender)
                else:
                    self.gate.start()
                    self.request_keyframe(Reason.resume)

    def attach(self, sender: FrameSender | None) -> None:
        """Send frames through ``sender`` as they come (``None``: queue them); what is queued goes out now."""
        self._sender = sender
        if sender is not None and sender.enabled:
            self._became_sendable()
            self._flush(sender)

    def _flush(self, sender: FrameSender) -> None:
        while self._queue and self._sender is sender:
            data, pts, _, arrival = self._queue.popleft()
            self._send(sender, data, pts, arrival, None)

    def _send(self, sender: FrameSender, data: bytes, pts: int, arrival: float, frame: TappedFrame | None) -> None:
        if self._restart_sequence:
            self._restart_sequence = False
            sender.skip(SEQUENCE_JUMP)
        if sender.send(data, pts, self._clock_rate, frame):
            self.forwarded += 1
            self.hold_times.append(time.time() - arrival)

    def _became_sendable(self) -> None:
        """The subscriber may receive from now on (its answer arrived, or its sender started)."""
        if not self._sendable:
            self._sendable = True
            if self.gate is not None and self.publisher is not None:
                # Whatever keyframe came while it could not send is gone: a new receiver gets one now,
                # not after the throttle.
                reason = self.gate.sendable()
                if reason is not None:
                    self.request_keyframe(reason)

    def push(self, frame: TappedFrame, keyframe: bool) -> None:
        """A frame of the assigned publisher; gated video waits for a keyframe; sent now, or queued (bounded).

        The decisions are :meth:`prepare`'s; :func:`media.fanout.fan_out` makes them for all of a publisher's
        subscribers and then sends their frames with one native call."""
        ready = self.prepare(frame, keyframe)
        if ready is not None:
            sender, pts, clock_rate = ready
            if sender.send(frame.data, pts, clock_rate, frame):
                self.forwarded += 1
                self.hold_times.append(time.time() - frame.arrival)

    def sender_report(self, report: ReportTimes) -> None:
        """Subscribers get the node's own sender reports (aiortc's sender makes them)."""

    def _pts(self, source_pts: int) -> int:
        # Keep the outgoing timeline continuous across publisher switches: continue where the
        # previous publisher left off, advanced by the wall-clock time that passed.
        now = time.monotonic()
        if self._offset is None:
            if self._last_out is None:
                target = 0
            else:
                elapsed = int((now - self._last_out_time) * self._clock_rate)
                target = self._last_out + max(elapsed, 1)
            self._offset = target - source_pts
        pts = source_pts + self._offset
        self._last_out = pts
        self._last_out_time = now
        return pts

    async def recv(self) -> Any:
        """The next encoded frame as an ``av.Packet`` (the sender packs it without encoding)."""
        if not self._pulled:
            # aiortc's own sender loop runs: it can send from now on (what attach() tells on the direct path).
            self._pulled = True
            reason = self.gate.sendable() if self.gate is not None and self.publisher is not None else None
            if reason is not None and self.publisher is not None:
                self.request_keyframe(reason)
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data, pts, time_base, arrival = self._queue.popleft()
        self.hold_times.append(time.time() - arrival)
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = time_base
        self.forwarded += 1
        return packet

    def stop(self) -> None:
        """End the track: the sender's loop stops."""
        self.assign(None)
        super().stop()
        if self._sender is not None:
            self._sender.close("track_ended")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def prepare(self, frame: TappedFrame, keyframe: bool) -> tuple[FrameSender, int, int] | None:
        """What :meth:`push` does before it sends: gating, pause, queue (same order, same counters). Returns the
        sender, the frame's outgoing pts and its clock rate when the frame is to be sent now (what was queued went
        first, and a resumed video's sequence jump is made); None when it was dropped, paused or queued.

        The caller sends ``frame.data`` with ``sender.send`` (or batched, :mod:`media.fanout`) and, if it went out,
        counts it in :attr:`forwarded` and :attr:`hold_times`, as :meth:`push` does."""
        if self.readyState != "live":
            return None
        kept = self.paused  # (primed: kept in the send queue for the resume, as when it cannot send yet)
        if kept:
            self.paused_frames += 1
            if not self._primed or frame.origin is not (self.source or self.publisher):
                return None
        if self._pending is not None and frame.origin is not self.source:
            # A simulcast layer switch waits for the new layer's keyframe; its other frames are not for us yet.
            if frame.origin is not self._pending or not keyframe:
                return None
            self._switch_layer()
        sender = None if kept else self._sender
        if sender is not None and not sender.enabled:
            # The direction forbids sending for now (an offer is pending): hold frames in the bounded queue,
            # so the keyframe asked for this subscriber is still there when it may send.
            sender = None
        if sender is None and not kept:
            self._sendable = False
        elif not self._sendable:
            self._became_sendable()
        gate = self.gate
        if gate is not None:
            admitted, reason = gate.admit(keyframe, can_send=sender is not None or self._pulled)
            if reason is not None and self.publisher is not None:
                # Only while it can send (a keyframe now would be lost on it otherwise); throttled by the
                # publisher's KeyframeRequests. When it becomes able to send it asks urgently (_became_sendable).
                self.request_keyframe(reason)
            if not admitted:
                self.dropped += 1
                return None
            if sender is None and (
                len(self._queue) >= self.bound or (self._queue and frame.arrival - self._queue[0][3] > self.max_age)
            ):
                # The sender fell behind: a partial run of deltas is useless, skip to the next keyframe.
                self._queue.clear()
                self.dropped += 1
                if not keyframe:
                    gate.lose()
                    return None
        else:
            while self._queue and (len(self._queue) >= self.bound or frame.arrival - self._queue[0][3] > self.max_age):
                self._queue.popleft()
                self.dropped += 1
        if sender is not None:
            if self._queue:
                self._flush(sender)
            if self._restart_sequence:
                self._restart_sequence = False
                sender.skip(SEQUENCE_JUMP)
            if keyframe and gate is not None:
                # When its last packet leaves: a paced keyframe waits behind the pacer's backlog.
                pace = self.pace_bps
                delay = min((sender.backlog_bytes + len(frame.data)) * 8 / pace, PACE_MAX_DELAY) if pace else 0.0
                self.repairs.keyframe_sent(time.monotonic() + delay)
            elif self.top_priority and self.repairs.deferred and self.repairs.due(time.monotonic()):
                self.request_keyframe(Reason.top)  # a repair held for the last keyframe, which did not serve it
            return sender, self._pts(frame.timestamp), self._clock_rate
        self._queue.append((frame.data, self._pts(frame.timestamp), self._time_base, frame.arrival))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        return None


serve_hot(ForwardedTrack)  # its steady-state frames go out in C (media/_fastpath.c, fan_hot)


class RecorderFeed:
    """One published track as a recorder's :class:`FrameSink` sees it.

    A simulcast video is recorded in its largest layer that is flowing: a browser adds its upper layers only as
    its bandwidth estimate grows (the full layer often comes 10-20 s after the first), and drops them on a thin
    link. :meth:`follow_layers` (the node calls it every health tick) moves the feed to the largest flowing layer,
    at that layer's keyframe; its RTP timestamps (and sender reports) are carried onto the first layer's timeline,
    so the archive sees one stream that changes size at a keyframe.
    """

    def __init__(self, sink: FrameSink, publisher: PublishedTrack) -> None:
        self.sink = sink
        self.publisher = publisher
        self.source = publisher
        """What it records: the publisher, or the largest flowing layer of a simulcast video."""
        if publisher.layers:
            self.source = self._largest_flowing() or publisher.top_layer()
        self._pending: PublishedTrack | None = None
        self._pending_asked = 0.0
        self._ts_offset = 0
        """Added to the source's RTP timestamps (mod 2**32): 0 until a layer switch."""
        self._last: tuple[int, float] | None = None
        """The last recorded frame's RTP timestamp (after the offset) and arrival."""
        self.gate: ConsumerGate | None = ConsumerGate() if publisher.kind == "video" else None
        self.delivered = 0
        self.layer_switches = 0

    def _largest_flowing(self) -> PublishedTrack | None:
        infos = self.publisher.layer_infos(time.monotonic())
        flowing = [i for i in order_layers(infos) if infos[i].active]
        return self.publisher.layers[flowing[-1]] if flowing else None

    def start(self) -> None:
        """Announce the track to the sink and start taking frames (video from the next keyframe)."""
        p = self.publisher
        self.sink.track_started(
            TrackInfo(
                hearing_id=p.hearing_id,
                track_id=p.recording_id,
                participant_id=p.participant_id,
                source=p.source,
                kind=p.kind,
                codec=p.codec_name,
                clock_rate=p.clock_rate,
            )
        )
        source = self.source
        source.consumers.add(self)
        if source.last_report is not None:
            self.sender_report(source.last_report)
        if self.gate is not None:
            source.request_keyframe(self.gate.start())

    def stop(self, reason: str) -> None:
        """Stop taking frames and tell the sink why."""
        self.source.consumers.discard(self)
        if self._pending is not None:
            self._pending.consumers.discard(self)
            self._pending = None
        self.sink.track_stopped(self.publisher.recording_id, reason)

    def follow_layers(self) -> None:
        """A simulcast video: move to the largest flowing layer (from its next keyframe, asked for now)."""
        if not self.publisher.layers:
            return
        best = self._largest_flowing()
        if best is not None and best is self._pending:
            # Its keyframe has not come: ask again now and then (a browser ignores a request too soon after its
            # last keyframe; see LAYER_REASK).
            now = time.monotonic()
            if now - self._pending_asked >= LAYER_REASK:
                self._pending_asked = now
                best.request_keyframe(Reason.layer)
            return
        if best is None or best is self.source:
            return
        if self._pending is not None:
            self._pending.consumers.discard(self)
        if self.delivered == 0:
            # Nothing recorded yet: no timeline to keep, take it at once.
            self.source.consumers.discard(self)
            self.source = best
            self._pending = None
            best.consumers.add(self)
            if self.gate is not None:
                best.request_keyframe(self.gate.start())
            return
        self._pending = best
        self._pending_asked = time.monotonic()
        best.consumers.add(self)
        best.request_keyframe(Reason.layer)

    def _switch(self, frame: TappedFrame) -> None:
        """The pending layer's keyframe came: record that layer from now on, on the same RTP timeline."""
        new = self._pending
        assert new is not None
        old = self.source
        clock = self.publisher.clock_rate
        if old.last_report is not None and new.last_report is not None:
            # Both layers' sender reports map RTP time to the publisher's one NTP clock.
            at_old = old.last_report.rtp_timestamp + self._ts_offset
            drift = round((new.last_report.ntp_time - old.last_report.ntp_time) * clock)
            self._ts_offset = (at_old + drift - new.last_report.rtp_timestamp) & 0xFFFFFFFF
        elif self._last is not None:
            last_ts, last_arrival = self._last
            target = last_ts + max(1, round((frame.arrival - last_arrival) * clock))
            self._ts_offset = (target - frame.rtp_timestamp) & 0xFFFFFFFF
        old.consumers.discard(self)
        self.source = new
        self._pending = None
        self.layer_switches += 1

    def push(self, frame: TappedFrame, keyframe: bool) -> None:
        """Hand one frame to the sink (video from the first keyframe on)."""
        if self._pending is not None and frame.origin is not self.source:
            if frame.origin is not self._pending or not keyframe:
                return
            self._switch(frame)
        if self.gate is not None:
            # The request made at start may be lost (RTCP on a busy link): ask again, throttled, until one comes.
            admitted, reason = self.gate.admit(keyframe, can_send=True)
            if reason is not None:
                self.source.request_keyframe(reason)
            if not admitted:
                return
        self.delivered += 1
        rtp_timestamp = (frame.rtp_timestamp + self._ts_offset) & 0xFFFFFFFF
        self._last = (rtp_timestamp, frame.arrival)
        self.sink.frame(
            EncodedFrame(
                track_id=self.publisher.recording_id,
                payload=frame.data,
                rtp_timestamp=rtp_timestamp,
                keyframe=keyframe,
                arrival=frame.arrival,
            )
        )

    def sender_report(self, report: ReportTimes) -> None:
        """Hand the publisher's sender report to the sink (of the recorded layer only, on the feed's timeline)."""
        if self.source.layers or (self.source is not self.publisher and report is not self.source.last_report):
            return
        self.sink.sender_report(
            SenderReport(
                track_id=self.publisher.recording_id,
                ntp_time=report.ntp_time,
                rtp_timestamp=(report.rtp_timestamp + self._ts_offset) & 0xFFFFFFFF,
            )
        )


def _since_active(rate: int, active_since: float | None, now: float) -> int:
    """A meter's ``rate`` (over :data:`METER_WINDOW`) of a stream that has been flowing only since ``active_since``:
    scaled to that time (at least :data:`_ACTIVE_MIN_SPAN`: a just started stream is read at ten times its first
    bytes, rather than as nearly free)."""
    if active_since is None:
        return rate
    span = now - active_since
    if span >= METER_WINDOW:
        return rate
    return int(rate * METER_WINDOW / max(span, _ACTIVE_MIN_SPAN))


_ACTIVE_MIN_SPAN = METER_WINDOW / 10
"""The shortest time a restarted stream's rate is scaled to (:func:`_since_active`)."""
