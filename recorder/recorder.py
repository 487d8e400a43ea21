"""The recorder: a :class:`protocol.frames.FrameSink` that archives every permitted track of a hearing.

The media node calls the sink methods on its event loop; they only compute a
timestamp and queue, never touch a file. One writer thread per recorder owns
every file (segments, manifests, seals) and works through a bounded queue; when
the queue is full, frames are dropped, the loss becomes a ``disk`` gap and the
status callback hears ``degraded``.

Per hearing, :meth:`Recorder.start_session` opens a :class:`RecordingSession`:
``pause(reason)`` at recess, ``resume()``, ``record_audit(event)`` for the
hearing's audit trail, ``stop()`` and ``seal()`` at adjourn. Tracks stopped by
the media node (``consultation``, ``ended``...) leave a per-track gap.

Layout: ``<data_dir>/recordings/<hearing_id>/<recorder_id>/<session_id>/``
holds ``manifest.jsonl`` and ``segments/<track>/<seq>.webm`` (``.mkv`` for H.264).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from protocol.frames import EncodedFrame, SenderReport, TrackInfo
from recorder.keys import SigningKey, load_or_create, public_keys
from recorder.manifest import GAP_REASONS, PERSON_GAP_REASONS
from recorder.queue import WorkQueue
from recorder.recovery import RecoveryRefused, crashed_sessions, discard_if_empty, seal_interrupted
from recorder.segments import Opener, default_opener
from recorder.timeline import SenderClock, TrackClock
from recorder.writer import WITHHELD_GUARD, SessionSpec, SessionWriter, safe_name, session_locked
from rooms.model import Hearing, Role, Site

log = structlog.get_logger("recorder")

StatusCallback = Callable[[str, str, dict[str, Any]], None]
"""(hearing_id, status, detail): status is ``recording``, ``degraded``, ``stopped`` or ``sealed``."""

_TRACK_GAP_REASONS = {"consultation": "consultation_excluded", "recess": "recess", "node_lost": "node_lost"}
"""Media-node stop reasons that leave a gap; any reason not known here is a ``track_lost`` gap. ``node_lost``: the
frame pipe to the hearing's node dropped (the node died, or the link to it), until the track is back."""
_LATE_WINDOW = 1.0
"""Seconds after a resume in which audio timed before it is dropped: a sender later than that is broken, and a sender
clock mapped wrongly must not cost more than this of speech."""
_NORMAL_ENDS = frozenset({"ended", "muted", "unpublished", "left", "not_permitted", "detached", "closed"})
"""Stops that are the participant's own doing: noted in the manifest, not a gap in the recording."""


RESTART_TOLERANCE = 10.0
"""Seconds a restarted track's first frame may lie off its arrival on the old mapping before the mapping is dropped
(a new RTP base is off by hours; a loaded node delays frames by seconds)."""
MISSING_AFTER = 1.0
"""Seconds without media after which an expected track counts as missing (``Recording.missing``)."""
MISSING_REASONS = frozenset({"no_media", "left", "removed", "network", "node_lost", "consultation"})
"""Lane states that make a person missing from the record (``waiting``, ``muted``, ``not_publishing`` do not)."""


@dataclass
class Missing:
    """A person's source that should be recorded and is not (plain data for the status message)."""

    participant_id: str
    source: str
    reason: str
    since: float


def recordings_root(data_dir: Path) -> Path:
    """Where every hearing's recordings live under a data directory."""
    return data_dir / "recordings"


def key_dir_of(data_dir: Path) -> Path:
    """Where the recorders' signing keys live under a data directory."""
    return data_dir / "recorder" / "keys"


def new_session_id(at: float) -> str:
    """A session id that sorts by start time: ``rs_20261128T221500Z_<hex>``."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"rs_{stamp}_{secrets.token_hex(4)}"


@dataclass
class _LoopTrack:
    info: TrackInfo
    session: RecordingSession
    clock: TrackClock
    sender: SenderClock
    stopped: bool = False
    last_at: float = 0.0
    open_gap: tuple[str, float, str] | None = None
    """(gap reason, start, what the media node said): closed by the next frame, or at stop."""
    dropping_since: float | None = None
    restarted: bool = False
    """Started again (after a consultation, a recess, a new peer): its first frame checks the clock mapping."""


class RecordingSession:
    """One hearing's recording by this recorder; every method returns at once (work is queued)."""

    def __init__(self, recorder: Recorder, writer: SessionWriter, hearing_id: str, session_id: str, path: Path) -> None:
        self._recorder = recorder
        self._writer = writer
        self.hearing_id = hearing_id
        self.session_id = session_id
        self.path = path
        """The session directory (what ``courtlink verify`` takes)."""
        self.state = "recording"
        """``recording``, ``paused``, ``stopped`` or ``sealed`` (as seen from the loop)."""
        self._pause: tuple[str, float] | None = None
        self.not_before = 0.0
        """Frames arriving before this (the last resume) belong to the recess: never recorded."""
        self.dropping: set[str] = set()
        self._sealed: concurrent.futures.Future[dict[str, Any]] | None = None
        self.excluded: dict[str, tuple[str, float]] = {}
        """Participants recorded in nothing for now (consultation): reason and since when."""
        self.windows: dict[str, tuple[tuple[float, float], ...]] = {}
        """Each participant's ended exclusions (start, end) on the hearing's timeline: a frame captured inside one is
        never recorded, however late it arrives. Replaced whole (never mutated): the writer thread reads it too."""
        writer.withheld = self.withheld
        self.lanes: dict[tuple[str, str], tuple[str, float]] = {}
        """(participant, source) -> (state, since) of every source that has been expected in this session."""
        self.seen: dict[tuple[str, str], float] = {}
        """(participant, source) -> arrival time of its last frame taken for recording."""

    @property
    def paused(self) -> bool:
        """Whether the hearing is in recess (frames are not recorded)."""
        return self._pause is not None

    def pause(self, reason: str = "recess", at: float | None = None) -> None:
        """Stop recording every track until :meth:`resume`; the gap is logged with ``reason``."""
        if reason not in GAP_REASONS:
            raise ValueError(f"pause reason must be one of {sorted(GAP_REASONS)}, not {reason!r}")
        if self.state != "recording":
            return
        at = time.time() if at is None else at
        self._pause = (reason, at)
        self.state = "paused"
        self._recorder._control(lambda: self._writer.cut(None))
        self._recorder._control(lambda: self._writer.lanes_paused(True, at))
        self._recorder._notify(self.hearing_id, "stopped", {"session_id": self.session_id, "reason": reason})

    def resume(self, at: float | None = None) -> None:
        """Record again after a pause; writes the pause's gap line."""
        if self._pause is None:
            return
        at = time.time() if at is None else at
        reason, start = self._pause
        self._pause = None
        self.not_before = at
        self.state = "recording"
        resumed = at
        self._recorder._control(lambda: self._writer.lanes_paused(False, resumed))
        self._line({"type": "gap", "reason": reason, "track": None, "start": start, "end": at})
        self._recorder._notify(self.hearing_id, "recording", {"session_id": self.session_id})

    def exclude(self, participant_id: str, reason: str = "consultation_excluded", at: float | None = None) -> None:
        """Record nothing of this participant until :meth:`include` (a private consultation).

        Defence in depth: the media node stops forwarding consultation tracks to
        the recorder anyway; this makes sure no frame of theirs is written even
        if one arrives, and logs one gap for the participant with ``reason``.
        """
        if reason not in GAP_REASONS:
            raise ValueError(f"exclusion reason must be one of {sorted(GAP_REASONS)}, not {reason!r}")
        if participant_id in self.excluded or self.state in ("stopped", "sealed"):
            return
        since = time.time() if at is None else at
        self.excluded[participant_id] = (reason, since)
        self._recorder._control(lambda: self._writer.lanes_excluded(participant_id, True, since))
        writer = self._writer
        tids = [t.info.track_id for t in self._recorder._tracks_of(self) if t.info.participant_id == participant_id]

        def cut() -> None:
            for tid in tids:
                writer.cut(tid)

        self._recorder._control(cut)

    def include(self, participant_id: str, at: float | None = None) -> None:
        """Record the participant again after :meth:`exclude`; writes the exclusion's gap line."""
        excluded = self.excluded.pop(participant_id, None)
        if excluded is None:
            return
        reason, start = excluded
        end = max(start, time.time() if at is None else at)
        self.windows = {**self.windows, participant_id: (*self.windows.get(participant_id, ()), (start, end))}
        self._recorder._control(lambda: self._writer.lanes_excluded(participant_id, False, end))
        self._line(
            {"type": "gap", "reason": reason, "track": None, "participant": participant_id, "start": start, "end": end}
        )

    def withheld(self, participant_id: str, at: float, guard: float = WITHHELD_GUARD) -> bool:
        """Whether media of ``participant_id`` captured at ``at`` falls in one of their exclusions (never recorded).

        Called on the loop for every frame and again on the writer thread for
        frames queued before an exclusion was known; reads only.
        """
        excluded = self.excluded.get(participant_id)
        if excluded is not None and at >= excluded[1]:
            return True
        return any(start <= at < end + guard for start, end in self.windows.get(participant_id, ()))

    def lane(
        self, participant_id: str, source: str, state: str, at: float | None = None, *, media_back: bool = False
    ) -> None:
        """Say whether a person's source should be recorded now: ``expected``, or why not.

        ``network``, ``left``, ``removed``, ``node_lost`` (missing from the
        record), ``waiting`` (in a lobby), ``muted`` (by the court),
        ``not_publishing`` (the person turned it off). A source is accounted
        for from the first time it is expected to the end of the session:
        every stretch without media becomes a gap line naming the person, the
        source and the state at the time.
        """
        if state != "expected" and state not in PERSON_GAP_REASONS:
            raise ValueError(f"lane state must be expected or one of {sorted(PERSON_GAP_REASONS)}, not {state!r}")
        if self.state in ("stopped", "sealed"):
            return
        key = (participant_id, source)
        current = self.lanes.get(key)
        if (current is None and state != "expected") or (current is not None and current[0] == state):
            return
        if current is not None and current[0] == "node_lost" and state == "expected" and not media_back:
            # The roster says "expected" as soon as a new node is placed; the record lacks the source until its
            # media arrives from there (the next frame ends the node_lost stretch, see Recorder.frame).
            return
        since = time.time() if at is None else at
        self.lanes[key] = (state, since)
        self._recorder._control(lambda: self._writer.lane(participant_id, source, state, since))

    def missing(self, now: float | None = None) -> list[Missing]:
        """The expected sources not being recorded now (no media for > 1 s, or the person is away), in order.

        A source just expected (the session's start, an admission) has :data:`MISSING_AFTER` for its first media to
        arrive before it counts as missing: else every start told the court "not recorded" for the moment the
        recorder's first frames were on their way."""
        if self.state != "recording":
            return []
        now = time.time() if now is None else now
        out: list[Missing] = []
        for (pid, source), (state, since) in sorted(self.lanes.items()):
            excluded = self.excluded.get(pid)
            if excluded is not None:
                out.append(Missing(pid, source, "consultation", excluded[1]))
            elif state == "expected":
                last = self.seen.get((pid, source))
                heard = since if last is None else max(since, last)
                if now - heard > MISSING_AFTER:
                    out.append(Missing(pid, source, "no_media", heard))
            elif state in MISSING_REASONS:
                out.append(Missing(pid, source, state, since))
        return out

    def record_audit(self, event: Mapping[str, Any] | Any, at: float | None = None) -> None:
        """Interleave one of the hearing's audit events (a dict or a ``rooms.audit.AuditEvent``) into the chain."""
        if self.state == "sealed":
            return
        dump = getattr(event, "model_dump", None)
        payload = dump(mode="json") if callable(dump) else dict(event)
        self._line({"type": "audit", "at": time.time() if at is None else at, "event": payload})

    def stop(self, at: float | None = None) -> None:
        """Stop recording (adjourn): close every segment and every open gap."""
        if self.state in ("stopped", "sealed"):
            return
        at = time.time() if at is None else at
        if self._pause is not None:
            reason, start = self._pause
            self._pause = None
            self._line({"type": "gap", "reason": reason, "track": None, "start": start, "end": at})
        for track in self._recorder._tracks_of(self):
            self._recorder._end_track_gap(track, at)
        for participant_id in list(self.excluded):
            self.include(participant_id, at)
        self.state = "stopped"
        self._recorder._forget_tracks(self)
        self._recorder._control(lambda: self._writer.cut(None))
        stopped = at
        self._recorder._control(lambda: self._writer.lanes_end(stopped))
        self._line({"type": "stop", "at": at})
        self._recorder._notify(self.hearing_id, "stopped", {"session_id": self.session_id, "reason": "adjourned"})

    def seal(self, at: float | None = None) -> concurrent.futures.Future[dict[str, Any]]:
        """Stop if needed, then sign the chain head; the future holds the seal line once it is on disk.

        Sealing twice returns the first seal's future.
        """
        if self._sealed is not None:
            return self._sealed
        at = time.time() if at is None else at
        self.stop(at)
        self.state = "sealed"
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._sealed = future
        recorder = self._recorder

        def work() -> None:
            # Status first, then the future: whoever awaits the seal finds the status already delivered.
            try:
                stored = self._writer.seal(at)
            except Exception as exc:
                recorder._notify_threadsafe(self.hearing_id, "degraded", {"session_id": self.session_id})
                future.set_exception(exc)
            else:
                recorder._notify_threadsafe(self.hearing_id, "sealed", {"session_id": self.session_id})
                future.set_result(stored)
            finally:
                self._writer.close()

        recorder._control(work)
        recorder._sessions.pop(self.hearing_id, None)
        return future

    def flush(self) -> concurrent.futures.Future[None]:
        """A future done once everything queued so far has been handled by the writer."""
        return self._recorder.flush()

    def _line(self, entry: dict[str, Any]) -> None:
        for key in ("at", "start", "end"):
            if isinstance(entry.get(key), float):
                entry[key] = round(entry[key], 6)
        self._recorder._control(lambda: self._writer.line(entry))


class Recorder:
    """Archives hearings: implements the media node's ``FrameSink`` and owns one writer thread.

    Every method but :meth:`close` is meant for one thread, the media node's
    event loop; none of them does I/O or blocks. Status callbacks arrive on the
    loop the recorder was started in (directly, when there is none).
    """

    def __init__(
        self,
        data_dir: Path,
        recorder_id: str = "recorder-1",
        *,
        segment_seconds: float = 10.0,
        max_queued_frames: int = 4096,
        key_dir: Path | None = None,
        on_status: StatusCallback | None = None,
        on_keyframe_needed: Callable[[str, str], None] | None = None,
        opener: Opener = default_opener,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.recorder_id = safe_name(recorder_id)
        self.segment_seconds = segment_seconds
        self.key_dir = key_dir if key_dir is not None else key_dir_of(self.data_dir)
        self._on_status = on_status
        self._on_keyframe_needed = on_keyframe_needed
        self._opener = opener
        self._loop = loop
        self._queue = WorkQueue(max_queued_frames)
        self._sessions: dict[str, RecordingSession] = {}
        self._tracks: dict[str, _LoopTrack] = {}
        self._senders: dict[tuple[str, str], SenderClock] = {}
        """(hearing, participant) -> that browser's clock offset (shared by its tracks)."""
        self._announced: dict[str, TrackInfo] = {}
        """Every track the media node has started and not stopped, recorded or not (yet)."""
        self._key: SigningKey | None = None
        self._thread: threading.Thread | None = None
        self.dropped_frames = 0
        """Frames refused because the writer queue was full (a metric)."""

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (which loads or creates the signing key); idempotent, no I/O here."""
        if self._thread is not None:
            return
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
        self._thread = threading.Thread(target=self._run, name=f"recorder-{self.recorder_id}", daemon=True)
        self._thread.start()
        # Key files are I/O: load (or create) the key on the writer thread, first thing.
        self._control(self._load_key)
        self._control(self._seal_crashed)

    def _seal_crashed(self) -> None:
        """Seal as ``interrupted`` what a crash of this recorder left unsealed (writer thread; see recovery.py)."""
        for directory in crashed_sessions(recordings_root(self.data_dir), self.recorder_id):
            if session_locked(directory):
                continue  # a live recorder with this id writes it (a misconfiguration the session open reports)
            if discard_if_empty(directory):
                log.warning("empty_session_removed", session=directory.name)
                continue
            try:
                seal = seal_interrupted(directory, self._signing_key())
            except (RecoveryRefused, OSError) as exc:
                log.error("interrupted_seal_refused", session=directory.name, error=str(exc))
            else:
                log.info("recording_sealed_interrupted", session=directory.name, media_end=seal.get("media_end"))

    def _load_key(self) -> None:
        self._signing_key()

    def _signing_key(self) -> SigningKey:
        """The recorder's key; only called on the writer thread."""
        if self._key is None:
            self._key = load_or_create(self.key_dir, self.recorder_id)
        return self._key

    def close(self, timeout: float | None = None) -> None:
        """Finish queued work, close unsealed sessions (they stay unsealed) and stop the thread (blocks)."""
        if self._thread is None:
            return
        for session in list(self._sessions.values()):
            writer = session._writer
            self._control(writer.close)
        self._sessions.clear()
        self._queue.put_control(None)
        self._thread.join(timeout)
        self._thread = None

    async def aclose(self) -> None:
        """:meth:`close` from a coroutine (waits in a thread, not on the loop)."""
        await asyncio.to_thread(self.close)

    def flush(self) -> concurrent.futures.Future[None]:
        """A future done once the writer has handled everything queued so far."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._control(lambda: future.set_result(None))
        return future

    def public_keys(self) -> list[dict[str, str]]:
        """The recorders' public keys (``/api/v1/recorder/keys``): key_id, algorithm, base64 raw key.

        Reads the key directory: call it in a worker thread from a request handler.
        """
        return public_keys(self.key_dir)

    def session(self, hearing_id: str) -> RecordingSession | None:
        """The hearing's open recording session, if any."""
        return self._sessions.get(hearing_id)

    def start_session(
        self,
        hearing: Hearing,
        sites: Mapping[str, Site | str] | None = None,
        at: float | None = None,
    ) -> RecordingSession:
        """Start recording ``hearing`` (a new session; linked to this recorder's previous one, if any)."""
        self.start()
        existing = self._sessions.get(hearing.id)
        if existing is not None:
            return existing
        at = time.time() if at is None else at
        session_id = new_session_id(at)
        directory = recordings_root(self.data_dir) / safe_name(hearing.id) / self.recorder_id / session_id
        site_names = {sid: (s.name if isinstance(s, Site) else s) for sid, s in (sites or {}).items()}
        spec = SessionSpec(
            hearing_id=hearing.id,
            session_id=session_id,
            recorder_id=self.recorder_id,
            directory=directory,
            started_at=at,
            segment_seconds=self.segment_seconds,
            hearing={
                "id": hearing.id,
                "case_number": hearing.case_number,
                "title": hearing.title,
                "kind": str(hearing.kind),
                "courtroom_id": hearing.courtroom_id,
                "starts_at": hearing.starts_at.isoformat(),
                "ends_at": hearing.ends_at.isoformat(),
            },
            participants=[
                {
                    "id": p.id,
                    "name": p.name,
                    "role": str(p.role),
                    "site_id": p.site_id,
                    "site": site_names.get(p.site_id, p.site_id),
                }
                for p in hearing.participants
                if p.role != Role.recorder
            ],
        )
        hearing_id = hearing.id
        writer = SessionWriter(
            spec,
            self._signing_key,
            self._opener,
            lambda status, detail: self._notify_threadsafe(hearing_id, status, detail),
            lambda track_id: self._keyframe_needed_threadsafe(hearing_id, track_id),
        )
        session = RecordingSession(self, writer, hearing.id, session_id, directory)
        self._sessions[hearing.id] = session

        def open_session() -> None:
            try:
                writer.open()
            except (OSError, RuntimeError) as exc:
                log.error("recording_session_failed", hearing_id=hearing_id, error=str(exc))
                self._notify_threadsafe(hearing_id, "degraded", {"session_id": session_id, "reason": "disk"})

        self._control(open_session)
        for info in [i for i in self._announced.values() if i.hearing_id == hearing.id]:
            self.track_started(info)
        return session

    # --- FrameSink -------------------------------------------------------------------------------

    def track_started(self, info: TrackInfo) -> None:
        """A permitted track begins (again): record it if its hearing is being recorded.

        Tracks announced before the hearing's session starts are remembered and
        recorded from ``start_session`` on.
        """
        self._announced[info.track_id] = info
        session = self._sessions.get(info.hearing_id)
        if session is None or session.state in ("stopped", "sealed"):
            return
        now = time.time()
        track = self._tracks.get(info.track_id)
        if track is not None and track.session is session:
            # The gap since it stopped ends with its first frame (media time, not this call's time).
            track.stopped = False
            track.info = info
            track.restarted = True
            if track.clock.clock_rate != info.clock_rate:
                track.clock = TrackClock(info.clock_rate)
        else:
            sender = self._senders.setdefault((info.hearing_id, info.participant_id), SenderClock())
            self._tracks[info.track_id] = _LoopTrack(info, session, TrackClock(info.clock_rate), sender)
        writer = session._writer
        self._control(lambda: writer.track(info, now))

    def frame(self, frame: EncodedFrame) -> None:
        """Queue one encoded frame; dropped (and logged as a gap) when the writer is behind."""
        track = self._tracks.get(frame.track_id)
        if track is None or track.stopped:
            return
        session = track.session
        if session._pause is not None:
            return
        if frame.arrival < session.not_before:
            return  # sent before the resume (judged by arrival: the sender's clock may be off)
        clock = track.clock
        at = clock.wall(frame.rtp_timestamp, frame.arrival)
        if track.restarted:
            track.restarted = False
            if clock.source == "sender_report" and abs(at + track.sender.offset - frame.arrival) > RESTART_TOLERANCE:
                # A new peer with a new random RTP base: the old mapping places it hours off. Start afresh (and keep
                # this frame out of the sender clock). The same peer going on (after a consultation) keeps its
                # mapping, so frames it captured before an exclusion ended are still judged by capture time.
                clock = track.clock = TrackClock(track.info.clock_rate)
                at = clock.wall(frame.rtp_timestamp, frame.arrival)
        if clock.source == "sender_report":
            at += track.sender.observe(at, frame.arrival)
        pid = track.info.participant_id
        guard = WITHHELD_GUARD if track.info.kind == "audio" else 0.0
        if pid in session.excluded or (session.windows and session.withheld(pid, at, guard)):
            # Captured in a consultation (judged by capture time, whatever the queueing delay since), or before it
            # but arriving after it began (its segment is closed already): never recorded.
            return
        if track.info.kind == "audio":
            since = session.not_before
            if at < since and frame.arrival < since + _LATE_WINDOW:
                # Arrived just after the resume but, on the hearing's timeline, sent before it: a late sender's
                # recess speech stays out. (Not video: it restarts at a keyframe, and dropping that one would cost a
                # keyframe interval for a few ms of precision.)
                return
        track.last_at = at
        key = (pid, str(track.info.source))
        session.seen[key] = frame.arrival
        lane = session.lanes.get(key)
        if lane is not None and lane[0] == "node_lost" and (frame.keyframe or track.info.kind == "audio"):
            # (Video is recorded again from its first keyframe: until then the node's loss is still the reason.)
            session.lane(*key, "expected", at=frame.arrival, media_back=True)
        if track.open_gap is not None:
            self._end_track_gap(track, at)
        if track.dropping_since is not None and self._queue.has_room():
            self._end_drop(track, at)
        item = (session._writer, frame.track_id, frame.payload, frame.rtp_timestamp, frame.keyframe, at, clock.source)
        if not self._queue.put_frame(item):
            self.dropped_frames += 1
            if track.dropping_since is None:
                track.dropping_since = at
            if not session.dropping:
                log.warning("recorder_queue_full", hearing_id=session.hearing_id, track_id=frame.track_id)
                self._notify(session.hearing_id, "degraded", {"session_id": session.session_id, "reason": "disk"})
            session.dropping.add(frame.track_id)

    def sender_report(self, report: SenderReport) -> None:
        """Take the track's NTP <-> RTP mapping."""
        track = self._tracks.get(report.track_id)
        if track is not None:
            track.clock.sender_report(report.ntp_time, report.rtp_timestamp)

    def track_stopped(self, track_id: str, reason: str) -> None:
        """A track stops being forwarded: close its segment.

        ``consultation`` (and unknown reasons, as ``track_lost``) open a gap that
        runs until the track's next frame; ``ended``, ``muted``, ``unpublished``,
        ``left``, ``not_permitted``, ``detached`` and ``closed`` (the media node's
        words for a track that is meant to stop) are noted as a ``track_stopped``
        line, not a gap. A consultation is best announced with
        :meth:`RecordingSession.exclude`, which logs it whatever the node says.
        """
        self._announced.pop(track_id, None)
        track = self._tracks.get(track_id)
        if track is None or track.stopped:
            return
        track.stopped = True
        # Times on the hearing's timeline: where this track's media stopped (its last frame).
        start = track.last_at or time.time()
        writer = track.session._writer
        self._control(lambda: writer.cut(track_id))
        if reason in _NORMAL_ENDS:
            entry = {"type": "track_stopped", "track": track_id, "reason": reason, "at": round(start, 6)}
            self._control(lambda: writer.line(entry))
        elif (lane_key := (track.info.participant_id, str(track.info.source))) in track.session.lanes:
            # A source the session accounts for as a lane gets its gap lines from the lane, with the person's state;
            # a lost media node is the reason for everyone expected on it, until their media comes back.
            if reason == "node_lost" and track.session.lanes[lane_key][0] == "expected":
                track.session.lane(*lane_key, "node_lost", at=start)
        elif track.open_gap is None:
            track.open_gap = (_TRACK_GAP_REASONS.get(reason, "track_lost"), start, reason)

    # --- internals ---------------------------------------------------------------------------------

    def _end_drop(self, track: _LoopTrack, at: float) -> None:
        """The queue has room again: cut the track and log what was dropped as a ``disk`` gap."""
        start = track.dropping_since
        track.dropping_since = None
        session = track.session
        writer = session._writer
        tid = track.info.track_id
        entry = {
            "type": "gap",
            "reason": "disk",
            "track": tid,
            "participant": track.info.participant_id,
            "start": round(start or at, 6),
            "end": round(at, 6),
            "detail": "writer queue full; frames dropped",
        }
        self._control(lambda: writer.cut(tid))
        self._control(lambda: writer.line(entry))
        session.dropping.discard(tid)
        if not session.dropping:
            self._notify(session.hearing_id, "recording", {"session_id": session.session_id})

    def _end_track_gap(self, track: _LoopTrack, at: float) -> None:
        if track.open_gap is None:
            return
        reason, start, said = track.open_gap
        track.open_gap = None
        entry: dict[str, Any] = {
            "type": "gap",
            "reason": reason,
            "track": track.info.track_id,
            "participant": track.info.participant_id,
            "start": round(start, 6),
            "end": round(max(at, start), 6),
        }
        if reason == "track_lost":
            entry["detail"] = said
        writer = track.session._writer
        self._control(lambda: writer.line(entry))

    def _tracks_of(self, session: RecordingSession) -> list[_LoopTrack]:
        return [t for t in self._tracks.values() if t.session is session]

    def _forget_tracks(self, session: RecordingSession) -> None:
        for tid in [tid for tid, t in self._tracks.items() if t.session is session]:
            del self._tracks[tid]
        for key in [key for key in self._senders if key[0] == session.hearing_id]:
            del self._senders[key]

    def _control(self, work: Callable[[], None]) -> None:
        self._queue.put_control(work)

    def _notify(self, hearing_id: str, status: str, detail: dict[str, Any]) -> None:
        if self._on_status is not None:
            self._on_status(hearing_id, status, detail)

    def _notify_threadsafe(self, hearing_id: str, status: str, detail: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify, hearing_id, status, detail)
        else:
            self._notify(hearing_id, status, detail)

    def _keyframe_needed_threadsafe(self, hearing_id: str, track_id: str) -> None:
        callback = self._on_keyframe_needed
        if callback is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, hearing_id, track_id)
        else:
            callback(hearing_id, track_id)

    def _run(self) -> None:
        queue = self._queue
        failures = 0
        while True:
            for item in queue.get_batch():
                if item is None:
                    return
                try:
                    if type(item) is tuple:
                        item[0].frame(*item[1:])
                    else:
                        item()
                except Exception:
                    # The writer must outlive any single bad item: log it (not every time) and go on.
                    failures += 1
                    if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure
                        log.exception("recorder_item_failed", failures=failures)
