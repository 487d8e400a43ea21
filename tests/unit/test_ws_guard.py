"""The WebSocket frame guard: allowed bytes pass untouched however split; refusals end in the client's close."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from aiohttp import WebSocketError, WSMsgType

from signaling.ws_guard import FrameGuard
from tests.raw_clients import close_frame, frame

LIMIT = 65536


class Reader:
    """Records what the guard passes on (stands in for aiohttp's reader, which the e2e tests run for real)."""

    def __init__(self) -> None:
        self.data = b""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.data += data
        return False, b""

    def feed_eof(self) -> None:
        pass


class Queue:
    """Records the messages the guard hands the application."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    def feed_data(self, data: Any, size: int) -> None:
        self.messages.append(data)


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.choice([1, 2, 3, 7, 100, 5000])
        out.append(data[pos : pos + step])
        pos += step
    return out


def test_allowed_frames_pass_untouched_whatever_the_split() -> None:
    """Masked frames (fragmented, control frames between, 16- and 64-bit lengths) reach the reader byte for byte."""
    rng = random.Random(21)
    stream = b"".join(
        [
            frame(0x1, b'{"type":"ping"}'),
            frame(0x1, b"a" * 200, fin=False),
            frame(0x9, b"hi"),
            frame(0x0, b"b" * 300),
            frame(0x2, b"c" * 60_000),
            frame(0x1, b"x" * (LIMIT - 2)),
        ]
    )
    for _ in range(20):
        reader, queue = Reader(), Queue()
        guard = FrameGuard(reader, queue, LIMIT)
        for chunk in _chunks(stream, rng):
            assert guard.feed_data(chunk) == (False, b"")
        assert reader.data == stream
        assert not queue.messages
        assert guard.refused is None


@pytest.mark.parametrize(
    ("refused", "code"),
    [
        (frame(0x1, b"q" * LIMIT * 2), 1009),
        (frame(0x1, b"y" * 40_000, fin=False) + frame(0x0, b"z" * 40_000), 1009),
        (frame(0x1, b'{"type":"ping"}', mask=False), 1002),
    ],
)
def test_refusal_then_the_clients_close(refused: bytes, code: int) -> None:
    """Earlier frames pass, the refused one never does, the app gets ERROR(code) and then the client's CLOSE."""
    rng = random.Random(code)
    before = frame(0x1, b'{"type":"ping","id":1}')
    stream = before + refused + close_frame(4321)
    for _ in range(20):
        reader, queue = Reader(), Queue()
        guard = FrameGuard(reader, queue, LIMIT)
        for chunk in _chunks(stream, rng):
            guard.feed_data(chunk)
        assert reader.data.startswith(before)
        assert b'"ping"}' not in reader.data[len(before) :]
        kinds = [m.type for m in queue.messages]
        assert kinds == [WSMsgType.ERROR, WSMsgType.CLOSE], queue.messages
        error = queue.messages[0].data
        assert isinstance(error, WebSocketError)
        assert error.code == code
        assert queue.messages[1].data == 4321


def test_close_code_is_read_through_the_mask() -> None:
    """The client's close code is unmasked correctly (so the log shows what the client said)."""
    reader, queue = Reader(), Queue()
    guard = FrameGuard(reader, queue, LIMIT)
    guard.feed_data(frame(0x1, b"", length=LIMIT))
    guard.feed_data(b"\x00" * LIMIT + frame(0x8, struct.pack("!H", 1000) + "bye é".encode()))
    assert [m.type for m in queue.messages] == [WSMsgType.ERROR, WSMsgType.CLOSE]
    assert (queue.messages[1].data, queue.messages[1].extra) == (1000, "bye é")
