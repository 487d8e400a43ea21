"""The bus and the shared records on Redis: what the processes of a multi-process courtlink talk over.

:class:`RedisBus` implements :class:`rooms.bus.Bus` on Redis pub/sub:

- Channels are ``<prefix>bus:<channel>`` (e.g. ``courtlink:bus:node.n1.cmd``); a subscription to ``node.*`` is a
  ``PSUBSCRIBE`` of the escaped prefix. Classic pub/sub reaches every node of a Redis Cluster, so on a cluster the
  bus keeps one plain connection to the node its URL names.
- One reader task owns the pub/sub connection and hands each message to its subscription's queue; each
  subscription has one task calling its handler, so calls are sequential and in publish order.
- The reader survives a Redis restart or a lost connection by itself: it reconnects with backoff and subscribes
  again to everything wanted (messages published while it was away are lost, as pub/sub loses them). A ping every
  few seconds finds a connection that died silently.
- Request/reply: a request is an envelope (:func:`encode_request`: a one-line JSON header with the request id and
  the requester's reply channel, then the payload bytes) published on the channel; the responder publishes the
  reply envelope on the reply channel (one per :class:`RedisBus`, ``<prefix>bus:reply.<process_id>.<random>``).
  Each attempt waits ``attempt_seconds``; a retry re-sends the same id, and the responder answers a repeated id
  from its cache of recent replies without running it again (at most once per responder).

:class:`RedisRecords` implements :class:`rooms.bus.Records`: every key is ``<prefix>{bus}:<key>`` (one hash tag,
so a scan and each Lua script stay on one cluster slot); ``claim`` and ``release`` are Lua scripts that touch only
their declared KEYS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from rooms.bus import (
    BusError,
    BusTimeout,
    Handler,
    PayloadTooLarge,
    RemoteFailure,
    Responder,
    Subscription,
    check_payload,
)
from rooms.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that name a Redis Cluster, and the plain scheme of each (one node's URL)."""

BUS_TAG = "{bus}"
"""The hash tag of every record key: records live on one cluster slot, so SCAN and the scripts need one node."""

CHANNEL_PART = "bus:"
"""Channels are ``<prefix>bus:<channel>`` (pub/sub channels have no slot; no hash tag needed)."""

REPLY_PART = "reply."
"""Reply channels are ``<prefix>bus:reply.<process_id>.<random>``; a responder publishes replies nowhere else."""

SUBSCRIPTION_QUEUE_BOUND = 10_000
"""Messages waiting for one subscription's handler; beyond it messages are dropped and logged (a stuck handler must
not eat the process's memory)."""

REPLY_CACHE_SIZE = 1024
"""Recent request ids a responder remembers with their reply, so a retried request is answered, not run again."""

REPLY_CACHE_BYTES = 16 * 1024 * 1024
"""At most this many bytes of cached replies per responder (SDP answers are a few kB; the oldest go first)."""

MAX_CONCURRENT_REQUESTS = 256
"""Requests one responder runs at once; later ones wait their turn (in arrival order)."""

HEADER_LIMIT = 4096
"""Longest envelope header; a longer one is garbage."""

PING_SECONDS = 5.0
"""The reader pings its pub/sub connection this often when idle; silence for 3 pings means the connection is dead."""

SUBSCRIBE_WAIT_SECONDS = 5.0
"""How long ``subscribe`` waits for Redis to confirm (so a publish right after it is received)."""

CONNECT_SECONDS = 10.0
"""How long opening the bus waits for Redis to answer."""

_CLAIM = """
local current = redis.call('GET', KEYS[1])
if (not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return current
"""
"""Take or renew a lease: KEYS[1] the lease, ARGV[1] the owner, ARGV[2] its time to live in ms; returns the holder."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
"""Give up a lease only if ARGV[1] holds it: 1 released, 0 left alone."""

SCRIPTS = {"claim": _CLAIM, "release": _RELEASE}
"""Every Lua script of the records (a test checks that each touches only its declared KEYS)."""


class BusUnavailable(BusError):
    """Redis did not answer (down, restarting, unreachable); nothing was sent or stored."""

    code = "bus_unavailable"


# --- envelopes -------------------------------------------------------------------------------------------------


def encode_request(request_id: str, reply_to: str, payload: bytes) -> bytes:
    """A request envelope: a one-line JSON header, a newline, the payload bytes as they are."""
    header = json.dumps({"v": 1, "id": request_id, "reply": reply_to}, separators=(",", ":"))
    return header.encode() + b"\n" + payload


def encode_reply(request_id: str, payload: bytes) -> bytes:
    """A reply envelope carrying the responder's answer."""
    return json.dumps({"v": 1, "id": request_id, "ok": True}, separators=(",", ":")).encode() + b"\n" + payload


def encode_failure(request_id: str, code: str, message: str) -> bytes:
    """A reply envelope saying the responder failed (``code``: remote_failure or payload_too_large)."""
    header = {"v": 1, "id": request_id, "ok": False, "code": code, "message": message[:1000]}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


class BadEnvelope(ValueError):
    """Bytes that are not a bus envelope (the message is dropped and logged)."""


def decode_envelope(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and the payload of an envelope; :class:`BadEnvelope` for anything else."""
    head, sep, payload = data.partition(b"\n")
    if not sep or len(head) > HEADER_LIMIT:
        raise BadEnvelope("no envelope header")
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        raise BadEnvelope("the envelope header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != 1:
        raise BadEnvelope("not a version 1 envelope")
    request_id = header.get("id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
        raise BadEnvelope("no request id")
    return header, payload


# --- the bus -----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Sub:
    """One subscription: its own queue and task, so its handler's calls are sequential and in order."""

    bus: RedisBus
    channel: str
    name: bytes
    pattern: bool
    handler: Handler
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(SUBSCRIPTION_QUEUE_BOUND))
    task: asyncio.Task[None] | None = None
    closed: bool = False

    def deliver(self, payload: bytes) -> None:
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("bus_message_dropped", channel=self.channel, reason="subscriber_queue_full")

    async def run(self) -> None:
        while True:
            payload = await self.queue.get()
            try:
                await self.handler(payload)
            except Exception:  # a handler's bug must not stop later deliveries
                log.exception("bus_handler_failed", channel=self.channel)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.bus._drop(self)
        await cancel_and_wait(self.task)


class _ReplyCache:
    """The replies of a responder's recent request ids (running ones as pending futures), bounded by count and size."""

    def __init__(self, size: int = REPLY_CACHE_SIZE, max_bytes: int = REPLY_CACHE_BYTES) -> None:
        self._entries: OrderedDict[str, asyncio.Future[bytes]] = OrderedDict()
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, request_id: str) -> asyncio.Future[bytes] | None:
        return self._entries.get(request_id)

    def start(self, request_id: str) -> asyncio.Future[bytes]:
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._entries[request_id] = done
        self._trim()
        return done

    def finish(self, request_id: str, done: asyncio.Future[bytes], envelope: bytes) -> None:
        done.set_result(envelope)
        if self._entries.get(request_id) is done:
            self._bytes += len(envelope)
            self._trim()

    def _trim(self) -> None:
        while self._entries and (len(self._entries) > self._size or self._bytes > self._max_bytes):
            _, oldest = self._entries.popitem(last=False)
            if oldest.done() and not oldest.cancelled():
                self._bytes -= len(oldest.result())


@dataclass(eq=False)
class _Served:
    """A responder: its subscription, the requests it is running, and its cache of recent replies."""

    sub: Subscription | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def close(self) -> None:
        if self.sub is not None:
            await self.sub.close()
        await cancel_and_wait(*self.tasks)


class RedisBus:
    """:class:`rooms.bus.Bus` on Redis pub/sub; use :meth:`open`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        process_id: str,
        key_prefix: str = "courtlink:",
        listener: aioredis.Redis | None = None,
    ) -> None:
        self._redis = client
        # The pub/sub connection never reconnects behind the reader's back (redis-py would resubscribe from its
        # own bookkeeping): every failure reaches the reader, which resubscribes from this bus's.
        self._listener = listener or client
        self.process_id = process_id
        self._prefix = key_prefix + CHANNEL_PART
        self._reply_prefix = self._prefix + REPLY_PART
        self.reply_channel = f"{self._reply_prefix}{process_id}.{uuid.uuid4().hex[:12]}"
        self._channels: dict[bytes, set[_Sub]] = {}
        self._patterns: dict[bytes, set[_Sub]] = {}
        self._confirming: dict[tuple[bool, bytes], list[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._replies: Subscription | None = None
        self._served: list[_Served] = []
        self._publishing = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, process_id: str, key_prefix: str = "courtlink:") -> RedisBus:
        """Connect to the Redis of ``url`` (on a cluster URL: the node it names) and start reading."""
        bus = cls(
            _plain_client(url), process_id=process_id, key_prefix=key_prefix, listener=_plain_client(url, retries=0)
        )
        bus._reader = asyncio.get_running_loop().create_task(bus._read())
        try:
            await asyncio.wait_for(bus._connected.wait(), CONNECT_SECONDS)
        except TimeoutError:
            await bus.close()
            raise BusUnavailable(f"Redis at {_where(url)} did not answer within {CONNECT_SECONDS:g} s") from None
        # The reply channel is subscribed now, so no request ever waits for it.
        bus._replies = await bus.subscribe(bus.reply_channel[len(bus._prefix) :], bus._on_reply)
        log.info("bus_opened", backend="redis", process_id=process_id)
        return bus

    def _raw(self, channel: str) -> bytes:
        return (self._prefix + channel).encode()

    # -- publish / subscribe -------------------------------------------------------------------------------------

    async def publish(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every current subscriber of ``channel`` (:class:`BusUnavailable` if Redis is down)."""
        check_payload(payload)
        await self._publish_raw(self._raw(channel), payload)

    async def _publish_raw(self, raw: bytes, data: bytes) -> int:
        try:
            # One at a time: concurrent publishes of this process would otherwise race on pooled connections and
            # could reach Redis out of order (asyncio locks are FIFO, so call order is publish order).
            async with self._publishing:
                return int(await self._redis.publish(raw, data))
        except (RedisError, OSError) as exc:
            raise BusUnavailable(f"cannot publish: {type(exc).__name__}: {exc}") from None

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler`` with every payload on ``channel`` (``prefix*``: every channel with that prefix)."""
        if self._closed:
            raise BusError("the bus is closed")
        pattern = channel.endswith("*")
        name = (_glob_escape(self._prefix + channel[:-1]) + "*").encode() if pattern else self._raw(channel)
        sub = _Sub(self, channel, name, pattern, handler)
        sub.task = asyncio.get_running_loop().create_task(sub.run())
        table = self._patterns if pattern else self._channels
        first = name not in table
        table.setdefault(name, set()).add(sub)
        if first:
            await self._subscribe_now(pattern, name)
        return sub

    async def _subscribe_now(self, pattern: bool, name: bytes) -> None:
        """Subscribe on the live connection and wait for Redis to confirm; if there is none, the reader will."""
        pubsub = self._pubsub
        if pubsub is None or not self._connected.is_set():
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._confirming.setdefault((pattern, name), []).append(confirmed)
        try:
            await (pubsub.psubscribe(name) if pattern else pubsub.subscribe(name))
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_WAIT_SECONDS)
        except (RedisError, OSError, TimeoutError):
            # The connection is going down: the reader subscribes to everything wanted when it is back.
            log.info("bus_subscribe_deferred", channel=name.decode(errors="replace"))
        finally:
            waiting = self._confirming.get((pattern, name), [])
            if confirmed in waiting:
                waiting.remove(confirmed)

    async def _drop(self, sub: _Sub) -> None:
        table = self._patterns if sub.pattern else self._channels
        subs = table.get(sub.name)
        if subs is None:
            return
        subs.discard(sub)
        if subs:
            return
        del table[sub.name]
        pubsub = self._pubsub
        if pubsub is not None and not self._closed:
            with contextlib.suppress(RedisError, OSError):
                await (pubsub.punsubscribe(sub.name) if sub.pattern else pubsub.unsubscribe(sub.name))

    async def _read(self) -> None:
        """The reader: connect, subscribe to everything wanted, hand out messages; after a failure, again."""
        backoff = 0.05
        lost_at: float | None = None
        while not self._closed:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                self._pubsub = pubsub  # before subscribing: a subscribe() from now on goes to this connection
                channels, patterns = set(self._channels), set(self._patterns)
                if channels:
                    await pubsub.subscribe(*channels)
                if patterns:
                    await pubsub.psubscribe(*patterns)
                self._connected.set()
                # Wanted while the above ran (their subscribe() saw no connection yet): subscribe them too.
                if late := set(self._channels) - channels:
                    await pubsub.subscribe(*late)
                if late := set(self._patterns) - patterns:
                    await pubsub.psubscribe(*late)
                if lost_at is not None:
                    away = round(time.monotonic() - lost_at, 3)
                    log.info("bus_reconnected", process_id=self.process_id, after_seconds=away)
                    lost_at = None
                backoff = 0.05
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # RedisError, OSError, a dead connection: reconnect
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning("bus_connection_lost", process_id=self.process_id, error=f"{type(exc).__name__}: {exc}")
            finally:
                self._connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._closed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _pump(self, pubsub: PubSub) -> None:
        last_heard = last_ping = time.monotonic()
        while not self._closed:  # (a cancel of close() lost inside the read's timeout must not keep it reading)
            message = await pubsub.get_message(timeout=1.0)
            now = time.monotonic()
            if message is not None:
                last_heard = now
                self._dispatch(message)
            elif now - last_ping >= PING_SECONDS:
                last_ping = now
                await pubsub.ping()
            if now - last_heard > 3 * PING_SECONDS:
                raise ConnectionError("no answer to pings on the pub/sub connection")

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "message":
            for sub in list(self._channels.get(message["channel"], ())):
                sub.deliver(message["data"])
        elif kind == "pmessage":
            for sub in list(self._patterns.get(message["pattern"], ())):
                sub.deliver(message["data"])
        elif kind in ("subscribe", "psubscribe"):
            for waiting in self._confirming.pop((kind == "psubscribe", message["channel"]), []):
                if not waiting.done():
                    waiting.set_result(None)

    # -- request / reply -----------------------------------------------------------------------------------------

    async def _on_reply(self, data: bytes) -> None:
        try:
            header, payload = decode_envelope(data)
        except BadEnvelope as exc:
            log.warning("bus_bad_envelope", channel="reply", reason=str(exc), size=len(data))
            return
        waiting = self._pending.get(header["id"])
        if waiting is None or waiting.done():
            return  # a late or repeated reply of a request already answered or given up
        if header.get("ok") is True:
            waiting.set_result(payload)
            return
        message = str(header.get("message", "the responder failed"))
        too_large = header.get("code") == PayloadTooLarge.code
        waiting.set_exception(PayloadTooLarge(message) if too_large else RemoteFailure(message))

    async def request(self, channel: str, payload: bytes, *, attempt_seconds: float, retries: int = 0) -> bytes:
        """Send ``payload`` to the responder of ``channel`` and return its reply (see :class:`rooms.bus.Bus`)."""
        check_payload(payload)
        if self._closed:
            raise BusError("the bus is closed")
        request_id = uuid.uuid4().hex
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        envelope = encode_request(request_id, self.reply_channel, payload)
        raw = self._raw(channel)
        try:
            for _ in range(retries + 1):
                deadline = time.monotonic() + attempt_seconds
                with contextlib.suppress(TimeoutError, BusUnavailable):
                    await asyncio.wait_for(self._publish_raw(raw, envelope), attempt_seconds)
                try:
                    return await asyncio.wait_for(asyncio.shield(answer), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    continue
            raise BusTimeout(f"no reply on {channel} after {retries + 1} attempt(s) of {attempt_seconds:g} s")
        finally:
            self._pending.pop(request_id, None)
            if not answer.done():
                answer.cancel()

    async def serve(self, channel: str, responder: Responder) -> Subscription:
        """Answer requests on ``channel``; a repeated request id is answered from the cache, not run again."""
        served = _Served()
        replies = _ReplyCache()
        room = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)

        async def answer(request_id: str, reply_to: bytes, payload: bytes, done: asyncio.Future[bytes]) -> None:
            async with room:
                try:
                    reply = await responder(payload)
                    check_payload(reply, f"the reply on {channel}")
                    envelope = encode_reply(request_id, reply)
                except PayloadTooLarge as exc:
                    envelope = encode_failure(request_id, exc.code, str(exc))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("bus_responder_failed", channel=channel)
                    envelope = encode_failure(request_id, RemoteFailure.code, f"{channel}: {type(exc).__name__}: {exc}")
            replies.finish(request_id, done, envelope)
            with contextlib.suppress(BusUnavailable):
                await self._publish_raw(reply_to, envelope)

        async def on_request(data: bytes) -> None:
            try:
                header, payload = decode_envelope(data)
                reply_to = header.get("reply")
                if not isinstance(reply_to, str) or not reply_to.startswith(self._reply_prefix):
                    raise BadEnvelope("no reply channel of this bus")
            except BadEnvelope as exc:
                log.warning("bus_bad_envelope", channel=channel, reason=str(exc), size=len(data))
                return
            request_id: str = header["id"]
            known = replies.get(request_id)
            if known is not None:
                # A retry: answer again from the cache (if still running, its one reply answers both).
                if known.done():
                    with contextlib.suppress(BusUnavailable):
                        await self._publish_raw(reply_to.encode(), known.result())
                return
            done = replies.start(request_id)
            task = asyncio.get_running_loop().create_task(answer(request_id, reply_to.encode(), payload, done))
            served.tasks.add(task)
            task.add_done_callback(served.tasks.discard)

        served.sub = await self.subscribe(channel, on_request)
        self._served.append(served)
        return served

    async def close(self) -> None:
        """Stop every subscription and responder, fail pending requests, close the connection."""
        if self._closed:
            return
        self._closed = True
        for served in self._served:
            await served.close()
        for subs in [*self._channels.values(), *self._patterns.values()]:
            for sub in list(subs):
                await sub.close()
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(BusError("the bus is closed"))
        await cancel_and_wait(self._reader)
        await self._redis.aclose()
        if self._listener is not self._redis:
            await self._listener.aclose()


# --- records -----------------------------------------------------------------------------------------------------


class RedisRecords:
    """:class:`rooms.bus.Records` on Redis (one server or a cluster); use :meth:`open`."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, key_prefix: str = "courtlink:") -> None:
        self._redis = client
        self.prefix = f"{key_prefix}{BUS_TAG}:"
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @classmethod
    async def open(cls, url: str, *, key_prefix: str = "courtlink:") -> RedisRecords:
        """Connect to ``url`` (redis+cluster://: any node of the cluster) and check that it answers."""
        client = _records_client(url)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise BusUnavailable(f"Redis at {_where(url)} does not answer: {type(exc).__name__}: {exc}") from None
        return cls(client, key_prefix=key_prefix)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Set ``key`` (expiring after ``ttl`` seconds if given; ``ttl`` must be positive)."""
        check_payload(value, "record value")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        async with _available():
            await self._redis.set(self._k(key), value, px=_millis(ttl) if ttl is not None else None)

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None."""
        async with _available():
            return cast("bytes | None", await self._redis.get(self._k(key)))

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live record whose key starts with ``prefix``."""
        match = _glob_escape(self._k(prefix)) + "*"
        names: list[bytes] = []
        async with _available():
            if isinstance(self._redis, RedisCluster):
                node = self._redis.get_node_from_key(self.prefix)
                names = [k async for k in self._redis.scan_iter(match=match, count=500, target_nodes=node)]
            else:
                names = [k async for k in self._redis.scan_iter(match=match, count=500)]
            found: dict[str, bytes] = {}
            names = sorted(set(names))
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                values = cast("list[bytes | None]", await self._redis.mget(chunk))
                for name, value in zip(chunk, values, strict=True):
                    if value is not None:  # expired between SCAN and MGET
                        found[name.decode()[len(self.prefix) :]] = value
        return found

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        async with _available():
            await self._redis.delete(self._k(key))

    async def claim(self, key: str, owner: str, *, ttl: float) -> str:
        """Take or renew the lease ``key`` for ``owner``; the holder after the call (atomic, one script)."""
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        async with _available():
            holder = await self._claim(keys=[self._k(key)], args=[owner, _millis(ttl)])
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    async def release(self, key: str, owner: str) -> bool:
        """Give up ``key`` if ``owner`` holds it."""
        async with _available():
            return bool(await self._release(keys=[self._k(key)], args=[owner]))

    async def close(self) -> None:
        """Close the connection."""
        await self._redis.aclose()


@contextlib.asynccontextmanager
async def _available() -> Any:
    """Turn a Redis connection failure into :class:`BusUnavailable`."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise BusUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None


# --- helpers -------------------------------------------------------------------------------------------------------


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob's special characters made literal."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _retry(retries: int = 2) -> Retry:
    """A few quick retries of a failed command, then the failure (the bus's callers have their own)."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries)


def _split(url: str) -> tuple[str, bool]:
    """The plain URL of ``url`` and whether it names a cluster."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower())
    if sep and plain is not None:
        return f"{plain}://{rest}", True
    return url, False


def _plain_client(url: str, retries: int = 2) -> aioredis.Redis:
    """One server's client (on a cluster URL, the node it names: classic pub/sub reaches the whole cluster)."""
    plain, _ = _split(url)
    return aioredis.Redis.from_url(
        plain, retry=_retry(retries), socket_connect_timeout=2, socket_keepalive=True, health_check_interval=0
    )


def _records_client(url: str) -> aioredis.Redis | RedisCluster:
    plain, cluster = _split(url)
    if cluster:
        return RedisCluster.from_url(plain, socket_connect_timeout=2)
    return aioredis.Redis.from_url(plain, retry=_retry(), socket_connect_timeout=2)


def _where(url: str) -> str:
    """``url`` without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{scheme}://{rest.rpartition('@')[2]}"


def channels_of(bus: RedisBus) -> Iterable[str]:
    """The Redis channel and pattern names ``bus`` subscribes to now (for tests and diagnostics)."""
    return [n.decode() for n in [*bus._channels, *bus._patterns]]
