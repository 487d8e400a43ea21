"""The native send loop (media/_fastpath.c) against the Python one: the same bytes on the wire, the same history.

Each test sends over real UDP sockets on 127.0.0.1 with real libsrtp sessions (pylibsrtp), from a
:class:`~media.sending.FrameSender` over a stand-in ``RTCRtpSender`` (no DTLS handshake: both sending sessions
share one key, as two runs of one subscriber's session would).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pylibsrtp
import pytest
from aioice.ice import StunProtocol
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media import sending
from media.aiortc_compat import RTP_HISTORY_SIZE
from media.passthrough import TappedFrame
from media.sending import FrameSender, native_srtp, send_path, use_native
from tests.sender_fixtures import stand_in_sender

try:
    from media import _fastpath
except ImportError:
    _fastpath = None  # type: ignore[assignment]
needs_native = pytest.mark.skipif(_fastpath is None, reason="the native send loop is not built here")

SSRC = 0x1234ABCD
KEY = bytes(range(44))


def _policy(direction: int) -> pylibsrtp.Policy:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=direction, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM)
    policy.allow_repeat_tx = True  # as aiortc's DTLS transport sets it
    policy.window_size = 1024
    return policy


def _outbound() -> pylibsrtp.Session:
    return pylibsrtp.Session(_policy(pylibsrtp.Policy.SSRC_ANY_OUTBOUND))


def _inbound() -> pylibsrtp.Session:
    return pylibsrtp.Session(_policy(pylibsrtp.Policy.SSRC_ANY_INBOUND))


class _Receiver:
    """A plain UDP socket on 127.0.0.1 that collects what a FrameSender sends it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()

    def drain(self) -> list[bytes]:
        got: list[bytes] = []
        while True:
            try:
                got.append(self.sock.recv(4096))
            except BlockingIOError:
                return got


@pytest.fixture
def native_on() -> Iterator[None]:
    """Leave the process's send-path choice as it was after the test."""
    before = send_path() == "native"
    yield
    use_native(before)


async def _sender(native: bool, receiver: _Receiver, mime: str, clock_rate: int, pt: int) -> FrameSender:
    """A FrameSender over a stand-in sender: a real aioice StunProtocol socket, a real SRTP session."""
    loop = asyncio.get_running_loop()
    connection: Any = None  # aioice's Connection: only what it receives goes there, and nothing is sent to these
    _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection), local_addr=("127.0.0.1", 0))
    pair = types.SimpleNamespace(protocol=protocol, remote_addr=receiver.addr)
    fake, _ = stand_in_sender(pair, _outbound(), ssrc=SSRC, mid="1", kind=mime.split("/")[0])
    use_native(native)
    fs = FrameSender(fake, None)  # type: ignore[arg-type]
    assert fs._prepare(RTCRtpCodecParameters(mimeType=mime, clockRate=clock_rate, payloadType=pt))
    return fs


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[_Receiver, _Receiver]]:
    pair = (_Receiver(), _Receiver())
    yield pair
    for r in pair:
        r.sock.close()


def _counters(fs: FrameSender) -> tuple[int, int, int, int]:
    s: Any = fs._sender
    p = "_RTCRtpSender__"
    return (
        getattr(s, p + "packet_count"),
        getattr(s, p + "octet_count"),
        getattr(s, p + "rtp_timestamp"),
        getattr(s, p + "ntp_timestamp"),
    )


@needs_native
@pytest.mark.parametrize(
    ("mime", "clock_rate", "pt", "sizes", "sequence"),
    [
        # VP8 up to 78 packets a frame (more than one sendmmsg batch of 64), across the sequence number wrap.
        ("video/VP8", 90_000, 96, [1, 1295, 1296, 1297, 2592, 4200, 30_000, 65_000, 100_000, 700], 65_500),
        ("video/VP8", 90_000, 96, [5000] * 5, 1000),
        ("audio/opus", 48_000, 111, [1, 80, 160, 400, 1275], 65_534),
    ],
)
async def test_native_packets_are_byte_identical_to_the_python_loop(
    native_on: None,
    receivers: tuple[_Receiver, _Receiver],
    monkeypatch: pytest.MonkeyPatch,
    mime: str,
    clock_rate: int,
    pt: int,
    sizes: list[int],
    sequence: int,
) -> None:
    """A subscriber gets from the native loop exactly the SRTP datagrams the Python loop sends, and NACKs find the
    same packets in the history; sender-report counters agree."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # abs-send-time: the one per-send field
    native_rx, python_rx = receivers
    native = await _sender(True, native_rx, mime, clock_rate, pt)
    python = await _sender(False, python_rx, mime, clock_rate, pt)
    for fs in (native, python):
        fs._sequence, fs._timestamp_origin, fs._picture_id = sequence, 0xFFFFF000, 32_760
    decrypt = _inbound()
    for n, size in enumerate(sizes):
        data = os.urandom(size)
        frame = TappedFrame(data, 1)  # one publisher frame, shared by both subscribers (its payload cache too)
        pts = n * (3000 if clock_rate == 90_000 else 960)
        native._send(data, pts, clock_rate, frame)
        python._send(data, pts, clock_rate, frame)
        got, expected = native_rx.drain(), python_rx.drain()
        assert len(got) == len(expected) > 0
        assert got == expected, (size, n)
        for datagram in got:
            raw = decrypt.unprotect(datagram)
            seq = raw[2] << 8 | raw[3]
            assert native._history[seq % RTP_HISTORY_SIZE] == raw
    assert native._history == python._history
    assert native._sequence == python._sequence
    assert native._picture_id == python._picture_id
    assert _counters(native) == _counters(python)
    assert (native.frames_sent, native.packets_sent) == (python.frames_sent, python.packets_sent)
    assert native.native_frames == len(sizes)
    assert python.native_frames == 0


@pytest.mark.parametrize("native", [True, False])
async def test_frames_follow_the_nominated_pair_and_the_srtp_session_when_they_change(
    native_on: None, receivers: tuple[_Receiver, _Receiver], native: bool
) -> None:
    """The send path reads the connection's link once per frame, and answers from what it saw last while the
    nominated ICE pair and the SRTP session are the same objects: a new pair (ICE moved to another path) or a new
    session (a DTLS restart) takes the very next frame there; a closed transport stops it."""
    if native and _fastpath is None:
        pytest.skip("the native send loop is not built here")
    first_rx, second_rx = receivers
    fs = await _sender(native, first_rx, "video/VP8", 90_000, 96)
    dtls: Any = fs._sender.transport
    internals: Any = fs._internals
    link = internals.link()
    assert internals.link() is link  # the same pair and session: the same answer
    decrypt = _inbound()

    def send(n: int) -> None:
        data = os.urandom(3000)
        fs._send(data, n * 3000, 90_000, TappedFrame(data, n))

    send(0)
    assert len(first_rx.drain()) == 3
    assert second_rx.drain() == []
    old_pair = dtls.transport._connection._nominated[1]
    dtls.transport._connection._nominated[1] = types.SimpleNamespace(
        protocol=old_pair.protocol, remote_addr=second_rx.addr
    )
    send(1)
    assert internals.link() is not link
    assert first_rx.drain() == []
    moved = second_rx.drain()
    assert len(moved) == 3
    assert all(decrypt.unprotect(d) for d in moved)
    # a new outbound session with another key: what is sent now only the new key opens
    other_key = bytes(reversed(KEY))
    policy = pylibsrtp.Policy(
        key=other_key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    )
    dtls._tx_srtp = pylibsrtp.Session(policy)
    send(2)
    rekeyed = second_rx.drain()
    assert len(rekeyed) == 3
    with pytest.raises(pylibsrtp.Error):
        decrypt.unprotect(rekeyed[0])
    inbound = pylibsrtp.Policy(
        key=other_key,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    )
    assert all(pylibsrtp.Session(inbound).unprotect(d) for d in rekeyed)
    dtls._state = State.CLOSED
    with pytest.raises(ConnectionError):
        internals.link()


@needs_native
async def test_a_refused_send_and_an_unprotectable_packet_are_handed_back(
    receivers: tuple[_Receiver, _Receiver],
) -> None:
    """What the native loop cannot send (the socket refuses) or protect (too long) comes back to the caller in order,
    already protected where it could be, so the Python loop sends it exactly as it would have."""
    rx, _ = receivers
    session, decrypt = _outbound(), _inbound()
    srtp = native_srtp(session.protect)
    assert srtp is not None
    context, protect, limit = srtp
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        chunks = [os.urandom(1000), os.urandom(1000), os.urandom(10)]
        history: dict[int, bytes] = {}
        # An IPv6 destination on an IPv4 socket: sendmmsg fails; everything was protected, nothing sent.
        v6 = _fastpath.sockaddr("::1", rx.addr[1])
        assert v6 is not None
        left = _fastpath.send_frame(
            tx.fileno(), v6, context, protect, limit, history, 128, chunks, b"", b"", 0x80, 96, 7, 90, SSRC, True
        )
        assert left is not None
        unsent, start, count, _ = left
        assert (len(unsent), start, count) == (3, 3, 3)
        assert [decrypt.unprotect(p) for p in unsent] == [history[7], history[8], history[9]]
        assert history[9][1] == 0x80 | 96  # the marker on the last packet only
        assert history[8][1] == 96
        # A packet longer than pylibsrtp's buffer takes: the ones before it go out, it and those after come back.
        v4 = _fastpath.sockaddr(*rx.addr)
        assert v4 is not None
        history.clear()
        chunks = [os.urandom(100), os.urandom(limit), os.urandom(100)]
        left = _fastpath.send_frame(
            tx.fileno(), v4, context, protect, limit, history, 128, chunks, b"", b"", 0x80, 96, 20, 90, SSRC, True
        )
        assert left == ([], 1, 3, False)
        assert sorted(history) == [20, 21]  # the unprotected one is recorded, as the Python loop would first
        assert [decrypt.unprotect(p) for p in rx.drain()] == [history[20]]
    finally:
        tx.close()
    assert _fastpath.sockaddr("not an address", 1) is None


def test_the_native_loop_is_built_where_a_c_compiler_is() -> None:
    """An install on a machine with a C compiler (as CI's) sends through the native loop by default."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the Python loop is the expected one")
    env = {k: v for k, v in os.environ.items() if k != sending.SEND_PATH_ENV}
    out = subprocess.run(
        [sys.executable, "-c", "from media.sending import send_path; print(send_path())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "native", (
        "media/_fastpath.c is not built in this checkout: `pip install -e .` builds it (see its warning if it failed)"
    )


@pytest.mark.parametrize(
    ("code", "env"),
    [
        # The module missing (never built): importing it fails.
        ("import sys; sys.modules['media._fastpath'] = None", {}),
        # Built, but the operator asked for the Python loop.
        ("", {sending.SEND_PATH_ENV: "python"}),
    ],
)
def test_the_python_loop_is_chosen_without_the_native_module(code: str, env: dict[str, str]) -> None:
    """Without the native module (or with COURTLINK_SEND_PATH=python) a node starts and sends through the Python
    loop, and says so."""
    script = f"{code}\nfrom media.sending import send_path, FrameSender\nprint(send_path())\n"
    out = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "python"


@needs_native
async def test_a_paced_slot_sends_through_the_python_pacer(
    native_on: None, receivers: tuple[_Receiver, _Receiver]
) -> None:
    """A video the pacer spreads (bandwidth adaptation) is queued for the pacer, never sent at once by the native
    loop, so pacing behaves as before."""
    rx, _ = receivers
    fs = await _sender(True, rx, "video/VP8", 90_000, 96)
    fs._source = types.SimpleNamespace(pace_bps=200_000)
    fs._done = asyncio.get_running_loop().create_future()  # the sender runs
    data = os.urandom(20_000)
    try:
        fs._send(data, 0, 90_000, TappedFrame(data, 1))
        assert fs.native_frames == 0
        assert fs.packets_sent == 16
        assert len(fs._paced) > 0  # held back: the bucket lets only the first packets go at once
        left = len(rx.drain())
        assert left < 16
        assert fs.packets_departed == left  # (what the node counts as sent to the subscriber's link)
        await asyncio.sleep(0.1)  # 0.1 s at 200 kbit/s: about 2.5 kB more
        left += len(rx.drain())
        assert fs.packets_departed == left < 16
    finally:
        fs.close("test")


@needs_native
async def test_a_socket_that_refuses_segmentation_offload_gets_one_datagram_per_packet(
    native_on: None, receivers: tuple[_Receiver, _Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel refuses UDP segmentation offload (here: a socket without UDP checksums), the native loop
    sends the same datagrams one by one, and stops asking for it on that sender."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    native_rx, python_rx = receivers
    native = await _sender(True, native_rx, "video/VP8", 90_000, 96)
    python = await _sender(False, python_rx, "video/VP8", 90_000, 96)
    for fs in (native, python):
        fs._sequence, fs._timestamp_origin, fs._picture_id = 100, 0, 0
    assert native.gso
    _, protocol, _ = native._internals.link()  # type: ignore[union-attr]
    protocol.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: GSO -> EINVAL
    for n in range(3):
        data = os.urandom(6000)
        frame = TappedFrame(data, 1)
        native._send(data, n * 3000, 90_000, frame)
        python._send(data, n * 3000, 90_000, frame)
        assert native_rx.drain() == python_rx.drain()
        assert not native.gso
    assert native.native_frames == 3


def test_a_node_reports_its_send_path(native_on: None) -> None:
    """The heartbeat's send_path names the loop a node's senders use: native or python on the direct path, aiortc
    with direct_send off; a record from a node that does not say reads as empty."""
    from media.sending import node_send_path
    from protocol.cluster import NodeRecord

    use_native(False)
    assert node_send_path(True) == "python"
    assert node_send_path(False) == "aiortc"
    if _fastpath is not None:
        use_native(True)
        assert node_send_path(True) == "native"
    record = NodeRecord(id="n1", capacity_peers=10, started_at=1.0, heartbeat_at=2.0)
    assert record.send_path == ""
    sent = record.model_copy(update={"send_path": "native"}).model_dump_json()
    assert NodeRecord.model_validate_json(sent).send_path == "native"
