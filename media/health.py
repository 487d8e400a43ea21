"""Media health of one peer: packet counters on the packet path, a ``PeerHealth`` report built once a second.

The packet path only counts, in :meth:`media.forwarding.PublishedTrack.on_packet`
(two additions and a clock read per received packet); sent packets are read from the counters
aiortc's senders keep anyway (``media.sending`` keeps them up to date too).
Everything else — idle times, states, the report — is computed by the node's
health tick (:meth:`media.node.InProcessNode._health_loop`), about once per
second per peer.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from media.aiortc_compat import sender_counters
from protocol.node import PeerHealth, PeerState, TrackHealth

if TYPE_CHECKING:
    from media.forwarding import PublishedTrack
    from media.peer import Peer


_PEER_STATES = {s.value: s for s in PeerState}


def _idle_ms(last: float | None, now: float) -> int | None:
    return None if last is None else max(0, int((now - last) * 1000))


def peer_health(peer: Peer, now: float | None = None) -> PeerHealth:
    """The health report of one peer now (called by the tick, never per packet)."""
    now = time.monotonic() if now is None else now
    pc = peer.pc
    tracks: list[TrackHealth] = []
    for published in peer.published.values():
        if not published.ended:
            tracks.append(_in_health(published, now))
    for slot in peer.slots:
        publisher = slot.track.publisher
        if publisher is None:
            continue
        sender = slot.transceiver.sender
        packets, octets = sender_counters(sender)
        if packets != slot.sent_packets:
            slot.sent_packets = packets
            slot.sent_at = now
        tracks.append(
            TrackHealth(
                track_id=publisher.track_id,
                source=publisher.source,
                kind=slot.kind,
                direction="out",
                packets=packets,
                bytes=octets,
                idle_ms=_idle_ms(slot.sent_at, now),
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


def _in_health(published: PublishedTrack, now: float) -> TrackHealth:
    return TrackHealth(
        track_id=published.track_id,
        source=published.source,
        kind=published.kind,
        direction="in",
        packets=published.packets_in,
        bytes=published.bytes_in,
        idle_ms=_idle_ms(published.last_packet_at, now),
    )
