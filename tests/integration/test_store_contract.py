"""The store contract: one suite, run against the embedded SQLite backend and against a real Redis."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster

from rooms.audit import SYSTEM_STREAM, verify_chain
from rooms.backends import SQLITE_FILE, open_store
from rooms.backends.redis import SCRIPTS, STORE_TAG, RedisStore, connect
from rooms.errors import AlreadyExists, InvalidReference, InvalidTransition, NotFound, ScheduleConflict
from rooms.lifecycle import cancel
from rooms.model import Courtroom, Hearing, HearingKind, HearingState, Participant, Role, Site, SiteKind, identity_of
from rooms.store import HearingFilter, Mutation, Store, Trace
from tests.integration.backends import BACKENDS, Backend, backend_for

T0 = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
CLERK = Trace(actor="key:clerk", action="hearing_booked")


def at(hours: float) -> datetime:
    """A time ``hours`` after 09:00 on the test day."""
    return T0 + timedelta(hours=hours)


def person(name: str, site_id: str, role: Role = Role.defendant, pid: str = "") -> Participant:
    """A participant whose identity is the default name@site key."""
    return Participant(
        id=pid or f"prt_{name.lower().replace(' ', '_')}_{site_id}",
        name=name,
        role=role,
        site_id=site_id,
        identity=identity_of(name, site_id),
    )


def hearing(hid: str, courtroom: str, start: float, end: float, participants: tuple[Participant, ...] = ()) -> Hearing:
    """A trial booked into ``courtroom`` from ``start`` to ``end`` hours after 09:00."""
    # Participant ids are unique per hearing so the same person can be booked into several hearings.
    parts = tuple(p.model_copy(update={"id": f"{p.id}_{hid}"}) for p in participants)
    return Hearing(
        id=hid,
        case_number=f"(2030) Case {hid}",
        kind=HearingKind.trial,
        courtroom_id=courtroom,
        starts_at=at(start),
        ends_at=at(end),
        participants=parts,
    )


def unchanged(trace: Trace) -> Mutation:
    """A mutation that keeps the hearing as it is and leaves ``trace``."""
    return lambda h: (h, trace)


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Where the store under test keeps its data (SQLite file in tmp_path, or a unique Redis key prefix)."""
    async for b in backend_for(request, tmp_path):
        yield b


@pytest.fixture
async def store(backend: Backend) -> Store:
    """An open, empty store on the backend under test."""
    return await backend.open()


@pytest.fixture
async def court(store: Store) -> Store:
    """The store with a court (1 terminal), a detention center (2 terminals) and three courtrooms."""
    trace = Trace(actor="key:admin", action="site_created")
    await store.create_site(Site(id="court1", name="Prefecture Court", kind=SiteKind.court), trace)
    await store.create_site(
        Site(id="dc1", name="No. 1 Detention Center", kind=SiteKind.detention_center, terminals=2), trace
    )
    for cr in ("cr1", "cr2", "cr3"):
        await store.create_courtroom(
            Courtroom(id=cr, name=f"Remote Courtroom {cr}", site_id="court1"),
            Trace(actor="key:admin", action="courtroom_created"),
        )
    return store


async def test_sites_and_courtrooms_round_trip(store: Store) -> None:
    """Created sites and courtrooms read back equal, and lists come sorted by id."""
    trace = Trace(actor="key:admin", action="site_created")
    b = await store.create_site(Site(id="b", name="B", kind=SiteKind.prison, region="north", terminals=3), trace)
    a = await store.create_site(Site(id="a", name="A", kind=SiteKind.court), trace)
    assert await store.get_site("b") == b
    assert list(await store.list_sites()) == [a, b]
    cr = await store.create_courtroom(Courtroom(id="cr", name="Courtroom", site_id="a"), trace)
    assert await store.get_courtroom("cr") == cr
    assert list(await store.list_courtrooms()) == [cr]


async def test_a_site_link_round_trips_and_changes_atomically(store: Store) -> None:
    """A site's link (Mbit/s) reads back as stored, changes with one audited update, and a missing site is named."""
    admin = Trace(actor="key:admin", action="site_created")
    dc = await store.create_site(Site(id="dc", name="DC", kind=SiteKind.detention_center, link_mbps=20.5), admin)
    assert (await store.get_site("dc")).link_mbps == 20.5
    assert list(await store.list_sites()) == [dc]
    changed = await store.update_site(
        "dc", lambda s: (s.model_copy(update={"link_mbps": 50.0, "id": "other"}), Trace("key:admin", "site_changed"))
    )
    assert changed == dc.model_copy(update={"link_mbps": 50.0})  # the id stays whatever the mutation returns
    assert await store.get_site("dc") == changed
    assert [s.id for s in await store.list_sites()] == ["dc"]
    assert [e.action for e in await store.audit_log(SYSTEM_STREAM)] == ["site_created", "site_changed"]

    def refuse(site: Site) -> tuple[Site, Trace]:
        raise InvalidReference("refused")

    with pytest.raises(InvalidReference):
        await store.update_site("dc", refuse)
    assert (await store.get_site("dc")).link_mbps == 50.0
    with pytest.raises(NotFound, match="nope"):
        await store.update_site("nope", lambda s: (s, Trace("key:admin", "site_changed")))
    assert len(await store.audit_log(SYSTEM_STREAM)) == 2


async def test_sites_stored_before_the_link_field_still_load(store: Store, backend: Backend) -> None:
    """A site written by a release without link_mbps loads with no link, and can be given one."""
    await backend.put_raw_site(
        "old", '{"id":"old","name":"Old DC","kind":"detention_center","region":"","terminals":2}'
    )
    old = await store.get_site("old")
    assert (old.name, old.terminals, old.link_mbps) == ("Old DC", 2, None)
    assert [s.id for s in await store.list_sites()] == ["old"]
    updated = await store.update_site(
        "old", lambda s: (s.model_copy(update={"link_mbps": 20.0}), Trace("key:admin", "site_changed"))
    )
    assert (await store.get_site("old")) == updated
    assert updated.link_mbps == 20.0


async def test_unknown_ids_are_not_found(store: Store) -> None:
    """Reading a site, courtroom or hearing that does not exist raises NotFound naming it."""
    with pytest.raises(NotFound, match="nope"):
        await store.get_site("nope")
    with pytest.raises(NotFound):
        await store.get_courtroom("nope")
    with pytest.raises(NotFound):
        await store.get_hearing("nope")
    with pytest.raises(NotFound):
        await store.mutate_hearing("nope", lambda h: (h, CLERK))


async def test_duplicate_ids_already_exist_and_change_nothing(court: Store) -> None:
    """A second site, courtroom or hearing with a taken id is refused and leaves the first and the log alone."""
    before = len(await court.audit_log(SYSTEM_STREAM))
    with pytest.raises(AlreadyExists):
        await court.create_site(Site(id="court1", name="Other", kind=SiteKind.remote), CLERK)
    with pytest.raises(AlreadyExists):
        await court.create_courtroom(Courtroom(id="cr1", name="Other", site_id="dc1"), CLERK)
    assert (await court.get_site("court1")).name == "Prefecture Court"
    assert (await court.get_courtroom("cr1")).site_id == "court1"
    assert len(await court.audit_log(SYSTEM_STREAM)) == before
    first = await court.book(hearing("h1", "cr1", 0, 1), CLERK)
    await court.book(hearing("h2", "cr2", 0, 1), CLERK)
    # The taken id is reported before anything else that is wrong with the booking.
    for again in (hearing("h1", "cr2", 0.5, 1.5), hearing("h1", "cr9", 5, 6)):
        with pytest.raises(AlreadyExists):
            await court.book(again, CLERK)
    assert await court.get_hearing("h1") == first
    assert len(await court.audit_log("h1")) == 1


async def test_unknown_references_are_invalid(court: Store) -> None:
    """A courtroom on an unknown site, or a booking naming an unknown courtroom or site, is refused, nothing stored."""
    with pytest.raises(InvalidReference, match="atlantis"):
        await court.create_courtroom(Courtroom(id="cr9", name="X", site_id="atlantis"), CLERK)
    with pytest.raises(NotFound):
        await court.get_courtroom("cr9")
    with pytest.raises(InvalidReference, match="cr9"):
        await court.book(hearing("h1", "cr9", 0, 1), CLERK)
    with pytest.raises(InvalidReference, match="atlantis"):
        await court.book(hearing("h2", "cr1", 0, 1, (person("Li Lei", "atlantis"),)), CLERK)
    assert list(await court.list_hearings(HearingFilter())) == []
    assert list(await court.audit_log("h1")) == []


async def test_book_get_and_list_filters(court: Store) -> None:
    """Booked hearings read back equal; lists filter by courtroom, site and overlapping window, by start time."""
    h1 = await court.book(hearing("h1", "cr1", 0, 1, (person("Zhang San", "dc1"),)), CLERK)
    h2 = await court.book(hearing("h2", "cr2", 1, 2, (person("Judge Wang", "court1", Role.judge),)), CLERK)
    h3 = await court.book(hearing("h3", "cr1", 3, 4), CLERK)
    assert await court.get_hearing("h2") == h2

    async def ids(**kw: object) -> list[str]:
        return [h.id for h in await court.list_hearings(HearingFilter(**kw))]  # type: ignore[arg-type]

    assert await ids() == ["h1", "h2", "h3"]
    assert await ids(courtroom_id="cr1") == ["h1", "h3"]
    assert await ids(site_id="dc1") == ["h1"]
    assert await ids(site_id="court1") == ["h2"]
    assert await ids(starts_from=at(0.5), ends_to=at(1.5)) == ["h1", "h2"]
    # Half-open windows: h1 ends exactly at 10:00 and h3 starts exactly at 12:00.
    assert await ids(starts_from=at(1), ends_to=at(3)) == ["h2"]
    assert await ids(starts_from=at(2)) == ["h3"]
    assert await ids(ends_to=at(1)) == ["h1"]
    assert await ids(courtroom_id="cr1", starts_from=at(0.5)) == ["h1", "h3"]
    assert await ids(limit=2) == ["h1", "h2"]
    assert h1.version == 1
    assert h3.state is HearingState.scheduled


async def test_courtroom_double_booking_conflicts(court: Store) -> None:
    """An overlapping booking of the same courtroom is a conflict naming the hearing that holds it."""
    await court.book(hearing("h1", "cr1", 0, 1), CLERK)
    with pytest.raises(ScheduleConflict) as err:
        await court.book(hearing("h2", "cr1", 0.5, 1.5), CLERK)
    first = err.value.collisions[0]
    assert (first.what, first.hearing_id, first.subject) == ("courtroom", "h1", "cr1")
    with pytest.raises(NotFound):
        await court.get_hearing("h2")
    assert list(await court.audit_log("h2")) == []


async def test_site_terminals_limit_overlapping_hearings(court: Store) -> None:
    """A site with two terminals joins two overlapping hearings; a third overlapping one conflicts on its terminals."""
    await court.book(hearing("h1", "cr1", 0, 2, (person("Zhang San", "dc1"),)), CLERK)
    await court.book(hearing("h2", "cr2", 1, 3, (person("Li Si", "dc1"),)), CLERK)
    with pytest.raises(ScheduleConflict) as err:
        await court.book(hearing("h3", "cr3", 1.5, 2.5, (person("Wang Wu", "dc1"),)), CLERK)
    assert [(c.what, c.subject) for c in err.value.collisions] == [("site_terminals", "dc1")]
    assert err.value.collisions[0].hearing_id in ("h1", "h2")
    # Only h2 runs at 2:00-3:00, so one terminal is free then.
    await court.book(hearing("h4", "cr3", 2, 3, (person("Wang Wu", "dc1"),)), CLERK)


async def test_same_person_cannot_be_in_two_overlapping_hearings(court: Store) -> None:
    """A participant (same name at the same site) booked into two overlapping hearings is a participant conflict."""
    await court.book(hearing("h1", "cr1", 0, 1, (person("Zhang San", "dc1"),)), CLERK)
    with pytest.raises(ScheduleConflict) as err:
        await court.book(hearing("h2", "cr2", 0.5, 1.5, (person("  zhang   SAN ", "dc1"),)), CLERK)
    (only,) = err.value.collisions
    assert (only.what, only.hearing_id, only.subject) == ("participant", "h1", "zhang san@dc1")
    # The same name at another site is another person.
    await court.book(hearing("h3", "cr2", 0.5, 1.5, (person("Zhang San", "court1"),)), CLERK)


async def test_back_to_back_windows_do_not_conflict(court: Store) -> None:
    """A hearing that starts exactly when the previous one ends may use the same courtroom, site and person."""
    p = person("Zhang San", "dc1")
    await court.book(hearing("h1", "cr1", 0, 1, (p,)), CLERK)
    await court.book(hearing("h2", "cr1", 1, 2, (p,)), CLERK)
    await court.book(hearing("h0", "cr1", -1, 0, (p,)), CLERK)
    assert len(await court.list_hearings(HearingFilter(courtroom_id="cr1"))) == 3


async def test_cancelled_hearing_frees_its_slot(court: Store) -> None:
    """Once a hearing is cancelled, its courtroom, terminals and people may be booked for the same window."""
    p = person("Zhang San", "dc1")
    await court.book(hearing("h1", "cr1", 0, 1, (p,)), CLERK)
    cancelled = await court.mutate_hearing(
        "h1",
        lambda h: (h.model_copy(update={"state": cancel(h.state)}), Trace("key:clerk", "hearing_cancelled")),
    )
    assert (cancelled.state, cancelled.version) == (HearingState.cancelled, 2)
    await court.book(hearing("h2", "cr1", 0, 1, (p,)), CLERK)
    # A cancelled hearing cannot be cancelled again, and the refusal stores nothing.
    with pytest.raises(InvalidTransition):
        await court.mutate_hearing(
            "h1", lambda h: (h.model_copy(update={"state": cancel(h.state)}), Trace("key:clerk", "hearing_cancelled"))
        )
    assert (await court.get_hearing("h1")).version == 2


async def test_reschedule_rechecks_conflicts_and_changes_nothing_on_conflict(court: Store) -> None:
    """Moving a hearing onto a booked window is refused with nothing changed; a free window is accepted."""
    p = person("Zhang San", "dc1")
    await court.book(hearing("h1", "cr1", 0, 1), CLERK)
    h2 = await court.book(hearing("h2", "cr2", 2, 3, (p,)), CLERK)
    await court.book(hearing("h3", "cr3", 0, 1, (p,)), CLERK)

    def move(start: float, end: float, courtroom: str = "cr2") -> tuple[Hearing, Trace]:
        changed = h2.model_copy(update={"starts_at": at(start), "ends_at": at(end), "courtroom_id": courtroom})
        return changed, Trace("key:clerk", "hearing_rescheduled", {"starts_at": at(start).isoformat()})

    with pytest.raises(ScheduleConflict) as err:
        await court.mutate_hearing("h2", lambda h: move(0.5, 1.5, "cr1"))
    assert {(c.what, c.hearing_id) for c in err.value.collisions} == {("courtroom", "h1"), ("participant", "h3")}
    assert await court.get_hearing("h2") == h2
    assert len(await court.audit_log("h2")) == 1
    with pytest.raises(InvalidReference):
        await court.mutate_hearing("h2", lambda h: move(5, 6, "cr9"))
    moved = await court.mutate_hearing("h2", lambda h: move(1, 2, "cr1"))
    assert (moved.starts_at, moved.courtroom_id, moved.version) == (at(1), "cr1", 2)
    assert await court.get_hearing("h2") == moved
    # The schedule index follows the move: the old slot is free, the new one is taken.
    await court.book(hearing("h4", "cr2", 2, 3, (p,)), CLERK)
    with pytest.raises(ScheduleConflict):
        await court.book(hearing("h5", "cr1", 1.5, 2.5), CLERK)


async def test_every_change_appends_to_a_verifying_audit_chain(court: Store) -> None:
    """Booking, each mutation and each appended event add one chained, UTC-stamped event per hearing stream."""
    await court.book(hearing("h1", "cr1", 0, 1), Trace("key:clerk", "hearing_booked", {"case": "A"}))
    for action in ("hearing_opened", "hearing_started"):
        await court.mutate_hearing("h1", unchanged(Trace("prt_judge", action)))
    await court.append_audit("h1", Trace("prt_judge", "participant_admitted", {"participant_id": "prt_1"}))
    log = list(await court.audit_log("h1"))
    assert [e.action for e in log] == ["hearing_booked", "hearing_opened", "hearing_started", "participant_admitted"]
    assert [e.seq for e in log] == [1, 2, 3, 4]
    assert log[0].data == {"case": "A"}
    assert log[3].actor == "prt_judge"
    assert all(e.at.utcoffset() == timedelta(0) and e.stream == "h1" for e in log)
    assert verify_chain(log) is None
    system = list(await court.audit_log(SYSTEM_STREAM))
    assert [e.action for e in system] == ["site_created"] * 2 + ["courtroom_created"] * 3
    assert verify_chain(system) is None
    assert (await court.get_hearing("h1")).version == 3


async def test_audit_since_returns_only_later_events(court: Store) -> None:
    """A follower (the recorder) reads the events after the last one it has, in order, and nothing else."""
    await court.book(hearing("h1", "cr1", 0, 1), CLERK)
    for action in ("hearing_opened", "hearing_started", "hearing_recessed"):
        await court.append_audit("h1", Trace("prt_judge", action))
    assert [e.seq for e in await court.audit_since("h1", 0)] == [1, 2, 3, 4]
    assert [e.action for e in await court.audit_since("h1", 2)] == ["hearing_started", "hearing_recessed"]
    assert list(await court.audit_since("h1", 4)) == []
    assert list(await court.audit_since("no-such-stream", 0)) == []


async def test_altered_audit_event_is_named_by_verify(court: Store, backend: Backend) -> None:
    """Editing one stored audit event behind the store's back makes verify_chain name that event's seq."""
    await court.book(hearing("h1", "cr1", 0, 1), CLERK)
    for action in ("hearing_opened", "hearing_started"):
        await court.append_audit("h1", Trace("prt_judge", action))
    await backend.tamper("h1", 2, actor="key:mallory")
    log = list(await court.audit_log("h1"))
    assert log[1].actor == "key:mallory"
    broken = verify_chain(log)
    assert broken is not None
    assert broken.seq == 2


async def test_data_survives_close_and_reopen(court: Store, backend: Backend) -> None:
    """After closing and reopening on the same data, hearings, schedule and audit chains are all still there."""
    h1 = await court.book(hearing("h1", "cr1", 0, 1, (person("Zhang San", "dc1"),)), CLERK)
    await court.close()
    again = await backend.open()
    assert await again.get_hearing("h1") == h1
    assert [s.id for s in await again.list_sites()] == ["court1", "dc1"]
    assert [e.action for e in await again.audit_log("h1")] == ["hearing_booked"]
    with pytest.raises(ScheduleConflict):
        await again.book(hearing("h2", "cr2", 0.5, 1.5, (person("Zhang San", "dc1"),)), CLERK)
    await again.append_audit("h1", Trace("prt_judge", "hearing_opened"))
    assert verify_chain(await again.audit_log("h1")) is None


async def test_participant_change_moves_site_index(court: Store) -> None:
    """Replacing a hearing's participants updates which site lists it and which person it blocks."""
    await court.book(hearing("h1", "cr1", 0, 1, (person("Zhang San", "dc1"),)), CLERK)
    new = (person("Li Si", "court1", pid="prt_li"),)
    await court.mutate_hearing(
        "h1", lambda h: (h.model_copy(update={"participants": new}), Trace("key:clerk", "participants_changed"))
    )
    assert [h.id for h in await court.list_hearings(HearingFilter(site_id="dc1"))] == []
    assert [h.id for h in await court.list_hearings(HearingFilter(site_id="court1"))] == ["h1"]
    await court.book(hearing("h2", "cr2", 0, 1, (person("Zhang San", "dc1"),)), CLERK)
    with pytest.raises(ScheduleConflict):
        await court.book(hearing("h3", "cr3", 0, 1, (person("Li Si", "court1"),)), CLERK)


async def test_open_store_picks_the_backend_from_the_url(tmp_path: Path, redis_server: str) -> None:
    """No URL opens the SQLite file under the data dir, redis:// opens Redis, other schemes are refused."""
    embedded = await open_store(None, tmp_path / "data")
    try:
        await embedded.create_site(Site(id="s", name="S", kind=SiteKind.court), CLERK)
    finally:
        await embedded.close()
    assert (tmp_path / "data" / SQLITE_FILE).is_file()
    again = await open_store("", tmp_path / "data")
    try:
        assert [s.id for s in await again.list_sites()] == ["s"]
    finally:
        await again.close()
    shared = await open_store(redis_server, tmp_path, key_prefix="test:open:")
    try:
        assert isinstance(shared, RedisStore)
    finally:
        await shared.close()
    with pytest.raises(ValueError, match="http"):
        await open_store("http://127.0.0.1:1/", tmp_path)


# A key argument of redis.call: the command name, then the first argument (every command the store's scripts use
# takes its key first).
_SCRIPT_CALL = re.compile(r"redis\.call\(\s*'(\w+)'\s*,\s*([^,)]+)")


def test_every_store_script_touches_only_its_declared_keys() -> None:
    """Each Lua script of the Redis store reads and writes only keys passed in KEYS, so Redis Cluster can route it."""
    assert SCRIPTS, "the store declares its scripts"
    for name, source in SCRIPTS.items():
        calls = _SCRIPT_CALL.findall(source)
        assert calls, name
        undeclared = [(command, arg) for command, arg in calls if not arg.strip().startswith("KEYS[")]
        assert undeclared == [], f"script {name} touches keys it does not declare: {undeclared}"


@pytest.mark.redis
async def test_a_store_on_a_cluster_keeps_every_key_on_one_slot(redis_cluster: str, tmp_path: Path) -> None:
    """On a Redis Cluster (redis+cluster://) sites, bookings, indexes and audit streams share one hash-tagged slot."""
    prefix = f"test:slot:{uuid.uuid4().hex[:8]}:"
    store = await open_store(redis_cluster, tmp_path, key_prefix=prefix)
    try:
        assert isinstance(store, RedisStore)
        client = store._redis
        assert isinstance(client, RedisCluster)
        admin = Trace(actor="key:admin", action="site_created")
        for site in (
            Site(id="c", name="C", kind=SiteKind.court),
            Site(id="d", name="D", kind=SiteKind.detention_center),
        ):
            await store.create_site(site, admin)
        await store.create_courtroom(Courtroom(id="cr", name="CR", site_id="c"), admin)
        await store.book(hearing("h", "cr", 0, 1, (person("Zhang San", "d"), person("Li Si", "c"))), CLERK)
        await store.mutate_hearing("h", unchanged(Trace("key:clerk", "hearing_touched")))
        await store.append_audit("h", Trace("key:clerk", "note"))
        keys: list[str] = []
        for node in client.get_primaries():
            keys += [k async for k in client.scan_iter(match=f"{prefix}*", target_nodes=node)]
        assert len(keys) >= 8
        assert all(k.startswith(f"{prefix}{{store}}:") for k in keys), keys
        slots = {await client.cluster_keyslot(k) for k in keys}
        assert len(slots) == 1
    finally:
        await store.close()


@pytest.mark.redis
async def test_opening_data_of_the_old_key_layout_warns(redis_server: str, tmp_path: Path) -> None:
    """A Redis holding a pre-hash-tag store under the prefix gets a store_old_key_layout warning on open."""
    prefix = f"test:old:{uuid.uuid4().hex[:8]}:"
    client = connect(redis_server)
    await client.zadd(f"{prefix}sites", {"s": 0})
    try:
        with structlog.testing.capture_logs() as logs:
            store = await open_store(redis_server, tmp_path, key_prefix=prefix)
            await store.close()
        assert [e for e in logs if e["event"] == "store_old_key_layout"]
    finally:
        await client.delete(f"{prefix}sites")
        await client.aclose()


async def _move_slot(nodes: list[aioredis.Redis], slot: int) -> None:
    """Reshard one slot by hand to another master (what `redis-cli --cluster reshard` does), keys included."""
    ids = [str(await n.execute_command("CLUSTER", "MYID")) for n in nodes]  # type: ignore[no-untyped-call]
    owners = [int(await n.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) for n in nodes]  # type: ignore[no-untyped-call]
    src = max(range(len(nodes)), key=lambda i: owners[i])
    dst = (src + 1) % len(nodes)
    await nodes[dst].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src])  # type: ignore[no-untyped-call]
    await nodes[src].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])  # type: ignore[no-untyped-call]
    kwargs = nodes[dst].connection_pool.connection_kwargs
    while keys := await nodes[src].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):  # type: ignore[no-untyped-call]
        await nodes[src].execute_command(  # type: ignore[no-untyped-call]
            "MIGRATE", kwargs["host"], kwargs["port"], "", 0, 5000, "KEYS", *keys
        )
    for node in nodes:
        await node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst])  # type: ignore[no-untyped-call]


@pytest.mark.redis
async def test_a_store_on_a_cluster_follows_its_slot_to_another_master(redis_cluster: str, tmp_path: Path) -> None:
    """When the store's slot moves to another master (resharding, failover), booking, changes and reads carry on."""
    store = await open_store(redis_cluster, tmp_path, key_prefix=f"test:move:{uuid.uuid4().hex[:8]}:")
    assert isinstance(store, RedisStore)
    assert isinstance(store._redis, RedisCluster)
    nodes = [aioredis.Redis(host=n.host, port=int(n.port), decode_responses=True) for n in store._redis.get_primaries()]
    try:
        admin = Trace(actor="key:admin", action="site_created")
        await store.create_site(Site(id="c", name="C", kind=SiteKind.court), admin)
        await store.create_courtroom(Courtroom(id="cr", name="CR", site_id="c"), admin)
        await store.book(hearing("h1", "cr", 0, 1, (person("Zhang San", "c"),)), CLERK)
        await _move_slot(nodes, int(await store._redis.cluster_keyslot(STORE_TAG)))
        await store.book(hearing("h2", "cr", 1, 2), CLERK)
        await store.mutate_hearing("h1", unchanged(Trace("key:clerk", "hearing_touched")))
        with pytest.raises(ScheduleConflict):
            await store.book(hearing("h3", "cr", 0.5, 1.5), CLERK)
        assert [h.id for h in await store.list_hearings(HearingFilter(courtroom_id="cr"))] == ["h1", "h2"]
        assert verify_chain(await store.audit_log("h1")) is None
        # The transactions went to the old master first, were told MOVED, and followed the slot.
        assert len(store._masters) == 2
    finally:
        for node in nodes:
            await node.aclose()
        await store.close()
