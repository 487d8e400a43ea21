"""The WebSocket session through the real server: join, lobby, moderation, resume, session actions, schema.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node
(peers are created but no media is negotiated here; media and bad input: tests/e2e/test_ws_*).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from protocol.client import parse_server_message
from signaling.ws import WsSettings

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]


async def test_schema_lists_every_message(court: Court) -> None:
    """GET /api/v1/schema/ws.json serves a JSON Schema naming every client and server message type."""
    async with court.http.get(court.base_url + "/api/v1/schema/ws.json") as resp:
        assert resp.status == 200
        schema = await resp.json()
    defs = schema["$defs"]
    client = {defs[r["$ref"].split("/")[-1]]["properties"]["type"]["const"] for r in defs["ClientMessage"]["oneOf"]}
    server = {defs[r["$ref"].split("/")[-1]]["properties"]["type"]["const"] for r in defs["ServerMessage"]["oneOf"]}
    assert client >= {"join", "offer", "answer", "candidate", "publish", "admit", "deny", "remove", "mute"}
    assert client >= {"session", "call_witness", "release_witness", "consult", "end_consult", "leave", "ping"}
    assert server >= {"joined", "admitted", "denied", "removed", "roster", "state", "offer", "answer", "candidate"}
    assert server >= {"tracks", "speaker", "muted", "recording", "error", "pong"}


async def test_lobby_admit_and_session_persisted(court: Court) -> None:
    """Defendant waits in the lobby until the judge admits; open/start are stored and every step is audited."""
    b = await court.book(("judge", "defendant"))
    judge, joined = await court.join(b.tokens["judge"])
    assert joined["placement"] == "courtroom"
    parse_server_message(json.dumps(joined))
    defendant, djoined = await court.join(b.tokens["defendant"])
    assert djoined["placement"] == "lobby"
    assert djoined["permissions"]["receives"] is False
    roster = await judge.expect("roster", lambda m: any(p["placement"] == "lobby" for p in m["participants"]))
    assert {p["id"] for p in roster["participants"]} == {b.ids["judge"], b.ids["defendant"]}
    answer = await judge.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    assert answer["type"] == "roster"
    await defendant.expect("admitted")
    placement = await defendant.expect("placement")
    assert placement["placement"] == "courtroom"
    state = await judge.request_ok("session", "state", action="open")
    assert state["state"] == "open"
    state = await judge.request_ok("session", "state", action="start")
    assert state["state"] == "in_session"
    seen = await defendant.expect("state", lambda m: m["state"] == "in_session")
    assert "camera" in seen["permissions"]["publish"]
    stored = await court.store.get_hearing(b.hearing_id)
    assert stored.state.value == "in_session"
    actions = [e.action for e in await court.store.audit_log(b.hearing_id)]
    for fact in ("participant_joined", "participant_admitted", "hearing_opened", "hearing_started"):
        assert fact in actions


async def test_second_connection_closes_first_with_4009(court: Court) -> None:
    """Joining again without the resume key closes the earlier connection with 4009."""
    b = await court.book(("judge",))
    first, _ = await court.join(b.tokens["judge"])
    second, joined = await court.join(b.tokens["judge"])
    assert await first.close_code() == 4009
    assert joined["resumed"] is False
    assert (await second.ping())["type"] == "pong"


async def test_resume_keeps_placement(court: Court) -> None:
    """Reconnecting with the resume key within the grace period keeps participant id and placement."""
    b = await court.book(("judge", "defendant"))
    judge, _ = await court.join(b.tokens["judge"])
    defendant, joined = await court.join(b.tokens["defendant"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    await defendant.expect("admitted")
    await defendant.close()
    await judge.expect("roster", lambda m: any(not p["connected"] for p in m["participants"]))
    _again, rejoined = await court.join(b.tokens["defendant"], resume=joined["resume"])
    assert rejoined["resumed"] is True
    assert rejoined["participant"]["id"] == b.ids["defendant"]
    assert rejoined["placement"] == "courtroom"
    actions = [e.action for e in await court.store.audit_log(b.hearing_id)]
    assert "participant_disconnected" in actions
    assert "participant_resumed" in actions


async def test_remove_closes_4010_and_rejoin_refused(court: Court) -> None:
    """A removed participant is told, closed with 4010, and their link no longer joins (reissued: revoked, 4001)."""
    b = await court.book(("judge", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    observer, _ = await court.join(b.tokens["observer"])
    await judge.request_ok("remove", "roster", participant_id=b.ids["observer"], reason="disturbance")
    assert (await observer.expect("removed"))["reason"] == "disturbance"
    assert await observer.close_code() == 4010
    client = await court.connect()
    await client.send("join", token=b.tokens["observer"])
    assert (await client.expect("error"))["code"] == "revoked"
    assert await client.close_code() == 4001
    actions = [e.action for e in await court.store.audit_log(b.hearing_id)]
    assert "participant_removed" in actions


async def test_deny_closes_4003(court: Court) -> None:
    """A denied participant in the lobby gets denied and close 4003."""
    b = await court.book(("judge", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    observer, _ = await court.join(b.tokens["observer"])
    await judge.request_ok("deny", "roster", participant_id=b.ids["observer"], reason="no seats")
    assert (await observer.expect("denied"))["reason"] == "no seats"
    assert await observer.close_code() == 4003


async def test_witness_called_and_released(court: Court) -> None:
    """A witness waits in the witness lobby, is called into the courtroom and released back."""
    b = await court.book(("judge", "witness"))
    judge, _ = await court.join(b.tokens["judge"])
    witness, joined = await court.join(b.tokens["witness"])
    assert joined["placement"] == "witness_lobby"
    await judge.request_ok("call_witness", "roster", participant_id=b.ids["witness"])
    assert (await witness.expect("placement"))["placement"] == "courtroom"
    await judge.request_ok("release_witness", "roster", participant_id=b.ids["witness"])
    assert (await witness.expect("placement"))["placement"] == "witness_lobby"


async def test_mute_broadcast_and_self_unmute_refused(court: Court) -> None:
    """The judge mutes the prosecutor: everyone hears of it; the prosecutor cannot lift the court's mute."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["prosecutor"])
    muted = await judge.request_ok("mute", "muted", participant_id=b.ids["prosecutor"], source="microphone")
    assert muted["by"] == b.ids["judge"]
    seen = await prosecutor.expect("muted")
    assert seen["participant_id"] == b.ids["prosecutor"]
    reply = await prosecutor.request(
        "mute", "muted", participant_id=b.ids["prosecutor"], source="microphone", muted=False
    )
    assert reply["code"] == "muted_by_court"  # named: only the court lifts a court mute
    reply = await prosecutor.request("mute", "muted", participant_id=b.ids["prosecutor"], source="camera")
    assert reply["type"] == "muted"


@pytest.mark.parametrize("ws_settings", [WsSettings(resume_grace_seconds=0.3)])
async def test_grace_expiry_removes_from_roster(court: Court) -> None:
    """A participant who does not come back within the grace period leaves the roster."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, joined = await court.join(b.tokens["prosecutor"])
    judge.skip_unread()
    await prosecutor.close()
    await judge.expect("roster", lambda m: {p["id"] for p in m["participants"]} == {b.ids["judge"]})
    _again, rejoined = await court.join(b.tokens["prosecutor"], resume=joined["resume"])
    assert rejoined["resumed"] is False
    assert rejoined["placement"] == "lobby"


async def test_adjourn_closes_every_connection(court: Court) -> None:
    """Adjourning tells everyone the new state, closes every socket normally, and later joins are refused (4003)."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["prosecutor"])
    for action in ("open", "start", "recess", "resume", "adjourn"):
        reply = await judge.request_ok("session", "state", action=action)
        assert reply["type"] == "state", reply
    assert (await prosecutor.expect("state", lambda m: m["state"] == "adjourned"))["permissions"]["publish"] == []
    assert await prosecutor.close_code() == 1000
    assert await judge.close_code() == 1000
    late = await court.connect()
    await late.send("join", token=b.tokens["prosecutor"])
    assert (await late.expect("error"))["code"] == "hearing_closed"
    assert await late.close_code() == 4003
    actions = [e.action for e in await court.store.audit_log(b.hearing_id)]
    for fact in ("hearing_recessed", "hearing_resumed", "hearing_adjourned"):
        assert fact in actions


async def test_consult_with_wrong_roles_is_refused(court: Court) -> None:
    """A consultation of anyone but a defendant with counsel is refused with invalid_target."""
    b = await court.book(("judge", "defendant", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    for name in ("defendant", "prosecutor"):
        await court.join(b.tokens[name])
        await judge.request_ok("admit", "roster", participant_id=b.ids[name])
    reply = await judge.request("consult", "roster", participant_ids=[b.ids["defendant"], b.ids["prosecutor"]])
    assert (reply["type"], reply["code"]) == ("error", "invalid_target")


class _Inbox:
    """An in-process outlet that keeps nothing (the joins under test are refused or not looked at)."""

    def send(self, message: object) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


async def test_refused_join_starts_no_listener_and_leaves_no_connection(court: Court) -> None:
    """A refused join (cancelled hearing) runs no room listener and leaves no connection; a real join runs them once."""
    from protocol.client import ParticipantInfo
    from rooms.model import Role
    from signaling.session import SessionError
    from tests.ws_fixtures import eventually

    started: list[str] = []

    async def listener(hearing_id: str) -> None:
        started.append(hearing_id)

    court.hub.room_listeners.append(listener)
    dead = await court.book(("judge",))
    status, _ = await court.rest("DELETE", f"/api/v1/hearings/{dead.hearing_id}")
    assert status in (200, 204)
    conns_before = len(court.hub._conns)
    info = ParticipantInfo(id="rec-x", name="Recorder", role=Role.recorder, site="internal")
    with pytest.raises(SessionError):
        await court.hub.join_internal(dead.hearing_id, info, _Inbox())
    assert len(court.hub._conns) == conns_before
    assert dead.hearing_id not in court.hub.rooms
    live = await court.book(("judge",))
    judge, _ = await court.join(live.tokens["judge"])
    assert await eventually(lambda: started == [live.hearing_id])
    assert (await judge.ping())["type"] == "pong"
    assert dead.hearing_id not in started
