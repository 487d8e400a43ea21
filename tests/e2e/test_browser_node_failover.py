"""A media node is killed (``kill -9``) in the middle of a hearing held in browsers: the hearing goes on, on the other
node, and the judge's camera is still published in simulcast layers.

Separate OS processes on loopback (:mod:`tests.topology`): redis-server, two ``courtlink media-node``, one
``courtlink recorder`` and one ``courtlink signaling``. Two Chromium pages: the judge (a 1024x600 terminal,
English, publishing its fake 640x480 camera in layers) and an observer (zh-CN, a large window). Once the observer
decodes the judge's camera, the node the hearing is placed on gets SIGKILL, as a crash would. Its record lapses
(the node TTL), signaling tells both pages ``media_restart`` and places the hearing on the other node; each page
offers afresh on a new peer connection. The test asserts that the observer decodes the judge's camera again from
the surviving node, and that the judge's new connection publishes its camera in two layers again (the new node's
answer negotiated simulcast: a node answer without it would drop Chromium to one layer). The time from the kill to
the judge's camera decoding again is printed (``FAILOVER-BROWSER``) beside issue 8's goal, 10 s after the loss is
detected; it is not asserted (tests assert no wall-clock times: the wait is bounded, ``BACK_WITHIN``). Screenshots go
to artifacts/browser/node-failover/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_fixtures import Server, book_hearing
from tests.conftest import free_port
from tests.serve_process import clean_env
from tests.topology import CLUSTER_SECRET, Proc, courtlink, redis_proc
from tests.ws_fixtures import ADMIN_KEY, TOKEN_SECRET

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

BACK_WITHIN = 90.0
"""Seconds the judge's camera has to decode again at the observer after the kill: the node TTL (6 s), the pool's
check, a new offer and ICE, on a shared machine (the figure is printed)."""


@dataclass
class Cluster:
    """The running processes."""

    signaling: Proc
    url: str
    nodes: dict[str, Proc]
    folder: Path


@contextmanager
def cluster(folder: Path) -> Iterator[Cluster]:
    """Redis, two media nodes (one region), a recorder and a signaling process; all stopped afterwards."""
    with ExitStack() as stack:
        procs: list[Proc] = []
        stack.callback(lambda: [p.stop() for p in reversed(procs)])

        def started(proc: Proc) -> Proc:
            proc.start(60)
            procs.append(proc)
            return proc

        redis_port = free_port()
        started(redis_proc(folder / "redis", redis_port))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"

        def env(**extra: str) -> dict[str, str]:
            return clean_env(
                {
                    "COURTLINK_REDIS_URL": redis_url,
                    "COURTLINK_CLUSTER__SECRET": CLUSTER_SECRET,
                    "COURTLINK_LOG_LEVEL": "info",
                    "COURTLINK_LOG_FORMAT": "json",
                    **extra,
                }
            )

        nodes: dict[str, Proc] = {}
        for node_id in ("node-a", "node-b"):
            nodes[node_id] = started(
                Proc(
                    f"media-node {node_id}",
                    courtlink("media-node", "--node-id", node_id),
                    folder / f"{node_id}.log",
                    env=env(COURTLINK_MEDIA__ANNOUNCE_ADDRESSES='["127.0.0.1"]', COURTLINK_MEDIA__FRAME_PORT="0"),
                    ready=re.compile(rf"courtlink: media node {node_id} ready"),
                )
            )
        started(
            Proc(
                "recorder rec-1",
                courtlink("recorder", "--recorder-id", "rec-1", "--data-dir", str(folder / "rec-1")),
                folder / "rec-1.log",
                env=env(),
                ready=re.compile(r"courtlink: recorder rec-1 ready"),
            )
        )
        signaling = started(
            Proc(
                "signaling",
                courtlink("signaling", "--port", "0", "--data-dir", str(folder / "signaling")),
                folder / "signaling.log",
                env=env(COURTLINK_ADMIN_KEY=ADMIN_KEY, COURTLINK_TOKENS__SECRET=TOKEN_SECRET),
                ready=re.compile(r"courtlink: signaling \S+ ready at (https?://\S+)"),
            )
        )
        assert signaling.match is not None
        yield Cluster(signaling=signaling, url=signaling.match.group(1).rstrip("/"), nodes=nodes, folder=folder)


def judge_camera(p: Participants, page: Page, judge_id: str) -> dict[str, Any]:
    """The inbound stats of the judge's camera at ``page`` (empty before it arrives)."""
    for s in p.inbound(page):
        if s["participant_id"] == judge_id and s.get("source") == "camera" and s["kind"] == "video":
            return s
    return {}


def layers(judge: Page) -> dict[str, dict[str, Any]]:
    """The judge's outbound camera streams by rid (simulcast layers)."""
    sent: list[dict[str, Any]] = judge.evaluate("() => window.courtlink.outbound()")
    return {str(s["rid"]): s for s in sent if s["kind"] == "video" and s.get("rid")}


def facts(log: Path, event: str) -> list[dict[str, Any]]:
    """A process's JSON log lines of one event."""
    out: list[dict[str, Any]] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def placement(server: Server, hearing_id: str) -> tuple[str, str]:
    """The hearing's node and why it is there (``GET /api/v1/hearings/{id}``, ``placement``)."""
    status, body = server.request("GET", f"/api/v1/hearings/{hearing_id}")
    assert status == 200, body
    shown = body["placement"]
    assert shown is not None, body
    return str(shown["node_id"]), str(shown["reason"])


@pytest.mark.timeout(420)
def test_a_media_node_killed_mid_hearing_the_browsers_go_on_on_the_other_in_layers(
    tmp_path: Path, participants: Participants
) -> None:
    """kill -9 of the hearing's media node: both pages restart their media on the surviving node, the observer
    decodes the judge's camera again, and the judge publishes it in simulcast layers again."""
    with cluster(tmp_path) as c:
        server = Server(
            base_url=c.url,
            admin_key=ADMIN_KEY,
            data_dir=tmp_path / "signaling",
            log_path=c.signaling.log,
            process=c.signaling.proc,  # type: ignore[arg-type]
        )
        booking = book_hearing(server, [("Wang Fang", "judge", "court"), ("Zhao Lei", "observer", "remote")])
        judge_id = booking.ids["judge"]
        judge = participants.open(booking.links["judge"], viewport=(1024, 600))
        participants.join(judge)
        judge.wait_for_selector("body[data-view=hearing]")
        judge.get_by_role("button", name="Open the courtroom").click()
        judge.wait_for_selector("#hearing-state[data-state=open]")
        observer = participants.open(booking.links["observer"], locale="zh-CN", viewport=(1280, 800))
        participants.join(observer)
        observer.wait_for_selector("body[data-view=lobby]", timeout=60_000)
        judge.get_by_role("button", name=f"Admit {booking.names['observer']}").click()
        observer.wait_for_selector("body[data-view=hearing]", timeout=60_000)

        def decoded() -> int:
            return int(judge_camera(participants, observer, judge_id).get("framesDecoded", 0))

        participants.wait_until(lambda: decoded() > 20, timeout=60, what="the observer decoding the judge")
        participants.wait_until(lambda: len(layers(judge)) >= 2, timeout=30, what="the judge publishing in layers")
        dead, _ = placement(server, booking.hearing_id)
        survivor = next(n for n in c.nodes if n != dead)
        shots = participants.artifacts("node-failover")
        judge.screenshot(path=str(shots / "judge-before.png"))

        restarts = (participants.state(judge).get("media_restarts", 0), participants.state(observer)["media_restarts"])
        c.nodes[dead].kill()
        killed_at = time.monotonic()

        def restarted(page: Page, before: int) -> bool:
            return int(participants.state(page).get("media_restarts", 0)) > before

        try:
            participants.wait_until(
                lambda: restarted(judge, restarts[0]) and restarted(observer, restarts[1]) and decoded() > 20,
                timeout=BACK_WITHIN,
                what="the observer decoding the judge again after the node died",
            )
        except pytest.fail.Exception:
            print(f"judge: {participants.state(judge)}\nobserver: {participants.state(observer)}")
            print(f"observer inbound: {participants.inbound(observer)}\n{c.signaling.tail(60)}")
            raise
        back = time.monotonic() - killed_at
        participants.wait_until(
            lambda: len(layers(judge)) >= 2, timeout=30, what="the judge publishing in layers on the new node"
        )
        print(
            f"\nFAILOVER-BROWSER judge's camera decoding again {back:.1f} s after kill -9 of {dead} "
            "(issue 8's goal: 10 s after the loss is detected, the node TTL 6 s); "
            f"judge's layers now {sorted(layers(judge))}; "
            f"signals judge {dict(participants.signal_counts(judge))}"
        )
        assert placement(server, booking.hearing_id) == (survivor, "failover")
        # The surviving node received the judge's camera as layers (not one stream).
        published = [f for f in facts(c.nodes[survivor].log, "track_published") if f.get("kind") == "video"]
        assert any(f["participant_id"] == judge_id and len(f.get("layers") or ()) >= 2 for f in published), published
        assert participants.signal_counts(judge)["recv:media_restart:node_lost"] >= 1
        assert participants.signal_counts(observer)["recv:media_restart:node_lost"] >= 1
        for page, name in ((judge, "judge"), (observer, "observer")):
            page.screenshot(path=str(shots / f"{name}-after.png"))
        participants.close()  # before the processes stop: the pages would only try to reconnect
