"""The node's frame pipe: recorders in other processes (or machines) take a hearing's frames over TCP.

One connection per (hearing, recorder participant). The recorder's first
message is a hello (``protocol.frames.PipeHello``) signed with ``[cluster]
secret``; the node checks it (MAC, time within 60 s, fresh nonce), answers
``welcome`` and attaches a sink to itself through ``attach_recorder``, exactly
as an in-process recorder is attached. From then on the node sends
``track_started``, ``frame``, ``sender_report`` and ``track_stopped``; the
recorder sends ``request_keyframe``; both send a keepalive when idle.

The sink never blocks the node: it encodes and hands the bytes to the
transport. When a recorder does not keep up and the transport's write buffer
passes ``send_buffer_bytes``, the connection is cut off at once (buffer
dropped) and the recorder's tracks stop with reason ``overflow``: a stuck
recorder costs the node at most that much memory. Without a secret the server
accepts only loopback peers. Any malformed byte closes that one connection with
a logged reason (``frame_pipe_closed``); nothing a peer sends can stop the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from dataclasses import dataclass, field

import structlog

from protocol.frames import (
    EncodedFrame,
    FrameDecodeError,
    FrameSource,
    HelloRefused,
    MessageDecoder,
    NonceCache,
    PipeHello,
    PipeKeepalive,
    PipeKeyframeRequest,
    PipeMessage,
    PipeRefused,
    PipeTrackStopped,
    PipeWelcome,
    SenderReport,
    TrackInfo,
    check_hello,
    encode_message,
    message_length,
)

log = structlog.get_logger(__name__)

SEND_BUFFER_BYTES = 8 * 1024 * 1024
"""Bytes a recorder may fall behind (several seconds of a full courtroom's media) before it is cut off."""
KEEPALIVE_SECONDS = 5.0
"""A keepalive goes out this often; a peer silent for three times as long is dropped."""
HELLO_SECONDS = 5.0
"""A connection that has not sent a complete hello by then is closed."""
_READ_CHUNK = 64 * 1024


def is_loopback(peer: object) -> bool:
    """Whether a ``peername`` is a loopback address (127.0.0.0/8, ::1, or an IPv4-mapped loopback)."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    try:
        address = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _secret_bytes(secret: str | bytes | None) -> bytes | None:
    if secret is None or secret in ("", b""):
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else secret


class _Closed(Exception):
    """The connection ends (reason in ``args[0]``)."""


@dataclass(eq=False)
class _Connection:
    """One recorder's connection: the sink the node feeds, and its bookkeeping."""

    server: FramePipeServer
    writer: asyncio.StreamWriter
    peer: str
    hearing_id: str = ""
    participant_id: str = ""
    recorder_id: str = ""
    closed: bool = False
    overflowed: bool = False
    frames_sent: int = 0
    frames_dropped: int = 0
    peak_buffer: int = 0
    """Largest transport write buffer seen (bytes): the memory this recorder made the node hold."""
    too_large_logged: set[str] = field(default_factory=set)

    # --- FrameSink (called by the node on its loop; never blocks) --------------------------------------------

    def track_started(self, info: TrackInfo) -> None:
        self.send(info)

    def frame(self, frame: EncodedFrame) -> None:
        if self.send(frame):
            self.frames_sent += 1

    def sender_report(self, report: SenderReport) -> None:
        self.send(report)

    def track_stopped(self, track_id: str, reason: str) -> None:
        self.send(PipeTrackStopped(track_id, reason[:200] or "stopped"))

    # --- sending --------------------------------------------------------------------------------------------

    def send(self, message: PipeMessage) -> bool:
        if self.closed:
            return False
        try:
            data = encode_message(message)
        except ValueError as exc:
            # A frame (or id) over the wire's bounds: skip it rather than lose the recorder; the recorder's segment
            # cut asks for a keyframe again.
            self.frames_dropped += 1
            track = getattr(message, "track_id", "")
            if track not in self.too_large_logged:
                self.too_large_logged.add(track)
                log.warning("frame_pipe_message_too_large", track_id=track, error=str(exc), **self._fields())
            return False
        transport = self.writer.transport
        if transport.is_closing():
            return False  # the peer is gone; the reader notices and detaches (no per-frame write errors meanwhile)
        buffered = transport.get_write_buffer_size()
        if buffered + len(data) > self.server.send_buffer_bytes:
            self._overflow(buffered)
            return False
        self.writer.write(data)
        self.peak_buffer = max(self.peak_buffer, buffered + len(data))
        return True

    def _overflow(self, buffered: int) -> None:
        """The recorder does not keep up: drop what is queued for it and cut it off (logged once)."""
        self.closed = True
        self.overflowed = True
        log.warning("frame_pipe_overflow", buffered_bytes=buffered, frames_sent=self.frames_sent, **self._fields())
        self.writer.transport.abort()
        # Detach later: this runs inside the node's frame fan-out, which must not see its consumers change under it.
        asyncio.get_running_loop().call_soon(self.server._detach, self, "overflow")

    def _fields(self) -> dict[str, str]:
        return {
            "peer": self.peer,
            "hearing_id": self.hearing_id,
            "participant_id": self.participant_id,
            "recorder_id": self.recorder_id,
        }


class FramePipeServer:
    """Serves a node's frames to recorders over TCP (see the module docstring)."""

    def __init__(
        self,
        node: FrameSource,
        host: str,
        port: int,
        *,
        secret: str | bytes | None,
        send_buffer_bytes: int = SEND_BUFFER_BYTES,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
        hello_seconds: float = HELLO_SECONDS,
        socket_send_buffer: int | None = None,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.send_buffer_bytes = send_buffer_bytes
        self.keepalive_seconds = keepalive_seconds
        self.hello_seconds = hello_seconds
        self.socket_send_buffer = socket_send_buffer
        """SO_SNDBUF of each connection (None: the system's, autotuned); with ``send_buffer_bytes`` it bounds what one
        recorder can make the node hold."""
        self._secret = _secret_bytes(secret)
        self._nonces = NonceCache()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._attached: dict[tuple[str, str], _Connection] = {}
        self.connections: list[_Connection] = []
        """Live connections (tests and metrics)."""
        self.refused: dict[str, int] = {}
        """Connections refused or closed for a protocol fault, by reason (tests and metrics)."""
        self.overflows = 0
        """Recorders cut off for not keeping up."""
        self.peak_buffer = 0
        """Largest write buffer any connection reached (bytes)."""

    async def start(self) -> str:
        """Listen; returns the bound ``host:port`` (the port chosen by the system when 0 was asked for)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=_READ_CHUNK)
        sockname = self._server.sockets[0].getsockname()
        host = sockname[0]
        address = f"[{host}]:{sockname[1]}" if ":" in host else f"{host}:{sockname[1]}"
        log.info("frame_pipe_listening", address=address, secret=self._secret is not None)
        return address

    async def close(self) -> None:
        """Stop listening, close every connection and detach its recorder (``recorder_gone``)."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    # --- per connection ------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peername = writer.get_extra_info("peername")
        sock = writer.get_extra_info("socket")
        if self.socket_send_buffer is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        conn = _Connection(self, writer, peer=str(peername))
        reason = "closed"
        try:
            if self._secret is None and not is_loopback(peername):
                raise _Closed("not_loopback")
            decoder = MessageDecoder()
            hello = await asyncio.wait_for(self._hello(reader, decoder), self.hello_seconds)
            check_hello(hello, secret=self._secret, now=time.time(), nonces=self._nonces)
            conn.hearing_id, conn.participant_id = hello.hearing_id, hello.participant_id
            conn.recorder_id = hello.recorder_id
            writer.write(encode_message(PipeWelcome(keepalive_ms=round(self.keepalive_seconds * 1000))))
            self._attach(conn)
            log.info("frame_pipe_recorder_attached", **conn._fields())
            reason = await self._serve(conn, reader, decoder)
        except HelloRefused as refused:
            reason = f"hello_{refused.reason}"
        except TimeoutError:
            reason = "hello_timeout"
        except _Closed as closed:
            reason = str(closed.args[0])
        except FrameDecodeError as bad:
            reason = f"malformed_{bad.reason}"
        except (ConnectionError, OSError):
            reason = "connection_lost"
        except asyncio.IncompleteReadError:
            reason = "connection_lost"
        except asyncio.CancelledError:
            reason = "server_closed"
            raise  # (after the finish below): whoever cancelled this task sees it cancelled, not returned
        except Exception:  # a fault of ours must cost this connection only, never the node
            log.exception("frame_pipe_failed", **conn._fields())
            reason = "internal_error"
        finally:
            await self._finish(conn, reason)
            self._tasks.discard(task)

    async def _hello(self, reader: asyncio.StreamReader, decoder: MessageDecoder) -> PipeHello:
        # The hello is read by itself: nothing after it is looked at before it is checked.
        header = await reader.readexactly(4)
        body = await reader.readexactly(message_length(header))
        first = decoder.feed(header + body)
        if len(first) != 1 or not isinstance(first[0], PipeHello):
            raise _Closed("no_hello")
        return first[0]

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader, decoder: MessageDecoder) -> str:
        keepalive = asyncio.ensure_future(self._keepalive(conn))
        try:
            while not conn.closed:
                try:
                    data = await asyncio.wait_for(reader.read(_READ_CHUNK), 3 * self.keepalive_seconds)
                except TimeoutError:
                    return "recorder_silent"
                if not data:
                    return "recorder_gone"
                for message in decoder.feed(data):
                    if isinstance(message, PipeKeyframeRequest):
                        self.node.request_keyframe(conn.hearing_id, message.track_id)
                    elif not isinstance(message, PipeKeepalive):
                        raise _Closed(f"unexpected_{type(message).__name__}")
            return "overflow"
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _keepalive(self, conn: _Connection) -> None:
        while not conn.closed:
            await asyncio.sleep(self.keepalive_seconds)
            conn.send(PipeKeepalive())

    def _attach(self, conn: _Connection) -> None:
        key = (conn.hearing_id, conn.participant_id)
        self._attached[key] = conn
        self.connections.append(conn)
        # attach_recorder replaces an earlier connection of the same recorder participant (it gets ``detached``).
        self.node.attach_recorder(conn.hearing_id, conn.participant_id, conn)

    def _detach(self, conn: _Connection, reason: str) -> None:
        """Detach ``conn``'s recorder from the node, unless a newer connection has replaced it since."""
        key = (conn.hearing_id, conn.participant_id)
        if self._attached.get(key) is conn:
            del self._attached[key]
            self.node.detach_recorder(conn.hearing_id, conn.participant_id, reason)
        if conn in self.connections:
            self.connections.remove(conn)

    async def _finish(self, conn: _Connection, reason: str) -> None:
        was_open = not conn.closed
        conn.closed = True
        self.peak_buffer = max(self.peak_buffer, conn.peak_buffer)
        if conn.overflowed:
            reason = "overflow"
            self.overflows += 1
        if conn.hearing_id and reason != "overflow":
            self._detach(conn, "recorder_gone")
        elif conn.hearing_id:
            self._detach(conn, "overflow")
        if reason not in ("recorder_gone", "server_closed", "overflow"):
            self.refused[reason] = self.refused.get(reason, 0) + 1
        refused = not conn.hearing_id and (reason.startswith("hello_") or reason == "not_loopback")
        if was_open and refused:
            with contextlib.suppress(Exception):
                conn.writer.write(encode_message(PipeRefused(reason)))
        (log.warning if refused or reason.startswith(("malformed_", "unexpected_")) else log.info)(
            "frame_pipe_closed",
            reason=reason,
            frames_sent=conn.frames_sent,
            peak_buffer_bytes=conn.peak_buffer,
            **conn._fields(),
        )
        if conn.overflowed:
            return  # aborted already
        conn.writer.close()
        try:
            await asyncio.wait_for(conn.writer.wait_closed(), 2)
        except (TimeoutError, OSError, asyncio.CancelledError):
            conn.writer.transport.abort()  # a peer that does not read does not keep its buffer alive
