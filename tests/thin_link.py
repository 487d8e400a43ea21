"""A hearing behind a real thin link, for the thin-link tests and ``bench/thin_link.py``.

Two network namespaces joined by a veth pair (:func:`tests.netns.veth_link`): the *node* side runs ``courtlink
serve`` (listening, and announcing ICE candidates, on its veth address) and the court-side people (one child
process, ``tests/thin_link_client.py court``: judge, prosecutor, counsel and witness, each encoding 640x360 VP8 at
15 fps, about 1.2 Mbit/s, plus Opus); the *defendant* side runs the defendant's client (another child process,
``... defendant``), which decodes everything. The defendant's downlink is the node-side veth's egress: shaped with
``tc tbf`` and nftables random loss (:func:`tests.netns.shape`), never netem. Both client processes print counts
once a second; :meth:`ThinLinkHearing.window` turns two moments into what each person received in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_recording_e2e import start_server, stop_server
from tests.netns import Link, Shape, enter_netns, netns_thread, qdisc_counts, shape, unshape, veth_link
from tests.serve_process import ServeProcess
from tests.thin_link_client import COURT_SIDE, STALL
from tests.ws_fixtures import ADMIN_KEY

NODE_ADDRESS, DEFENDANT_ADDRESS = "10.78.0.1", "10.78.0.2"
ROOT = Path(__file__).resolve().parent.parent
SETUP_WITHIN = 90.0
"""Seconds for the hearing to be seated with every flow running (a bound, never asserted as a duration)."""
LOG_FACTS = (
    "subscriber_video_paused",
    "subscriber_video_resumed",
    "subscriber_link_remembered",
    "publisher_bitrate_capped",
    "keyframe",
    "probe_started",
    "probe_failed",
    "probe_succeeded",
    "node_loop_lagged",
)
"""Server log events counted per window (structlog facts the node logs per change, never per packet)."""


class Child:
    """A client process: its JSON lines (parsed), its other output, and its CPU time."""

    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, name=f"{name}-output", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for text in self.proc.stdout:
                line = None
                if text.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):
                        line = json.loads(text)
                with self._arrived:
                    if line is None:
                        self.other.append(text)
                    elif "event" in line:
                        self.events.append(line)
                    else:
                        self.lines.append(line)
                    self._arrived.notify_all()

    def wait_for(self, check: Callable[[], bool], within: float, what: str) -> None:
        """Wait until ``check`` holds (it reads this child's lines); fail naming ``what`` and the child's output."""
        deadline = time.monotonic() + within
        with self._arrived:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "".join(self.other[-40:])
                    raise AssertionError(f"{self.name}: {what} (exit {self.proc.poll()}):\n{tail}")
                self._arrived.wait(min(left, 1.0))

    def event(self, name: str, within: float) -> dict[str, Any]:
        """The first ``{"event": name}`` line, waiting for it."""
        self.wait_for(lambda: any(e["event"] == name for e in self.events), within, f"no {name!r} event")
        return next(e for e in self.events if e["event"] == name)

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) the process and its children (the court's ``seat`` process)
        used so far."""
        return sum(cpu_seconds(pid) for pid in process_tree(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


NODE_COUNTERS = ("nack", "resen", "retransmi", "rtx", "paus", "keyframe", "remb", "estimate", "capped")
"""Words of the server's Prometheus metric names counted per window, whatever the node exports of them."""


def node_counters(url: str) -> dict[str, float]:
    """The server's ``/metrics`` samples whose name holds one of :data:`NODE_COUNTERS`, summed over labels
    (empty when unreachable)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.endswith("_created") or not any(word in name for word in NODE_COUNTERS):
            continue
        with contextlib.suppress(ValueError, IndexError):
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (``/proc/<pid>/task/<tid>/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


def launch(name: str, args: list[str]) -> Child:
    """Start ``python -m tests.thin_link_client ARGS`` (in the calling thread's network namespace)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.thin_link_client", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Child(name, proc)


# --- what a window of time held ----------------------------------------------------------------------------------


@dataclass
class FlowWindow:
    """One receiver's reception of one publisher's audio or video over a window."""

    seconds: float
    packets: int = 0
    span: int = 0
    frames: int = 0
    garbled: int = 0
    held: int = 0
    """Frames received but not decoded while waiting for a keyframe after a loss."""
    stall: float = 0.0
    """The longest stretch without a good frame inside the window (clipped to it); 0: none over STALL."""
    rtx: int = 0
    filled: int = 0
    late: int = 0
    """Audio resends that came too late to play (``tests.thin_link_client.AUDIO_PLAYOUT``): in ``packets``, not kept."""
    dup: int = 0
    nacks: int = 0
    nack_seqs: int = 0
    pli: int = 0
    remb_low: int | None = None
    remb: int | None = None

    @property
    def delivered(self) -> float:
        """Audio: the share of packets sent in the window that arrived in time to play (1.0 = all)."""
        return (self.packets - self.late) / self.span if self.span else 0.0

    @property
    def fps(self) -> float:
        """Good frames per second."""
        return self.frames / self.seconds if self.seconds else 0.0


_COUNTS = (
    ("packets", "packets"), ("span", "span"), ("frames", "frames"), ("garbled", "garbled"), ("held", "held"),
    ("rtx", "rtx"), ("filled", "filled"), ("late", "late"), ("dup", "dup"),
    ("nack_packets", "nacks"), ("nack_seqs", "nack_seqs"), ("pli", "pli"),
)  # fmt: skip
"""(report key, :class:`FlowWindow` field) of the cumulative counts."""


def _flow_window(
    before: dict[str, Any],
    lines: list[dict[str, Any]],
    start: float,
    end: float,
    following: dict[str, Any] | None = None,
) -> FlowWindow:
    """The window of one flow, from its report before it (``before``, may be empty), its reports in it and the first
    one after it (``following``: None if none came).

    Whether the flow was still frozen when the window ended is read from ``following``: a report is taken about once a
    second, and its last frame's time said nothing of the up to a second between it and the window's end. Read from
    the last report in the window, every flow looked frozen from its last frame then until the end: 0.2-1.07 s in most
    windows, and court-side flows "froze" 1.00-1.07 s (the assertion's bound is 1 s) whenever a window ended just
    before a report that came a little over a second after the last (thin-link runs of several passes failed so)."""
    after = lines[-1] if lines else before
    w = FlowWindow(seconds=end - start)
    for name, attr in _COUNTS:
        setattr(w, attr, int(after.get(name, 0)) - int(before.get(name, 0)))
    stalls = [tuple(s) for line in lines for s in line.get("stalls", ())]
    if following is not None:
        stalls += [tuple(s) for s in following.get("stalls", ())]  # (a stall that the first frame after it ended)
        last = following.get("last")
        if last is None:
            stalls.append((start, end))
        elif float(last) <= end:
            stalls.append((float(last), end))  # no frame from its last until after the window: still frozen
    else:
        last = after.get("last")
        if last is None:
            stalls.append((start, end))
        elif end - float(last) > STALL:
            stalls.append((float(last), end))  # (no report after the window: frozen since its last frame, or not)
    clipped = [min(b, end) - max(a, start) for a, b in stalls if b > start and a < end]
    w.stall = max(clipped, default=0.0)
    lows = [int(line["remb_low"]) for line in lines if line.get("remb_low") is not None]
    w.remb_low = min(lows, default=None)
    w.remb = after.get("remb")
    return w


@dataclass
class Window:
    """What everyone received between two moments (wall clock, seconds)."""

    start: float
    end: float
    flows: dict[tuple[str, str, str], FlowWindow] = field(default_factory=dict)
    """By (receiver, publisher, kind)."""
    keyframes: dict[str, int] = field(default_factory=dict)
    """Keyframe requests each publisher's senders got in the window."""
    target_kbps: dict[str, int | None] = field(default_factory=dict)
    """Each publisher's encoder target at the window's end."""
    cpu: dict[str, float] = field(default_factory=dict)
    """Cores used by the server, the court-side clients and the defendant's client, on average."""
    queue: tuple[int, int] = (0, 0)
    """(packets sent, dropped) by the shaping qdisc in the window."""
    facts: dict[str, int] = field(default_factory=dict)
    """Server log facts in the window (:data:`LOG_FACTS`)."""
    restarts: dict[str, int] = field(default_factory=dict)
    """Media restarts (a new peer connection: counts per mid start over) of each person in the window."""
    node: dict[str, float] = field(default_factory=dict)
    """How the server's ``/metrics`` counters of :data:`NODE_COUNTERS` grew in the window."""

    def flow(self, receiver: str, publisher: str, kind: str) -> FlowWindow:
        """One flow (an empty one if nothing of it was reported)."""
        return self.flows.get((receiver, publisher, kind), FlowWindow(self.end - self.start))


def _window_of(lines: list[dict[str, Any]], start: float, end: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    before = [line for line in lines if line["t"] <= start]
    inside = [line for line in lines if start < line["t"] <= end]
    return (before[-1] if before else {}), inside


# --- the hearing -------------------------------------------------------------------------------------------------


@dataclass
class ThinLinkHearing:
    """A running thin-link hearing (see the module doc)."""

    link: Link
    server: ServeProcess
    court: Child
    defendant: Child
    ids: dict[str, str]
    _cpu_marks: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _queue_marks: list[tuple[float, tuple[int, int]]] = field(default_factory=list)
    _metric_marks: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    shaped: Shape = field(default_factory=Shape)
    _stop: threading.Event = field(default_factory=threading.Event)
    _launch_defendant: Callable[[], Child] | None = None

    def sample(self, every: float = 0.5) -> None:
        """Note CPU, queue and node counters every ``every`` seconds until :meth:`close` (on a daemon thread in the
        node's namespace, where the server's ``/metrics`` is reachable)."""

        def loop() -> None:
            enter_netns(self.link.a)
            while not self._stop.wait(every):
                self.mark(metrics=True)

        threading.Thread(target=loop, name="thin-link-marks", daemon=True).start()

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()

    def shape(self, link: Shape) -> float:
        """Shape the defendant's downlink (replacing the previous shape); the wall-clock time it took effect."""
        self.mark()
        # The loss where the defendant's packets arrive: silent to the node, as on a real link.
        drop_at = (self.link.b, self.link.b_dev)
        if link.rate_mbit is None and not link.loss_percent:
            unshape(self.link.a, self.link.a_dev, drop_at=drop_at)
        else:
            shape(self.link.a, self.link.a_dev, link, drop_at=drop_at)
        self.shaped = link
        now = time.time()
        self.mark()
        return now

    def rejoin(self) -> float:
        """The defendant's client stops (SIGTERM) and a new one joins with the same token, as after a crash or a
        reboot of the terminal; the wall-clock time its media began to flow."""
        assert self._launch_defendant is not None
        self.defendant.stop()
        self.defendant = self._launch_defendant()
        self.defendant.event("media", SETUP_WITHIN)
        return time.time()

    def mark(self, *, metrics: bool = False) -> None:
        """Note CPU and queue counters now, and the node's (from a thread in its namespace): windows use the marks
        nearest their ends."""
        now = time.time()
        if metrics:
            self._metric_marks.append((now, node_counters(self.server.url)))
        self._cpu_marks.append(
            (
                now,
                {
                    "server": cpu_seconds(self.server.proc.pid) if self.server.proc else 0.0,
                    "court": self.court.cpu_seconds(),
                    "defendant": self.defendant.cpu_seconds(),
                },
            )
        )
        self._queue_marks.append((now, qdisc_counts(self.link.a, self.link.a_dev)))

    def sleep_until(self, moment: float) -> None:
        """Sleep until wall-clock ``moment``, checking the child processes are alive."""
        while (left := moment - time.time()) > 0:
            time.sleep(min(left, 1.0))
            for child in (self.court, self.defendant):
                if child.proc.poll() is not None:
                    raise AssertionError(f"{child.name} exited:\n{''.join(child.other[-40:])}")

    def window(self, start: float, end: float) -> Window:
        """What everyone received between ``start`` and ``end`` (call once ``end`` has passed, and a line more)."""
        self.sleep_until(end + 1.2)
        w = Window(start, end)
        for child in (self.court, self.defendant):
            before, inside = _window_of(child.lines, start, end)
            following = next((line for line in child.lines if line["t"] > end), None)
            people = {**before.get("people", {})}
            for line in inside:
                people.update(line["people"])
            for receiver in people:
                for publisher, kinds in people[receiver]["recv"].items():
                    for kind in kinds:
                        first = before.get("people", {}).get(receiver, {}).get("recv", {}).get(publisher, {})
                        reports = [
                            line["people"][receiver]["recv"][publisher][kind]
                            for line in inside
                            if kind in line["people"].get(receiver, {}).get("recv", {}).get(publisher, {})
                        ]
                        after = None
                        if following is not None:
                            after = following["people"].get(receiver, {}).get("recv", {}).get(publisher, {}).get(kind)
                        w.flows[(receiver, publisher, kind)] = _flow_window(
                            first.get(kind, {}), reports, start, end, after
                        )
            if inside:
                for person, data in inside[-1]["people"].items():
                    w.keyframes[person] = int(data["keyframes"]) - int(
                        before.get("people", {}).get(person, {}).get("keyframes", 0)
                    )
                    w.target_kbps[person] = data.get("target_kbps")
                    restarted = int(data.get("restarts", 0)) - int(
                        before.get("people", {}).get(person, {}).get("restarts", 0)
                    )
                    if restarted:
                        w.restarts[person] = restarted
        cpu = [m for m in list(self._cpu_marks) if start <= m[0] <= end]
        if len(cpu) >= 2:
            (t0, a), (t1, b) = cpu[0], cpu[-1]
            w.cpu = {k: round((b[k] - a[k]) / (t1 - t0), 3) for k in a if t1 > t0}
        queue = [m for m in list(self._queue_marks) if start <= m[0] <= end]
        if len(queue) >= 2:
            w.queue = (queue[-1][1][0] - queue[0][1][0], queue[-1][1][1] - queue[0][1][1])
        w.facts = self.facts(start, end)
        counters = [m for m in list(self._metric_marks) if start <= m[0] <= end]
        if len(counters) >= 2:
            a, b = counters[0][1], counters[-1][1]
            w.node = {k: b[k] - a.get(k, 0.0) for k in b if b[k] != a.get(k, 0.0)}
        return w

    def facts(self, start: float, end: float) -> dict[str, int]:
        """How many times each of :data:`LOG_FACTS` appears in the server's log in the window (by line order and
        arrival; the server logs as it goes)."""
        counts: dict[str, int] = {}
        for at, text in list(self._log_lines()):
            if start <= at <= end:
                for fact in LOG_FACTS:
                    if fact in text:
                        counts[fact] = counts.get(fact, 0) + 1
        return counts

    def timeline(self, start: float, end: float, facts: tuple[str, ...]) -> list[tuple[float, str]]:
        """(wall-clock time, event) of the server's log facts named in ``facts`` between ``start`` and ``end`` (with
        the subscriber's role when the fact names one)."""
        out: list[tuple[float, str]] = []
        roles = {pid: role for role, pid in self.ids.items()}
        for at, text in list(self._log_lines()):
            if start <= at <= end:
                line = json.loads(text)
                event = line.get("event", "")
                if event in facts:
                    who = line.get("subscriber")
                    detail = roles.get(who, who) if who else line.get("lag_ms")
                    out.append((at, event if detail is None else f"{event}({detail})"))
        return out

    def keep_logs(self, folder: Path) -> Path:
        """Write the server's output so far (``server.jsonl``) and each client process's lines and events
        (``court.jsonl``, ``defendant.jsonl``) into ``folder``: a run's whole account, for reading after it."""
        (folder / "server.jsonl").write_text("".join(f"{text.rstrip()}\n" for text in list(self.server.output)))
        for child in (self.court, self.defendant):
            rows = sorted([*child.lines, *child.events], key=lambda row: float(row.get("t", 0.0)))
            (folder / f"{child.name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        return folder

    def _log_lines(self) -> Iterator[tuple[float, str]]:
        for text in list(self.server.output):
            with contextlib.suppress(json.JSONDecodeError, TypeError, ValueError):
                line = json.loads(text)
                yield _timestamp(line.get("timestamp", "")), text

    def returned(self, lifted: float, within: float) -> dict[str, float | None]:
        """For each court-side publisher whose video had been frozen at the defendant for a second or more when
        the limit was lifted at ``lifted``: seconds until its next good frame (None: not back within ``within``).
        Publishers whose video was flowing then are left out."""
        self.sleep_until(lifted + within + 1.2)
        out: dict[str, float | None] = {}
        # A stall is reported in the first line after it ends.
        _, inside = _window_of(self.defendant.lines, lifted, lifted + within + 1.2)
        for publisher in COURT_SIDE:
            reports = [line["people"]["defendant"]["recv"].get(publisher, {}).get("video", {}) for line in inside]
            stalls = [(float(a), float(b)) for r in reports for a, b in r.get("stalls", ())]
            spanning = [(a, b) for a, b in stalls if a < lifted < b]
            if spanning:
                began, ended = spanning[0]
                if lifted - began >= 1.0:
                    out[publisher] = ended - lifted if ended - lifted <= within else None
                continue
            last = reports[-1].get("last") if reports else None
            if last is None or float(last) <= lifted:
                out[publisher] = None  # frozen at the lift (no stall ended since) and not back
        return out


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _flowing(defendant: Child, court: Child) -> bool:
    """The defendant decodes video of all four court-side publishers and the court side receives the defendant."""
    if not defendant.lines or not court.lines:
        return False
    got = defendant.lines[-1]["people"]["defendant"]["recv"]
    court_got = court.lines[-1]["people"]
    return all(got.get(p, {}).get("video", {}).get("frames", 0) > 0 for p in COURT_SIDE) and all(
        court_got.get(p, {}).get("recv", {}).get("defendant", {}).get("video", {}).get("frames", 0) > 0
        for p in COURT_SIDE
    )


@contextlib.contextmanager
def thin_link_hearing(
    tmp_path: Path,
    *,
    size: tuple[int, int] = (640, 360),
    defendant_size: tuple[int, int] = (320, 180),
    fps: float = 15.0,
    kbps: int = 1200,
    server_env: dict[str, str] | None = None,
) -> Iterator[ThinLinkHearing]:
    """The hearing, seated, every flow running, the link unshaped; everything removed afterwards, even on failure.
    Skips the test when the host cannot make namespaces or shape a link."""
    if shutil.which("tc") is None:
        pytest.skip("shaping a link needs tc (iproute2)")
    names = (("cl-node", "cl-dfd"), (NODE_ADDRESS, DEFENDANT_ADDRESS), ("vnode", "vdfd"))
    with veth_link(*names) as link, netns_thread(link.a) as in_node, netns_thread(link.b) as in_defendant:
        server = ServeProcess(
            tmp_path / "data",
            env={
                "COURTLINK_ADMIN_KEY": ADMIN_KEY,
                "COURTLINK_LOG_LEVEL": "info",
                "COURTLINK_LOG_FORMAT": "json",
                "COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": f'["{NODE_ADDRESS}"]',
                "COURTLINK_MEDIA__ADAPTATION": "true",
                # One datagram per packet: with UDP GSO a frame's run of packets leaves as one buffer, and the
                # nftables loss rule would drop the whole run at once, not 2% of the packets as a link does.
                "COURTLINK_UDP_GSO": "0",
                **(server_env or {}),
            },
            args=("--host", NODE_ADDRESS),
        )
        children: list[Child] = []
        try:
            in_node(lambda: start_server(server))
            media = ["--fps", str(fps), "--kbps", str(kbps)]
            court = in_node(
                lambda: launch(
                    "court",
                    ["court", "--url", server.url, "--address", NODE_ADDRESS,
                     "--width", str(size[0]), "--height", str(size[1]), *media],
                )
            )  # fmt: skip
            children.append(court)
            ready = court.event("ready", SETUP_WITHIN)

            def launch_defendant() -> Child:
                child = in_defendant(
                    lambda: launch(
                        "defendant",
                        ["defendant", "--url", server.url, "--address", DEFENDANT_ADDRESS,
                         "--token", ready["defendant_token"],
                         "--width", str(defendant_size[0]), "--height", str(defendant_size[1]), *media],
                    )
                )  # fmt: skip
                children.append(child)
                return child

            defendant = launch_defendant()
            defendant.event("media", SETUP_WITHIN)
            hearing = ThinLinkHearing(link, server, court, defendant, ready["ids"], _launch_defendant=launch_defendant)
            defendant.wait_for(lambda: _flowing(defendant, court), SETUP_WITHIN, "media never flowed both ways")
            hearing.sample()
            try:
                yield hearing
            finally:
                hearing.close()
        finally:
            for child in children:
                child.stop()
            stop_server(server)


# --- the table ------------------------------------------------------------------------------------------------------


SHORT = {"judge": "J", "prosecutor": "P", "counsel": "C", "witness": "W"}


def defendant_cells(w: Window) -> list[str]:
    """The defendant's part of one row."""
    audio = [w.flow("defendant", p, "audio").delivered * 100 for p in COURT_SIDE]
    video = [w.flow("defendant", p, "video") for p in COURT_SIDE]
    fps = " / ".join(f"{v.fps:.1f}" for v in video)
    stall = " / ".join(f"{v.stall:.1f}" if v.stall else "<0.2" for v in video)
    garbled = f"{sum(v.garbled for v in video)}/{sum(v.held for v in video)}"
    lows = [v.remb_low for v in video if v.remb_low is not None]
    remb = f"{min(lows) // 1000}" if lows else "-"
    nacks = sum(v.nacks for v in video)
    seqs = sum(v.nack_seqs for v in video)
    rtx = sum(v.rtx for v in video)
    filled = sum(v.filled for v in video)
    pli = sum(v.pli for v in video)
    return [
        f"{min(audio):.1f}–{max(audio):.1f}%",
        fps,
        stall,
        garbled,
        remb,
        f"{nacks}/{seqs}",
        f"{rtx}/{filled}",
        str(pli),
    ]


def others_cell(w: Window) -> str:
    """The worst any court-side person received of anyone (the defendant included)."""
    audio, fps, stall, worst = 100.0, 99.0, 0.0, ""
    for receiver in COURT_SIDE:
        for publisher in (*COURT_SIDE, "defendant"):
            if publisher == receiver:
                continue
            a = w.flow(receiver, publisher, "audio").delivered * 100
            v = w.flow(receiver, publisher, "video")
            if a < audio:
                audio = a
            if v.fps < fps:
                fps, worst = v.fps, f"{receiver}<-{publisher}"
            stall = max(stall, v.stall)
    restarts = ", ".join(f"{p} {n}" for p, n in sorted(w.restarts.items()))
    note = f"; media restarts: {restarts}" if restarts else ""
    return f"audio ≥{audio:.1f}%, video ≥{fps:.1f} fps ({worst}), frozen ≤{stall:.1f} s{note}"


def row(label: str, w: Window) -> list[str]:
    """One table row."""
    kf = " / ".join(f"{w.keyframes.get(p, 0) / (w.end - w.start):.2f}" for p in COURT_SIDE)
    cpu = " / ".join(f"{w.cpu.get(k, 0.0):.2f}" for k in ("server", "court", "defendant"))
    facts = ", ".join(f"{k} {v}" for k, v in sorted(w.facts.items()))
    facts = "; ".join(x for x in (facts, ", ".join(f"{k} +{v:g}" for k, v in sorted(w.node.items()))) if x) or "-"
    target = " / ".join(str(w.target_kbps.get(p, "-")) for p in COURT_SIDE)
    return [label, *defendant_cells(w), others_cell(w), f"{w.queue[0]}/{w.queue[1]}", kf, target, cpu, facts]


HEADER = [
    "defendant's downlink",
    "defendant's audio",
    "video fps J / P / C / W",
    "longest frozen s J / P / C / W",
    "garbled/held frames",
    "REMB low kbit/s",
    "NACKs sent (pkts/seqs)",
    "resent recv (RTX/in-stream)",
    "PLI sent",
    "others in the hearing",
    "queue sent/dropped",
    "keyframe req/s J / P / C / W",
    "encoder kbit/s J / P / C / W",
    "CPU server / court / defendant",
    "node facts and counters",
]


def markdown(rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
