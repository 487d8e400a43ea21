"""Media health of one peer: packet counters on the packet path, a ``PeerHealth`` report built once a second.

The packet path does only what :class:`PacketCounter` does (two additions and
a clock read per received packet); sent packets are read from the counters
aiortc's senders keep anyway (``media.sending`` keeps them up to date too).
Everything else — idle times, states, the report — is computed by the node's
health tick (:meth:`media.node.InProcessNode._health_loop`), about once per
second per peer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiortc.rtp import RtpPacket

from rooms.control import PeerHealth, PeerState, TrackHealth

if TYPE_CHECKING:
    from media.forwarding import PublishedTrack
    from media.peer import Peer

_SENT_PACKETS = "_RTCRtpSender__packet_count"
_SENT_OCTETS = "_RTCRtpSender__octet_count"

_PEER_STATES = {s.value: s for s in PeerState}


class PacketCounter:
    """Packets and payload bytes of one received track, and when the last one arrived."""

    __slots__ = ("bytes", "last", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.last: float | None = None
        """``time.monotonic()`` of the last packet."""

    def wrap(self, on_packet: Callable[[RtpPacket], None]) -> Callable[[RtpPacket], None]:
        """``on_packet`` that counts first."""

        def counted(packet: RtpPacket) -> None:
            self.packets += 1
            self.bytes += len(packet.payload)
            self.last = time.monotonic()
            on_packet(packet)

        return counted


class SentWatch:
    """A sender's packet count as seen at the previous ticks: when it last grew."""

    __slots__ = ("last", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.last: float | None = None


def _idle_ms(last: float | None, now: float) -> int | None:
    return None if last is None else max(0, int((now - last) * 1000))


def peer_health(peer: Peer, now: float | None = None) -> PeerHealth:
    """The health report of one peer now (called by the tick, never per packet)."""
    now = time.monotonic() if now is None else now
    pc = peer.pc
    tracks: list[TrackHealth] = []
    for published, counter in peer.inbound:
        if published.ended:
            continue
        tracks.append(_in_health(published, counter, now))
    for slot in peer.slots:
        publisher = slot.track.publisher
        if publisher is None:
            continue
        sender = slot.transceiver.sender
        packets = int(getattr(sender, _SENT_PACKETS, 0))
        watch = peer.sent_watch.setdefault(id(slot), SentWatch())
        if packets != watch.packets:
            watch.packets = packets
            watch.last = now
        tracks.append(
            TrackHealth(
                track_id=publisher.track_id,
                source=publisher.source,
                kind=slot.kind,
                direction="out",
                packets=packets,
                bytes=int(getattr(sender, _SENT_OCTETS, 0)),
                idle_ms=_idle_ms(watch.last, now),
            )
        )
    dtls = "new"
    for transceiver in pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is not None:
            dtls = str(transport.state)
            break
    return PeerHealth(
        hearing_id=peer.hearing_id,
        participant_id=peer.participant_id,
        connection=_PEER_STATES.get(str(pc.connectionState), PeerState.new),
        ice=str(pc.iceConnectionState),
        dtls=dtls,
        tracks=tuple(tracks),
    )


def _in_health(published: PublishedTrack, counter: PacketCounter, now: float) -> TrackHealth:
    return TrackHealth(
        track_id=published.track_id,
        source=published.source,
        kind=published.kind,
        direction="in",
        packets=counter.packets,
        bytes=counter.bytes,
        idle_ms=_idle_ms(counter.last, now),
    )
