"""Helpers of the bus tests: a redis-server with AOF that a test restarts on the same port, and polling."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

BUS_KINDS = [
    "inprocess",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]
"""The backends every bus test runs on: the in-process pair, one real Redis, the real three-master cluster."""


def bus_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the backend ``kind`` (its session fixture started on demand); "" for the in-process pair."""
    fixtures = {"redis": "redis_server", "redis-cluster": "redis_cluster"}
    return "" if kind == "inprocess" else str(request.getfixturevalue(fixtures[kind]))


def redis_with_aof(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """Start redis-server on 127.0.0.1:``port`` with AOF (fsync always) in ``workdir``; again after a stop, it
    comes back with the same data."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(workdir)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def pings(url: str) -> bool:
    """Whether the Redis at ``url`` answers now."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


async def until(check: Callable[[], Awaitable[bool]], within: float) -> float | None:
    """Seconds until ``check()`` held, or None if it did not within ``within`` (a failing check counts as no)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if await check():
                return time.monotonic() - started
        except Exception:  # noqa: S110 - e.g. Redis still down: try again
            pass
        await asyncio.sleep(0.05)
    return None


async def eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    """Wait until ``check()`` holds (True) or ``within`` seconds pass (False)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()
