"""Read-only views that signaling serves but other services own: recordings and media nodes.

Signaling never imports the recorder or the media node; the composition root
hands it implementations of these protocols (in-process today, over Redis
when nodes and recorders run elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import Field

from rooms.model import Frozen


class RecordingInfo(Frozen):
    """One recording session of a hearing (``GET /hearings/{id}/recordings``)."""

    session_id: str
    recorder_id: str = Field(description="Which recorder made it (several may record one hearing).")
    state: Literal["recording", "sealed", "interrupted", "failed"] = Field(
        description="recording; sealed; interrupted (a crash ended it, a restarted recorder sealed what it left); "
        "failed (ended without a seal)."
    )
    started_at: float | None = Field(default=None, description="Unix time of the first line.")
    ended_at: float | None = Field(default=None, description="Unix time of the last entry; None while recording.")
    segments: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)
    previous_session_id: str | None = Field(default=None, description="The session this one continues.")
    gaps: dict[str, int] = Field(default_factory=dict, description="Gap counts by reason.")
    verification: dict[str, Any] | None = Field(default=None, description="Result of verifying the archive.")


class RecorderKey(Frozen):
    """A recorder's public signing key (``GET /recorder/keys``)."""

    key_id: str
    algorithm: str = "Ed25519"
    public_key: str = Field(description="Raw public key, base64.")
    recorder_id: str = ""
    not_before: str | None = Field(
        default=None, description="RFC 3339 UTC time from which the key may seal; null: open."
    )
    not_after: str | None = Field(
        default=None, description="RFC 3339 UTC time after which it may no longer seal (rotated out); null: current."
    )


class AdaptationCounts(Frozen):
    """A media node's bandwidth adaptation figures (``[media] adaptation``; all 0 with it off): what the node does
    for subscribers on thin links, summed over its live peers and tracks."""

    paused_streams: int = Field(default=0, ge=0, description="Subscriber videos paused now.")
    capped_publishers: int = Field(default=0, ge=0, description="Publisher videos asked for less (REMB cap) now.")
    nacks_dropped: int = Field(default=0, ge=0, description="NACKed packets not resent (too old, beyond budget).")
    nacks_too_old: int = Field(
        default=0, ge=0, description="Of those, packets that left the node longer ago than a resend could help."
    )
    resent_forgiven: int = Field(
        default=0, ge=0, description="Packets lost to a failed probe's overflow, resent outside the resend budget."
    )
    loss_backoffs: int = Field(default=0, ge=0, description="Times heavy loss lowered a top video's ceiling.")
    overloads: int = Field(
        default=0, ge=0, description="Times a subscriber's NACKs showed its link dropping a large share (an overflow)."
    )
    keyframe_requests: int = Field(default=0, ge=0, description="Keyframe requests sent to publishers.")
    probes: int = Field(default=0, ge=0, description="Padding probes sent to subscribers with paused video.")
    probes_succeeded: int = Field(default=0, ge=0, description="Probes that brought paused video back.")


class NodeInfo(Frozen):
    """A media node as operators see it (``GET /nodes``)."""

    id: str
    region: str = ""
    state: Literal["up", "draining", "down"] = "up"
    load: float = Field(default=0.0, ge=0, description="Share of the node's capacity in use, 0..1+.")
    rooms: int = Field(default=0, ge=0, description="Hearings with peers on the node.")
    peers: int = Field(default=0, ge=0, description="Peer connections on the node.")
    capacity_peers: int = Field(default=0, ge=0, description="Peer connections the node is sized for (0: unknown).")
    cpu: float = Field(default=0.0, ge=0, description="Cores the node process used since its previous heartbeat.")
    packets_per_second: float = Field(default=0.0, ge=0, description="RTP packets forwarded per second, recently.")
    heartbeat_age_seconds: float = Field(default=0.0, ge=0, description="Seconds since the node's last heartbeat.")
    started_at: float | None = Field(default=None, description="Unix time the node (this life of it) started.")
    version: str = Field(default="", description="courtlink version the node runs.")
    send_path: str = Field(default="", description="How the node sends forwarded RTP: native, python or aiortc.")
    adaptation: AdaptationCounts = Field(
        default_factory=AdaptationCounts, description="Bandwidth adaptation figures of its last heartbeat."
    )


class RecordingDirectory(Protocol):
    """Where signaling reads recordings and recorder keys."""

    async def recordings(self, hearing_id: str) -> Sequence[RecordingInfo]:
        """The hearing's recording sessions, with verification results."""
        ...

    async def public_keys(self) -> Sequence[RecorderKey]:
        """Every recorder public key that signs archives here."""
        ...


class NodeDirectory(Protocol):
    """Where signaling reads the media nodes."""

    async def nodes(self) -> Sequence[NodeInfo]:
        """Every known media node."""
        ...

    async def set_draining(self, node_id: str, draining: bool) -> NodeInfo | None:
        """Drain the node (no new hearings; its hearings stay) or put it back; None if no such node is live."""
        ...
