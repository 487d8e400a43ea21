"""One participant's peer connection on the node: what it publishes, what it receives, and its SDP exchanges.

The client offers first (its published tracks); the node answers. Whatever the
participant receives travels on node-added ``sendonly`` transceivers — slots —
and every change of slots is negotiated by a node offer (an ``Offer`` event)
that the client answers. Only one offer is in flight per peer: changes made
meanwhile are folded into the next one. A client offer that crosses a node
offer is refused (``renegotiation_pending``): aiortc cannot roll back, so the
node is the impolite side (docs/protocol.md, "Negotiation"):

- the refusal re-sends the node's pending offer, so the refused client always
  has an offer to answer and never needs to retry on a timer;
- a node offer unanswered for ``offer_timeout`` seconds is sent once more;
  unanswered again it is dropped and the peer reported lost (``PeerLost``
  ``offer_timeout``): aiortc cannot roll an offer back, so signaling replaces
  the peer and the client makes a new one (media restart);
- the node never offers before the client's first offer was answered (a
  new or replaced peer waits for the client).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription

from media import receiving
from media.aiortc_compat import (
    CODECS,
    DYNAMIC_PAYLOAD_TYPES,
    RTCRtcpFeedback,
    SessionDescription,
    enable_header_extensions,
    find_common_codecs,
    gate_retransmit,
    negotiated_codecs,
    negotiated_header_extensions,
    offer_direction,
    on_keyframe_request,
    on_loss_feedback,
    on_remb,
    route_by_mid,
    sender_rtt,
    set_negotiated,
)
from media.bandwidth import LossSignal, NackBudget, RepairTrigger, ResendGuard
from media.forwarding import ForwardedTrack, PublishedTrack
from media.ice import PORTS_EXHAUSTED, PortRangeExhausted, restrict_host_candidates, rtc_configuration
from media.keyframes import Reason
from media.reports import SenderReports
from media.sending import install, resend_allowed, rtp_age
from media.settings import NodeSettings
from media.simulcast import OfferedLayers, offered_layers, with_simulcast
from protocol.node import MediaKind, TrackRef
from rooms.model import Role, Source

log = structlog.get_logger(__name__)

CLOSE_SECONDS = 10.0
"""Seconds :meth:`Peer.close` waits for aiortc's close (transceivers, SCTP, DTLS and ICE stopped) before it goes on
without it: a node leaving a hearing, or shutting down, is not held by one connection."""

DEFAULT_SOURCE: dict[str, Source] = {"audio": Source.microphone, "video": Source.camera}

SOURCE_KIND: dict[Source, str] = {Source.microphone: "audio", Source.camera: "video", Source.evidence: "video"}
"""The only media kind each source may carry."""

MAX_SENDING_MLINES = 3
"""Sending media sections one SDP may carry: a microphone, a camera and an evidence source."""

MAX_MLINES = 256
"""Media sections one SDP may carry in all (sending, receiving and rejected), whatever the hearing's size.

A participant's re-offer lists every receive slot the node added (audio of
everyone permitted plus last-N video); :func:`offer_mline_limit` is the limit
that applies, from the hearing's size.
"""

SLOTS_PER_PUBLISHER = 3
"""Receive slots one other participant can fill at most: their microphone, camera and evidence."""

MLINE_MARGIN = 4
"""Spare media sections in an offer (a slot left over after a codec change, a data channel)."""

MAX_SDP_BYTES = 256 * 1024
"""An SDP larger than this is refused before it is parsed (a full hearing's offer is a few tens of KiB)."""

_SENDING_DIRECTIONS = frozenset({"sendrecv", "sendonly"})


class NegotiationError(Exception):
    """An SDP exchange could not be carried out; ``code`` is the ``Refused`` code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Slot:
    """A node-added sendonly transceiver and the forwarded track behind its sender."""

    transceiver: RTCRtpTransceiver
    track: ForwardedTrack
    kind: MediaKind
    codec: str
    negotiated_active: bool = False
    """Whether the last completed negotiation left it ``sendonly`` (False: ``inactive`` or not yet answered)."""
    intended: bool | None = None
    """Whether the node's last SDP (offer or answer) asked to send on it; None before any."""
    sent_packets: int = 0
    """The sender's packet count at the last health tick."""
    sent_at: float | None = None
    """``time.monotonic()`` of the health tick that last saw that count grow."""

    @property
    def mid(self) -> str | None:
        """The slot's media id once offered."""
        mid = self.transceiver.mid
        return None if mid is None else str(mid)


class Peer:
    """A participant's peer connection and forwarding state."""

    def __init__(
        self,
        *,
        hearing_id: str,
        participant_id: str,
        role: Role,
        settings: NodeSettings,
        on_track: Callable[[Peer, RTCRtpTransceiver], PublishedTrack],
        on_offer: Callable[[Peer, str], None],
        on_state: Callable[[Peer, str], None],
        on_slots_changed: Callable[[Peer], None],
        on_lost: Callable[[Peer, str], None] | None = None,
        on_remb: Callable[[Peer, int, list[int]], None] | None = None,
        on_loss: Callable[[Peer, LossSignal], None] | None = None,
        reports: SenderReports | None = None,
    ) -> None:
        self.hearing_id = hearing_id
        self.participant_id = participant_id
        self.role = role
        self.settings = settings
        self.pc = RTCPeerConnection(configuration=rtc_configuration(settings.ice_servers))
        self.published: dict[str, PublishedTrack] = {}
        """Published tracks by the media id of their transceiver."""
        self.slots: list[Slot] = []
        self.wanted: list[PublishedTrack] = []
        """What this participant should receive now; slots follow at the next negotiation."""
        self.closed = False
        self.last_tracks: tuple[TrackRef, ...] | None = None
        self._on_track = on_track
        self._on_offer = on_offer
        self._on_slots_changed = on_slots_changed
        self._on_lost = on_lost
        self._on_remb = on_remb
        self._on_loss = on_loss
        """Bandwidth adaptation: ``(peer, signal)`` per receiver report block and per NACK of the subscriber."""
        self._reports = reports
        """Sends the sender reports of this peer's senders (the node's one timer); None: aiortc's task per sender."""
        self.nack_budget: NackBudget | None = NackBudget(settings.nack_budget_share) if settings.adaptation else None
        """The participant's resend budget as a subscriber (bandwidth adaptation on), shared by its slots."""
        self._lock = asyncio.Lock()
        self._renegotiation_queued = False
        self._renegotiation_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self.client_offered = False
        """The client's first offer was applied; the node offers only after that."""
        self.pending_offer: str | None = None
        """The node's offer the client has not answered yet."""
        self.offer_resends = 0
        """How often the pending offer was re-sent after a timeout (once, then it is dropped)."""
        self.refusals = 0
        """Client offers refused with ``renegotiation_pending`` over the peer's life (metrics, tests)."""
        self._offer_timer: asyncio.TimerHandle | None = None
        self._sdp_version = 0
        self.lost_reported = False
        """``PeerLost`` was emitted for this peer (once per peer)."""
        self.simulcast: dict[str, OfferedLayers] = {}
        """Videos the client publishes in simulcast, by media id: the layers the node answered it would receive."""
        self.tiles: dict[str, tuple[int, int]] = {}
        """The size (pixels) the client shows each video it receives at, by media id (its ``view`` message)."""

        @self.pc.on("connectionstatechange")
        def _state_changed() -> None:
            on_state(self, str(self.pc.connectionState))

    # --- client-initiated exchange ------------------------------------------------------------

    async def apply_offer(self, sdp: str) -> str:
        """Apply the client's offer and return the node's answer."""
        async with self._lock:
            if self.closed:
                raise NegotiationError("no_such_peer", "the peer is closed")
            if self.pc.signalingState != "stable":
                self.refusals += 1
                if self.pending_offer is not None:
                    # The refused client gets the node's offer (again) to answer: a lost or crossed offer never
                    # leaves both sides waiting for each other.
                    self._on_offer(self, self.pending_offer)
                raise NegotiationError("renegotiation_pending", "answer the node's offer first, then offer again")
            check_sdp(sdp)
            layers = self._offered_layers(sdp)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc raises ValueError, OperationError, InvalidStateError...
                raise NegotiationError("invalid_sdp", f"offer not applied: {exc}") from exc
            self.simulcast = layers
            self._keep_simulcast()
            self._adopt_published()
            receiving.install(self.pc)  # the native receive path, where it applies (media/receiving.py)
            restrict_host_candidates(self.pc, self.settings.announce_addresses, self.settings.udp_ports)
            self._note_intended()
            answer = await self.pc.createAnswer()
            try:
                await self.pc.setLocalDescription(answer)  # gathers the host candidates
            except PortRangeExhausted as exc:
                raise NegotiationError(PORTS_EXHAUSTED, f"the media node has no free UDP port now: {exc}") from exc
            self._mark_negotiated()
            self.client_offered = True
            sdp_answer = with_simulcast(with_audio_repair(str(self.pc.localDescription.sdp)), self._simulcast_rids())
        if self._renegotiation_queued or self._slots_differ():
            self.request_renegotiation()  # e.g. slots wanted before the client's first offer
        return sdp_answer

    def _offered_layers(self, sdp: str) -> dict[str, OfferedLayers]:
        """The simulcast the node takes from this offer, by mid: new videos as offered (when simulcast is on);
        a video published before keeps the layers it has (those still offered), or none."""
        offered, ignored = offered_layers(sdp) if self.settings.simulcast else ({}, {})
        for mid, reason in ignored.items():
            log.info(
                "simulcast_ignored",
                hearing_id=self.hearing_id,
                participant_id=self.participant_id,
                mid=mid,
                reason=reason,
            )
        taken: dict[str, OfferedLayers] = {}
        for mid, layers in offered.items():
            before = self.simulcast.get(mid)
            if before is not None:
                rids = tuple(r for r in before.rids if r in layers.rids)
                if len(rids) >= 2:
                    taken[mid] = OfferedLayers(mid=mid, rids=rids, extensions=before.extensions)
            elif mid not in self.published:
                # Layers are set up when the node first taps the video: a video already published as one stream
                # stays one stream (the client is answered without simulcast and sends one layer).
                taken[mid] = layers
        return taken

    def _simulcast_rids(self) -> dict[str, tuple[str, ...]]:
        return {mid: layers.rids for mid, layers in self.simulcast.items()}

    def _keep_simulcast(self) -> None:
        """After each remote description: aiortc recomputed each m-line's header extensions from its own list;
        put back the ones that name simulcast layers, and route the layers by mid."""
        if not self.simulcast:
            return
        for transceiver in self.pc.getTransceivers():
            layers = self.simulcast.get(str(transceiver.mid)) if transceiver.mid is not None else None
            if layers is not None:
                enable_header_extensions(transceiver, layers.extensions)
                route_by_mid(transceiver)

    def remote_track_id(self, transceiver: RTCRtpTransceiver) -> str:
        """The id the client gave a track it publishes: the track id of its m-line's ``a=msid`` (the browser's
        ``MediaStreamTrack.id``).

        aiortc names the remote track after the msid only when the session also lists the stream under
        ``a=msid-semantic: WMS`` (browsers no longer do), else it makes up a random id that no ``DeclareTrack``
        can name. The SSRC-level ``msid`` is the fallback; aiortc's id the last resort.
        """
        description = self.pc.remoteDescription
        if description is not None and transceiver.mid is not None:
            try:
                parsed = SessionDescription.parse(description.sdp)
            except Exception:
                parsed = None
            media = next((m for m in parsed.media if m.rtp.muxId == transceiver.mid), None) if parsed else None
            if media is not None:
                for msid in [media.msid, *(s.msid for s in media.ssrc)]:
                    bits = str(msid or "").split()
                    if len(bits) >= 2 and bits[1] not in ("-", ""):
                        return bits[1]
        return str(transceiver.receiver.track.id)

    def _adopt_published(self) -> None:
        """Tap every new receiving transceiver and mark tracks the client stopped sending."""
        slot_transceivers = {id(s.transceiver) for s in self.slots}
        for transceiver in self.pc.getTransceivers():
            if id(transceiver) in slot_transceivers or transceiver.mid is None:
                continue
            mid = str(transceiver.mid)
            sending = offer_direction(transceiver) in ("recvonly", "sendrecv")
            known = self.published.get(mid)
            if known is None and sending and transceiver.receiver.track is not None:
                self.published[mid] = self._on_track(self, transceiver)
            elif known is not None and not sending:
                known.ended = True

    # --- node-initiated exchange --------------------------------------------------------------

    def request_renegotiation(self) -> None:
        """Negotiate the wanted slots soon (one exchange in flight; later changes fold into the next)."""
        if self.closed:
            return
        self._renegotiation_queued = True
        if self._renegotiation_task is None or self._renegotiation_task.done():
            self._renegotiation_task = asyncio.ensure_future(self._renegotiate())

    async def _renegotiate(self) -> None:
        # Yield once so the reply that triggered this (e.g. an SdpAnswer) reaches the client first.
        await asyncio.sleep(0)
        async with self._lock:
            if self.closed or not self._renegotiation_queued or self.pc.signalingState != "stable":
                return
            if not self.client_offered:
                return  # stays queued: the client offers first, the answer to it replans
            self._renegotiation_queued = False
            changed = self._fit_slots()
            if not changed:
                self._on_slots_changed(self)
                return
            restrict_host_candidates(self.pc, self.settings.announce_addresses, self.settings.udp_ports)
            self._note_intended()
            try:
                negotiated = negotiated_rtp(self.pc.getTransceivers())
                offer = await self.pc.createOffer()
                sdp = keep_negotiated_numbers(offer.sdp, negotiated, self.pc.getTransceivers())
                sdp = self._next_version(with_audio_repair(sdp))
                await self.pc.setLocalDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except PortRangeExhausted:
                # A receive-only participant's first node offer gathers its candidates: none can be bound. aiortc
                # cannot gather again on this connection: signaling replaces the peer (the client is told why).
                log.warning("udp_ports_exhausted", hearing_id=self.hearing_id, participant_id=self.participant_id)
                if self._on_lost is not None:
                    self._on_lost(self, PORTS_EXHAUSTED)
                return
            except Exception:
                log.exception("renegotiation_failed", hearing_id=self.hearing_id, participant_id=self.participant_id)
                return
            # The offer must say again what the client's simulcast m-lines receive, or the browser drops to one layer.
            self.pending_offer = with_simulcast(str(self.pc.localDescription.sdp), self._simulcast_rids())
            self.offer_resends = 0
            self._arm_offer_timer()
            self._on_offer(self, self.pending_offer)
            self._on_slots_changed(self)

    async def apply_answer(self, sdp: str) -> None:
        """Apply the client's answer to the node's offer; a queued change starts the next offer."""
        async with self._lock:
            if self.closed:
                raise NegotiationError("no_such_peer", "the peer is closed")
            if self.pc.signalingState != "have-local-offer":
                raise NegotiationError("no_offer_pending", "the node has no offer waiting for an answer")
            check_sdp(sdp, offer=False)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise NegotiationError("invalid_sdp", f"answer not applied: {exc}") from exc
            self._keep_simulcast()
            receiving.install(self.pc)
            self._drop_pending_offer()
            self._mark_negotiated()
        if self._renegotiation_queued or self._slots_differ():
            # A slot re-pointed while this exchange turned it off (or on) needs one more.
            self.request_renegotiation()

    def _next_version(self, sdp: str) -> str:
        """Give every new node offer a higher ``o=`` session version (RFC 3264 8): aiortc uses the clock's second,
        so two offers in one second could be byte-identical and a client could not tell a new offer from a re-sent
        one (a re-send is byte-identical on purpose)."""
        self._sdp_version = max(self._sdp_version + 1, int(time.time()))
        lines = sdp.split("\r\n")
        for i, line in enumerate(lines):
            if line.startswith("o="):
                parts = line.split(" ")
                if len(parts) >= 3:
                    parts[2] = str(self._sdp_version)
                    lines[i] = " ".join(parts)
                break
        return "\r\n".join(lines)

    def _arm_offer_timer(self) -> None:
        if self._offer_timer is not None:
            self._offer_timer.cancel()
        loop = asyncio.get_running_loop()
        self._offer_timer = loop.call_later(self.settings.offer_timeout, self._offer_timed_out, self.pending_offer)

    def _drop_pending_offer(self) -> None:
        self.pending_offer = None
        if self._offer_timer is not None:
            self._offer_timer.cancel()
            self._offer_timer = None

    def _offer_timed_out(self, sdp: str | None) -> None:
        """The pending offer went unanswered for ``offer_timeout``: send it once more, then give the peer up."""
        self._offer_timer = None
        if self.closed or sdp is None or self.pending_offer != sdp or self.pc.signalingState != "have-local-offer":
            return
        if self.offer_resends == 0:
            self.offer_resends = 1
            log.info("node_offer_resent", hearing_id=self.hearing_id, participant_id=self.participant_id)
            self._arm_offer_timer()
            self._on_offer(self, sdp)
            return
        # aiortc cannot roll the offer back: this connection can never negotiate again. Signaling replaces it.
        self._drop_pending_offer()
        log.warning("node_offer_expired", hearing_id=self.hearing_id, participant_id=self.participant_id)
        if self._on_lost is not None:
            self._on_lost(self, "offer_timeout")

    def _slots_differ(self) -> bool:
        """Some slot was re-pointed on or off while the last exchange said otherwise (a client that declines a
        slot, answering ``inactive`` to ``sendonly``, is not asked again)."""
        return any(s.intended is not None and s.intended != (s.track.publisher is not None) for s in self.slots)

    def _note_intended(self) -> None:
        for slot in self.slots:
            slot.intended = slot.transceiver.direction == "sendonly"

    def _mark_negotiated(self) -> None:
        for slot in self.slots:
            slot.negotiated_active = slot.transceiver.currentDirection in ("sendonly", "sendrecv")

    # --- slots ----------------------------------------------------------------------------------

    def place(self, wanted: Sequence[PublishedTrack]) -> None:
        """Forward exactly ``wanted`` from now on: re-point existing slots now, negotiate the rest."""
        self.wanted = list(wanted)
        wanted_ids = {id(t) for t in wanted}
        for slot in self.slots:
            if slot.track.publisher is not None and id(slot.track.publisher) not in wanted_ids:
                slot.track.assign(None)
        placed = {id(s.track.publisher) for s in self.slots if s.track.publisher is not None}
        needs_offer = False
        for track in wanted:
            if id(track) in placed:
                continue
            free = self._free_slot(track, negotiated_only=True)
            if free is None:
                needs_offer = True  # a new transceiver, or an inactive one to turn on
                continue
            free.track.assign(track)
            placed.add(id(track))
        if needs_offer or any(s.negotiated_active != (s.track.publisher is not None) for s in self.slots):
            self.request_renegotiation()
        else:
            self._on_slots_changed(self)

    def _free_slot(self, track: PublishedTrack, *, negotiated_only: bool) -> Slot | None:
        for slot in self.slots:
            if (
                slot.track.publisher is None
                and slot.kind == track.kind
                and slot.codec == track.codec_name
                # A negotiated slot counts only while the next offer keeps it sendonly: one that an unanswered
                # offer turns inactive would stop sending when that answer lands, with nobody left to re-offer.
                and (not negotiated_only or (slot.negotiated_active and slot.transceiver.direction == "sendonly"))
            ):
                return slot
        return None

    def _fit_slots(self) -> bool:
        """Make slots match ``wanted`` (adding transceivers), set directions; True if an offer is needed."""
        placed = {id(s.track.publisher) for s in self.slots if s.track.publisher is not None}
        for track in self.wanted:
            if id(track) in placed or track.ended:
                continue
            slot = self._free_slot(track, negotiated_only=False) or self._add_slot(track)
            slot.track.assign(track)
            placed.add(id(track))
        changed = False
        for slot in self.slots:
            direction = "sendonly" if slot.track.publisher is not None else "inactive"
            if slot.transceiver.direction != direction:
                slot.transceiver.direction = direction
            if slot.negotiated_active != (direction == "sendonly") or slot.mid is None:
                changed = True
        return changed

    def _add_slot(self, track: PublishedTrack) -> Slot:
        forwarded = ForwardedTrack(
            track.kind,
            self.settings.video_queue_frames if track.kind == "video" else self.settings.audio_queue_packets,
            self.settings.queue_max_age,
        )
        transceiver = self.pc.addTransceiver(forwarded, direction="sendonly")
        # Passthrough: the subscriber must receive the publisher's codec, so offer only that one.
        capabilities = RTCRtpSender.getCapabilities(track.kind).codecs
        wanted = [c for c in capabilities if c.mimeType.lower() == f"{track.kind}/{track.codec_name}".lower()]
        rtx = [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
        transceiver.setCodecPreferences(wanted + rtx)
        slot = Slot(transceiver=transceiver, track=forwarded, kind=track.kind, codec=track.codec_name)

        def keyframe_requested() -> None:
            # aiortc's pack mode only sets an encoder flag here; carry the request to the publisher.
            slot.track.keyframe_asks += 1
            if slot.track.publisher is not None:
                slot.track.repair(Reason.subscriber, sender_rtt(transceiver.sender))

        on_keyframe_request(transceiver.sender, keyframe_requested)
        if self._reports is not None:
            self._reports.adopt(transceiver.sender)
        on_remb_ = self._on_remb
        if on_remb_ is not None:
            on_remb(transceiver.sender, lambda bitrate, ssrcs: on_remb_(self, bitrate, ssrcs))

        on_loss_ = self._on_loss
        if on_loss_ is not None:
            on_loss_feedback(
                transceiver.sender,
                lambda ssrc, fraction, lost, highest: on_loss_(self, LossSignal(ssrc, fraction, lost, highest)),
                lambda ssrc, lost: on_loss_(self, LossSignal(ssrc, nack=len(lost), lost_sequences=tuple(lost))),
            )

        def unrepairable() -> None:
            if slot.track.publisher is not None:
                slot.track.repair(Reason.repair, sender_rtt(transceiver.sender))

        if self.settings.direct_send:
            # This sender only forwards: frames go out as they arrive, packetized once per publisher frame.
            fast = install(transceiver.sender, forwarded)
            fast.budget = self.nack_budget
            fast.on_unrepairable = unrepairable
        elif self.nack_budget is not None:
            # aiortc's own loop answers NACKs from its own history: the same budget applies.
            budget, repair, audio = self.nack_budget, RepairTrigger(), track.kind == "audio"
            guard, sender = ResendGuard(), transceiver.sender

            def allow(sequence_number: int, packet_timestamp: int, last_timestamp: int, size: int) -> bool:
                age = rtp_age(last_timestamp, packet_timestamp, 48_000 if audio else 90_000)
                return resend_allowed(
                    budget,
                    repair,
                    unrepairable,
                    audio=audio,
                    age=age,
                    size=size,
                    guard=guard,
                    sequence_number=sequence_number,
                    rtt=sender_rtt(sender),
                )

            gate_retransmit(transceiver.sender, allow)
        self.slots.append(slot)
        return slot

    def tracks(self) -> tuple[TrackRef, ...]:
        """What the participant receives now, by media id."""
        refs = []
        for slot in self.slots:
            p = slot.track.publisher
            if p is not None and slot.mid is not None:
                refs.append(
                    TrackRef(
                        mid=slot.mid, track_id=p.track_id, participant_id=p.participant_id, source=p.source, kind=p.kind
                    )
                )
        return tuple(refs)

    # --- end ------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop forwarding and close the connection, waiting at most :data:`CLOSE_SECONDS` for aiortc.

        aiortc's own close runs on by itself, not in the caller's task: a cancel of the caller (a command's
        timeout, a node's shutdown) does not cut it short. Cut short, it would never finish, and every later
        ``pc.close()`` would wait for ever on the future it sets at its end. A close slower than the bound is left
        to finish on its own (``peer_close_slow``); a second ``close()`` waits for the same one, as long again.
        """
        self.closed = True
        self._drop_pending_offer()
        for slot in self.slots:
            slot.track.stop()
        for published in self.published.values():
            published.ended = True
            published.consumers.clear()
        if self._renegotiation_task is not None:
            self._renegotiation_task.cancel()
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.pc.close())
            self._closing.add_done_callback(self._closed)
        done, _ = await asyncio.wait({self._closing}, timeout=CLOSE_SECONDS)
        if not done:
            log.warning(
                "peer_close_slow",
                hearing_id=self.hearing_id,
                participant_id=self.participant_id,
                seconds=CLOSE_SECONDS,
            )

    def _closed(self, closing: asyncio.Future[None]) -> None:
        if closing.cancelled():
            return
        if (error := closing.exception()) is not None:
            log.warning(
                "peer_close_failed",
                hearing_id=self.hearing_id,
                participant_id=self.participant_id,
                error=type(error).__name__,
            )


def check_sdp(sdp: str, *, offer: bool = True) -> None:
    """Refuse SDP that aiortc would take although it means nothing: no session lines, no ICE or DTLS parameters.

    An offer without media sections is valid: a participant who only receives gets its media by node offers.
    An offer may carry at most ``MAX_SENDING_MLINES`` sending and ``MAX_MLINES`` media sections in all; answers
    (``offer=False``) mirror the node's own offer, whose size the node decides.
    """
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0" or not {"o", "s", "t"} <= {line[:1] for line in lines if line[1:2] == "="}:
        raise NegotiationError("invalid_sdp", "not a session description (v=, o=, s=, t= lines)")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise NegotiationError("invalid_sdp", f"SDP not understood: {exc}") from exc
    if offer:
        _check_media_count(parsed)
    mids = {str(m.rtp.muxId) for m in parsed.media}
    for group in parsed.group:
        missing = [str(mid) for mid in group.items if str(mid) not in mids]
        if missing:
            # What a description cut short looks like: its session part names sections that never came.
            raise NegotiationError("invalid_sdp", f"the SDP is truncated: no media section for mid {missing[0]!r}")
    for m in (m for m in parsed.media if m.port != 0):
        if m.kind not in ("audio", "video", "application"):
            raise NegotiationError("invalid_sdp", f"unsupported media kind {m.kind!r}")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password or m.dtls is None:
            raise NegotiationError("invalid_sdp", "a media section lacks ICE credentials or a DTLS fingerprint")
        if not m.dtls.fingerprints:
            # aiortc would answer, then fail the DTLS handshake: the connection would never carry media.
            raise NegotiationError("invalid_sdp", "a media section lacks a DTLS fingerprint")
        # aiortc would create the transceiver before failing on codecs: refuse first, so nothing changes.
        if m.kind in CODECS and not find_common_codecs(CODECS[m.kind], m.rtp.codecs):
            raise NegotiationError("unsupported_codec", f"no {m.kind} codec in common (VP8, H264, opus...)")


def offer_mline_limit(peers: int, current: int = 0) -> int:
    """Media sections a participant's offer may carry in a hearing of ``peers`` peer connections (theirs included),
    when their connection has ``current`` now.

    Each section costs aiortc a transceiver, transports and answer work on the event loop (about 5 ms each on
    this machine), so an offer may add only what a client can need: its sending sections plus a small margin
    (receive slots are the node's to add, by its own offers). In all, a connection stays within its own sending
    sections plus one slot per source of everyone else plus the margin (about 25 for 7 people instead of 256);
    a re-offer listing every section the connection has, plus new sending ones, is always allowed.
    """
    hearing = MAX_SENDING_MLINES + SLOTS_PER_PUBLISHER * max(peers - 1, 0) + MLINE_MARGIN
    per_offer = current + MAX_SENDING_MLINES + MLINE_MARGIN
    return min(MAX_MLINES, max(current + MAX_SENDING_MLINES, min(hearing, per_offer)))


def check_offer_size(sdp: str, limit: int) -> None:
    """Refuse an oversized offer before any parsing: more than ``MAX_SDP_BYTES``, or more than ``limit`` m-lines.

    Counts ``m=`` lines only (linear, no allocation per line), so refusing a hostile offer costs microseconds.
    """
    if len(sdp) > MAX_SDP_BYTES:
        raise NegotiationError("sdp_too_large", f"SDP of {len(sdp)} characters > {MAX_SDP_BYTES}")
    sections = sdp.count("\nm=") + sdp.startswith("m=")
    if sections > limit:
        raise NegotiationError(
            "too_many_media_sections", f"too many media sections for this hearing: {sections} > {limit}"
        )


def _check_media_count(parsed: SessionDescription) -> None:
    """Refuse an offer with more media sections than a participant can use (each costs slots on every peer)."""
    if len(parsed.media) > MAX_MLINES:
        raise NegotiationError("invalid_sdp", f"too many media sections: {len(parsed.media)} > {MAX_MLINES}")
    sending = [
        m
        for m in parsed.media
        if m.port != 0 and m.kind in CODECS and (m.direction or "sendrecv") in _SENDING_DIRECTIONS
    ]
    if len(sending) > MAX_SENDING_MLINES:
        raise NegotiationError("invalid_sdp", f"too many sending media sections: {len(sending)} > {MAX_SENDING_MLINES}")


def first_codec(transceiver: RTCRtpTransceiver) -> tuple[str, int]:
    """The negotiated codec name and clock rate a publisher sends with (its first non-RTX codec)."""
    codecs: list[Any] = negotiated_codecs(transceiver)
    for codec in codecs:
        if codec.name.lower() != "rtx":
            return str(codec.name), int(codec.clockRate)
    return "", 90_000 if transceiver.kind == "video" else 48_000


# --- payload types and header extension ids across re-offers ---------------------------------------------

NegotiatedRtp = dict[str, tuple[list[Any], list[Any]]]
"""By media id: the codecs and header extensions an m-line was last negotiated with (their numbers included)."""

_EXTENSION_IDS = range(1, 15)
"""One-byte header extension ids (RFC 8285)."""


def negotiated_rtp(transceivers: Sequence[RTCRtpTransceiver]) -> NegotiatedRtp:
    """Snapshot what every negotiated m-line uses now: aiortc's ``createOffer`` overwrites it with its defaults."""
    return {
        str(t.mid): (copy.deepcopy(negotiated_codecs(t)), copy.deepcopy(negotiated_header_extensions(t)))
        for t in transceivers
        if t.mid is not None and negotiated_codecs(t) and not t.stopped
    }


def _codec_key(codec: Any) -> tuple[str, int, int | None, tuple[tuple[str, str], ...]]:
    params = tuple(sorted((str(k), str(v)) for k, v in codec.parameters.items() if k != "apt"))
    return (str(codec.mimeType).lower(), int(codec.clockRate), codec.channels, params)


def _is_rtx(codec: Any) -> bool:
    return str(codec.mimeType).lower().endswith("/rtx")


AUDIO_NACK = RTCRtcpFeedback(type="nack")
"""The feedback the node offers on the Opus of the audio it sends: NACKs of lost audio, which it resends."""

OPUS_FEC = {"minptime": 10, "useinbandfec": 1}
"""The Opus parameters the node gives the audio it receives: it takes in-band FEC (RFC 7587)."""


def with_audio_repair(sdp: str) -> str:
    """A node offer or answer with what repairs lost audio, both ways.

    - On the Opus of every audio m-line the node sends (``sendonly``, ``inactive``): ``a=rtcp-fb:<pt> nack``. A
      browser that reads it NACKs the audio it loses, and the node resends it from the send path's history within
      the subscriber's budget, audio first. libwebrtc supports NACK for Opus but does not announce it: its answer
      leaves the line out, and it turns audio NACK on from the remote description (mediasoup-client adds the same
      line to what its server offers). Chromium behind 5% random loss then concealed 0.3% of the audio, against
      4.7% without (``tests/e2e/test_browser_audio_loss.py``).
    - On the Opus of every audio m-line the node receives (``recvonly``, ``sendrecv``): ``useinbandfec=1`` (and
      ``minptime=10``, as browsers offer), so a publisher's Opus encoder adds in-band FEC when the node's receiver
      reports loss. The node does not NACK what it receives: its forwarding numbers audio anew, and a late packet
      could not be placed; FEC rides inside the next packet and a receiver's decoder uses it by timestamp.

    aiortc drops both from what it negotiates; each offer and answer carries them again.
    """
    description = SessionDescription.parse(sdp)
    changed = False
    for media in description.media:
        if media.kind != "audio":
            continue
        sends = media.direction in ("sendonly", "inactive")
        for codec in media.rtp.codecs:
            if str(codec.mimeType).lower() != "audio/opus":
                continue
            if sends and AUDIO_NACK not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(AUDIO_NACK)
                changed = True
            elif not sends and any(codec.parameters.get(k) != v for k, v in OPUS_FEC.items()):
                codec.parameters.update(OPUS_FEC)
                changed = True
    return str(description) if changed else sdp


def keep_negotiated_numbers(sdp: str, negotiated: NegotiatedRtp, transceivers: Sequence[RTCRtpTransceiver]) -> str:
    """Rewrite a node offer so it keeps the connection's payload types and header extension ids.

    aiortc numbers codecs and extensions the same fixed way in every offer, also for m-lines negotiated
    earlier with the client's numbers (Chromium: VP8 96 or 100, Opus 111). A browser then switches numbers
    mid-call and the node, whose receivers keep the first numbers, drops the media; or it refuses the offer
    (extension id reassignment, a bundle "codec collision"). So: m-lines already negotiated are offered
    exactly as negotiated, and new m-lines reuse the numbers the connection already gives the same codec or
    extension, taking unused numbers for anything new. Only this connection's offer changes.
    """
    if not negotiated:
        return sdp
    description = SessionDescription.parse(sdp)
    by_mid = {str(t.mid): t for t in transceivers if t.mid is not None}
    pt_of: dict[tuple[str, int, int | None, tuple[tuple[str, str], ...]], int] = {}
    rtx_of: dict[int, int] = {}
    ext_id_of: dict[str, int] = {}
    taken_pts: set[int] = set()
    taken_ids: set[int] = set()
    for codecs, extensions in negotiated.values():
        for codec in codecs:
            taken_pts.add(int(codec.payloadType))
            if _is_rtx(codec):
                apt = codec.parameters.get("apt")
                if isinstance(apt, int):
                    rtx_of.setdefault(apt, int(codec.payloadType))
            else:
                pt_of.setdefault(_codec_key(codec), int(codec.payloadType))
        for extension in extensions:
            taken_ids.add(int(extension.id))
            ext_id_of.setdefault(str(extension.uri), int(extension.id))

    def free(number: int, taken: set[int], pool: range) -> int:
        if number not in taken:
            return number
        return next(n for n in pool if n not in taken)

    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        mid = str(media.rtp.muxId)
        known = negotiated.get(mid)
        if known is not None:
            codecs, extensions = copy.deepcopy(known[0]), copy.deepcopy(known[1])
        else:
            codecs = copy.deepcopy(list(media.rtp.codecs))
            renumbered: dict[int, int] = {}
            for codec in (c for c in codecs if not _is_rtx(c)):
                key = _codec_key(codec)
                number = pt_of.get(key)
                if number is None:
                    number = free(int(codec.payloadType), taken_pts, DYNAMIC_PAYLOAD_TYPES)
                    pt_of[key] = number
                    taken_pts.add(number)
                renumbered[int(codec.payloadType)] = number
                codec.payloadType = number
            for codec in (c for c in codecs if _is_rtx(c)):
                base = renumbered.get(int(codec.parameters.get("apt", -1)), -1)
                number = rtx_of.get(base)
                if number is None:
                    number = free(int(codec.payloadType), taken_pts, DYNAMIC_PAYLOAD_TYPES)
                    rtx_of[base] = number
                    taken_pts.add(number)
                codec.payloadType = number
                codec.parameters["apt"] = base
            extensions = copy.deepcopy(list(media.rtp.headerExtensions))
            for extension in extensions:
                number = ext_id_of.get(str(extension.uri))
                if number is None:
                    number = free(int(extension.id), taken_ids, _EXTENSION_IDS)
                    ext_id_of[str(extension.uri)] = number
                    taken_ids.add(number)
                extension.id = number
        media.rtp.codecs = codecs
        media.rtp.headerExtensions = extensions
        media.fmt = [c.payloadType for c in codecs]
        transceiver = by_mid.get(mid)
        if transceiver is not None:
            set_negotiated(transceiver, copy.deepcopy(codecs), copy.deepcopy(extensions))
    return str(description)
