"""The HTTP front door under raw abuse: half-sent requests are closed, malformed ones cost one log line.

Real signaling app served the way ``courtlink serve`` serves it
(:func:`signaling.serving.app_runner`) on 127.0.0.1, real SQLite store; the
clients write raw bytes on asyncio streams. Header and body timeouts are set
to 1 s here so the tests are quick; the figures are logged, never asserted as
durations (the bounds below are generous multiples).
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
from collections.abc import AsyncIterator, MutableMapping
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from tests.raw_clients import closed_by_server, open_raw, read_answer

if TYPE_CHECKING:
    from rooms.store import Store
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]

TIMEOUT = 1.0
"""header_timeout_seconds and body_timeout_seconds of the server under test."""

BOUND = 20.0
"""How long a test waits for the server to act on a 1 s timeout (a bound, not a measurement)."""


@pytest.fixture
async def door(sqlite_store: Store) -> AsyncIterator[Api]:
    """The signaling app with 1 s header and body timeouts."""
    from tests.api_fixtures import api_config, serve  # after pytest registered the fixture module

    config = api_config(header_timeout_seconds=TIMEOUT, body_timeout_seconds=TIMEOUT)
    async with serve(sqlite_store, config) as running:
        yield running


async def _held(door: Api, first_bytes: bytes) -> float:
    """Seconds the server keeps a connection that sent only ``first_bytes`` (until it closes it)."""
    loop = asyncio.get_running_loop()
    reader, writer = await open_raw(door.base_url)
    started = loop.time()
    try:
        if first_bytes:
            writer.write(first_bytes)
            await writer.drain()
        await closed_by_server(reader, within=BOUND)
        return loop.time() - started
    finally:
        writer.close()


async def test_half_sent_request_heads_are_closed(door: Api) -> None:
    """100 connections with half-sent request heads (or nothing at all) are all closed by the server."""
    partial = [
        b"",
        b"GE",
        b"GET /healthz HTTP/1.1\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /api/v1/join/info HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Le",
    ]
    held = await asyncio.gather(*(_held(door, partial[i % len(partial)]) for i in range(100)))
    print(
        f"half-sent heads held: median {statistics.median(held):.2f} s, max {max(held):.2f} s "
        f"(header timeout {TIMEOUT:g} s)"
    )
    # The server is still answering whole requests.
    assert (await door.call("GET", "/healthz", key=None)).status == 200


async def test_trickled_request_head_is_closed(door: Api) -> None:
    """A head sent one byte every 0.2 s (slowloris) is closed anyway: the limit counts from the first byte."""
    loop = asyncio.get_running_loop()
    reader, writer = await open_raw(door.base_url)
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 500

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    sender = asyncio.ensure_future(trickle())
    started = loop.time()
    try:
        await closed_by_server(reader, within=BOUND)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()
    print(f"trickled head closed after {loop.time() - started:.2f} s")


async def test_half_sent_body_gets_408(door: Api) -> None:
    """A body that stops short of its Content-Length gets a 408 problem and the connection is closed."""
    reader, writer = await open_raw(door.base_url)
    try:
        writer.write(
            b"POST /api/v1/join/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"token": "'
        )
        await writer.drain()
        status, headers, body = await read_answer(reader)
        assert status == 408
        assert headers["content-type"].startswith("application/problem+json")
        problem = json.loads(body)
        assert problem["type"] == "urn:courtlink:problem:request_timeout"
        assert "Traceback" not in body.decode()
        await closed_by_server(reader, within=BOUND)
    finally:
        writer.close()


MALFORMED = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nThis is not a header\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x00Name: 1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n\x01\x02\x03\r\n\r\n",
    b"POST /api/v1/join/info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
]


async def test_malformed_requests_log_one_line_without_traceback(door: Api, caplog: pytest.LogCaptureFixture) -> None:
    """Each malformed request gets a 400 and one warning line; nothing is logged at ERROR or with a traceback."""
    with structlog.testing.capture_logs() as events, caplog.at_level(logging.DEBUG):
        for raw in MALFORMED:
            reader, writer = await open_raw(door.base_url)
            try:
                writer.write(raw)
                await writer.drain()
                status, _, body = await read_answer(reader)
            finally:
                writer.close()
            assert status == 400, (raw[:60], status, body[:200])
            assert b"Traceback" not in body
        assert (await door.call("GET", "/healthz", key=None)).status == 200
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]
    warned = [e for e in events if e["log_level"] == "warning"]
    assert len(warned) == len(MALFORMED), warned
    assert all(e["event"] in ("http_request_malformed", "request_body_malformed") for e in warned), warned
    assert not [e for e in events if e["log_level"] == "error" or e.get("exc_info")]
    _show(events)


def _show(events: list[MutableMapping[str, Any]]) -> None:
    for event in events:
        if event["event"] in ("http_request_malformed", "request_body_malformed"):
            print(event)
