"""Frame pipe benchmark: frames/s and CPU of a node -> recorder frame pipe against the in-process sink, same run.

Run: ``.venv/bin/python -m bench.frame_pipe [--seconds 20] [--video-tracks 6] [--audio-tracks 6]``

The same frames (real VP8 640x480 at 30 fps and 20 ms Opus packets from PyAV,
sender reports every second) are handed to a counting ``FrameSink`` twice:

1. in process: the node calls the sink (what ``courtlink serve`` does);
2. over the pipe: the node's ``FramePipeServer`` sink encodes, TCP on
   127.0.0.1 carries them, ``PipeFrameSource`` decodes and calls the sink (what
   ``courtlink media-node`` + ``courtlink recorder`` do). Both ends run in this
   process, so its CPU time is what the pipe costs on both machines together.

Frames are pushed as fast as the pipe takes them (the push waits while more than
1 MiB is queued), so frames/s is the pipe's capacity on this machine; CPU per
media second says what a real hearing of that size costs. Figures are printed;
nothing is asserted (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from media.frame_pipe import FramePipeServer
from protocol.frames import EncodedFrame, FrameSink, SenderReport, TrackInfo
from recorder.frame_pipe import PipeFrameSource
from recorder.recorder import Recorder
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0
SECRET = "bench secret of the frame pipe"
_PUSH_BATCH = 64
_QUEUED_HIGH = 1 << 20

Event = TrackInfo | EncodedFrame | SenderReport


class Counting:
    """A FrameSink that counts what it is handed (the recorder stands behind it in real life)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0
        self.done = asyncio.Event()
        self.expect = 0

    def track_started(self, info: TrackInfo) -> None:
        pass

    def frame(self, frame: EncodedFrame) -> None:
        self.frames += 1
        self.bytes += len(frame.payload)
        if self.frames == self.expect:
            self.done.set()

    def sender_report(self, report: SenderReport) -> None:
        pass

    def track_stopped(self, track_id: str, reason: str) -> None:
        pass


class Replay:
    """A FrameSource standing for the node: it remembers the sink attached to it, the bench pushes into it."""

    def __init__(self) -> None:
        self.sink: FrameSink | None = None
        self.attached = asyncio.Event()
        self.keyframe_requests = 0

    def attach_recorder(self, hearing_id: str, participant_id: str, sink: FrameSink) -> None:
        self.sink = sink
        self.attached.set()

    def detach_recorder(self, hearing_id: str, participant_id: str, reason: str = "detached") -> None:
        self.sink = None

    def request_keyframe(self, hearing_id: str, track_id: str) -> None:
        self.keyframe_requests += 1


def build(seconds: float, n_video: int, n_audio: int) -> tuple[list[TrackInfo], list[Event], int]:
    """Track infos and the arrival-ordered frames and reports of the hearing; and the number of frames."""
    hearing = fx.hearing(participants=4)
    people = [p.id for p in hearing.participants]
    video = fx.encode_video(min(seconds, 10.0), fps=30, width=640, height=480, gop=300)
    audio = fx.encode_audio(min(seconds, 10.0))
    infos = [
        fx.track(hearing.id, f"cam{i}", people[i % len(people)], Source.camera, "video") for i in range(n_video)
    ] + [fx.track(hearing.id, f"mic{i}", people[i % len(people)], Source.microphone, "audio") for i in range(n_audio)]
    streams = []
    for info in infos:
        clip = video if info.kind == "video" else audio
        frames = _looped(clip, info.track_id, seconds)
        reports = fx.sender_reports(info.track_id, info.clock_rate, media_start=T0, seconds=seconds)
        streams.append([(f.arrival, f) for f in frames] + list(reports))
    merged: list[Event] = [event for _, event in fx.merge(*(sorted(s, key=lambda e: e[0]) for s in streams))]
    return infos, merged, sum(isinstance(e, EncodedFrame) for e in merged)


def _looped(clip: fx.EncodedClip, track_id: str, seconds: float) -> list[EncodedFrame]:
    """``seconds`` of frames from a clip of up to 10 s, repeated (encoding a long clip is not what is measured)."""
    out: list[EncodedFrame] = []
    start = T0
    while start < T0 + seconds:
        length = min(clip.duration, T0 + seconds - start)
        out += fx.frames_of(clip, track_id, media_start=start, seconds=length)
        start += clip.duration
    return out


def push(sink: FrameSink, infos: Sequence[TrackInfo], events: Sequence[Event], start: int, end: int) -> None:
    """Hand events[start:end] to the sink as the node does (tracks first when start is 0)."""
    if start == 0:
        for info in infos:
            sink.track_started(info)
    for event in events[start:end]:
        if isinstance(event, EncodedFrame):
            sink.frame(event)
        elif isinstance(event, SenderReport):
            sink.sender_report(event)


def in_process(infos: Sequence[TrackInfo], events: Sequence[Event], n_frames: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, frames) of the direct calls."""
    sink = Counting()
    wall, cpu = time.perf_counter(), time.process_time()
    push(sink, infos, events, 0, len(events))
    return time.perf_counter() - wall, time.process_time() - cpu, sink.frames


async def recording(infos: Sequence[TrackInfo], events: Sequence[Event], n_frames: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the real recorder taking the same frames in process (writer thread included)."""
    with tempfile.TemporaryDirectory() as data:
        recorder = Recorder(Path(data), "bench", segment_seconds=10.0, max_queued_frames=1_000_000)
        session = recorder.start_session(fx.hearing(participants=4), fx.SITES, at=T0)
        await asyncio.wrap_future(recorder.flush())
        wall, cpu = time.perf_counter(), time.process_time()
        push(recorder, infos, events, 0, len(events))
        await asyncio.wrap_future(recorder.flush())
        result = time.perf_counter() - wall, time.process_time() - cpu
        await asyncio.wrap_future(session.seal())
        await recorder.aclose()
    return result


async def over_pipe(infos: Sequence[TrackInfo], events: Sequence[Event], n_frames: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, frames) through FramePipeServer -> TCP -> PipeFrameSource."""
    replay = Replay()
    server = FramePipeServer(replay, "127.0.0.1", 0, secret=SECRET, send_buffer_bytes=64 << 20)
    address = await server.start()

    async def locate(_: str) -> str:
        return address

    source = PipeFrameSource(locate, secret=SECRET, recorder_id="bench")
    counted = Counting()
    counted.expect = n_frames
    source.attach_recorder(infos[0].hearing_id, "recorder", counted)
    await asyncio.wait_for(replay.attached.wait(), 10)
    node_sink = replay.sink
    assert node_sink is not None
    writer = node_sink.writer  # type: ignore[attr-defined]
    writer.transport.set_write_buffer_limits(high=_QUEUED_HIGH)
    wall, cpu = time.perf_counter(), time.process_time()
    pos = 0
    while pos < len(events):
        end = min(len(events), pos + _PUSH_BATCH)
        push(node_sink, infos, events, pos, end)
        pos = end
        await writer.drain()  # back pressure the real node does not apply (it cuts a slow recorder off instead)
        await asyncio.sleep(0)
    await asyncio.wait_for(counted.done.wait(), 120)
    result = time.perf_counter() - wall, time.process_time() - cpu, counted.frames
    await source.close()
    await server.close()
    return result


async def run(seconds: float, n_video: int, n_audio: int) -> None:
    """Build the frames, run both paths, print the figures."""
    infos, events, n_frames = build(seconds, n_video, n_audio)
    payload = sum(len(e.payload) for e in events if isinstance(e, EncodedFrame))
    print(f"cores: {os.cpu_count()}; {n_video} VP8 640x480@30 + {n_audio} Opus tracks x {seconds:.0f} media s")
    print(f"frames: {n_frames} ({payload / n_frames / 1000:.1f} kB average, {payload * 8 / seconds / 1e6:.1f} Mbit/s)")
    in_wall, in_cpu, in_frames = in_process(infos, events, n_frames)
    pipe_wall, pipe_cpu, pipe_frames = await over_pipe(infos, events, n_frames)
    _, rec_cpu = await recording(infos, events, n_frames)
    assert in_frames == pipe_frames == n_frames
    print(f"in-process sink: {n_frames / in_wall:12,.0f} frames/s  {in_cpu / n_frames * 1e6:7.2f} us CPU per frame")
    print(f"frame pipe:      {n_frames / pipe_wall:12,.0f} frames/s  {pipe_cpu / n_frames * 1e6:7.2f} us CPU per frame")
    print(
        f"pipe / in-process: {pipe_cpu / max(in_cpu, 1e-9):.1f}x CPU per frame, "
        f"{(n_frames / in_wall) / (n_frames / pipe_wall):.1f}x fewer frames/s"
    )
    print(
        f"recorder itself (remux, hash, manifest): {rec_cpu / n_frames * 1e6:.2f} us CPU per frame; "
        f"the pipe adds {pipe_cpu / rec_cpu * 100:.0f}% to it"
    )
    per_media_second = pipe_cpu / seconds
    print(
        f"pipe CPU for this hearing live: {per_media_second * 1000:.1f} ms per media second "
        f"({per_media_second * 100:.2f}% of one core, both ends); capacity {seconds / pipe_wall:.0f}x real time"
    )


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--video-tracks", type=int, default=6)
    parser.add_argument("--audio-tracks", type=int, default=6)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args.seconds, args.video_tracks, args.audio_tracks))


if __name__ == "__main__":
    main()
