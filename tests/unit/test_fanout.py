"""One native call per publisher frame for all its subscribers (media/fanout.py, ``_fastpath.send_frames``).

Real UDP sockets on 127.0.0.1 and real libsrtp sessions, as in tests/unit/test_fastpath.py, whose stand-in senders
these tests reuse.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import time
import types
from collections.abc import Callable
from typing import Any

import pytest
from aiortc.rtcdtlstransport import State

from media import fanout
from media.aiortc_compat import RTP_HISTORY_SIZE
from media.fanout import fan_out
from media.forwarding import ForwardedTrack
from media.passthrough import TappedFrame
from media.sending import FrameSender, NativeBatch, native_srtp
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


async def _slot(
    rx: _Receiver, moved: _Receiver, mime: str, clock_rate: int, pt: int
) -> tuple[ForwardedTrack, FrameSender]:
    """A subscriber slot as the node wires it: a ForwardedTrack feeding a FrameSender (real socket, real SRTP); a new
    ICE pair (:func:`_new_pair`) leads to ``moved``."""
    fs = await _sender(True, rx, mime, clock_rate, pt)
    stand_in: Any = fs._sender
    stand_in.transport.moved_to = moved.addr
    fs._sequence, fs._timestamp_origin, fs._picture_id = 65_530, 0xFFFFF000, 32_766
    track = ForwardedTrack("video" if mime.startswith("video") else "audio", bound=8)
    track._clock_rate = clock_rate
    fs._source = track
    track.attach(fs)
    return track, fs


def _link_down(track: ForwardedTrack, fs: FrameSender) -> None:
    fs._sender.transport._state = State.CLOSED


def _new_pair(track: ForwardedTrack, fs: FrameSender) -> None:
    stand_in: Any = fs._sender
    nominated = stand_in.transport.transport._connection._nominated
    nominated[1] = types.SimpleNamespace(protocol=nominated[1].protocol, remote_addr=stand_in.transport.moved_to)


def _disable_then_enable(track: ForwardedTrack, fs: FrameSender) -> None:
    fs._sender._enabled = not fs._sender._enabled


def _top_priority_with_a_repair_held(track: ForwardedTrack, fs: FrameSender) -> None:
    """The top video of a constrained subscriber, whose repair request waits for the keyframe just sent: the
    Python loop asks for it once that keyframe had its time (``RepairHold.due``), at a later frame."""
    if track.top_priority:
        return
    track.top_priority = True
    track.repairs.keyframe_sent(time.monotonic())
    track.repairs.ask(time.monotonic())


def _layer_pending(track: ForwardedTrack, fs: FrameSender) -> None:
    """A simulcast layer switched to, waiting for its keyframe: frames from elsewhere are not for the slot."""
    track.source, track._pending = types.SimpleNamespace(), types.SimpleNamespace()  # type: ignore[assignment]


def _set(name: str, value: object) -> Callable[[ForwardedTrack, FrameSender], None]:
    def apply(track: ForwardedTrack, fs: FrameSender) -> None:
        setattr(track, name, value)

    return apply


# (what happens to the slot before frame 3, and again before frame 5 where the change is a toggle)
CHANGES: dict[str, Callable[[ForwardedTrack, FrameSender], None]] = {
    "paused": lambda track, fs: track.pause(),
    "gate closed": lambda track, fs: track.gate.lose() if track.gate is not None else None,
    "sequence jump due": _set("_restart_sequence", True),
    "top priority, a repair held": _top_priority_with_a_repair_held,
    "new timeline": _set("_offset", None),
    "sender disabled, then enabled (frames queued, then flushed)": _disable_then_enable,
    "DTLS closed": _link_down,
    "new ICE pair": _new_pair,
    "track ended": lambda track, fs: track.stop(),
    "a layer pending": _layer_pending,
    "a frame queued": lambda track, fs: track._queue.append((b"\x01" * 50, 1, track._time_base, time.time())),
}


@needs_native
@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize(
    ("mime", "clock_rate", "pt"), [("video/VP8", 90_000, 96), ("audio/opus", 48_000, 111)], ids=["vp8", "opus"]
)
async def test_the_native_hot_path_sends_and_decides_as_the_python_loop(
    native_on: None, monkeypatch: pytest.MonkeyPatch, change: str, mime: str, clock_rate: int, pt: int
) -> None:
    """A subscriber served by ``_fastpath.fan_hot`` gets exactly the datagrams, and ends in exactly the state, of one
    decided frame by frame in Python (``media.fanout.use_hot(False)``), whatever changes under it: a pause, a closed
    gate, a sequence jump, top priority, a new timeline, a disabled sender, a queued frame, a closed DTLS transport, a
    new ICE pair. The hot path serves the steady frames (the slot's ``prepare`` is not called for them) and hands
    every other frame back to Python."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    clock = [5_000.0]  # a tenth of a second a frame, the same for both slots however often they read it
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    rx_hot, rx_cold, moved_hot, moved_cold = _Receiver(), _Receiver(), _Receiver(), _Receiver()
    try:
        slots = {
            "hot": await _slot(rx_hot, moved_hot, mime, clock_rate, pt),
            "cold": await _slot(rx_cold, moved_cold, mime, clock_rate, pt),
        }
        prepared: dict[str, list[int]] = {"hot": [], "cold": []}  # the frames each slot's prepare() was called for
        for name, (track, _) in slots.items():
            track.prepare = _counting(track.prepare, prepared[name])  # type: ignore[method-assign]
        video = mime.startswith("video")
        for n in range(8):
            clock[0] += 0.1
            keyframe = not video or n in (0, 6)
            data = (b"\x00" if keyframe else b"\x01") + bytes([n]) * (2500 if video else 120)
            if n in (3, 5):
                for track, fs in slots.values():
                    CHANGES[change](track, fs)
            if n == 5 and change in ("paused",):
                for track, _ in slots.values():
                    track.resume()
            for name, (track, _) in slots.items():
                fanout.use_hot(name == "hot")
                frame = TappedFrame(data, n)
                fan_out([track], frame, keyframe)
            await asyncio.sleep(0)
            assert rx_hot.drain() == rx_cold.drain(), n
            assert moved_hot.drain() == moved_cold.drain(), n
        hot, cold = (_state(*slots[name]) for name in ("hot", "cold"))
        assert hot == cold
        steady = [n for n in range(8) if n not in prepared["hot"]]
        assert steady, "the hot path served no frame"
        assert prepared["cold"] == list(range(8))
    finally:
        fanout.use_hot(True)
        for rx in (rx_hot, rx_cold, moved_hot, moved_cold):
            rx.sock.close()


def _counting(prepare: Callable[..., Any], calls: list[int]) -> Callable[..., Any]:
    def counted(frame: TappedFrame, keyframe: bool) -> Any:
        calls.append(frame.timestamp)  # (the frame's number)
        return prepare(frame, keyframe)

    return counted


def _state(track: ForwardedTrack, fs: FrameSender) -> tuple[Any, ...]:
    return (
        track.forwarded,
        track.dropped,
        track.paused_frames,
        len(track.hold_times),
        track._last_out,
        track._offset,
        track._restart_sequence,
        track.gate.open if track.gate is not None else None,
        track.repairs.deferred,
        fs._sequence,
        fs._picture_id,
        fs.frames_sent,
        fs.packets_sent,
        fs._history,
        _counters(fs),
        fs._done is not None and fs._done.done(),
    )


@needs_native
async def test_the_hot_path_leaves_to_python_what_it_cannot_see_the_end_of(native_on: None) -> None:
    """What the equivalence test cannot tell by the bytes: a paced slot, a slot not yet sendable, a sender whose lane
    was made anew or whose pacer holds a packet, a new SRTP session, a socket that is closing or has a backlog, a
    consumer of another type all go back to Python."""
    rx, moved = _Receiver(), _Receiver()
    try:
        track, fs = await _slot(rx, moved, "audio/opus", 48_000, 111)
        fan_out([track], TappedFrame(b"\x01" * 100, 0), True)  # the first frame (the timeline) goes through Python
        assert fs._hot is not None

        def served() -> bool:
            frame = TappedFrame(b"\x02" * 100, 960)
            return _fastpath.fan_hot([track], frame, True, 1, time.monotonic()) is None

        assert served()
        hot = fs._hot
        transport = hot[2]  # asyncio's datagram transport here (uvloop's in the node): its backlog is _buffer_size
        dtls: Any = fs._sender.transport
        changes: list[tuple[Any, str, object, object]] = [
            (track, "pace_bps", 1_000_000, None),
            (track, "_sendable", False, True),
            (fs, "_lane", hot[0][:1] + hot[0][1:], hot[0]),  # equal, but not the lane _hot was made for
            (fs, "_paced", collections.deque([(b"\x80", 0.0)]), fs._paced),  # a packet waits in its pacer
            (dtls, "_tx_srtp", _outbound(), dtls._tx_srtp),  # a new DTLS handshake: a new SRTP session
            (transport, "_buffer_size", 1, 0),
        ]
        for owner, name, spoilt, mended in changes:
            setattr(owner, name, spoilt)
            assert not served(), name
            setattr(owner, name, mended)
            assert served(), name
        assert _fastpath.fan_hot([object()], TappedFrame(b"\x02", 1), True, 1, 0.0) is not None
        transport.close()
        assert not served()
    finally:
        rx.sock.close()
        moved.sock.close()


def _vp8_frame(n: int, *, keyframe: bool, origin: object) -> TappedFrame:
    frame = TappedFrame((b"\x00" if keyframe else b"\x01") + bytes([n]) * 2500, 3000 * n)
    frame.origin = origin
    return frame


def _timestamps(rx: _Receiver, decrypt: Any) -> list[int]:
    """The RTP timestamp of each packet ``rx`` got, in order."""
    return [int.from_bytes(decrypt.unprotect(p)[4:8], "big") for p in rx.drain()]


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
async def test_a_primed_paused_video_resumes_with_the_keyframe_it_kept(native: bool, native_on: None) -> None:
    """A paused video primed for a resume (its probe's padding went through) asks for a keyframe once, keeps it and
    the frames after it while paused (sending nothing), and the resume sends them at once, without asking again: the
    subscriber need not wait for the publisher's keyframe after the verdict. Unprimed (the probe failed), or kept too
    long (more frames than the queue's bound), the resume asks for one as before."""
    if native and _fastpath is None:
        pytest.skip("the native module is not built")
    rx, moved = _Receiver(), _Receiver()
    try:
        track, fs = await _slot(rx, moved, "video/VP8", 90_000, 96)
        reasons: list[object] = []
        publisher: Any = types.SimpleNamespace(request_keyframe=reasons.append)
        track.publisher = track.source = publisher
        decrypt = _inbound()
        fan_out([track], _vp8_frame(0, keyframe=True, origin=publisher), True)
        assert _timestamps(rx, decrypt), "the slot sends before its pause"
        base = fs._timestamp_origin
        track.pause()
        track.prime()
        track.prime()  # (idempotent: the node primes at every tick of the verdict's wait)
        assert reasons == ["resume"]
        fan_out([track], _vp8_frame(1, keyframe=False, origin=publisher), False)  # before the keyframe: not kept
        fan_out([track], _vp8_frame(2, keyframe=True, origin=publisher), True)
        fan_out([track], _vp8_frame(3, keyframe=False, origin=publisher), False)
        fan_out([track], _vp8_frame(4, keyframe=False, origin=publisher), False)
        fan_out([track], _vp8_frame(5, keyframe=False, origin=object()), False)  # another source's: not kept
        assert track.primed == 3
        assert rx.drain() == [], "a paused slot sends nothing"
        track.resume()
        assert reasons == ["resume"], "the kept keyframe serves the resume"
        assert track.primed_resumes == 1
        sent = [(t - base) & 0xFFFFFFFF for t in _timestamps(rx, decrypt)]
        assert len(sent) == 6  # the keyframe and the two frames after it, 2 packets each, in order
        assert len(set(sent)) == 3
        assert sent == sorted(sent)
        fan_out([track], _vp8_frame(6, keyframe=False, origin=publisher), False)
        assert len(_timestamps(rx, decrypt)) == 2, "the frames after the resume follow"

        # Unprimed: the kept frames go, and the resume asks for a keyframe.
        track.pause()
        track.prime()
        fan_out([track], _vp8_frame(7, keyframe=True, origin=publisher), True)
        assert track.primed == 1
        track.unprime()
        assert track.primed == 0
        track.resume()
        assert reasons == ["resume", "resume", "resume"]
        fan_out([track], _vp8_frame(8, keyframe=False, origin=publisher), False)
        assert rx.drain() == [], "no keyframe yet: the gate holds the deltas"

        # Kept too long: more frames after the keyframe than the queue's bound.
        fan_out([track], _vp8_frame(9, keyframe=True, origin=publisher), True)
        rx.drain()
        track.pause()
        track.prime()
        fan_out([track], _vp8_frame(10, keyframe=True, origin=publisher), True)
        for n in range(11, 11 + track.bound):
            fan_out([track], _vp8_frame(n, keyframe=False, origin=publisher), False)
        assert track.primed == 0
        asked = len(reasons)
        track.resume()
        assert reasons[asked:] == ["resume"]
        assert track.primed_resumes == 1

        # A simulcast layer switched to while primed: what was kept is the old layer's; the new one is asked.
        layer_reasons: list[object] = []
        layer: Any = types.SimpleNamespace(request_keyframe=layer_reasons.append, consumers=set())
        publisher.layer = lambda rid: layer if rid == "h" else None
        publisher.consumers = set()
        track.pause()
        track.prime()
        fan_out([track], _vp8_frame(30, keyframe=True, origin=publisher), True)
        assert track.primed == 1
        assert track.select_layer("h")
        assert track.primed == 0
        assert layer_reasons == ["resume"]
        fan_out([track], _vp8_frame(31, keyframe=True, origin=publisher), True)  # the old layer's: not kept
        fan_out([track], _vp8_frame(32, keyframe=True, origin=layer), True)
        assert track.primed == 1
    finally:
        rx.sock.close()
        moved.sock.close()


@pytest.mark.parametrize("native", [True, False], ids=["native", "python"])
async def test_padding_on_a_paused_video_takes_its_sequence_numbers(native: bool, native_on: None) -> None:
    """Padding sent on a paused video's own stream (the node's lift watch) goes out as padding-only packets of the
    stream, SRTP-protected, each with the stream's next sequence number and its last timestamp, without header
    extensions; the resumed frames continue the sequence after them, on either send path. The sender tells their
    NACKs from the media's (``padded_within``), keeps them in its resend history (a NACKed one is resent as media
    is), and sends none while its pacer holds packets."""
    if native and _fastpath is None:
        pytest.skip("the native module is not built")
    rx, moved = _Receiver(), _Receiver()
    try:
        track, fs = await _slot(rx, moved, "video/VP8", 90_000, 96)
        fs._done = asyncio.get_running_loop().create_future()  # (running, as run() leaves it)
        publisher: Any = types.SimpleNamespace(request_keyframe=lambda reason: None)
        track.publisher = track.source = publisher
        decrypt = _inbound()
        fan_out([track], _vp8_frame(0, keyframe=True, origin=publisher), True)
        first = [decrypt.unprotect(p) for p in rx.drain()]
        last_seq = int.from_bytes(first[-1][2:4], "big")
        last_ts = first[-1][4:8]
        track.pause()
        assert fs.send_media_padding(5) == 5
        padding = [decrypt.unprotect(p) for p in rx.drain()]
        assert [int.from_bytes(p[2:4], "big") for p in padding] == [(last_seq + i) & 0xFFFF for i in range(1, 6)]
        for p in padding:
            assert p[0] == 0xA0, "version 2, padding, no extension"
            assert p[1] == 96
            assert p[4:8] == last_ts
            assert int.from_bytes(p[8:12], "big") == SSRC
            assert p[12:] == b"\x01", "one byte of padding, its count"
        assert fs.media_padding_sent == 5
        assert fs.padded_within((last_seq + 3) & 0xFFFF, 1.0)
        assert not fs.padded_within(last_seq, 1.0), "a media packet's number"
        assert not fs.padded_within((last_seq + 3) & 0xFFFF, -1.0), "sent longer ago than asked"
        # In the resend history, as media: a lost one is resent, so no receiver waits behind its hole.
        assert fs._history[(last_seq + 3) % RTP_HISTORY_SIZE] == padding[2]
        assert fs.sent_within((last_seq + 3) & 0xFFFF, 1.0)
        track.resume()
        fan_out([track], _vp8_frame(1, keyframe=True, origin=publisher), True)
        resumed = [decrypt.unprotect(p) for p in rx.drain()]
        assert resumed, "the resumed keyframe goes out"
        assert int.from_bytes(resumed[0][2:4], "big") == (last_seq + 6) & 0xFFFF, "the sequence goes on after them"
        fs._paced.append((b"", 0.0))
        assert fs.send_media_padding(3) == 0, "not past packets the pacer holds"
        fs._paced.clear()
    finally:
        rx.sock.close()
        moved.sock.close()
