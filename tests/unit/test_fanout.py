"""One native call per publisher frame for all its subscribers (media/fanout.py, ``_fastpath.send_frames``).

Real UDP sockets on 127.0.0.1 and real libsrtp sessions, as in tests/unit/test_fastpath.py, whose stand-in senders
these tests reuse.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from media.aiortc_compat import RTP_HISTORY_SIZE
from media.passthrough import TappedFrame
from media.sending import NativeBatch, native_srtp
from tests.unit.test_fastpath import (
    SSRC,
    _counters,
    _inbound,
    _outbound,
    _Receiver,
    _sender,
    native_on,
    needs_native,
)

try:
    from media import _fastpath
except ImportError:
    _fastpath = None  # type: ignore[assignment]

__all__ = ["native_on"]  # the fixture, used by name


@needs_native
@pytest.mark.parametrize("extensions", [True, False])
@pytest.mark.parametrize("lanes", [True, False])
@pytest.mark.parametrize(
    ("mime", "clock_rate", "pt", "sizes", "sequence"),
    [
        ("video/VP8", 90_000, 96, [1, 1295, 1296, 1297, 2592, 4200, 30_000, 100_000, 700], 65_500),
        ("audio/opus", 48_000, 111, [1, 80, 160, 400, 1275], 65_534),
    ],
)
async def test_a_batched_frame_is_byte_identical_to_the_python_loop(
    native_on: None,
    lanes: bool,
    extensions: bool,
    monkeypatch: pytest.MonkeyPatch,
    mime: str,
    clock_rate: int,
    pt: int,
    sizes: list[int],
    sequence: int,
) -> None:
    """Three subscribers of one publisher frame sent with one native call get exactly the SRTP datagrams the Python
    loop sends, with the same NACK history, sequence numbers and sender-report counters: through their lanes (the C
    loop makes the prefixes and advances the state) and through ``send_frames`` (Python makes them)."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # abs-send-time: the one per-send field
    receivers = [_Receiver() for _ in range(4)]
    try:
        batched = [await _sender(True, rx, mime, clock_rate, pt) for rx in receivers[:3]]
        python = await _sender(False, receivers[3], mime, clock_rate, pt)
        for fs in (*batched, python):
            fs._sequence, fs._timestamp_origin, fs._picture_id = sequence, 0xFFFFF000, 32_760
            if not lanes:
                monkeypatch.setattr(fs, "_lane_config", lambda: None)
            if not extensions:  # a subscriber that negotiated no header extension: no block, first byte 0x80
                fs._ext_template, fs._ext_abs_offset, fs._ext_dynamic = b"", -1, False
        decrypts = [_inbound() for _ in batched]  # one per subscriber: the same packets thrice would be replays
        for n, size in enumerate(sizes):
            data = os.urandom(size)
            frame = TappedFrame(data, 1)
            pts = n * (3000 if clock_rate == 90_000 else 960)
            batch = NativeBatch()
            assert all(fs.send_batched(data, pts, clock_rate, frame, batch) is None for fs in batched)
            assert len(batch) == 3
            assert sum(len(rx.drain()) for rx in receivers[:3]) == 0  # nothing leaves before the one call
            assert list(batch.run().values()) == [True, True, True]
            python._send(data, pts, clock_rate, frame)
            expected = receivers[3].drain()
            for fs, rx, decrypt in zip(batched, receivers, decrypts, strict=False):
                got = rx.drain()
                assert got == expected, (size, n)
                for datagram in got:
                    raw = decrypt.unprotect(datagram)
                    assert fs._history[(raw[2] << 8 | raw[3]) % RTP_HISTORY_SIZE] == raw
        for fs in batched:
            assert (fs._lane is not None) == lanes
            assert fs._history == python._history
            assert (fs._sequence, fs._picture_id) == (python._sequence, python._picture_id)
            assert _counters(fs) == _counters(python)
            assert (fs.frames_sent, fs.packets_sent, fs.native_frames) == (
                python.frames_sent,
                python.packets_sent,
                len(sizes),
            )
    finally:
        for rx in receivers:
            rx.sock.close()


@needs_native
def test_one_subscriber_failing_in_the_batch_leaves_the_others_sent() -> None:
    """A subscriber whose native send fails (here: arguments it cannot take, or a socket that refuses the address)
    gets its own error or hand-back; the subscribers after it in the same call still receive the frame."""
    rx = _Receiver()
    session, decrypt = _outbound(), _inbound()
    srtp = native_srtp(session.protect)
    assert srtp is not None
    context, protect, limit = srtp
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        v4, v6 = _fastpath.sockaddr(*rx.addr), _fastpath.sockaddr("::1", rx.addr[1])
        chunks = [os.urandom(500)]
        history: dict[int, bytes] = {}

        def job(to: object, seq: int) -> tuple[object, ...]:
            return (
                tx.fileno(),
                to,
                context,
                protect,
                limit,
                history,
                128,
                chunks,
                b"",
                b"",
                0x80,
                96,
                seq,
                9,
                SSRC,
                True,
            )

        results = _fastpath.send_frames([job(v4, 1), job("not a sockaddr", 2), job(v6, 3), job(v4, 4)])
        assert results[0] is None
        assert results[3] is None
        assert isinstance(results[1], TypeError)
        unsent = results[2]
        assert isinstance(unsent, tuple)
        assert len(unsent[0]) == 1  # protected, handed back for the Python loop
        assert [decrypt.unprotect(p) for p in rx.drain()] == [history[1], history[4]]
        assert _fastpath.send_frames([]) == []
        with pytest.raises(TypeError):
            _fastpath.send_frames(())  # type: ignore[arg-type]
    finally:
        tx.close()
        rx.sock.close()


@needs_native
async def test_what_a_lane_cannot_send_goes_out_through_the_python_loop(
    native_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the C loop cannot send a subscriber's frame (here: the socket refuses the address it was given), the
    packets it protected come back and the Python loop sends them: the subscriber still gets exactly the Python
    loop's datagrams."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    native_rx, python_rx = _Receiver(), _Receiver()
    try:
        native = await _sender(True, native_rx, "video/VP8", 90_000, 96)
        python = await _sender(False, python_rx, "video/VP8", 90_000, 96)
        for fs in (native, python):
            fs._sequence, fs._timestamp_origin, fs._picture_id = 7, 0, 5
        for n in range(3):
            data = os.urandom(4000)
            frame = TappedFrame(data, 1)
            if n == 1:  # from now on an IPv6 destination on the IPv4 socket: sendmmsg fails, every packet comes back
                assert native._lane is not None
                native._lane = (native._lane[0], _fastpath.sockaddr("::1", 9), *native._lane[2:])
            batch = NativeBatch()
            assert native.send_batched(data, n * 3000, 90_000, frame, batch) is None
            assert batch.run() == {native: True}
            python._send(data, n * 3000, 90_000, frame)
            assert native_rx.drain() == python_rx.drain()
        assert native._history == python._history
        assert _counters(native) == _counters(python)
        assert (native._sequence, native._picture_id, native.native_frames) == (python._sequence, python._picture_id, 3)
    finally:
        native_rx.sock.close()
        python_rx.sock.close()
