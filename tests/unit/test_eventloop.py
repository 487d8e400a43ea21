"""The event loop of serve and media-node (courtlink/eventloop.py), and the media node's socket paths on uvloop.

uvloop's UDP transport is not asyncio's: the native send path must still find its socket (else every subscriber's
packets would go through the Python loop), and the receive path's hooks must still see every datagram.
"""

from __future__ import annotations

import asyncio
import socket
import types
from typing import Any

import pytest
import structlog
from aioice.ice import StunProtocol

from courtlink import eventloop
from media.aiortc_compat import PortRangeExhausted, _bind_in_range, datagram_socket, drain_reads

uvloop = pytest.importorskip("uvloop")


def _loop_class() -> str:
    async def which() -> str:
        eventloop.announce()
        return type(asyncio.get_running_loop()).__module__

    return eventloop.run(which())


def test_media_processes_run_on_uvloop_when_told_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.EVENT_LOOP_ENV, raising=False)
    with structlog.testing.capture_logs() as logs:
        assert _loop_class() == "asyncio.unix_events"
    assert {"event": "event_loop_selected", "event_loop": "asyncio", "log_level": "info"} in logs
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, "uvloop")
    with structlog.testing.capture_logs() as logs:
        assert _loop_class() == "uvloop"
    assert {"event": "event_loop_selected", "event_loop": "uvloop", "log_level": "info"} in logs
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, "asyncio")
    assert _loop_class() == "asyncio.unix_events"
    monkeypatch.setenv(eventloop.EVENT_LOOP_ENV, " UVLOOP ")
    assert _loop_class() == "uvloop"


class _Receiver:
    """What aioice's ``StunProtocol`` hands datagrams to."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def data_received(self, data: bytes, component: int) -> None:
        self.datagrams.append(data)

    def protocol_lost(self, protocol: Any) -> None:
        pass


def test_on_uvloop_the_native_send_path_finds_the_pair_socket_and_a_burst_is_read_whole() -> None:
    """On uvloop, ``datagram_socket`` gives aioice's pair socket to the C send loop (writing to it reaches the
    peer), ``drain_reads`` leaves the transport alone (libuv reads up to 32 datagrams per readiness itself), and a
    burst of 100 datagrams queued at once (what the kernel's default buffer holds) reaches aioice's protocol whole,
    in order."""

    async def scenario() -> tuple[Any, bool, list[bytes], bytes]:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__ == "uvloop"
        receiver = _Receiver()
        connection: Any = receiver  # what aioice's Connection is to its protocols: data_received, protocol_lost
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: StunProtocol(connection), local_addr=("127.0.0.1", 0)
        )
        candidate: Any = types.SimpleNamespace(component=1)
        protocol.local_candidate = candidate  # set by aioice once the pair is gathered
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        try:
            found = datagram_socket(protocol)
            drained = drain_reads(protocol)
            address = transport.get_extra_info("sockname")
            burst = [bytes([0x80, 96]) + index.to_bytes(2, "big") + bytes(200) for index in range(100)]
            for datagram in burst:  # RTP-like: not STUN, so aioice hands it on as data
                peer.sendto(datagram, address)
            for _ in range(300):
                if len(receiver.datagrams) >= len(burst):
                    break
                await asyncio.sleep(0.01)
            sent = b""
            if found is not None:
                # the fd the C loop writes to is the pair's own socket: a datagram written to it reaches the peer
                writer = socket.socket(fileno=found[1])
                try:
                    writer.sendto(b"direct", peer.getsockname())
                finally:
                    writer.detach()
                for _ in range(100):
                    try:
                        sent = peer.recv(100)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.01)
            return found, drained, receiver.datagrams, sent
        finally:
            transport.close()
            peer.close()

    found, drained, datagrams, sent = uvloop.run(scenario())
    assert found is not None
    assert found[0].get_write_buffer_size() == 0
    assert sent == b"direct"
    assert not drained
    assert [int.from_bytes(d[2:4], "big") for d in datagrams] == list(range(100))


def test_on_uvloop_a_taken_port_of_the_node_range_is_skipped() -> None:
    """A media node with a UDP port range binds each connection to a free port of it, skipping taken ones. uvloop
    raises ``OSError("could not bind to local_addr ...")`` from the ``EADDRINUSE``, not the ``EADDRINUSE`` itself:
    read as any other error, it failed the offer (a worker's re-offered hearing got no media after a failover, in
    tests/e2e/test_node_workers.py)."""

    async def scenario() -> tuple[int, bool]:
        taken: list[socket.socket] = []
        try:
            while True:  # three consecutive ports: the first two taken, the third free
                first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                first.bind(("127.0.0.1", 0))
                base = first.getsockname()[1]
                second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    second.bind(("127.0.0.1", base + 1))
                except OSError:
                    first.close()
                    second.close()
                    continue
                taken = [first, second]
                break
            connection: Any = _Receiver()
            protocol = await _bind_in_range(connection, "127.0.0.1", base, base + 2)
            port = int(protocol.transport.get_extra_info("sockname")[1])
            protocol.transport.close()
            exhausted = False
            try:
                await _bind_in_range(connection, "127.0.0.1", base, base + 1)
            except PortRangeExhausted:
                exhausted = True
            return port - base, exhausted
        finally:
            for s in taken:
                s.close()

    offset, exhausted = uvloop.run(scenario())
    assert offset == 2
    assert exhausted
