"""``courtlink media-node`` as a real OS process on Redis, driven from this process through RemoteNode."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import structlog

from protocol.cluster import HEARTBEAT_SECONDS, NODE_TTL_SECONDS, NodeRecord, node_record_key
from protocol.node import Ack, PeerHealth, PeerState, PeerStateChanged, Refused, SetPublishing, SetReceiving
from rooms.backends import open_bus
from rooms.bus import Bus, Records
from rooms.model import Role, Source
from signaling.remote_node import RemoteNode
from tests.bus_fixtures import pings, redis_with_aof, until
from tests.conftest import free_port, stop_redis
from tests.media_clients import MediaClient, eventually, hearing
from tests.node_process import MediaNodeProcess
from tests.serve_process import clean_env

HEARING = "hrg_node_process"
log = structlog.get_logger("test")


@pytest.mark.redis
async def test_a_media_node_process_carries_a_hearing_and_leaves_the_registry_when_killed(redis_server: str) -> None:
    """A node in its own process negotiates and forwards media for peers driven over Redis, reports their state and
    health, and once killed -9 its registry record lapses and commands to it are refused node_unreachable."""
    node_id = f"n-{uuid.uuid4().hex[:8]}"
    node = MediaNodeProcess(redis_server, node_id, region="east")
    node.start()
    bus, records = await open_bus(redis_server, process_id="test-signaling")
    remote = RemoteNode(bus, node_id, attempt_seconds=2, retries=2)
    try:
        raw = await records.get(node_record_key(node_id))
        assert raw is not None, "the node is in the registry once it says it is ready"
        assert NodeRecord.model_validate_json(raw).region == "east"
        await remote.start()
        async with hearing(remote, HEARING) as sig:
            judge, defendant = MediaClient("judge", tag=1), MediaClient("defendant", tag=2)
            started = time.monotonic()
            await sig.join(judge, Role.judge)
            await sig.join(defendant, Role.defendant)
            for who, other in (("judge", "defendant"), ("defendant", "judge")):
                sources = (Source.camera, Source.microphone)
                await remote.call(SetPublishing(hearing_id=HEARING, participant_id=who, sources=sources))
                await remote.call(SetReceiving(hearing_id=HEARING, participant_id=who, publishers=(other,)))
            assert await eventually(lambda: judge.frames("video") >= 10 and defendant.frames("video") >= 10, 30)
            first_media = time.monotonic() - started
            assert await eventually(lambda: judge.rtp_packets("audio") >= 20 and defendant.rtp_packets("audio") >= 20)
            assert await eventually(lambda: any(isinstance(e, PeerHealth) for e in sig.events), 10)
            connected = {
                e.participant_id
                for e in sig.events
                if isinstance(e, PeerStateChanged) and e.state == PeerState.connected
            }
            assert connected == {"judge", "defendant"}
            health = [e for e in sig.events if isinstance(e, PeerHealth) and e.participant_id == "judge"]
            assert health[-1].connection == PeerState.connected
            assert sig.failures == []

            async def loaded() -> NodeRecord | None:
                raw = await records.get(node_record_key(node_id))
                return NodeRecord.model_validate_json(raw) if raw else None

            record: NodeRecord | None = None
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                record = await loaded()
                if record is not None and record.peers == 2 and record.packets_per_second > 0:
                    break
                await asyncio.sleep(0.5)
            assert record is not None
            assert (record.peers, record.rooms) == (2, 1)
            assert record.packets_per_second > 0
            assert record.cpu > 0

            node.kill()
            killed = time.monotonic()
            lapsed: float | None = None
            while time.monotonic() - killed < 3 * NODE_TTL_SECONDS:
                if await records.get(node_record_key(node_id)) is None:
                    lapsed = time.monotonic() - killed
                    break
                await asyncio.sleep(0.1)
            assert lapsed is not None, "the killed node's record did not lapse"
            asked = time.monotonic()
            reply = await remote.call(SetReceiving(hearing_id=HEARING, participant_id="judge"))
            refused_after = time.monotonic() - asked
            assert isinstance(reply, Refused)
            assert reply.code == "node_unreachable"
        figures = {
            "first_media_seconds": round(first_media, 3),
            "packets_per_second": record.packets_per_second,
            "cpu": record.cpu,
            "record_lapsed_after_kill_seconds": round(lapsed, 3),
            "node_unreachable_after_seconds": round(refused_after, 3),
        }
        log.info("media_node_process_figures", **figures)
        print(f"media node process figures: {figures}")
    finally:
        node.kill()
        await remote.close()
        await bus.close()
        await records.close()


@pytest.mark.redis
async def test_a_media_node_stopped_with_sigterm_leaves_the_registry_at_once(redis_server: str) -> None:
    """SIGTERM: the node exits 0 and its record is gone right away, not after its TTL."""
    node_id = f"n-{uuid.uuid4().hex[:8]}"
    node = MediaNodeProcess(redis_server, node_id)
    node.start()
    bus, records = await open_bus(redis_server, process_id="test-signaling")
    try:
        assert await records.get(node_record_key(node_id)) is not None
        assert node.stop() == 0
        assert await records.get(node_record_key(node_id)) is None
    finally:
        node.kill()
        await bus.close()
        await records.close()


@pytest.mark.redis
async def test_a_media_node_process_carries_on_after_a_redis_restart(tmp_path: Path) -> None:
    """Redis restarted under a running node (same port, AOF): its record comes back, it answers commands again and
    its events reach signaling, with nobody restarting anything."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis_proc = redis_with_aof(tmp_path / "aof", port)
    node_id = f"n-{uuid.uuid4().hex[:8]}"
    node = MediaNodeProcess(url, node_id)
    opened: list[Bus | Records] = []
    try:
        assert await until(lambda: pings(url), 10) is not None
        node.start()
        bus, records = await open_bus(url, process_id="test-signaling")
        opened += [bus, records]
        remote = RemoteNode(bus, node_id, attempt_seconds=1, retries=2)
        await remote.start()
        assert await remote.call(SetReceiving(hearing_id="h", participant_id="p")) == Ack()

        stop_redis(redis_proc)
        restarted, restarted_wall = time.monotonic(), time.time()
        redis_proc = redis_with_aof(tmp_path / "aof", port)

        async def answers() -> bool:
            return await remote.call(SetReceiving(hearing_id="h", participant_id="p")) == Ack()

        answered = await until(answers, 30)
        assert answered is not None, "the node did not answer after Redis came back"

        async def registered() -> bool:
            raw = await records.get(node_record_key(node_id))
            # Written after the restart (the AOF brings back the one from before, too).
            return raw is not None and NodeRecord.model_validate_json(raw).heartbeat_at > restarted_wall

        assert await until(registered, 3 * HEARTBEAT_SECONDS) is not None, "no heartbeat after Redis came back"
        figures = {
            "commands_answered_after_restart_seconds": round(answered, 3),
            "fresh_heartbeat_after_restart_seconds": round(time.monotonic() - restarted, 3),
        }
        log.info("media_node_redis_restart_figures", **figures)
        print(f"media node after a redis restart: {figures}")
        await remote.close()
        assert node.stop() == 0
    finally:
        node.kill()
        for closing in opened:
            await closing.close()
        stop_redis(redis_proc)


def test_media_node_without_redis_url_exits_2_with_one_line(tmp_path: Path) -> None:
    """An operator who forgot redis_url gets exit code 2 and one line saying what is missing."""
    done = subprocess.run(
        [sys.executable, "-m", "courtlink.cli", "media-node"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "courtlink: media-node needs redis_url (the Redis its signaling processes use): set redis_url in the "
        "settings file or COURTLINK_REDIS_URL"
    ]
