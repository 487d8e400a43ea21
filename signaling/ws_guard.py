"""A WebSocket response that checks every client frame header before aiohttp's reader sees it.

aiohttp's server-side reader accepts frames a client did not mask, and when a
frame is too big it closes the TCP connection at once while the client is still
sending that frame: the client gets a reset instead of the 1009 close. RFC 6455
wants both handled (5.1: "a server MUST close the connection upon receiving a
frame that is not masked", 1002; 7.1.1: close the TCP connection only after
the closing handshake, or the peer may see a reset).

:class:`GuardedWebSocketResponse` puts a :class:`FrameGuard` in front of the
reader. The guard reads only frame headers (2-14 bytes per frame; payload bytes
are passed through untouched, unmasking and assembly stay aiohttp's). On a frame
that is not masked, or whose declared length makes its message larger than the
limit, it hands the application a ``WSMsgType.ERROR`` message carrying a
:class:`aiohttp.WebSocketError` with the close code (1002 or 1009) instead of
the frame; from then on it discards what the client sends, except that it
recognises the client's close frame, so that :meth:`close` ends the handshake
and the socket closes without a reset. The application closes with the code
(:mod:`signaling.ws` does).

aiohttp has no setting for either check; the guard hooks in where the response
installs its reader (``_post_start``), the only place it can see every byte.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web
from aiohttp.web_request import BaseRequest

_CONTINUATION, _TEXT, _BINARY, _CLOSE = 0x0, 0x1, 0x2, 0x8


class _Reader(Protocol):
    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class _Queue(Protocol):
    def feed_data(self, data: Any, size: int) -> None: ...


class FrameGuard:
    """Checks the headers of client frames, then passes the bytes to aiohttp's reader (see the module doc)."""

    def __init__(self, reader: _Reader, queue: _Queue, max_msg_size: int) -> None:
        self._reader = reader
        self._queue = queue
        self._max = max_msg_size
        self._header = b""
        """Bytes of a frame header not complete yet."""
        self._payload_left = 0
        """Payload bytes of the current frame still to come."""
        self._message_bytes = 0
        """Payload bytes of the unfinished fragmented message so far."""
        self._refused: WebSocketError | None = None
        self._close_frame: tuple[bytes, bytes] | None = None
        """After a refusal: (mask, payload so far) of a client close frame being read."""

    @property
    def refused(self) -> WebSocketError | None:
        """The error the guard refused the connection with, if it did."""
        return self._refused

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        """The protocol's entry point: check ``data`` and pass what is allowed on (aiohttp's parser interface)."""
        if type(data) is not bytes:
            data = bytes(data)
        if self._refused is not None:
            self._discard(data)
            return False, b""
        refusal = self._scan(data)
        if refusal is None:
            return self._reader.feed_data(data)
        start, after, length, error = refusal
        eof, tail = (False, b"")
        if start > 0:
            # Frames before the refused one are delivered as usual.
            eof, tail = self._reader.feed_data(data[:start])
        if not eof:
            self._refuse(error)
            self._payload_left = length
            self._discard(data[after:])
        return eof, tail

    def feed_eof(self) -> None:
        """The connection ended."""
        self._reader.feed_eof()

    def _refuse(self, error: WebSocketError) -> None:
        self._refused = error
        self._header = b""
        self._queue.feed_data(WSMessage(WSMsgType.ERROR, error, None), 0)

    def _scan(self, data: bytes) -> tuple[int, int, int, WebSocketError] | None:
        """Walk the frame headers in ``data``; None when all are allowed.

        Else, for the first refused frame: where its header starts in ``data``
        (0 when it began in an earlier chunk), where its payload starts, its
        payload length, and the error to close with.
        """
        pos = 0
        size = len(data)
        while pos < size:
            if self._payload_left:
                step = min(self._payload_left, size - pos)
                self._payload_left -= step
                pos += step
                continue
            start = pos - len(self._header)
            header, complete = self._take_header(data, pos)
            if not complete:
                self._header = header
                return None
            pos += len(header) - len(self._header)
            self._header = b""
            opcode, fin, masked, length = _parse(header)
            if not masked:
                error = WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")
                return max(start, 0), pos, length, error
            if opcode in (_TEXT, _BINARY, _CONTINUATION):
                if self._max and length + self._message_bytes >= self._max:
                    error = WebSocketError(
                        WSCloseCode.MESSAGE_TOO_BIG,
                        f"message of {length + self._message_bytes} bytes exceeds the limit of {self._max}",
                    )
                    return max(start, 0), pos, length, error
                self._message_bytes = 0 if fin else self._message_bytes + length
            self._payload_left = length
        return None

    def _take_header(self, data: bytes, pos: int) -> tuple[bytes, bool]:
        """The current frame header (continuing a partial one) and whether it is complete."""
        header = self._header + data[pos : pos + 14 - len(self._header)]
        if len(header) < 2:
            return header, False
        need = _header_size(header)
        if len(header) < need:
            return header, False
        return header[:need], True

    def _discard(self, data: bytes) -> None:
        """After a refusal: skip frames, but pass on the client's close frame so the handshake can end."""
        pos = 0
        size = len(data)
        while pos < size:
            if self._payload_left:
                step = min(self._payload_left, size - pos)
                if self._close_frame is not None:
                    mask, got = self._close_frame
                    self._close_frame = (mask, got + data[pos : pos + step])
                self._payload_left -= step
                pos += step
                if not self._payload_left and self._close_frame is not None:
                    self._closed_by_client(*self._close_frame)
                continue
            header, complete = self._take_header(data, pos)
            if not complete:
                self._header = header
                return
            pos += len(header) - len(self._header)
            self._header = b""
            opcode, _, masked, length = _parse(header)
            self._payload_left = length
            if opcode == _CLOSE and length <= 125:
                self._close_frame = (header[-4:] if masked else b"", b"")
                if not length:
                    self._closed_by_client(b"", b"")

    def _closed_by_client(self, mask: bytes, payload: bytes) -> None:
        self._close_frame = None
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
        reason = payload[2:].decode("utf-8", "replace")
        self._queue.feed_data(WSMessage(WSMsgType.CLOSE, code, reason), 0)


def _header_size(header: bytes) -> int:
    """Bytes of a frame header given at least its first two bytes."""
    second = header[1]
    flag = second & 0x7F
    size = 2 + (2 if flag == 126 else 8 if flag == 127 else 0)
    return size + (4 if second & 0x80 else 0)


def _parse(header: bytes) -> tuple[int, bool, bool, int]:
    """opcode, fin, masked and payload length of a complete frame header."""
    first, second = header[0], header[1]
    flag = second & 0x7F
    if flag == 126:
        length = struct.unpack("!H", header[2:4])[0]
    elif flag == 127:
        length = struct.unpack("!Q", header[2:10])[0]
    else:
        length = flag
    return first & 0x0F, bool(first & 0x80), bool(second & 0x80), length


class GuardedWebSocketResponse(web.WebSocketResponse):
    """A :class:`aiohttp.web.WebSocketResponse` whose client frames pass a :class:`FrameGuard` first."""

    guard: FrameGuard | None = None

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request are held back and fed through the guard below.
        tail: bytes = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        reader = handler._payload_parser
        queue = self._reader
        if reader is None or queue is None:  # pragma: no cover - aiohttp changed its internals
            raise RuntimeError("aiohttp did not install a WebSocket reader; the frame guard cannot run")
        self.guard = FrameGuard(reader, queue, self._max_msg_size)
        handler._payload_parser = self.guard
        if tail:
            handler.data_received(tail)
