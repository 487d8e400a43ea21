"""Network-check probes: a short-lived peer that echoes a client's media back to it, before the client joins.

The client offers its preview audio and video (``sendrecv``); the probe
answers on the same m-lines and sends every received frame straight back,
by encoded passthrough (the node's forwarding path: a ``PublishedTrack`` per
received track, a ``ForwardedTrack`` on the same transceiver's sender). The
client then reads round-trip time (ICE candidate pair, RTCP) and its sending
and receiving bitrate from ``getStats``. A probe belongs to no room; it
closes when the client closes, when its connection fails, or after its
lifetime, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription

from media.aiortc_compat import on_keyframe_request
from media.forwarding import ForwardedTrack, PublishedTrack
from media.ice import PORTS_EXHAUSTED, PortRangeExhausted, restrict_host_candidates, rtc_configuration
from media.keyframes import Reason
from media.passthrough import tap_receiver
from media.peer import DEFAULT_SOURCE, NegotiationError, check_sdp, first_codec
from media.sending import install
from media.settings import NodeSettings
from protocol.node import MediaKind

log = structlog.get_logger(__name__)


class Probe:
    """One network-check peer connection of one participant."""

    def __init__(
        self, *, hearing_id: str, participant_id: str, settings: NodeSettings, on_closed: Callable[[Probe], None]
    ) -> None:
        self.hearing_id = hearing_id
        self.participant_id = participant_id
        self.settings = settings
        self.pc = RTCPeerConnection(configuration=rtc_configuration(settings.ice_servers))
        self.echoes: list[tuple[PublishedTrack, ForwardedTrack]] = []
        self.closed = False
        self._on_closed = on_closed
        self._timer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

        @self.pc.on("connectionstatechange")
        def _state_changed() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.close_soon(str(self.pc.connectionState))

    async def answer(self, sdp: str) -> str:
        """Apply the client's offer, echo each track it sends on the same m-line; return the answer."""
        check_sdp(sdp)
        self._timer = asyncio.ensure_future(self._expire())
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, OperationError, InvalidStateError...
            raise NegotiationError("invalid_sdp", f"offer not applied: {exc}") from exc
        for transceiver in self.pc.getTransceivers():
            if transceiver.receiver.track is None or transceiver.kind not in ("audio", "video"):
                continue
            self._echo(transceiver)
        restrict_host_candidates(self.pc, self.settings.announce_addresses, self.settings.udp_ports)
        answer = await self.pc.createAnswer()
        try:
            await self.pc.setLocalDescription(answer)  # gathers the host candidates
        except PortRangeExhausted as exc:
            raise NegotiationError(PORTS_EXHAUSTED, f"the media node has no free UDP port now: {exc}") from exc
        return str(self.pc.localDescription.sdp)

    def _echo(self, t: RTCRtpTransceiver) -> None:
        kind: MediaKind = "audio" if t.kind == "audio" else "video"
        published = PublishedTrack(
            hearing_id=self.hearing_id,
            participant_id=self.participant_id,
            track_id=str(t.receiver.track.id),
            kind=kind,
            source=DEFAULT_SOURCE[kind],
            receiver=t.receiver,
            keyframe_interval=self.settings.keyframe_interval,
            on_refused=lambda _p: None,
            on_audio_level=lambda _p, _level: None,
        )
        published.codec_name, published.clock_rate = first_codec(t)
        published.set_allowed(True)
        s = self.settings
        echo = ForwardedTrack(kind, s.video_queue_frames if kind == "video" else s.audio_queue_packets, s.queue_max_age)
        # Same m-line, same codec: the answer's first codec is the one both directions use.
        t.sender.replaceTrack(echo)
        t.direction = "sendrecv"

        def keyframe_requested() -> None:
            published.request_keyframe(Reason.subscriber)  # pack mode drops PLI: carry it to the client's sender

        on_keyframe_request(t.sender, keyframe_requested)
        if s.direct_send:
            install(t.sender, echo)
        echo.assign(published)
        tap_receiver(t.receiver, kind, published.receiver_tap(lambda: self.close_soon("bye")))
        self.echoes.append((published, echo))

    async def _expire(self) -> None:
        await asyncio.sleep(self.settings.probe_lifetime)
        self.close_soon("lifetime")

    def close_soon(self, reason: str) -> None:
        """Close from a callback (connection state, timer): the work runs in its own task."""
        if self.closed or self._closing is not None:
            return
        self._closing = asyncio.ensure_future(self.close(reason))

    async def close(self, reason: str) -> None:
        """Stop echoing and close the connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
        for published, echo in self.echoes:
            published.ended = True
            published.consumers.clear()
            echo.stop()
        self._on_closed(self)
        with contextlib.suppress(Exception):
            await self.pc.close()
        log.info("probe_closed", hearing_id=self.hearing_id, participant_id=self.participant_id, reason=reason)
