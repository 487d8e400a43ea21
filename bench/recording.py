"""Recorder benchmarks: remux CPU per track-second against a transcoding baseline, and render speed.

Run: ``.venv/bin/python -m bench.recording [--seconds 60] [--video-tracks 4] [--audio-tracks 4]``

1. Recording: synthetic VP8 (640x480, 15 fps) and Opus tracks go through the
   real recorder (tap calls, queue, writer thread, PyAV remux into WebM,
   SHA-256 at capture, manifest); CPU time of the whole process per track and
   per media second. Goal: <= 1 ms.
2. Baseline, same run: what transcoding would cost instead: decode the same
   VP8 frames and re-encode them with libvpx (realtime, fastest settings).
3. Rendering: a sealed session with 4 parties (camera + microphone each) to a
   1280x720 H.264/AAC MP4; speed as a multiple of real time (wall clock) and
   CPU seconds per media second. Goal: >= 4x real time on 2 cores.

Figures are printed; nothing is asserted (benchmarks are not tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import structlog

from protocol.frames import EncodedFrame
from recorder.recorder import Recorder
from recorder.render import render_archive
from recorder.verify import verify_archive
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0


def _record(
    data: Path, video: fx.EncodedClip, audio: fx.EncodedClip, seconds: float, n_video: int, n_audio: int
) -> tuple[float, Path]:
    """Record ``seconds`` of the given tracks; returns (process CPU seconds, session directory)."""
    hearing = fx.hearing(participants=4)
    people = [p.id for p in hearing.participants]
    feeds = [
        fx.Feed(fx.track(hearing.id, f"cam{i}", people[i % len(people)], Source.camera, "video"), video)
        for i in range(n_video)
    ] + [
        fx.Feed(fx.track(hearing.id, f"mic{i}", people[i % len(people)], Source.microphone, "audio"), audio)
        for i in range(n_audio)
    ]
    recorder = Recorder(data, "bench", segment_seconds=10.0, max_queued_frames=1_000_000)
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    # Build the frames before timing: they stand for what the media node hands over.
    events = fx.merge(
        *(fx.timed(fx.frames_of(f.clip, f.info.track_id, media_start=T0, seconds=seconds)) for f in feeds)
    )
    frames = [frame for _, frame in events if isinstance(frame, EncodedFrame)]
    for feed in feeds:
        recorder.track_started(feed.info)
    recorder.flush().result(60)
    cpu = time.process_time()
    for frame in frames:
        recorder.frame(frame)
    session.seal(at=T0 + seconds).result(600)
    cpu = time.process_time() - cpu
    recorder.close()
    return cpu, session.path


def _transcode(video: fx.EncodedClip, seconds: float) -> float:
    """CPU seconds to decode and re-encode ``seconds`` of the VP8 clip (one track)."""
    dec = av.CodecContext.create("vp8", "r")
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 640, 480, "yuv420p"
    enc.time_base = Fraction(1, fx.VIDEO_RATE)
    enc.framerate = Fraction(15, 1)
    enc.bit_rate = 400_000
    enc.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}
    frames = fx.frames_of(video, "t", media_start=T0, seconds=seconds)
    cpu = time.process_time()
    for f in frames:
        for decoded in dec.decode(av.Packet(f.payload)):
            decoded.pts = f.rtp_timestamp - frames[0].rtp_timestamp
            enc.encode(decoded)
    enc.encode(None)
    return time.process_time() - cpu


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="media seconds recorded per track")
    parser.add_argument("--video-tracks", type=int, default=4)
    parser.add_argument("--audio-tracks", type=int, default=4)
    parser.add_argument("--render-seconds", type=float, default=20.0)
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}, PyAV {av.__version__}")
    video, audio = fx.encode_video(4.0), fx.encode_audio(4.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_v, n_a, secs = args.video_tracks, args.audio_tracks, args.seconds
        cpu_v, _ = _record(root / "v", video, audio, secs, n_v, 0)
        cpu_a, _ = _record(root / "a", video, audio, secs, 0, n_a)
        per_v = cpu_v / (n_v * secs) * 1000
        per_a = cpu_a / (n_a * secs) * 1000
        print(f"record  VP8 640x480@15 ~400 kbit/s: {per_v:.3f} ms CPU per track-second ({n_v} tracks x {secs:.0f} s)")
        print(f"record  Opus 20 ms packets:        {per_a:.3f} ms CPU per track-second ({n_a} tracks x {secs:.0f} s)")
        base_secs = min(secs, 20.0)
        per_t = _transcode(video, base_secs) / base_secs * 1000
        print(f"baseline transcode VP8->VP8:       {per_t:.3f} ms CPU per track-second")
        print(f"remux / transcode:                 {per_v / per_t:.4f} (remux costs {per_t / per_v:.0f}x less)")
        goal = "met" if max(per_v, per_a) <= 1.0 else "NOT met"
        print(f"goal <= 1 ms CPU per track-second: {goal}")

        _, session = _record(root / "r", video, audio, args.render_seconds, 4, 4)
        assert verify_archive(session).ok
        wall, cpu = time.perf_counter(), time.process_time()
        result = render_archive(session, root / "render.mp4", width=1280, height=720, fps=15)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"render 4 parties -> 1280x720@15 H.264/AAC: {result.duration / wall:.2f}x real time "
            f"(wall {wall:.1f} s, CPU {cpu:.1f} s for {result.duration:.1f} s; "
            f"{cpu / result.duration:.2f} CPU s per media s)"
        )
        print(f"goal >= 4x real time: {'met' if result.duration / wall >= 4 else 'NOT met'}")


if __name__ == "__main__":
    # Figures only: the recorder's and stores' per-event logs would drown them.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
