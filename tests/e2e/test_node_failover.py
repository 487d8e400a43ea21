"""A media node dies in the middle of a hearing: every participant gets a new offer from another node and media flows.

Real aiohttp server on 127.0.0.1, real SQLite store, two real in-process media nodes with real heartbeats (2 s,
6 s TTL) behind the real NodePool, eight real aiortc clients (counting RTP packets, never decoding). Node A's
heartbeat stops and it closes (as after ``kill -9``: no goodbye; its record lapses by itself). The issue's bound
is media back within 10 s of the loss; the figure is printed (``-s``) beside it, not asserted (the wait is bounded,
90 s).
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest

from media.settings import NodeSettings
from tests.pool_fixtures import Farm, book_in, placement
from tests.ws_fixtures import Court, Participant, eventually

EIGHT = ("judge", "clerk", "prosecutor", "counsel", "counsel2", "defendant", "defendant2", "observer")
ISSUE_GOAL_SECONDS = 10.0


@pytest.fixture
def node_settings() -> NodeSettings:
    """Every camera forwarded (last-N above the hearing's size), so every permitted flow is a fixed set."""
    return NodeSettings(announce_addresses=("127.0.0.1",), last_n=16)


def _publishes(name: str) -> bool:
    return name != "observer"


def _flowing(people: dict[str, Participant], receiver: str) -> bool:
    """``receiver`` gets audio from every publisher but itself (on its current connection)."""
    return all(
        people[receiver].packets_from(people[p].id, "audio") > 0 for p in people if p != receiver and _publishes(p)
    )


@pytest.mark.timeout(300)
async def test_every_participant_moves_to_another_node_when_theirs_dies(
    pool_court: Court, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight people in session on node A; A dies: each gets media_restart node_lost, a new offer from node B, and
    receives everyone's audio again; the hearing's placement names B (failover from A)."""
    # Nine peers and their clients share one event loop here: give ICE consent the slack a separate process has.
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 60)
    node_a = await farm.add("node-a", "east")
    b = await book_in(pool_court, "east", EIGHT)
    people: dict[str, Participant] = {}
    for i, name in enumerate(EIGHT):
        people[name] = await pool_court.participant(
            name, b.tokens[name], tag=i + 1, count_only=True, loud=False, video=_publishes(name), audio=_publishes(name)
        )
    judge = people["judge"]
    for name in EIGHT[1:]:
        if people[name].joined["placement"] == "lobby":
            reply = await judge.client.request("admit", "roster", participant_id=b.ids[name])
            assert reply["type"] == "roster", reply
    for action in ("open", "start"):
        reply = await judge.client.request("session", "state", action=action)
        assert reply["type"] == "state", reply
    for p in people.values():
        await p.start_media(publish=_publishes(p.name))
    assert await eventually(lambda: all(_flowing(people, n) for n in EIGHT), 60.0), [
        n for n in EIGHT if not _flowing(people, n)
    ]
    assert node_a.stats() == (1, len(EIGHT))
    node_b = await farm.add("node-b", "east")  # after the placement: the hearing is on A
    shown = await placement(pool_court, b.hearing_id)
    assert shown is not None
    assert shown["node_id"] == "node-a"
    offers_before = {n: p.offers_answered for n, p in people.items()}

    loop = asyncio.get_running_loop()
    lost_at = loop.time()
    await farm.kill("node-a")
    back: dict[str, float] = {}

    def all_back() -> bool:
        for name, p in people.items():
            if name not in back and p.media.resets >= 1 and _flowing(people, name):
                back[name] = loop.time() - lost_at
        return len(back) == len(people)

    assert await eventually(all_back, 90.0, step=0.02), {
        n: (p.media.resets, [r for _, r in p.restarts], p.failures) for n, p in people.items() if n not in back
    }
    detected = min(t for p in people.values() for t, reason in p.restarts if reason == "node_lost") - lost_at
    slowest = max(back.values())
    print(
        f"\nFAILOVER8 participants={len(people)} detected_in={detected:.1f}s (node TTL 6 s + check <=1 s) "
        f"media_back_all_in={slowest:.1f}s first={min(back.values()):.1f}s "
        f"per_participant={ {n: round(t, 1) for n, t in sorted(back.items(), key=lambda kv: kv[1])} } "
        f"issue_goal={ISSUE_GOAL_SECONDS:.0f}s"
    )
    for name, p in people.items():
        assert [r for _, r in p.restarts] == ["node_lost"], (name, p.restarts)
        assert p.offers_answered > offers_before[name]  # node B offered what they receive (A is closed)
        assert not p.failures, (name, p.failures)
    assert node_b.stats() == (1, len(EIGHT))
    shown = await placement(pool_court, b.hearing_id)
    assert shown is not None
    assert (shown["node_id"], shown["reason"], shown["previous_node_id"]) == ("node-b", "failover", "node-a")
    status, body = await pool_court.rest("GET", f"/api/v1/hearings/{b.hearing_id}/audit")
    assert status == 200, body
    node_lost = [e for e in body["events"] if e["action"] == "media_restarted" and e["data"]["reason"] == "node_lost"]
    assert len(node_lost) == len(EIGHT)
