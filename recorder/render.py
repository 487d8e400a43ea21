"""Offline composite playback of a recording session: one H.264/AAC MP4 anyone can play.

The only place in courtlink that decodes media. Every video track is decoded
from its segments and placed on the session's single wall-clock timeline
(segment start + frame time); each output frame shows a grid of participant
tiles (camera, or a dark tile while there is none), each labelled with role,
name and site, evidence large when it is shown, and the wall-clock time. All
audio tracks are mixed. Stretches with no media at all (recess, outage) are
not played out: a one-second card names them and their time span instead.

Runs synchronously (CPU-bound); call it from a worker thread or the CLI.
"""

from __future__ import annotations

import functools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from recorder.chain import safe_name
from recorder.manifest import MANIFEST_NAME, read_lines

T = TypeVar("T")

RenderProgress = Callable[[int, int], None]
"""(output frames done, output frames in total)."""

AUDIO_RATE = 48_000
CARD_SECONDS = 1.0
MERGE_GAP = 1.0
"""Silences shorter than this (seconds) are played out, not replaced by a card."""

_ROLE_LABEL = {"counsel": "Defence counsel", "party": "Party", "judge": "Judge"}
Frame = NDArray[np.uint8]


class RenderError(ValueError):
    """The input cannot be rendered (not an archive, or nothing recorded)."""


@dataclass
class _Segment:
    track: str
    participant: str
    source: str
    kind: str
    start: float
    end: float
    file: Path


@dataclass
class _Piece:
    """A stretch of output: media from ``start`` to ``end`` (wall), or a card."""

    out_start: float
    start: float
    end: float
    card: str = ""

    @property
    def length(self) -> float:
        return CARD_SECONDS if self.card else self.end - self.start


@dataclass
class RenderResult:
    """What was written."""

    path: Path
    duration: float
    frames: int
    tracks: int
    cards: list[str] = field(default_factory=list)


CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
"""Fonts with Chinese glyphs, tried in order (Debian: fonts-wqy-microhei); names are often Chinese."""


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # COURTLINK_RENDER_FONT names a font file explicitly; else the first CJK font found; else Pillow's own.
    candidates = [os.environ.get("COURTLINK_RENDER_FONT", ""), *CJK_FONTS]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            try:
                return ImageFont.truetype(candidate, size=size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


class _Planes:
    """A yuv420p picture as three writable plane views over one buffer (PyAV's ``yuv420p`` ndarray layout).

    Compositing straight in YUV spares a colour conversion per tile and per
    output frame: the renderer's budget is the encoder, not the blitting.
    """

    def __init__(self, buffer: Frame, width: int, height: int) -> None:
        self.buffer = buffer
        self.width, self.height = width, height
        flat = buffer.reshape(-1)
        luma, chroma = width * height, (width // 2) * (height // 2)
        self.y = flat[:luma].reshape(height, width)
        self.u = flat[luma : luma + chroma].reshape(height // 2, width // 2)
        self.v = flat[luma + chroma : luma + 2 * chroma].reshape(height // 2, width // 2)

    @classmethod
    def blank(cls, width: int, height: int) -> _Planes:
        return cls(np.zeros((height * 3 // 2, width), np.uint8), width, height)

    @classmethod
    def of(cls, frame: av.VideoFrame) -> _Planes:
        return cls(np.asarray(frame.to_ndarray(format="yuv420p"), dtype=np.uint8), frame.width, frame.height)

    def fill(self, luma: int) -> None:
        self.y[:] = luma
        self.u[:] = 128
        self.v[:] = 128

    def fill_rect(self, x: int, y: int, w: int, h: int, luma: int) -> None:
        self.y[y : y + h, x : x + w] = luma
        self.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = 128
        self.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = 128

    def paste(self, patch: _Planes, x: int, y: int) -> None:
        x, y = x & ~1, y & ~1  # chroma is subsampled: stay on even positions
        h = min(patch.height, self.height - y) & ~1
        w = min(patch.width, self.width - x) & ~1
        if h <= 0 or w <= 0 or x < 0 or y < 0:
            return
        self.y[y : y + h, x : x + w] = patch.y[:h, :w]
        self.u[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = patch.u[: h // 2, : w // 2]
        self.v[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = patch.v[: h // 2, : w // 2]


def _text_patch(text: str, size: int, max_width: int) -> _Planes:
    """White text on a dark box, as yuv420p planes (drawn once, pasted many times)."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    while True:  # shrink the text until it fits the tile
        font = _font(size)
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        if right - left + 2 * (size // 3) <= max_width or size <= 9:
            break
        size -= 1
    w = int(min(max_width, right - left + 2 * (size // 3))) & ~1
    h = int(bottom - top + 2 * (size // 4) + 1) & ~1
    img = Image.new("RGB", (max(2, w), max(2, h)), (0, 0, 0))
    ImageDraw.Draw(img).text((size // 3 - left, size // 4 - top), text, font=font, fill=(255, 255, 255))
    frame = av.VideoFrame.from_ndarray(np.asarray(img, dtype=np.uint8), format="rgb24")
    return _Planes.of(frame.reformat(format="yuv420p"))


class _Prefetch(Generic[T]):
    """Runs an iterator on its own thread, a few items ahead: decoding (GIL released) overlaps compositing."""

    _END = object()

    def __init__(self, source: Iterator[T], depth: int = 8) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name="render-decode", daemon=True)
        self._thread.start()

    def _run(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        finally:
            while not self._stop.is_set():
                try:
                    self._queue.put(self._END, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        return cast(T, item)

    def close(self) -> None:
        """Stop the thread (it may be blocked on a full queue) and wait for it."""
        self._stop.set()
        self._thread.join(5)


class _VideoTrack:
    """Decodes one video track's segments in order; ``at(t)`` gives the frame showing at wall time t."""

    def __init__(self, segments: list[_Segment]) -> None:
        self.segments = segments
        self._frames = _Prefetch(self._decode())
        self._current: tuple[float, float, av.VideoFrame] | None = None
        self._next: tuple[float, float, av.VideoFrame] | None = next(self._frames, None)

    def _decode(self) -> Iterator[tuple[float, float, av.VideoFrame]]:
        for seg in self.segments:
            try:
                with av.open(str(seg.file)) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    for frame in container.decode(stream):
                        t = seg.start + float(frame.time or 0.0)
                        yield t, seg.end, frame
            except (av.error.FFmpegError, OSError, IndexError):
                continue  # a damaged or partial segment shows as far as it decodes

    def close(self) -> None:
        """Stop decoding ahead."""
        self._frames.close()

    def at(self, t: float) -> av.VideoFrame | None:
        while self._next is not None and self._next[0] <= t:
            self._current = self._next
            self._next = next(self._frames, None)
        if self._current is None or t >= self._current[1] + 0.05:
            return None
        return self._current[2]


class _AudioTrack:
    """Decodes one audio track's segments to 48 kHz mono float, with wall-clock start times."""

    def __init__(self, segments: list[_Segment]) -> None:
        self.segments = segments

    def chunks(self) -> Iterator[tuple[float, NDArray[np.float32]]]:
        for seg in self.segments:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
            pos = 0
            try:
                with av.open(str(seg.file)) as container:
                    stream = container.streams.audio[0]
                    for frame in container.decode(stream):
                        for out in resampler.resample(frame):
                            samples = np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1)
                            yield seg.start + pos / AUDIO_RATE, samples
                            pos += samples.shape[0]
            except (av.error.FFmpegError, OSError, IndexError):
                continue


class _Mixer:
    """Sums audio chunks placed at output sample positions; hands out finished stretches in order."""

    def __init__(self, tracks: list[_AudioTrack], to_output: Callable[[float], float | None]) -> None:
        self._sources = [_Prefetch(t.chunks(), depth=32) for t in tracks]
        self._pending: list[tuple[float, NDArray[np.float32]] | None] = [next(s, None) for s in self._sources]
        self._to_output = to_output
        self._buffer = np.zeros(0, np.float32)
        self._base = 0  # output sample index of _buffer[0]

    def close(self) -> None:
        """Stop decoding ahead."""
        for source in self._sources:
            source.close()

    def take(self, until: int) -> NDArray[np.float32]:
        """Mixed samples from the last call up to output sample ``until``."""
        need = until - self._base
        if self._buffer.shape[0] < need:
            self._buffer = np.concatenate([self._buffer, np.zeros(need - self._buffer.shape[0], np.float32)])
        for i, source in enumerate(self._sources):
            while (chunk := self._pending[i]) is not None:
                wall, samples = chunk
                out_t = self._to_output(wall)
                if out_t is not None:
                    start = round(out_t * AUDIO_RATE) - self._base
                    if start >= need:
                        break
                    end = start + samples.shape[0]
                    if end > self._buffer.shape[0]:
                        grow = np.zeros(end - self._buffer.shape[0], np.float32)
                        self._buffer = np.concatenate([self._buffer, grow])
                    lo = max(0, start)
                    if lo < end:
                        self._buffer[lo:end] += samples[lo - start :]
                self._pending[i] = next(source, None)
        out = self._buffer[:need]
        self._buffer = self._buffer[need:]
        self._base = until
        return np.clip(out, -1.0, 1.0)


def _session_dirs(path: Path, recorder: str | None = None) -> list[Path]:
    """The sessions to render: ``path`` itself, or one recorder's sessions of a hearing directory, in order."""
    if (path / MANIFEST_NAME).is_file():
        return [path]
    if not path.is_dir():
        raise RenderError(f"{path} is not a recording session or a hearing directory")
    recorders = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob(f"*/{MANIFEST_NAME}")))
    if recorder is not None:
        recorders = [p for p in recorders if p.name == recorder]
    if not recorders:
        raise RenderError(f"{path} is not a recording session (no {MANIFEST_NAME}) or a hearing directory")
    # Several recorders of one hearing record the same thing: render the first one's chain of sessions.
    return sorted(p.parent for p in recorders[0].glob(f"*/{MANIFEST_NAME}"))


def _load(path: Path, recorder: str | None = None) -> tuple[dict[str, Any], list[_Segment], list[dict[str, Any]]]:
    session: dict[str, Any] | None = None
    people: dict[str, Any] = {}
    segments: list[_Segment] = []
    gaps: list[dict[str, Any]] = []
    for directory in _session_dirs(path, recorder):
        entries = [line.entry for line in read_lines(directory / MANIFEST_NAME) if line.entry is not None]
        if not entries or entries[0].get("type") != "session":
            raise RenderError(f"{directory / MANIFEST_NAME} does not start with a session line")
        session = session or entries[0]
        for p in entries[0].get("participants", []):
            if isinstance(p, dict):
                people.setdefault(str(p.get("id")), p)
        for e in entries:
            kind = e.get("type")
            # A crash's recovered partials play too: they hold the seconds up to the crash.
            if kind == "recovered_segment" and not (
                isinstance(e.get("start"), int | float) and isinstance(e.get("end"), int | float)
            ):
                continue  # an older archive's recovered line, without times: cannot be placed
            if kind in ("segment", "recovered_segment"):
                owner = str(e.get("session_id", directory.name)) if kind == "recovered_segment" else directory.name
                rel = str(e.get("file", ""))
                if safe_name(owner) != owner or ".." in rel.split("/") or rel.startswith("/"):
                    continue  # never read outside the hearing's folders, whatever a manifest says
                base = directory.parent / owner
                segments.append(
                    _Segment(
                        str(e["track"]),
                        str(e.get("participant", "")),
                        str(e.get("source", "")),
                        str(e.get("kind", "")),
                        float(e["start"]),
                        float(e["end"]),
                        base / rel,
                    )
                )
            elif kind == "gap":
                gaps.append(e)
    assert session is not None
    if not segments:
        raise RenderError("nothing was recorded in this session")
    merged = dict(session, participants=list(people.values()))
    return merged, sorted(segments, key=lambda s: s.start), gaps


def _pieces(segments: list[_Segment], gaps: list[dict[str, Any]]) -> list[_Piece]:
    spans = sorted((s.start, s.end) for s in segments)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + MERGE_GAP:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces: list[_Piece] = []
    out = 0.0
    for i, (start, end) in enumerate(merged):
        if i:
            gap_start = merged[i - 1][1]
            reasons = sorted(
                {
                    str(g.get("reason"))
                    for g in gaps
                    if float(g.get("start", 0)) < start and float(g.get("end", 0)) > gap_start
                }
            )
            span = f"{_clock(gap_start)} - {_clock(start)}"
            pieces.append(_Piece(out, gap_start, start, card=f"{' / '.join(reasons) or 'no media'}  {span}"))
            out += CARD_SECONDS
        pieces.append(_Piece(out, start, end))
        out += end - start
    return pieces


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _layout(count: int, evidence: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Tile rectangles (x, y, w, h): evidence first (large, left), then the others (grid or right column)."""
    if evidence and count > evidence:
        big_w = width * 3 // 4
        rects = [(0, i * height // evidence, big_w, height // evidence) for i in range(evidence)]
        others = count - evidence
        rects += [(big_w, i * height // others, width - big_w, height // others) for i in range(others)]
        return rects
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    tile_w, tile_h = width // cols, height // rows
    return [((i % cols) * tile_w, (i // cols) * tile_h, tile_w, tile_h) for i in range(count)]


def _fit(scaler: VideoReformatter, frame: av.VideoFrame, w: int, h: int) -> _Planes:
    """The frame scaled to fit (w, h), aspect kept; ``scaler`` keeps its SwsContext between frames."""
    scale = min(w / frame.width, h / frame.height)
    fw, fh = max(2, int(frame.width * scale) // 2 * 2), max(2, int(frame.height * scale) // 2 * 2)
    return _Planes.of(scaler.reformat(frame, fw, fh, "yuv420p", interpolation="FAST_BILINEAR"))


def render_archive(
    path: Path | str,
    out_mp4: Path | str,
    progress: RenderProgress | None = None,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 15,
    recorder: str | None = None,
) -> RenderResult:
    """Render a recording session, or a hearing directory (one recorder's sessions, crash partials included)."""
    root = Path(path)
    out_path = Path(out_mp4)
    session, segments, gaps = _load(root, recorder)
    people = {str(p.get("id")): p for p in session.get("participants", []) if isinstance(p, dict)}
    pieces = _pieces(segments, gaps)
    total = pieces[-1].out_start + pieces[-1].length
    n_frames = max(1, round(total * fps))

    by_track: dict[str, list[_Segment]] = {}
    for seg in segments:
        by_track.setdefault(seg.track, []).append(seg)
    audio = [_AudioTrack(segs) for segs in by_track.values() if segs[0].kind == "audio"]

    def to_output(wall: float) -> float | None:
        for piece in pieces:
            if not piece.card and piece.start - 0.05 <= wall < piece.end + 0.05:
                return piece.out_start + max(0.0, wall - piece.start)
        return None

    def active(track_segments: list[_Segment], t: float) -> bool:
        return any(s.start - 0.05 <= t < s.end + 0.05 for s in track_segments)

    # Tiles: one per participant with any active track (their camera in it), plus one per evidence track.
    scalers: dict[str, VideoReformatter] = {}
    label_cache: dict[tuple[str, int], _Planes] = {}
    time_cache: dict[str, _Planes] = {}
    label_size = max(12, height // 36)

    def label(text: str, max_w: int) -> _Planes:
        key = (text, max_w)
        if key not in label_cache:
            label_cache[key] = _text_patch(text, label_size, max_w)
        return label_cache[key]

    def person(pid: str, source: str) -> str:
        p = people.get(pid, {})
        role = str(p.get("role", ""))
        role_text = _ROLE_LABEL.get(role, role.replace("_", " ").capitalize())
        text = f"{role_text} · {p.get('name', pid)} · {p.get('site', p.get('site_id', ''))}"
        return f"Evidence ({text})" if source == "evidence" else text

    width, height = width & ~1, height & ~1
    try:
        # PyAV opens the file only at the first packet: find out now whether it can be written.
        out_path.open("wb").close()
        out = av.open(str(out_path), mode="w", format="mp4")
    except (OSError, av.error.FFmpegError) as exc:
        raise RenderError(f"cannot write {out_path}: {exc}") from exc
    vstream = out.add_stream("libx264", rate=fps)
    vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
    # ultrafast: a playback copy for people to watch, the archive itself is the evidence.
    vstream.options = {"preset": "ultrafast", "crf": "26"}
    astream = out.add_stream("aac", rate=AUDIO_RATE)
    astream.layout = "mono"
    cards: list[str] = []
    canvas = _Planes.blank(width, height)
    apts = 0
    # Decoder threads start here and are stopped in the finally below, whatever happens.
    video = {tid: _VideoTrack(segs) for tid, segs in by_track.items() if segs[0].kind == "video"}
    mixer = _Mixer(audio, to_output)
    try:
        for i in range(n_frames):
            tau = i / fps
            piece = next((p for p in reversed(pieces) if p.out_start <= tau), pieces[0])
            canvas.fill(16)
            if piece.card:
                if piece.card not in cards:
                    cards.append(piece.card)
                patch = label(piece.card, width - 40)
                canvas.paste(patch, max(0, (width - patch.width) // 2), (height - patch.height) // 2)
                wall = piece.start
            else:
                wall = piece.start + (tau - piece.out_start)
                tiles: list[tuple[str, str, str | None]] = []  # (participant, source, video track)
                pid: str
                seen: set[str] = set()
                for tid, segs in by_track.items():
                    if not active(segs, wall):
                        continue
                    pid, source = segs[0].participant, segs[0].source
                    if source == "evidence":
                        tiles.append((pid, source, tid))
                    elif pid not in seen:
                        seen.add(pid)
                        cam = next(
                            (
                                t
                                for t, s in by_track.items()
                                if s[0].participant == pid and s[0].source == "camera" and active(s, wall)
                            ),
                            None,
                        )
                        tiles.append((pid, "camera", cam))
                tiles.sort(key=lambda tile: (tile[1] != "evidence", tile[0]))
                rects = _layout(len(tiles), sum(1 for t in tiles if t[1] == "evidence"), width, height)
                frames_now = {vid: track.at(wall) for vid, track in video.items()}
                for (pid, source, shown), (x, y, w, h) in zip(tiles, rects, strict=True):
                    canvas.fill_rect(x, y, w, h, 40)
                    frame = frames_now.get(shown) if shown else None
                    if frame is not None and shown:
                        scaler = scalers.setdefault(shown, VideoReformatter())
                        pic = _fit(scaler, frame, w - 4, h - 4)
                        canvas.paste(pic, x + (w - pic.width) // 2, y + (h - pic.height) // 2)
                    patch = label(person(pid, source), w - 8)
                    canvas.paste(patch, x + 4, y + h - patch.height - 4)
            stamp = _clock(wall)
            if stamp not in time_cache:
                time_cache.clear()
                time_cache[stamp] = _text_patch(stamp, label_size, width)
            tpatch = time_cache[stamp]
            canvas.paste(tpatch, width - tpatch.width - 8, 8)

            vframe = av.VideoFrame.from_ndarray(canvas.buffer, format="yuv420p")
            vframe.pts = i
            vframe.time_base = Fraction(1, fps)
            out.mux(vstream.encode(vframe))

            samples = mixer.take(round((i + 1) * AUDIO_RATE / fps))
            aframe = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples.reshape(1, -1)), format="flt", layout="mono"
            )
            aframe.sample_rate = AUDIO_RATE
            aframe.pts = apts
            aframe.time_base = Fraction(1, AUDIO_RATE)
            apts += samples.shape[0]
            out.mux(astream.encode(aframe))
            if progress is not None:
                progress(i + 1, n_frames)
        out.mux(vstream.encode(None))
        out.mux(astream.encode(None))
    finally:
        for track in video.values():
            track.close()
        mixer.close()
        out.close()
    return RenderResult(out_path, n_frames / fps, n_frames, len(by_track), cards)
