"""``courtlink recorder`` as its own OS process: it follows a hearing over Redis, takes frames over the frame pipe,
is killed with SIGKILL mid-session, is started again and continues; the hearing still verifies.

Signaling (the session hub, on a Redis store), the media node and its frame pipe run in the test process; the
recorder runs as ``python -m courtlink.cli recorder`` with only ``redis_url``, a data dir and the cluster secret.
The hearing's placement and the node's record (its frame address) are written as the placement and bus parts
write them. Needs ``rooms.backends.open_bus`` (part bus) and the frame pipe (part framepipe): skipped, saying so,
until they are on the branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.cluster import NodeRecord, Placement, node_record_key, placement_key, recorder_record_key
from recorder.hearing_chain import verify_hearing
from recorder.trust import data_dir_keys
from rooms.backends import open_store
from rooms.bus import Bus, Records
from signaling.app import create_app
from signaling.recorder_bus import BusRecordingDirectory, RecorderBusServer
from signaling.ws import WsSettings, ws_registrar
from tests.conftest import start_redis, stop_redis
from tests.e2e.test_recording_e2e import manifest, seat, session
from tests.serve_process import clean_env
from tests.ws_fixtures import WAIT, Court, ws_config

SECRET = "recorder-process-test-secret-0123456789"
RECORDER_ID = "rec-proc"


def parts() -> tuple[Any, Any]:
    """``rooms.backends.open_bus`` and ``media.frame_pipe.FramePipeServer``, or a skip naming what is missing."""
    open_bus = getattr(importlib.import_module("rooms.backends"), "open_bus", None)
    if open_bus is None:
        pytest.skip("rooms.backends.open_bus (part bus of issue 10) is not on this branch yet")
    try:
        pipe = importlib.import_module("media.frame_pipe")
        importlib.import_module("recorder.frame_pipe")
    except ImportError:
        pytest.skip("the frame pipe (part framepipe of issue 10) is not on this branch yet")
    return open_bus, pipe.FramePipeServer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module alone: the store and the bus of signaling and the recorder."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis-recorder-process"))
    try:
        yield url
    finally:
        stop_redis(proc)


class RecorderProcess:
    """A ``courtlink recorder`` child process; ``start`` waits for its ready line."""

    def __init__(self, data_dir: Path, redis_url: str) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60) -> None:
        env = clean_env(
            {
                "COURTLINK_REDIS_URL": self.redis_url,
                "COURTLINK_CLUSTER__SECRET": SECRET,
                "COURTLINK_RECORDER__SEGMENT_SECONDS": "2",
                "COURTLINK_LOG_LEVEL": "warning",
            }
        )
        cmd = [sys.executable, "-m", "courtlink.cli", "recorder", "--recorder-id", RECORDER_ID]
        cmd += ["--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        ready = threading.Event()
        stdout = self.proc.stdout
        assert stdout is not None

        def drain() -> None:
            with contextlib.suppress(ValueError, OSError):
                for line in stdout:
                    self.output.append(line)
                    if "ready" in line and line.startswith("courtlink: recorder"):
                        ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.is_set():
            assert self.proc.poll() is None, "".join(self.output)
            assert time.monotonic() < deadline, "".join(self.output)
            ready.wait(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as an operator stops it; its exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return 0 if proc is None else int(proc.returncode)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return int(proc.returncode)


async def _serve(app: Any) -> tuple[Any, str]:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@pytest.fixture
async def redis_court(tmp_path: Path, redis_url: str) -> AsyncIterator[Court]:
    """The WebSocket fixtures' court, but on the Redis store the recorder process reads too."""
    store = await open_store(redis_url, tmp_path / "store")
    node = InProcessNode(NodeSettings(announce_addresses=("127.0.0.1",)))
    app = create_app(ws_config(), store, registrars=[ws_registrar(node, WsSettings(resume_grace_seconds=30))])
    runner, base = await _serve(app)
    http = aiohttp.ClientSession()
    court = Court(base, http, store, node, app)
    try:
        yield court
    finally:
        for p in court.participants:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(p.close(), 20)
        await http.close()
        await runner.cleanup()
        await node.close()
        await store.close()


async def test_a_killed_recorder_process_is_restarted_and_the_hearing_still_verifies(
    redis_court: Court, redis_url: str, tmp_path: Path
) -> None:
    """courtlink recorder records a hearing over Redis and the frame pipe; after SIGKILL a restart continues it
    with a recorder_restart gap (measured), the hearing's archive verifies and signaling lists it over the bus."""
    open_bus, pipe_server = parts()
    court = redis_court
    opened = open_bus(redis_url, process_id="sig-1")
    bus, records = cast(tuple[Bus, Records], await opened if inspect.isawaitable(opened) else opened)
    server = RecorderBusServer(court.hub, bus, records, process_id="sig-1")
    await server.start()
    pipe = pipe_server(court.node, "127.0.0.1", 0, secret=SECRET)
    address = await pipe.start()
    recorder = RecorderProcess(tmp_path / "recorder-data", redis_url)
    try:
        booking = await court.book(("judge", "defendant", "counsel"))
        hid = booking.hearing_id
        now = time.time()
        node = NodeRecord(id="n1", capacity_peers=50, frame_address=address, started_at=now, heartbeat_at=now)
        await records.put(node_record_key("n1"), node.model_dump_json().encode(), ttl=600)
        placed = Placement(hearing_id=hid, node_id="n1", reason="region", placed_at=now)
        await records.put(placement_key(hid), placed.model_dump_json().encode())
        await asyncio.to_thread(recorder.start)
        assert await records.get(recorder_record_key(RECORDER_ID)) is not None

        people = await seat(court, booking, ("judge", "defendant", "counsel"))
        judge = people["judge"]
        await session(judge, "open")
        await session(judge, "start")
        await judge.client.expect("recording", lambda m: m["status"] == "recording")
        await asyncio.sleep(4.0)

        recorder.kill()
        killed = time.time()
        judge.client.skip_unread()
        await asyncio.to_thread(recorder.start)
        restarted = time.time()
        await judge.client.expect("recording", lambda m: m["status"] == "recording", within=WAIT)
        recording_again = time.time() - killed
        await asyncio.sleep(4.0)
        await session(judge, "adjourn")
        await judge.client.close_code()

        hearing_dir = tmp_path / "recorder-data" / "recordings" / hid
        dirs = sorted(p.parent for p in hearing_dir.glob("*/*/manifest.jsonl"))
        assert len(dirs) == 2, dirs
        first, second = manifest(dirs[0]), manifest(dirs[1])
        assert first[-1]["type"] == "seal", first[-1]
        assert first[-1]["state"] == "interrupted", first[-1]
        (gap,) = [g for g in second if g["type"] == "gap" and g["reason"] == "recorder_restart"]
        starts = [float(s["start"]) for s in second if s["type"] == "segment"]
        assert starts, "the restarted recorder recorded nothing"
        first_media = min(starts)
        print(
            f"recorder process restart: ready {restarted - killed:.2f} s after SIGKILL, `recording` again after "
            f"{recording_again:.2f} s, restart gap {gap['end'] - gap['start']:.2f} s, first new media "
            f"{first_media - killed:.2f} s after SIGKILL (the issue's goal: 5 s; printed, not asserted: tests assert "
            "no wall-clock times)"
        )
        chain = await asyncio.to_thread(
            verify_hearing, hearing_dir, trusted_keys=data_dir_keys(tmp_path / "recorder-data")
        )
        assert chain.ok, chain.as_dict()

        listed = await BusRecordingDirectory(bus, records).recordings(hid)
        assert [r.state for r in listed] == ["interrupted", "sealed"], listed
        assert all(r.verification is not None and r.verification["ok"] for r in listed), listed

        # SIGTERM: a clean stop, and the recorder withdraws its record (signaling waits for it no more).
        assert recorder.stop() == 0, "".join(recorder.output)
        assert await records.get(recorder_record_key(RECORDER_ID)) is None
    finally:
        recorder.stop()
        await pipe.close()
        await server.close()
        await bus.close()
        await records.close()
