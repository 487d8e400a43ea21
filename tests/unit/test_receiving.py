"""The native receive parser (``media._fastpath.recv_rtp``): the packet aiortc would have made, from a real SRTP
datagram (real libsrtp sessions, as in tests/unit/test_fastpath.py)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket

from media.aiortc_compat import DRAIN_BUDGET, drain_reads, native_unprotect, receive_self_check
from tests.unit.test_fastpath import _inbound, _outbound

try:
    from media import _fastpath
except ImportError:
    _fastpath = None  # type: ignore[assignment]

needs_recv = pytest.mark.skipif(
    getattr(_fastpath, "recv_rtp", None) is None, reason="the native receive parser is not built here"
)

URIS = {
    1: "urn:ietf:params:rtp-hdrext:sdes:mid",
    2: "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    3: "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    4: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    5: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    6: "urn:ietf:params:rtp-hdrext:toffset",
    7: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
}


def _map(ids: dict[int, str]) -> HeaderExtensionsMap:
    mapping = HeaderExtensionsMap()
    mapping.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in ids.items()])
    )
    return mapping


def _ids(mapping: HeaderExtensionsMap) -> Any:
    return mapping._HeaderExtensionsMap__ids  # type: ignore[attr-defined]


def _as_dict(packet: RtpPacket) -> dict[str, Any]:
    values = dict(vars(packet))
    values["extensions"] = dict(vars(packet.extensions))
    return values


def _parse_native(data: bytes, session: pylibsrtp.Session, mapping: HeaderExtensionsMap) -> Any:
    assert _fastpath is not None
    native = native_unprotect(session)
    assert native is not None
    return _fastpath.recv_rtp(data, *native, _ids(mapping), RtpPacket, HeaderExtensions)


def _packets(mapping: HeaderExtensionsMap) -> list[RtpPacket]:
    made: list[RtpPacket] = []
    for index, (marker, csrc, padding, size) in enumerate(
        [
            (0, [], 0, 1200),
            (1, [], 0, 1),
            (1, [7, 0xFFFFFFFF], 0, 300),
            (0, [], 37, 200),
            (1, [1], 255, 0),
            (0, [], 0, 0),
        ]
    ):
        packet = RtpPacket(
            payload_type=96 + index % 3,
            marker=marker,
            sequence_number=(65_533 + index) & 0xFFFF,
            timestamp=0xFFFFFFF0 + index * 3000 & 0xFFFFFFFF,
            ssrc=0xFEDCBA98,
            payload=bytes((index * 7 + i) & 0xFF for i in range(size)),
        )
        packet.csrc = csrc
        packet.padding_size = padding
        made.append(packet)
    variants: list[HeaderExtensions] = [
        HeaderExtensions(),
        HeaderExtensions(mid="0", abs_send_time=0xABCDEF),
        HeaderExtensions(mid="video-中", rtp_stream_id="h", audio_level=(True, 55)),
        HeaderExtensions(repaired_rtp_stream_id="f", transport_sequence_number=65_535),
        HeaderExtensions(abs_send_time=0, audio_level=(False, 127)),
        HeaderExtensions(mid="x" * 16, rtp_stream_id="q", repaired_rtp_stream_id="q", transport_sequence_number=7),
    ]
    for packet, extensions in zip(made, variants, strict=True):
        packet.extensions = extensions
    return made


@needs_recv
@pytest.mark.parametrize(
    "ids",
    [URIS, {11: URIS[1], 12: URIS[2], 13: URIS[3], 14: URIS[4], 9: URIS[5], 10: URIS[6], 8: URIS[7]}, {1: URIS[4]}, {}],
)
def test_a_received_packet_is_the_one_aiortc_parses(ids: dict[int, str]) -> None:
    """Every field of a received SRTP packet (header, CSRCs, each header extension, payload, padding) comes out of the
    native parser exactly as aiortc's pylibsrtp unprotect + ``RtpPacket.parse`` give it, with that extension map."""
    mapping = _map(ids)
    outbound, native_in, aiortc_in = _outbound(), _inbound(), _inbound()
    for packet in _packets(mapping):
        data = outbound.protect(packet.serialize(mapping))
        expected = RtpPacket.parse(aiortc_in.unprotect(data), mapping)
        got = _parse_native(data, native_in, mapping)
        assert isinstance(got, RtpPacket)
        assert _as_dict(got) == _as_dict(expected)
        assert got.extensions == expected.extensions


@needs_recv
def test_both_header_extension_forms_parse_alike() -> None:
    """One-byte (0xBEDE) and two-byte (0x1000) header extensions, with padding bytes between them, parse as aiortc's."""
    mapping = _map(URIS)
    outbound, native_in, aiortc_in = _outbound(), _inbound(), _inbound()
    for sequence, (profile, block) in enumerate(
        [
            (0xBEDE, bytes([0x10, ord("7"), 0, 0, 0x32, 1, 2, 3, 0x50, 0x85, 0, 0])),
            (0x1000, bytes([1, 2, ord("a"), ord("b"), 0, 2, 1, ord("f"), 4, 3, 9, 9, 9, 0])),
            (0xBEDE, bytes([0x62, 0xFF, 0xFF, 0xFB, 0x71, 0xFF, 0xFE])),  # toffset -5 (aiortc writes it in 2 bytes)
            (0x1000, bytes([15, 20]) + bytes(20) + bytes(2)),
            (0x1234, bytes(8)),
        ]
    ):
        block += bytes(-len(block) % 4)
        raw = (
            bytes([0x90, 96, 0, sequence, 0, 0, 0, 9, 0, 0, 0, 3])
            + profile.to_bytes(2, "big")
            + (len(block) // 4).to_bytes(2, "big")
            + block
            + b"payload"
        )
        data = outbound.protect(raw)
        expected = RtpPacket.parse(aiortc_in.unprotect(data), mapping)
        got = _parse_native(data, native_in, mapping)
        assert isinstance(got, RtpPacket)
        assert _as_dict(got) == _as_dict(expected)


@needs_recv
def test_what_aiortc_drops_is_dropped_and_what_it_cannot_take_is_handed_back() -> None:
    """A datagram SRTP refuses (forged, or replayed), or that is not valid RTP, is dropped (1, 2) as aiortc drops it;
    one longer than the session's buffer is left to aiortc's own path (0); the session is still good afterwards."""
    mapping = _map(URIS)
    outbound, native_in = _outbound(), _inbound()
    good = outbound.protect(RtpPacket(payload_type=96, sequence_number=1, ssrc=5, payload=b"x" * 100).serialize())
    forged = bytearray(good)
    forged[-1] ^= 1
    assert _parse_native(bytes(forged), native_in, mapping) == 1
    assert isinstance(_parse_native(good, native_in, mapping), RtpPacket)
    assert _parse_native(good, native_in, mapping) == 1  # a replay
    assert _parse_native(bytes(1501), native_in, mapping) == 0
    aiortc_in = _inbound()
    for raw in [
        bytes([0x90, 96, 0, 10]) + bytes(8) + b"\xbe\xde\x00\x01" + bytes([0x24, ord("h"), 0, 0]),  # rid cut short
        bytes([0x90, 96, 0, 11]) + bytes(8) + b"\xbe\xde\x00\x01" + bytes([0x13, 0, 0, 0]),  # mid value truncated
        bytes([0x90, 96, 0, 12]) + bytes(8) + b"\xbe\xde\x00\x01" + bytes([0x11, 0xFF, 0xFE, 0]),  # mid not UTF-8
        bytes([0xA0, 96, 0, 13]) + bytes(8) + b"ab\x00",  # padding length 0
        bytes([0xA0, 96, 0, 14]) + bytes(8) + b"ab\x09",  # padding longer than the payload
    ]:
        data = outbound.protect(raw)  # libsrtp checks the fixed header and extension length, not what is inside
        with pytest.raises(ValueError):  # noqa: PT011 - aiortc raises ValueError or UnicodeDecodeError, its subclass
            RtpPacket.parse(aiortc_in.unprotect(data), mapping)
        assert _parse_native(data, native_in, mapping) == 2
    later = outbound.protect(RtpPacket(payload_type=96, sequence_number=99, ssrc=5, payload=b"y").serialize())
    assert isinstance(_parse_native(later, native_in, mapping), RtpPacket)


def test_the_installed_aiortc_is_the_one_the_native_receive_path_was_written_against() -> None:
    """The receive path's self-check passes with the pinned aiortc (otherwise every node silently takes aiortc's)."""
    assert receive_self_check() is None


def test_the_receivers_handler_is_the_one_the_plain_function_copies() -> None:
    """aiortc's ``RTCRtpReceiver._handle_rtp_packet`` is the one ``lean_rtp_handler`` copies step for step (else every
    receiver would silently run aiortc's coroutine per packet)."""
    from media.aiortc_compat import _lean_matches

    assert _lean_matches()


async def test_a_handler_that_waits_finishes_as_a_task_in_order_and_one_that_raises_is_contained() -> None:
    """A receiver's handler that completes at once is run to its end; one that waits goes on as a task and reports when
    it has finished; one that raises does not reach the socket's reader."""
    import asyncio

    from media import receiving

    done: list[str] = []

    async def at_once() -> None:
        done.append("at once")

    async def waits(future: asyncio.Future[None]) -> None:
        await future
        done.append("after the wait")

    async def raises() -> None:
        raise RuntimeError("boom")

    assert receiving.drive(at_once(), lambda: done.append("resumed?"))
    assert done == ["at once"]
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert not receiving.drive(waits(future), lambda: done.append("resumed"))
    assert done == ["at once"]
    future.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == ["at once", "after the wait", "resumed"]
    assert receiving.drive(raises(), lambda: None)


async def test_without_the_native_parser_connections_keep_aiortcs_receive_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An older build of the module (no ``recv_rtp``) leaves every connection on aiortc's receive path, whatever is
    asked."""
    from aiortc import RTCPeerConnection

    from media import receiving

    monkeypatch.setattr(receiving, "_recv_rtp", None)
    before = receiving.receive_path() == "native"
    try:
        receiving.use_native(True)
        assert receiving.receive_path() == "aiortc"
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        assert receiving.install(pc) == []
        await pc.close()
    finally:
        monkeypatch.undo()
        receiving.use_native(before)


class _Counting(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.received: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


async def _first_turn_with_data(drained: bool, queued: int) -> int:
    """Datagrams a socket's reader hands over in the first turn of the loop that finds ``queued`` of them waiting."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Counting, local_addr=("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await asyncio.sleep(0)  # the transport's reader is registered
        if drained:
            assert drain_reads(protocol)
            assert not drain_reads(protocol)  # once
        address = transport.get_extra_info("sockname")
        for i in range(queued):
            sender.sendto(i.to_bytes(2, "big"), address)  # all in the kernel's queue before the loop looks
        for _ in range(10_000):  # turns of the loop, until the first one that reads
            if protocol.received:
                break
            await asyncio.sleep(0)
        return len(protocol.received)
    finally:
        sender.close()
        transport.close()


async def test_a_drained_socket_takes_every_queued_datagram_in_one_turn_of_the_loop() -> None:
    """asyncio reads one datagram per readiness, so a socket takes one a turn and the kernel drops the rest of a burst
    (the twelve-person scale test starved whole streams for seconds); drained, a turn takes them all (up to the
    budget), in order."""
    assert await _first_turn_with_data(drained=False, queued=40) == 1
    assert await _first_turn_with_data(drained=True, queued=40) == 40
    assert await _first_turn_with_data(drained=True, queued=DRAIN_BUDGET + 10) == DRAIN_BUDGET
