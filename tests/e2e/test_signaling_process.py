"""``courtlink signaling`` as a real OS process on Redis, placing hearings on ``courtlink media-node`` processes.

Real redis-server, one signaling process and two media-node processes (regions east and west) on loopback, real
aiortc clients in this process over the signaling process's WebSocket. The west node is killed -9 in the middle
of the hearing: its record lapses and the hearing moves to the east node; the time from the kill to media back
for everyone is printed (``-s``) beside the issue's goal of 10 s, not asserted (the wait is bounded, 90 s).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import aioice.ice
import pytest

from rooms.store import Store
from tests.node_process import MediaNodeProcess
from tests.pool_fixtures import book_in, placement
from tests.serve_process import ChildHandle, clean_env, launch_child
from tests.ws_fixtures import ADMIN_KEY, TOKEN_SECRET, Court, Participant, eventually

pytestmark = pytest.mark.redis

READY = re.compile(r"courtlink: signaling \S+ ready at (https?://\S+)")


@dataclass
class SignalingProcess(ChildHandle):
    """A ``courtlink signaling`` child process; ``start`` waits for its ready line."""

    redis_url: str
    data_dir: Path
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> str:
        """Start it on a free port and return its URL."""
        env = clean_env(
            {
                "COURTLINK_REDIS_URL": self.redis_url,
                "COURTLINK_ADMIN_KEY": ADMIN_KEY,
                "COURTLINK_TOKENS__SECRET": TOKEN_SECRET,
                "COURTLINK_LOG_LEVEL": "warning",
            }
        )
        self.proc, match = launch_child(
            ["signaling", "--port", "0", "--data-dir", str(self.data_dir)],
            env,
            READY,
            self.output,
            timeout=timeout,
            what="courtlink signaling",
        )
        self.url = match.group(1)
        return self.url


@pytest.fixture
def topology(redis_server: str, tmp_path: Path) -> Iterator[tuple[SignalingProcess, dict[str, MediaNodeProcess]]]:
    """One signaling process and two media-node processes (east, west) on the session's Redis."""
    tag = uuid.uuid4().hex[:6]
    nodes = {
        region: MediaNodeProcess(redis_server, f"{region}-{tag}", region=f"{region}-{tag}")
        for region in ("east", "west")
    }
    sig = SignalingProcess(redis_server, tmp_path / "signaling")
    try:
        for node in nodes.values():
            node.start()
        sig.start()
        yield sig, nodes
    finally:
        code = sig.stop()
        for node in nodes.values():
            node.stop()
        assert code == 0, "".join(sig.output)


def test_signaling_without_redis_url_exits_2_with_one_line(tmp_path: Path) -> None:
    """`courtlink signaling` without redis_url refuses to start: exit 2, one line naming redis_url."""
    done = subprocess.run(
        [sys.executable, "-m", "courtlink.cli", "signaling", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("courtlink: signaling needs redis_url")


@pytest.mark.timeout(300)
async def test_a_hearing_runs_on_a_media_node_process_and_moves_when_it_is_killed(
    topology: tuple[SignalingProcess, dict[str, MediaNodeProcess]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through `courtlink signaling`: the nodes are listed, a west hearing is placed on the west node and media
    flows; kill -9 of that node moves everyone to the east node (media_restart node_lost) and media flows again."""
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 60)
    sig, nodes = topology
    east, west = nodes["east"], nodes["west"]
    async with aiohttp.ClientSession() as http:
        court = Court(sig.url, http, cast(Store, None), cast(Any, None), cast(Any, None))
        try:
            status, body = await court.rest("GET", "/api/v1/nodes")
            assert status == 200, body
            listed = {n["id"]: n for n in body["items"]}
            assert {east.node_id, west.node_id} <= set(listed)
            assert listed[west.node_id]["region"] == west.region
            b = await book_in(court, west.region, ("judge", "clerk", "prosecutor"))
            people: dict[str, Participant] = {}
            for i, name in enumerate(("judge", "clerk", "prosecutor")):
                people[name] = await court.participant(name, b.tokens[name], tag=i + 1, count_only=True, loud=False)
            reply = await people["judge"].client.request("admit", "roster", participant_id=b.ids["prosecutor"])
            assert reply["type"] == "roster", reply
            for action in ("open", "start"):
                reply = await people["judge"].client.request("session", "state", action=action)
                assert reply["type"] == "state", reply
            for p in people.values():
                await p.start_media()

            def flowing(name: str) -> bool:
                return all(people[name].packets_from(people[o].id, "audio") > 0 for o in people if o != name)

            assert await eventually(lambda: all(flowing(n) for n in people), 60.0)
            shown = await placement(court, b.hearing_id)
            assert shown is not None
            assert (shown["node_id"], shown["reason"]) == (west.node_id, "region")

            loop = asyncio.get_running_loop()
            killed = loop.time()
            west.kill()
            back: dict[str, float] = {}

            def all_back() -> bool:
                for name, p in people.items():
                    if name not in back and p.media.resets >= 1 and flowing(name):
                        back[name] = loop.time() - killed
                return len(back) == len(people)

            assert await eventually(all_back, 90.0, step=0.05), {
                n: (p.restarts, p.failures) for n, p in people.items() if n not in back
            }
            print(
                f"\nFAILOVER_PROCESS kill -9 of the media node -> media back for all {len(people)} in "
                f"{max(back.values()):.1f}s (first {min(back.values()):.1f}s; the issue's goal: 10 s)"
            )
            for name, p in people.items():
                assert [r for _, r in p.restarts] == ["node_lost"], (name, p.restarts)
                assert not p.failures, (name, p.failures)
            shown = await placement(court, b.hearing_id)
            assert shown is not None
            assert (shown["node_id"], shown["reason"], shown["previous_node_id"]) == (
                east.node_id,
                "failover",
                west.node_id,
            )
        finally:
            await asyncio.gather(*(p.close() for p in court.participants), return_exceptions=True)
