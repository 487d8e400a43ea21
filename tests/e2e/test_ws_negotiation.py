"""Negotiation that cannot deadlock, media restart and media health, end to end (docs/protocol.md).

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node,
real aiortc clients that negotiate as the polite side (tests.ws_fixtures.Participant).
Lost messages are played by the client ignoring what it received; a cut network
by dropping every datagram at the client's own ICE sockets (loopback only).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from tests.media_clients import CodeVideoTrack, MediaClient
from tests.ws_fixtures import VIDEO_SIZE, eventually

if TYPE_CHECKING:
    from tests.ws_fixtures import Booking, Court, Participant

pytest_plugins = ["tests.ws_fixtures"]

LOST_OFFERS = 3
"""Node offers the collision test loses on purpose (the judge's, the prosecutor's and counsel's)."""

WITHIN = 40.0
"""Bound for convergence waits (never asserted as a duration)."""


async def _seat(court: Court, b: Booking, names: tuple[str, ...]) -> dict[str, Participant]:
    """Seat ``names`` (tagged 1, 2, ... in order) in a started hearing, then wait until everyone hears everyone."""
    people = await court.seat(b, names, {name: i + 1 for i, name in enumerate(names)})
    for r in people.values():
        for p in people.values():
            if p is not r and p.name != "observer":
                assert await eventually(partial(_hears, r, p.id, "audio", 0), WITHIN), (r.name, p.name)
    return people


def _evidence(tag: int) -> CodeVideoTrack:
    width, height = VIDEO_SIZE
    return CodeVideoTrack(tag, width, height)


def _packets(receiver: Participant, publisher_id: str, source: str) -> int:
    """RTP packets ``receiver`` got on the media ids now carrying ``publisher_id``'s ``source``."""
    mids = {str(t.mid) for t in receiver.media.tracks if t.participant_id == publisher_id and t.source == source}
    return sum(r.rtp_packets for mid, r in receiver.media.received.items() if mid in mids)


def _hears(receiver: Participant, publisher_id: str, kind: str, more_than: int) -> bool:
    return receiver.packets_from(publisher_id, kind) > more_than


def _hears_source(receiver: Participant, publisher_id: str, source: str, more_than: int) -> bool:
    return _packets(receiver, publisher_id, source) > more_than


def _settled(court: Court, b: Booking, p: Participant) -> bool:
    """No exchange is open on either side of ``p``'s peer."""
    peer = court.node.peer(b.hearing_id, p.id)
    return (
        peer is not None
        and peer.pending_offer is None
        and peer.pc.signalingState == "stable"
        and p.offer_ref is None
        and not p.media.offering
        and p.media.pc.signalingState == "stable"
    )


def _media_seen(watcher: Participant, participant_id: str) -> list[str]:
    """The ``media`` values ``watcher``'s rosters showed for ``participant_id``, repeats folded."""
    seen: list[str] = []
    for m in watcher.client.messages:
        entries = m.get("participants") if m.get("type") == "roster" else None
        for e in entries or ():
            if e["id"] == participant_id and (not seen or seen[-1] != e["media"]):
                seen.append(e["media"])
    return seen


def _contains_in_order(seen: list[str], wanted: list[str]) -> bool:
    it = iter(seen)
    return all(any(s == w for s in it) for w in wanted)


def _diag(court: Court, b: Booking, people: dict[str, Participant]) -> str:
    out: dict[str, Any] = {}
    for name, p in people.items():
        peer = court.node.peer(b.hearing_id, p.id)
        out[name] = {
            "refusals": p.refusals,
            "offers_sent": p.offers_sent,
            "answered": p.offers_answered,
            "dropped": p.dropped_offers,
            "restarts": p.restarts,
            "failures": p.failures,
            "client_state": p.media.pc.signalingState,
            "node_state": None if peer is None else peer.pc.signalingState,
            "node_pending": None if peer is None else peer.pending_offer is not None,
            "errors": [m for m in p.client.messages if m.get("type") == "error"][-3:],
            "slots": [
                (
                    sl.mid,
                    sl.kind,
                    sl.negotiated_active,
                    sl.transceiver.direction,
                    sl.track.publisher.participant_id[-4:] if sl.track.publisher else None,
                    sl.track.publisher.ended if sl.track.publisher else None,
                )
                for sl in (peer.slots if peer is not None else [])
            ],
            "tracks": [(t.mid, t.participant_id[-4:], t.source) for t in p.media.tracks],
            "received": {mid: r.rtp_packets for mid, r in p.media.received.items()},
        }
    text = "\n".join(f"DIAG {name}: {v}" for name, v in out.items())
    print(text)
    return text


async def test_colliding_offers_and_lost_node_offers_converge(court: Court) -> None:
    """Clients re-offer while the node offers, and node offers get lost: every new track still reaches everyone,
    refusals stay few, nobody loops on them and nobody needs a restart."""
    names = ("judge", "clerk", "prosecutor", "counsel", "defendant")
    b = await court.book(names)
    people = await _seat(court, b, names)
    judge = people["judge"]

    # The deadlock of the field report, made certain: the node's offer to the judge is lost, so the node
    # waits for an answer while the judge believes all is settled and offers a new track of its own.
    judge.drop_offers = 1
    await people["clerk"].add_track(_evidence(21), "evidence")
    judge_peer = court.node.peer(b.hearing_id, judge.id)
    assert judge_peer is not None
    assert await eventually(lambda: judge.dropped_offers == 1 and judge_peer.pending_offer is not None, WITHIN)
    await judge.add_track(_evidence(22), "evidence")

    # And a crowd: two more publishers offer new tracks at once, crossing the node's offers, each losing one.
    for name in ("prosecutor", "counsel"):
        people[name].drop_offers = 1
    await asyncio.gather(
        people["prosecutor"].add_track(_evidence(23), "evidence"),
        people["counsel"].add_track(_evidence(24), "evidence"),
    )

    publishers = ("judge", "clerk", "prosecutor", "counsel")
    for r in people.values():
        for name in publishers:
            p = people[name]
            if p is r:
                continue
            assert await eventually(partial(_hears_source, r, p.id, "evidence", 10), WITHIN), (
                r.name,
                p.name,
                _diag(court, b, people),
            )
    for p in people.values():
        assert await eventually(partial(_settled, court, b, p), WITHIN), _diag(court, b, people)

    refusals = {name: p.refusals for name, p in people.items()}
    offers = {name: p.offers_sent for name, p in people.items()}
    print(f"\nNEGOTIATION refusals={refusals} total={sum(refusals.values())} client_re_offers={offers}")
    assert judge.refusals >= 1, "the judge's offer should have met the node's lost offer"
    # Three node offers were lost on purpose; a client that looped on refusals would exceed both bounds.
    assert sum(refusals.values()) <= 2 * LOST_OFFERS, refusals
    # Re-offers (after the first offer): each client's one new track, plus at most one per refusal it met.
    assert all(offers[n] <= 1 + refusals[n] for n in names), (offers, refusals)
    for p in people.values():
        assert not p.failures, p.failures
        assert p.restarts == [], _diag(court, b, people)


async def test_unanswered_node_offer_is_resent_then_the_peer_is_replaced(court: Court) -> None:
    """A node offer lost once is sent again (5 s) and answered; lost twice, the peer is replaced after 10 s and the
    participant's media comes back through media_restart, with nothing for the user to do."""
    names = ("judge", "prosecutor", "defendant")
    b = await court.book(names)
    people = await _seat(court, b, names)
    judge, prosecutor, defendant = people["judge"], people["prosecutor"], people["defendant"]
    prosecutor.drop_offers = 1
    defendant.drop_offers = 2
    await judge.add_track(_evidence(31), "evidence")  # the node offers both a new slot

    assert await eventually(lambda: _packets(prosecutor, judge.id, "evidence") > 10, WITHIN), _diag(court, b, people)
    assert prosecutor.restarts == []
    assert prosecutor.dropped_offers == 1

    assert await eventually(lambda: bool(defendant.restarts), WITHIN), _diag(court, b, people)
    loop = asyncio.get_running_loop()
    restarted_at, reason = defendant.restarts[0]
    assert reason == "offer_timeout"
    assert await eventually(lambda: defendant.media.rtp_packets() > 0, WITHIN), _diag(court, b, people)
    back = loop.time() - restarted_at
    assert await eventually(lambda: _packets(defendant, judge.id, "evidence") > 10, WITHIN), _diag(court, b, people)
    before = judge.packets_from(defendant.id, "audio")
    assert await eventually(lambda: judge.packets_from(defendant.id, "audio") > before + 20, WITHIN)
    print(
        f"\nOFFER_TIMEOUT media back {back:.2f} s after media_restart (first packet received; the issue's goal: 3 s, "
        "printed, not asserted: the wait is bounded, WITHIN)"
    )


def _cut(media: MediaClient) -> dict[str, bool]:
    """Drop every datagram the client's current connection sends or receives (its ICE sockets); flip ``on``."""
    state = {"on": True}
    seen: set[int] = set()
    for transceiver in media.pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is None or id(transport.transport) in seen:
            continue
        seen.add(id(transport.transport))
        for protocol in transport.transport._connection._protocols:
            send, receive = protocol.transport.sendto, protocol.datagram_received

            def sendto(data: bytes, addr: Any = None, _send: Any = send) -> None:
                if not state["on"]:
                    _send(data, addr)

            def datagram_received(data: bytes, addr: Any, _receive: Any = receive) -> None:
                if not state["on"]:
                    _receive(data, addr)

            setattr(protocol.transport, "sendto", sendto)  # noqa: B010 - a method replaced on one instance
            setattr(protocol, "datagram_received", datagram_received)  # noqa: B010
    assert seen, "no transport to cut"
    return state


async def test_stalled_then_lost_media_recovers_and_the_judge_sees_it(court: Court) -> None:
    """The judge's roster shows a party whose packets stop as stalled, and ok again when they flow; when the
    party's connection dies, the server replaces the peer, the judge sees lost, and media returns (ok)."""
    names = ("judge", "defendant")
    b = await court.book(names)
    people = await _seat(court, b, names)
    judge, defendant = people["judge"], people["defendant"]
    assert await eventually(lambda: _media_seen(judge, defendant.id)[-1:] == ["ok"], WITHIN)
    loop = asyncio.get_running_loop()

    cut = _cut(defendant.media)
    cut_at = loop.time()
    assert await eventually(lambda: _media_seen(judge, defendant.id)[-1:] == ["stalled"], WITHIN)
    stalled_after = loop.time() - cut_at
    cut["on"] = False
    assert await eventually(lambda: _media_seen(judge, defendant.id)[-1:] == ["ok"], WITHIN)

    # The connection dies without a word on the WebSocket (DTLS closes): the server restarts the media.
    await defendant.media.pc.close()
    assert await eventually(lambda: bool(defendant.restarts), WITHIN), _diag(court, b, people)
    restarted_at, reason = defendant.restarts[0]
    assert reason == "closed"
    before = judge.packets_from(defendant.id, "audio")
    assert await eventually(lambda: defendant.packets_from(judge.id, "audio") > 0, WITHIN), _diag(court, b, people)
    back = loop.time() - restarted_at
    assert await eventually(lambda: judge.packets_from(defendant.id, "audio") > before + 20, WITHIN)
    assert await eventually(lambda: _media_seen(judge, defendant.id)[-1:] == ["ok"], WITHIN)
    seen = _media_seen(judge, defendant.id)
    print(
        f"\nHEALTH judge saw {seen}; stalled {stalled_after:.1f} s after the cut; "
        f"media back {back:.2f} s after restart (the issue's goal: 3 s)"
    )
    assert _contains_in_order(seen, ["ok", "stalled", "ok", "lost", "ok"]), seen


async def test_restart_media_on_request_keeps_the_roster_and_refuses_a_second_in_flight(court: Court) -> None:
    """restart_media gets media_restart and a working new peer; a second one in flight is refused (restart_pending)
    and the participant's place, mute and publish state in the roster do not change."""
    names = ("judge", "prosecutor")
    b = await court.book(names)
    people = await _seat(court, b, names)
    judge, prosecutor = people["judge"], people["prosecutor"]
    muted = await judge.client.request("mute", "muted", participant_id=prosecutor.id, source="camera")
    assert muted["type"] == "muted", muted
    prosecutor.client.hooks.remove(prosecutor._on_message)  # play the restart by hand first
    reply = await prosecutor.request_restart("test")
    assert reply["type"] == "media_restart", reply
    assert reply["reason"] == "requested"
    again = await prosecutor.client.request("restart_media", "media_restart")
    assert again["type"] == "error"
    assert again["code"] == "restart_pending"
    prosecutor.attach()
    await prosecutor._restart("requested")
    assert await eventually(lambda: prosecutor.packets_from(judge.id, "audio") > 10, WITHIN)
    before = judge.packets_from(prosecutor.id, "audio")
    assert await eventually(lambda: judge.packets_from(prosecutor.id, "audio") > before + 20, WITHIN), _diag(
        court, b, people
    )

    def last_entry() -> dict[str, Any]:
        roster = [m for m in judge.client.messages if m.get("type") == "roster"][-1]
        entry: dict[str, Any] = next(e for e in roster["participants"] if e["id"] == prosecutor.id)
        return entry

    assert await eventually(lambda: last_entry()["media"] == "ok", WITHIN)
    me = last_entry()
    assert me["placement"] == "courtroom"
    assert me["muted"] == ["camera"]
    assert set(me["publishing"]) == {"camera", "microphone"}
    assert me["peer"] == "connected"
