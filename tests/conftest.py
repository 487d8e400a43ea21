"""Shared fixtures: a real redis-server on a free loopback port.

Other test folders add their own fixtures in their own modules; this file is
owned by the stores work.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

# Registered here, before any test module is imported, so pytest rewrites their assertions
# even when a test module also imports one of them directly.
pytest_plugins = ["tests.api_fixtures", "tests.ws_fixtures", "tests.browser_fixtures"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a throw-away redis-server (no RDB, no AOF) on loopback; return the process and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return proc, f"redis://127.0.0.1:{port}/0"
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        # Lost the port to someone else (or slow start): stop this one and try another port.
        stop_redis(proc)
    raise RuntimeError("could not start redis-server on a free port")


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Stop a redis-server started by :func:`start_redis`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (redis://127.0.0.1:PORT/0) of a real redis-server that lives for the test session."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        stop_redis(proc)
