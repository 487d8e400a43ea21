"""Where the recorder places media on the hearing's timeline: segment spans that never run backwards, no drift."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from protocol.frames import SenderReport
from recorder.manifest import MANIFEST_NAME, read_lines
from recorder.recorder import Recorder
from recorder.timeline import TrackClock
from recorder.writer import span_problem
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0


def entries(session_dir: Path) -> list[dict[str, Any]]:
    """Parsed manifest lines."""
    return [line.entry for line in read_lines(session_dir / MANIFEST_NAME) if line.entry is not None]


async def test_restarted_track_with_a_new_rtp_base_is_placed_where_it_was_captured(tmp_path: Path) -> None:
    """A camera that comes back on a new peer (new RTP base) gets segments at its capture time, never end < start."""
    video = fx.encode_video(4.0, gop=15, width=160, height=120)
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=2.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    cam = fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video")
    events: list[tuple[float, Any]] = []
    # First peer: 4 s of media with sender reports.
    first = fx.frames_of(video, cam.track_id, media_start=T0, seconds=4.0)
    events += [(f.arrival, f) for f in first]
    events += fx.sender_reports(cam.track_id, cam.clock_rate, media_start=T0, seconds=4.0)
    # Second peer from media second 6: a new random RTP base, hours off the first peer's mapping.
    second_start = T0 + 6.0
    base = (fx.NEAR_WRAP + 1_234_567_891) % (1 << 32)
    second = fx.frames_of(video, cam.track_id, media_start=second_start, seconds=1.5, rtp_start=base)
    events += [(f.arrival, f) for f in second]
    events += fx.sender_reports(
        cam.track_id, cam.clock_rate, media_start=second_start, seconds=1.5, rtp_start=base, first=0.5
    )
    events.sort(key=lambda e: e[0])
    recorder.track_started(cam)
    restarted = False
    for arrival, item in events:
        if not restarted and arrival >= second_start:
            recorder.track_stopped(cam.track_id, "left")
            recorder.track_started(cam)
            restarted = True
        if isinstance(item, SenderReport):
            recorder.sender_report(item)
        else:
            recorder.frame(item)
    recorder.track_stopped(cam.track_id, "left")
    await asyncio.wrap_future(session.seal(at=T0 + 8))
    await recorder.aclose()

    segments = [e for e in entries(session.path) if e["type"] == "segment"]
    assert segments, "the camera was recorded"
    for seg in segments:
        assert seg["end"] >= seg["start"], seg
    late = [s for s in segments if s["start"] > T0 + 5]
    assert late, segments
    # Captured from media second 6 on (40 ms network delay): placed there, not hours off.
    assert late[0]["start"] == pytest.approx(second_start + 0.04, abs=0.1), late[0]
    assert all(s["end"] <= T0 + 7.7 for s in segments), segments


def test_a_late_sender_report_does_not_move_the_track() -> None:
    """A sender report stamped late by a loaded sender moves the mapping by at most a few ms; an early one wins."""
    clock = TrackClock(90_000)
    clock.sender_report(T0, 1000)
    assert clock.wall(1000 + 90_000, T0) == pytest.approx(T0 + 1.0)
    clock.sender_report(T0 + 2.0 + 0.37, 1000 + 2 * 90_000)  # stamped 0.37 s late
    assert clock.wall(1000 + 3 * 90_000, T0) == pytest.approx(T0 + 3.0, abs=0.005)
    clock.sender_report(T0 + 3.99, 1000 + 4 * 90_000)  # 10 ms early: truer
    assert clock.wall(1000 + 4 * 90_000, T0) == pytest.approx(T0 + 3.99)
    clock.sender_report(T0 + 60.0, 1000 + 5 * 90_000)  # a new clock
    assert clock.wall(1000 + 5 * 90_000, T0) == pytest.approx(T0 + 60.0)


def test_manifest_span_invariant() -> None:
    """The writer's invariant check names a segment or gap line that ends before it starts."""
    assert span_problem({"type": "segment", "start": 10.0, "end": 8.9}) is not None
    assert span_problem({"type": "gap", "start": 10.0, "end": 10.0}) is None
    assert span_problem({"type": "audit", "at": 1.0}) is None


async def test_consultation_media_arriving_late_is_never_recorded(tmp_path: Path) -> None:
    """Frames captured in a consultation but delivered seconds after it ended (a loaded node) are not recorded."""
    video, audio = fx.encode_video(4.0, gop=15, width=160, height=120), fx.encode_audio(4.0)
    recorder, session, cam, mic = fx.defendant_session(tmp_path, segment_seconds=2.0, at=T0)
    events: list[tuple[float, Any]] = []
    for info, clip in ((cam, video), (mic, audio)):
        for f in fx.frames_of(clip, info.track_id, media_start=T0, seconds=14.0):
            captured = f.arrival - 0.04 - T0
            if 6.5 <= captured < 8.0:
                # Held in a busy node's queue: delivered 1.5 s after the consultation ended.
                f = replace(f, arrival=T0 + 9.5 + captured / 1000)
            events.append((f.arrival, f))
        events += fx.sender_reports(info.track_id, info.clock_rate, media_start=T0, seconds=14.0)
    events.sort(key=lambda e: e[0])
    for info in (cam, mic):
        recorder.track_started(info)
    actions = [
        (T0 + 4.0, lambda: session.exclude("p_def", at=T0 + 4.0)),
        (T0 + 8.0, lambda: session.include("p_def", at=T0 + 8.0)),
    ]
    for arrival, item in events:
        while actions and arrival >= actions[0][0]:
            actions.pop(0)[1]()
        if isinstance(item, SenderReport):
            recorder.sender_report(item)
        else:
            recorder.frame(item)
    await asyncio.wrap_future(session.seal(at=T0 + 14))
    await recorder.aclose()

    lines = entries(session.path)
    for seg in (e for e in lines if e["type"] == "segment"):
        # Nothing captured inside [4, 8) is in the archive (a segment ends at its last frame plus one frame).
        assert seg["end"] <= T0 + 4.0 + 0.07 or seg["start"] >= T0 + 8.0, seg
    gaps = [(g["reason"], g["participant"], g["start"], g["end"]) for g in lines if g["type"] == "gap"]
    assert ("consultation_excluded", "p_def", T0 + 4.0, T0 + 8.0) in gaps
