"""The multi-node store: Redis, shared by every signaling, media and recorder process.

Atomicity is optimistic: a mutation WATCHes every key its checks depend on
(the hearing, its audit stream, the schedule sets of its courtroom, sites and
people), reads and applies the very same :func:`rooms.schedule.check` in
Python, then writes the hearing, its indexes and its audit event in one
MULTI/EXEC. If any watched key changed meanwhile, EXEC fails and the whole
attempt is redone, so out of many concurrent conflicting bookings (from any
number of processes) exactly one is stored and the others see its conflict.

Schedule lookups are ``ZRANGEBYSCORE`` on sorted sets scored by the start
time, over (start - longest stored duration, end): O(log n + k) however many
hearings are stored, where a score of ``ends_at`` would scan every later one.

Redis Cluster (``redis+cluster://`` URLs): every key carries the one hash tag
:data:`STORE_TAG`, so the whole store lives on one cluster slot. That is
deliberate: a booking must check atomically the schedule of its courtroom, of
every site it joins and of every person in it, and a site (a detention center
serving every court) or a person spans any courtroom, so no finer partition
keeps one booking's keys together; WATCH/MULTI/EXEC and the Lua script both
need one slot. Bookings are a few thousand a day, far below one node's
throughput; the cluster buys availability (failover of that slot's master),
not write scaling, and the high-traffic keys of other services (node
heartbeats, leases, the bus) keep their own tags and spread over the cluster.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import AskError, MovedError, TryAgainError, WatchError

from rooms.audit import SYSTEM_STREAM, AuditEvent
from rooms.backends._common import (
    check_references,
    duration_micros,
    identities,
    micros,
    next_event,
    sorted_sites,
    window_matches,
)
from rooms.errors import AlreadyExists, InvalidReference, NotFound, StoreBusy
from rooms.model import Courtroom, Hearing, Site
from rooms.schedule import check
from rooms.store import HearingFilter, Mutation, SiteMutation, Trace

T = TypeVar("T")

Pipe = Pipeline
"""A watching transaction pipeline, on the one Redis or on the cluster node that owns the store's slot."""
Queue = Pipeline | ClusterPipeline
"""Where writes are queued: a transaction pipeline, or (load_unchecked) a plain pipeline of either client."""

log = structlog.get_logger(__name__)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that open a Redis Cluster client, and the plain scheme each stands for."""

STORE_TAG = "{store}"
"""The hash tag of every store key (see the module docstring: one slot, because a booking's checks span it all)."""

# Key names, each under "<prefix>{store}:" (prefix default "courtlink:"). Times are µs since the Unix epoch.
SITE_KEY = "site:{id}"
"""string: the Site as JSON."""
SITES_KEY = "sites"
"""sorted set: every site id, score 0 (so members come back sorted by id)."""
COURTROOM_KEY = "courtroom:{id}"
"""string: the Courtroom as JSON."""
COURTROOMS_KEY = "courtrooms"
"""sorted set: every courtroom id, score 0."""
HEARING_KEY = "hearing:{id}"
"""string: the Hearing as JSON (the source of truth; the sets below are indexes of it)."""
HEARINGS_KEY = "hearings"
"""sorted set: every hearing id (any state), score = starts_at; serves unfiltered lists."""
COURTROOM_SCHEDULE_KEY = "schedule:courtroom:{id}"
"""sorted set: ids of every hearing in that courtroom, score = starts_at."""
SITE_SCHEDULE_KEY = "schedule:site:{id}"
"""sorted set: ids of every hearing a site joins (has a participant at), score = starts_at."""
IDENTITY_SCHEDULE_KEY = "schedule:identity:{identity}"
"""sorted set: ids of every hearing a person (identity key) is booked into, score = starts_at."""
MAX_DURATION_KEY = "max_duration"
"""sorted set with one member, MAX_DURATION_MEMBER, scored by the longest window ever stored; ZADD GT keeps it a max."""
MAX_DURATION_MEMBER = "max"
AUDIT_KEY = "audit:{stream}"
"""stream: the audit chain of one stream (hearing id or 'system'); entry id "0-<seq>", one field AUDIT_FIELD."""
AUDIT_FIELD = "event"
"""The field of an audit stream entry holding the AuditEvent as JSON."""

MAX_ATTEMPTS = 500
"""Optimistic retries before giving up; each lost race means someone else's write succeeded."""


_READ_FOR_CHECK = """
local nsites = tonumber(ARGV[1])
local start = tonumber(ARGV[2])
local longest = tonumber(redis.call('ZSCORE', KEYS[3], ARGV[6]) or '0')
local taken = redis.call('EXISTS', KEYS[1])
local courtroom = redis.call('EXISTS', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local last_event = false
if #last > 0 then last_event = last[1][2][2] end
local sites = {}
for i = 1, nsites do sites[i] = redis.call('GET', KEYS[4 + i]) end
local ids = {}
if ARGV[5] == '1' then
  -- Hearings overlapping [start, end) started after start - longest stored duration.
  local low = string.format('%.0f', start - longest)
  local seen = {}
  for i = 5 + nsites, #KEYS do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], low, '(' .. ARGV[3])) do
      if id ~= ARGV[4] and not seen[id] then
        seen[id] = true
        ids[#ids + 1] = id
      end
    end
  end
end
return {taken, courtroom, last_event, sites, ids}
"""
"""Read-only script: everything a booking's checks need but the other hearings' bodies (writes stay in MULTI/EXEC).

It touches only the KEYS it declares (Redis Cluster routes and checks a script by them): the
bodies of the overlapping hearings are read by the caller with one MGET of the ids it returns.
"""

SCRIPTS = {"read_for_check": _READ_FOR_CHECK}
"""Every Lua script of the store, by name (a test checks that each touches only its declared KEYS)."""


class RedisStore:
    """:class:`rooms.store.Store` on Redis; use :meth:`open`."""

    def __init__(self, client: aioredis.Redis | RedisCluster, key_prefix: str = "courtlink:") -> None:
        self._redis = client
        self.prefix = key_prefix
        # On a cluster: one plain client per master node, for WATCH/MULTI/EXEC on the store's slot.
        self._masters: dict[str, aioredis.Redis] = {}
        # Registering only hashes the script; it is loaded on the server at first use.
        self._read_for_check = client.register_script(_READ_FOR_CHECK)

    @classmethod
    async def open(cls, url: str, key_prefix: str = "courtlink:") -> RedisStore:
        """Connect to ``url`` and check that the server answers.

        redis:// or rediss:// is one Redis server; redis+cluster:// or rediss+cluster:// names one node
        (any) of a Redis Cluster, from which the client learns the others.
        """
        client = connect(url)
        try:
            await client.ping()
            store = cls(client, key_prefix)
            # Every booking needs a site first, so an old layout's data always has this key.
            old = await client.exists(key_prefix + SITES_KEY)
        except BaseException:
            await client.aclose()
            raise
        if old:
            # Data of a release before the hash-tagged layout: not read by this one (no migration, pre-1.0).
            log.warning("store_old_key_layout", key_prefix=key_prefix, tag=STORE_TAG, see="docs/operations.md")
        log.info("store_opened", backend="redis", cluster=isinstance(client, RedisCluster), key_prefix=key_prefix)
        return store

    # -- keys -------------------------------------------------------------------------------------------------

    def _k(self, template: str, **names: str) -> str:
        return key(self.prefix, template, **names)

    def _schedule_keys(self, hearing: Hearing) -> list[str]:
        """Every sorted set the hearing is indexed in, besides HEARINGS_KEY."""
        return [
            self._k(COURTROOM_SCHEDULE_KEY, id=hearing.courtroom_id),
            *(self._k(SITE_SCHEDULE_KEY, id=s) for s in sorted_sites(hearing)),
            *(self._k(IDENTITY_SCHEDULE_KEY, identity=i) for i in identities(hearing)),
        ]

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _transaction_client(self, slot_key: str) -> aioredis.Redis:
        """The client whose server owns ``slot_key``'s slot: the one Redis, or that slot's cluster master.

        redis-py's cluster pipelines run WATCH on a thread of their own (blocking the loop), so a cluster
        transaction goes to the slot's master over a plain connection: every store key shares one slot.
        """
        if not isinstance(self._redis, RedisCluster):
            return self._redis
        node = self._redis.get_node_from_key(slot_key)
        if node is None:
            raise StoreBusy(f"no Redis Cluster master serves the slot of {slot_key!r}")
        client = self._masters.get(node.name)
        if client is None:
            pool = aioredis.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = self._masters[node.name] = aioredis.Redis(connection_pool=pool)
        return client

    async def _atomic(self, watch: Sequence[str], work: Callable[[Pipe], Awaitable[T]]) -> T:
        """Run ``work`` with ``watch`` watched, redoing it whenever a watched key changed before EXEC.

        ``work`` reads through ``self._redis`` (after WATCH, so any later change fails EXEC) and queues its
        writes on the pipeline after ``_multi``. On a cluster those reads go to the slot's master too
        (RedisCluster reads from primaries unless told otherwise): a replica's stale read would let a
        conflicting booking through.
        """
        for attempt in range(MAX_ATTEMPTS):
            async with self._transaction_client(watch[0]).pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*watch)
                    return await work(pipe)
                except WatchError:
                    # Someone else won this round; back off a little (jittered) so the losers spread out.
                    await asyncio.sleep(random.uniform(0, min(0.001 * (attempt + 1), 0.02)))
                except (MovedError, AskError, TryAgainError):
                    # The slot moved (failover, resharding): learn the new owner, then redo.
                    if not isinstance(self._redis, RedisCluster):
                        raise
                    await self._redis.nodes_manager.initialize()
                    await asyncio.sleep(min(0.01 * (attempt + 1), 0.5))
        raise StoreBusy(f"gave up after {MAX_ATTEMPTS} concurrent-update retries")

    async def _last_event(self, stream: str) -> AuditEvent | None:
        entries = _entries(await self._redis.xrevrange(self._k(AUDIT_KEY, stream=stream), count=1))
        return AuditEvent.model_validate_json(entries[0][AUDIT_FIELD]) if entries else None

    def _queue_event(self, pipe: Queue, event: AuditEvent) -> None:
        # The explicit id makes Redis itself refuse a second event with the same seq.
        pipe.xadd(self._k(AUDIT_KEY, stream=event.stream), {AUDIT_FIELD: event.model_dump_json()}, id=f"0-{event.seq}")

    # -- sites and courtrooms ---------------------------------------------------------------------------------

    async def create_site(self, site: Site, trace: Trace) -> Site:
        """Store a new site; AlreadyExists if the id is taken."""
        key = self._k(SITE_KEY, id=site.id)

        async def work(pipe: Pipe) -> Site:
            if await self._redis.exists(key):
                raise AlreadyExists(f"site {site.id!r} exists already")
            event = next_event(await self._last_event(SYSTEM_STREAM), SYSTEM_STREAM, trace)
            _multi(pipe)
            pipe.set(key, site.model_dump_json())
            pipe.zadd(self._k(SITES_KEY), {site.id: 0})
            self._queue_event(pipe, event)
            await pipe.execute()
            return site

        return await self._atomic([key, self._k(AUDIT_KEY, stream=SYSTEM_STREAM)], work)

    async def get_site(self, site_id: str) -> Site:
        """The site; NotFound if absent."""
        body = await self._redis.get(self._k(SITE_KEY, id=site_id))
        if body is None:
            raise NotFound("site", site_id)
        return Site.model_validate_json(body)

    async def list_sites(self) -> Sequence[Site]:
        """Every site, by id."""
        ids = _strs(await self._redis.zrange(self._k(SITES_KEY), 0, -1))
        return [Site.model_validate_json(b) for b in await self._mget(SITE_KEY, ids) if b is not None]

    async def update_site(self, site_id: str, mutation: SiteMutation) -> Site:
        """Atomically apply ``mutation`` to the stored site (see Store.update_site)."""
        key = self._k(SITE_KEY, id=site_id)

        async def work(pipe: Pipe) -> Site:
            body = await self._redis.get(key)
            if body is None:
                raise NotFound("site", site_id)
            changed, trace = mutation(Site.model_validate_json(body))
            updated = changed.model_copy(update={"id": site_id})
            event = next_event(await self._last_event(SYSTEM_STREAM), SYSTEM_STREAM, trace)
            _multi(pipe)
            pipe.set(key, updated.model_dump_json())
            self._queue_event(pipe, event)
            await pipe.execute()
            return updated

        return await self._atomic([key, self._k(AUDIT_KEY, stream=SYSTEM_STREAM)], work)

    async def create_courtroom(self, courtroom: Courtroom, trace: Trace) -> Courtroom:
        """Store a new courtroom; AlreadyExists, or InvalidReference for an unknown site."""
        key = self._k(COURTROOM_KEY, id=courtroom.id)

        async def work(pipe: Pipe) -> Courtroom:
            if await self._redis.exists(key):
                raise AlreadyExists(f"courtroom {courtroom.id!r} exists already")
            if not await self._redis.exists(self._k(SITE_KEY, id=courtroom.site_id)):
                raise InvalidReference(f"site {courtroom.site_id!r} does not exist")
            event = next_event(await self._last_event(SYSTEM_STREAM), SYSTEM_STREAM, trace)
            _multi(pipe)
            pipe.set(key, courtroom.model_dump_json())
            pipe.zadd(self._k(COURTROOMS_KEY), {courtroom.id: 0})
            self._queue_event(pipe, event)
            await pipe.execute()
            return courtroom

        return await self._atomic([key, self._k(AUDIT_KEY, stream=SYSTEM_STREAM)], work)

    async def get_courtroom(self, courtroom_id: str) -> Courtroom:
        """The courtroom; NotFound if absent."""
        body = await self._redis.get(self._k(COURTROOM_KEY, id=courtroom_id))
        if body is None:
            raise NotFound("courtroom", courtroom_id)
        return Courtroom.model_validate_json(body)

    async def list_courtrooms(self) -> Sequence[Courtroom]:
        """Every courtroom, by id."""
        ids = _strs(await self._redis.zrange(self._k(COURTROOMS_KEY), 0, -1))
        return [Courtroom.model_validate_json(b) for b in await self._mget(COURTROOM_KEY, ids) if b is not None]

    async def _mget(self, template: str, ids: Iterable[str]) -> list[str | None]:
        keys = [self._k(template, id=i) for i in ids]
        if not keys:
            return []
        return cast("list[str | None]", await self._redis.mget(keys))

    # -- hearings ---------------------------------------------------------------------------------------------

    async def _check(self, hearing: Hearing, *, new: bool) -> AuditEvent | None:
        """Check the id (if ``new``), references and schedule conflicts; return the hearing's last audit event.

        Called after the schedule keys are watched: reads see the committed state, and any later
        write to them fails our EXEC. One script call reads it all, to keep round trips to one.
        """
        site_ids = sorted_sites(hearing)
        keys = [
            self._k(HEARING_KEY, id=hearing.id),
            self._k(COURTROOM_KEY, id=hearing.courtroom_id),
            self._k(MAX_DURATION_KEY),
            self._k(AUDIT_KEY, stream=hearing.id),
            *(self._k(SITE_KEY, id=s) for s in site_ids),
            *self._schedule_keys(hearing),
        ]
        args: list[str | int] = [
            len(site_ids),
            micros(hearing.starts_at),
            micros(hearing.ends_at),
            hearing.id,
            "1" if hearing.blocks_schedule else "0",
            MAX_DURATION_MEMBER,
        ]
        taken, courtroom, last, site_bodies, ids = await self._read_for_check(keys=keys, args=args)
        if new and taken:
            raise AlreadyExists(f"hearing {hearing.id!r} exists already")
        sites = {s: Site.model_validate_json(b) if b else None for s, b in zip(site_ids, site_bodies, strict=True)}
        terminals = check_references(hearing, bool(courtroom), sites)
        if hearing.blocks_schedule:
            bodies = await self._mget(HEARING_KEY, _strs(ids))
            check(hearing, [Hearing.model_validate_json(b) for b in bodies if b], terminals)
        return AuditEvent.model_validate_json(last) if last else None

    def _queue_index(self, pipe: Queue, hearing: Hearing, old: Hearing | None) -> None:
        """Queue the writes that store ``hearing`` and move its index entries away from ``old``'s."""
        start = micros(hearing.starts_at)
        pipe.set(self._k(HEARING_KEY, id=hearing.id), hearing.model_dump_json())
        pipe.zadd(self._k(HEARINGS_KEY), {hearing.id: start})
        new_keys = self._schedule_keys(hearing)
        stale = [k for k in self._schedule_keys(old) if k not in new_keys] if old else []
        for key in stale:
            pipe.zrem(key, hearing.id)
        for key in new_keys:
            if old is not None:
                # A ZADD that keeps the score changes nothing, so it would not fail the EXEC of a booking
                # that WATCHes this set and checked against the old window (a lengthened neighbour):
                # remove and re-add, which does.
                pipe.zrem(key, hearing.id)
            pipe.zadd(key, {hearing.id: start})
        pipe.zadd(self._k(MAX_DURATION_KEY), {MAX_DURATION_MEMBER: duration_micros(hearing)}, gt=True)

    async def book(self, hearing: Hearing, trace: Trace) -> Hearing:
        """Atomically check references and schedule conflicts, then store (see Store.book)."""
        key = self._k(HEARING_KEY, id=hearing.id)
        audit = self._k(AUDIT_KEY, stream=hearing.id)

        async def work(pipe: Pipe) -> Hearing:
            event = next_event(await self._check(hearing, new=True), hearing.id, trace)
            _multi(pipe)
            self._queue_index(pipe, hearing, None)
            self._queue_event(pipe, event)
            await pipe.execute()
            return hearing

        return await self._atomic([key, audit, *self._schedule_keys(hearing)], work)

    async def get_hearing(self, hearing_id: str) -> Hearing:
        """The hearing; NotFound if absent."""
        body = await self._redis.get(self._k(HEARING_KEY, id=hearing_id))
        if body is None:
            raise NotFound("hearing", hearing_id)
        return Hearing.model_validate_json(body)

    async def list_hearings(self, flt: HearingFilter) -> Sequence[Hearing]:
        """Hearings matching ``flt`` (any state), by start time then id."""
        if flt.limit <= 0:
            return []
        if flt.courtroom_id is not None:
            index = self._k(COURTROOM_SCHEDULE_KEY, id=flt.courtroom_id)
        elif flt.site_id is not None:
            index = self._k(SITE_SCHEDULE_KEY, id=flt.site_id)
        else:
            index = self._k(HEARINGS_KEY)
        low: int | str = "-inf"
        if flt.starts_from is not None:
            longest = await self._redis.zscore(self._k(MAX_DURATION_KEY), MAX_DURATION_MEMBER)
            low = micros(flt.starts_from) - int(longest or 0)
        high: int | str = "+inf" if flt.ends_to is None else f"({micros(flt.ends_to)}"
        chunk = max(flt.limit, 100)
        result: list[Hearing] = []
        offset = 0
        # Page through the index: the lookback slice may hold hearings that ended before starts_from.
        while len(result) < flt.limit:
            ids = _strs(await self._redis.zrangebyscore(index, low, high, start=offset, num=chunk))
            for body in await self._mget(HEARING_KEY, ids):
                if body is None:
                    continue
                h = Hearing.model_validate_json(body)
                if self._matches(h, flt):
                    result.append(h)
            if len(ids) < chunk:
                break
            offset += chunk
        return result[: flt.limit]

    @staticmethod
    def _matches(hearing: Hearing, flt: HearingFilter) -> bool:
        if flt.courtroom_id is not None and hearing.courtroom_id != flt.courtroom_id:
            return False
        if flt.site_id is not None and flt.site_id not in hearing.site_ids():
            return False
        return window_matches(hearing, flt.starts_from, flt.ends_to)

    async def mutate_hearing(self, hearing_id: str, mutation: Mutation) -> Hearing:
        """Atomically apply ``mutation``, re-check references and conflicts, bump ``version``, store."""
        key = self._k(HEARING_KEY, id=hearing_id)

        async def work(pipe: Pipe) -> Hearing:
            body = await self._redis.get(key)
            if body is None:
                raise NotFound("hearing", hearing_id)
            current = Hearing.model_validate_json(body)
            changed, trace = mutation(current)
            # The store owns identity and version: a mutation cannot move or rewind them.
            updated = changed.model_copy(update={"id": current.id, "version": current.version + 1})
            await pipe.watch(*self._schedule_keys(updated))
            event = next_event(await self._check(updated, new=False), hearing_id, trace)
            _multi(pipe)
            self._queue_index(pipe, updated, current)
            self._queue_event(pipe, event)
            await pipe.execute()
            return updated

        return await self._atomic([key, self._k(AUDIT_KEY, stream=hearing_id)], work)

    async def load_unchecked(self, hearings: Sequence[Hearing], trace: Trace, chunk: int = 500) -> None:
        """Store new hearings in pipelined batches without reference or conflict checks (not atomic).

        For benchmarks and imports of a schedule that is already known to be consistent; each
        hearing (whose id must be new) still gets its indexes and one audit event (``trace``).
        """
        for i in range(0, len(hearings), chunk):
            async with self._redis.pipeline(transaction=False) as pipe:
                for hearing in hearings[i : i + chunk]:
                    self._queue_index(pipe, hearing, None)
                    self._queue_event(pipe, next_event(None, hearing.id, trace))
                await pipe.execute()

    # -- audit ------------------------------------------------------------------------------------------------

    async def append_audit(self, stream: str, trace: Trace) -> AuditEvent:
        """Append one event to ``stream``'s chain."""

        async def work(pipe: Pipe) -> AuditEvent:
            event = next_event(await self._last_event(stream), stream, trace)
            _multi(pipe)
            self._queue_event(pipe, event)
            await pipe.execute()
            return event

        return await self._atomic([self._k(AUDIT_KEY, stream=stream)], work)

    async def audit_log(self, stream: str) -> Sequence[AuditEvent]:
        """The whole chain of ``stream``, in order."""
        entries = _entries(await self._redis.xrange(self._k(AUDIT_KEY, stream=stream)))
        return [AuditEvent.model_validate_json(fields[AUDIT_FIELD]) for fields in entries]

    async def audit_since(self, stream: str, after_seq: int) -> Sequence[AuditEvent]:
        """The events of ``stream`` after ``after_seq``, in order (entry ids are ``0-<seq>``)."""
        raw = await self._redis.xrange(self._k(AUDIT_KEY, stream=stream), min=f"0-{after_seq + 1}")
        return [AuditEvent.model_validate_json(fields[AUDIT_FIELD]) for fields in _entries(raw)]

    async def close(self) -> None:
        """Close the connection pools."""
        for client in self._masters.values():
            await client.aclose(close_connection_pool=True)
        await self._redis.aclose()


def key(prefix: str, template: str, **names: str) -> str:
    """The full name of one store key: ``<prefix>{store}:<template filled with names>``."""
    return f"{prefix}{STORE_TAG}:" + template.format(**names)


def connect(url: str) -> aioredis.Redis | RedisCluster:
    """A client for ``url``: RedisCluster for redis+cluster:// / rediss+cluster://, else one Redis."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if sep and plain is not None:
        return RedisCluster.from_url(f"{plain}://{rest}", decode_responses=True)
    return aioredis.Redis.from_url(url, decode_responses=True)


def _multi(pipe: Pipe) -> None:
    """Switch a watching pipeline to queueing (redis-py leaves ``multi`` untyped)."""
    pipe.multi()  # type: ignore[no-untyped-call]


def _strs(values: Any) -> list[str]:
    """Members as returned by a ``decode_responses=True`` client."""
    return cast("list[str]", values)


def _entries(values: Any) -> list[dict[str, str]]:
    """The field maps of XRANGE / XREVRANGE entries, in the order returned."""
    return [fields for _, fields in cast("list[tuple[str, dict[str, str]]]", values or [])]
