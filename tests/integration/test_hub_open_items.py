"""The session hub frees what nobody uses, keeps going when one effect fails, and makes removals stick.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node
(peers are created, no media negotiated).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import structlog

import signaling.session
from protocol.client import ParticipantInfo, Removed, Reply
from rooms.model import Role

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]


class Inbox:
    """An in-process outlet (like the recorder's): keeps what the session sends; may fail on one message type."""

    def __init__(self, fail_on: type[Reply] | None = None) -> None:
        self.messages: list[Reply] = []
        self.closed: tuple[int, str] | None = None
        self.fail_on = fail_on

    def send(self, message: Reply) -> None:
        if self.fail_on is not None and isinstance(message, self.fail_on):
            raise RuntimeError("outlet broke")
        self.messages.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def eventually(check: object, within: float = 10.0) -> bool:
    """Whether ``check()`` becomes true within ``within`` seconds (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return bool(check())  # type: ignore[operator]


async def test_a_room_only_the_recorder_holds_is_freed(court: Court) -> None:
    """When the last visible participant leaves, the hub room and the node room go, the recorder is let go."""
    b = await court.book(("judge",))
    forgotten: list[str] = []
    court.hub.forgotten_listeners.append(forgotten.append)
    judge, _ = await court.join(b.tokens["judge"])
    recorder = Inbox()
    info = ParticipantInfo(id="rec-1", name="Recorder", role=Role.recorder, site="internal")
    await court.hub.join_internal(b.hearing_id, info, recorder)
    assert court.node.stats()[0] == 1
    conns_before = len(court.hub._conns)
    await judge.send("leave")
    assert await judge.close_code() == 1000
    assert await eventually(lambda: b.hearing_id not in court.hub.rooms)
    assert forgotten == [b.hearing_id]
    assert recorder.closed is not None
    assert court.node.stats() == (0, 0)
    assert len(court.hub._conns) <= conns_before - 2  # the judge's and the recorder's connections are gone


async def test_a_recorder_joining_an_empty_room_lets_it_go_at_once(court: Court) -> None:
    """A recorder that arrives after everyone left does not keep a room (nor a node room) alive."""
    b = await court.book(("judge",))
    forgotten: list[str] = []
    court.hub.forgotten_listeners.append(forgotten.append)
    info = ParticipantInfo(id="rec-1", name="Recorder", role=Role.recorder, site="internal")
    recorder = Inbox()
    await court.hub.join_internal(b.hearing_id, info, recorder)
    assert b.hearing_id not in court.hub.rooms
    assert forgotten == [b.hearing_id]
    assert recorder.closed is not None
    assert court.node.stats()[0] == 0


async def test_a_failing_effect_does_not_skip_the_next_ones(court: Court) -> None:
    """A participant whose outlet breaks on `removed` is still disconnected, and the removal still sticks."""
    b = await court.book(("judge", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    hearing = await court.store.get_hearing(b.hearing_id)
    broken = Inbox(fail_on=Removed)
    conn = court.hub.attach(broken)
    observer = hearing.participant(b.ids["observer"])
    assert observer is not None
    info = ParticipantInfo(id=observer.id, name=observer.name, role=observer.role, site=observer.site_id)
    await court.hub.join(conn, info, hearing, None)
    with structlog.testing.capture_logs() as logs:
        await judge.request_ok("remove", "roster", participant_id=observer.id)
    assert broken.closed is not None
    assert broken.closed[0] == 4010
    assert any(e["event"] == "session_effect_failed" for e in logs)
    stored = await court.store.get_hearing(b.hearing_id)
    assert stored.participant(observer.id).token_id != observer.token_id  # type: ignore[union-attr]


async def test_a_websocket_removal_outlives_the_room(court: Court) -> None:
    """A participant removed over the WebSocket cannot come back with their link, even after the room was freed."""
    b = await court.book(("judge", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    observer, _ = await court.join(b.tokens["observer"])
    await judge.request_ok("remove", "roster", participant_id=b.ids["observer"], reason="disturbance")
    assert await observer.close_code() == 4010
    audit = [(e.actor, e.action, e.data) for e in await court.store.audit_log(b.hearing_id)]
    reissue = {"participant_id": b.ids["observer"], "reason": "removed"}
    assert (b.ids["judge"], "participant_link_reissued", reissue) in audit
    await judge.send("leave")
    assert await judge.close_code() == 1000
    assert await eventually(lambda: b.hearing_id not in court.hub.rooms)
    again = await court.connect()
    await again.send("join", token=b.tokens["observer"])
    assert (await again.expect("error"))["code"] == "revoked"
    assert await again.close_code() == 4001
    # A link the court issues afterwards lets the participant back.
    status, link = await court.rest("POST", f"/api/v1/hearings/{b.hearing_id}/participants/{b.ids['observer']}/link")
    assert status == 200, link
    judge, _ = await court.join(b.tokens["judge"])
    _, joined = await court.join(link["token"])
    assert joined["placement"] == "lobby"


async def test_the_clerk_cannot_remove_or_mute_the_judge(court: Court) -> None:
    """Over the WebSocket the clerk's remove and mute of the judge are refused; the judge stays and can adjourn."""
    b = await court.book(("judge", "clerk"))
    judge, _ = await court.join(b.tokens["judge"])
    clerk, _ = await court.join(b.tokens["clerk"])
    await clerk.request_ok("session", "state", action="open")
    refused = await clerk.request("remove", "roster", participant_id=b.ids["judge"])
    assert (refused["type"], refused["code"]) == ("error", "not_allowed")
    refused = await clerk.request("mute", "muted", participant_id=b.ids["judge"], source="microphone")
    assert (refused["type"], refused["code"]) == ("error", "not_allowed")
    refused = await clerk.request("session", "state", action="start")
    assert (refused["type"], refused["code"]) == ("error", "not_allowed")
    await judge.request_ok("session", "state", action="start")
    await judge.request_ok("session", "state", action="adjourn")
    assert await judge.close_code() == 1000


async def test_toggles_through_the_hub_are_flushed_after_the_window(
    court: Court, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm of camera toggles leaves a handful of audit events, the last one with the final state."""
    monkeypatch.setattr(signaling.session, "AUDIT_COALESCE_SECONDS", 0.3)
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    for i in range(40):
        await judge.send("publish", source="camera", enabled=i % 2 == 0)
    await judge.ping()

    def toggles() -> list[dict[str, object]]:
        return [dict(e.data) for e in events if e.action == "publishing_changed"]

    events = list(await court.store.audit_log(b.hearing_id))
    assert len(toggles()) == 1
    for _ in range(50):
        await asyncio.sleep(0.2)
        events = list(await court.store.audit_log(b.hearing_id))
        if len(toggles()) >= 2:
            break
    assert toggles()[-1] == {"source": "camera", "enabled": False, "changes": 39}
    assert len(toggles()) <= 3


async def test_shutdown_waits_for_the_tasks_it_cancels(court: Court) -> None:
    """SessionHub.shutdown returns only after its cancelled tasks finished their cleanup; failures are logged."""
    cleaned: list[str] = []

    async def listener(hearing_id: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # cleanup that itself awaits
            cleaned.append(hearing_id)
            raise

    async def failing(hearing_id: str) -> None:
        raise RuntimeError(f"listener broke for {hearing_id}")

    court.hub.room_listeners.extend([listener, failing])
    b = await court.book(("judge",))
    with structlog.testing.capture_logs() as logs:
        await court.join(b.tokens["judge"])
        await asyncio.sleep(0.1)
    assert any(e["event"] == "session_task_failed" for e in logs)
    await court.hub.shutdown()
    assert cleaned == [b.hearing_id]
