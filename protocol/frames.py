"""Encoded media as the recorder receives it from a media node: plain data, no av or aiortc types.

A media node hands every permitted, reassembled encoded frame of a room to the
recorder's :class:`FrameSink` (in-process today; a later issue carries these
over the network). The sink must never block: it queues and returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from protocol.node import MediaKind
from rooms.model import Source


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A track the recorder is asked to archive."""

    hearing_id: str
    track_id: str
    participant_id: str
    source: Source
    kind: MediaKind
    codec: str
    """Codec name as in SDP: ``VP8``, ``H264`` or ``opus``."""
    clock_rate: int


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One reassembled encoded frame (video) or packet (audio), exactly as received."""

    track_id: str
    payload: bytes
    rtp_timestamp: int
    """RTP timestamp (unwrapping across 2**32 is the receiver's job)."""
    keyframe: bool
    arrival: float
    """Wall-clock time (``time.time()``) the frame was complete at the node."""


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An RTCP sender report: maps the track's RTP clock to wall-clock time."""

    track_id: str
    ntp_time: float
    """The report's NTP timestamp as Unix seconds."""
    rtp_timestamp: int


class FrameSink(Protocol):
    """Receives a room's media; every method returns at once (no I/O on the caller's loop)."""

    def track_started(self, info: TrackInfo) -> None:
        """A track begins (or begins again after a pause in forwarding)."""
        ...

    def frame(self, frame: EncodedFrame) -> None:
        """One encoded frame of a started track."""
        ...

    def sender_report(self, report: SenderReport) -> None:
        """An RTCP sender report of a started track."""
        ...

    def track_stopped(self, track_id: str, reason: str) -> None:
        """A track stops being forwarded (``consultation``, ``ended``, ``muted``, ``recess``...)."""
        ...


class FrameSource(Protocol):
    """Where a recorder gets a hearing's frames: a media node in this process, or its frame pipe over TCP.

    The recorder is a hidden participant of the hearing; ``SetReceiving`` for it (from signaling's permission
    table) decides whose tracks it is fed. Every method returns at once.
    """

    def attach_recorder(self, hearing_id: str, participant_id: str, sink: FrameSink) -> None:
        """Feed ``sink`` the frames the recorder participant may receive (replaces an earlier attachment)."""
        ...

    def detach_recorder(self, hearing_id: str, participant_id: str, reason: str = "detached") -> None:
        """Stop feeding it; each of its tracks gets ``track_stopped(reason)``."""
        ...

    def request_keyframe(self, hearing_id: str, track_id: str) -> None:
        """Ask the publisher of ``track_id`` (the recorder's track id) for a keyframe (throttled by the node)."""
        ...
