"""A hearing whose participants are spread over two signaling processes: real aiortc media through one node.

Two signaling applications on loopback (``tests.owners_fixtures``) share the store, one real in-process media
node and a bus; the judge is on the process that owns the live room, the others on the one that relays to it.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from tests.ws_fixtures import eventually

if TYPE_CHECKING:
    from tests.owners_fixtures import Pair
    from tests.ws_fixtures import Participant

pytest_plugins = ["tests.ws_fixtures", "tests.owners_fixtures"]

TAGS = {"judge": 1, "prosecutor": 2, "defendant": 3, "counsel": 5}
WITHIN = 40.0
"""Bound for media waits (never asserted as a duration)."""


def _codes(p: Participant, name: str) -> int:
    return len(p.codes_from(TAGS[name]))


def _sees(p: Participant, name: str, n: int) -> bool:
    return _codes(p, name) >= n


async def test_media_and_moderation_across_two_signaling_processes(pair: Pair) -> None:
    """Participants on two processes decode each other's video; a court mute, a consultation and a media restart
    requested over a relayed socket all take effect; the live room runs only at its owner."""
    names = ("judge", "prosecutor", "defendant", "counsel")
    b = await pair.a.book(names)
    judge = await pair.a.participant("judge", b.tokens["judge"], tag=TAGS["judge"])
    people = {"judge": judge}
    for name in names[1:]:
        people[name] = await pair.b.participant(name, b.tokens[name], tag=TAGS[name])
        await judge.client.request_ok("admit", "roster", participant_id=b.ids[name])
        await people[name].client.expect("admitted")
    for p in people.values():
        await p.start_media()
    for action in ("open", "start"):
        assert (await judge.client.request_ok("session", "state", action=action))["type"] == "state"
    assert b.hearing_id in pair.a.hub.rooms
    assert b.hearing_id not in pair.b.hub.rooms

    for name, p in people.items():
        for other in names:
            if other != name:
                assert await eventually(partial(_sees, p, other, 3), WITHIN), (name, other, p.failures)

    defendant, counsel = people["defendant"], people["counsel"]
    muted = await judge.client.request_ok("mute", "muted", participant_id=defendant.id, source="camera", muted=True)
    assert muted["by"] == judge.id
    await defendant.client.expect("muted", lambda m: m["participant_id"] == defendant.id and m["muted"])

    reply = await counsel.client.request_ok("consult", "roster", participant_ids=[defendant.id, counsel.id])
    assert reply["type"] == "roster"
    assert await eventually(lambda: not judge.media.mids_of(counsel.id), WITHIN)
    await counsel.client.request_ok("end_consult", "roster", participant_ids=[counsel.id])

    seen = _codes(judge, "counsel")
    restart = await counsel.request_restart()
    assert restart["type"] == "media_restart", restart
    assert await eventually(partial(_sees, judge, "counsel", seen + 3), WITHIN), counsel.failures
    assert await eventually(partial(_sees, counsel, "judge", _codes(counsel, "judge") + 3), WITHIN)
    for p in people.values():
        assert p.failures == [], (p.name, p.failures)
