"""The node's sender reports (media.reports): one timer, one compound RTCP packet per peer connection.

Real aiortc peers over loopback: a judge publishing audio and video, two subscribers. Each subscriber's DTLS
transport is tapped where SRTCP has been unprotected, so what is checked is what came over the wire: compound
packets that carry the reports of both of the judge's streams at once, reports that aiortc's receivers read (their
round trip is measured at the node from the receiver reports that echo them), and fewer packets than reports.
The packing itself is checked against aiortc's own serializer and parser.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSourceInfo, RtcpSrPacket

from media.aiortc_compat import sdes_cname, sender_rtt
from media.node import InProcessNode
from media.reports import MAX_COMPOUND, _compound
from media.settings import NodeSettings
from protocol.node import ClosePeer, SetPublishing, SetReceiving
from rooms.model import Role, Source
from tests.media_clients import DirectSignaling, MediaClient, eventually, hearing

HEARING = "hrg_reports"
TAG = 7


@pytest.fixture
async def node() -> AsyncIterator[InProcessNode]:
    node = InProcessNode(NodeSettings(node_id="node-reports"))
    yield node
    await node.close()


@pytest.fixture
async def signaling(node: InProcessNode) -> AsyncIterator[DirectSignaling]:
    async with hearing(node, HEARING) as sig:
        yield sig


class _WireTap:
    """The RTCP datagrams one client's DTLS transport received (unprotected), each as its parsed packets."""

    def __init__(self, client: MediaClient) -> None:
        self.datagrams: list[list[Any]] = []
        transport = client.pc.getTransceivers()[0].receiver.transport
        original = transport._handle_rtcp_data

        async def tapped(data: bytes) -> None:
            self.datagrams.append(RtcpPacket.parse(data))
            await original(data)

        transport._handle_rtcp_data = tapped  # type: ignore[method-assign]

    def reports(self) -> list[list[RtcpSrPacket]]:
        """The sender reports of each datagram that had any."""
        out = []
        for packets in self.datagrams:
            found = [p for p in packets if isinstance(p, RtcpSrPacket)]
            if found:
                out.append(found)
        return out


def test_the_sdes_is_aiortc_s_own() -> None:
    """The CNAME chunk is byte for byte what aiortc makes, for names of every padding."""
    for cname in ("a", "ab", "abc", "abcd", "{2f0b1c3e-9d1a-4e5b-8c7d-000000000000}"):
        ours = sdes_cname(0x01020304, cname)
        theirs = bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=0x01020304, items=[(1, cname.encode())])]))
        assert ours == theirs, cname


def test_compound_packets_stay_under_the_mtu_and_lose_no_report() -> None:
    """Forty streams' reports split into compound packets under MAX_COMPOUND bytes, each read by aiortc's parser
    as its reports and the CNAME."""
    reports = [struct.pack("!BBHLQLLL", 0x80, 200, 6, 1000 + i, 1 << 40, i, i, i * 100) for i in range(40)]
    sdes = sdes_cname(1000, "court")
    packets = list(_compound(reports, sdes))
    assert len(packets) == 2, [len(p) for p, _ in packets]
    seen: list[int] = []
    for payload, count in packets:
        assert len(payload) <= MAX_COMPOUND
        parsed = RtcpPacket.parse(payload)
        srs = [p for p in parsed if isinstance(p, RtcpSrPacket)]
        assert len(srs) == count
        assert isinstance(parsed[-1], RtcpSdesPacket)
        seen.extend(p.ssrc for p in srs)
    assert seen == [1000 + i for i in range(40)]


async def test_one_compound_packet_carries_every_stream_s_report(
    node: InProcessNode, signaling: DirectSignaling
) -> None:
    """Each subscriber gets the reports of the judge's audio and video in one compound packet; the reports carry
    the streams' SSRCs and counters; the node measures each sender's round trip from the echoes."""
    judge = MediaClient("judge", tag=TAG)
    subs = [MediaClient(name, video=False, audio=False) for name in ("clerk", "counsel")]
    await signaling.join(judge, Role.judge)
    for sub in subs:
        await signaling.join(sub, Role.clerk)
    sources = (Source.camera, Source.microphone)
    await node.call(SetPublishing(hearing_id=HEARING, participant_id="judge", sources=sources))
    for sub in subs:
        await node.call(SetReceiving(hearing_id=HEARING, participant_id=sub.name, publishers=("judge",)))
    for sub in subs:
        assert await eventually(lambda s=sub: len(s.codes(TAG)) >= 5, within=15)  # type: ignore[misc]
    taps = [_WireTap(sub) for sub in subs]

    def both_in_one(tap: _WireTap) -> bool:
        return any(len(srs) >= 2 for srs in tap.reports())

    assert await eventually(lambda: all(both_in_one(t) for t in taps), within=15), [t.reports() for t in taps]
    for tap in taps:
        ssrcs = {srs_ssrc for srs in tap.reports() for srs_ssrc in (p.ssrc for p in srs)}
        assert len(ssrcs) == 2, ssrcs
        last = tap.reports()[-1]
        now_ntp = int((time.time() + 2208988800) * (1 << 32))
        for report in last:
            info = report.sender_info
            assert info.packet_count > 0, info
            assert info.octet_count > info.packet_count, info
            assert abs(info.ntp_timestamp - now_ntp) < 5 << 32, info  # a time of the last seconds
        # Every datagram with reports also names the CNAME (RFC 3550: each compound packet has an SDES).
        for packets in tap.datagrams:
            if any(isinstance(p, RtcpSrPacket) for p in packets):
                assert any(isinstance(p, RtcpSdesPacket) for p in packets), packets

    peers = [node.peer(HEARING, sub.name) for sub in subs]
    senders = [t.sender for peer in peers if peer is not None for t in peer.pc.getTransceivers()]
    assert len(senders) >= 4
    assert await eventually(lambda: all(sender_rtt(s) is not None for s in senders), within=15), [
        sender_rtt(s) for s in senders
    ]
    assert node.reports.packets_sent < node.reports.reports_sent, (
        node.reports.packets_sent,
        node.reports.reports_sent,
    )

    # A subscriber that leaves: its senders stop (their BYE sent), and the node reports for the others only.
    before = len(node.reports)
    await node.call(ClosePeer(hearing_id=HEARING, participant_id="counsel"))
    assert await eventually(lambda: len(node.reports) < before, within=10)
    marks = len(taps[0].reports())
    assert await eventually(lambda: len(taps[0].reports()) > marks + 1, within=10)
