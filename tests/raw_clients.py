"""Raw HTTP and WebSocket clients on asyncio streams, for input no well-behaved client library sends.

Half-sent requests, malformed request heads, unmasked or oversized WebSocket
frames and other handshake versions: each test writes the exact bytes and reads
the exact answer (loopback only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

WAIT = 15.0
"""Upper bound for a single read (never asserted as a duration)."""


@dataclass
class Frame:
    """One WebSocket frame as read from the server."""

    opcode: int
    fin: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The close code of a close frame (None for other frames or an empty close)."""
        if self.opcode != 0x8 or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


async def open_raw(base_url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection to the server of ``base_url`` (http://127.0.0.1:port)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The status and headers (lower-case names) of one HTTP answer."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole HTTP answer with a Content-Length body."""
    status, headers = await read_head(reader)
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), WAIT)
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader, within: float = WAIT) -> bytes:
    """Read until the server closes the connection (EOF); everything read. Raises on a reset."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - loop.time()))
        if not chunk:
            return data
        data += chunk


def upgrade_request(path: str, host: str, version: str = "13", key: str | None = None) -> bytes:
    """A WebSocket upgrade request head."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True, length: int | None = None) -> bytes:
    """One client frame; ``length`` declares another payload length than ``len(payload)`` (header only then)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if size < 126:
        head = struct.pack("!BB", first, bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + masked(payload, key)


def masked(payload: bytes, key: bytes, offset: int = 0) -> bytes:
    """``payload`` XOR-ed with the mask ``key`` (starting ``offset`` bytes into the frame's payload)."""
    return bytes(b ^ key[(i + offset) % 4] for i, b in enumerate(payload))


def close_frame(code: int = 1000) -> bytes:
    """A masked close frame with ``code``."""
    return frame(0x8, struct.pack("!H", code))


class RawWebSocket:
    """A WebSocket spoken byte by byte on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, ws_url: str, *, early: bytes = b"") -> RawWebSocket:
        """Handshake with version 13 (``early``: frames sent in the same write, before the 101); asserts the 101."""
        parts = urlsplit(ws_url)
        reader, writer = await open_raw(ws_url.replace("ws://", "http://"))
        writer.write(upgrade_request(parts.path, parts.netloc) + early)
        await writer.drain()
        status, _ = await read_head(reader)
        assert status == 101, status
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write bytes and wait until they are handed to the kernel."""
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, within: float = WAIT) -> Frame:
        """The next server frame (server frames are never masked)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), within)
        flag = head[1] & 0x7F
        if flag == 126:
            size = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif flag == 127:
            size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        else:
            size = flag
        assert not head[1] & 0x80, "the server masked a frame"
        payload = await asyncio.wait_for(self.reader.readexactly(size), within)
        return Frame(head[0] & 0x0F, bool(head[0] & 0x80), payload)

    async def read_until_close(self, within: float = WAIT) -> tuple[list[Frame], Frame]:
        """Frames up to and including the server's close frame."""
        frames: list[Frame] = []
        while True:
            f = await self.read_frame(within)
            if f.opcode == 0x8:
                return frames, f
            frames.append(f)

    async def close(self) -> None:
        """Drop the connection."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
