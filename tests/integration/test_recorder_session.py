"""Recording sessions end to end: real VP8/Opus remuxed by PyAV, read back by ffprobe, verified."""

from __future__ import annotations

import asyncio
import errno
import json
import stat
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from protocol.frames import TrackInfo
from recorder.archive import list_recordings
from recorder.manifest import MANIFEST_NAME, read_lines
from recorder.recorder import Recorder
from recorder.verify import verify_archive
from rooms.audit import chain_next
from rooms.model import Source
from tests import recorder_fixtures as fx

T0 = 1_800_000_000.0
"""Media time 0 of every fixture hearing (Unix seconds; synthetic, never waited for)."""


@pytest.fixture(scope="module")
def video() -> fx.EncodedClip:
    """A 6 s numbered VP8 test card (keyframe every 2 s), looped by the feeds."""
    return fx.encode_video(6.0)


@pytest.fixture(scope="module")
def audio() -> fx.EncodedClip:
    """6 s of Opus sine, looped by the feeds."""
    return fx.encode_audio(6.0)


def entries(session_dir: Path) -> list[dict[str, Any]]:
    """Parsed manifest lines."""
    return [line.entry for line in read_lines(session_dir / MANIFEST_NAME) if line.entry is not None]


def segments_of(session_dir: Path, track: str) -> list[dict[str, Any]]:
    """The manifest's segment lines of one track."""
    return [e for e in entries(session_dir) if e["type"] == "segment" and e["track"] == track]


class Statuses:
    """Collects status callbacks and the thread they arrived on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.threads: set[str] = set()

    def __call__(self, hearing_id: str, status: str, detail: dict[str, Any]) -> None:
        self.seen.append((hearing_id, status))
        self.threads.add(threading.current_thread().name)

    def of(self, hearing_id: str) -> list[str]:
        return [s for h, s in self.seen if h == hearing_id]


async def test_recess_splits_recording_into_verified_segments(
    tmp_path: Path, video: fx.EncodedClip, audio: fx.EncodedClip
) -> None:
    """30 s of 3 tracks with a 6 s recess: per-track segments ffprobe reads, 24 s recorded each, recess gap, valid."""
    statuses = Statuses()
    recorder = Recorder(tmp_path, "rec-a", on_status=statuses)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    feeds = [
        fx.Feed(fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video"), video),
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio),
        fx.Feed(fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video"), video, reports=False),
    ]
    event = chain_next(None, stream=hearing.id, at=fx.hearing().starts_at, actor="p_judge", action="hearing_started")
    fx.feed_hearing(
        recorder,
        feeds,
        media_start=T0,
        seconds=30.0,
        at={
            1.0: lambda: session.record_audit(event, at=T0 + 1),
            12.0: lambda: session.pause("recess", at=T0 + 12),
            18.0: lambda: session.resume(at=T0 + 18),
        },
    )
    seal = await asyncio.wrap_future(session.seal(at=T0 + 30))
    await recorder.aclose()

    assert seal["type"] == "seal"
    lines = entries(session.path)
    assert lines[0]["hearing"]["case_number"] == hearing.case_number
    assert {(p["role"], p["site"]) for p in lines[0]["participants"]} >= {("defendant", "No. 1 Detention Center")}
    gaps = [e for e in lines if e["type"] == "gap"]
    assert [(g["reason"], g["start"], g["end"]) for g in gaps] == [("recess", T0 + 12, T0 + 18)]
    assert any(e["type"] == "audit" and e["event"]["action"] == "hearing_started" for e in lines)

    for feed in feeds:
        track = feed.info.track_id
        segs = segments_of(session.path, track)
        assert len(segs) >= 3, f"{track} should be cut into several segments"
        frame = 0.02 if feed.info.kind == "audio" else 1 / 15
        probed_total = 0.0
        for seg in segs:
            info = fx.probe(session.path / seg["file"])
            assert info["streams"][0]["codec_name"] == feed.info.codec.lower()
            probed_total += fx.probed_duration(info, frame)
            # 0.1 s slack: the track without sender reports is timed by arrival (40 ms network delay).
            assert seg["end"] <= T0 + 12.1 or seg["start"] >= T0 + 17.9, "nothing is recorded during the recess"
        manifest_total = sum(s["end"] - s["start"] for s in segs)
        assert probed_total == pytest.approx(24.0, abs=0.5), track
        assert manifest_total == pytest.approx(24.0, abs=0.5), track
    # The track without sender reports says its times come from arrival; the others switch to reports.
    assert {s["clock"] for s in segments_of(session.path, "def_cam")} == {"arrival"}
    assert segments_of(session.path, "judge_mic")[-1]["clock"] == "sender_report"

    result = verify_archive(session.path)
    assert result.ok, result.summary()
    assert result.segments == sum(len(segments_of(session.path, f.info.track_id)) for f in feeds)
    assert statuses.of(hearing.id)[-1] == "sealed"
    assert "recording" in statuses.of(hearing.id)
    assert "stopped" in statuses.of(hearing.id)
    assert statuses.threads == {threading.current_thread().name}, "status callbacks arrive on the event loop"


async def test_consultation_is_never_recorded(tmp_path: Path, video: fx.EncodedClip, audio: fx.EncodedClip) -> None:
    """A defendant-counsel consultation leaves a consultation_excluded gap per track and no segment inside it."""
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    mic = fx.track(hearing.id, "def_mic", "p_def", Source.microphone, "audio")
    cam = fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video")
    judge = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")

    def consult() -> None:
        recorder.track_stopped("def_mic", "consultation")
        recorder.track_stopped("def_cam", "consultation")

    def back() -> None:
        recorder.track_started(mic)
        recorder.track_started(cam)

    fx.feed_hearing(
        recorder,
        [fx.Feed(mic, audio), fx.Feed(cam, video), fx.Feed(judge, audio)],
        media_start=T0,
        seconds=20.0,
        at={8.0: consult, 14.0: back},
    )
    await asyncio.wrap_future(session.seal(at=T0 + 20))
    await recorder.aclose()

    gaps = [e for e in entries(session.path) if e["type"] == "gap"]
    assert {g["track"] for g in gaps} == {"def_mic", "def_cam"}
    assert {g["reason"] for g in gaps} == {"consultation_excluded"}
    for gap in gaps:
        assert gap["start"] == pytest.approx(T0 + 8, abs=0.1)
        assert gap["end"] == pytest.approx(T0 + 14, abs=0.1)
        for seg in segments_of(session.path, gap["track"]):
            assert seg["end"] <= gap["start"] + 0.1 or seg["start"] >= gap["end"] - 0.1
    judge_time = sum(s["end"] - s["start"] for s in segments_of(session.path, "judge_mic"))
    assert judge_time == pytest.approx(20.0, abs=0.5), "the rest of the hearing is recorded throughout"
    assert verify_archive(session.path).ok


class _StalledDisk:
    """A segment file whose writes wait until the test lets them through (a stalled disk)."""

    def __init__(self, raw: BinaryIO, gate: threading.Event) -> None:
        self._raw = raw
        self._gate = gate

    def write(self, data: bytes | memoryview, /) -> int | None:
        self._gate.wait(30)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


async def test_stalled_disk_drops_frames_into_a_disk_gap_without_blocking(
    tmp_path: Path, audio: fx.EncodedClip
) -> None:
    """With the writer stuck, frames are refused at once, the judge hears 'degraded', and a disk gap is logged."""
    statuses = Statuses()
    gate = threading.Event()
    recorder = Recorder(
        tmp_path,
        "rec-a",
        max_queued_frames=16,
        on_status=statuses,
        opener=lambda path: _StalledDisk(path.open("xb", buffering=0), gate),
    )
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(recorder, [fx.Feed(mic, audio)], media_start=T0, seconds=6.0)
    assert recorder.dropped_frames > 0
    await asyncio.sleep(0)  # let call_soon callbacks run
    assert "degraded" in statuses.of(hearing.id)
    gate.set()
    await asyncio.wrap_future(recorder.flush())
    later = [f for f in fx.frames_of(audio, "judge_mic", media_start=T0, seconds=12.0) if f.arrival >= T0 + 6.04]
    for i, frame in enumerate(later):
        recorder.frame(frame)
        if i % 8 == 7:  # a healthy disk keeps up with real time; this feed is far faster than that
            await asyncio.wrap_future(recorder.flush())
    await asyncio.wrap_future(session.seal(at=T0 + 12))
    await recorder.aclose()

    gaps = [e for e in entries(session.path) if e["type"] == "gap"]
    # Thread scheduling decides whether the queue also overflowed once before the writer stalled.
    assert gaps
    assert {g["reason"] for g in gaps} == {"disk"}
    assert {g["track"] for g in gaps} == {"judge_mic"}
    assert gaps[-1]["end"] == pytest.approx(T0 + 6.0, abs=0.1)
    seen = statuses.of(hearing.id)
    assert seen.index("recording", seen.index("degraded")) < seen.index("sealed"), "recovery is announced"
    assert verify_archive(session.path).ok


class _FullDisk:
    """A file on a disk that fills up after ``room`` bytes (ENOSPC), once."""

    def __init__(self, raw: BinaryIO, room: list[int]) -> None:
        self._raw = raw
        self._room = room

    def write(self, data: bytes | memoryview, /) -> int | None:
        if self._room[0] >= 0 and len(data) > self._room[0]:
            self._room[0] = -1  # the disk is freed again right after the failure
            raise OSError(errno.ENOSPC, "No space left on device")
        if self._room[0] >= 0:
            self._room[0] -= len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


async def test_full_disk_abandons_the_segment_and_logs_a_disk_gap(tmp_path: Path, audio: fx.EncodedClip) -> None:
    """ENOSPC mid-segment: the half-written file goes, a disk gap covers it, recording resumes, archive valid."""
    statuses = Statuses()
    room = [20_000]
    recorder = Recorder(
        tmp_path,
        "rec-a",
        segment_seconds=4.0,
        on_status=statuses,
        opener=lambda path: _FullDisk(path.open("xb", buffering=0), room),
    )
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(recorder, [fx.Feed(mic, audio)], media_start=T0, seconds=12.0)
    await asyncio.wrap_future(session.seal(at=T0 + 12))
    await recorder.aclose()

    gaps = [e for e in entries(session.path) if e["type"] == "gap"]
    assert [g["reason"] for g in gaps] == ["disk"]
    assert gaps[0]["start"] == pytest.approx(T0, abs=0.1), "the lost segment's whole span is the gap"
    assert segments_of(session.path, "judge_mic"), "recording resumed after the failure"
    assert "degraded" in statuses.of(hearing.id)
    assert verify_archive(session.path).ok


async def test_two_recorders_record_the_same_hearing_independently(tmp_path: Path, audio: fx.EncodedClip) -> None:
    """Two recorders of one hearing write apart, sign with their own keys, and both archives verify."""
    hearing = fx.hearing()
    recorders = [Recorder(tmp_path, rid) for rid in ("rec-a", "rec-b")]
    sessions = [r.start_session(hearing, fx.SITES, at=T0) for r in recorders]
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    for recorder in recorders:
        fx.feed_hearing(recorder, [fx.Feed(mic, audio)], media_start=T0, seconds=5.0)
    seals = [await asyncio.wrap_future(s.seal(at=T0 + 5)) for s in sessions]
    for recorder in recorders:
        await recorder.aclose()

    assert sessions[0].path != sessions[1].path
    assert seals[0]["key_id"] != seals[1]["key_id"]
    listed = await asyncio.to_thread(list_recordings, tmp_path, hearing.id)
    assert sorted((r["recorder_id"], r["state"], r["verification"]["status"]) for r in listed) == [
        ("rec-a", "sealed", "valid"),
        ("rec-b", "sealed", "valid"),
    ]
    keys = recorders[0].public_keys()
    assert {k["key_id"] for k in keys} == {s["key_id"] for s in seals}
    for path in (tmp_path / "recorder" / "keys").glob("*.ed25519.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600  # private keys; the public records are 0644
    trusted = [k["public_key"] for k in keys]
    assert all(verify_archive(s.path, trusted_keys=trusted).key_trusted for s in sessions)


async def test_listing_shows_a_live_session_as_recording(tmp_path: Path, audio: fx.EncodedClip) -> None:
    """While a recorder holds a session it is listed as 'recording', without verification."""
    recorder = Recorder(tmp_path, "rec-a")
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    mic = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    fx.feed_hearing(recorder, [fx.Feed(mic, audio)], media_start=T0, seconds=2.0)
    await asyncio.wrap_future(recorder.flush())
    listed = await asyncio.to_thread(list_recordings, tmp_path, hearing.id)
    assert [(r["state"], r["verification"]) for r in listed] == [("recording", None)]
    await asyncio.wrap_future(session.seal(at=T0 + 2))
    await recorder.aclose()
    listed = await asyncio.to_thread(list_recordings, tmp_path, hearing.id)
    assert [r["state"] for r in listed] == ["sealed"]
    assert json.dumps(listed)  # the API can serve it as is


async def test_h264_is_archived_in_matroska(tmp_path: Path) -> None:
    """An H.264 track is remuxed into .mkv segments ffprobe reads with the sender's (cropped) picture size."""
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=2.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    info = TrackInfo(hearing.id, "judge_cam", "p_judge", Source.camera, "video", "H264", fx.VIDEO_RATE)
    fx.feed_hearing(recorder, [fx.Feed(info, fx.encode_h264(4.0))], media_start=T0, seconds=4.0)
    await asyncio.wrap_future(session.seal(at=T0 + 4))
    await recorder.aclose()

    segs = segments_of(session.path, "judge_cam")
    assert len(segs) == 2
    for seg in segs:
        assert seg["file"].endswith(".mkv")
        stream = fx.probe(session.path / seg["file"])["streams"][0]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    assert verify_archive(session.path).ok


async def test_a_new_picture_size_starts_a_new_segment_at_its_keyframe(tmp_path: Path) -> None:
    """A camera that changes size mid-segment (a simulcast layer switch) is cut at the new size's keyframe: each
    segment's header gives the size of its pictures, the two meet without a gap, and the archive verifies."""
    small, large = fx.encode_video(4.0, width=320, height=240), fx.encode_video(4.0)
    switch = 3 * fx.VIDEO_RATE
    assert large.payloads[0][2]  # the large clip starts on a keyframe
    payloads = tuple(p for p in small.payloads if p[1] < switch)
    payloads += tuple((data, ticks + switch, key) for data, ticks, key in large.payloads)
    clip = fx.EncodedClip(payloads, fx.VIDEO_RATE, 7.0)
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=30.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    info = fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video")
    fx.feed_hearing(recorder, [fx.Feed(info, clip)], media_start=T0, seconds=7.0)
    await asyncio.wrap_future(session.seal(at=T0 + 7))
    await recorder.aclose()

    segs = segments_of(session.path, "judge_cam")
    sizes = []
    for seg in segs:
        stream = fx.probe(session.path / seg["file"])["streams"][0]
        sizes.append((stream["width"], stream["height"]))
    assert sizes == [(320, 240), (640, 480)]
    assert not [e for e in entries(session.path) if e["type"] == "gap" and e.get("track") == "judge_cam"]
    assert verify_archive(session.path).ok


async def test_unarchivable_codec_is_declared_not_recorded(tmp_path: Path, video: fx.EncodedClip) -> None:
    """A track in a codec that would need transcoding is named in the manifest as not archived; the rest records."""
    recorder = Recorder(tmp_path, "rec-a")
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    odd = TrackInfo(hearing.id, "odd_cam", "p_def", Source.camera, "video", "VP9", fx.VIDEO_RATE)
    cam = fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video")
    fx.feed_hearing(recorder, [fx.Feed(odd, video), fx.Feed(cam, video)], media_start=T0, seconds=3.0)
    await asyncio.wrap_future(session.seal(at=T0 + 3))
    await recorder.aclose()

    tracks = {e["track"]: e for e in entries(session.path) if e["type"] == "track"}
    assert tracks["odd_cam"]["archived"] is False
    assert "VP9" in tracks["odd_cam"]["detail"]
    assert not segments_of(session.path, "odd_cam")
    assert segments_of(session.path, "judge_cam")
    assert verify_archive(session.path).ok


async def test_lost_track_gap_and_tracks_announced_before_the_session(tmp_path: Path, audio: fx.EncodedClip) -> None:
    """A track announced before recording starts is recorded; one that fails leaves a track_lost gap to the end."""
    recorder = Recorder(tmp_path, "rec-a")
    hearing = fx.hearing()
    early = fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio")
    recorder.track_started(early)  # the media node forwards before the judge opens the session
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    fx.feed_hearing(
        recorder,
        [fx.Feed(early, audio)],
        media_start=T0,
        seconds=10.0,
        at={6.0: lambda: recorder.track_stopped("judge_mic", "ice_failed")},
    )
    await asyncio.wrap_future(session.seal(at=T0 + 10))
    await recorder.aclose()

    gaps = [e for e in entries(session.path) if e["type"] == "gap"]
    assert [(g["reason"], g["track"], g["detail"]) for g in gaps] == [("track_lost", "judge_mic", "ice_failed")]
    assert gaps[0]["start"] == pytest.approx(T0 + 6.0, abs=0.1)
    assert gaps[0]["end"] == T0 + 10
    assert sum(s["end"] - s["start"] for s in segments_of(session.path, "judge_mic")) == pytest.approx(6.0, abs=0.1)


async def test_sender_with_a_wrong_clock_still_lines_up(
    tmp_path: Path, video: fx.EncodedClip, audio: fx.EncodedClip
) -> None:
    """A browser whose clock is 5 s slow: its camera and microphone stay together and line up with the judge."""
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    feeds = [
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio),
        fx.Feed(fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video"), video, clock_skew=-5.0),
        fx.Feed(fx.track(hearing.id, "def_mic", "p_def", Source.microphone, "audio"), audio, clock_skew=-5.0),
    ]
    fx.feed_hearing(recorder, feeds, media_start=T0, seconds=12.0)
    await asyncio.wrap_future(session.seal(at=T0 + 12))
    await recorder.aclose()

    def starts(track: str) -> list[float]:
        return [s["start"] for s in segments_of(session.path, track) if s["clock"] == "sender_report"]

    for track in ("def_cam", "def_mic"):
        assert starts(track)
        for start in starts(track):
            assert start - T0 == pytest.approx(round(start - T0), abs=0.1), f"{track} lands on the judge's timeline"
    assert starts("def_cam")[-1] == pytest.approx(starts("def_mic")[-1], abs=0.05)


async def test_excluded_participant_is_never_recorded_even_if_media_flows(
    tmp_path: Path, video: fx.EncodedClip, audio: fx.EncodedClip
) -> None:
    """exclude() during a consultation drops the participant's frames still arriving and logs one gap for them."""
    recorder = Recorder(tmp_path, "rec-a", segment_seconds=4.0)
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    feeds = [
        fx.Feed(fx.track(hearing.id, "def_mic", "p_def", Source.microphone, "audio"), audio),
        fx.Feed(fx.track(hearing.id, "def_cam", "p_def", Source.camera, "video"), video),
        fx.Feed(fx.track(hearing.id, "judge_mic", "p_judge", Source.microphone, "audio"), audio),
    ]
    fx.feed_hearing(
        recorder,
        feeds,
        media_start=T0,
        seconds=12.0,
        at={
            4.0: lambda: session.exclude("p_def", at=T0 + 4),
            8.0: lambda: session.include("p_def", at=T0 + 8),
        },
    )
    await asyncio.wrap_future(session.seal(at=T0 + 12))
    await recorder.aclose()

    gaps = [e for e in entries(session.path) if e["type"] == "gap"]
    assert [(g["reason"], g["participant"], g["start"], g["end"]) for g in gaps] == [
        ("consultation_excluded", "p_def", T0 + 4, T0 + 8)
    ]
    for track in ("def_mic", "def_cam"):
        for seg in segments_of(session.path, track):
            assert seg["end"] <= T0 + 4.1 or seg["start"] >= T0 + 7.9, f"{track} has nothing from the consultation"
        covered = sum(s["end"] - s["start"] for s in segments_of(session.path, track))
        assert covered == pytest.approx(8.0, abs=0.3)
    assert verify_archive(session.path).ok


async def test_video_joined_mid_gop_asks_for_a_keyframe_once(tmp_path: Path, video: fx.EncodedClip) -> None:
    """Video that starts between keyframes: one keyframe request (on the loop), recording from the next keyframe."""
    asked: list[tuple[str, str]] = []
    recorder = Recorder(tmp_path, "rec-a", on_keyframe_needed=lambda h, t: asked.append((h, t)))
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    cam = fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video")
    recorder.track_started(cam)
    frames = fx.frames_of(video, "judge_cam", media_start=T0, seconds=6.0)[5:]  # from 1/3 s in: no keyframe yet
    assert not frames[0].keyframe
    for frame in frames:
        recorder.frame(frame)
    await asyncio.wrap_future(session.seal(at=T0 + 6))
    await recorder.aclose()
    await asyncio.sleep(0)

    assert asked == [(hearing.id, "judge_cam")]
    first = segments_of(session.path, "judge_cam")[0]
    assert first["start"] == pytest.approx(T0 + 2.0 + 0.04, abs=0.01), "starts at the next keyframe (2 s)"


async def _record_camera(tmp_path: Path, video: fx.EncodedClip, segment_seconds: float) -> tuple[list[float], int]:
    """Record 6 s of the clip (a keyframe every 2 s) as the judge's camera: the segments' starts (from T0), and how
    many keyframes the recorder asked for."""
    asked: list[tuple[str, str]] = []
    recorder = Recorder(
        tmp_path, "rec-a", segment_seconds=segment_seconds, on_keyframe_needed=lambda h, t: asked.append((h, t))
    )
    hearing = fx.hearing()
    session = recorder.start_session(hearing, fx.SITES, at=T0)
    cam = fx.track(hearing.id, "judge_cam", "p_judge", Source.camera, "video")
    recorder.track_started(cam)
    for frame in fx.frames_of(video, "judge_cam", media_start=T0, seconds=6.0):
        recorder.frame(frame)
    await asyncio.wrap_future(session.seal(at=T0 + 6))
    await recorder.aclose()
    await asyncio.sleep(0)
    assert set(asked) <= {(hearing.id, "judge_cam")}
    return [seg["start"] - T0 for seg in segments_of(session.path, "judge_cam")], len(asked)


async def test_a_due_video_segment_asks_for_the_keyframe_that_cuts_it(tmp_path: Path, video: fx.EncodedClip) -> None:
    """Video segments end on keyframes, which the recorder asks for once a cut is due (again after a second) and
    none came in the segment's last stretch (CUT_EARLY_SHARE of 3.5 s: from 2.45 s)."""
    starts, asked = await _record_camera(tmp_path, video, 3.5)
    # Keyframes come every 2 s: the one at 2 s is too early, the cut is due at 3.4 s, asked for then, made on the
    # 4 s keyframe (before the second ask at 4.4 s).
    assert asked == 1
    assert starts[1] == pytest.approx(4.0 + 0.04, abs=0.05)


async def test_a_keyframe_near_a_segments_end_cuts_it_without_asking(tmp_path: Path, video: fx.EncodedClip) -> None:
    """A keyframe that comes in a video segment's last stretch (a subscriber's, a layer switch's) cuts it: the
    recorder asks the publisher for none (each costs every subscriber a keyframe's burst)."""
    starts, asked = await _record_camera(tmp_path, video, 2.5)
    # The cut window of 2.5 s segments opens at 1.75 s: the keyframes at 2 s and 4 s cut them, nothing is asked.
    assert asked == 0
    assert starts[1:] == [pytest.approx(2.0 + 0.04, abs=0.05), pytest.approx(4.0 + 0.04, abs=0.05)]
