"""The node-control interface: how signaling drives a media node, and what the node reports.

Every command, reply and event is a frozen pydantic model with a ``type``
discriminator, so it serializes to JSON as is: the in-process implementation
passes the objects, a remote one (a later issue: nodes in other processes and
machines, over Redis) passes their JSON. Nothing on either side may rely on
sharing memory across this interface.

Division of work: signaling decides *who may* (the permission table) and tells
the node with ``set_publishing`` and ``set_receiving``; the node decides *what
flows* within that (last-N video by active speaker, keyframe gating) and asks
signaling to relay SDP with ``offer`` events when what a participant receives
changes (server-initiated renegotiation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Literal, Protocol

from pydantic import Field, TypeAdapter

from rooms.model import Frozen, Role, Source

MediaKind = Literal["audio", "video"]


class PeerState(StrEnum):
    """A participant's peer connection state as the node sees it."""

    new = "new"
    connecting = "connecting"
    connected = "connected"
    failed = "failed"
    closed = "closed"


class _Addressed(Frozen):
    hearing_id: str = Field(description="The hearing (room on the node).")
    participant_id: str = Field(description="The participant whose peer is meant.")


# --- commands: signaling -> node -------------------------------------------------------------


class CreatePeer(_Addressed):
    """Prepare a peer connection for a participant (idempotent: an existing peer is replaced)."""

    type: Literal["create_peer"] = "create_peer"
    role: Role = Field(description="The participant's role (for logs and metrics only; rights come separately).")


class ClosePeer(_Addressed):
    """Close and forget a participant's peer connection."""

    type: Literal["close_peer"] = "close_peer"


class ApplyOffer(_Addressed):
    """The client's offer; the reply is an ``SdpAnswer``."""

    type: Literal["apply_offer"] = "apply_offer"
    sdp: str = Field(max_length=200_000)


class ApplyAnswer(_Addressed):
    """The client's answer to a node ``Offer`` event."""

    type: Literal["apply_answer"] = "apply_answer"
    sdp: str = Field(max_length=200_000)


class AddCandidate(_Addressed):
    """A trickled ICE candidate from the client (full-SDP clients send none)."""

    type: Literal["add_candidate"] = "add_candidate"
    candidate: str = Field(max_length=2_000)
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class DeclareTrack(_Addressed):
    """Which source a published track is (by the track id in the client's msid)."""

    type: Literal["declare_track"] = "declare_track"
    track_id: str = Field(max_length=200)
    source: Source


class SetPublishing(_Addressed):
    """The sources the node forwards from this participant; packets of others are dropped.

    Signaling sends it on admission, mute, placement and state changes.
    """

    type: Literal["set_publishing"] = "set_publishing"
    sources: tuple[Source, ...] = ()


class SetReceiving(_Addressed):
    """The participants whose media this participant may receive (the permission table's answer).

    The node forwards their audio and, by last-N, some of their video.
    """

    type: Literal["set_receiving"] = "set_receiving"
    publishers: tuple[str, ...] = ()


class CreateProbe(_Addressed):
    """A network check before joining: a short-lived peer that echoes the client's media back to it.

    The reply is an ``SdpAnswer``. The node closes the probe when the client does, or after its lifetime
    (at most 20 s); it refuses ``probe_busy`` while the participant has a live probe and
    ``too_many_probes`` at its limit of concurrent probes. A probe joins no room: nothing is forwarded to
    or from other participants.
    """

    type: Literal["create_probe"] = "create_probe"
    sdp: str = Field(max_length=200_000)


class TileSize(Frozen):
    """How big a subscriber shows one video it receives."""

    mid: str = Field(max_length=64, description="The media id the video arrives on.")
    width: int = Field(ge=0, le=16_384, description="Pixels wide on screen (device pixels); 0: not shown.")
    height: int = Field(ge=0, le=16_384, description="Pixels high on screen (device pixels); 0: not shown.")


class SetView(_Addressed):
    """The sizes a subscriber shows its videos at: the node forwards each simulcast video's smallest layer that is
    big enough (videos not named keep their last size; none told: the largest layer)."""

    type: Literal["set_view"] = "set_view"
    tiles: tuple[TileSize, ...] = Field(default=(), max_length=64)


class CloseRoom(Frozen):
    """Close every peer of a hearing (adjourn, cancel, shutdown)."""

    type: Literal["close_room"] = "close_room"
    hearing_id: str


NodeCommand = Annotated[
    CreatePeer
    | ClosePeer
    | ApplyOffer
    | ApplyAnswer
    | AddCandidate
    | DeclareTrack
    | SetPublishing
    | SetReceiving
    | CreateProbe
    | SetView
    | CloseRoom,
    Field(discriminator="type"),
]
NODE_COMMAND: TypeAdapter[NodeCommand] = TypeAdapter(NodeCommand)


# --- replies ---------------------------------------------------------------------------------


class Ack(Frozen):
    """The command was carried out."""

    type: Literal["ack"] = "ack"


class SdpAnswer(Frozen):
    """The node's answer to an ``ApplyOffer``."""

    type: Literal["sdp_answer"] = "sdp_answer"
    sdp: str


class Refused(Frozen):
    """The command could not be carried out; nothing changed. ``code`` is stable snake_case."""

    type: Literal["refused"] = "refused"
    code: str = Field(description="e.g. invalid_sdp, no_such_peer, renegotiation_pending")
    message: str


NodeReply = Annotated[Ack | SdpAnswer | Refused, Field(discriminator="type")]
NODE_REPLY: TypeAdapter[NodeReply] = TypeAdapter(NodeReply)


# --- events: node -> signaling ---------------------------------------------------------------


class TrackRef(Frozen):
    """One track a subscriber receives: which mid carries whose source."""

    mid: str | None
    track_id: str
    participant_id: str
    source: Source
    kind: MediaKind


class Offer(_Addressed):
    """The node renegotiates: relay this offer to the participant and send back its answer."""

    type: Literal["offer"] = "offer"
    sdp: str


class TrackPublished(_Addressed):
    """A participant's track arrived at the node."""

    type: Literal["track_published"] = "track_published"
    track_id: str
    kind: MediaKind
    source: Source


class TrackEnded(_Addressed):
    """A participant's published track ended."""

    type: Literal["track_ended"] = "track_ended"
    track_id: str


class PublishRefused(_Addressed):
    """A participant sent media it may not publish; its packets are dropped."""

    type: Literal["publish_refused"] = "publish_refused"
    kind: MediaKind
    source: Source


class Tracks(_Addressed):
    """What this participant now receives, to be sent to them as a ``tracks`` message."""

    type: Literal["tracks"] = "tracks"
    tracks: tuple[TrackRef, ...] = ()


class SpeakerChanged(Frozen):
    """The active speaker of a hearing changed, as one receiver hears it."""

    type: Literal["speaker_changed"] = "speaker_changed"
    hearing_id: str
    participant_id: str
    receiver: str | None = Field(
        default=None,
        description="The participant whose speaker this is (chosen among what they may receive); "
        "None: a hearing-wide speaker, told only to those who may receive the speaker.",
    )


class PeerStateChanged(_Addressed):
    """A participant's peer connection changed state."""

    type: Literal["peer_state"] = "peer_state"
    state: PeerState


class TrackHealth(Frozen):
    """Packet counters of one track of a peer, as the node saw them at the last health tick."""

    track_id: str = Field(description="The publisher's track id (for ``out``: the track the slot carries now).")
    source: Source
    kind: MediaKind
    direction: Literal["in", "out"] = Field(description="in: received from this participant; out: sent to them.")
    packets: int = Field(description="RTP packets so far (``out``: on this slot, whoever it carried).")
    bytes: int = Field(description="RTP payload bytes so far (``out``: RTP bytes).")
    idle_ms: int | None = Field(description="Milliseconds since the last packet; None before the first.")


class PeerHealth(_Addressed):
    """How a participant's peer is doing: emitted for every peer about once per second (one event per peer)."""

    type: Literal["peer_health"] = "peer_health"
    connection: PeerState
    ice: str = Field(description="ICE connection state (aiortc: new, checking, completed, failed, closed).")
    dtls: str = Field(description="DTLS transport state (new, connecting, connected, closed, failed).")
    tracks: tuple[TrackHealth, ...] = ()


class PeerLost(_Addressed):
    """The node gave up on a participant's current peer: signaling replaces it and tells the client to restart.

    Reasons: ``failed`` or ``closed`` (the connection died without a ``close_peer``), ``offer_timeout`` (the
    node's offer went unanswered for 10 s: sent, re-sent after 5 s, dropped after 5 s more).
    """

    type: Literal["peer_lost"] = "peer_lost"
    reason: str


class MediaNodeLost(Frozen):
    """The hearing's media node was lost (its heartbeat lapsed): the hearing was placed on another node.

    Emitted by a pool of nodes (``signaling.node_pool.NodePool``), never by a node itself. Signaling makes
    every peer of the hearing again on the new node with its whole plan and tells each participant
    ``media_restart`` (``node_lost``). ``new_node_id`` None: no node is up; the participants are told
    ``no_media_node`` and the event comes again with a node once one is up.
    """

    type: Literal["media_node_lost"] = "media_node_lost"
    hearing_id: str
    node_id: str = Field(description="The node that was lost.")
    new_node_id: str | None = Field(default=None, description="The hearing's new home node; None: no node is up.")


NodeEvent = Annotated[
    Offer
    | TrackPublished
    | TrackEnded
    | PublishRefused
    | Tracks
    | SpeakerChanged
    | PeerStateChanged
    | PeerHealth
    | PeerLost
    | MediaNodeLost,
    Field(discriminator="type"),
]
NODE_EVENT: TypeAdapter[NodeEvent] = TypeAdapter(NodeEvent)

EventHandler = Callable[[NodeEvent], Awaitable[None]]


class NodeControl(Protocol):
    """A media node as signaling sees it."""

    @property
    def node_id(self) -> str:
        """Stable id of the node."""
        ...

    async def call(self, command: NodeCommand) -> NodeReply:
        """Carry out one command; never raises for bad client input (answers ``Refused``)."""
        ...

    def subscribe(self, handler: EventHandler) -> None:
        """Receive every event of this node (in order per participant)."""
        ...
