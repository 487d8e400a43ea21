"""Hostile input at the WebSocket door: deep JSON, lone surrogates, loose types, bad frames, other versions.

Real aiohttp server on 127.0.0.1 with the WebSocket session and a real
in-process media node. The frame-level cases speak the protocol byte by byte
(tests/raw_clients.py), since no client library sends unmasked frames or
version 8 handshakes. After each refusal another participant still gets its
pong, and no session fails with a traceback (``ws_session_failed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import structlog

from signaling.json_input import MAX_DEPTH
from tests.raw_clients import RawWebSocket, close_frame, frame, open_raw, read_answer, upgrade_request

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]

Events = list[MutableMapping[str, Any]]
"""structlog events captured during a test."""

DEEP = 1000
"""Nesting depth of the deep documents (the finding: about 1,000 levels closed the socket with 1011)."""


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.fixture
def events() -> Iterator[Events]:
    """Every structlog event logged during the test."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def _no_failure(events: Events) -> None:
    failed = [e for e in events if e.get("event") == "ws_session_failed" or e.get("exc_info")]
    assert not failed, failed


async def test_deep_json_before_join_is_a_named_error(court: Court, events: Events) -> None:
    """A first frame nested 1,000 deep (no token) gets error json_too_deep and close 4003, never 1011."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    for text in (
        '{"type": "join", "token": "x", "id": ' + _deep(DEEP) + "}",
        _deep(DEEP),
        '{"a":' * DEEP + "1" + "}" * DEEP,
    ):
        client = await court.connect()
        await client.send_raw(text)
        error = await client.expect("error")
        assert error["code"] == "json_too_deep", error
        assert error["ref"] is None
        assert await client.close_code() == 4003
    assert (await judge.ping())["type"] == "pong"
    _no_failure(events)


async def test_lone_surrogate_id_before_join_is_invalid_message(court: Court, events: Events) -> None:
    """An id (or token) holding a lone surrogate gets error invalid_message and close 4003, never 1011."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    for text in (
        '{"type": "ping", "id": "\\ud800"}',
        '{"type": "join", "id": "\\udfff", "token": "t"}',
        '{"type": "join", "id": 1, "token": "\\ud800"}',
    ):
        client = await court.connect()
        await client.send_raw(text)
        error = await client.expect("error")
        assert error["code"] == "invalid_message", error
        assert "surrogate" in error["message"]
        assert await client.close_code() == 4003
    assert (await judge.ping())["type"] == "pong"
    _no_failure(events)


async def test_deep_json_and_surrogates_after_join_keep_the_socket(court: Court, events: Events) -> None:
    """After join, deep JSON and lone surrogates get named errors; the socket stays and nothing changes."""
    b = await court.book(("judge", "defendant"))
    judge, _ = await court.join(b.tokens["judge"])
    await judge.send_raw('{"type": "admit", "id": "a1", "participant_id": ' + _deep(DEEP) + "}")
    assert (await judge.expect("error"))["code"] == "json_too_deep"
    await judge.send_raw('{"type": "ping", "id": "\\ud800"}')
    assert (await judge.expect("error"))["code"] == "invalid_message"
    at_limit = '{"type": "ping", "id": "x", "extra": ' + _deep(MAX_DEPTH - 1) + "}"
    await judge.send_raw(at_limit)
    # Within the depth limit the message reaches validation (and is refused for its unknown field).
    error = await judge.expect("error")
    assert (error["code"], error["ref"]) == ("invalid_message", "x")
    assert (await judge.ping())["type"] == "pong"
    _no_failure(events)


async def test_types_are_strict(court: Court) -> None:
    """`id: true` is not the id 1 and `enabled: "yes"` is not true: both are invalid_message; nothing changes."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    await judge.send("ping", id=True)
    error = await judge.expect("error")
    assert error["code"] == "invalid_message"
    assert error["ref"] is None
    assert not [m for m in judge.messages if m.get("type") == "pong"]
    for fields in (
        {"source": "camera", "enabled": "yes"},
        {"source": "camera", "enabled": 1},
        {"source": "camera", "enabled": True, "track_id": 5},
    ):
        reply = await judge.request("publish", "roster", **fields)
        assert (reply["type"], reply["code"]) == ("error", "invalid_message"), reply
    reply = await judge.request("mute", "muted", participant_id=b.ids["judge"], source="camera", muted="false")
    assert (reply["type"], reply["code"]) == ("error", "invalid_message"), reply
    reply = await judge.request("candidate", "pong", candidate="candidate:1", sdpMLineIndex="0")
    assert (reply["type"], reply["code"]) == ("error", "invalid_message"), reply
    assert (await judge.ping())["type"] == "pong"
    rosters = [m for m in judge.messages if m.get("type") == "roster"]
    assert not [p for r in rosters for p in r["participants"] if p.get("publishing") or p.get("muted")], rosters


async def test_unmasked_frame_closes_1002(court: Court, events: Events) -> None:
    """A client frame without a mask is a protocol error: close 1002, before or after join; others carry on."""
    b = await court.book(("judge", "prosecutor"))
    judge, _ = await court.join(b.tokens["judge"])
    raw = await RawWebSocket.connect(court.ws_url)
    await raw.send(frame(0x1, b'{"type": "ping", "id": 1}', mask=False))
    frames, close = await raw.read_until_close()
    assert close.close_code == 1002, (frames, close)
    assert not frames, "an unmasked frame was answered"
    await raw.send(close_frame())
    assert await _eof(raw)
    # After join too: a masked join, then an unmasked ping.
    raw = await RawWebSocket.connect(court.ws_url)
    await raw.send(frame(0x1, json.dumps({"type": "join", "id": "j", "token": b.tokens["prosecutor"]}).encode()))
    joined = json.loads((await raw.read_frame()).payload)
    assert joined["type"] == "joined", joined
    await raw.send(frame(0x1, b'{"type": "ping", "id": 2}', mask=False))
    frames, close = await raw.read_until_close()
    assert close.close_code == 1002
    assert not [f for f in frames if b'"pong"' in f.payload]
    await raw.close()
    # An unmasked frame sent right behind the upgrade request, before the 101, is caught too.
    raw = await RawWebSocket.connect(court.ws_url, early=frame(0x1, b'{"type": "ping"}', mask=False))
    frames, close = await raw.read_until_close()
    assert close.close_code == 1002, (frames, close)
    await raw.close()
    assert (await judge.ping())["type"] == "pong"
    _no_failure(events)


async def test_masked_frames_split_anywhere_still_work(court: Court) -> None:
    """Masked frames fed one byte at a time, two in one write, or right behind the upgrade are read normally."""
    b = await court.book(("judge", "clerk"))
    early = frame(0x1, json.dumps({"type": "join", "id": "j", "token": b.tokens["clerk"]}).encode())
    clerk = await RawWebSocket.connect(court.ws_url, early=early)
    assert json.loads((await clerk.read_frame()).payload)["type"] == "joined"
    await clerk.close()
    raw = await RawWebSocket.connect(court.ws_url)
    data = frame(0x1, json.dumps({"type": "join", "id": "j", "token": b.tokens["judge"]}).encode())
    for i in range(len(data)):
        await raw.send(data[i : i + 1])
    assert json.loads((await raw.read_frame()).payload)["type"] == "joined"
    big_id = "p" * 60
    await raw.send(frame(0x1, json.dumps({"type": "ping", "id": big_id}).encode()) + frame(0x1, b'{"type":"ping"}'))
    assert (await _pong(raw))["ref"] == big_id
    assert (await _pong(raw))["ref"] is None
    # A fragmented message within the limit is assembled as usual, with a ping between its fragments.
    text = json.dumps({"type": "ping", "id": "frag"}).encode()
    await raw.send(frame(0x1, text[:5], fin=False) + frame(0x9, b"hi") + frame(0x0, text[5:]))
    assert (await _pong(raw))["ref"] == "frag"
    await raw.send(close_frame())
    assert await _eof(raw)


async def test_oversize_frame_closes_1009_without_reset(court: Court, events: Events) -> None:
    """A frame declared larger than the limit gets close 1009; the client may finish sending and sees no reset."""
    b = await court.book(("judge",))
    judge, _ = await court.join(b.tokens["judge"])
    size = 1024 * 1024
    raw = await RawWebSocket.connect(court.ws_url)
    await raw.send(frame(0x1, b"", length=size) + b"x" * 4096)
    _, close = await raw.read_until_close()
    assert close.close_code == 1009
    # The rest of the frame and the client's close still go through: the server reads until the handshake ends.
    for _ in range(size // 65536):
        await raw.send(b"x" * 65536)
    await raw.send(close_frame(1009))
    assert await _eof(raw)
    assert (await judge.ping())["type"] == "pong"
    _no_failure(events)


async def test_oversize_fragmented_message_closes_1009(court: Court) -> None:
    """Fragments adding up past the limit (each one under it) get close 1009, then a clean close."""
    b = await court.book(("judge",))
    raw = await RawWebSocket.connect(court.ws_url)
    await raw.send(frame(0x1, json.dumps({"type": "join", "id": "j", "token": b.tokens["judge"]}).encode()))
    assert json.loads((await raw.read_frame()).payload)["type"] == "joined"
    chunk = b" " * 40_000
    await raw.send(frame(0x1, chunk, fin=False))
    await raw.send(frame(0x0, chunk, fin=False))
    _, close = await raw.read_until_close()
    assert close.close_code == 1009
    await raw.send(frame(0x0, chunk))
    await raw.send(close_frame(1000))
    assert await _eof(raw)


@pytest.mark.parametrize("version", ["8", "7", "14", "banana"])
async def test_other_websocket_versions_are_refused(court: Court, version: str) -> None:
    """An upgrade with a version other than 13 gets 426 naming version 13, never a 101."""
    reader, writer = await open_raw(court.base_url)
    try:
        writer.write(upgrade_request("/api/v1/ws", urlsplit(court.base_url).netloc, version=version))
        await writer.drain()
        status, headers, body = await read_answer(reader)
    finally:
        writer.close()
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["type"] == "urn:courtlink:problem:unsupported_websocket_version"


async def _pong(raw: RawWebSocket) -> dict[str, Any]:
    """The next `pong` message (other messages and control frames are skipped)."""
    while True:
        f = await raw.read_frame()
        assert f.opcode != 0x8, f"closed with {f.close_code}"
        if f.opcode == 0x1:
            message: dict[str, Any] = json.loads(f.payload)
            if message["type"] == "pong":
                return message


async def _eof(raw: RawWebSocket) -> bool:
    """True when the server ends the connection with a clean EOF (anything left is read and dropped)."""
    with contextlib.suppress(asyncio.IncompleteReadError):
        while await asyncio.wait_for(raw.reader.read(65536), 15.0):
            pass
    await raw.close()
    return True


async def test_deep_probe_body_is_400(court: Court) -> None:
    """POST /join/probe (served with the WebSocket session) answers a 1,000-deep body with 400 json_too_deep."""
    body = '{"sdp": ' + _deep(DEEP) + "}"
    headers = {"Content-Type": "application/json"}
    async with court.http.post(court.base_url + "/api/v1/join/probe", data=body, headers=headers) as resp:
        assert resp.status == 400
        problem = json.loads(await resp.text())
    assert problem["type"] == "urn:courtlink:problem:json_too_deep"
