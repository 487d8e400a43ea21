"""A recorder's frame source in another process: a node's frame pipe over TCP (``media.frame_pipe``).

:class:`PipeFrameSource` implements ``protocol.frames.FrameSource``.
``attach_recorder`` starts one connection task per (hearing, recorder
participant): it asks ``locate(hearing_id)`` where the hearing's node is now,
connects, sends a signed hello and feeds every decoded message to the sink,
whole (a frame is handed on only once all of its bytes are there). When the
connection drops, every track the sink was told about gets
``track_stopped(track_id, "node_lost")`` (the recorder writes a ``node_lost``
gap), and the task connects again with backoff, asking ``locate`` again each
time: after a node failover the hearing lives on another node.
``detach_recorder`` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from protocol.frames import (
    EncodedFrame,
    FrameDecodeError,
    FrameSink,
    MessageDecoder,
    PipeKeepalive,
    PipeKeyframeRequest,
    PipeMessage,
    PipeRefused,
    PipeTrackStopped,
    PipeWelcome,
    SenderReport,
    TrackInfo,
    encode_message,
    make_hello,
)

log = structlog.get_logger(__name__)

Locate = Callable[[str], Awaitable[str | None]]
"""hearing id -> ``host:port`` of the frame pipe of the node the hearing is on now (None: not placed)."""

KEEPALIVE_SECONDS = 5.0
"""The recorder's keepalive interval (the node announces its own in ``welcome``)."""
CONNECT_SECONDS = 5.0
"""Seconds to connect and be welcomed before the attempt counts as failed."""
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
_READ_CHUNK = 256 * 1024


class _Dropped(Exception):
    """The connection ends (reason in ``args[0]``)."""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError if it is neither."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None or secret in ("", b""):
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else secret


@dataclass(eq=False)
class _Follow:
    """One (hearing, participant) the recorder takes frames for."""

    hearing_id: str
    participant_id: str
    sink: FrameSink
    started: set[str] = field(default_factory=set)
    """Tracks the sink was told about and not yet told stopped."""
    writer: asyncio.StreamWriter | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    connections: int = 0
    """Connections welcomed so far (tests and metrics)."""
    frames: int = 0
    address: str | None = None

    def stop_all(self, reason: str) -> None:
        for track_id in sorted(self.started):
            self.sink.track_stopped(track_id, reason)
        self.started.clear()


class PipeFrameSource:
    """A ``protocol.frames.FrameSource`` over the frame pipes of the nodes ``locate`` names (see the module doc)."""

    def __init__(
        self,
        locate: Locate,
        *,
        secret: str | bytes | None,
        recorder_id: str,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._locate = locate
        self._secret = _secret_bytes(secret)
        self.recorder_id = recorder_id
        self.keepalive_seconds = keepalive_seconds
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self._follows: dict[tuple[str, str], _Follow] = {}

    # --- FrameSource -------------------------------------------------------------------------------------

    def attach_recorder(self, hearing_id: str, participant_id: str, sink: FrameSink) -> None:
        """Connect to the hearing's node and feed ``sink`` (replaces an earlier attachment of the participant)."""
        self.detach_recorder(hearing_id, participant_id)
        follow = _Follow(hearing_id, participant_id, sink)
        self._follows[(hearing_id, participant_id)] = follow
        follow.task = asyncio.ensure_future(self._run(follow))

    def detach_recorder(self, hearing_id: str, participant_id: str, reason: str = "detached") -> None:
        """Stop: each started track gets ``track_stopped(reason)`` now, and the connection closes."""
        follow = self._follows.pop((hearing_id, participant_id), None)
        if follow is None:
            return
        follow.ended = True
        follow.stop_all(reason)
        if follow.task is not None:
            follow.task.cancel()

    def request_keyframe(self, hearing_id: str, track_id: str) -> None:
        """Ask the node for a keyframe of ``track_id`` over the connection that carries it (dropped if none)."""
        for follow in self._follows.values():
            if follow.hearing_id == hearing_id and track_id in follow.started and follow.writer is not None:
                with contextlib.suppress(ValueError):
                    follow.writer.write(encode_message(PipeKeyframeRequest(track_id)))
                return

    # --- lifecycle and introspection -----------------------------------------------------------------------

    async def close(self) -> None:
        """Detach every recorder (``closed``) and wait for the connections to end."""
        tasks = [f.task for f in self._follows.values() if f.task is not None]
        for hearing_id, participant_id in list(self._follows):
            self.detach_recorder(hearing_id, participant_id, "closed")
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def connections(self, hearing_id: str, participant_id: str) -> int:
        """How many times this attachment has been welcomed by a node (1 until its first reconnect)."""
        follow = self._follows.get((hearing_id, participant_id))
        return 0 if follow is None else follow.connections

    def connected(self, hearing_id: str, participant_id: str) -> bool:
        """Whether the attachment has a welcomed connection now."""
        follow = self._follows.get((hearing_id, participant_id))
        return follow is not None and follow.writer is not None

    # --- the connection task -------------------------------------------------------------------------------

    async def _run(self, follow: _Follow) -> None:
        delay = self.backoff_first
        fields = {"hearing_id": follow.hearing_id, "participant_id": follow.participant_id}
        while not follow.ended:
            before = follow.connections
            reason = "not_placed"
            try:
                address = await self._locate(follow.hearing_id)
                if address is not None:
                    follow.address = address
                    reason = await self._connect(follow, address)
            except _Dropped as dropped:
                reason = str(dropped.args[0])
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                reason = f"unreachable: {type(exc).__name__}"
            except FrameDecodeError as bad:
                reason = f"malformed_{bad.reason}"
            except ValueError as exc:  # a bad address from locate
                reason = f"bad_address: {exc}"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # locate failed (bus down...): try again later, never give up the hearing
                log.exception("frame_pipe_failed", **fields)
                reason = f"failed: {type(exc).__name__}"
            finally:
                writer, follow.writer = follow.writer, None
                if writer is not None:
                    writer.transport.abort()
                if not follow.ended:
                    # Whatever the node had started for us is no longer being recorded: a gap until it is back.
                    follow.stop_all("node_lost")
            if follow.ended:
                return
            welcomed = follow.connections > before
            if welcomed:
                delay = self.backoff_first
            log.warning(
                "frame_pipe_dropped" if welcomed else "frame_pipe_connect_failed",
                reason=reason,
                address=follow.address,
                retry_seconds=round(delay, 2),
                **fields,
            )
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.backoff_max, delay * 2)

    async def _connect(self, follow: _Follow, address: str) -> str:
        """One connection: hello, welcome, then frames until it drops; returns why it ended."""
        host, port = split_address(address)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_SECONDS)
        follow.writer = None
        try:
            hello = make_hello(
                self.recorder_id,
                follow.hearing_id,
                follow.participant_id,
                secret=self._secret,
                now=time.time(),
                nonce=secrets.token_bytes(16),
            )
            writer.write(encode_message(hello))
            decoder = MessageDecoder()
            welcome, rest = await asyncio.wait_for(self._first(reader, decoder), CONNECT_SECONDS)
        except BaseException:
            writer.transport.abort()
            raise
        follow.writer = writer
        follow.connections += 1
        log.info("frame_pipe_connected", address=address, hearing_id=follow.hearing_id, connections=follow.connections)
        silence = 3 * max(welcome.keepalive_ms / 1000, self.keepalive_seconds)
        keepalive = asyncio.ensure_future(self._keepalive(writer))
        try:
            for message in rest:
                self._deliver(follow, message)
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(_READ_CHUNK), silence)
                except TimeoutError:
                    return "node_silent"
                if not data:
                    return "node_closed"
                for message in decoder.feed(data):
                    self._deliver(follow, message)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _first(
        self, reader: asyncio.StreamReader, decoder: MessageDecoder
    ) -> tuple[PipeWelcome, list[PipeMessage]]:
        """The node's welcome, and what came with it in the same read."""
        while True:
            data = await reader.read(_READ_CHUNK)
            if not data:
                raise _Dropped("closed_before_welcome")
            messages = decoder.feed(data)
            if not messages:
                continue
            first = messages[0]
            if isinstance(first, PipeRefused):
                raise _Dropped(f"refused: {first.reason}")
            if not isinstance(first, PipeWelcome):
                raise _Dropped(f"unexpected_{type(first).__name__}")
            return first, messages[1:]

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        ping = encode_message(PipeKeepalive())
        while not writer.is_closing():
            await asyncio.sleep(self.keepalive_seconds)
            writer.write(ping)

    def _deliver(self, follow: _Follow, message: PipeMessage) -> None:
        sink = follow.sink
        if isinstance(message, EncodedFrame):
            if message.track_id in follow.started:
                follow.frames += 1
                sink.frame(message)
        elif isinstance(message, SenderReport):
            if message.track_id in follow.started:
                sink.sender_report(message)
        elif isinstance(message, TrackInfo):
            if message.hearing_id != follow.hearing_id:
                raise _Dropped("track_of_another_hearing")
            follow.started.add(message.track_id)
            sink.track_started(message)
        elif isinstance(message, PipeTrackStopped):
            if message.track_id in follow.started:
                follow.started.discard(message.track_id)
                sink.track_stopped(message.track_id, message.reason)
        elif not isinstance(message, PipeKeepalive):
            raise _Dropped(f"unexpected_{type(message).__name__}")
