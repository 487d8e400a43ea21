"""What the bench's console needs from the WebSocket session: the court's time zone and the scheduled window, the
session's start, hand-raise and "mute everyone but the bench" (issue 9, item 6).

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node (no media negotiated here).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from signaling.ws import WsSettings
from tests.ws_fixtures import eventually

if TYPE_CHECKING:
    from tests.ws_fixtures import Booking, Court, WsClient

pytest_plugins = ["tests.ws_fixtures"]

CAST = ("judge", "clerk", "prosecutor", "counsel", "defendant", "observer")


@pytest.fixture
def ws_settings() -> WsSettings:
    """A court in Paris, so the time zone that reaches the client is not the default."""
    return WsSettings(resume_grace_seconds=30, court_timezone="Europe/Paris")


async def _seated(court: Court, roles: tuple[str, ...] = CAST) -> tuple[Booking, dict[str, WsClient]]:
    """Everyone joined and in the courtroom (the judge admits the lobby), the hearing in session."""
    b = await court.book(roles)
    people: dict[str, WsClient] = {}
    for name in roles:
        client, joined = await court.join(b.tokens[name])
        people[name] = client
        if joined["placement"] == "lobby":
            await people["judge"].request_ok("admit", "roster", participant_id=b.ids[name])
            await client.expect("admitted")
    for action in ("open", "start"):
        await people["judge"].request_ok("session", "state", action=action)
    for name in roles[1:]:
        await people[name].expect("state", lambda m: m["state"] == "in_session")
    return b, people


def _entry(roster: dict[str, Any], pid: str) -> dict[str, Any]:
    return next((p for p in roster["participants"] if p["id"] == pid), {})


async def _audit_actions(court: Court, hearing_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.actor, e.action, e.data) for e in await court.store.audit_log(hearing_id)]


async def test_joined_carries_time_zone_window_and_session_start(court: Court) -> None:
    """`joined.hearing` names the court's time zone and the booked window; the session start reaches everyone."""
    b = await court.book(("judge", "defendant"))
    judge, joined = await court.join(b.tokens["judge"])
    hearing = joined["hearing"]
    assert hearing["timezone"] == "Europe/Paris"
    assert datetime.fromisoformat(hearing["starts_at"]) == datetime.fromisoformat(b.body["starts_at"])
    assert datetime.fromisoformat(hearing["ends_at"]) == datetime.fromisoformat(b.body["ends_at"])
    assert datetime.fromisoformat(hearing["starts_at"]).utcoffset() is not None
    assert hearing["in_session_since"] is None
    await judge.request_ok("session", "state", action="open")
    before = time.time()
    started = await judge.request_ok("session", "state", action="start")
    since = started["in_session_since"]
    assert since is not None
    assert before - 5 <= since <= time.time() + 5
    _, later = await court.join(b.tokens["defendant"])
    assert later["hearing"]["in_session_since"] == since
    recess = await judge.request_ok("session", "state", action="recess")
    assert recess["in_session_since"] is None
    resumed = await judge.request_ok("session", "state", action="resume")
    assert resumed["in_session_since"] is not None
    assert resumed["in_session_since"] >= since


async def test_session_start_survives_a_new_room(court: Court) -> None:
    """A room made again mid-session (everyone had left) reads the session's start from the audit chain."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    await judge.request_ok("session", "state", action="open")
    started = await judge.request_ok("session", "state", action="start")
    await judge.send("leave")
    await judge.close_code()
    assert await _wait_no_room(court, b.hearing_id)
    _, again = await court.join(b.tokens["judge"])
    assert again["hearing"]["in_session_since"] == pytest.approx(started["in_session_since"], abs=1.0)


async def _wait_no_room(court: Court, hearing_id: str) -> bool:
    return await eventually(lambda: hearing_id not in court.hub.rooms)


async def test_raise_and_lower_hand(court: Court) -> None:
    """Participants who may speak raise hands in order; only they or the judge/clerk lower them; audited."""
    b, p = await _seated(court)
    state = [m for m in p["defendant"].messages if m["type"] == "state"][-1]
    assert state["permissions"]["raise_hand"] is True
    judge_state = [m for m in p["judge"].messages if m["type"] == "state"][-1]
    assert judge_state["permissions"]["raise_hand"] is False
    assert "mute_all" in judge_state["permissions"]["actions"]
    raised = await p["defendant"].request_ok("raise_hand", "roster")
    first = _entry(raised, b.ids["defendant"])["hand_raised_at"]
    assert first is not None
    roster = await p["judge"].expect(
        "roster", lambda m: _entry(m, b.ids["defendant"]).get("hand_raised_at") is not None
    )
    assert _entry(roster, b.ids["prosecutor"])["hand_raised_at"] is None
    second = await p["prosecutor"].request_ok("raise_hand", "roster")
    assert _entry(second, b.ids["prosecutor"])["hand_raised_at"] >= first
    # Raising again changes nothing: the hand keeps its place in the queue.
    again = await p["defendant"].request_ok("raise_hand", "roster")
    assert _entry(again, b.ids["defendant"])["hand_raised_at"] == first

    for who in ("judge", "clerk", "observer"):
        refused = await p[who].request("raise_hand", "roster")
        assert (refused["type"], refused.get("code")) == ("error", "not_allowed"), who
    refused = await p["prosecutor"].request("lower_hand", "roster", participant_id=b.ids["defendant"])
    assert refused["type"] == "error"
    assert refused["code"] == "not_allowed"
    unknown = await p["judge"].request("lower_hand", "roster", participant_id="nobody")
    assert unknown["type"] == "error"
    assert unknown["code"] == "unknown_participant"
    bad = await p["judge"].request("lower_hand", "roster", participant_id=7)
    assert bad["type"] == "error"
    assert bad["code"] == "invalid_message"

    lowered = await p["clerk"].request_ok("lower_hand", "roster", participant_id=b.ids["defendant"])
    assert _entry(lowered, b.ids["defendant"])["hand_raised_at"] is None
    await p["defendant"].expect("roster", lambda m: _entry(m, b.ids["defendant"])["hand_raised_at"] is None)
    own = await p["prosecutor"].request_ok("lower_hand", "roster")
    assert _entry(own, b.ids["prosecutor"])["hand_raised_at"] is None

    events = await _audit_actions(court, b.hearing_id)
    assert (b.ids["defendant"], "hand_raised", {"participant_id": b.ids["defendant"]}) in events
    assert (b.ids["clerk"], "hand_lowered", {"participant_id": b.ids["defendant"]}) in events


async def test_hand_falls_when_its_owner_leaves_the_courtroom(court: Court) -> None:
    """A hand raised in the courtroom is lowered when its owner goes into a private consultation."""
    b, p = await _seated(court)
    await p["defendant"].request_ok("raise_hand", "roster")
    roster = await p["judge"].request_ok("consult", "roster", participant_ids=[b.ids["defendant"], b.ids["counsel"]])
    assert _entry(roster, b.ids["defendant"])["hand_raised_at"] is None
    placement = await p["defendant"].expect("placement")
    assert placement["permissions"]["raise_hand"] is False


async def test_mute_all_spares_the_bench_and_is_a_court_mute(court: Court) -> None:
    """`mute_all` mutes everyone's microphone but the judge's and clerk's, as the court; only the bench may send it."""
    b, p = await _seated(court)
    refused = await p["prosecutor"].request("mute_all", "roster")
    assert refused["type"] == "error"
    assert refused["code"] == "not_allowed"
    refused = await p["observer"].request("mute_all", "roster")
    assert refused["type"] == "error"
    assert refused["code"] == "not_allowed"
    bad = await p["judge"].request("mute_all", "roster", source="speakers")
    assert bad["type"] == "error"
    assert bad["code"] == "invalid_message"

    # Counsel muted themself first: that stays their own mute.
    await p["counsel"].request_ok("mute", "muted", participant_id=b.ids["counsel"], source="microphone")
    roster = await p["judge"].request_ok("mute_all", "roster")
    for who in ("prosecutor", "defendant"):
        entry = _entry(roster, b.ids[who])
        assert "microphone" in entry["muted"], who
        assert entry["muted_by_court"] == ["microphone"], who
        pid = b.ids[who]
        muted = await p[who].expect("muted", lambda m: bool(m["participant_id"] == pid))  # noqa: B023
        assert muted["by"] == b.ids["judge"]
        assert muted["muted"] is True
    counsel = _entry(roster, b.ids["counsel"])
    assert counsel["muted"] == ["microphone"]
    assert counsel["muted_by_court"] == []
    for who in ("judge", "clerk", "observer"):
        assert _entry(roster, b.ids[who])["muted"] == [], who

    # A court mute is not lifted by its owner; the bench still speaks.
    refused = await p["defendant"].request(
        "mute", "muted", participant_id=b.ids["defendant"], source="microphone", muted=False
    )
    assert refused["type"] == "error"
    events = await _audit_actions(court, b.hearing_id)
    (all_muted,) = [e for e in events if e[1] == "all_muted"]
    assert all_muted[0] == b.ids["judge"]
    assert set(all_muted[2]["participant_ids"]) == {b.ids["prosecutor"], b.ids["defendant"]}

    # The clerk lifts the court's mutes; the counsel's own mute stays.
    lifted = await p["clerk"].request_ok("mute_all", "roster", muted=False)
    assert _entry(lifted, b.ids["defendant"])["muted"] == []
    assert _entry(lifted, b.ids["counsel"])["muted"] == ["microphone"]
