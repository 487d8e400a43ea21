"""``courtlink recorder``: refuses to start without Redis, announces itself on the bus, withdraws when stopped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from courtlink.recorder_process import run_recorder
from courtlink.settings import Settings
from media.node import InProcessNode
from media.settings import NodeSettings
from protocol.cluster import recorder_record_key
from protocol.recorder import RecorderRecord
from recorder.service import RecordingService
from rooms.backends import open_store
from rooms.bus import InProcessBus, InProcessRecords
from signaling.recorder_bus import BusRecordingDirectory
from tests.serve_process import clean_env


def test_recorder_command_without_redis_url_exits_2_with_one_line(tmp_path: Path) -> None:
    """`courtlink recorder` with no redis_url exits 2 and says in one line what it needs."""
    out = subprocess.run(
        [sys.executable, "-m", "courtlink.cli", "recorder", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("courtlink: recorder needs redis_url"), lines


async def test_recorder_announces_itself_answers_the_directory_and_withdraws(tmp_path: Path) -> None:
    """A running recorder has a live recorder.<id> record, serves its keys over the bus, and deletes the record
    when it stops (signaling stops waiting for it at adjournment)."""
    settings = Settings(data_dir=tmp_path / "data")
    store = await open_store(None, tmp_path / "store")
    bus, records = InProcessBus(), InProcessRecords()
    node = InProcessNode(NodeSettings(announce_addresses=("127.0.0.1",)))
    stop = asyncio.Event()
    started: list[RecordingService] = []
    runner = asyncio.ensure_future(
        run_recorder(
            settings,
            "rec-east",
            store=store,
            bus=bus,
            records=records,
            frames=node,
            stop=stop.wait(),
            ready=started.append,
        )
    )
    try:
        for _ in range(200):
            if started:
                break
            await asyncio.sleep(0.05)
        assert started, "the recorder never said it was ready"
        raw = await records.get(recorder_record_key("rec-east"))
        assert raw is not None
        assert RecorderRecord.model_validate_json(raw).id == "rec-east"
        keys = await BusRecordingDirectory(bus, records).public_keys()
        assert [k.recorder_id for k in keys] == ["rec-east"], keys
        assert await BusRecordingDirectory(bus, records).recordings("h-none") == []
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        await node.close()
        await store.close()
    assert await records.get(recorder_record_key("rec-east")) is None
