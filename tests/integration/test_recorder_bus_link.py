"""The recorder over the bus link: everything it needs from signaling crosses the bus, nothing else.

The hub, the media node and the recorders share one process here (the frames
come straight from the in-process node), but the recorders reach signaling
only through ``rooms.bus.InProcessBus`` and ``InProcessRecords``: the
:class:`signaling.recorder_bus.RecorderBusServer` on one side, a
:class:`recorder.bus_link.BusSessionLink` per recorder on the other, each with
its own data directory (as on separate machines). One hearing, run once for
the module, with two recorders: a consultation, a restart of the second
recorder, a recess, and the adjournment.

The same runs on the Redis bus (``rooms.backends.open_bus``, a real
redis-server of the module, one bus connection per "process") once that part
is on the branch; until then that case is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from protocol.client import ParticipantInfo, Reply, RosterMsg
from protocol.cluster import (
    RECORDER_LINK,
    recorder_command_channel,
    recorder_record_key,
    recorder_session_channel,
)
from protocol.directory import RecorderKey, RecordingInfo
from protocol.recorder import (
    RECORDER_HEARTBEAT_SECONDS,
    RECORDER_TTL_SECONDS,
    AuditIntent,
    JoinReply,
    LinkRefused,
    RecorderCommand,
    RecorderReply,
    SessionNote,
)
from recorder.bus_link import BusSessionLink
from recorder.directory import ArchiveDirectory
from recorder.hearing_chain import verify_hearing
from recorder.service import RecordingService, build_service
from recorder.trust import data_dir_keys
from recorder.verify import verify_archive
from rooms.audit import AuditEvent
from rooms.bus import Bus, InProcessBus, InProcessRecords, Records
from rooms.model import Role
from signaling.recorder_bus import BusRecordingDirectory, RecorderBusServer
from tests.conftest import start_redis, stop_redis
from tests.e2e.test_recording_e2e import (
    EXCLUSION_SLACK,
    RECESS_SLACK,
    audit_at,
    manifest,
    overlap,
    seat,
    session,
    stretches,
)
from tests.ws_fixtures import Court, eventually

pytest_plugins = ["tests.ws_fixtures"]

SEGMENT_SECONDS = 2.0


BusPair = tuple[Bus, Records]


@dataclass
class Cluster:
    """The bus pair, signaling's recorder server, and the recorders by id."""

    court: Court
    bus: Bus
    records: Records
    server: RecorderBusServer
    root: Path
    connect: Callable[[str], Awaitable[BusPair]]
    """A bus pair for a new process (the in-process pair is shared; Redis opens one per process id)."""
    services: dict[str, RecordingService] = field(default_factory=dict)
    pairs: dict[str, BusPair] = field(default_factory=dict)

    def data_dir(self, recorder_id: str) -> Path:
        """The recorder's own data directory."""
        return self.root / recorder_id

    async def start_recorder(self, recorder_id: str) -> RecordingService:
        """Start a recorder process's service over the bus (as ``courtlink recorder`` wires it)."""
        data_dir = self.data_dir(recorder_id)
        data_dir.mkdir(parents=True, exist_ok=True)
        bus, records = self.pairs[recorder_id] = await self.connect(f"recorder-{recorder_id}")
        link = BusSessionLink(bus, records, recorder_id, directory=ArchiveDirectory(data_dir))
        service = build_service(
            link, self.court.node, self.court.store, data_dir, recorder_id, segment_seconds=SEGMENT_SECONDS
        )
        link.following = service.following
        await service.start()
        self.services[recorder_id] = service
        return service

    async def stop_recorder(self, recorder_id: str) -> None:
        """Stop a recorder without sealing (what a crash leaves: an unsealed session its restart continues)."""
        await self.services.pop(recorder_id).close()
        await close_pair(self, self.pairs.pop(recorder_id))


async def close_pair(cluster: Cluster, pair: BusPair) -> None:
    """Close a process's own bus pair (the shared in-process one stays open)."""
    if pair[0] is not cluster.bus:
        await pair[0].close()
        await pair[1].close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module alone (no record of another test's recorders in it)."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis-recorder-bus"))
    try:
        yield url
    finally:
        stop_redis(proc)


def bus_opener() -> Callable[..., Any] | None:
    """``rooms.backends.open_bus`` (part bus of issue 10), if it is on this branch."""
    return getattr(importlib.import_module("rooms.backends"), "open_bus", None)


@pytest.fixture(params=["in_process", "redis"])
async def cluster(request: pytest.FixtureRequest, court: Court, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Signaling's recorder server on a bus around the ``court`` hub (no recorder yet): in-process, or Redis."""
    if request.param == "in_process":
        shared: BusPair = (InProcessBus(), InProcessRecords())

        async def connect(process_id: str) -> BusPair:
            return shared

    else:
        opener = bus_opener()
        if opener is None:
            pytest.skip("rooms.backends.open_bus (part bus of issue 10) is not on this branch yet")
        url = request.getfixturevalue("redis_url")

        async def connect(process_id: str) -> BusPair:
            opened = opener(url, process_id=process_id)
            return cast(BusPair, await opened if inspect.isawaitable(opened) else opened)

    bus, records = await connect("sig-1")
    server = RecorderBusServer(court.hub, bus, records, process_id="sig-1")
    await server.start()
    c = Cluster(court, bus, records, server, tmp_path / "recorders", connect)
    try:
        yield c
    finally:
        for service in list(c.services.values()):
            with contextlib.suppress(Exception):
                await service.close()
        for pair in c.pairs.values():
            with contextlib.suppress(Exception):
                await close_pair(c, pair)
        await server.close()
        await bus.close()
        await records.close()


def hidden_members(court: Court, hearing_id: str) -> set[str]:
    """Ids of the recorders connected to the hearing's live room."""
    live = court.hub.rooms.get(hearing_id)
    if live is None:
        return set()
    return {m.id for m in live.room.members.values() if m.info.role is Role.recorder and m.connected}


def member_conn(court: Court, hearing_id: str, participant_id: str) -> int | None:
    """The connection a member of the live room is on now (None: not a connected member)."""
    live = court.hub.rooms.get(hearing_id)
    member = live.room.members.get(participant_id) if live is not None else None
    return member.conn if member is not None and member.connected else None


async def test_two_recorders_over_the_bus_seal_verifiable_archives_without_the_consultation(
    cluster: Cluster,
) -> None:
    """Two recorders following a hearing over the bus alone seal verifiable archives with no consultation frames;
    one restarted mid-hearing continues with a recorder_restart gap and its hearing chain still verifies."""
    court = cluster.court
    await cluster.start_recorder("rec-a")
    await cluster.start_recorder("rec-b")
    for rid in ("rec-a", "rec-b"):
        assert await cluster.records.get(recorder_record_key(rid)) is not None
    booking = await court.book(("judge", "defendant", "counsel"))
    hid = booking.hearing_id
    people = await seat(court, booking, ("judge", "defendant", "counsel"))
    judge = people["judge"]
    # The room opened: both recorders heard it on the bus and joined as hidden participants.
    assert await eventually(lambda: hidden_members(court, hid) == {"recorder-rec-a", "recorder-rec-b"})
    await session(judge, "open")
    await session(judge, "start")
    await judge.client.expect("recording", lambda m: m["status"] == "recording")
    await asyncio.sleep(3.0)
    pair = [booking.ids["defendant"], booking.ids["counsel"]]
    reply = await judge.client.request_ok("consult", "roster", participant_ids=pair)
    assert reply["type"] == "roster", reply
    await asyncio.sleep(3.0)
    reply = await judge.client.request_ok("end_consult", "roster", participant_ids=pair)
    assert reply["type"] == "roster", reply
    await asyncio.sleep(2.5)

    # rec-b goes away mid-session and comes back on the same disk: it hears the live room again (hello).
    await cluster.stop_recorder("rec-b")
    assert await cluster.records.get(recorder_record_key("rec-b")) is None
    loop = asyncio.get_running_loop()
    before = member_conn(court, hid, "recorder-rec-b")
    restarted_at = loop.time()
    service_b = await cluster.start_recorder("rec-b")
    assert await eventually(lambda: member_conn(court, hid, "recorder-rec-b") not in (None, before))
    rejoined = loop.time() - restarted_at

    def recording_again() -> bool:
        current = service_b.recorder.session(hid)
        return current is not None and len(current.seen) >= 6  # 3 people x (camera, microphone)

    # The goal for a restarted recorder is 5 s: measured and printed, not asserted (tests assert no wall-clock
    # times); the wait is bounded (30 s), and what the restart cost the archive is checked below by its gaps.
    assert await eventually(recording_again, within=30.0)
    continued = loop.time() - restarted_at
    print(
        f"recorder restart over the bus: rejoined in {rejoined:.2f} s, every source recorded in {continued:.2f} s "
        "(the issue's goal: 5 s)"
    )
    await asyncio.sleep(3.0)

    await session(judge, "recess")
    await asyncio.sleep(2.0)
    await session(judge, "resume")
    await asyncio.sleep(2.5)
    await session(judge, "adjourn")
    await judge.client.close_code()

    # Both seals were waited for: the judge heard `sealed` before the adjournment, from each recorder's reply.
    kinds = [(m["type"], m.get("status") or m.get("state")) for m in judge.client.messages]
    assert ("recording", "sealed") in kinds, kinds
    assert kinds.index(("recording", "sealed")) < kinds.index(("state", "adjourned")), kinds

    status, audit = await court.rest("GET", f"/api/v1/hearings/{hid}/audit")
    assert status == 200, audit
    start = audit_at(audit["events"], "consultation_started")[0]
    end = audit_at(audit["events"], "consultation_ended")[0]

    report: dict[str, Any] = {}
    for rid in ("rec-a", "rec-b"):
        data_dir = cluster.data_dir(rid)
        hearing_dir = data_dir / "recordings" / hid
        chain = await asyncio.to_thread(verify_hearing, hearing_dir, trusted_keys=data_dir_keys(data_dir))
        assert chain.ok, (rid, chain.as_dict())
        dirs = sorted(p.parent for p in hearing_dir.glob("*/*/manifest.jsonl"))
        first = manifest(dirs[0])
        result = await asyncio.to_thread(verify_archive, dirs[-1], trusted_keys=data_dir_keys(data_dir))
        assert result.ok, (rid, result.as_dict())
        # The consultation happened in the first session of each: its members are absent from it.
        gaps = {g.get("participant") for g in first if g["type"] == "gap" and g["reason"] == "consultation_excluded"}
        assert gaps == set(pair), (rid, gaps)
        segments = [line for line in first if line["type"] == "segment"]
        for pid in pair:
            for kind in ("audio", "video"):
                mine = [s for s in segments if s["participant"] == pid and s["kind"] == kind]
                assert mine, (rid, pid, kind)
                early = 0.0 if kind == "audio" else RECESS_SLACK[kind]
                inside = overlap(mine, start + EXCLUSION_SLACK, end)
                report[f"{rid}/{pid}/{kind}"] = [tuple(round(x - start, 2) for x in s) for s in stretches(mine)]
                assert inside <= early, json.dumps(report, indent=1)
        report[rid] = [p.name for p in dirs]
        if rid == "rec-a":
            assert len(dirs) == 1, dirs
            assert first[-1]["type"] == "seal", first[-1]
            assert first[-1]["state"] != "interrupted", first[-1]
        else:
            # The restart: the first session sealed as interrupted, the second continues it after a gap.
            assert len(dirs) == 2, dirs
            assert first[-1]["type"] == "seal", first[-1]
            assert first[-1]["state"] == "interrupted", first[-1]
            second = manifest(dirs[1])
            assert second[0]["previous"]["session_id"] == dirs[0].name, second[0]
            restart = [g for g in second if g["type"] == "gap" and g["reason"] == "recorder_restart"]
            assert len(restart) == 1, restart
            assert any(line["type"] == "segment" for line in second), "nothing recorded after the restart"

    # Signaling reads both recorders' archives and keys over the bus, as the REST API does.
    directory = BusRecordingDirectory(cluster.bus, cluster.records)
    listed: list[RecordingInfo] = list(await directory.recordings(hid))
    assert [(r.recorder_id, r.state) for r in listed] == [
        ("rec-a", "sealed"),
        ("rec-b", "interrupted"),
        ("rec-b", "sealed"),
    ], listed
    assert all(r.verification is not None and r.verification["ok"] for r in listed), listed
    keys: list[RecorderKey] = list(await directory.public_keys())
    assert sorted(k.recorder_id for k in keys) == ["rec-a", "rec-b"], keys


async def test_the_rec_indicator_says_degraded_when_no_recorder_is_left(cluster: Cluster) -> None:
    """With two recorders, one that goes away changes nothing participants see (the other records the hearing);
    when the last one goes, they are told degraded, reason recorder_lost, within a few heartbeats instead of REC
    staying on; a recorder that comes back makes it REC again."""
    court = cluster.court
    for rid in ("rec-a", "rec-b"):
        await cluster.start_recorder(rid)
    booking = await court.book(("judge", "defendant"))
    hid = booking.hearing_id
    judge = (await seat(court, booking, ("judge", "defendant")))["judge"]
    assert await eventually(lambda: hidden_members(court, hid) == {"recorder-rec-a", "recorder-rec-b"})
    await session(judge, "open")
    await session(judge, "start")
    await judge.client.expect("recording", lambda m: m["status"] == "recording")
    seen = len(judge.client.messages)

    await cluster.stop_recorder("rec-b")
    await asyncio.sleep(3 * RECORDER_HEARTBEAT_SECONDS)  # the watch looks once per heartbeat period
    told = [m for m in judge.client.messages[seen:] if m["type"] == "recording"]
    assert all(m["status"] == "recording" for m in told), told

    await cluster.stop_recorder("rec-a")
    lost = await judge.client.expect(
        "recording", lambda m: m.get("reason") == "recorder_lost", within=RECORDER_TTL_SECONDS + 10
    )
    assert lost["status"] == "degraded", lost

    await cluster.start_recorder("rec-a")
    await judge.client.expect("recording", lambda m: m["status"] == "recording", within=30)


async def test_bus_link_refusals_are_named(cluster: Cluster) -> None:
    """A recorder refused by the session gets a named LinkRefused; malformed bus requests get named refusals."""
    court = cluster.court
    service = await cluster.start_recorder("rec-a")
    booking = await court.book(("judge",))
    judge = await court.participant("judge", booking.tokens["judge"])
    for action in ("open", "start", "adjourn"):
        reply = await judge.client.request_ok("session", "state", action=action)
        assert reply["type"] == "state", reply
    link = BusSessionLink(*await cluster.connect("recorder-rec-z"), "rec-z")
    info = ParticipantInfo(id="recorder-rec-z", name="Recorder", role=Role.recorder, site="internal")
    with pytest.raises(LinkRefused) as refused:
        await link.join(booking.hearing_id, info)
    assert refused.value.code == "hearing_closed", refused.value
    garbage = await cluster.bus.request(RECORDER_LINK, b"{not json", attempt_seconds=5)
    assert JoinReply.model_validate_json(garbage).code == "invalid_request"
    answer = await cluster.bus.request(recorder_command_channel("rec-a"), b'{"op": "format_disk"}', attempt_seconds=5)
    assert RecorderReply.model_validate_json(answer).code == "invalid_command"
    # The adjourned hearing is let go once its seal is written (over Redis that can come a moment after the reply).
    # A join of rec-a delivered late, after the room was given up, is refused: the hub reads the stored hearing
    # again before it lets a recorder alone into an empty room (it once reopened the adjourned hearing for it).
    assert await eventually(lambda: service.following() == (), 15), service.following()


class Calls:
    """A RecorderEvents that notes the order of what the link delivers (the service's side, stripped)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def room_opened(self, hearing_id: str) -> None:
        self.calls.append(f"opened {hearing_id}")

    def room_forgotten(self, hearing_id: str) -> None:
        self.calls.append(f"forgotten {hearing_id}")

    def session_message(self, hearing_id: str, message: Reply) -> None:
        self.calls.append(f"message {type(message).__name__}")

    def session_closed(self, hearing_id: str, code: int, reason: str) -> None:
        self.calls.append(f"closed {code}")

    def audit_intent(self, hearing_id: str, intent: AuditIntent) -> None:
        self.calls.append(f"intent {intent.action}")

    def audit_event(self, hearing_id: str, event: AuditEvent) -> None:
        self.calls.append(f"audit {event.action}")

    async def closing(self, hearing_id: str) -> None:
        self.calls.append("closing")


async def test_an_intent_is_applied_after_the_session_messages_sent_before_it() -> None:
    """A consultation's intent over the bus is applied only after the roster sent before it (never undone by it)."""
    bus, records = InProcessBus(), InProcessRecords()
    link = BusSessionLink(bus, records, "rec-a")
    calls = Calls()
    await link.start(calls)
    try:
        intent = RecorderCommand(
            op="intent",
            hearing_id="h1",
            intent=AuditIntent(actor="p1", action="consultation_started", data={"participant_ids": ["p2"]}),
            handle="sig-1:x",
            after=1,
        )
        asking = asyncio.ensure_future(
            bus.request(recorder_command_channel("rec-a"), intent.model_dump_json().encode(), attempt_seconds=5)
        )
        await asyncio.sleep(0.2)
        # The roster sent before the intent arrives after it (separate channels: the bus keeps no order between).
        roster = SessionNote(hearing_id="h1", handle="sig-1:x", message=RosterMsg(participants=()).model_dump(), seq=1)
        await bus.publish(recorder_session_channel("rec-a"), roster.model_dump_json().encode())
        reply = await asyncio.wait_for(asking, 10)
        assert RecorderReply.model_validate_json(reply).ok
        assert calls.calls == ["message RosterMsg", "intent consultation_started"], calls.calls
    finally:
        await link.close()
        await bus.close()
