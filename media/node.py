"""The in-process media node: an aiortc SFU with encoded passthrough, driven through ``protocol.node``.

Signaling decides who may publish and receive (``SetPublishing``,
``SetReceiving``); the node decides what flows within that: every permitted
publisher's audio, camera video of the last-N most recent speakers, evidence
video always, and for a recorder everything permitted. Whenever that changes
the node re-points its forwarding slots at once and negotiates new or
silenced slots with a node ``Offer``; each subscriber then gets a ``Tracks``
event mapping media ids to tracks.

A recorder is a participant without a peer connection:
:meth:`InProcessNode.attach_recorder` gives it a ``FrameSink``, and the same
``SetReceiving`` command as for people decides what it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from aiortc import RTCRtpTransceiver

from media.aiortc_compat import (
    candidate_from_sdp,
    receive_layers,
    self_check,
    sender_counters,
    sender_rtt,
    sender_rtx_ssrc,
    sender_ssrc,
    simulcast_self_check,
)
from media.bandwidth import (
    CAP_SHARE,
    ESTIMATE_MAX_AGE,
    FEEDBACK_SILENCE,
    LIFT_PADDING_MAX_BPS,
    LIFT_PADDING_ON_WIRE,
    LIFT_PADDING_SHARE,
    OVERLOAD_AGE,
    OVERLOAD_HOLD,
    OVERLOAD_WINDOW,
    PACE_FACTOR,
    PADDING_SIZE_ON_WIRE,
    PROBE_MAX_BPS,
    PROBE_RANDOM_LOSS,
    PROBE_SECONDS,
    PROBE_VERDICT,
    PROBE_WAIT_MAX,
    Allocation,
    EstimateBook,
    LinkQuality,
    LossBackoff,
    LossSignal,
    NackLoss,
    ProbeController,
    SubscriberAllocator,
    SubscriberBandwidth,
    VideoStream,
    hold_raise,
    publisher_cap,
    settle_cap,
    video_priority,
)
from media.forwarding import PublishedTrack, RecorderFeed
from media.health import peer_health
from media.ice import PORTS_EXHAUSTED
from media.keyframes import REPAIR_GRACE, Reason
from media.passthrough import tap_layers, tap_receiver
from media.peer import (
    DEFAULT_SOURCE,
    SOURCE_KIND,
    NegotiationError,
    Peer,
    check_offer_size,
    first_codec,
    offer_mline_limit,
)
from media.plan import forwarding_plan
from media.probe import Probe
from media.reports import SenderReports
from media.sending import FrameSender
from media.settings import NodeSettings
from media.simulcast import (
    LAYER_PROBE_MARGIN,
    LAYER_PROBE_SECONDS,
    LAYER_PROBE_WAIT_MAX,
    LayerInfo,
    plan_layers,
)
from media.speaker import SpeakerDetector
from protocol.frames import FrameSink
from protocol.node import (
    Ack,
    AddCandidate,
    ApplyAnswer,
    ApplyOffer,
    ClosePeer,
    CloseRoom,
    CreatePeer,
    CreateProbe,
    DeclareTrack,
    EventHandler,
    MediaKind,
    NodeCommand,
    NodeEvent,
    NodeReply,
    Offer,
    PeerLost,
    PeerState,
    PeerStateChanged,
    PublishRefused,
    Refused,
    SdpAnswer,
    SetPublishing,
    SetReceiving,
    SetView,
    SpeakerChanged,
    TrackEnded,
    TrackPublished,
    Tracks,
)
from rooms.model import Role, Source

log = structlog.get_logger(__name__)

_EVENT_QUEUE_BOUND = 10_000
"""Events waiting for the handlers; beyond it events are dropped (and logged): a stuck handler must not eat memory."""

_PEER_STATES = {s.value: s for s in PeerState}

_ADAPT_EVERY = 0.5
"""Seconds: a subscriber's REMBs lead to a new decision at most this often (each REMB only updates its estimate),
unless its estimate fell by :data:`_ADAPT_DROP` or more."""

_ADAPT_DROP = 0.8


_LINK_MEMORY = 120.0
"""Seconds the node remembers what a constrained subscriber's link carried after its peer closed: a subscriber that
comes back within them (its client crashed, its terminal rebooted, its connection was replaced) starts from that
estimate instead of from none. With none, everything is forwarded until its first REMB, and behind a thin link
that first burst overflows the queue: a defendant rejoining behind 1-2 Mbit/s lost 6-28% of its audio and saw no
video in its first 5 s (``bench/thin_link.py --rejoin``). mediasoup starts every transport at an assumed 600
kbit/s (``initialAvailableOutgoingBitrate``) and libwebrtc at 300; the node assumes nothing of a link it never
saw, and what it saw of this one."""

_SEED_WAIT = 10.0
"""Seconds a remembered estimate stands for a returning subscriber's REMB at most: its first REMB replaces it (a
receiver that sends none within them is one without REMB, forwarded everything as any such)."""

_CONSTRAINED_LATELY = 10.0
"""Seconds before its peer closed within which a subscriber's video must have been constrained for its link to be
remembered (:data:`_LINK_MEMORY`)."""

_LOOP_LAG_FACT = 0.25
"""Seconds a health report may come late before the node logs ``node_loop_lagged`` (its event loop was held)."""

_RESUME_NACKS = 1.6
"""Seconds after a slot resumes during which its subscriber's NACKs and receiver reports about it are not taken for
loss (see ``_loss``): the first report comes within 1.5 s (aiortc reports every 0.5-1.5 s)."""

_OUTAGE_REPORTS = 2.5
"""Seconds after a subscriber's feedback came back from a silence during which its receiver reports are not taken for
loss, nor its NACKs of what was sent before (see ``_loss``): a browser reports a video about once a second, and its
first report after a cut may come before any new packet, so the second one counts the outage's packets as lost."""

_PROBE_TICK = 0.01
"""Seconds between two bursts of a padding probe (and checks of its verdict)."""

_LIFT_RETRY = 1.0
"""Seconds after the lift watch found a lift during which it decides again at each look while no probe started."""

_LIFT_WATCH = 0.05
"""Seconds between two looks at the link of a subscriber with paused video that lost packets, for the moment it
counts as lifted (:meth:`InProcessNode._watch_lift`). A lift shown by its NACKs (packets sent without one) comes
between two events: decided at the next REMB instead (every 0.5 s at most), the probe that brings the video back
started 0.2-0.5 s after the link counted as lifted (thin-link runs: 345-415 packets clean by the NACKs against the
300 needed)."""


@dataclass(eq=False)
class _Subscriber:
    """Bandwidth adaptation of one subscriber (media.bandwidth decides, the node carries it out)."""

    allocator: SubscriberAllocator
    prober: ProbeController
    book: EstimateBook = field(default_factory=EstimateBook)
    link: LinkQuality = field(default_factory=LinkQuality)
    allocation: Allocation | None = None
    estimate: int | None = None
    decided_at: float = float("-inf")
    probe_timer: asyncio.TimerHandle | None = None
    lift_timer: asyncio.TimerHandle | None = None
    """The next look for a lifted link (:meth:`InProcessNode._watch_lift`), while video is paused and the link lossy."""
    padded_at: float = 0.0
    """When the running probe last sent padding."""
    padding_owed: float = 0.0
    """Bytes of padding the running probe is behind by (sent in whole packets)."""
    lift_padded_at: float = 0.0
    """When the lift watch last looked whether to pad (:meth:`InProcessNode._pad_for_lift`)."""
    lift_padding_owed: float = 0.0
    """Bytes of the lift watch's padding it is behind by (sent in whole packets)."""
    lift_padding: int = 0
    """Padding packets the lift watch sent so far (``SubscriberBandwidth.lift_padding``)."""
    lift_found_at: float = float("-inf")
    """When the lift watch last found the link lifted (it decides again at each look for :data:`_LIFT_RETRY`)."""
    layer_probe: tuple[str, ...] = ()
    """The simulcast videos (recording ids) the running (or last) probe was sized to take up a layer, which the link
    had refused (empty: it was sized for paused video)."""
    layers_probed_at: float = float("-inf")
    """When the last layer probe passed."""
    backoff: LossBackoff = field(default_factory=LossBackoff)
    """What heavy loss of the top video left of its budget (its cap and pacing rate)."""
    held_top: tuple[str, int] | None = None
    """The top video and what the estimate left for it when the running (or last) probe began: while the probe runs
    and echoes (:meth:`ProbeController.echoing`) its publisher's cap and its pacing rate stay at least there."""
    nack_loss: NackLoss = field(default_factory=NackLoss)
    """What share of the video sent to it the link drops now, by its NACKs (an overflow, at once)."""
    overload_bps: int = 0
    """The video rate the last overflow left room for (what the link delivered, less the audio), a ceiling on the
    estimate until :attr:`overload_until`."""
    overload_until: float = float("-inf")
    audio_nacks: bool = False
    """It NACKed audio (the node's offer asks a browser to): its audio counts towards a lifted link too."""
    heard_at: float = float("-inf")
    """When its last feedback came (a receiver report, a REMB or a NACK; -inf: none yet)."""
    back_at: float = float("-inf")
    """When its feedback came again after a silence (:meth:`silent`; -inf: never)."""
    estimate_held: bool = False
    """Its last estimate stands for its stale REMBs (see :meth:`InProcessNode._estimate`)."""
    constrained: tuple[int, float] | None = None
    """The estimate of its last decision that constrained its video, and when (what :data:`_LINK_MEMORY` keeps)."""
    seed_bps: int = 0
    """What its link carried when its previous peer closed, constrained (:data:`_LINK_MEMORY`); 0: nothing known."""
    seed_until: float = float("-inf")
    """Until when :attr:`seed_bps` stands for its REMBs, none of which came yet (:data:`_SEED_WAIT`)."""

    def seeded(self, now: float) -> bool:
        """The remembered estimate of its link stands: no REMB came from it yet, and not for too long."""
        return self.seed_bps > 0 and now < self.seed_until and self.book.last_at == float("-inf")

    def heard(self, now: float) -> None:
        """Feedback came from it now."""
        if self.silent(now):
            self.back_at = now
            self.link.outage_ended(now)
        self.heard_at = now

    def since_back(self, now: float) -> float | None:
        """Seconds since its feedback came again after a silence, while its reports and NACKs may still be about what
        went into the outage (``_OUTAGE_REPORTS``); None otherwise."""
        seconds = now - self.back_at
        return seconds if seconds < _OUTAGE_REPORTS else None

    def silent(self, now: float) -> bool:
        """Its feedback has been silent for :data:`media.bandwidth.FEEDBACK_SILENCE`: its link is out (or it went
        away), and what the node sends it tells nothing of that link (no lift, no probe, no estimate)."""
        return self.heard_at > float("-inf") and now - self.heard_at > FEEDBACK_SILENCE

    def start_probe(
        self, now: float, goal_bps: int, forwarded_bps: int, *, seconds: float, wait_max: float, partial: bool = False
    ) -> int:
        """Start a padding probe (:meth:`ProbeController.start`, from this subscriber's estimate) and hold what the
        estimate leaves for the top video now (see :meth:`top_budget`); the padding bit/s to send. ``partial``: a rung
        of a ladder (:meth:`ProbeController.rung`)."""
        allocation = self.allocation
        self.held_top = None
        if allocation is not None and allocation.top is not None and allocation.top_available_bps is not None:
            self.held_top = (allocation.top, allocation.top_available_bps)
        return self.prober.start(
            now, goal_bps, forwarded_bps, self.estimate, seconds=seconds, wait_max=wait_max, partial=partial
        )

    def top_budget(self, now: float) -> int | None:
        """What the estimate leaves for the top video (None: not constrained), as its cap and pacing rate take it.

        A probe's padding queues on the link and the receiver's REMB falls under it; the video had the rate before
        the probe and the link carried it, and keeps it through the probe and its echo (after a failed probe, no
        more than it either). Following that fall moved the publisher's cap down and up again within a
        second (288, 188, 285 kbit/s behind 1 Mbit/s), and aiortc re-creates its VP8 encoder, with a keyframe, at
        each move; the pacing rate fell below what the encoder still sent, and its backlog grew.
        """
        allocation = self.allocation
        available = None if allocation is None else allocation.top_available_bps
        held = self.held_top
        if available is None or allocation is None:
            return available
        if held is not None and held[0] == allocation.top and self.prober.echoing(now):
            # Once the probe failed, nor does it rise with its echo (PROBE_ECHO): the padding raised the estimate (469
            # to 516 kbit/s within 2.5 s after a probe failed behind 1 Mbit/s), not a wider link, and a cap raised on
            # it re-creates an aiortc publisher's encoder, with a keyframe, on a link that was full.
            available = max(available, held[1]) if self.prober.running else held[1]
        return available

    def top_available(self, now: float) -> int | None:
        """What the top video is capped and paced at (None: not constrained): :meth:`top_budget`, under the ceiling
        heavy loss of it left (:class:`LossBackoff`)."""
        budget = self.top_budget(now)
        return None if budget is None else self.backoff.limit(now, budget)


@dataclass(eq=False)
class _Recorder:
    participant_id: str
    sink: FrameSink
    feeds: dict[int, RecorderFeed] = field(default_factory=dict)


@dataclass(eq=False)
class _Room:
    hearing_id: str
    speakers: SpeakerDetector
    peers: dict[str, Peer] = field(default_factory=dict)
    recorders: dict[str, _Recorder] = field(default_factory=dict)
    receiving: dict[str, frozenset[str]] = field(default_factory=dict)
    publishing: dict[str, frozenset[Source]] = field(default_factory=dict)
    declared: dict[str, dict[str, Source]] = field(default_factory=dict)
    subscribers: dict[str, _Subscriber] = field(default_factory=dict)
    """Bandwidth adaptation state by subscriber (with ``adaptation`` on)."""
    links: dict[str, tuple[int, float]] = field(default_factory=dict)
    """By participant whose peer closed while its video was constrained: the estimate its link carried then, and
    when (:data:`_LINK_MEMORY`)."""


class InProcessNode:
    """A media node in this process, implementing ``protocol.node.NodeControl``."""

    @staticmethod
    def check_environment() -> None:
        """Raise ``media.AiortcMismatch`` (one line) if the installed aiortc/aioice lack an internal the node uses."""
        self_check()
        simulcast_self_check()

    def __init__(self, settings: NodeSettings) -> None:
        self_check()  # AiortcMismatch (one line) now, rather than a failure on the packet path later
        simulcast_self_check()
        self.settings = settings
        self._rooms: dict[str, _Room] = {}
        self._handlers: list[EventHandler] = []
        self._events: asyncio.Queue[NodeEvent] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._probes: dict[tuple[str, str], Probe] = {}
        self._health: asyncio.Task[None] | None = None
        self.reports = SenderReports()
        """The sender reports of every stream the node sends, from one timer (media.reports)."""

    @property
    def node_id(self) -> str:
        """Stable id of the node."""
        return self.settings.node_id

    # --- NodeControl ----------------------------------------------------------------------------

    def subscribe(self, handler: EventHandler) -> None:
        """Receive every event of this node, in the order they happened."""
        self._handlers.append(handler)

    async def call(self, command: NodeCommand) -> NodeReply:
        """Carry out one command; bad input is answered with ``Refused``, never raised."""
        try:
            return await self._carry_out(command)
        except NegotiationError as exc:
            log.info("node_command_refused", command=command.type, code=exc.code, reason=exc.message)
            return Refused(code=exc.code, message=exc.message)
        except Exception as exc:
            log.exception("node_command_failed", command=command.type)
            return Refused(code="internal_error", message=f"{type(exc).__name__}")

    async def _carry_out(self, command: NodeCommand) -> NodeReply:
        if isinstance(command, CloseRoom):
            await self._close_room(command.hearing_id, "room_closed")
            return Ack()
        if isinstance(command, CreatePeer):
            await self._create_peer(command.hearing_id, command.participant_id, command.role)
            return Ack()
        if isinstance(command, CreateProbe):
            return SdpAnswer(sdp=await self._create_probe(command))
        pid = command.participant_id
        permissions = isinstance(command, SetReceiving | SetPublishing)
        # Permissions may arrive before the peer (or the recorder's sink) does: keep them for then.
        room = self._room(command.hearing_id) if permissions else self._rooms.get(command.hearing_id)
        is_recorder = room is not None and pid in room.recorders
        peer = room.peers.get(pid) if room is not None else None
        if room is None or (peer is None and not is_recorder and not permissions):
            raise NegotiationError("no_such_peer", f"no peer {pid!r} in hearing {command.hearing_id!r}")
        if isinstance(command, SetReceiving):
            room.receiving[pid] = frozenset(command.publishers)
            self._replan(room)
            return Ack()
        if isinstance(command, SetPublishing):
            room.publishing[pid] = frozenset(command.sources)
            if peer is not None:
                self._resolve_sources(room, peer)
            self._replan(room)
            return Ack()
        if peer is None:
            if isinstance(command, ClosePeer):
                self.detach_recorder(room.hearing_id, pid, reason="closed")
                room.receiving.pop(pid, None)
                return Ack()
            raise NegotiationError("no_such_peer", f"{pid!r} is a recorder without a peer connection")
        if isinstance(command, ClosePeer):
            await self._close_peer(room, peer)
            room.receiving.pop(pid, None)
            room.publishing.pop(pid, None)
            room.declared.pop(pid, None)
            self._replan(room)
            return Ack()
        if isinstance(command, ApplyOffer):
            check_offer_size(command.sdp, offer_mline_limit(len(room.peers), len(peer.pc.getTransceivers())))
            try:
                answer = await peer.apply_offer(command.sdp)
            except NegotiationError as exc:
                if exc.code == PORTS_EXHAUSTED:
                    # Its gathering failed half-way and aiortc cannot gather again: drop the peer; signaling
                    # creates a new one when the participant tries again.
                    log.warning(
                        "udp_ports_exhausted", hearing_id=room.hearing_id, participant_id=pid, node_id=self.node_id
                    )
                    await self._close_peer(room, peer)
                    self._replan(room)
                raise
            self._check_ended(room, peer)
            self._resolve_sources(room, peer)
            self._replan(room)
            return SdpAnswer(sdp=answer)
        if isinstance(command, ApplyAnswer):
            await peer.apply_answer(command.sdp)
            return Ack()
        if isinstance(command, AddCandidate):
            await self._add_candidate(peer, command)
            return Ack()
        if isinstance(command, SetView):
            for tile in command.tiles:
                peer.tiles[tile.mid] = (tile.width, tile.height)
            if len(peer.tiles) > 256:  # mids of slots long gone: keep only what is told now
                peer.tiles = {t.mid: (t.width, t.height) for t in command.tiles}
            self._choose_layers(room, peer)
            return Ack()
        if isinstance(command, DeclareTrack):
            for published in peer.published.values():
                if published.track_id == command.track_id and SOURCE_KIND[command.source] != published.kind:
                    raise NegotiationError(
                        "invalid_source", f"{command.source} is not a source of {published.kind} tracks"
                    )
            # One track per source: a later declaration of a source moves it to the newly named track.
            declared = room.declared.setdefault(pid, {})
            for track_id in [t for t, source in declared.items() if source is command.source or t == command.track_id]:
                del declared[track_id]
            declared[command.track_id] = command.source
            self._resolve_sources(room, peer)
            self._replan(room)
            return Ack()
        raise NegotiationError("unknown_command", f"unknown command {command.type!r}")

    # --- recorders ------------------------------------------------------------------------------

    def attach_recorder(self, hearing_id: str, participant_id: str, sink: FrameSink) -> None:
        """Make ``participant_id`` a recorder of the hearing; ``SetReceiving`` for it decides what it gets."""
        room = self._room(hearing_id)
        self.detach_recorder(hearing_id, participant_id)
        room.recorders[participant_id] = _Recorder(participant_id=participant_id, sink=sink)
        self._replan(room)

    def detach_recorder(self, hearing_id: str, participant_id: str, reason: str = "detached") -> None:
        """Stop feeding a recorder (each of its tracks gets ``track_stopped``)."""
        room = self._rooms.get(hearing_id)
        recorder = room.recorders.pop(participant_id, None) if room is not None else None
        if recorder is not None:
            for feed in recorder.feeds.values():
                feed.stop(reason)

    def request_keyframe(self, hearing_id: str, track_id: str) -> None:
        """Ask the publisher of a track for a keyframe (throttled), e.g. when a recorder starts a segment.

        ``track_id`` is the id the recorder knows the track by (``participant:track``, see RecorderFeed).
        """
        room = self._rooms.get(hearing_id)
        for peer in room.peers.values() if room is not None else ():
            for published in peer.published.values():
                if published.recording_id == track_id:
                    # A simulcast video: the layer the recorder's feed records now.
                    recorders = room.recorders.values() if room is not None else ()
                    feeds = [f for r in recorders for f in r.feeds.values() if f.publisher is published]
                    source = feeds[0].source if feeds else published.top_layer()
                    source.request_keyframe(Reason.recorder)

    # --- introspection (tests, metrics) ---------------------------------------------------------

    def peer(self, hearing_id: str, participant_id: str) -> Peer | None:
        """The peer of a participant, if any."""
        room = self._rooms.get(hearing_id)
        return room.peers.get(participant_id) if room is not None else None

    def active_speaker(self, hearing_id: str, receiver: str | None = None) -> str | None:
        """The active speaker as ``receiver`` hears it; without one, the last speaker anyone was told of."""
        room = self._rooms.get(hearing_id)
        if room is None:
            return None
        return room.speakers.active if receiver is None else room.speakers.active_for(receiver)

    def bandwidth(self, hearing_id: str, participant_id: str) -> SubscriberBandwidth | None:
        """What bandwidth adaptation does for one subscriber now; None if it has no peer or adaptation is off."""
        room = self._rooms.get(hearing_id)
        peer = room.peers.get(participant_id) if room is not None else None
        if room is None or peer is None or peer.nack_budget is None:
            return None
        subscriber = room.subscribers.get(participant_id)
        allocation = subscriber.allocation if subscriber is not None else None
        track_ids = {t.recording_id: t.track_id for t in peer.wanted}
        budget = peer.nack_budget
        if allocation is None:
            forwarded = tuple(t.track_id for t in peer.wanted if t.kind == "video")
            paused: tuple[str, ...] = ()
        else:
            forwarded = tuple(track_ids.get(k, k) for k in allocation.forwarded)
            paused = tuple(track_ids.get(k, k) for k in allocation.paused)
        return SubscriberBandwidth(
            estimate_bps=subscriber.estimate if subscriber is not None else None,
            forwarded=forwarded,
            paused=paused,
            nacks_dropped=budget.dropped,
            nacks_repeated=budget.repeated,
            nacks_stale=budget.stale,
            nacks_too_old=budget.too_old,
            resent_forgiven=budget.forgiven,
            resent=budget.resent,
            probes=subscriber.prober.probes if subscriber is not None else 0,
            probes_succeeded=subscriber.prober.succeeded if subscriber is not None else 0,
            loss_backoffs=subscriber.backoff.backoffs if subscriber is not None else 0,
            overloads=subscriber.nack_loss.overloads if subscriber is not None else 0,
            watching_lift=subscriber is not None and subscriber.lift_timer is not None,
            lift_padding=subscriber.lift_padding if subscriber is not None else 0,
            seeded=subscriber is not None and subscriber.seeded(time.monotonic()),
        )

    def bandwidth_counts(self) -> dict[str, int]:
        """Node-wide adaptation figures: video streams paused now, NACKs dropped (and of those, too old), resends
        forgiven after failed probes, loss backoffs, overflows seen by NACKs, keyframe requests, padding probes and the
        probes that brought video back so far (of live peers and tracks), publishers capped now."""
        paused = dropped = too_old = forgiven = backoffs = overloads = requests = capped = probes = probed = 0
        for room in self._rooms.values():
            for subscriber in room.subscribers.values():
                paused += len(subscriber.allocation.paused) if subscriber.allocation is not None else 0
                probes += subscriber.prober.probes
                probed += subscriber.prober.succeeded
                backoffs += subscriber.backoff.backoffs
                overloads += subscriber.nack_loss.overloads
            for peer in room.peers.values():
                budget = peer.nack_budget
                if budget is not None:
                    dropped += budget.dropped
                    too_old += budget.too_old
                    forgiven += budget.forgiven
                for published in peer.published.values():
                    requests += published.keyframe_requests
                    capped += published.remb is not None and published.remb.cap is not None
        return {
            "paused_streams": paused,
            "nacks_dropped": dropped,
            "nacks_too_old": too_old,
            "resent_forgiven": forgiven,
            "loss_backoffs": backoffs,
            "overloads": overloads,
            "keyframe_requests": requests,
            "capped": capped,
            "probes": probes,
            "probes_succeeded": probed,
        }

    def stats(self) -> tuple[int, int]:
        """(rooms, peer connections) on this node, for ``GET /nodes`` and metrics."""
        return len(self._rooms), sum(len(room.peers) for room in self._rooms.values())

    def probes(self) -> int:
        """Network-check probes live now."""
        return len(self._probes)

    def packets_forwarded(self) -> int:
        """RTP packets the live peers' forwarding slots have sent so far, read from the senders' counters.

        For the node's heartbeat (every 2 s, never per packet). A closed peer's packets stop counting, so a reader
        takes the difference of two readings and treats a drop as 0.
        """
        return sum(
            sender_counters(slot.transceiver.sender)[0]
            for room in self._rooms.values()
            for peer in room.peers.values()
            for slot in peer.slots
        )

    async def close(self) -> None:
        """Close every room and probe and stop delivering events."""
        for hearing_id in list(self._rooms):
            await self._close_room(hearing_id, "node_closed")
        for probe in list(self._probes.values()):
            await probe.close("node_closed")
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
            self._health = None
        await self.reports.close()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None

    # --- network-check probes -------------------------------------------------------------------

    async def _create_probe(self, command: CreateProbe) -> str:
        key = (command.hearing_id, command.participant_id)
        if key in self._probes:
            raise NegotiationError("probe_busy", "a network check of this participant is running")
        if len(self._probes) >= self.settings.max_probes:
            raise NegotiationError("too_many_probes", "the media node runs as many network checks as it may")

        def closed(probe: Probe) -> None:
            if self._probes.get(key) is probe:
                del self._probes[key]

        probe = Probe(
            hearing_id=command.hearing_id,
            participant_id=command.participant_id,
            settings=self.settings,
            on_closed=closed,
        )
        self._probes[key] = probe
        try:
            answer = await probe.answer(command.sdp)
        except BaseException:
            await probe.close("refused")
            raise
        log.info("probe_created", hearing_id=command.hearing_id, participant_id=command.participant_id)
        return answer

    # --- peers ----------------------------------------------------------------------------------

    def _room(self, hearing_id: str) -> _Room:
        room = self._rooms.get(hearing_id)
        if room is None:
            s = self.settings
            room = _Room(
                hearing_id=hearing_id,
                speakers=SpeakerDetector(
                    window=s.speaker_window, hold=s.speaker_hold, silence_dbov=s.speaker_silence_dbov
                ),
            )
            self._rooms[hearing_id] = room
        return room

    async def _create_peer(self, hearing_id: str, participant_id: str, role: Role) -> None:
        room = self._room(hearing_id)
        old = room.peers.get(participant_id)
        if old is not None:
            await self._close_peer(room, old)
        peer = Peer(
            hearing_id=hearing_id,
            participant_id=participant_id,
            role=role,
            settings=self.settings,
            on_track=lambda p, t: self._published(room, p, t),
            on_offer=lambda p, sdp: self._emit(
                Offer(hearing_id=p.hearing_id, participant_id=p.participant_id, sdp=sdp)
            ),
            on_state=self._peer_state,
            on_slots_changed=self._slots_changed,
            on_lost=self._peer_lost,
            on_remb=self._remb if self.settings.adaptation else None,
            on_loss=self._loss if self.settings.adaptation else None,
            reports=self.reports,
        )
        room.peers[participant_id] = peer
        self._remembered(room, participant_id)
        if self._health is None or self._health.done():
            self._health = asyncio.ensure_future(self._health_loop())
        room.speakers.join(participant_id)
        log.info("peer_created", hearing_id=hearing_id, participant_id=participant_id, role=role, node_id=self.node_id)
        self._replan(room)

    async def _close_peer(self, room: _Room, peer: Peer) -> None:
        if room.peers.get(peer.participant_id) is peer:
            del room.peers[peer.participant_id]
            gone = room.subscribers.pop(peer.participant_id, None)
            if gone is not None:
                self._stop_timers(gone)
                now = time.monotonic()
                for pid in [p for p, (_, at) in room.links.items() if now - at > _LINK_MEMORY]:
                    del room.links[pid]
                # Its last constrained decision, if lately: between the client's going and the close, its REMBs go
                # stale and the allocator, without an estimate, releases everything (1.5 s in a thin-link run).
                if gone.constrained is not None and now - gone.constrained[1] <= _CONSTRAINED_LATELY:
                    room.links[peer.participant_id] = gone.constrained
                self._apply_caps(room)  # a publisher capped for this subscriber gets its bitrate back
        room.speakers.leave(peer.participant_id)
        for published in peer.published.values():
            if not published.ended:
                published.ended = True
            self._report_ended(published)
        await peer.close()
        log.info("peer_closed", hearing_id=room.hearing_id, participant_id=peer.participant_id, node_id=self.node_id)

    async def _close_room(self, hearing_id: str, reason: str) -> None:
        room = self._rooms.pop(hearing_id, None)
        if room is None:
            return
        for recorder in room.recorders.values():
            for feed in recorder.feeds.values():
                feed.stop(reason)
        room.recorders.clear()
        for peer in list(room.peers.values()):
            await self._close_peer(room, peer)

    async def _add_candidate(self, peer: Peer, command: AddCandidate) -> None:
        text = command.candidate.strip()
        if not text:
            return  # end of candidates: aiortc needs nothing
        try:
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
        except Exception as exc:
            raise NegotiationError("invalid_candidate", f"candidate not understood: {exc}") from exc
        if not 1 <= candidate.port <= 65535 or candidate.component not in (1, 2):
            raise NegotiationError(
                "invalid_candidate", f"candidate port {candidate.port} or component {candidate.component} out of range"
            )
        candidate.sdpMid = command.sdp_mid
        candidate.sdpMLineIndex = command.sdp_mline_index
        try:
            await peer.pc.addIceCandidate(candidate)
        except Exception as exc:
            raise NegotiationError("invalid_candidate", f"candidate not applied: {exc}") from exc

    def _is_current(self, peer: Peer) -> bool:
        room = self._rooms.get(peer.hearing_id)
        return room is not None and room.peers.get(peer.participant_id) is peer

    def _peer_state(self, peer: Peer, state: str) -> None:
        mapped = _PEER_STATES.get(state)
        # A closed or replaced peer reports nothing: signaling closed it and knows (a late "closed" of the old
        # peer must not look like the new one dying).
        if mapped is None or peer.closed or not self._is_current(peer):
            return
        self._emit(PeerStateChanged(hearing_id=peer.hearing_id, participant_id=peer.participant_id, state=mapped))
        if mapped in (PeerState.failed, PeerState.closed):
            self._peer_lost(peer, mapped.value)

    def _peer_lost(self, peer: Peer, reason: str) -> None:
        """The current peer died by itself (failed, closed by the client, offer timeout): signaling replaces it."""
        if peer.closed or not self._is_current(peer) or peer.lost_reported:
            return
        peer.lost_reported = True
        log.info(
            "peer_lost",
            hearing_id=peer.hearing_id,
            participant_id=peer.participant_id,
            reason=reason,
            node_id=self.node_id,
        )
        self._emit(PeerLost(hearing_id=peer.hearing_id, participant_id=peer.participant_id, reason=reason))

    async def _health_loop(self) -> None:
        """Every ``health_interval``: one ``PeerHealth`` per peer; ends when the node has no peer left."""
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.settings.health_interval)
            lag = time.monotonic() - asked - self.settings.health_interval
            if lag >= _LOOP_LAG_FACT:
                # Every flow of the node waits while its event loop is held: say so (a fact, at most once a report).
                log.warning("node_loop_lagged", node_id=self.node_id, lag_ms=round(lag * 1000))
            peers = [peer for room in self._rooms.values() for peer in room.peers.values() if not peer.closed]
            if not peers:
                self._health = None
                return
            if self.settings.adaptation:
                self._adapt_all()
            for peer in peers:
                room = self._rooms.get(peer.hearing_id)
                if room is not None:
                    self._choose_layers(room, peer)
            for room in list(self._rooms.values()):
                for recorder in room.recorders.values():
                    for feed in recorder.feeds.values():
                        feed.follow_layers()
            for peer in peers:
                try:
                    self._emit(peer_health(peer))
                except Exception:  # one odd peer must not stop everyone's reports
                    log.exception("peer_health_failed", hearing_id=peer.hearing_id, participant_id=peer.participant_id)

    # --- published tracks -----------------------------------------------------------------------

    def _published(self, room: _Room, peer: Peer, transceiver: RTCRtpTransceiver) -> PublishedTrack:
        kind: MediaKind = "audio" if transceiver.kind == "audio" else "video"
        track_id = peer.remote_track_id(transceiver)
        published = PublishedTrack(
            hearing_id=room.hearing_id,
            participant_id=peer.participant_id,
            track_id=track_id,
            kind=kind,
            source=DEFAULT_SOURCE[kind],
            receiver=transceiver.receiver,
            keyframe_interval=self.settings.keyframe_interval,
            on_refused=self._refused,
            on_audio_level=lambda p, level: self._audio_level(room, p, level),
        )
        published.codec_name, published.clock_rate = first_codec(transceiver)
        if self.settings.adaptation and kind == "video":
            published.limit_remb()
        # Held (not forwarded) until _resolve_sources gives it a source, once the offer is applied.

        def bye() -> None:
            published.ended = True
            self._report_ended(published)
            if room.peers.get(peer.participant_id) is peer:
                self._resolve_sources(room, peer)
            self._replan(room)

        offered = peer.simulcast.get(str(transceiver.mid)) if kind == "video" else None
        if offered is not None:
            # Each layer is its own source of frames (its own SSRC, keyframe requests and subscribers).
            layers = published.add_layers(list(offered.rids))
            receive_layers(transceiver.receiver, offered.rids)
            tap_layers(
                transceiver.receiver,
                {str(layer.rid): layer.receiver_tap(bye) for layer in layers},
                published.on_packet,
                bye,
            )
        else:
            tap_receiver(transceiver.receiver, kind, published.receiver_tap(bye))
        log.info(
            "track_published",
            hearing_id=room.hearing_id,
            participant_id=peer.participant_id,
            track_id=track_id,
            kind=kind,
            codec=published.codec_name,
            **({"layers": list(offered.rids)} if offered is not None else {}),
        )
        return published

    def _resolve_sources(self, room: _Room, peer: Peer) -> None:
        """Give each live track of a participant its source, and forward only what the participant may publish.

        A source is carried by one track at most. A declared track takes its declared source (a declaration of
        the wrong kind is ignored: a video "microphone" would dodge the last-N and camera rules); an undeclared
        one takes its kind's default (camera, microphone) if no other track has it; any other track is held:
        never forwarded, never recorded. So a client cannot slip an extra video in as a second camera, e.g.
        after its ``publish evidence`` was refused.
        """
        pid = peer.participant_id
        declared = room.declared.get(pid, {})
        publishing = room.publishing.get(pid, frozenset())
        tracks = [t for t in peer.published.values() if not t.ended]
        taken: set[Source] = set()
        plan: dict[int, Source | None] = {}
        for t in tracks:
            wanted = declared.get(t.track_id)
            if wanted is not None and SOURCE_KIND[wanted] != t.kind:
                log.warning(
                    "declared_source_ignored", hearing_id=room.hearing_id, participant_id=pid, track_id=t.track_id
                )
            elif wanted is not None and wanted not in taken:
                plan[id(t)] = wanted
                taken.add(wanted)
        for t in tracks:
            if id(t) not in plan:
                default = DEFAULT_SOURCE[t.kind]
                plan[id(t)] = None if default in taken else default
                taken.add(default)
        for t in tracks:
            source = plan[id(t)]
            if source is None:
                if not t.held:
                    log.warning(
                        "undeclared_track_held", hearing_id=room.hearing_id, participant_id=pid, track_id=t.track_id
                    )
                t.held = True
                t.set_allowed(False)
                continue
            changed = t.held or t.source is not source
            t.held = False
            t.source = source
            t.set_allowed(source in publishing)
            if changed:
                self._emit(self._published_event(t))

    @staticmethod
    def _published_event(p: PublishedTrack) -> TrackPublished:
        return TrackPublished(
            hearing_id=p.hearing_id, participant_id=p.participant_id, track_id=p.track_id, kind=p.kind, source=p.source
        )

    def _check_ended(self, room: _Room, peer: Peer) -> None:
        for published in peer.published.values():
            if published.ended:
                self._report_ended(published)

    def _report_ended(self, published: PublishedTrack) -> None:
        if published.ended_reported:
            return
        published.ended_reported = True
        self._emit(
            TrackEnded(
                hearing_id=published.hearing_id, participant_id=published.participant_id, track_id=published.track_id
            )
        )

    def _refused(self, published: PublishedTrack) -> None:
        log.info(
            "publish_refused",
            hearing_id=published.hearing_id,
            participant_id=published.participant_id,
            source=published.source,
        )
        self._emit(
            PublishRefused(
                hearing_id=published.hearing_id,
                participant_id=published.participant_id,
                kind=published.kind,
                source=published.source,
            )
        )

    def _audio_level(self, room: _Room, published: PublishedTrack, level: int) -> None:
        if published.source is not Source.microphone:
            return
        changes = room.speakers.observe(published.participant_id, level, time.monotonic())
        if changes and self._rooms.get(room.hearing_id) is room:
            for speaker in sorted({speaker for _, speaker in changes}):
                receivers = sum(1 for _, s in changes if s == speaker)
                log.info("speaker_changed", hearing_id=room.hearing_id, participant_id=speaker, receivers=receivers)
            for receiver, speaker in changes:
                self._emit(SpeakerChanged(hearing_id=room.hearing_id, participant_id=speaker, receiver=receiver))
            self._replan(room)

    # --- what flows where -----------------------------------------------------------------------

    def _replan(self, room: _Room) -> None:
        """Apply the room's permissions and speaker order to every subscriber and recorder, now."""
        # Each person's speaker is chosen among what they may receive (and themselves).
        room.speakers.set_audiences({pid: room.receiving.get(pid, frozenset()) | {pid} for pid in room.peers})
        for pid, peer in list(room.peers.items()):
            if not peer.closed:
                peer.place(self._wanted(room, pid, last_n=self.settings.last_n))
                subscriber = room.subscribers.get(pid)
                if subscriber is not None and subscriber.allocation is not None:
                    self._apply_pauses(peer, subscriber.allocation, subscriber.top_available(time.monotonic()))
        for pid, recorder in room.recorders.items():
            self._place_recorder(room, recorder, self._wanted(room, pid, last_n=None))

    def _wanted(self, room: _Room, subscriber: str, last_n: int | None) -> list[PublishedTrack]:
        def published_by(pid: str) -> Iterable[PublishedTrack] | None:
            publisher = room.peers.get(pid)
            return None if publisher is None else publisher.published.values()

        permitted = room.receiving.get(subscriber, frozenset())
        return forwarding_plan(subscriber, permitted, room.speakers.order_for(subscriber), published_by, last_n)

    def _place_recorder(self, room: _Room, recorder: _Recorder, wanted: Iterable[PublishedTrack]) -> None:
        wanted_by_id = {id(t): t for t in wanted}
        for key, feed in list(recorder.feeds.items()):
            if key not in wanted_by_id:
                p = feed.publisher
                reason = "ended" if p.ended else "muted" if not p.allowed else "not_permitted"
                feed.stop(reason)
                del recorder.feeds[key]
        for key, track in wanted_by_id.items():
            if key not in recorder.feeds:
                feed = RecorderFeed(recorder.sink, track)
                recorder.feeds[key] = feed
                feed.start()

    def _choose_layers(self, room: _Room, peer: Peer) -> None:
        """Give each of the subscriber's simulcast videos the layer its tile and budget call for (media.simulcast);
        a switch happens at the new layer's next keyframe."""
        now = time.monotonic()
        for slot in peer.slots:
            track = slot.track
            publisher = track.publisher
            if publisher is None or not publisher.layers:
                continue
            mid = slot.mid
            if mid is not None and mid in peer.tiles:
                track.tile = peer.tiles[mid]
            before = track.rid
            infos = publisher.layer_infos(now)
            rid = track.chooser.decide(now, infos, track.tile, track.layer_budget)
            if rid is not None and track.select_layer(rid):
                self._layer_probe_undone(room, peer, infos, before, rid, track.layer_budget, now)
                log.info(
                    "subscriber_layer_switched",
                    hearing_id=room.hearing_id,
                    subscriber=peer.participant_id,
                    track=publisher.track_id,
                    publisher=publisher.participant_id,
                    layer=rid,
                    previous=before,
                    tile=None if track.tile is None else f"{track.tile[0]}x{track.tile[1]}",
                    budget_kbps=None if track.layer_budget is None else track.layer_budget // 1000,
                )

    @staticmethod
    def _layer_probe_undone(
        room: _Room,
        peer: Peer,
        infos: Sequence[LayerInfo],
        before: str | None,
        rid: str,
        budget: int | None,
        now: float,
    ) -> None:
        """The link stepped a video down a layer soon after a layer probe passed: the probe misjudged the link, so
        the next one waits as after a failed one (doubling, as for paused video a probe resumed)."""
        subscriber = room.subscribers.get(peer.participant_id)
        if subscriber is None or budget is None or before is None:
            return
        if now - subscriber.layers_probed_at >= 2 * subscriber.allocator.hold:
            return
        size = {layer.rid: (layer.width, layer.bitrate) for layer in infos}
        if before in size and rid in size and size[rid] < size[before]:
            subscriber.prober.undone(now)
            subscriber.layers_probed_at = float("-inf")

    def _slots_changed(self, peer: Peer) -> None:
        room = self._rooms.get(peer.hearing_id)
        if room is not None and not peer.closed:
            subscriber = room.subscribers.get(peer.participant_id)
            if subscriber is not None and subscriber.seeded(now := time.monotonic()):
                # Before any of the new slots sends: what its remembered link cannot carry starts paused.
                self._adapt(room, peer, now)
            self._choose_layers(room, peer)
        refs = peer.tracks()
        if refs != peer.last_tracks:
            peer.last_tracks = refs
            self._emit(Tracks(hearing_id=peer.hearing_id, participant_id=peer.participant_id, tracks=refs))

    # --- bandwidth adaptation -------------------------------------------------------------------

    def _remb(self, peer: Peer, bitrate: int, ssrcs: list[int]) -> None:
        """A REMB from a subscriber about some of the node's streams to it."""
        room = self._rooms.get(peer.hearing_id)
        if room is None or peer.closed or room.peers.get(peer.participant_id) is not peer:
            return
        subscriber = self._subscriber(room, peer.participant_id)
        now = time.monotonic()
        subscriber.heard(now)
        subscriber.book.remb(now, bitrate, ssrcs)
        self._silence_ended(room, peer, subscriber.nack_loss.sent(now, self._video_sent(peer)))
        estimate = subscriber.book.estimate(now)
        previous = subscriber.estimate
        fell = estimate is not None and previous is not None and estimate < previous * _ADAPT_DROP
        if fell or now - subscriber.decided_at >= _ADAPT_EVERY:
            self._adapt(room, peer, now)

    def _remembered(self, room: _Room, participant_id: str) -> None:
        """A new peer of a participant whose link the node saw constrained lately starts from that link's estimate
        (:data:`_LINK_MEMORY`)."""
        known = room.links.pop(participant_id, None)
        now = time.monotonic()
        if known is None or now - known[1] > _LINK_MEMORY or not self.settings.adaptation:
            return
        subscriber = self._subscriber(room, participant_id)
        subscriber.seed_bps, subscriber.seed_until = known[0], now + _SEED_WAIT
        log.info(
            "subscriber_link_remembered",
            hearing_id=room.hearing_id,
            subscriber=participant_id,
            estimate_kbps=known[0] // 1000,
            age_seconds=round(now - known[1], 1),
        )

    def _subscriber(self, room: _Room, participant_id: str) -> _Subscriber:
        subscriber = room.subscribers.get(participant_id)
        if subscriber is None:
            hold = self.settings.adapt_hold_seconds
            subscriber = _Subscriber(allocator=SubscriberAllocator(hold=hold), prober=ProbeController(hold))
            # The direct send path can pad (media.sending.FrameSender.send_padding): paused video comes back by
            # padding probes, not by resuming a stream blind when the estimate sits at its ceiling.
            subscriber.allocator.ceiling_probe = not self.settings.direct_send
            room.subscribers[participant_id] = subscriber
        return subscriber

    def _loss(self, peer: Peer, signal: LossSignal) -> None:
        """A receiver report block or a NACK from a subscriber: what tells a probe whether the link is clean, and
        an overflow at once (:meth:`_nacked`), its REMBs come or not."""
        room = self._rooms.get(peer.hearing_id)
        if room is None or peer.closed or room.peers.get(peer.participant_id) is not peer:
            return
        subscriber = self._subscriber(room, peer.participant_id)
        now = time.monotonic()
        subscriber.heard(now)
        ssrc = signal.ssrc
        sent = self._packets_sent(peer)
        video_sent = sent[0]
        subscriber.link.sent(now, self._nack_covered(peer, subscriber, sent))
        if not signal.nack:
            # (a NACK samples it with its own count)
            self._silence_ended(room, peer, subscriber.nack_loss.sent(now, video_sent))
        for slot in peer.slots:
            sender = slot.transceiver.sender
            if ssrc == sender_ssrc(sender) or ssrc == sender_rtx_ssrc(sender):
                # A paused (or idle) slot's receiver reports nothing lost of nothing received: not a sign. Nor are
                # a just resumed slot's NACKs and first report: its receiver asks again for what it missed before the
                # pause (aiortc repeats its whole missing list at every new gap; sent seconds ago, too old to resend),
                # and a slot that took another publisher jumped its sequence numbers (media.sending.SEQUENCE_JUMP).
                # Nor is what a silence of its feedback covered (its link was out): the reports after it count the
                # outage's packets as lost (Chromium's second one: its first came before any new packet, with the
                # highest sequence number of before the cut), and its NACKs name them. Counted, they made a link with
                # 2% random loss read 50% (LinkQuality.lifted, loss_ratio) and backed its top video off. Only NACKs
                # of what was sent since the feedback came back tell of the link then.
                back = subscriber.since_back(now)
                if (
                    slot.track.publisher is None
                    or slot.track.paused
                    or now - slot.track.resumed_at < _RESUME_NACKS
                    or (back is not None and not signal.nack)
                ):
                    if not signal.nack:
                        subscriber.link.rebase(now, ssrc, signal.packets_lost, signal.highest_sequence)
                    elif (padding := slot.track.frame_sender) is not None and (
                        lost := [
                            n
                            for n in signal.lost_sequences
                            if padding.padded_within(n, OVERLOAD_AGE if back is None else min(back, OVERLOAD_AGE))
                        ]
                    ):
                        # Padding the lift watch sent on the paused stream, lost now (_pad_for_lift): loss as any.
                        subscriber.link.nack(now, ssrc, lost)
                    return
                link = subscriber.link
                if signal.nack:
                    sender_of = slot.track.frame_sender
                    if back is not None and sender_of is not None:
                        named = [n for n in signal.lost_sequences if sender_of.sent_within(n, back)]
                        if not named:
                            return  # all sent into the outage
                        link.nack(now, ssrc, named)
                    else:
                        link.nack(now, ssrc, signal.lost_sequences)
                    if slot.kind == "audio" and not subscriber.audio_nacks:
                        subscriber.audio_nacks = True  # its audio counts towards a lift from now on
                        link.recount(now, self._nack_covered(peer, subscriber))
                    if slot.kind == "video" and signal.lost_sequences and sender_of is not None:
                        lost = [n for n in signal.lost_sequences if sender_of.sent_within(n, OVERLOAD_AGE)]
                        self._nacked(room, peer, subscriber, now, ssrc, lost)
                    return
                allocation = subscriber.allocation
                paused = allocation is not None and bool(allocation.paused)
                was_lifted = paused and link.lifted(now)  # (only a subscriber with paused video waits for a lift)
                since = link.reported_at(ssrc)
                counted = link.block(
                    now,
                    ssrc,
                    signal.fraction_lost,
                    signal.packets_lost,
                    signal.highest_sequence,
                    repaired=slot.kind == "audio" and subscriber.audio_nacks,
                )
                if (
                    counted is not None
                    and since is not None
                    and slot.track.top_priority
                    and ssrc == sender_ssrc(sender)
                    # Not a report that may count a probe's own overflow: its verdict answers for that. A later one
                    # does count (a failed probe's overflow left the top video in a keyframe loop behind 1 Mbit/s,
                    # and the judge froze 3.3 s while reports were skipped for the probe's echo).
                    and not subscriber.prober.overlaps(since)
                    and (budget := subscriber.top_budget(now)) is not None
                    and subscriber.backoff.report(now, *counted, budget, rtt=sender_rtt(sender))
                ):
                    log.info(
                        "subscriber_loss_backoff",
                        hearing_id=room.hearing_id,
                        subscriber=peer.participant_id,
                        lost=counted[0],
                        expected=counted[1],
                        budget_kbps=budget // 1000,
                        top_kbps=(subscriber.top_available(now) or 0) // 1000,
                    )
                    self._adapt(room, peer, now)  # the top video's cap and pacing follow at once
                if paused and not was_lifted and link.lifted(now):
                    # The report that shows a lifted limit: decide (and probe) now, not at the next REMB. Not so for
                    # the report that makes the link clean (CLEAN_SECONDS without loss): on a link with random loss
                    # that is a chance spell every few seconds, and a probe started in each one failed behind
                    # 1 Mbit/s in 2 of 8 thin-link runs, costing the judge's video a 2.3-2.5 s freeze each time.
                    self._adapt(room, peer, now)
                return
        if signal.nack:
            subscriber.link.nack(now)

    def _nacked(
        self, room: _Room, peer: Peer, subscriber: _Subscriber, now: float, ssrc: int, lost: Sequence[int]
    ) -> None:
        """A NACK of a video forwarded to the subscriber: when its link drops a large share of what is sent now (an
        overflow: :class:`media.bandwidth.NackLoss`), what it delivered becomes the subscriber's estimate at once."""
        loss = subscriber.nack_loss
        self._silence_ended(room, peer, loss.nacked(now, ssrc, lost, self._video_sent(peer)))
        allocation = subscriber.allocation
        if allocation is None or allocation.top is None or subscriber.prober.overlaps(now):
            return  # (a probe's own overflow: its verdict answers for it, and its padding is not in what was sent)
        shown = loss.overflowing(now)  # (first: most NACKs show none, and then no meter is read)
        if shown is None:
            return
        nacked, counted = shown
        video_bps = sum(
            slot.track.publisher.bitrate(now)
            for slot in peer.slots
            if slot.kind == "video" and slot.track.publisher is not None and not slot.track.paused
        )
        if video_bps <= 0:
            return  # (the meters' first reading, as the hearing starts: nothing to tell what the link delivered)
        audio_bps = self._audio_bps(peer, now)
        next_sequences = {
            sender_ssrc(slot.transceiver.sender): slot.track.frame_sender.next_sequence
            for slot in peer.slots
            if slot.kind == "video" and slot.track.frame_sender is not None
        }
        carried = loss.overloaded(now, video_bps, audio_bps, next_sequences)
        if carried is None:
            return
        subscriber.overload_bps = carried
        subscriber.overload_until = now + OVERLOAD_HOLD
        log.info(
            "subscriber_link_overloaded",
            hearing_id=room.hearing_id,
            subscriber=peer.participant_id,
            nacked=nacked,
            sent=counted,
            sending_kbps=(video_bps + audio_bps) // 1000,
            video_kbps=subscriber.overload_bps // 1000,
            estimate_kbps=None if subscriber.estimate is None else subscriber.estimate // 1000,
        )
        self._adapt(room, peer, now, overloaded=True)
        top = subscriber.allocation.top if subscriber.allocation is not None else None
        for slot in peer.slots:
            publisher = slot.track.publisher
            if publisher is None or publisher.recording_id != top or slot.track.paused:
                continue
            sender = slot.transceiver.sender
            if now - loss.lost_at(sender_ssrc(sender)) <= OVERLOAD_WINDOW:
                # The top video lost packets in the overflow, more than its resend budget on the link now holds: a
                # keyframe at once, not after the receiver gave up on the frame (a browser waits for resends first;
                # the thin-link client 200 ms) and its PLI came back.
                slot.track.repair(Reason.repair, sender_rtt(sender))

    @staticmethod
    def _silence_ended(room: _Room, peer: Peer, silence: float | None) -> None:
        """The fact of a subscriber's feedback that came again after a silence
        (:data:`media.bandwidth.FEEDBACK_SILENCE`): its link was out, and its next NACKs name what went into the
        outage, not an overflow."""
        if silence is not None:
            log.info(
                "subscriber_feedback_resumed",
                hearing_id=room.hearing_id,
                subscriber=peer.participant_id,
                silent_seconds=round(silence, 2),
            )

    @staticmethod
    def _nack_covered(peer: Peer, subscriber: _Subscriber, sent: tuple[int, int, int] | None = None) -> int:
        """Packets the direct send path sent the subscriber so far of the streams whose losses it NACKs: video (with
        the padding on paused video's streams, ``FrameSender.send_media_padding``), and audio once it NACKed audio (a
        browser does when the node's offer asks it; an older client never does, and its lost audio must not pass for
        a clean link)."""
        video, audio, padding = InProcessNode._packets_sent(peer) if sent is None else sent
        return video + padding + audio if subscriber.audio_nacks else video + padding

    @staticmethod
    def _video_sent(peer: Peer) -> int:
        """Video packets the direct send path sent the subscriber so far (its senders' counters)."""
        return InProcessNode._packets_sent(peer)[0]

    @staticmethod
    def _packets_sent(peer: Peer) -> tuple[int, int, int]:
        """Video and audio packets the direct send path sent the subscriber so far (its senders' counters: those that
        left, not those its pacer still holds), and padding packets on video streams, in one pass over its slots
        (read per RTCP message)."""
        video = audio = padding = 0
        for slot in peer.slots:
            sender = slot.track.frame_sender
            if sender is not None:
                if slot.kind == "video":
                    video += sender.packets_departed
                    padding += sender.media_padding_sent
                else:
                    audio += sender.packets_departed
        return video, audio, padding

    @staticmethod
    def _audio_bps(peer: Peer, now: float) -> int:
        """The audio the subscriber receives now, bit/s (never paused)."""
        return sum(
            slot.track.publisher.bitrate(now)
            for slot in peer.slots
            if slot.kind == "audio" and slot.track.publisher is not None and not slot.track.paused
        )

    @staticmethod
    def _estimate(peer: Peer, subscriber: _Subscriber, now: float) -> int | None:
        """The subscriber's estimate from its fresh REMBs about what is sent to it now (None: none).

        When all its REMBs went stale because all its feedback stopped (no word from it since they were fresh: its
        link is out), the estimate it had stands: None would forward everything, as to a receiver without REMB, and
        resumed every paused video into a link cut for a few seconds, to overflow it when it came back. It stands
        too for :data:`media.bandwidth.ESTIMATE_MAX_AGE` after its feedback came again, while its next REMB is on the
        way: a browser's first word after a cut is a receiver report or a NACK, and its REMB may come a second
        later (Chromium behind a thin link: the paused video was resumed 47 ms after a 6 s cut ended, by the
        receiver report that ended the silence)."""
        sending = {
            sender_ssrc(slot.transceiver.sender)
            for slot in peer.slots
            if slot.track.publisher is not None and not slot.track.paused
        }
        book = subscriber.book
        if subscriber.seeded(now):
            subscriber.estimate_held = False
            return subscriber.seed_bps
        estimate = book.estimate(now, sending)
        subscriber.estimate_held = (
            estimate is None
            and book.last_at > float("-inf")
            and book.estimate(now) is None
            and (subscriber.heard_at <= book.last_at + ESTIMATE_MAX_AGE or now - subscriber.back_at <= ESTIMATE_MAX_AGE)
        )
        return subscriber.estimate if subscriber.estimate_held else estimate

    def _videos(self, room: _Room, peer: Peer, subscriber: _Subscriber, now: float) -> list[VideoStream]:
        """The subscriber's videos as the allocator sees them, highest priority first."""
        speaker = room.speakers.active_for(peer.participant_id)
        ssrc_of = {
            id(slot.track.publisher): sender_ssrc(slot.transceiver.sender)
            for slot in peer.slots
            if slot.track.publisher is not None
        }
        videos: list[VideoStream] = []
        for track in peer.wanted:
            if track.kind != "video" or track.ended:
                continue
            publisher = room.peers.get(track.participant_id)
            camera = track.source is Source.camera
            videos.append(
                VideoStream(
                    key=track.recording_id,
                    need_bps=track.bitrate(now),
                    evidence=track.source is Source.evidence,
                    judge=camera and publisher is not None and publisher.role is Role.judge,
                    speaker=camera and track.participant_id == speaker,
                    covered=subscriber.book.covers(ssrc_of.get(id(track), -1)),
                )
            )
        return video_priority(videos)

    # --- padding probes -------------------------------------------------------------------------------------------

    def _maybe_probe(
        self, room: _Room, peer: Peer, subscriber: _Subscriber, now: float, videos: list[VideoStream]
    ) -> None:
        """Start a padding probe of the subscriber's link when it has paused video and the link looks clean."""
        prober, allocator, allocation = subscriber.prober, subscriber.allocator, subscriber.allocation
        if prober.running or allocation is None or allocation.top is None:
            return
        if not allocation.paused and not any(slot.track.chooser.held for slot in peer.slots):
            return  # nothing to probe for (no video paused, no layer refused): the usual case, at every decision
        # Asked at every decision that could probe, before anything else can stop it: the backoff keeps its books
        # here (what a failed probe's echo raised the estimate to, a lifted limit), keyframes in flight or not.
        streams = sum(1 for slot in peer.slots if slot.track.publisher is not None and not slot.track.paused)
        # The audio the link carries beside the video (never paused), for the ladder's rungs. Read at every
        # decision while video is paused, not only when a probe is due: a track's meter samples its counters when
        # read, and its first reading is 0 (media.bandwidth.BitrateMeter).
        beside = self._audio_bps(peer, now)
        link = subscriber.link
        link.sent(now, self._nack_covered(peer, subscriber))
        lifted = link.lifted(now)
        ratio = link.loss_ratio()
        nack_ratio = link.nack_ratio(now)
        # On a link that keeps losing packets at random, a clean spell is chance: probe only once it counts as lifted,
        # and then for everything paused at once (PROBE_RANDOM_LOSS). By the reports or the NACKs, whichever shows
        # more: the reports count what a resend filled in time (a 2% link read 0.47% in one thin-link run, and its
        # lift was probed for one camera, the other two 0.4 s later).
        random_loss = max(ratio or 0.0, nack_ratio or 0.0) >= PROBE_RANDOM_LOSS
        # Lifted is clean too: a lift the NACKs showed (LinkQuality.sent) comes before the last report of the loss
        # before it, which would keep the link from looking clean for CLEAN_SECONDS more.
        clean = lifted or (link.clean(now, streams) and not random_loss)
        due = prober.due(
            now,
            last_change=allocator.last_change,
            clean=clean,
            estimate=subscriber.estimate,
            lifted=lifted,
            dirty_at=link.dirty_at,
        )
        if not due:
            return
        layer_keys: tuple[str, ...] = ()
        if allocation.paused:
            everything = prober.everything(lifted=lifted) or (lifted and random_loss)
            goal, forwarded = allocator.probe_goal(videos, everything=everything)
            keys = allocator.probe_keys(videos, everything=everything)
        else:
            # Nothing paused, but simulcast videos the link stepped down: a probe shows whether it carries their next
            # layers now (a lifted limit), instead of waiting out the retry hold (media.simulcast.RETRY_HOLD).
            steps = self._layer_steps(peer, now)
            gaps = {key: gap for key, (_, gap) in steps.items() if gap > 0}
            if not gaps:
                return
            forwarded = sum(
                steps[v.key][0] if v.key in steps else v.need_bps for v in videos if v.key not in allocation.paused
            )
            goal = min(int((forwarded + sum(gaps.values())) * LAYER_PROBE_MARGIN), max(PROBE_MAX_BPS, forwarded))
            keys, layer_keys = (), tuple(gaps)
        fast = self._padding_sender(peer, allocation.top)
        if subscriber.silent(now) or subscriber.seeded(now):
            # Its link is out (a probe would pass unheard, see ProbeController.verdict), or it is back and its first
            # REMB on the way: a probe now would be judged without the estimate's fall, on loss alone, and its
            # padding would go into the link the remembered estimate keeps video out of (_LINK_MEMORY).
            return
        if fast is None or self._keyframe_in_flight(peer, allocation.top, now):
            # Not while a keyframe of the top video is on its way: the padding would overflow the link's queue with
            # it (measured: a probe beside a keyframe lost 54 packets at once, the judge froze 1.9 s behind 1 Mbit/s).
            return
        if goal <= forwarded:
            return
        full = goal
        if not lifted and not layer_keys:
            # A ladder of probes on a link not lifted (PROBE_STEP): each rung takes the link to at most 3x what it is
            # known to carry, its audio included; only the rung that reaches the goal resumes video.
            goal = prober.rung(goal, max(forwarded, subscriber.estimate or 0), beside)
            if goal <= forwarded:
                return
        cut_short = prober.cut_short  # (start() clears it)
        # A refused layer costs a small overflow to try again: no minute-long waits (LAYER_PROBE_WAIT_MAX).
        padding = subscriber.start_probe(
            now,
            goal,
            forwarded,
            seconds=LAYER_PROBE_SECONDS if layer_keys else PROBE_SECONDS,
            wait_max=LAYER_PROBE_WAIT_MAX if layer_keys else PROBE_WAIT_MAX,
            partial=goal < full,
        )
        prober.keys = keys
        subscriber.layer_probe = layer_keys
        log.info(
            "subscriber_probe_started",
            hearing_id=room.hearing_id,
            subscriber=peer.participant_id,
            goal_kbps=goal // 1000,
            full_goal_kbps=full // 1000,
            audio_kbps=beside // 1000,
            padding_kbps=padding // 1000,
            estimate_kbps=None if subscriber.estimate is None else subscriber.estimate // 1000,
            layers=len(layer_keys),
            wait_cut_short=cut_short,
            loss_ratio=ratio,
            nack_ratio=nack_ratio,
            clean_packets=link.clean_packets,
            clean_by_nacks=link.nack_clean(now),
            since_loss_s=None if link.dirty_at == float("-inf") else round(now - link.dirty_at, 2),
            since_nack_s=None if link.nacked_at == float("-inf") else round(now - link.nacked_at, 2),
            lift_padding=subscriber.lift_padding,
        )
        subscriber.padded_at = now
        subscriber.padding_owed = 0.0
        self._probe_tick(room, peer, subscriber)

    @staticmethod
    def _layer_steps(peer: Peer, now: float) -> dict[str, tuple[int, int]]:
        """The subscriber's forwarded simulcast videos (by recording id): the bit/s of the layer it gets now, and the
        bit/s more the layer its tile wants takes when its link keeps it below that layer (else 0;
        media.simulcast.LayerChooser.link_gap)."""
        steps: dict[str, tuple[int, int]] = {}
        for slot in peer.slots:
            track, publisher = slot.track, slot.track.publisher
            if publisher is None or not publisher.layers or track.paused:
                continue
            infos = publisher.layer_infos(now)
            current = next((layer.bitrate for layer in infos if layer.rid == track.chooser.current), 0)
            steps[publisher.recording_id] = (current, track.chooser.link_gap(infos, track.tile))
        return steps

    @staticmethod
    def _keyframe_in_flight(peer: Peer, top: str, now: float) -> bool:
        """Whether a keyframe of the subscriber's top video is on its way (paced, or too recent for its receiver to
        have judged it): padding now would overflow the link's queue with it, and the keyframe's loss costs more
        than a probe's delay."""
        for slot in peer.slots:
            publisher = slot.track.publisher
            if publisher is not None and publisher.recording_id == top:
                return now < slot.track.repairs.delivered + REPAIR_GRACE
        return False

    @staticmethod
    def _padding_sender(peer: Peer, top: str) -> FrameSender | None:
        """The direct send path of the slot carrying the subscriber's top video (padding rides on its RTX stream)."""
        for slot in peer.slots:
            publisher = slot.track.publisher
            if publisher is not None and publisher.recording_id == top and not slot.track.paused:
                return slot.track.frame_sender
        return None

    def _probe_tick(self, room: _Room, peer: Peer, subscriber: _Subscriber) -> None:
        """One step of a running probe: its verdict if known, else the padding due since the last step."""
        subscriber.probe_timer = None
        prober = subscriber.prober
        if peer.closed or room.subscribers.get(peer.participant_id) is not subscriber or not prober.running:
            return
        now = time.monotonic()
        estimate = self._estimate(peer, subscriber, now)
        link = subscriber.link
        # A falling REMB (queueing delay) judges probes on a link with random loss, where loss says little and comes
        # late; on a clean one loss alone does, and so it does right after a resume: a receiver short of CPU reads
        # its late processing as queueing delay (after a lifted limit the defendant's client, decoding the keyframes
        # of what came back, failed the probes that followed by its REMB on an unlimited link).
        delay_judged = (
            link.lossy(now)
            and not link.lifted(now)
            and not any(now - slot.track.resumed_at < _RESUME_NACKS for slot in peer.slots)  # (just resumed)
        )
        verdict = prober.verdict(
            now,
            dirty_at=link.probe_dirty_at,
            estimate=estimate,
            fell_at=subscriber.book.fell_at if delay_judged else float("-inf"),
            heard_at=subscriber.heard_at,
        )
        if verdict is not None:
            self._probe_done(room, peer, subscriber, verdict, now, estimate)
            return
        if not prober.padding(now) and prober.keys and not prober.partial:
            # The padding went through; while its verdict is awaited (PROBE_VERDICT), the keyframes of what it would
            # resume are asked for and kept, so the resume need not wait for them (ForwardedTrack.prime).
            self._prime(peer, prober.keys)
        allocation = subscriber.allocation
        fast = self._padding_sender(peer, allocation.top) if allocation is not None and allocation.top else None
        if prober.padding(now) and fast is not None:
            packets, subscriber.padding_owed = _padding_due(
                subscriber.padding_owed, prober.padding_bps, now - subscriber.padded_at, PADDING_SIZE_ON_WIRE
            )
            if packets:
                fast.send_padding(packets)
        subscriber.padded_at = now
        subscriber.probe_timer = asyncio.get_running_loop().call_later(
            _PROBE_TICK, self._probe_tick, room, peer, subscriber
        )

    @staticmethod
    def _prime(peer: Peer, keys: Collection[str]) -> None:
        """Prime the subscriber's paused slots of ``keys`` for a resume (``ForwardedTrack.prime``; idempotent)."""
        for slot in peer.slots:
            publisher = slot.track.publisher
            if publisher is not None and publisher.recording_id in keys:
                slot.track.prime()

    def _probe_done(
        self, room: _Room, peer: Peer, subscriber: _Subscriber, passed: bool, now: float, estimate: int | None
    ) -> None:
        self._judged(room, peer, subscriber, passed, now, estimate)
        for slot in peer.slots:
            slot.track.unprime()  # (a resume took its frames; the rest were kept for a probe that failed)

    def _judged(
        self, room: _Room, peer: Peer, subscriber: _Subscriber, passed: bool, now: float, estimate: int | None
    ) -> None:
        prober = subscriber.prober
        layer_probe, subscriber.layer_probe = subscriber.layer_probe, ()
        if not passed:
            if peer.nack_budget is not None:
                # What the top video lost to the probe's overflow is resent at the probe's expense: packets sent from
                # its start until the link's queue drained after it (PROBE_VERDICT).
                peer.nack_budget.forgive(prober.last_started_at, now + PROBE_VERDICT)
            log.info(
                "subscriber_probe_failed",
                hearing_id=room.hearing_id,
                subscriber=peer.participant_id,
                goal_kbps=prober.goal_bps // 1000,
                next_in_s=round(prober.next_at - now, 1),
                failed_by=prober.failed_by,
                after_s=round(now - prober.last_started_at, 3),
                layers=len(layer_probe),
            )
            return
        resumed: tuple[str, ...] = ()
        if prober.partial:
            # A rung below the goal passed: nothing resumes yet, the next rung goes now.
            log.info(
                "subscriber_probe_rung_passed",
                hearing_id=room.hearing_id,
                subscriber=peer.participant_id,
                goal_kbps=prober.goal_bps // 1000,
            )
            self._adapt(room, peer, now)
            return
        subscriber.backoff.forget()  # (the link carried the probe: what the top video lost before says no more)
        if layer_probe:
            for slot in peer.slots:
                publisher = slot.track.publisher
                if publisher is not None and publisher.recording_id in layer_probe:
                    slot.track.chooser.probed(now)
            subscriber.layers_probed_at = now
        else:
            videos = self._videos(room, peer, subscriber, now)
            resumed = subscriber.allocator.resume_probed(now, prober.goal_bps, estimate, videos, keys=prober.keys)
        log.info(
            "subscriber_probe_succeeded",
            hearing_id=room.hearing_id,
            subscriber=peer.participant_id,
            goal_kbps=prober.goal_bps // 1000,
            resumed=len(resumed),
            # (of those, how many have their keyframe at hand: ForwardedTrack.prime)
            primed=sum(1 for slot in peer.slots if slot.track.primed),
            layers=len(layer_probe),
        )
        if resumed:
            track_ids = {t.recording_id: t.track_id for t in peer.wanted}
            for key in resumed:
                log.info(
                    "subscriber_video_resumed",
                    hearing_id=room.hearing_id,
                    subscriber=peer.participant_id,
                    track=track_ids.get(key, key),
                    estimate_kbps=None if estimate is None else estimate // 1000,
                    probed_kbps=prober.goal_bps // 1000,
                )
        if resumed or layer_probe:
            self._adapt(room, peer, now)

    @staticmethod
    def _stop_timers(subscriber: _Subscriber) -> None:
        """Cancel the subscriber's running probe and its lift watch (it left)."""
        for timer in (subscriber.probe_timer, subscriber.lift_timer):
            if timer is not None:
                timer.cancel()
        subscriber.probe_timer = subscriber.lift_timer = None

    def _arm_lift_watch(self, room: _Room, peer: Peer, subscriber: _Subscriber, now: float) -> None:
        """Look at the link every :data:`_LIFT_WATCH` while the subscriber has paused video, no probe runs, and its
        link lost packets and does not count as lifted yet; else stop looking."""
        allocation = subscriber.allocation
        link = subscriber.link
        waiting = (
            allocation is not None
            and bool(allocation.paused)
            and not subscriber.prober.running
            and link.dirty_at > float("-inf")
            and (not link.lifted(now) or now - subscriber.lift_found_at <= _LIFT_RETRY)
        )
        if not waiting:
            if subscriber.lift_timer is not None:
                subscriber.lift_timer.cancel()
                subscriber.lift_timer = None
        elif subscriber.lift_timer is None:
            subscriber.lift_timer = asyncio.get_running_loop().call_later(
                _LIFT_WATCH, self._watch_lift, room, peer, subscriber
            )

    def _watch_lift(self, room: _Room, peer: Peer, subscriber: _Subscriber) -> None:
        """One look for a lifted link (see :meth:`_arm_lift_watch`, :meth:`media.bandwidth.LinkQuality.look`): the
        first that finds it lifted decides (and probes) at once."""
        subscriber.lift_timer = None
        pid = peer.participant_id
        if peer.closed or room.subscribers.get(pid) is not subscriber or room.peers.get(pid) is not peer:
            return
        now = time.monotonic()
        link = subscriber.link
        if link.look(now, self._nack_covered(peer, subscriber)):
            subscriber.lift_found_at = now
            self._adapt(room, peer, now)
        elif link.lifted(now) and now - subscriber.lift_found_at <= _LIFT_RETRY:
            # The lift was found but its probe could not start then (a keyframe of the top video on its way, as after
            # the cap raise a lift brings): decided again at the next look, not at the next REMB (0.5 s in one
            # thin-link run, where the count was reached 0.5 s before the probe started).
            self._adapt(room, peer, now)
        else:
            self._pad_for_lift(peer, subscriber, now)
            self._arm_lift_watch(room, peer, subscriber, now)

    @staticmethod
    def _pad_for_lift(peer: Peer, subscriber: _Subscriber, now: float) -> None:
        """Send the padding due since the last look on the first paused video's own stream, while it hastens the
        lift (:meth:`media.bandwidth.LinkQuality.pads`, :data:`media.bandwidth.LIFT_PADDING_SHARE`)."""
        estimate = subscriber.estimate
        since, subscriber.lift_padded_at = subscriber.lift_padded_at, now
        if estimate is None or subscriber.silent(now) or not subscriber.link.pads(now):
            subscriber.lift_padding_owed = 0.0
            return
        sender = next(
            (
                slot.track.frame_sender
                for slot in peer.slots
                if slot.kind == "video" and slot.track.paused and slot.track.frame_sender is not None
            ),
            None,
        )
        if sender is None:
            return
        bps = min(estimate * LIFT_PADDING_SHARE, LIFT_PADDING_MAX_BPS)
        seconds = min(max(0.0, now - since), 2 * _LIFT_WATCH)
        packets, subscriber.lift_padding_owed = _padding_due(
            subscriber.lift_padding_owed, bps, seconds, LIFT_PADDING_ON_WIRE
        )
        if packets:
            subscriber.lift_padding += sender.send_media_padding(packets)

    def _adapt_all(self) -> None:
        """Decide again for every subscriber whose REMBs did not lead to a decision lately (stale REMBs expire,
        probes come due)."""
        now = time.monotonic()
        for room in list(self._rooms.values()):
            for pid, subscriber in list(room.subscribers.items()):
                peer = room.peers.get(pid)
                if peer is not None and not peer.closed and now - subscriber.decided_at >= 2 * _ADAPT_EVERY:
                    self._adapt(room, peer, now)

    def _adapt(self, room: _Room, peer: Peer, now: float, *, overloaded: bool = False) -> None:
        """Decide which videos the subscriber gets from its estimate, pause/resume its slots, update the caps.
        ``overloaded``: its link overflows now (:meth:`_nacked`)."""
        pid = peer.participant_id
        subscriber = self._subscriber(room, pid)
        estimate = self._estimate(peer, subscriber, now)
        if now < subscriber.overload_until and (estimate is None or estimate > subscriber.overload_bps):
            estimate = subscriber.overload_bps  # what an overflow showed the link delivers, until REMB catches up
        videos = self._videos(room, peer, subscriber, now)
        subscriber.estimate = estimate
        subscriber.decided_at = now
        # Loss counts only if seen after the last probe that passed: that probe found the link clean (loss seen
        # before it, e.g. the queue a lifted limit flushed, says nothing of the link now).
        link = subscriber.link
        lossy = link.lossy(now) and link.dirty_at > subscriber.prober.succeeded_at
        seeded = subscriber.seeded(now)
        if seeded:
            # A returning subscriber, its first REMB on the way: its link as the node last knew it (a link that had
            # to be constrained, lossy), what does not fit under it paused before it is sent (as an overflow's).
            overloaded = True
        if subscriber.estimate_held or seeded:
            # Its link is out (or just back, its REMB on the way): decide as when it last spoke, and add nothing.
            # Its REMBs' streams went stale with them: every video counts as covered by the estimate that stands
            # (as uncovered, their needs were added to it, and the paused video resumed 2 s into a cut), and the
            # silence counts as loss (without loss, tiles alone choose layers: the judge's full layer went into the
            # cut).
            lossy = True
            videos = [dataclasses.replace(v, covered=True) for v in videos]
        videos = self._step_down_layers(room, peer, videos, estimate if lossy else None, now)
        allocation = subscriber.allocator.update(now, estimate, videos, lossy=lossy, overloaded=overloaded)
        if allocation.paused_now and now - subscriber.prober.succeeded_at < 2 * subscriber.allocator.hold:
            subscriber.prober.undone(now)  # what the last probe brought back did not hold: back off
        previous = subscriber.allocation
        subscriber.allocation = allocation
        if allocation.constrained and estimate:
            subscriber.constrained = (estimate, now)
        if peer.nack_budget is not None:
            # Resends spend a share of what the allocator counts on: a probe's rate stands in for a lower estimate
            # after it passed, and what it resumed loses packets too (the receiver's REMB climbs to it only seconds
            # later). Held to the REMB's share (behind a just-lifted limit in the thin-link test, 440 kbit/s x 0.2:
            # about 5 packets a half second), the lost packets of three resumed cameras' keyframes would go unanswered,
            # and a camera would wait for the keyframe asked for its repair.
            # Not while the link overflows: what the overflow showed it delivers is the estimate then.
            standing = subscriber.allocator.probed_bps if now >= subscriber.overload_until else 0
            peer.nack_budget.set_estimate(None if estimate is None else max(estimate, standing))
        if allocation.paused_now or allocation.resumed_now:
            estimate_kbps = None if estimate is None else estimate // 1000
            track_ids = {t.recording_id: t.track_id for t in peer.wanted}
            # What the decision weighed (kbit/s): each video's need (its layer's, for simulcast), what stays
            # forwarded, and what of that no REMB covers yet (the allocator counts it as carried, beside the estimate).
            needs = {v.key: v.need_bps // 1000 for v in videos}
            forwarded_kbps = sum(needs[k] for k in allocation.forwarded if k in needs)
            uncovered_kbps = sum(needs[v.key] for v in videos if not v.covered and v.key in allocation.forwarded)
            layer_rates = {
                slot.track.publisher.recording_id: ",".join(
                    f"{i.rid}:{i.bitrate // 1000}{'' if i.active else '-'}"
                    for i in slot.track.publisher.layer_infos(now)
                )
                for slot in peer.slots
                if slot.track.publisher is not None and slot.track.publisher.layers
            }
            for event, keys in (
                ("subscriber_video_paused", allocation.paused_now),
                ("subscriber_video_resumed", allocation.resumed_now),
            ):
                for key in keys:
                    log.info(
                        event,
                        hearing_id=room.hearing_id,
                        subscriber=pid,
                        track=track_ids.get(key, key),
                        estimate_kbps=estimate_kbps,
                        need_kbps=needs.get(key),
                        forwarded_kbps=forwarded_kbps,
                        uncovered_kbps=uncovered_kbps,
                        probed_kbps=subscriber.allocator.probed_bps // 1000,
                        layers_kbps=layer_rates.get(key),
                    )
        self._apply_pauses(peer, allocation, subscriber.top_available(now))
        if self.settings.direct_send:
            self._maybe_probe(room, peer, subscriber, now, videos)
            self._arm_lift_watch(room, peer, subscriber, now)
        if (
            allocation.constrained
            or (previous is not None and previous.constrained)
            or (previous is not None and previous.top != allocation.top)
        ):
            self._apply_caps(room)

    def _step_down_layers(
        self, room: _Room, peer: Peer, videos: list[VideoStream], estimate: int | None, now: float
    ) -> list[VideoStream]:
        """Simulcast videos first go down a layer (or more) within the estimate; the allocator then pauses only what
        does not fit even so. ``estimate`` None (no loss seen: a low REMB alone is no reason): tiles alone decide."""
        slots = {
            slot.track.publisher.recording_id: slot
            for slot in peer.slots
            if slot.track.publisher is not None and slot.track.publisher.layers
        }
        if not slots:
            return videos
        layers = {}
        for key, slot in slots.items():
            publisher = slot.track.publisher
            assert publisher is not None
            tile = peer.tiles.get(slot.mid) if slot.mid is not None else None
            layers[key] = (publisher.layer_infos(now), tile if tile is not None else slot.track.tile)
        needs, budgets = plan_layers([(v.key, v.need_bps) for v in videos], layers, estimate)
        for key, budget in budgets.items():
            slots[key].track.layer_budget = budget
        self._choose_layers(room, peer)
        return [dataclasses.replace(v, need_bps=needs.get(v.key, v.need_bps)) for v in videos]

    @staticmethod
    def _apply_pauses(peer: Peer, allocation: Allocation, available: int | None) -> None:
        """Pause and resume the subscriber's video slots; pace its top video by ``available`` (what the estimate
        leaves for it, :meth:`_Subscriber.top_available`)."""
        keys = set(allocation.paused)
        top = allocation.top if allocation.constrained else None
        for slot in peer.slots:
            publisher = slot.track.publisher
            if publisher is None or publisher.kind != "video":
                continue
            slot.track.top_priority = publisher.recording_id == top
            rate = available
            if rate and slot.track.top_priority and publisher.layers:
                # A simulcast publisher is never capped (see _apply_caps): its layer's own rate may be above what the
                # estimate leaves (a browser's REMB sits at its floor after a step down, 227-260 kbit/s beside a
                # 245-290 kbit/s layer). Pacing is to spread bursts, not to cut the rate: paced below the layer's
                # rate, the backlog would only grow to the pacer's limit and leave in bursts.
                now = time.monotonic()
                current = slot.track.chooser.current
                rate = max(rate, next((i.bitrate for i in publisher.layer_infos(now) if i.rid == current), 0))
            slot.track.pace_bps = int(rate * PACE_FACTOR) if slot.track.top_priority and rate else None
            if publisher.recording_id in keys:
                slot.track.pause()
            else:
                slot.track.resume()

    def _apply_caps(self, room: _Room) -> None:
        """Ask each publisher's video for no more than its weakest constrained subscriber takes (REMB)."""
        available: dict[str, list[int]] = {}
        now = time.monotonic()
        for subscriber in room.subscribers.values():
            allocation = subscriber.allocation
            top_available = subscriber.top_available(now)
            if allocation is not None and allocation.top is not None and top_available is not None:
                available.setdefault(allocation.top, []).append(int(top_available * CAP_SHARE))
        floor = self.settings.min_video_kbps * 1000
        for peer in room.peers.values():
            for published in peer.published.values():
                limiter = published.remb
                if limiter is None or published.layers:
                    # A simulcast publisher is not capped: its smaller layers serve the thin subscribers, and a low
                    # REMB would make the browser drop the layers everyone else gets.
                    continue
                old = limiter.cap
                cap = settle_cap(old, publisher_cap(available.get(published.recording_id, ()), floor))
                cap, published.cap_raise_since = hold_raise(old, cap, now, published.cap_raise_since)
                limiter.cap = cap
                if cap is None and old is not None:
                    log.info(
                        "publisher_bitrate_uncapped",
                        hearing_id=room.hearing_id,
                        publisher=published.participant_id,
                        track=published.track_id,
                    )
                elif cap is not None and (old is None or abs(cap - old) > old // 4):
                    # A fact per real change (a quarter or more), not per REMB.
                    log.info(
                        "publisher_bitrate_capped",
                        hearing_id=room.hearing_id,
                        publisher=published.participant_id,
                        track=published.track_id,
                        cap_kbps=cap // 1000,
                    )

    # --- events ---------------------------------------------------------------------------------

    def _emit(self, event: NodeEvent) -> None:
        if self._events is None:
            self._events = asyncio.Queue(maxsize=_EVENT_QUEUE_BOUND)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch(self._events))
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("node_event_dropped", event=event.type, node_id=self.node_id)

    async def _dispatch(self, events: asyncio.Queue[NodeEvent]) -> None:
        while True:
            event = await events.get()
            for handler in list(self._handlers):
                try:
                    await handler(event)
                except Exception:
                    log.exception("node_event_handler_failed", event=event.type)


def _padding_due(owed: float, bps: float, seconds: float, size: int) -> tuple[int, float]:
    """Whole padding packets of ``size`` bytes on the wire due after ``seconds`` at ``bps``, with ``owed`` bytes
    behind from before; and the bytes still owed after them (a probe's padding, the lift watch's)."""
    owed += bps / 8 * seconds
    packets = int(owed // size)
    return packets, owed - packets * size
