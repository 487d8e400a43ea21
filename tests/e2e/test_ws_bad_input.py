"""Bad input through the WebSocket door: each gets a named error or close code, and the hearing carries on.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node;
after every refusal another participant still gets its pong (media under abuse:
tests/e2e/test_ws_media.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import jwt

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]


async def test_forged_token_closes_4001(court: Court) -> None:
    """A token not signed by the server gets error bad_token and close 4001; the server carries on."""
    b = await court.book(("judge", "defendant"))
    judge, _ = await court.join(b.tokens["judge"])
    claims = jwt.decode(b.tokens["defendant"], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-secret-0123456789abcdef0123", algorithm="HS256")
    client = await court.connect()
    await client.send("join", id=1, token=forged)
    error = await client.expect("error")
    assert error["code"] == "bad_token"
    assert error["ref"] == 1
    assert await client.close_code() == 4001
    assert (await judge.ping())["type"] == "pong"


async def test_expired_token_closes_4001(court: Court) -> None:
    """A link of a hearing whose window (plus margin) is over gets error expired and close 4001."""
    b = await court.book(("judge",), starts=datetime.now(UTC) - timedelta(days=2), hours=1)
    client = await court.connect()
    await client.send("join", token=b.tokens["judge"])
    assert (await client.expect("error"))["code"] == "expired"
    assert await client.close_code() == 4001


async def test_reissued_link_and_cancelled_hearing_close_4001(court: Court) -> None:
    """An old link after reissue, a removed participant's link and a cancelled hearing's link all close 4001."""
    b = await court.book(("judge", "defendant", "observer"))
    status, _ = await court.rest("POST", f"/api/v1/hearings/{b.hearing_id}/participants/{b.ids['defendant']}/link")
    assert status in (200, 201)
    status, _ = await court.rest("DELETE", f"/api/v1/hearings/{b.hearing_id}/participants/{b.ids['observer']}")
    assert status in (200, 204)
    for token in (b.tokens["defendant"], b.tokens["observer"]):
        client = await court.connect()
        await client.send("join", token=token)
        assert (await client.expect("error"))["code"] == "revoked"
        assert await client.close_code() == 4001
    status, _ = await court.rest("DELETE", f"/api/v1/hearings/{b.hearing_id}")
    assert status in (200, 204)
    client = await court.connect()
    await client.send("join", token=b.tokens["judge"])
    assert (await client.expect("error"))["code"] == "revoked"
    assert await client.close_code() == 4001


async def test_non_ascii_resume_key_is_invalid_message(court: Court) -> None:
    """A join whose resume key is not of the issued alphabet gets invalid_message and close 4003, never 1011."""
    b = await court.book(("judge", "defendant"))
    judge, _ = await court.join(b.tokens["judge"])
    await court.join(b.tokens["defendant"])
    client = await court.connect()
    await client.send("join", id="j", token=b.tokens["defendant"], resume="\u00e9")
    error = await client.expect("error")
    assert (error["code"], error["ref"]) == ("invalid_message", "j")
    assert await client.close_code() == 4003
    assert (await judge.ping())["type"] == "pong"


async def test_first_message_must_be_join(court: Court) -> None:
    """Anything but join as the first message gets an error and close 4003."""
    client = await court.connect()
    await client.send("ping", id="p")
    error = await client.expect("error")
    assert error["code"] == "join_expected"
    assert await client.close_code() == 4003


async def test_invalid_messages_get_errors_and_socket_stays(court: Court) -> None:
    """Unknown types, bad fields and broken JSON get error invalid_message (with ref); the socket stays open."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    await judge.send("teleport", id="t1")
    error = await judge.expect("error")
    assert (error["code"], error["ref"]) == ("invalid_message", "t1")
    await judge.send("mute", id="t2", participant_id="x", source="hologram")
    error = await judge.expect("error")
    assert (error["code"], error["ref"]) == ("invalid_message", "t2")
    await judge.send("admit", id="t3", participant_id="x", extra=True)
    assert (await judge.expect("error"))["code"] == "invalid_message"
    await judge.send_raw("{not json")
    assert (await judge.expect("error"))["code"] == "invalid_message"
    await judge.ws.send_bytes(b"\x00\x01")
    assert (await judge.expect("error"))["code"] == "invalid_message"
    assert (await judge.ping())["type"] == "pong"


async def test_defendant_may_not_moderate(court: Court) -> None:
    """A defendant sending admit, mute of others or session gets error not_allowed; nothing changes."""
    b = await court.book(("judge", "defendant", "observer"))
    judge, _ = await court.join(b.tokens["judge"])
    defendant, _ = await court.join(b.tokens["defendant"])
    admitted = await judge.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    assert admitted["type"] == "roster", admitted
    placements = {p["id"]: p["placement"] for p in admitted["participants"]}
    assert placements[b.ids["defendant"]] == "courtroom", admitted
    await court.join(b.tokens["observer"])
    for type_, fields in (
        ("admit", {"participant_id": b.ids["observer"]}),
        ("mute", {"participant_id": b.ids["judge"], "source": "microphone"}),
        ("session", {"action": "open"}),
        ("remove", {"participant_id": b.ids["judge"]}),
    ):
        reply = await defendant.request(type_, "roster", **fields)
        assert reply["type"] == "error", reply
        assert reply["code"] == "not_allowed"
    stored = await court.store.get_hearing(b.hearing_id)
    assert stored.state.value == "scheduled"
    assert (await defendant.ping())["type"] == "pong"


async def test_offer_before_admission_is_refused(court: Court) -> None:
    """A participant in the lobby sending an offer gets error not_admitted."""
    b = await court.book(("judge", "defendant"))
    defendant, _ = await court.join(b.tokens["defendant"])
    reply = await defendant.request("offer", "answer", sdp="v=0\r\n")
    assert reply["code"] == "not_admitted"


async def test_malformed_sdp_is_refused(court: Court) -> None:
    """An admitted participant's malformed SDP gets error invalid_sdp; the socket stays."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    reply = await judge.request("offer", "answer", sdp="hello")
    assert reply["code"] == "invalid_sdp"
    reply = await judge.request("offer", "answer", sdp="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=garbage\r\n")
    assert reply["type"] == "error"
    assert reply["code"] == "invalid_sdp"
    assert (await judge.ping())["type"] == "pong"


async def test_one_megabyte_message_closes_1009(court: Court) -> None:
    """A 1 MB frame closes that socket with 1009 (message too big); others carry on."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    await prosecutor.send("ping", id="x" * (1024 * 1024))
    assert await prosecutor.close_code() == 1009
    assert (await judge.ping())["type"] == "pong"


async def test_message_flood_closes_4008(court: Court) -> None:
    """1,000 messages in a burst exceed the rate limit: error too_many_messages and close 4008; others carry on."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    prosecutor, _ = await court.join(b.tokens["prosecutor"])
    for i in range(1000):
        try:
            await prosecutor.send("ping", id=i)
        except ConnectionError:
            break
    assert await prosecutor.close_code() == 4008
    assert any(m.get("code") == "too_many_messages" for m in prosecutor.messages)
    assert (await judge.ping())["type"] == "pong"


async def test_invalid_session_transition_is_an_error(court: Court) -> None:
    """Starting a hearing that is not open gets error invalid_transition and changes nothing."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    reply = await judge.request("session", "state", action="start")
    assert (reply["type"], reply["code"]) == ("error", "invalid_transition")
    assert (await court.store.get_hearing(b.hearing_id)).state.value == "scheduled"


async def test_bad_candidate_is_an_error(court: Court) -> None:
    """A malformed ICE candidate gets error invalid_candidate; the socket stays."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    reply = await judge.request("candidate", "pong", candidate="candidate:garbage", sdpMid="0", sdpMLineIndex=0)
    assert (reply["type"], reply["code"]) == ("error", "invalid_candidate")
    assert (await judge.ping())["type"] == "pong"
