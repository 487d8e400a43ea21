"""The recorder as a hidden internal participant of the live session (role recorder, not in any roster)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

from protocol.client import ParticipantInfo, Reply
from protocol.frames import EncodedFrame, SenderReport, TrackInfo
from rooms.model import Role

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]


class CountingSink:
    """A FrameSink that counts frames per publishing participant (what a recorder would archive)."""

    def __init__(self) -> None:
        self.tracks: dict[str, TrackInfo] = {}
        self.frames: Counter[str] = Counter()
        self.stopped: list[tuple[str, str]] = []

    def track_started(self, info: TrackInfo) -> None:
        self.tracks[info.track_id] = info

    def frame(self, frame: EncodedFrame) -> None:
        info = self.tracks.get(frame.track_id)
        if info is not None:
            self.frames[info.participant_id] += 1

    def sender_report(self, report: SenderReport) -> None:
        pass

    def track_stopped(self, track_id: str, reason: str) -> None:
        self.stopped.append((track_id, reason))


class Inbox:
    """An in-process outlet: keeps what the session sends to the recorder."""

    def __init__(self) -> None:
        self.messages: list[Reply] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: Reply) -> None:
        self.messages.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_hidden_recorder_receives_only_in_session(court: Court) -> None:
    """A recorder joined in-process is in no roster and gets media only while the hearing is in session."""
    from tests.ws_fixtures import eventually

    b = await court.book(("judge", "defendant"))
    judge = await court.participant("judge", b.tokens["judge"], tag=1)
    defendant = await court.participant("defendant", b.tokens["defendant"], tag=3)
    await judge.client.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    await defendant.client.expect("admitted")
    for p in (judge, defendant):
        await p.start_media()
    sink, inbox = CountingSink(), Inbox()
    court.node.attach_recorder(b.hearing_id, "rec-1", sink)
    info = ParticipantInfo(id="rec-1", name="Recorder", role=Role.recorder, site="internal")
    conn = await court.hub.join_internal(b.hearing_id, info, inbox)
    opened = await judge.client.request_ok("session", "state", action="open")
    assert opened["type"] == "state", opened
    assert await eventually(lambda: judge.media.frames("video") > 10)
    assert sum(sink.frames.values()) == 0
    started = await judge.client.request_ok("session", "state", action="start")
    assert started["type"] == "state", started
    assert await eventually(lambda: sink.frames[judge.id] > 10 and sink.frames[defendant.id] > 10)
    rosters = [m for m in judge.client.messages if m["type"] == "roster"]
    assert rosters
    assert all("rec-1" not in {p["id"] for p in m["participants"]} for m in rosters)
    recessed = await judge.client.request_ok("session", "state", action="recess")
    assert recessed["type"] == "state", recessed
    assert await eventually(lambda: len(sink.stopped) >= 4)
    # In recess the recorder gets nothing: the counts stay flat while the participants keep publishing.
    at_recess = dict(sink.frames)
    await asyncio.sleep(1.0)
    assert dict(sink.frames) == at_recess
    await court.hub.detach(conn)
