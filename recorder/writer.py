"""The writer thread's half of a recording session: segments, the manifest chain, the seal.

Everything here runs on the recorder's single writer thread, in queue order:
the event loop only computes timestamps and queues (see :mod:`recorder.recorder`).
A failed write (full disk) abandons the segment, logs a ``disk`` gap for the
time it lost, tells the status callback, and tries again a second later.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import structlog

from protocol.frames import TrackInfo
from recorder.chain import ALGORITHM, BLOCK_SIZE, LOCK_NAME, SEGMENTS_DIR, safe_name, seal_message
from recorder.keys import SigningKey
from recorder.manifest import FORMAT, MANIFEST_NAME, ManifestWriter, entry_hash, last_intact, read_lines, wall
from recorder.recovery import RecoveryRefused, seal_interrupted
from recorder.segments import (
    Opener,
    SegmentFile,
    UnsupportedCodec,
    container_for,
    h264_dimensions,
    vp8_dimensions,
)
from recorder.timeline import rtp_delta
from rooms.audit import GENESIS

log = structlog.get_logger("recorder")

DISK_RETRY_SECONDS = 1.0
"""After a failed write, media time to wait before opening a new segment."""

Notify = Callable[[str, dict[str, Any]], None]
"""(status, detail) -> None, called on the writer thread (the recorder hops it to the loop)."""

CUT_SLACK = 0.1
"""Seconds before the nominal segment length at which a due video cut asks for a keyframe (clock corrections, the
first sender report, shift keyframes by a few ms)."""

CUT_EARLY = 3.0
"""Seconds before the nominal segment length from which any video keyframe ends the segment (at most
:data:`CUT_EARLY_SHARE` of it): the keyframes the hearing's subscribers ask for anyway (a new subscriber, a layer
switch, a repair) cut most segments, and the recorder asks the publisher for one only when none came. A keyframe is
many times a delta frame's size and goes to every subscriber: on a thin link the keyframes asked for on the
recorder's behalf every 10 s were among the bursts that stalled the defendant's top video 1.3-1.7 s behind
2 Mbit/s now and then."""

CUT_EARLY_SHARE = 0.3
"""The largest share of ``segment_seconds`` that :data:`CUT_EARLY` may take (short segments, as tests use, are not
cut at their first keyframe)."""

_DEFAULT_DELTA = {"audio": 0.02, "video": 1 / 30}

WITHHELD_GUARD = 0.03
"""Seconds after a consultation's end in which its members' audio is still withheld. A frame's time on the hearing's
timeline is its capture plus the least delay the sender has shown (encoding, network), never less: a packet captured
just before the end may be timed a few ms after it. (Not video: after a consultation it is recorded from a keyframe,
which the node asks for once the consultation has ended; holding that one back costs a keyframe interval.)"""
CUT_REASK_SECONDS = 1.0
"""Media seconds between two keyframe requests for one due segment cut (the first request or its answer was lost)."""
STALL_SECONDS = 1.0
"""A track whose next frame comes this much (media time) after the last one has stalled: the segment ends at its
last frame and a new one starts, so a segment never claims seconds that hold no media."""


@dataclass
class _Track:
    info: TrackInfo
    directory: Path
    seq: int = 0
    segment: SegmentFile | None = None
    seg_start: float = 0.0
    seg_first_rtp: int = 0
    seg_clock: str = "arrival"
    last_wall: float = 0.0
    last_rtp: int = 0
    last_clock: str = "arrival"
    last_delta: float = 0.0
    keyframe_asked: bool = False
    cut_asked_at: float | None = None
    disk_gap_start: float | None = None
    retry_after: float = 0.0
    seg_dims: tuple[int, int] | None = None
    """The picture size the open video segment was started with (from its first keyframe)."""


def _picture_size(codec: str, payload: bytes) -> tuple[int, int] | None:
    """(width, height) of a video keyframe of ``codec``, or None when it is not one or the codec is not read."""
    name = codec.lower()
    return vp8_dimensions(payload) if name == "vp8" else h264_dimensions(payload) if name == "h264" else None


LANE_GAP_MIN = 0.1
"""Shorter stretches of a person's track without media are not written as gap lines (segment edges, clock jitter)."""
COVERED_ELSEWHERE = frozenset({"recess", "consultation"})
"""Lane states whose time the manifest accounts for with another gap line (the recess's, the consultation's)."""
LANE_REASONS = {
    "expected": "no_media",
    "network": "network",
    "left": "left",
    "removed": "removed",
    "node_lost": "node_lost",
    "waiting": "waiting",
    "muted": "muted",
    "not_publishing": "not_publishing",
}
"""Lane state -> the reason its gap lines give (``expected``: it should have media and has none)."""


@dataclass
class _Lane:
    """One person's source (camera, microphone, evidence) that should be recorded: its coverage, for gap lines."""

    participant: str
    source: str
    stated: str
    """What the session last said about it: ``expected`` or why it is not (``network``, ``left``...)."""
    changes: list[tuple[float, str]]
    """(since, effective state), in time order; pruned up to ``covered_to``."""
    covered_to: float
    """Everything before this is recorded or written as a gap."""
    live: int = 0
    """Tracks of this lane with an open segment."""
    pending: bool = False
    """Media came back: the gap up to it is written when its segment closes (which fixes where it starts)."""


@dataclass
class SessionSpec:
    """What the writer needs to open a session (built on the loop, handed over once)."""

    hearing_id: str
    session_id: str
    recorder_id: str
    directory: Path
    started_at: float
    segment_seconds: float
    hearing: dict[str, Any]
    participants: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


class SessionWriter:
    """Writes one recording session's files; owned by the writer thread."""

    def __init__(
        self,
        spec: SessionSpec,
        key: Callable[[], SigningKey],
        opener: Opener,
        notify: Notify,
        keyframe_needed: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self._key = key
        """Gives the recorder's signing key (loaded on this thread, on first use)."""
        self._opener = opener
        self._notify = notify
        self._keyframe_needed = keyframe_needed
        self._tracks: dict[str, _Track] = {}
        self._manifest: ManifestWriter | None = None
        self._lock_fd: int | None = None
        self._degraded = False
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._paused = False
        self._excluded: set[str] = set()
        self.withheld: Callable[[str, float, float], bool] | None = None
        """Whether a participant's media captured at a time must not be recorded (a consultation); set by the
        session, read here again for frames queued before the exclusion was known on the loop."""
        self._log = log.bind(hearing_id=spec.hearing_id, session_id=spec.session_id, recorder_id=spec.recorder_id)

    # --- session -------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the session directory, take its lock, link to the previous session, write line 1."""
        spec = self.spec
        spec.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(spec.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        previous = self._previous_session()
        if previous is not None and session_locked(previous[0]):
            # Another live recorder writes under this recorder_id: two recorders need two ids.
            raise RecorderIdInUse(f"session {previous[0].name} is being written by a live recorder with this id")
        interrupted: dict[str, Any] | None = None
        if previous is not None and not previous[4]:
            # The session before ended without a seal (a crash): account for what it left and seal it as such.
            try:
                interrupted = seal_interrupted(previous[0], self._key(), spec.session_id)
            except RecoveryRefused as exc:
                self._log.error("interrupted_seal_refused", session=previous[0].name, error=str(exc))
            except OSError as exc:
                self._log.error("interrupted_seal_failed", session=previous[0].name, error=str(exc))
            else:
                previous = self._previous_session()
        elif previous is not None:
            interrupted = _interrupted_seal(previous[0], previous[1])
        prev_hash = GENESIS
        link: dict[str, Any] | None = None
        if previous is not None:
            prev_dir, count, head, latest, sealed = previous
            prev_hash = head
            link = {"session_id": prev_dir.name, "lines": count, "last_hash": head, "sealed": sealed}
            if interrupted is not None:
                link["state"] = "interrupted"
        self._manifest = ManifestWriter(spec.directory / MANIFEST_NAME, prev=prev_hash)
        self._append(
            {
                "type": "session",
                "format": FORMAT,
                "at": wall(spec.started_at),
                "recorder_id": spec.recorder_id,
                "hearing_id": spec.hearing_id,
                "session_id": spec.session_id,
                "segment_seconds": spec.segment_seconds,
                "block_size": BLOCK_SIZE,
                "hearing": spec.hearing,
                "participants": spec.participants,
                "previous": link,
                **spec.extra,
            }
        )
        if previous is not None and (interrupted is not None or not previous[4]):
            prev_dir, _, _, latest, _ = previous
            if interrupted is not None and isinstance(interrupted.get("media_end"), int | float):
                # Where the crashed recorder's media really ends: its recovered partials included.
                latest = float(interrupted["media_end"])
                detail = f"recorder restarted; session {prev_dir.name} was interrupted and is sealed as such"
            else:
                detail = f"recorder restarted; session {prev_dir.name} ended without a seal"
            self._append(
                {
                    "type": "gap",
                    "reason": "recorder_restart",
                    "track": None,
                    "start": wall(min(latest or spec.started_at, spec.started_at)),
                    "end": wall(spec.started_at),
                    "detail": detail,
                }
            )
        self._log.info("recording_session_opened", previous=link["session_id"] if link else None)
        self._notify("recording", {"session_id": spec.session_id})

    def _previous_session(self) -> tuple[Path, int, str, float, bool] | None:
        parent = self.spec.directory.parent
        candidates = sorted(
            p for p in parent.iterdir() if p.is_dir() and p.name < self.spec.session_id and (p / MANIFEST_NAME).exists()
        )
        if not candidates:
            return None
        prev_dir = candidates[-1]
        count, head, latest = last_intact(prev_dir / MANIFEST_NAME)
        sealed = False
        if count:
            last = read_lines(prev_dir / MANIFEST_NAME)[count - 1].entry
            sealed = last is not None and last.get("type") == "seal"
        return prev_dir, count, head, latest, sealed

    def line(self, entry: dict[str, Any]) -> None:
        """Append a manifest line (gap, audit, stop...)."""
        self._append(entry)

    def _append(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        if self._manifest is None:
            return None  # the session never opened (already reported): nothing can be chained
        problem = span_problem(entry)
        if problem is not None:
            # A bug upstream; the line still goes in (its file must be listed), held to the invariant.
            self._log.error("manifest_invariant_broken", problem=problem, entry_type=entry.get("type"))
            entry = {**entry, "end": entry["start"]}
        try:
            stored = self._manifest.append(entry)
        except OSError as exc:
            self._degrade("manifest_write_failed", error=str(exc))
            return None
        if self._degraded:
            self._recovered()
        return stored

    def _degrade(self, event: str, **detail: Any) -> None:
        self._log.warning(event, **detail)
        if not self._degraded:
            self._degraded = True
            self._notify("degraded", {"session_id": self.spec.session_id, "reason": "disk", **detail})

    def _recovered(self) -> None:
        healthy = not any(t.disk_gap_start is not None for t in self._tracks.values())
        if self._degraded and healthy and self._manifest is not None and self._manifest.pending == 0:
            self._degraded = False
            self._notify("recording", {"session_id": self.spec.session_id})

    # --- tracks and frames -----------------------------------------------------------------------

    def track(self, info: TrackInfo, at: float) -> None:
        """A track (re)starts: close what it had open and note it in the manifest."""
        existing = self._tracks.get(info.track_id)
        try:
            container_for(info.codec)
        except UnsupportedCodec as exc:
            # Archiving it would mean transcoding: say so once in the manifest and ignore its frames.
            if existing is not None:
                self._close_segment(existing, None)
                del self._tracks[info.track_id]
            self._log.error("track_not_archivable", track_id=info.track_id, codec=info.codec)
            self._append(_track_line(info, at, archived=False, detail=str(exc)))
            return
        if existing is not None:
            self._close_segment(existing, None)
            existing.info = info
        else:
            directory = self.spec.directory / SEGMENTS_DIR / safe_name(info.track_id)
            self._tracks[info.track_id] = _Track(info, directory)
        self._append(_track_line(info, at))

    def frame(self, track_id: str, payload: bytes, rtp: int, keyframe: bool, at: float, clock: str) -> None:
        """Write one frame, starting and cutting segments as needed."""
        track = self._tracks.get(track_id)
        if track is None or self._manifest is None:
            return
        kind = track.info.kind
        withheld = self.withheld
        if withheld is not None and withheld(track.info.participant_id, at, WITHHELD_GUARD if kind == "audio" else 0.0):
            return
        if track.segment is not None and track.last_wall and at - track.last_wall > STALL_SECONDS:
            self._close_segment(track, None)
        if track.segment is not None and keyframe and kind == "video" and track.seg_dims is not None:
            # A new picture size (a simulcast switch, a camera change) starts a new segment at its keyframe, so
            # each file's header gives the size of every picture in it.
            dims = _picture_size(track.info.codec, payload)
            if dims is not None and dims != track.seg_dims:
                self._close_segment(track, at)
        if track.segment is not None:
            elapsed = at - track.seg_start
            length = self.spec.segment_seconds
            early = min(CUT_EARLY, CUT_EARLY_SHARE * length)
            if elapsed >= length if kind == "audio" else (keyframe and elapsed >= length - early):
                self._close_segment(track, at)
            elif (
                kind == "video"
                and elapsed >= length - CUT_SLACK
                and (track.cut_asked_at is None or at - track.cut_asked_at >= CUT_REASK_SECONDS)
            ):
                # Video is cut on a keyframe, and encoders make one only when asked (the node asks for no
                # keyframe on a timer): ask once the cut is due, again if none came within a second.
                track.cut_asked_at = at
                self._keyframe_needed(track_id)
        if track.segment is None:
            if kind == "video" and not keyframe:
                if not track.keyframe_asked:
                    track.keyframe_asked = True
                    self._keyframe_needed(track_id)
                return
            if track.disk_gap_start is not None and at < track.retry_after:
                return
            if not self._open_segment(track, payload, rtp, at, clock):
                return
        segment = track.segment
        assert segment is not None
        if track.last_wall and at > track.last_wall:
            track.last_delta = at - track.last_wall
        try:
            segment.write(payload, rtp - track.seg_first_rtp, keyframe)
        except (OSError, av.error.FFmpegError) as exc:
            self._fail_segment(track, at, exc)
            return
        track.last_wall = at
        track.last_rtp = rtp
        track.last_clock = clock

    def _open_segment(self, track: _Track, payload: bytes, rtp: int, at: float, clock: str) -> bool:
        info = track.info
        dims = _picture_size(info.codec, payload)
        suffix = container_for(info.codec)[2]
        track.seq += 1
        path = track.directory / f"{track.seq:06d}{suffix}"
        try:
            track.directory.mkdir(parents=True, exist_ok=True)
            track.segment = SegmentFile(path, info.codec, info.kind, info.clock_rate, dims, self._opener)
        except (OSError, av.error.FFmpegError) as exc:
            track.seq -= 1
            self._note_disk_failure(track, at, exc)
            return False
        track.seg_start = at
        track.seg_dims = dims
        track.seg_first_rtp = rtp
        track.seg_clock = clock
        self._lane_opened(info)
        track.keyframe_asked = False
        track.cut_asked_at = None
        track.last_wall = 0.0
        track.last_delta = 0.0
        if track.disk_gap_start is not None:
            self._append(
                {
                    "type": "gap",
                    "reason": "disk",
                    "track": info.track_id,
                    "participant": info.participant_id,
                    "start": wall(track.disk_gap_start),
                    "end": wall(at),
                    "detail": "writes failed; recording resumed",
                }
            )
            track.disk_gap_start = None
            self._recovered()
        return True

    def _note_disk_failure(self, track: _Track, at: float, exc: BaseException) -> None:
        if track.disk_gap_start is None:
            track.disk_gap_start = at
        track.retry_after = at + DISK_RETRY_SECONDS
        self._degrade("segment_write_failed", track_id=track.info.track_id, error=str(exc))

    def _fail_segment(self, track: _Track, at: float, exc: BaseException) -> None:
        segment = track.segment
        track.segment = None
        if segment is not None:
            segment.abandon()
            track.seq -= 1
            self._lane_closed(track.info, track.seg_start, track.seg_start)
        # The abandoned segment's media is lost, so the gap starts where that segment started.
        self._note_disk_failure(track, track.seg_start if segment is not None else at, exc)
        track.retry_after = at + DISK_RETRY_SECONDS

    def _close_segment(self, track: _Track, end: float | None) -> None:
        segment = track.segment
        if segment is None:
            return
        track.segment = None
        start = track.seg_start
        if track.last_wall:
            # Placed by its last frame, on the newest mapping of RTP to wall time: the frames inside the file are
            # timed by RTP from the first, so the first frame's time is the last one's less their RTP distance.
            # Placing by the first frame's own time instead put the start on whatever mapping held then (an
            # arrival time under load, a late sender report), up to seconds off the segment's end.
            start = track.last_wall - rtp_delta(track.last_rtp, track.seg_first_rtp) / track.info.clock_rate
        if end is None:
            delta = track.last_delta or _DEFAULT_DELTA.get(track.info.kind, 0.02)
            end = (track.last_wall or start) + delta
        try:
            size, digest, blocks = segment.close()
        except (OSError, av.error.FFmpegError) as exc:
            segment.abandon()
            track.seq -= 1
            self._lane_closed(track.info, track.seg_start, track.seg_start)
            self._note_disk_failure(track, track.seg_start, exc)
            return
        info = track.info
        self._lane_closed(info, start, end)
        self._append(
            {
                "type": "segment",
                "track": info.track_id,
                "participant": info.participant_id,
                "source": str(info.source),
                "kind": info.kind,
                "codec": info.codec,
                "seq": track.seq,
                "file": segment.path.relative_to(self.spec.directory).as_posix(),
                "start": wall(start),
                "end": wall(end),
                "clock": track.last_clock if track.last_wall else track.seg_clock,
                "first_rtp": track.seg_first_rtp,
                "frames": segment.frames,
                "bytes": size,
                "sha256": digest,
                "blocks": blocks,
            }
        )
        self._log.debug("segment_sealed", track_id=info.track_id, seq=track.seq, bytes=size)

    # --- coverage: one lane per person and source that should be recorded -----------------------------

    def lane(self, participant: str, source: str, stated: str, at: float) -> None:
        """The session says whether a person's source should be recorded now (``expected``) or why not.

        A lane begins the first time it is expected; from then until the end of
        the session every stretch without a segment is written as a gap line
        naming the person, the source and the reason (the state at the time).
        """
        key = (participant, source)
        lane = self._lanes.get(key)
        if lane is None:
            if stated != "expected":
                return
            lane = self._lanes[key] = _Lane(participant, source, stated, [], at)
            lane.live = sum(
                1
                for t in self._tracks.values()
                if t.segment is not None and (t.info.participant_id, str(t.info.source)) == key
            )
        lane.stated = stated
        self._lane_state(lane, at)

    def lanes_paused(self, paused: bool, at: float) -> None:
        """Recess begins or ends (its own gap line covers every lane meanwhile)."""
        self._paused = paused
        for lane in self._lanes.values():
            self._lane_state(lane, at)

    def lanes_excluded(self, participant: str, excluded: bool, at: float) -> None:
        """A consultation of ``participant`` begins or ends (its own gap line covers their lanes meanwhile)."""
        if excluded:
            self._excluded.add(participant)
        else:
            self._excluded.discard(participant)
        for lane in self._lanes.values():
            if lane.participant == participant:
                self._lane_state(lane, at)

    def lanes_end(self, at: float) -> None:
        """The session stops: every lane without media has a gap to ``at``."""
        for lane in self._lanes.values():
            if lane.live == 0:
                self._lane_gap(lane, at)

    def _lane_state(self, lane: _Lane, at: float) -> None:
        if self._paused:
            state = "recess"
        elif lane.participant in self._excluded:
            state = "consultation"
        else:
            state = lane.stated
        if lane.changes and lane.changes[-1][1] == state:
            return
        at = max(at, lane.changes[-1][0]) if lane.changes else at
        lane.changes.append((at, state))

    def _lane_opened(self, info: TrackInfo) -> None:
        lane = self._lanes.get((info.participant_id, str(info.source)))
        if lane is not None:
            lane.pending = lane.pending or lane.live == 0
            lane.live += 1

    def _lane_closed(self, info: TrackInfo, start: float, end: float) -> None:
        lane = self._lanes.get((info.participant_id, str(info.source)))
        if lane is None:
            return
        if lane.pending:
            lane.pending = False
            self._lane_gap(lane, start)
        lane.live = max(0, lane.live - 1)
        if lane.live == 0:
            lane.covered_to = max(lane.covered_to, end)

    def _lane_gap(self, lane: _Lane, end: float) -> None:
        """Write the stretch [covered_to, end) of a lane as gap lines, one per state it was in."""
        start = lane.covered_to
        if end <= start:
            return
        state_at_start = next((s for t, s in reversed(lane.changes) if t <= start), lane.changes[0][1])
        pieces: list[tuple[float, str]] = [(start, state_at_start)]
        pieces += [(t, s) for t, s in lane.changes if start < t < end]
        for i, (t0, state) in enumerate(pieces):
            t1 = pieces[i + 1][0] if i + 1 < len(pieces) else end
            if state in COVERED_ELSEWHERE or t1 - t0 < LANE_GAP_MIN:
                continue
            self._append(
                {
                    "type": "gap",
                    "reason": LANE_REASONS.get(state, "no_media"),
                    "participant": lane.participant,
                    "source": lane.source,
                    "track": None,
                    "start": wall(t0),
                    "end": wall(t1),
                }
            )
        lane.covered_to = end
        # Only the state in force at ``end`` matters from now on.
        keep = [c for c in lane.changes if c[0] > end]
        last = next((c for c in reversed(lane.changes) if c[0] <= end), None)
        lane.changes = ([last] if last is not None else []) + keep

    def cut(self, track_id: str | None) -> None:
        """Close the open segment of one track (None: of every track)."""
        for tid, track in self._tracks.items():
            if track_id is None or tid == track_id:
                self._close_segment(track, None)

    # --- the end -----------------------------------------------------------------------------------

    def seal(self, at: float) -> dict[str, Any]:
        """Close every segment and append the signed seal line over the chain head."""
        self.cut(None)
        if self._manifest is None:
            raise RuntimeError("the recording session never opened; there is nothing to seal")
        self._manifest.flush()  # the seal must follow every line; raises if the disk still refuses
        key = self._key()
        entry: dict[str, Any] = {
            "type": "seal",
            "at": wall(at),
            "recorder_id": self.spec.recorder_id,
            "session_id": self.spec.session_id,
            "chain_head": self._manifest.head,
            "lines": self._manifest.count,
            "algorithm": ALGORITHM,
            "key_id": key.key_id,
            "public_key": key.public_b64,
            "state": "complete",
        }
        entry["signature"] = key.sign(seal_message(entry))
        stored = self._manifest.append(entry)
        # A sealed session holds only what its manifest lists: the lock goes (we keep its descriptor until close).
        with contextlib.suppress(OSError):
            (self.spec.directory / LOCK_NAME).unlink()
        self._log.info("recording_sealed", lines=stored["n"], chain_head=stored["prev"])
        return stored

    def close(self) -> None:
        """Close open segments and release the session lock."""
        self.cut(None)
        if self._manifest is not None:
            try:
                self._manifest.flush()
            except OSError as exc:
                self._log.error("manifest_lines_lost", error=str(exc), lines=self._manifest.pending)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def span_problem(entry: dict[str, Any]) -> str | None:
    """What is wrong with a line's time span (a ``segment`` or ``gap`` ending before it starts), or None."""
    start, end = entry.get("start"), entry.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float) and end < start:
        return f"{entry.get('type')} line ends {start - end:.3f} s before it starts"
    return None


class RecorderIdInUse(RuntimeError):
    """A live recorder already writes this hearing under the same ``recorder_id``."""


def session_locked(directory: Path) -> bool:
    """Whether a live recorder holds this session directory's lock."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _interrupted_seal(directory: Path, count: int) -> dict[str, Any] | None:
    """The seal line of a session sealed as interrupted (by a restart before this one), else None."""
    if count <= 0:
        return None
    last = read_lines(directory / MANIFEST_NAME)[count - 1].entry
    if last is not None and last.get("type") == "seal" and last.get("state") == "interrupted":
        return last
    return None


def now() -> float:
    """Wall-clock now (one place, so the loop and the writer agree on the clock)."""
    return time.time()


__all__ = [
    "LOCK_NAME",
    "SEGMENTS_DIR",
    "RecorderIdInUse",
    "SessionSpec",
    "SessionWriter",
    "entry_hash",
    "safe_name",
    "seal_message",
    "session_locked",
]


def _track_line(info: TrackInfo, at: float, **extra: Any) -> dict[str, Any]:
    """The manifest line announcing a track (``extra``: why it is not archived, when it is not)."""
    return {
        "type": "track",
        "at": wall(at),
        "track": info.track_id,
        "participant": info.participant_id,
        "source": str(info.source),
        "kind": info.kind,
        "codec": info.codec,
        "clock_rate": info.clock_rate,
        **extra,
    }
