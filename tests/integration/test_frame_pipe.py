"""The frame pipe: a real recorder archives a hearing from a media node over TCP on loopback, and survives it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

import tests.recorder_fixtures as fx
from media.frame_pipe import FramePipeServer
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.frames import (
    EncodedFrame,
    FrameSink,
    MessageDecoder,
    PipeKeepalive,
    PipeKeyframeRequest,
    PipeRefused,
    PipeWelcome,
    SenderReport,
    TrackInfo,
    encode_message,
    make_hello,
)
from protocol.node import SetPublishing, SetReceiving
from recorder.chain import MANIFEST_NAME, read_lines
from recorder.frame_pipe import PipeFrameSource, split_address
from recorder.recorder import Recorder
from recorder.verify import verify_archive
from rooms.model import Role, Source
from tests.media_clients import MediaClient, eventually, hearing

SECRET = "frame pipe secret of this test cluster"
BOTH = (Source.camera, Source.microphone)


class Tee:
    """Hands everything on to the real recorder and counts it per track (what the test waits on)."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink = sink
        self.frames: Counter[str] = Counter()
        self.started: dict[str, TrackInfo] = {}
        self.stopped: list[tuple[str, str]] = []

    def track_started(self, info: TrackInfo) -> None:
        self.started[info.track_id] = info
        self.sink.track_started(info)

    def frame(self, frame: EncodedFrame) -> None:
        self.frames[frame.track_id] += 1
        self.sink.frame(frame)

    def sender_report(self, report: SenderReport) -> None:
        self.sink.sender_report(report)

    def track_stopped(self, track_id: str, reason: str) -> None:
        self.stopped.append((track_id, reason))
        self.sink.track_stopped(track_id, reason)


class Where:
    """The placement a recorder's locate() reads: changed by the test when the node's pipe moves."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.asked = 0

    async def __call__(self, hearing_id: str) -> str | None:
        self.asked += 1
        return self.address


def entries(session_dir: Path) -> list[dict[str, Any]]:
    """Parsed manifest lines."""
    return [line.entry for line in read_lines(session_dir / MANIFEST_NAME) if line.entry is not None]


async def test_recorder_in_another_process_archives_every_track_and_a_node_lost_gap(tmp_path: Path) -> None:
    """Frames over the pipe make a sealed archive that verifies; a lost pipe is a node_lost gap, then media again."""
    booked = fx.hearing("hrg_pipe", participants=2)
    node = InProcessNode(NodeSettings(node_id="node-pipe"))
    server = FramePipeServer(node, "127.0.0.1", 0, secret=SECRET)
    where = Where(await server.start())
    source = PipeFrameSource(where, secret=SECRET, recorder_id="rec-pipe", backoff_first=0.1, backoff_max=0.5)
    recorder = Recorder(tmp_path, "rec-pipe", segment_seconds=2.0, on_keyframe_needed=source.request_keyframe)
    tee = Tee(recorder)
    try:
        async with hearing(node, booked.id) as signaling:
            for name, tag, role in (("p_judge", 51, Role.judge), ("p_def", 52, Role.defendant)):
                await signaling.join(MediaClient(name, tag=tag), role)
                await node.call(SetPublishing(hearing_id=booked.id, participant_id=name, sources=BOTH))
            await node.call(
                SetReceiving(hearing_id=booked.id, participant_id="recorder", publishers=("p_judge", "p_def"))
            )
            session = recorder.start_session(booked, fx.SITES)
            source.attach_recorder(booked.id, "recorder", tee)

            assert await eventually(lambda: len(tee.started) == 4, within=20)
            tracks = set(tee.started)
            assert await eventually(lambda: all(tee.frames[t] >= 40 for t in tracks), within=30)

            # The node's pipe goes away (its process died, or the link): every track stops as node_lost.
            await server.close()
            assert await eventually(lambda: {t for t, r in tee.stopped if r == "node_lost"} == tracks, within=20)
            lost_at = time.time()
            await asyncio.sleep(1.0)
            before = dict(tee.frames)
            asked = where.asked
            # It comes back elsewhere (another port: the placement moved); the recorder finds it through locate.
            server = FramePipeServer(node, "127.0.0.1", 0, secret=SECRET)
            where.address = await server.start()
            assert await eventually(lambda: all(tee.frames[t] >= before[t] + 40 for t in tracks), within=30)
            assert where.asked > asked
            assert source.connections(booked.id, "recorder") == 2

            seal = await asyncio.wrap_future(session.seal())
            assert seal["type"] == "seal"
    finally:
        await source.close()
        await server.close()
        await recorder.aclose()

    result = verify_archive(session.path)
    assert result.ok, result.problem
    lines = entries(session.path)
    gaps = [e for e in lines if e["type"] == "gap" and e["reason"] == "node_lost"]
    assert {g["track"] for g in gaps} == tracks
    assert all(g["start"] < lost_at + 0.5 and g["end"] > lost_at + 0.9 for g in gaps), gaps
    segments = [e for e in lines if e["type"] == "segment"]
    for track_id, info in tee.started.items():
        mine = [s for s in segments if s["track"] == track_id]
        assert any(s["start"] < lost_at for s in mine), track_id
        assert any(s["start"] > lost_at for s in mine), track_id
        probed = fx.probe(session.path / mine[-1]["file"])
        assert probed["streams"][0]["codec_name"] == info.codec.lower()
        assert len(probed["packets"]) > 5
    assert {info.participant_id for info in tee.started.values()} == {"p_judge", "p_def"}


async def _raw(address: str, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = split_address(address)
    if rcvbuf is None:
        return await asyncio.open_connection(host, port)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def _answer(reader: asyncio.StreamReader) -> list[Any]:
    """Everything the node says until it closes the connection."""
    decoder = MessageDecoder()
    said: list[Any] = []
    async with asyncio.timeout(20):
        while data := await reader.read(65536):
            said += decoder.feed(data)
    return said


def _hello(participant_id: str, secret: str | None = SECRET, hearing_id: str = "hrg_attack") -> bytes:
    key = None if secret is None else secret.encode()
    nonce = participant_id.encode().ljust(16, b".")[:16]
    return encode_message(make_hello("rec-x", hearing_id, participant_id, secret=key, now=time.time(), nonce=nonce))


async def test_hostile_and_slow_recorders_cost_the_node_nothing(tmp_path: Path) -> None:
    """Garbage, a bad HMAC, a replay, a huge length and a reader that never reads are cut off; others keep going."""
    node = InProcessNode(NodeSettings(node_id="node-attack"))
    bound = 64 * 1024
    server = FramePipeServer(node, "127.0.0.1", 0, secret=SECRET, send_buffer_bytes=bound, socket_send_buffer=8192)
    address = await server.start()
    counting = CountingSink()
    good = Tee(counting)
    source = PipeFrameSource(lambda _: _fixed(address), secret=SECRET, recorder_id="rec-good")
    wrong = PipeFrameSource(lambda _: _fixed(address), secret="not the secret of this cluster", recorder_id="rec-bad")
    wrong_sink = CountingSink()
    slow_writer: asyncio.StreamWriter | None = None
    try:
        async with hearing(node, "hrg_attack") as signaling:
            await signaling.join(MediaClient("p_judge", tag=61), Role.judge)
            await node.call(SetPublishing(hearing_id="hrg_attack", participant_id="p_judge", sources=BOTH))
            for pid in ("recorder", "slow", "intruder"):
                await node.call(SetReceiving(hearing_id="hrg_attack", participant_id=pid, publishers=("p_judge",)))
            source.attach_recorder("hrg_attack", "recorder", good)
            wrong.attach_recorder("hrg_attack", "intruder", wrong_sink)
            assert await eventually(lambda: sum(good.frames.values()) >= 30, within=20)

            with structlog.testing.capture_logs() as logs:
                # Garbage (an HTTP request: its first 4 bytes announce a 1.1 GB message) and a huge length prefix.
                for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", struct.pack(">I", 0xFFFFFFFF) + b"\x11" * 100):
                    reader, writer = await _raw(address)
                    writer.write(junk)
                    assert await _answer(reader) == []
                    writer.close()
                # A hello signed with another secret is refused, and says why.
                reader, writer = await _raw(address)
                writer.write(_hello("intruder", secret="not the secret of this cluster"))
                assert await _answer(reader) == [PipeRefused("hello_bad_mac")]
                writer.close()
                # A good hello replayed (same nonce) on a second connection is refused.
                first_reader, first_writer = await _raw(address)
                first_writer.write(_hello("replayed"))
                welcome = MessageDecoder().feed(await asyncio.wait_for(first_reader.read(65536), 10))
                assert isinstance(welcome[0], PipeWelcome)
                reader, writer = await _raw(address)
                writer.write(_hello("replayed"))
                assert await _answer(reader) == [PipeRefused("hello_replayed")]
                writer.close()
                first_writer.close()
                # A valid recorder that sends a frame of its own (it may only ask for keyframes): cut off.
                reader, writer = await _raw(address)
                writer.write(_hello("liar") + encode_message(EncodedFrame("t", b"x", 1, True, 1.0)))
                said = await _answer(reader)
                assert isinstance(said[0], PipeWelcome)
                writer.close()

                # A reader that never reads: the node's buffer for it hits the bound, and it is cut off.
                _, slow_writer = await _raw(address, rcvbuf=4096)
                slow_writer.write(_hello("slow"))
                assert await eventually(lambda: server.overflows == 1, within=30)
                counted = sum(good.frames.values())
                assert await eventually(lambda: sum(good.frames.values()) >= counted + 30, within=20)

            reasons = Counter(e.get("reason") for e in logs if e["event"] == "frame_pipe_closed")
            assert reasons["malformed_too_large"] == 2
            assert reasons["hello_bad_mac"] >= 1
            assert reasons["hello_replayed"] == 1
            assert reasons["unexpected_EncodedFrame"] == 1
            assert reasons["overflow"] == 1
            assert next(e for e in logs if e["event"] == "frame_pipe_overflow")["participant_id"] == "slow"
            assert server.peak_buffer <= bound
            assert wrong.connections("hrg_attack", "intruder") == 0
            assert wrong_sink.frames == 0
            assert source.connections("hrg_attack", "recorder") == 1  # never disturbed
            assert counting.frames > 0
    finally:
        if slow_writer is not None:
            slow_writer.transport.abort()
        await source.close()
        await wrong.close()
        await server.close()


async def test_without_a_secret_only_loopback_recorders_get_in() -> None:
    """A node without [cluster] secret serves a recorder on loopback with an unsigned hello (others: see unit test)."""
    node = InProcessNode(NodeSettings(node_id="node-open"))
    address = await (server := FramePipeServer(node, "127.0.0.1", 0, secret=None)).start()
    try:
        reader, writer = await _raw(address)
        writer.write(_hello("recorder", secret=None))
        decoder = MessageDecoder()
        said = decoder.feed(await asyncio.wait_for(reader.read(65536), 10))
        assert isinstance(said[0], PipeWelcome)
        writer.close()
    finally:
        await server.close()
        await node.close()


async def test_a_connection_cancelled_from_outside_ends_cancelled_and_detaches_its_recorder() -> None:
    """Cancelling a connection's task ends it as cancelled (the cancel is not swallowed) after it detached."""
    node = InProcessNode(NodeSettings(node_id="node-cancel"))
    address = await (server := FramePipeServer(node, "127.0.0.1", 0, secret=None)).start()
    try:
        reader, writer = await _raw(address)
        writer.write(_hello("recorder", secret=None))
        said = MessageDecoder().feed(await asyncio.wait_for(reader.read(65536), 10))
        assert isinstance(said[0], PipeWelcome)
        (task,) = server._tasks
        with structlog.testing.capture_logs() as logs:
            task.cancel()
            await asyncio.wait({task}, timeout=10)
        assert task.cancelled()
        assert [e["reason"] for e in logs if e["event"] == "frame_pipe_closed"] == ["server_closed"]
        assert not server._tasks
        assert await asyncio.wait_for(reader.read(65536), 10) == b""  # the node closed the connection
        writer.close()
    finally:
        await server.close()
        await node.close()


async def _fixed(address: str) -> str:
    return address


class CountingSink:
    """A FrameSink that counts frames."""

    def __init__(self) -> None:
        self.frames = 0

    def track_started(self, info: TrackInfo) -> None:
        pass

    def frame(self, frame: EncodedFrame) -> None:
        self.frames += 1

    def sender_report(self, report: SenderReport) -> None:
        pass

    def track_stopped(self, track_id: str, reason: str) -> None:
        pass


class FakeNode:
    """Plays a node's side of the pipe by hand (raw bytes), to check what a recorder does with a silent node."""

    def __init__(self, script: list[bytes]) -> None:
        self.script = script
        self.heard: list[Any] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        decoder = MessageDecoder()
        for chunk in self.script:
            writer.write(chunk)
        with contextlib.suppress(ConnectionError, TimeoutError):
            while data := await asyncio.wait_for(reader.read(65536), 5):
                self.heard += decoder.feed(data)
        writer.close()

    def close(self) -> None:
        """Drop every connection."""
        for writer in self.writers:
            writer.transport.abort()


async def test_a_silent_node_is_dropped_and_a_partial_frame_never_reaches_the_recorder() -> None:
    """A node that stops talking mid-frame: the half frame is never handed on, tracks stop node_lost, it reconnects."""
    track = TrackInfo("hrg_silent", "p_judge:cam", "p_judge", Source.camera, "video", "VP8", 90_000)
    whole = EncodedFrame(track.track_id, b"\x10" * 5000, 1000, True, time.time())
    half = encode_message(EncodedFrame(track.track_id, b"\x11" * 5000, 4000, False, time.time()))[:2600]
    fake = FakeNode([encode_message(PipeWelcome(keepalive_ms=100)), encode_message(track), encode_message(whole), half])
    tcp = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    where = Where(f"127.0.0.1:{port}")
    sink = Collecting()
    source = PipeFrameSource(where, secret=SECRET, recorder_id="rec-1", keepalive_seconds=0.1, backoff_first=0.05)
    try:
        source.attach_recorder("hrg_silent", "recorder", sink)
        assert await eventually(lambda: sink.frames == [whole], within=10)
        source.request_keyframe("hrg_silent", track.track_id)
        assert await eventually(lambda: PipeKeyframeRequest(track.track_id) in fake.heard, within=10)
        assert await eventually(lambda: ("p_judge:cam", "node_lost") in sink.stopped, within=10)
        assert await eventually(lambda: fake.connections >= 2 and where.asked >= 2, within=10)
        assert all(f.payload == whole.payload for f in sink.frames)  # the half frame never came through
        assert any(isinstance(m, PipeKeepalive) for m in fake.heard)
    finally:
        await source.close()
        tcp.close()
        fake.close()
        await tcp.wait_closed()


async def test_a_recorder_that_goes_silent_is_dropped_by_the_node() -> None:
    """The node drops a recorder that stops sending keepalives (a dead machine, no FIN) and keeps a live one."""
    node = InProcessNode(NodeSettings(node_id="node-silent"))
    server = FramePipeServer(node, "127.0.0.1", 0, secret=SECRET, keepalive_seconds=0.1)
    address = await server.start()
    source = PipeFrameSource(lambda _: _fixed(address), secret=SECRET, recorder_id="rec-live", keepalive_seconds=0.1)
    try:
        source.attach_recorder("hrg_silent", "live", Collecting())
        with structlog.testing.capture_logs() as logs:
            reader, writer = await _raw(address)
            writer.write(_hello("mute", hearing_id="hrg_silent"))
            said = await _answer(reader)  # keepalives from the node, then its close
            assert isinstance(said[0], PipeWelcome)
            assert PipeKeepalive() in said
        reasons = [e["reason"] for e in logs if e["event"] == "frame_pipe_closed"]
        assert reasons == ["recorder_silent"]
        assert source.connected("hrg_silent", "live")
        assert source.connections("hrg_silent", "live") == 1
        writer.close()
    finally:
        await source.close()
        await server.close()
        await node.close()


class Collecting:
    """A FrameSink that keeps everything."""

    def __init__(self) -> None:
        self.frames: list[EncodedFrame] = []
        self.stopped: list[tuple[str, str]] = []

    def track_started(self, info: TrackInfo) -> None:
        pass

    def frame(self, frame: EncodedFrame) -> None:
        self.frames.append(frame)

    def sender_report(self, report: SenderReport) -> None:
        pass

    def track_stopped(self, track_id: str, reason: str) -> None:
        self.stopped.append((track_id, reason))
