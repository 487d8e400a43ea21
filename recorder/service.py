"""Every hearing is recorded: the recorder joins each live room as a hidden participant.

The recorder is a participant with role ``recorder`` (hidden from rosters).
What it receives is decided like everyone else's, by the permission table in
signaling (only in session, never a consultation, nobody in a lobby), and the
media node hands it the permitted frames through its
:class:`protocol.frames.FrameSource` (the node in this process, or the node's
frame pipe). Everything else comes through a :class:`protocol.recorder.SessionLink`
(in-process over the hub, or over the bus): the session messages it receives as
a participant (``joined``, ``state``, ``roster``) drive the archive: start with
the session, pause at recess, a gap for each consultation. They are acted on at
once (no await): in-process the session sends them before the node commands
that go with them, so the archive is ready before the node feeds it; over the
bus a track announced before its session starts is remembered and recorded
from the start. At adjournment the session waits for the recorder
(:meth:`RecordingService.closing`) to stop and seal before it tells everyone
and closes their connections, so every participant sees ``recording: sealed``.
The hearing's audit events are pulled from the store as they appear and
interleaved into the manifest.

This module depends on ``protocol``, ``rooms`` (store reads) and the recorder
alone: the import contracts forbid ``signaling`` and ``media`` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import structlog

from protocol.client import (
    Joined,
    MissingTrack,
    ParticipantInfo,
    Recording,
    Reply,
    RosterEntry,
    RosterMsg,
    StateMsg,
)
from protocol.frames import FrameSource
from protocol.recorder import AuditIntent, LinkError, LinkRefused, SessionLink
from recorder.recorder import Recorder, RecordingSession
from rooms.audit import AuditEvent
from rooms.errors import DomainError
from rooms.model import Hearing, HearingState, Placement, Role, Site, Source
from rooms.permissions import TABLE
from rooms.store import HearingFilter, Store

log = structlog.get_logger("recorder.service")

LIVE = (HearingState.open, HearingState.in_session, HearingState.recess)
AUDIT_POLL_SECONDS = 2.0
MISSING_POLL_SECONDS = 0.5


def _lane_state(entry: RosterEntry, source: Source) -> str:
    """Whether a person in the roster should be sending ``source`` to the record now, or why not."""
    if entry.placement in (Placement.lobby, Placement.witness_lobby):
        return "waiting"
    # (In a consultation the person's exclusion accounts for their sources: see on_audit.)
    if not entry.connected:
        return "network"
    if source in entry.muted:
        return "muted"
    if source not in entry.publishing:
        return "not_publishing"
    return "expected"


@dataclass
class _Follow:
    """One hearing the recorder has joined."""

    hearing_id: str
    conn: str = ""
    """The hidden participant's connection handle (from :meth:`SessionLink.join`)."""
    state: HearingState | None = None
    excluded: set[str] = field(default_factory=set)
    audit_seq: int = 0
    poller: asyncio.Task[None] | None = None
    hearing: Hearing | None = None
    """The booked hearing as last read (the session line is made from it)."""
    sites: dict[str, Site] = field(default_factory=dict)
    sealing: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Serializes this hearing's store reads (audit pulls, hearing refreshes) and its seal."""
    detached: bool = False
    """The hub gave up the room (everyone left) while a recording session is open: the next room is joined again,
    carrying on from ``audit_seq``."""
    roster: RosterMsg | None = None
    """The last roster: who is where, connected, publishing what (what the record should hold)."""
    removed: set[str] = field(default_factory=set)
    """Participants removed by the court (their gap says ``removed``, not ``left``)."""
    names: dict[str, str] = field(default_factory=dict)
    base: tuple[str, str] = ("recording", "")
    """The recorder's own last status and detail (disk, sealing...), before missing people are added."""
    reason: str = ""
    """The reason code of the recorder's own status (``detail["reason"]``), e.g. recess."""
    missing: tuple[MissingTrack, ...] = ()
    watcher: asyncio.Task[None] | None = None


class RecordingService:
    """Joins the recorder to every live hearing it hears of and drives its archive (a ``RecorderEvents``)."""

    def __init__(self, link: SessionLink, frames: FrameSource, recorder: Recorder, store: Store) -> None:
        self._link = link
        self._node = frames
        self._recorder = recorder
        self._store = store
        self._follows: dict[str, _Follow] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.participant_id = f"recorder-{recorder.recorder_id}"

    @property
    def recorder(self) -> Recorder:
        """The recorder this service drives."""
        return self._recorder

    async def start(self) -> None:
        """Follow rooms as they open, and hearings still live from before a restart."""
        self._recorder.start()
        await self._link.start(self)
        now = datetime.now(UTC)
        window = HearingFilter(starts_from=now - timedelta(days=2), ends_to=now + timedelta(days=2), limit=10_000)
        for hearing in await self._store.list_hearings(window):
            if hearing.state in (HearingState.in_session, HearingState.recess):
                log.info("recording_resumed_after_restart", hearing_id=hearing.id)
                await self.follow(hearing.id)

    async def close(self) -> None:
        """Stop following; open sessions stay unsealed and a restart continues their chain."""
        await self._link.close()
        for follow in list(self._follows.values()):
            if follow.poller is not None:
                follow.poller.cancel()
            if follow.watcher is not None:
                follow.watcher.cancel()
            self._node.detach_recorder(follow.hearing_id, self.participant_id, "closed")
        for task in list(self._tasks):
            task.cancel()
        self._follows.clear()
        await self._recorder.aclose()

    def status(self, hearing_id: str, status: str, detail: dict[str, Any]) -> None:
        """Recorder status callback: everyone in the hearing sees recording health."""
        text = ", ".join(f"{k}={v}" for k, v in sorted(detail.items()) if k != "session_id")
        reason = str(detail.get("reason", ""))
        follow = self._follows.get(hearing_id)
        if follow is None:
            self._link.send_status(hearing_id, Recording(status=cast(Any, status), detail=text, reason=reason))
            return
        follow.base = (status, text)
        follow.reason = reason
        self._publish(follow)

    def _publish(self, follow: _Follow) -> None:
        """Send the recording status: the recorder's own, ``degraded`` while anyone expected is not recorded."""
        status, text = follow.base
        missing = follow.missing if status in ("recording", "degraded") else ()
        absent = [m for m in missing if m.reason != "consultation"]
        if absent and status == "recording":
            status = "degraded"
            people: dict[str, list[str]] = {}
            for m in absent:
                people.setdefault(m.name, []).append(str(m.source))
            text = "not recorded: " + "; ".join(f"{name} ({', '.join(srcs)})" for name, srcs in people.items())
        reason = follow.reason if status == follow.base[0] else ""
        self._link.send_status(
            follow.hearing_id, Recording(status=cast(Any, status), detail=text, reason=reason, missing=missing)
        )

    async def _watch(self, follow: _Follow) -> None:
        """Every half second: who should be recorded and is not; tell everyone when that changes."""
        while True:
            await asyncio.sleep(MISSING_POLL_SECONDS)
            session = self._recorder.session(follow.hearing_id)
            found = session.missing() if session is not None else []
            missing = tuple(
                MissingTrack(
                    participant_id=m.participant_id,
                    name=follow.names.get(m.participant_id, m.participant_id),
                    source=Source(m.source),
                    reason=cast(Any, m.reason),
                    since=round(m.since, 3),
                )
                for m in found
            )
            key = [(m.participant_id, m.source, m.reason) for m in missing]
            if key != [(m.participant_id, m.source, m.reason) for m in follow.missing]:
                follow.missing = missing
                for m in missing:
                    log.info(
                        "recording_missing",
                        hearing_id=follow.hearing_id,
                        participant_id=m.participant_id,
                        source=str(m.source),
                        reason=m.reason,
                    )
                self._publish(follow)

    def _lanes(self, follow: _Follow) -> None:
        """Tell the recording session, from the roster, whose sources should be recorded now (or why not)."""
        session = self._recorder.session(follow.hearing_id)
        roster = follow.roster
        if session is None or roster is None or follow.state is not HearingState.in_session:
            return
        states: dict[tuple[str, str], str] = {}
        for entry in roster.participants:
            follow.names[entry.id] = entry.name
            for source in TABLE[entry.role].publish:
                states[(entry.id, source.value)] = _lane_state(entry, source)
        for key in list(session.lanes):
            if key not in states:
                states[key] = "removed" if key[0] in follow.removed else "left"
        now = time.time()
        for (pid, src), state in sorted(states.items()):
            session.lane(pid, src, state, at=now)

    async def follow(self, hearing_id: str) -> None:
        """Join ``hearing_id``'s live room as the hidden recorder (once)."""
        follow = self._follows.get(hearing_id)
        if follow is not None and not follow.detached:
            return
        if follow is None:
            follow = self._follows[hearing_id] = _Follow(hearing_id)
        follow.detached, follow.state = False, None
        info = ParticipantInfo(id=self.participant_id, name="Recorder", role=Role.recorder, site="internal")
        try:
            # What the session line needs is read now: the session starts the moment the state says so.
            await self._refresh(follow)
            self._node.attach_recorder(hearing_id, self.participant_id, self._recorder)
            follow.conn = await self._link.join(hearing_id, info)
        except (LinkRefused, DomainError) as exc:  # the room refused (adjourned, cancelled, gone): a named refusal
            log.warning("recorder_join_refused", hearing_id=hearing_id, error=str(exc))
            self._join_failed(follow)
            return
        except LinkError as exc:  # signaling unreachable: named, the hearing carries on (a later room joins again)
            log.warning("recorder_join_failed", hearing_id=hearing_id, error=str(exc))
            self._join_failed(follow)
            return
        except Exception:  # anything else is a bug or an outage: logged with its traceback, the hearing carries on
            log.exception("recorder_join_failed", hearing_id=hearing_id)
            self._join_failed(follow)
            return
        if follow.detached or self._follows.get(hearing_id) is not follow:
            return  # everyone left while the recorder was joining: the room was given up at once
        follow.poller = asyncio.get_running_loop().create_task(self._poll_audit(follow))
        follow.watcher = asyncio.get_running_loop().create_task(self._watch(follow))

    def forget(self, hearing_id: str) -> None:
        """The hub gave up the hearing's room (nobody left in it): stop polling and feeding until someone is back.

        With no recording session open nothing is kept; with one, the follow stays (detached) so the next
        room's join carries on the same session and audit sequence.
        """
        follow = self._follows.get(hearing_id)
        if follow is None or follow.sealing:
            return
        for task in (follow.poller, follow.watcher):
            if task is not None:
                task.cancel()
        follow.poller = follow.watcher = None
        self._node.detach_recorder(hearing_id, self.participant_id, "room_closed")
        if self._recorder.session(hearing_id) is None:
            self._follows.pop(hearing_id, None)
        else:
            follow.detached = True

    def _join_failed(self, follow: _Follow) -> None:
        """The recorder could not join: undo the attach and, if the hearing is live, tell its participants."""
        hearing_id = follow.hearing_id
        self._node.detach_recorder(hearing_id, self.participant_id, "refused")
        self._follows.pop(hearing_id, None)
        if follow.hearing is not None and follow.hearing.state in LIVE:
            # People are in a hearing that is not being recorded: they must know.
            self.status(hearing_id, "degraded", {"reason": "recorder_join_failed"})

    # --- what the session tells the recorder ------------------------------------------------------

    def on_message(self, hearing_id: str, message: Reply) -> None:
        """Drive the archive from the session messages the hidden participant receives."""
        follow = self._follows.get(hearing_id)
        if follow is None:
            return
        if isinstance(message, Joined):
            follow.roster = RosterMsg(participants=message.roster)
            self._change(follow, message.hearing.state)
        elif isinstance(message, StateMsg):
            self._change(follow, message.state)
        elif isinstance(message, RosterMsg):
            follow.roster = message
            self._consultations(follow, message)
            self._lanes(follow)

    def on_audit_intent(self, hearing_id: str, trace: AuditIntent) -> None:
        """A consultation is about to begin: withhold its members from this moment, before the store has answered.

        The audit event's own time comes from the store, a few milliseconds (on
        a loaded machine, tens) after the decision; a frame captured in between
        would otherwise be written before :meth:`on_audit` excludes it. The
        end of a consultation is not taken early: its members are recorded
        again only from the stored time of ``consultation_ended``.
        """
        if trace.action != "consultation_started":
            return
        follow = self._follows.get(hearing_id)
        if follow is None:
            return
        ids = [str(pid) for pid in trace.data.get("participant_ids", ())]
        follow.excluded.update(ids)
        session = self._recorder.session(hearing_id)
        if session is not None:
            at = time.time()
            for pid in ids:
                session.exclude(pid, "consultation_excluded", at=at)

    def on_audit(self, hearing_id: str, event: AuditEvent) -> None:
        """A consultation begins or ends: exclude its members from that moment on the audit trail's clock.

        The audit event is stored before the node is told to change who
        receives whom, and its time is the consultation's authoritative time;
        the recorder then withholds every frame *captured* inside the
        consultation, whenever it arrives (the roster comes later and a loaded
        node may still deliver frames from before the end long after it).
        """
        follow = self._follows.get(hearing_id)
        if follow is None:
            return
        if event.action in ("participant_removed", "participant_ejected"):
            follow.removed.add(str(event.data.get("participant_id", "")))
        elif event.action == "participant_joined":
            follow.removed.discard(event.actor)
        if event.action not in ("consultation_started", "consultation_ended"):
            return
        ids = [str(pid) for pid in event.data.get("participant_ids", ())]
        at = event.at.timestamp()
        session = self._recorder.session(hearing_id)
        if event.action == "consultation_started":
            follow.excluded.update(ids)
            if session is not None:
                for pid in ids:
                    excluded = session.excluded.get(pid)
                    if excluded is not None and excluded[1] > at:
                        # The intent reached this recorder late (over a loaded bus): the stored time is earlier
                        # and wins, so frames queued meanwhile are still withheld on the writer thread.
                        session.excluded[pid] = (excluded[0], at)
                    session.exclude(pid, "consultation_excluded", at=at)
        else:
            follow.excluded.difference_update(ids)
            if session is not None:
                for pid in ids:
                    session.include(pid, at=at)

    def on_closed(self, hearing_id: str, code: int, reason: str) -> None:
        """The session closed the recorder's connection (adjourn or shutdown)."""
        log.info("recorder_connection_closed", hearing_id=hearing_id, code=code, reason=reason)

    def _consultations(self, follow: _Follow, roster: RosterMsg) -> None:
        # The audit events (on_audit) set the times; this catches what they cannot name (a member who left).
        session = self._recorder.session(follow.hearing_id)
        consulting = {p.id for p in roster.participants if p.placement is Placement.consultation}
        if session is not None:
            for pid in sorted(consulting - follow.excluded):
                session.exclude(pid, "consultation_excluded")
            for pid in sorted(follow.excluded - consulting):
                session.include(pid)
        follow.excluded = consulting

    def _change(self, follow: _Follow, state: HearingState) -> None:
        """Act on a state change at once, with no await.

        The session sends the state message before the node commands that go
        with it, so the recording session exists (or is paused) before the
        node feeds (or stops feeding) it: the keyframe the node asks for when
        a feed starts is not lost to a session still being set up.
        """
        if state == follow.state:
            return
        follow.state = state
        if state in (HearingState.adjourned, HearingState.cancelled):
            self._spawn(self._locked(follow, self._finish))
            return
        if follow.sealing:
            return
        session = self._recorder.session(follow.hearing_id)
        if state is HearingState.in_session:
            if session is None and follow.hearing is not None:
                session = self._recorder.start_session(follow.hearing, follow.sites)
                for pid in sorted(follow.excluded):
                    session.exclude(pid, "consultation_excluded")
                self._spawn(self._locked(follow, self._pull_now))
            elif session is not None and session.paused:
                session.resume()
            self._lanes(follow)
        elif state is HearingState.recess and session is not None:
            session.pause("recess")
        elif state is HearingState.open:
            # Booked participants may have changed since the recorder joined: the session line lists them.
            self._spawn(self._locked(follow, self._refresh))

    async def _refresh(self, follow: _Follow) -> None:
        follow.hearing = await self._store.get_hearing(follow.hearing_id)
        follow.sites = {s.id: s for s in await self._store.list_sites()}

    async def _pull_now(self, follow: _Follow) -> None:
        session = self._recorder.session(follow.hearing_id)
        if session is not None:
            await self._pull_audit(follow, session)

    async def _locked(self, follow: _Follow, work: Callable[[_Follow], Awaitable[None]]) -> None:
        async with follow.lock:
            await work(follow)

    async def seal_before_close(self, hearing_id: str) -> None:
        """The hearing adjourns: stop and seal now, while its participants are still connected to hear it.

        The session awaits this (bounded) before it tells everyone and closes
        their connections; the adjournment's own audit event is in the store
        already and goes into the archive before the seal.
        """
        follow = self._follows.get(hearing_id)
        if follow is None:
            return
        async with follow.lock:
            await self._seal(follow)

    async def _seal(self, follow: _Follow) -> None:
        if follow.sealing:
            return
        follow.sealing = True
        if follow.poller is not None:
            follow.poller.cancel()
        if follow.watcher is not None:
            follow.watcher.cancel()
        follow.missing = ()
        self._node.detach_recorder(follow.hearing_id, self.participant_id, "ended")
        session = self._recorder.session(follow.hearing_id)
        if session is None:
            return
        await self._pull_audit(follow, session)
        session.stop()
        try:
            # Shielded: if the session stops waiting (its bound), the writer still writes the seal.
            seal = await asyncio.shield(asyncio.wrap_future(session.seal()))
            log.info("recording_sealed", hearing_id=follow.hearing_id, head=seal.get("chain_head"))
        except Exception as exc:
            log.error("recording_seal_failed", hearing_id=follow.hearing_id, error=str(exc))

    async def _finish(self, follow: _Follow) -> None:
        await self._seal(follow)
        # Let go of the hearing first: over the bus the leave is a request that may wait out its retries (the room
        # is being closed), and nothing of this hearing is followed any more meanwhile.
        if self._follows.get(follow.hearing_id) is follow:
            self._follows.pop(follow.hearing_id, None)
        if follow.conn:
            with contextlib.suppress(Exception):
                await self._link.leave(follow.conn)

    # --- audit interleaving ------------------------------------------------------------------------

    async def _poll_audit(self, follow: _Follow) -> None:
        while True:
            await asyncio.sleep(AUDIT_POLL_SECONDS)
            session = self._recorder.session(follow.hearing_id)
            if session is not None:
                try:
                    async with follow.lock:
                        await self._pull_audit(follow, session)
                except Exception as exc:  # a store hiccup must not end recording; the next poll catches up
                    log.warning("audit_pull_failed", hearing_id=follow.hearing_id, error=str(exc))

    async def _pull_audit(self, follow: _Follow, session: RecordingSession) -> None:
        for event in await self._store.audit_since(follow.hearing_id, follow.audit_seq):
            session.record_audit(event.model_dump(mode="json"))
            follow.audit_seq = event.seq

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- RecorderEvents: what the session link delivers ------------------------------------------

    async def room_opened(self, hearing_id: str) -> None:
        """A live room opened: join it."""
        await self.follow(hearing_id)

    def room_forgotten(self, hearing_id: str) -> None:
        """The live room was given up."""
        self.forget(hearing_id)

    def session_message(self, hearing_id: str, message: Reply) -> None:
        """A session message to the hidden participant."""
        self.on_message(hearing_id, message)

    def session_closed(self, hearing_id: str, code: int, reason: str) -> None:
        """The session closed the hidden participant's connection."""
        self.on_closed(hearing_id, code, reason)

    def audit_intent(self, hearing_id: str, intent: AuditIntent) -> None:
        """An audit event is about to be stored."""
        self.on_audit_intent(hearing_id, intent)

    def audit_event(self, hearing_id: str, event: AuditEvent) -> None:
        """An audit event was stored."""
        self.on_audit(hearing_id, event)

    async def closing(self, hearing_id: str) -> None:
        """The hearing adjourns: seal now."""
        await self.seal_before_close(hearing_id)

    def following(self) -> tuple[str, ...]:
        """The hearings this recorder follows now (for its heartbeat)."""
        return tuple(sorted(self._follows))


def build_service(
    link: SessionLink,
    frames: FrameSource,
    store: Store,
    data_dir: Path,
    recorder_id: str,
    *,
    segment_seconds: float = 10.0,
    queue_frames: int = 4096,
) -> RecordingService:
    """A recorder writing under ``data_dir`` and the service that drives it (status and keyframe requests wired)."""
    service: RecordingService | None = None

    def status(hearing_id: str, status: str, detail: dict[str, Any]) -> None:
        if service is not None:
            service.status(hearing_id, status, detail)

    recorder = Recorder(
        data_dir,
        recorder_id,
        segment_seconds=segment_seconds,
        max_queued_frames=queue_frames,
        on_status=status,
        on_keyframe_needed=frames.request_keyframe,
    )
    service = RecordingService(link, frames, recorder, store)
    return service
