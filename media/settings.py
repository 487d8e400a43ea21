"""Settings of one media node (the SFU): what it announces, how much it forwards, how it bounds queues."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IceServer(BaseModel):
    """A STUN or TURN server handed to the node's peer connections."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: tuple[str, ...] = Field(min_length=1, description="stun:/turn: URLs of one server.")
    username: str | None = Field(default=None, description="TURN user name.")
    credential: str | None = Field(default=None, description="TURN password.")


class NodeSettings(BaseModel):
    """How a media node behaves; the defaults are the test and single-machine set-up (loopback only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(default="node-1", min_length=1, description="Stable id of the node.")
    ice_servers: tuple[IceServer, ...] = Field(
        default=(), description="STUN/TURN servers of the node's peer connections (none: host candidates only)."
    )
    announce_addresses: tuple[str, ...] = Field(
        default=("127.0.0.1",),
        min_length=1,
        description="Local IP addresses the node binds and announces as ICE host candidates, nothing else.",
    )
    last_n: int = Field(default=6, ge=1, le=64, description="Camera video of the N most recent speakers is forwarded.")
    video_queue_frames: int = Field(
        default=30, ge=2, le=1000, description="Frames queued per forwarded video track before dropping to a keyframe."
    )
    audio_queue_packets: int = Field(
        default=25, ge=2, le=1000, description="Packets queued per forwarded audio track before dropping the oldest."
    )
    queue_max_age: float = Field(
        default=0.5, gt=0, le=10, description="Seconds a forwarded frame may wait for its sender before it is dropped."
    )
    direct_send: bool = Field(
        default=True,
        description="Send forwarded frames from the receive path, packetized once per publisher frame "
        "(media.sending); False: aiortc's stock per-sender loop (for comparison).",
    )
    keyframe_interval: float = Field(
        default=1.0, gt=0, le=60, description="At most one keyframe request per publisher track in this many seconds."
    )
    speaker_window: float = Field(
        default=1.0, gt=0, le=10, description="Seconds of audio level the speaker score uses."
    )
    speaker_hold: float = Field(
        default=0.5, ge=0, le=10, description="A louder participant must lead this long to become the active speaker."
    )
    speaker_silence_dbov: int = Field(
        default=60, ge=1, le=127, description="Audio quieter than -N dBov counts as silence for speaker detection."
    )
    probe_lifetime: float = Field(
        default=20.0, gt=0, le=20, description="Seconds a network-check probe peer lives at most (it echoes media)."
    )
    max_probes: int = Field(default=8, ge=1, le=256, description="Network-check probes the node runs at once.")
    offer_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds a node offer waits for its answer before it is sent once more; as long again, and the "
        "peer is given up (the client restarts its media).",
    )
    health_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between two health reports (peer_health) of every peer."
    )
    udp_port_min: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Lowest UDP port of the node's ICE host candidates (0 with udp_port_max 0: any ephemeral port).",
    )
    udp_port_max: int = Field(
        default=0, ge=0, le=65535, description="Highest UDP port of the node's ICE host candidates."
    )
    adaptation: bool = Field(
        default=True,
        description="Adapt what each subscriber receives to its REMB estimate (pause video by priority, cap "
        "publishers, budget resends); False: forward everything, resend every NACK.",
    )
    adapt_hold_seconds: float = Field(
        default=3.0, gt=0, le=60, description="At most one pause/resume change per subscriber in this many seconds."
    )
    min_video_kbps: int = Field(
        default=150, ge=30, le=100_000, description="The lowest bitrate the node asks a publisher's video for (REMB)."
    )
    nack_budget_share: float = Field(
        default=0.2, gt=0, le=1, description="Share of a subscriber's estimate that resends (NACK answers) may use."
    )
    simulcast: bool = Field(
        default=True,
        description="Take browsers' camera video in simulcast (a=rid/a=simulcast) and forward each subscriber one "
        "layer, by its tile size and (with adaptation) its estimate. False: answer without simulcast.",
    )

    @model_validator(mode="after")
    def _port_range(self) -> NodeSettings:
        check_port_range(self.udp_port_min, self.udp_port_max)
        return self

    @property
    def udp_ports(self) -> tuple[int, int]:
        """(min, max) of the host candidates' UDP ports; (0, 0): ephemeral."""
        return self.udp_port_min, self.udp_port_max


def check_port_range(port_min: int, port_max: int) -> None:
    """Raise ``ValueError`` unless (min, max) is a UDP port range, or (0, 0) for ephemeral ports."""
    if (port_min == 0) != (port_max == 0):
        raise ValueError("udp_port_min and udp_port_max go together: set both (a range) or neither (0: ephemeral)")
    if port_min > port_max:
        raise ValueError(f"udp_port_min ({port_min}) is above udp_port_max ({port_max})")
