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
pytest_plugins = [
    "tests.api_fixtures",
    "tests.ws_fixtures",
    "tests.browser_fixtures",
    "tests.pool_fixtures",
    "tests.stuck_tasks",
]


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


def start_redis_cluster(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """Start a throw-away three-master Redis Cluster on loopback; return its processes and a redis+cluster:// URL."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.skip("redis-server / redis-cli not found (apt-get install redis-server)")
    for attempt in range(3):
        base = workdir / f"try{attempt}"
        base.mkdir(parents=True, exist_ok=True)
        # The cluster bus port is given explicitly: the default (port + 10000) may be above 65535.
        ports = [(free_port(), free_port()) for _ in range(3)]
        procs = [
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--cluster-port",
                    str(bus),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    f"nodes-{port}.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(base),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port, bus in ports
        ]
        if _cluster_up(cli, [port for port, _ in ports], procs):
            return procs, f"redis+cluster://127.0.0.1:{ports[0][0]}"
        stop_redis_cluster(procs)
    raise RuntimeError("could not start a three-node Redis Cluster on free ports")


def _cluster_up(cli: str, ports: list[int], procs: list[subprocess.Popen[bytes]]) -> bool:
    """Wait for the three servers, join them as masters, and wait until each says cluster_state:ok."""
    clients = [redis.Redis(host="127.0.0.1", port=p, socket_connect_timeout=0.5) for p in ports]
    try:
        deadline = time.monotonic() + 10
        pending = list(clients)
        while pending and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            try:
                pending[0].ping()
                pending.pop(0)
            except redis.ConnectionError:
                time.sleep(0.05)
        if pending:
            return False
        create = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            return False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(_cluster_state(c) == "ok" for c in clients):
                return True
            time.sleep(0.1)
        return False
    finally:
        for c in clients:
            c.close()


def _cluster_state(client: redis.Redis) -> str:
    """The ``cluster_state`` line of one node's CLUSTER INFO."""
    info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    if isinstance(info, dict):
        return str(info.get("cluster_state", ""))
    text = info.decode() if isinstance(info, bytes) else str(info)
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("cluster_state:")), "")


def stop_redis_cluster(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop every server of a cluster started by :func:`start_redis_cluster`."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        stop_redis(proc)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL (redis+cluster://127.0.0.1:PORT) of a real three-master Redis Cluster that lives for the test session."""
    procs, url = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield url
    finally:
        stop_redis_cluster(procs)
