"""Synthetic encoded media for recorder tests: real VP8 and Opus from PyAV, wrapped as the media node's tap types.

Video is a colour-bar test card with the frame number painted large (so a
decoded frame says where it came from), encoded with libvpx, a keyframe every
``gop`` frames. Audio is a sine encoded with libopus in 20 ms packets. RTP
timestamps run on 90 kHz / 48 kHz clocks from a start near 2**32 (so they
cross the wrap, unwrapped, as the media node delivers them); arrival times
are synthetic (media time plus a network delay), never slept for.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from protocol.frames import EncodedFrame, FrameSink, SenderReport, TrackInfo
from protocol.node import MediaKind
from recorder.recorder import Recorder, RecordingSession
from rooms.model import Hearing, HearingKind, Participant, Role, Source, identity_of

VIDEO_RATE = 90_000
AUDIO_RATE = 48_000
NEAR_WRAP = (1 << 32) - 5 * VIDEO_RATE
"""An RTP start that wraps 5 s into the stream."""


@dataclass(frozen=True)
class EncodedClip:
    """Encoded payloads with their offsets in clock ticks from the clip's start."""

    payloads: tuple[tuple[bytes, int, bool], ...]
    """(payload, ticks since start, keyframe)."""
    clock_rate: int
    duration: float
    """Media seconds covered (the last frame included)."""


def encode_video(seconds: float, *, fps: int = 15, width: int = 640, height: int = 480, gop: int = 30) -> EncodedClip:
    """VP8 frames of a numbered test card; a keyframe every ``gop`` frames."""
    bars = np.zeros((height, width, 3), np.uint8)
    colours = [(235, 235, 235), (235, 235, 16), (16, 235, 235), (16, 235, 16), (235, 16, 235), (235, 16, 16)]
    for i, colour in enumerate(colours):
        bars[:, i * width // len(colours) : (i + 1) * width // len(colours)] = colour
    font = ImageFont.load_default(size=max(16, height // 7))
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, VIDEO_RATE)
    enc.framerate = Fraction(fps, 1)
    enc.bit_rate = 400_000
    enc.gop_size = gop
    enc.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0", "keyint_min": str(gop)}
    step = VIDEO_RATE // fps
    out: list[tuple[bytes, int, bool]] = []
    count = round(seconds * fps)
    for i in range(count):
        img = Image.fromarray(bars)
        draw = ImageDraw.Draw(img)
        draw.rectangle((width // 4, height // 3, 3 * width // 4, 2 * height // 3), fill=(0, 0, 0))
        draw.text((width // 4 + 10, height // 3 + 10), f"{i:05d}", font=font, fill=(255, 255, 255))
        frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24").reformat(format="yuv420p")
        frame.pts = i * step
        # Force the keyframe cadence: the recorder cuts segments (and resumes after recess) on these.
        frame.pict_type = av.video.frame.PictureType.I if i % gop == 0 else av.video.frame.PictureType.NONE
        for packet in enc.encode(frame):
            out.append((bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe)))
    for packet in enc.encode(None):
        out.append((bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe)))
    return EncodedClip(tuple(out), VIDEO_RATE, count / fps)


def encode_h264(seconds: float, *, fps: int = 15, width: int = 640, height: int = 360, gop: int = 30) -> EncodedClip:
    """H.264 (Annex B, baseline-like, as WebRTC sends it) of a moving grey ramp; a keyframe every ``gop`` frames."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, VIDEO_RATE)
    enc.framerate = Fraction(fps, 1)
    enc.gop_size = gop
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "keyint_min": str(gop), "bframes": "0"}
    step = VIDEO_RATE // fps
    ramp = np.tile(np.arange(width, dtype=np.uint16), (height, 1))
    out: list[tuple[bytes, int, bool]] = []
    count = round(seconds * fps)
    for i in range(count):
        grey = ((ramp + i * 8) % 256).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(np.stack([grey] * 3, axis=-1), format="rgb24").reformat(format="yuv420p")
        frame.pts = i * step
        for packet in enc.encode(frame):
            out.append((bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe)))
    for packet in enc.encode(None):
        out.append((bytes(packet), int(packet.pts or 0), bool(packet.is_keyframe)))
    return EncodedClip(tuple(out), VIDEO_RATE, count / fps)


def encode_audio(seconds: float, *, freq: float = 440.0) -> EncodedClip:
    """Opus packets (20 ms, stereo) of a sine."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = AUDIO_RATE
    enc.layout = "stereo"
    enc.format = "s16"
    enc.bit_rate = 32_000
    enc.time_base = Fraction(1, AUDIO_RATE)
    payloads: list[bytes] = []
    count = round(seconds * 50)
    for i in range(count):
        t = np.arange(960) + i * 960
        tone = (np.sin(2 * np.pi * freq * t / AUDIO_RATE) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = i * 960
        payloads.extend(bytes(p) for p in enc.encode(frame))
    payloads.extend(bytes(p) for p in enc.encode(None))
    payloads = payloads[:count]
    # In RTP terms Opus packets are 20 ms apart from 0, whatever the encoder's pre-skip says.
    return EncodedClip(tuple((p, i * 960, True) for i, p in enumerate(payloads)), AUDIO_RATE, len(payloads) / 50)


def frames_of(
    clip: EncodedClip,
    track_id: str,
    *,
    media_start: float,
    rtp_start: int = NEAR_WRAP,
    delay: float = 0.04,
    seconds: float | None = None,
) -> list[EncodedFrame]:
    """The clip as tap frames of ``track_id``: media time 0 at Unix ``media_start``, arriving ``delay`` later.

    ``seconds`` loops the clip (it must start with a keyframe) to cover a longer stretch.
    """
    total = clip.duration if seconds is None else seconds
    frames: list[EncodedFrame] = []
    loop = 0
    while True:
        base = loop * round(clip.duration * clip.clock_rate)
        for payload, ticks, key in clip.payloads:
            t = (base + ticks) / clip.clock_rate
            if t >= total - 1e-9:
                return frames
            frames.append(EncodedFrame(track_id, payload, rtp_start + base + ticks, key, media_start + t + delay))
        loop += 1


def sender_reports(
    track_id: str,
    clock_rate: int,
    *,
    media_start: float,
    seconds: float,
    rtp_start: int = NEAR_WRAP,
    first: float = 1.0,
) -> list[tuple[float, SenderReport]]:
    """(arrival, report) every second from ``first``: NTP is the true media time; RTP wrapped to 32 bits."""
    out: list[tuple[float, SenderReport]] = []
    t = first
    while t < seconds:
        rtp = (rtp_start + round(t * clock_rate)) % (1 << 32)
        out.append((media_start + t + 0.04, SenderReport(track_id, media_start + t, rtp)))
        t += 1.0
    return out


Event = tuple[float, EncodedFrame | SenderReport]


def merge(*streams: Iterable[Event]) -> Iterator[Event]:
    """Every event of every stream in arrival order."""
    items = [e for s in streams for e in s]
    items.sort(key=lambda e: e[0])
    return iter(items)


def timed(frames: Iterable[EncodedFrame]) -> list[Event]:
    """Frames as (arrival, frame) events."""
    return [(f.arrival, f) for f in frames]


def track(hearing_id: str, track_id: str, participant_id: str, source: Source, kind: MediaKind) -> TrackInfo:
    """A TrackInfo with the codec and clock the fixtures produce for ``kind``."""
    if kind == "video":
        return TrackInfo(hearing_id, track_id, participant_id, source, kind, "VP8", VIDEO_RATE)
    return TrackInfo(hearing_id, track_id, participant_id, source, kind, "opus", AUDIO_RATE)


def defendant_session(
    root: Path, *, segment_seconds: float, at: float
) -> tuple[Recorder, RecordingSession, TrackInfo, TrackInfo]:
    """A recorder ``rec-a`` in ``root``, its session of :func:`hearing` from ``at``, and the defendant's camera
    and microphone."""
    recorder = Recorder(root, "rec-a", segment_seconds=segment_seconds)
    booked = hearing()
    session = recorder.start_session(booked, SITES, at=at)
    cam = track(booked.id, "def_cam", "p_def", Source.camera, "video")
    mic = track(booked.id, "def_mic", "p_def", Source.microphone, "audio")
    return recorder, session, cam, mic


def hearing(hearing_id: str = "hrg_test1", participants: int = 3) -> Hearing:
    """A booked trial with a judge, a defendant at a detention center and counsel (and more if asked)."""
    people = [
        ("p_judge", "Judge Wang", Role.judge, "court1"),
        ("p_def", "Li Ming", Role.defendant, "dc1"),
        ("p_counsel", "Zhao Lei", Role.counsel, "remote1"),
        ("p_pros", "Chen Jing", Role.prosecutor, "proc1"),
    ][:participants]
    start = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    return Hearing(
        id=hearing_id,
        case_number="(2026) Test 0001",
        title="Recorder test",
        kind=HearingKind.trial,
        courtroom_id="room1",
        starts_at=start,
        ends_at=start + timedelta(hours=2),
        participants=tuple(
            Participant(id=pid, name=name, role=role, site_id=site, identity=identity_of(name, site))
            for pid, name, role, site in people
        ),
    )


SITES = {
    "court1": "Prefecture Court",
    "dc1": "No. 1 Detention Center",
    "remote1": "Counsel's office",
    "proc1": "City Procuratorate",
}
"""Site names for the fixture hearing."""


@dataclass(frozen=True)
class Feed:
    """A track to feed: its info, its clip, whether it gets sender reports, and when it is published."""

    info: TrackInfo
    clip: EncodedClip
    reports: bool = True
    start: float = 0.0
    """Media second the track starts at (``track_started`` just before its first frame)."""
    length: float | None = None
    """Seconds it runs; then ``track_stopped(..., "ended")``. None: to the end."""
    clock_skew: float = 0.0
    """Seconds the sender's own clock (its sender reports' NTP time) is ahead of true time."""


def feed_hearing(
    sink: FrameSink,
    feeds: list[Feed],
    *,
    media_start: float,
    seconds: float,
    at: dict[float, Callable[[], None]] | None = None,
    until: float | None = None,
) -> None:
    """Start the tracks, then feed frames and sender reports in arrival order, as fast as possible.

    ``at`` maps media seconds to actions run just before the first event at or after
    that time (recess, resume, consultation, audit events...). ``until`` stops early.
    """
    timeline: list[tuple[float, int, Callable[[], None]]] = []
    for feed in feeds:
        begin = media_start + feed.start
        length = feed.length if feed.length is not None else seconds - feed.start
        frames = frames_of(feed.clip, feed.info.track_id, media_start=begin, seconds=length)
        info = feed.info
        timeline.append((begin, 0, lambda info=info: sink.track_started(info)))  # type: ignore[misc]
        timeline.extend((f.arrival, 1, lambda f=f: sink.frame(f)) for f in frames)  # type: ignore[misc]
        if feed.reports:
            for arrival, report in sender_reports(info.track_id, info.clock_rate, media_start=begin, seconds=length):
                skewed = SenderReport(report.track_id, report.ntp_time + feed.clock_skew, report.rtp_timestamp)
                timeline.append((arrival, 1, lambda r=skewed: sink.sender_report(r)))  # type: ignore[misc]
        if feed.length is not None and frames:
            end = frames[-1].arrival + 1e-6
            timeline.append((end, 2, lambda tid=info.track_id: sink.track_stopped(tid, "ended")))  # type: ignore[misc]
    timeline.sort(key=lambda e: (e[0], e[1]))
    actions = sorted((at or {}).items())
    for when, _, event in timeline:
        media_t = when - media_start
        while actions and media_t >= actions[0][0]:
            actions.pop(0)[1]()
        if until is not None and media_t >= until:
            return
        event()
    for _, action in actions:
        action()


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's view of a media file: streams, format and every packet's pts/duration."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,codec_type,width,height,sample_rate:format=duration:packet=pts_time,duration_time",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def probed_duration(info: dict[str, Any], frame_seconds: float) -> float:
    """Media seconds covered by a probed file's packets (last pts plus one frame)."""
    pts = [float(p["pts_time"]) for p in info.get("packets", []) if p.get("pts_time") not in (None, "N/A")]
    if not pts:
        return 0.0
    return max(pts) - min(pts) + frame_seconds
