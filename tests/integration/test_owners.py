"""Several signaling processes in front of one hearing: one owner per live room, WebSockets relayed to it.

Two complete signaling applications on loopback (``tests.owners_fixtures``) share the store, the media node and
a bus with its records; these tests use plain WebSockets (no media) and check what a participant sees.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from protocol.cluster import (
    HEARING_CHANGED,
    RelayDown,
    RelayUp,
    relay_down_channel,
    relay_open_channel,
    relay_up_channel,
    room_lease_key,
    signaling_process_key,
)
from rooms.bus import BusError
from signaling.ownership import CLOSE_ROOM_MOVED
from signaling.session import CLOSE_TRY_AGAIN_LATER
from signaling.ws import WsSettings

if TYPE_CHECKING:
    from tests.owners_fixtures import Pair
    from tests.ws_fixtures import Booking, Court, WsClient

pytest_plugins = ["tests.ws_fixtures", "tests.owners_fixtures"]


def _entry(roster: dict[str, Any], pid: str) -> dict[str, Any]:
    """The roster entry of ``pid`` ({} when not listed)."""
    entry: dict[str, Any] = next((e for e in roster["participants"] if e["id"] == pid), {})
    return entry


async def _holder(pair: Pair, hearing_id: str) -> str | None:
    value = await pair.records.get(room_lease_key(hearing_id))
    return value.decode() if value is not None else None


async def _admitted(judge: WsClient, b: Booking, clients: dict[str, WsClient], names: tuple[str, ...]) -> None:
    for name in names:
        reply = await judge.request_ok("admit", "roster", participant_id=b.ids[name])
        assert reply["type"] == "roster", reply
        await clients[name].expect("admitted")


async def test_a_websocket_on_another_process_takes_part_in_the_owners_room(pair: Pair) -> None:
    """A judge on one process and a defendant, counsel and observer on the other are in one room: the roster names
    everyone, admit, court mute and consultation work across, and only the owner process runs the room."""
    names = ("judge", "defendant", "counsel", "observer")
    b = await pair.a.book(names)
    judge, _ = await pair.a.join(b.tokens["judge"])
    assert await _holder(pair, b.hearing_id) == "signaling-a"
    clients: dict[str, WsClient] = {"judge": judge}
    for name in names[1:]:
        clients[name], joined = await pair.b.join(b.tokens[name])
        assert joined["placement"] == "lobby"
        assert b.ids["judge"] in {e["id"] for e in joined["roster"]}
    assert b.hearing_id in pair.a.hub.rooms
    assert b.hearing_id not in pair.b.hub.rooms
    await _admitted(judge, b, clients, names[1:])

    me = b.ids["defendant"]
    muted = await judge.request_ok("mute", "muted", participant_id=me, source="microphone", muted=True)
    assert muted["by"] == b.ids["judge"]
    court_muted = lambda m: "microphone" in _entry(m, me).get("muted_by_court", ())  # noqa: E731
    seen = await clients["defendant"].expect("roster", court_muted)
    assert _entry(seen, me)["muted"] == ["microphone"]
    refused = await clients["defendant"].request("mute", "muted", participant_id=me, source="microphone", muted=False)
    assert refused["type"] == "error"
    assert refused["code"] == "muted_by_court"

    both = [me, b.ids["counsel"]]
    reply = await clients["counsel"].request_ok("consult", "roster", participant_ids=both)
    assert _entry(reply, me)["placement"] == "consultation"
    seen = await judge.expect("roster", lambda m: _entry(m, me).get("placement") == "consultation")
    assert _entry(seen, b.ids["counsel"])["consultation"] == _entry(seen, me)["consultation"]
    assert (await clients["observer"].ping())["type"] == "pong"


async def test_relayed_messages_keep_their_order(pair: Pair) -> None:
    """Forty requests sent at once over a relayed WebSocket are answered in the order they were sent."""
    b = await pair.a.book(("judge", "clerk"))
    await pair.a.join(b.tokens["judge"])
    clerk, _ = await pair.b.join(b.tokens["clerk"])
    for i in range(40):
        await clerk.send("ping", id=i)
    await clerk.expect("pong", lambda m: m["ref"] == 39)
    refs = [m["ref"] for m in clerk.messages if m["type"] == "pong"]
    assert refs == list(range(40))


async def test_a_rest_change_reaches_the_live_room_whichever_process_got_it(pair: Pair) -> None:
    """A participant removed from the booking over the REST API of the process that does not run the room gets
    ``removed`` and close 4010, and leaves everyone's roster; one removed through the owner's API too."""
    names = ("judge", "defendant", "witness", "observer")
    b = await pair.a.book(names)
    judge, _ = await pair.a.join(b.tokens["judge"])
    defendant, _ = await pair.a.join(b.tokens["defendant"])
    witness, _ = await pair.b.join(b.tokens["witness"])
    observer, _ = await pair.b.join(b.tokens["observer"])
    assert b.hearing_id not in pair.b.hub.rooms

    status, body = await pair.b.rest("DELETE", f"/api/v1/hearings/{b.hearing_id}/participants/{b.ids['defendant']}")
    assert status == 200, body
    assert (await defendant.expect("removed"))["reason"] == "unbooked"
    assert await defendant.close_code() == 4010
    await judge.expect("roster", lambda m: b.ids["defendant"] not in {e["id"] for e in m["participants"]})

    status, body = await pair.a.rest("DELETE", f"/api/v1/hearings/{b.hearing_id}/participants/{b.ids['witness']}")
    assert status == 200, body
    await witness.expect("removed")
    assert await witness.close_code() == 4010
    await observer.expect("roster", lambda m: b.ids["witness"] not in {e["id"] for e in m["participants"]})


async def test_an_owner_that_loses_its_lease_hands_the_room_over(pair: Pair) -> None:
    """When another process holds the room's lease, the owner closes its clients and the relayed ones with 1012;
    they reconnect with their resume key, the room runs where they land, and moderation works again."""
    b = await pair.a.book(("judge", "defendant"))
    judge, joined = await pair.a.join(b.tokens["judge"])
    defendant, djoined = await pair.b.join(b.tokens["defendant"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    # A third process, gone at once, took the lease (a long pause of the owner looks like this to everyone).
    await pair.records.put(room_lease_key(b.hearing_id), b"signaling-gone", ttl=pair.lease)

    assert await judge.close_code(within=10 * pair.lease) == CLOSE_ROOM_MOVED
    assert await defendant.close_code() == CLOSE_ROOM_MOVED
    assert b.hearing_id not in pair.a.hub.rooms
    # Both land on the other process: it waits out the silent holder's lease, then runs the room itself.
    judge, _ = await pair.b.join(b.tokens["judge"], resume=joined["resume"])
    assert await _holder(pair, b.hearing_id) == "signaling-b"
    defendant, _ = await pair.a.join(b.tokens["defendant"], resume=djoined["resume"])
    assert b.hearing_id in pair.b.hub.rooms
    assert b.hearing_id not in pair.a.hub.rooms
    reply = await judge.request("admit", "roster", participant_id=b.ids["defendant"])
    if reply["type"] == "roster":
        await defendant.expect("admitted")
    else:  # restored from a snapshot: the defendant is still in the courtroom
        assert reply["code"] == "invalid_target", reply
    assert (await defendant.ping())["type"] == "pong"


async def test_relayed_clients_reconnect_when_the_owner_dies(pair: Pair) -> None:
    """The owner stops answering and renewing (a crash): the relaying process closes its clients with 1012 once
    the lease lapses, and they rejoin the room, which now runs where they landed."""
    b = await pair.a.book(("judge", "clerk", "observer"))
    await pair.a.join(b.tokens["judge"])
    clerk, joined = await pair.b.join(b.tokens["clerk"])
    observer, _ = await pair.b.join(b.tokens["observer"])
    await _crash(pair.a)

    assert await clerk.close_code(within=10 * pair.lease) == CLOSE_ROOM_MOVED
    assert await observer.close_code() == CLOSE_ROOM_MOVED
    clerk, _ = await pair.b.join(b.tokens["clerk"], resume=joined["resume"])
    assert await _holder(pair, b.hearing_id) == "signaling-b"
    await pair.b.join(b.tokens["judge"])
    seen = await clerk.expect("roster", lambda m: _entry(m, b.ids["judge"]).get("connected") is True)
    assert _entry(seen, b.ids["clerk"])["connected"] is True


async def test_clients_of_a_dead_relaying_process_get_the_resume_grace(pair: Pair) -> None:
    """A relaying process that dies leaves its clients in the owner's room as dropped connections (roster
    ``connected: false``), so they can resume elsewhere within the grace."""
    b = await pair.a.book(("judge", "clerk"))
    judge, _ = await pair.a.join(b.tokens["judge"])
    _, joined = await pair.b.join(b.tokens["clerk"])
    await _crash(pair.b)
    await pair.records.delete(signaling_process_key("signaling-b"))

    seen = await judge.expect(
        "roster", lambda m: _entry(m, b.ids["clerk"]).get("connected") is False, within=10 * pair.lease
    )
    assert _entry(seen, b.ids["clerk"])["connected"] is False
    _, rejoined = await pair.a.join(b.tokens["clerk"], resume=joined["resume"])
    assert rejoined["resumed"] is True


async def _crash(court: Court) -> None:
    """Make ``court``'s process fall silent on the bus as a killed one would (no hand-over, no release)."""
    owners = court.hub.owners
    assert owners is not None
    assert owners._ticker is not None
    owners._ticker.cancel()
    for sub in [*owners._subs, *owners.owner_side._subs]:
        await sub.close()
    if owners.relay_side._sub is not None:
        await owners.relay_side._sub.close()
    await asyncio.sleep(0)


async def test_garbage_on_the_signaling_channels_changes_nothing(pair: Pair) -> None:
    """Bytes that are no relay step, steps for connections nobody knows, and an unreadable open request are
    dropped or refused by name; the relayed participant's session goes on as before."""
    b = await pair.a.book(("judge", "clerk"))
    judge, _ = await pair.a.join(b.tokens["judge"])
    clerk, _ = await pair.b.join(b.tokens["clerk"])
    owners = pair.a.hub.owners
    assert owners is not None
    bus = owners.bus
    for channel in (
        relay_up_channel("signaling-a"),
        relay_down_channel("signaling-b"),
        HEARING_CHANGED,
    ):
        for payload in (b"", b"\xff\xfe", b"[]", b'{"conn": -1}', b"{" * 5000):
            await bus.publish(channel, payload)
    stranger = RelayUp(origin="signaling-x", conn=7, kind="message", text='{"type":"leave"}')
    await bus.publish(relay_up_channel("signaling-a"), stranger.model_dump_json().encode())
    lost = RelayDown(conn=999, kind="close", code=4010, reason="removed")
    await bus.publish(relay_down_channel("signaling-b"), lost.model_dump_json().encode())
    with pytest.raises(BusError) as refused:
        await bus.request(relay_open_channel("signaling-a"), b"not json", attempt_seconds=2)
    assert refused.value.code in ("remote_failure", "bus_timeout")

    assert (await clerk.ping())["type"] == "pong"
    assert (await judge.ping())["type"] == "pong"
    roster = await judge.request_ok("lower_hand", "roster", participant_id=b.ids["clerk"])
    assert _entry(roster, b.ids["clerk"])["connected"] is True


async def test_a_process_stopping_cleanly_hands_its_rooms_over_at_once(pair: Pair) -> None:
    """An owner that shuts down (SIGTERM) closes its clients and the relayed ones with 1012 and releases the lease:
    they resume in place on the other process at once, without waiting for the lease to lapse."""
    b = await pair.a.book(("judge", "defendant"))
    judge, joined = await pair.a.join(b.tokens["judge"])
    defendant, djoined = await pair.b.join(b.tokens["defendant"])
    await judge.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    await defendant.expect("admitted")

    await pair.a.hub.shutdown()
    assert await judge.close_code() == CLOSE_ROOM_MOVED
    assert await defendant.close_code() == CLOSE_ROOM_MOVED
    assert await _holder(pair, b.hearing_id) is None
    judge, rejoined = await pair.b.join(b.tokens["judge"], resume=joined["resume"])
    defendant, drejoined = await pair.b.join(b.tokens["defendant"], resume=djoined["resume"])
    assert rejoined["resumed"] is True
    assert drejoined["resumed"] is True
    assert drejoined["placement"] == "courtroom"
    assert await _holder(pair, b.hearing_id) == "signaling-b"


@pytest.mark.parametrize("ws_settings", [WsSettings(resume_grace_seconds=30, send_queue=8)])
async def test_a_relayed_client_that_outruns_a_stalled_bus_is_closed_1013_and_resumes(
    pair: Pair, redis_server: str
) -> None:
    """While Redis stalls (CLIENT PAUSE), a relayed client that keeps sending fills its bounded relay queue: it is
    closed 1013 "relay queue full" instead of queueing without limit, the room on the owner goes on, and the
    client resumes its place once the bus is back."""
    b = await pair.a.book(("judge", "clerk"))
    judge, _ = await pair.a.join(b.tokens["judge"])
    clerk, joined = await pair.b.join(b.tokens["clerk"])
    raw = aioredis.Redis.from_url(redis_server)
    try:
        await raw.client_pause(500, all=False)  # CLIENT PAUSE 500 WRITE
        for i in range(30):  # within the rate limit's burst (50), beyond the relay queue (8)
            await clerk.send("ping", id=i)
        # 1013 is also a slow client's own send queue; nothing is sent to the clerk while the bus stalls.
        assert await clerk.close_code(within=10) == CLOSE_TRY_AGAIN_LATER
    finally:
        await raw.client_unpause()
        await raw.aclose()
    assert (await judge.ping())["type"] == "pong"
    clerk, rejoined = await pair.b.join(b.tokens["clerk"], resume=joined["resume"])
    assert rejoined["resumed"] is True
    assert (await clerk.ping())["type"] == "pong"
    assert await _holder(pair, b.hearing_id) == "signaling-a"
