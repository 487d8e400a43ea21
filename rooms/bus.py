"""The bus and the shared records: how services in several processes find and talk to each other.

Two interfaces, each with an in-process implementation here (what ``courtlink serve`` uses: one process,
nothing leaves memory) and a Redis one in ``rooms.backends`` (what ``courtlink signaling``, ``courtlink
media-node`` and ``courtlink recorder`` use when ``redis_url`` is set):

- :class:`Bus` carries messages: publish/subscribe on named channels, and request/reply with a timeout and
  retries. Payloads are bytes (the JSON of a ``protocol`` model); the bus never looks inside.
- :class:`Records` keeps small shared records with a time to live: the node registry (heartbeats), hearing
  placements, and leases (the one owner of a live room).

Channel and record names are plain strings such as ``node.n1.cmd``; a backend adds its own prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

Handler = Callable[[bytes], Awaitable[None]]
"""Receives one published payload. Calls of one subscription are sequential, in publish order."""

Responder = Callable[[bytes], Awaitable[bytes]]
"""Answers one request payload with a reply payload."""


class BusError(Exception):
    """A named failure of the bus; ``code`` is stable snake_case."""

    code = "bus_error"


class BusTimeout(BusError):
    """No reply came within the timeout, after every retry (the responder is gone, or too slow)."""

    code = "bus_timeout"


class NoResponder(BusError):
    """Nobody serves the channel (in-process only: Redis cannot tell, it times out instead)."""

    code = "no_responder"


class RemoteFailure(BusError):
    """The responder raised while answering; the message names what it raised."""

    code = "remote_failure"


class PayloadTooLarge(BusError):
    """A message or record value is larger than :data:`MAX_PAYLOAD_BYTES`; nothing was sent or stored."""

    code = "payload_too_large"


MAX_PAYLOAD_BYTES = 1_048_576
"""The largest bus payload or record value (1 MiB): an SDP is at most 200 kB; anything bigger is a bug or an attack,
and Redis cuts off a subscriber whose output buffer outgrows its limits."""


def check_payload(payload: bytes, what: str = "payload") -> None:
    """Raise :class:`PayloadTooLarge` if ``payload`` is over :data:`MAX_PAYLOAD_BYTES`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"{what} of {len(payload)} bytes is over the bus limit of {MAX_PAYLOAD_BYTES} bytes")


class Subscription(Protocol):
    """A live subscription or responder; closing it stops deliveries."""

    async def close(self) -> None:
        """Stop receiving (idempotent)."""
        ...


class Bus(Protocol):
    """Messages between processes."""

    async def publish(self, channel: str, payload: bytes) -> None:
        """Deliver ``payload`` to every current subscriber of ``channel`` (none: dropped, as pub/sub does)."""
        ...

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        """Call ``handler`` with every payload published on ``channel`` from now on.

        ``channel`` may end with ``*`` to match every channel with that prefix.
        """
        ...

    async def request(self, channel: str, payload: bytes, *, attempt_seconds: float, retries: int = 0) -> bytes:
        """Send ``payload`` to the responder of ``channel`` and return its reply.

        Each attempt waits ``attempt_seconds``; after ``retries`` more attempts it raises :class:`BusTimeout`.
        A retry re-sends the same request id, and a responder answers a repeated id from its cache without
        running the request again, so a retried command is carried out at most once per responder.
        """
        ...

    async def serve(self, channel: str, responder: Responder) -> Subscription:
        """Answer requests on ``channel`` (one responder per channel and process)."""
        ...

    async def close(self) -> None:
        """Close every subscription and connection."""
        ...


class Records(Protocol):
    """Small shared records with an optional time to live, and leases."""

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Set ``key`` (expiring after ``ttl`` seconds if given)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None if absent or expired."""
        ...

    async def scan(self, prefix: str) -> dict[str, bytes]:
        """Every live record whose key starts with ``prefix``, by key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (absent: nothing happens)."""
        ...

    async def claim(self, key: str, owner: str, *, ttl: float) -> str:
        """A lease: take ``key`` for ``owner`` if it is free or expired, or renew it if ``owner`` holds it.

        Returns the holder after the call (``owner`` when taken or renewed, another owner otherwise).
        Atomic across processes.
        """
        ...

    async def release(self, key: str, owner: str) -> bool:
        """Give up ``key`` if ``owner`` holds it (True); someone else's lease is left alone (False)."""
        ...

    async def close(self) -> None:
        """Close the connection."""
        ...


# --- in-process implementations ---------------------------------------------------------------


@dataclass(eq=False)
class _LocalSub:
    bus: InProcessBus
    channel: str
    handler: Handler
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def matches(self, channel: str) -> bool:
        if self.channel.endswith("*"):
            return channel.startswith(self.channel[:-1])
        return channel == self.channel

    async def run(self) -> None:
        while True:
            payload = await self.queue.get()
            try:
                await self.handler(payload)
            except Exception:  # a handler's bug must not stop later deliveries
                structlog.get_logger("rooms.bus").exception("bus_handler_failed", channel=self.channel)

    async def close(self) -> None:
        self.bus._subs.discard(self)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass(eq=False)
class _LocalResponder:
    bus: InProcessBus
    channel: str

    async def close(self) -> None:
        self.bus._responders.pop(self.channel, None)


class InProcessBus:
    """A :class:`Bus` inside one process (``courtlink serve``): the same semantics, no copies leave memory."""

    def __init__(self) -> None:
        self._subs: set[_LocalSub] = set()
        self._responders: dict[str, Responder] = {}
        self._ids = itertools.count(1)

    async def publish(self, channel: str, payload: bytes) -> None:
        check_payload(payload)
        for sub in list(self._subs):
            if sub.matches(channel):
                sub.queue.put_nowait(payload)

    async def subscribe(self, channel: str, handler: Handler) -> Subscription:
        sub = _LocalSub(self, channel, handler)
        sub.task = asyncio.get_running_loop().create_task(sub.run())
        self._subs.add(sub)
        return sub

    async def request(self, channel: str, payload: bytes, *, attempt_seconds: float, retries: int = 0) -> bytes:
        check_payload(payload)
        responder = self._responders.get(channel)
        if responder is None:
            raise NoResponder(f"nobody serves {channel}")
        try:
            reply = await asyncio.wait_for(responder(payload), attempt_seconds * (retries + 1))
            check_payload(reply, f"the reply on {channel}")
            return reply
        except TimeoutError:
            raise BusTimeout(f"no reply on {channel} within {attempt_seconds * (retries + 1):g} s") from None
        except BusError:
            raise
        except Exception as exc:
            raise RemoteFailure(f"{channel}: {type(exc).__name__}: {exc}") from exc

    async def serve(self, channel: str, responder: Responder) -> Subscription:
        self._responders[channel] = responder
        return _LocalResponder(self, channel)

    async def close(self) -> None:
        for sub in list(self._subs):
            await sub.close()
        self._responders.clear()


class InProcessRecords:
    """:class:`Records` in one process's memory (expiry by the monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._clock = clock

    def _live(self, key: str) -> bytes | None:
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self._clock():
            del self._values[key]
            return None
        return value

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        check_payload(value, "record value")
        self._values[key] = (value, None if ttl is None else self._clock() + ttl)

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def scan(self, prefix: str) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for key in list(self._values):
            if fnmatch.fnmatchcase(key, f"{_escape(prefix)}*"):
                value = self._live(key)
                if value is not None:
                    found[key] = value
        return found

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def claim(self, key: str, owner: str, *, ttl: float) -> str:
        current = self._live(key)
        if current is None or current.decode() == owner:
            self._values[key] = (owner.encode(), self._clock() + ttl)
            return owner
        return current.decode()

    async def release(self, key: str, owner: str) -> bool:
        current = self._live(key)
        if current is not None and current.decode() == owner:
            del self._values[key]
            return True
        return False

    async def close(self) -> None:
        self._values.clear()


def _escape(text: str) -> str:
    """``text`` with fnmatch's special characters made literal."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in text)
