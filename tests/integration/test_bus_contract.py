"""The bus and records contract: one suite, run in-process, on one real Redis and on a real three-master cluster."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster

from rooms.backends import open_bus
from rooms.backends.redis_bus import SCRIPTS, RedisBus, RedisRecords, encode_request
from rooms.bus import (
    MAX_PAYLOAD_BYTES,
    Bus,
    BusTimeout,
    InProcessBus,
    PayloadTooLarge,
    Records,
    RemoteFailure,
)
from tests.bus_fixtures import BUS_KINDS, bus_url, eventually, pings, redis_with_aof, until
from tests.conftest import free_port, stop_redis

KINDS = BUS_KINDS


@dataclass
class Pair:
    """Two processes' view of one bus (in-process: the same object twice) and the shared records."""

    kind: str
    a: Bus
    b: Bus
    records: Records
    url: str
    prefix: str


@pytest.fixture(params=KINDS)
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """A bus seen from two processes and the records, on the backend under test (a fresh key prefix each test)."""
    kind: str = request.param
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    if kind == "inprocess":
        bus, records = await open_bus(None, process_id="p1")
        yield Pair(kind, bus, bus, records, "", prefix)
        await bus.close()
        await records.close()
        return
    url = bus_url(request, kind)
    a, records = await open_bus(url, process_id="p1", key_prefix=prefix)
    b, other_records = await open_bus(url, process_id="p2", key_prefix=prefix)
    await other_records.close()
    try:
        yield Pair(kind, a, b, records, url, prefix)
    finally:
        for closing in (a.close, b.close, records.close):
            await closing()


class Inbox:
    """Collects what a subscription receives."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    async def __call__(self, payload: bytes) -> None:
        self.items.append(payload)


async def test_a_subscription_receives_every_message_in_publish_order(pair: Pair) -> None:
    """Node events (and every other message) reach a subscriber in the order they were published, none lost."""
    inbox = Inbox()
    await pair.b.subscribe("node.n1.events", inbox)
    sent = [f"event {i}".encode() for i in range(300)]
    for payload in sent:
        await pair.a.publish("node.n1.events", payload)
    assert await eventually(lambda: len(inbox.items) >= len(sent))
    assert inbox.items == sent


async def test_concurrent_publishes_of_one_process_arrive_in_call_order(pair: Pair) -> None:
    """Messages a process publishes without waiting for each other still reach subscribers in the order sent."""
    inbox = Inbox()
    await pair.b.subscribe("node.n1.events", inbox)
    sent = [str(i).encode() for i in range(200)]
    await asyncio.gather(*(pair.a.publish("node.n1.events", payload) for payload in sent))
    assert await eventually(lambda: len(inbox.items) >= len(sent))
    assert inbox.items == sent


async def test_a_slow_handler_gets_its_messages_one_at_a_time(pair: Pair) -> None:
    """A subscriber's handler is never run twice at once, so it may rely on order without a lock."""
    running, most, seen = 0, 0, []

    async def slow(payload: bytes) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.005)
        seen.append(payload)
        running -= 1

    await pair.b.subscribe("c", slow)
    for i in range(20):
        await pair.a.publish("c", str(i).encode())
    assert await eventually(lambda: len(seen) == 20)
    assert most == 1
    assert seen == [str(i).encode() for i in range(20)]


async def test_a_prefix_pattern_receives_every_matching_channel_and_nothing_else(pair: Pair) -> None:
    """``node.*`` hears every node's channel; a channel of another prefix, and glob characters, are taken literally."""
    nodes, odd = Inbox(), Inbox()
    await pair.b.subscribe("node.*", nodes)
    await pair.b.subscribe("room?[1].*", odd)
    for channel in ("node.n1.events", "nodes.x", "node.n2", "roomX[1].a", "room?[1].a", "room?1].b"):
        await pair.a.publish(channel, channel.encode())
    await pair.a.publish("node.end", b"end")
    assert await eventually(lambda: nodes.items[-1:] == [b"end"])
    assert nodes.items == [b"node.n1.events", b"node.n2", b"end"]
    assert odd.items == [b"room?[1].a"]


async def test_a_closed_subscription_receives_nothing_more(pair: Pair) -> None:
    """After close, a subscriber gets no further message; another subscriber of the channel still does."""
    gone, stays = Inbox(), Inbox()
    sub = await pair.b.subscribe("c", gone)
    await pair.b.subscribe("c", stays)
    await pair.a.publish("c", b"1")
    assert await eventually(lambda: gone.items == [b"1"])
    await sub.close()
    await pair.a.publish("c", b"2")
    assert await eventually(lambda: stays.items == [b"1", b"2"])
    await asyncio.sleep(0.1)
    assert gone.items == [b"1"]


async def test_a_request_gets_the_responders_reply(pair: Pair) -> None:
    """A request on a served channel returns what the responder answered, also to many concurrent requesters."""

    async def upper(payload: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return payload.upper()

    await pair.b.serve("node.n1.cmd", upper)
    replies = await asyncio.gather(
        *(pair.a.request("node.n1.cmd", f"cmd {i}".encode(), attempt_seconds=5) for i in range(30))
    )
    assert replies == [f"CMD {i}".encode() for i in range(30)]


async def test_no_reply_in_time_is_a_bus_timeout_after_every_retry(pair: Pair) -> None:
    """A responder that never answers makes the request fail with BusTimeout once every attempt has waited."""
    calls = 0

    async def stuck(payload: bytes) -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(60)
        return b""

    await pair.b.serve("stuck", stuck)
    started = time.monotonic()
    with pytest.raises(BusTimeout) as caught:
        await pair.a.request("stuck", b"x", attempt_seconds=0.3, retries=2)
    assert caught.value.code == "bus_timeout"
    assert time.monotonic() - started >= 0.85  # three attempts of 0.3 s
    assert calls == 1  # the retries were recognised, not run again


async def test_a_retried_request_is_carried_out_once(pair: Pair) -> None:
    """A command whose first attempt times out is answered by the retry, yet the responder ran it only once."""
    calls = 0

    async def slow_once(payload: bytes) -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.5)
        return b"done " + payload

    await pair.b.serve("slow", slow_once)
    reply = await pair.a.request("slow", b"1", attempt_seconds=0.2, retries=5)
    assert reply == b"done 1"
    await asyncio.sleep(0.3)
    assert calls == 1


async def test_a_responder_that_raises_is_a_remote_failure(pair: Pair) -> None:
    """A responder's exception reaches the requester as RemoteFailure naming it; the responder keeps serving."""

    async def picky(payload: bytes) -> bytes:
        if payload == b"bad":
            raise LookupError("no such thing")
        return b"ok"

    await pair.b.serve("picky", picky)
    with pytest.raises(RemoteFailure, match="LookupError"):
        await pair.a.request("picky", b"bad", attempt_seconds=5)
    assert await pair.a.request("picky", b"good", attempt_seconds=5) == b"ok"


async def test_payloads_of_arbitrary_bytes_arrive_unchanged(pair: Pair) -> None:
    """Every byte value (newlines, NUL, invalid UTF-8) passes publish and request/reply untouched."""
    payload = bytes(range(256)) * 4 + b"\n\n{not json}\x00"
    inbox = Inbox()
    await pair.b.subscribe("raw", inbox)

    async def echo(data: bytes) -> bytes:
        return data[::-1]

    await pair.b.serve("echo", echo)
    await pair.a.publish("raw", payload)
    assert await pair.a.request("echo", payload, attempt_seconds=5) == payload[::-1]
    assert await pair.a.request("echo", b"", attempt_seconds=5) == b""
    assert await eventually(lambda: inbox.items == [payload])


async def test_huge_payloads_are_refused_with_a_named_error(pair: Pair) -> None:
    """A payload or record over the limit is refused with PayloadTooLarge and nothing is sent or stored."""
    huge = b"x" * (MAX_PAYLOAD_BYTES + 1)
    inbox = Inbox()
    await pair.b.subscribe("big", inbox)

    async def inflate(data: bytes) -> bytes:
        return data * (MAX_PAYLOAD_BYTES // max(1, len(data)) + 1)

    await pair.b.serve("inflate", inflate)
    with pytest.raises(PayloadTooLarge) as caught:
        await pair.a.publish("big", huge)
    assert caught.value.code == "payload_too_large"
    with pytest.raises(PayloadTooLarge):
        await pair.a.request("inflate", huge, attempt_seconds=1)
    with pytest.raises(PayloadTooLarge):
        await pair.a.request("inflate", b"ab", attempt_seconds=5)  # the reply would be too large
    with pytest.raises(PayloadTooLarge):
        await pair.records.put("big", huge)
    assert await pair.records.get("big") is None
    await pair.a.publish("big", b"small")
    assert await eventually(lambda: inbox.items == [b"small"])


async def test_a_lease_is_taken_renewed_kept_from_others_and_released(pair: Pair) -> None:
    """One owner holds a lease while it renews it; another takes it only after it expired or was released."""
    records = pair.records
    assert await records.claim("lease.room.h1", "sig-1", ttl=0.5) == "sig-1"
    assert await records.claim("lease.room.h1", "sig-2", ttl=0.5) == "sig-1"
    await asyncio.sleep(0.3)
    assert await records.claim("lease.room.h1", "sig-1", ttl=0.5) == "sig-1"  # renewed
    await asyncio.sleep(0.3)
    assert await records.claim("lease.room.h1", "sig-2", ttl=0.5) == "sig-1"  # still held after the renewal
    await asyncio.sleep(0.6)
    assert await records.claim("lease.room.h1", "sig-2", ttl=5) == "sig-2"  # expired: taken over
    assert await records.release("lease.room.h1", "sig-1") is False  # not the holder: left alone
    assert await records.get("lease.room.h1") == b"sig-2"
    assert await records.release("lease.room.h1", "sig-2") is True
    assert await records.get("lease.room.h1") is None
    assert await records.claim("lease.room.h1", "sig-1", ttl=5) == "sig-1"


async def test_of_many_concurrent_claims_exactly_one_wins(pair: Pair) -> None:
    """Twenty processes racing for one free lease: all see the same single holder."""
    holders = await asyncio.gather(*(pair.records.claim("lease.race", f"p{i}", ttl=5) for i in range(20)))
    assert len(set(holders)) == 1
    assert holders[0] in {f"p{i}" for i in range(20)}


async def test_records_are_found_by_prefix_and_expire_after_their_ttl(pair: Pair) -> None:
    """scan(prefix) lists exactly the live records under a prefix; a record with a ttl is gone after it."""
    records = pair.records
    await records.put("node.n1", b"one", ttl=0.4)
    await records.put("node.n2", b"two")
    await records.put("node.[x]*", b"odd")
    await records.put("nodes", b"not a node")
    await records.put("placement.h1", b"p")
    assert await records.scan("node.") == {"node.n1": b"one", "node.n2": b"two", "node.[x]*": b"odd"}
    assert await records.scan("node.[x") == {"node.[x]*": b"odd"}
    assert await records.scan("nothing.") == {}
    await asyncio.sleep(0.7)
    assert await records.get("node.n1") is None
    assert await records.scan("node.") == {"node.n2": b"two", "node.[x]*": b"odd"}
    await records.delete("node.n2")
    await records.delete("node.n2")  # absent: nothing happens
    assert await records.get("node.n2") is None


async def test_a_garbage_envelope_changes_nothing(pair: Pair) -> None:
    """Bytes that are not an envelope, on a reply or a served channel, are dropped; requests keep working."""
    if pair.kind == "inprocess":
        pytest.skip("in-process requests carry no envelope")
    assert isinstance(pair.a, RedisBus)
    calls = 0

    async def counted(data: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return b"ok"

    await pair.b.serve("node.n1.cmd", counted)
    assert await pair.a.request("node.n1.cmd", b"1", attempt_seconds=5) == b"ok"
    raw = aioredis.Redis.from_url(pair.url.replace("+cluster", ""))
    try:
        reply_channel = pair.a.reply_channel
        cmd = f"{pair.prefix}bus:node.n1.cmd"
        with structlog.testing.capture_logs() as logs:
            for garbage in (
                b"",
                b"\xff\xfe\n",
                b'{"v":1}\n',
                b'{"v":1,"id":"x","ok":true',
                b"[1,2]\nzz",
                b'{"v":2,"id":"x"}\n',
                b"x" * 10_000,
            ):
                await raw.publish(reply_channel, garbage)
                await raw.publish(cmd, garbage)
            # A request naming a reply channel that is not a bus's: not answered (no reflection onto other channels).
            victim = Inbox()
            await pair.a.subscribe("node.n1.events", victim)
            await raw.publish(cmd, encode_request("evil", f"{pair.prefix}bus:node.n1.events", b"x"))
            assert await pair.a.request("node.n1.cmd", b"2", attempt_seconds=5) == b"ok"
        assert calls == 2
        assert victim.items == []
        assert len([e for e in logs if e["event"] == "bus_bad_envelope"]) >= 10
    finally:
        await raw.aclose()


async def test_opening_a_bus_on_an_unknown_url_scheme_is_refused() -> None:
    """A mistyped redis_url (http://...) is a ValueError naming the scheme, not a hang."""
    with pytest.raises(ValueError, match="http"):
        await open_bus("http://127.0.0.1:1/", process_id="p")


async def test_no_url_gives_the_in_process_pair() -> None:
    """Without redis_url (courtlink serve) the bus stays in the process."""
    bus, records = await open_bus("", process_id="p")
    assert isinstance(bus, InProcessBus)
    await bus.close()
    await records.close()


_SCRIPT_CALL = re.compile(r"redis\.call\(\s*'(\w+)'\s*,\s*([^,)]+)")


def test_every_records_script_touches_only_its_declared_keys() -> None:
    """claim and release read and write only keys passed in KEYS, so Redis Cluster can route them."""
    assert set(SCRIPTS) == {"claim", "release"}
    for name, source in SCRIPTS.items():
        calls = _SCRIPT_CALL.findall(source)
        assert calls, name
        assert [arg for _, arg in calls if not arg.strip().startswith("KEYS[")] == [], name


@pytest.mark.redis
async def test_records_on_a_cluster_share_one_hash_tagged_slot(redis_cluster: str) -> None:
    """On a Redis Cluster every record key is under ``<prefix>{bus}:``, so scans and scripts need one slot."""
    prefix = f"test:slot:{uuid.uuid4().hex[:8]}:"
    bus, records = await open_bus(redis_cluster, process_id="p", key_prefix=prefix)
    try:
        assert isinstance(records, RedisRecords)
        for i in range(20):
            await records.put(f"node.n{i}", b"x", ttl=30)
        await records.claim("lease.room.h", "p", ttl=30)
        client = records._redis
        assert isinstance(client, RedisCluster)
        keys: list[bytes] = []
        for node in client.get_primaries():
            keys += [k async for k in client.scan_iter(match=f"{prefix}*", target_nodes=node)]
        assert len(keys) == 21
        assert all(k.startswith(f"{prefix}{{bus}}:".encode()) for k in keys)
        assert len({await client.cluster_keyslot(k.decode()) for k in keys}) == 1
        assert len(await records.scan("node.")) == 20
    finally:
        await bus.close()
        await records.close()


# --- a Redis restart -------------------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_subscriptions_and_requests_come_back_by_themselves_after_a_redis_restart(tmp_path: Path) -> None:
    """Redis restarted (same port, AOF): subscribers hear new messages, requests are answered, records kept."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = redis_with_aof(tmp_path / "aof", port)
    opened: list[Bus | Records] = []
    try:
        assert await until(lambda: pings(url), 10) is not None
        a, records = await open_bus(url, process_id="a")
        b, other = await open_bus(url, process_id="b")
        opened += [a, records, b, other]
        inbox, pattern = Inbox(), Inbox()
        await b.subscribe("hearing.changed", inbox)
        await b.subscribe("node.*", pattern)

        async def echo(data: bytes) -> bytes:
            return data

        await b.serve("node.n1.cmd", echo)
        await records.put("placement.h1", b"n1")
        await a.publish("hearing.changed", b"before")
        assert await eventually(lambda: inbox.items == [b"before"])

        stop_redis(proc)
        with pytest.raises(Exception):  # noqa: B017,PT011 - any named failure; the point is what follows
            await a.request("node.n1.cmd", b"x", attempt_seconds=0.2)
        restarted = time.monotonic()
        proc = redis_with_aof(tmp_path / "aof", port)

        async def heard() -> bool:
            await a.publish("hearing.changed", b"after")
            await a.publish("node.n2.events", b"after")
            await asyncio.sleep(0.05)
            return b"after" in inbox.items and b"after" in pattern.items

        took = await until(heard, 30)
        assert took is not None, "the subscriptions did not come back"
        assert await a.request("node.n1.cmd", b"again", attempt_seconds=2, retries=2) == b"again"
        assert await records.get("placement.h1") == b"n1"  # kept by the AOF
        structlog.get_logger("test").info(
            "bus_back_after_redis_restart", seconds=round(time.monotonic() - restarted, 3), resubscribed=round(took, 3)
        )
        print(f"bus back {time.monotonic() - restarted:.3f} s after redis-server restarted")
    finally:
        for closing in opened:
            await closing.close()
        stop_redis(proc)
