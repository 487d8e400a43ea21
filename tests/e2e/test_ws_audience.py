"""Issue 9 items 1-4 over the real WebSocket: observers, consultations, court mutes and evidence that stops.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node; the rules tests need no
media (plain WebSockets), the evidence test runs two real aiortc peers.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from tests.media_clients import CodeVideoTrack
from tests.ws_fixtures import VIDEO_SIZE, eventually

if TYPE_CHECKING:
    from tests.ws_fixtures import Booking, Court, WsClient

pytest_plugins = ["tests.ws_fixtures"]

WITHIN = 40.0
"""Bound for media waits (never asserted as a duration)."""


def _entry(roster: dict[str, Any], pid: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in roster["participants"] if e["id"] == pid)
    return entry


async def _seated(court: Court, b: Booking, names: tuple[str, ...]) -> dict[str, WsClient]:
    """Join ``names`` (judge first) over plain WebSockets, admit the others and open the courtroom."""
    clients = {name: (await court.join(b.tokens[name]))[0] for name in names}
    judge = clients["judge"]
    for name in names[1:]:
        reply = await judge.request_ok("admit", "roster", participant_id=b.ids[name])
        assert reply["type"] == "roster", reply
        await clients[name].expect("admitted")
    assert (await judge.request_ok("session", "state", action="open"))["type"] == "state"
    for client in clients.values():
        client.skip_unread()
    return clients


async def test_consultation_is_timed_and_either_member_ends_it(court: Court) -> None:
    """Everyone's roster says since when defendant and counsel consult; the defendant, then counsel, ends one; an
    observer may not; the observer may publish nothing."""
    names = ("judge", "defendant", "counsel", "observer")
    b = await court.book(names)
    c = await _seated(court, b, names)
    pair = [b.ids["defendant"], b.ids["counsel"]]

    before = time.time()
    reply = await c["counsel"].request_ok("consult", "roster", participant_ids=pair)
    after = time.time()
    for pid in pair:
        since = _entry(reply, pid)["consultation_since"]
        assert since is not None
        assert before - 1 <= since <= after + 1
    seen = await c["observer"].expect("roster", lambda m: _entry(m, b.ids["defendant"])["placement"] == "consultation")
    assert (
        _entry(seen, b.ids["defendant"])["consultation_since"]
        == _entry(reply, b.ids["defendant"])["consultation_since"]
    )
    assert _entry(seen, b.ids["judge"])["consultation_since"] is None

    refused = await c["observer"].request("end_consult", "roster", participant_ids=[b.ids["defendant"]])
    assert refused["type"] == "error"
    assert refused["code"] == "not_allowed"

    ended = await c["defendant"].request_ok("end_consult", "roster", participant_ids=[b.ids["defendant"]])
    for pid in pair:
        assert _entry(ended, pid)["placement"] == "courtroom"
        assert _entry(ended, pid)["consultation_since"] is None
    await c["counsel"].expect("placement", lambda m: m["placement"] == "courtroom")

    await c["judge"].request_ok("consult", "roster", participant_ids=pair)
    ended = await c["counsel"].request_ok("end_consult", "roster", participant_ids=[b.ids["counsel"]])
    assert _entry(ended, b.ids["defendant"])["placement"] == "courtroom"
    actors = [(e.actor, e.action) for e in await court.store.audit_log(b.hearing_id) if e.action.startswith("consul")]
    assert actors[-3:] == [
        (b.ids["defendant"], "consultation_ended"),
        (b.ids["judge"], "consultation_started"),
        (b.ids["counsel"], "consultation_ended"),
    ]

    # The observer is an audience: it may publish nothing, and its permissions say so.
    publish = await c["observer"].request("publish", "roster", source="camera", enabled=True, track_id="cam")
    assert publish["code"] == "publish_not_allowed"
    assert all(not m.get("permissions", {}).get("publish") for m in c["observer"].messages if "permissions" in m)


async def test_a_court_mute_cannot_be_lifted_by_its_owner(court: Court) -> None:
    """The judge mutes the defendant: the roster names it a court mute, the defendant's unmute is refused with
    ``muted_by_court`` and changes nothing; after the judge unmutes, the defendant mutes and unmutes freely."""
    names = ("judge", "defendant", "observer")
    b = await court.book(names)
    c = await _seated(court, b, names)
    me = b.ids["defendant"]

    muted = await c["judge"].request_ok("mute", "muted", participant_id=me, source="microphone", muted=True)
    assert muted["by"] == b.ids["judge"]
    roster = await c["defendant"].expect("roster", lambda m: "microphone" in _entry(m, me)["muted"])
    assert _entry(roster, me)["muted_by_court"] == ["microphone"]

    refused = await c["defendant"].request("mute", "muted", participant_id=me, source="microphone", muted=False)
    assert refused["type"] == "error"
    assert refused["code"] == "muted_by_court"
    await asyncio.sleep(0.2)
    assert not any(m.get("type") == "muted" and m.get("muted") is False for m in c["observer"].messages)

    await c["judge"].request_ok("mute", "muted", participant_id=me, source="microphone", muted=False)
    roster = await c["defendant"].expect("roster", lambda m: "microphone" not in _entry(m, me)["muted"])
    assert _entry(roster, me)["muted_by_court"] == []
    c["observer"].skip_unread()
    await c["defendant"].request_ok("mute", "muted", participant_id=me, source="microphone", muted=True)
    roster = await c["observer"].expect("roster", lambda m: "microphone" in _entry(m, me)["muted"])
    assert _entry(roster, me)["muted_by_court"] == []  # a self-mute is not the court's
    unmuted = await c["defendant"].request_ok("mute", "muted", participant_id=me, source="microphone", muted=False)
    assert unmuted["muted"] is False


async def test_stopped_evidence_leaves_the_viewers_tracks(court: Court) -> None:
    """The judge shows evidence, then stops it (publish enabled=false): the observer's ``tracks`` drop it and its
    packets stop arriving, without waiting for anything else."""
    names = ("judge", "observer")
    b = await court.book(names)
    people = await court.seat(b, names, {"judge": 41, "observer": 42})
    judge, observer = people["judge"], people["observer"]
    width, height = VIDEO_SIZE
    evidence = CodeVideoTrack(43, width, height)
    await judge.add_track(evidence, "evidence")

    def evidence_mids() -> set[str]:
        return {str(t.mid) for t in observer.media.tracks if t.participant_id == judge.id and t.source == "evidence"}

    def evidence_packets() -> int:
        return sum(r.rtp_packets for mid, r in observer.media.received.items() if mid in evidence_mids())

    assert await eventually(lambda: evidence_packets() > 10, WITHIN), observer.media.tracks
    mids = evidence_mids()
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await judge.client.send("publish", source="evidence", enabled=False, track_id=evidence.id)
    assert await eventually(lambda: not evidence_mids(), WITHIN), observer.media.tracks
    gone = loop.time() - stopped_at
    print(
        f"\nEVIDENCE_STOP tracks without the evidence {gone:.3f} s after publish enabled=false "
        "(the issue's goal: 1 s at the viewer's screen; printed, not asserted: the wait is bounded, WITHIN)"
    )
    counts = {mid: r.rtp_packets for mid, r in observer.media.received.items() if mid in mids}
    await asyncio.sleep(1.5)
    later = {mid: r.rtp_packets for mid, r in observer.media.received.items() if mid in mids}
    # A packet or two already on its way may land; the evidence no longer flows.
    assert all(later[mid] - counts[mid] <= 5 for mid in counts), (counts, later)
    assert judge.failures == observer.failures == []


async def test_a_court_mute_survives_a_dropped_link(court: Court) -> None:
    """A court-muted defendant whose link drops and who resumes is still muted by the court: the resumed ``joined``
    says so, and their own unmute is still refused with ``muted_by_court``."""
    b = await court.book(("judge", "defendant"))
    judge, _ = await court.join(b.tokens["judge"])
    defendant, joined = await court.join(b.tokens["defendant"])
    me = b.ids["defendant"]
    await judge.request_ok("admit", "roster", participant_id=me)
    await defendant.expect("admitted")
    assert (await judge.request_ok("session", "state", action="open"))["type"] == "state"
    await judge.request_ok("mute", "muted", participant_id=me, source="microphone", muted=True)
    await defendant.expect("roster", lambda m: "microphone" in _entry(m, me)["muted_by_court"])

    await defendant.close()  # the detention center's link drops: no `leave`
    resumed, rejoined = await court.join(b.tokens["defendant"], resume=joined["resume"])
    assert rejoined["resumed"] is True
    assert _entry({"participants": rejoined["roster"]}, me)["muted_by_court"] == ["microphone"]
    refused = await resumed.request("mute", "muted", participant_id=me, source="microphone", muted=False)
    assert refused["type"] == "error"
    assert refused["code"] == "muted_by_court"
