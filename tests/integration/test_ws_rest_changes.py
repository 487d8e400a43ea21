"""The live hearing room following REST changes while people are connected (remove, relink, cancel, add, edit).

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node
(peers are created but no media is negotiated); REST calls use the admin key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms.model import HearingState

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]

HEARINGS = "/api/v1/hearings"


async def actions_of(court: Court, hearing_id: str) -> list[tuple[str, str, dict[str, object]]]:
    """(actor, action, data) of every audit event of the hearing, in order."""
    return [(e.actor, e.action, dict(e.data)) for e in await court.store.audit_log(hearing_id)]


async def test_rest_removal_disconnects_participant_with_4010(court: Court) -> None:
    """DELETE of a connected participant: removed + close 4010, roster updated, node peer closed, audited."""
    b = await court.book(("judge", "witness"))
    judge, _ = await court.join(b.tokens["judge"])
    witness, _ = await court.join(b.tokens["witness"])
    await judge.expect("roster", lambda m: b.ids["witness"] in {p["id"] for p in m["participants"]})
    assert court.node.peer(b.hearing_id, b.ids["witness"]) is not None
    status, body = await court.rest("DELETE", f"{HEARINGS}/{b.hearing_id}/participants/{b.ids['witness']}")
    assert status == 200, body
    assert (await witness.expect("removed"))["type"] == "removed"
    assert await witness.close_code() == 4010
    roster = await judge.expect("roster", lambda m: b.ids["witness"] not in {p["id"] for p in m["participants"]})
    assert {p["id"] for p in roster["participants"]} == {b.ids["judge"]}
    assert court.node.peer(b.hearing_id, b.ids["witness"]) is None
    assert (await judge.ping())["type"] == "pong"
    trail = await actions_of(court, b.hearing_id)
    ejected = [t for t in trail if t[1] == "participant_ejected"]
    assert ejected == [("key:ops", "participant_ejected", {"participant_id": b.ids["witness"], "reason": "unbooked"})]
    assert [t[1] for t in trail].index("participant_removed") < [t[1] for t in trail].index("participant_ejected")
    late = await court.connect()
    await late.send("join", token=b.tokens["witness"])
    assert (await late.expect("error"))["code"] == "revoked"
    assert await late.close_code() == 4001


async def test_rest_relink_closes_old_connection_with_4001(court: Court) -> None:
    """POST .../link: the connection that joined with the old link gets error revoked and close 4001; the new joins."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["prosecutor"])
    status, link = await court.rest("POST", f"{HEARINGS}/{b.hearing_id}/participants/{b.ids['prosecutor']}/link")
    assert status == 200, link
    assert (await prosecutor.expect("error"))["code"] == "revoked"
    assert await prosecutor.close_code() == 4001
    await judge.expect("roster", lambda m: b.ids["prosecutor"] not in {p["id"] for p in m["participants"]})
    assert court.node.peer(b.hearing_id, b.ids["prosecutor"]) is None
    fresh, joined = await court.join(link["token"])
    assert joined["participant"]["id"] == b.ids["prosecutor"]
    assert joined["placement"] == "lobby"
    await judge.expect("roster", lambda m: b.ids["prosecutor"] in {p["id"] for p in m["participants"]})
    old = await court.connect()
    await old.send("join", token=b.tokens["prosecutor"])
    assert (await old.expect("error"))["code"] == "revoked"
    assert await old.close_code() == 4001
    assert (await fresh.ping())["type"] == "pong"
    reasons = [t[2].get("reason") for t in await actions_of(court, b.hearing_id) if t[1] == "participant_ejected"]
    assert reasons == ["link_revoked"]


async def test_rest_cancel_ends_the_live_session(court: Court) -> None:
    """DELETE of an open hearing: everyone connected gets state cancelled, then close 1000; the node room closes."""
    b = await court.book(("judge", "clerk", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    clerk, _ = await court.join(b.tokens["clerk"])
    observer, _ = await court.join(b.tokens["observer"])
    assert (await clerk.request_ok("session", "state", action="open"))["state"] == "open"
    rooms_before, _ = court.node.stats()
    assert rooms_before == 1
    status, body = await court.rest("DELETE", f"{HEARINGS}/{b.hearing_id}")
    assert status == 200, body
    assert body["state"] == "cancelled"
    for client in (judge, clerk, observer):
        assert (await client.expect("state", lambda m: m["state"] == "cancelled"))["permissions"] is not None
        assert await client.close_code() == 1000
    assert b.hearing_id not in court.hub.rooms
    assert court.node.stats()[0] == 0
    late = await court.connect()
    await late.send("join", token=b.tokens["judge"])
    assert (await late.expect("error"))["code"] == "revoked"
    assert await late.close_code() == 4001
    assert (await court.store.get_hearing(b.hearing_id)).state is HearingState.cancelled


async def test_rest_added_participant_appears_to_moderators_on_joining(court: Court) -> None:
    """POST .../participants while the judge is connected: the newcomer's link joins and the judge sees them."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    site = b.body["participants"][0]["site_id"]
    status, link = await court.rest(
        "POST", f"{HEARINGS}/{b.hearing_id}/participants", {"name": "Late Counsel", "role": "counsel", "site_id": site}
    )
    assert status == 201, link
    assert court.hub.rooms[b.hearing_id].room.hearing.participant(link["id"]) is not None
    counsel, joined = await court.join(link["token"])
    assert joined["placement"] == "lobby"
    roster = await judge.expect("roster", lambda m: link["id"] in {p["id"] for p in m["participants"]})
    assert {p["id"] for p in roster["participants"]} == {b.ids["judge"], link["id"]}
    assert (await counsel.ping())["type"] == "pong"


async def test_rest_edit_is_adopted_without_disturbing_anyone(court: Court) -> None:
    """PATCH of the title: the live room adopts the stored hearing; connections stay and get no state message."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    await judge.expect("roster", lambda m: b.ids["prosecutor"] in {p["id"] for p in m["participants"]})
    seen = len(judge.messages)
    status, body = await court.rest("PATCH", f"{HEARINGS}/{b.hearing_id}", {"title": "Renamed in court"})
    assert status == 200, body
    room = court.hub.rooms[b.hearing_id].room
    assert room.hearing.title == "Renamed in court"
    assert room.hearing.version == body["version"]
    assert (await judge.ping())["type"] == "pong"
    assert (await prosecutor.ping())["type"] == "pong"
    assert not [m for m in judge.messages[seen:] if m["type"] in ("state", "removed", "error")]
    late, joined = await court.join(b.tokens["judge"])
    assert joined["hearing"]["title"] == "Renamed in court"
    assert (await late.ping())["type"] == "pong"
