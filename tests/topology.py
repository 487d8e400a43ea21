"""The multi-process topology of a court network, started from Debian packages and courtlink's own commands.

Images cannot be pulled on the test machines, so the topology of ``deploy/compose.yaml`` runs here as separate
OS processes on loopback: redis-server with AOF, coturn, Caddy with TLS in front of two ``courtlink signaling``
processes, two ``courtlink media-node`` processes in two regions (each with its own UDP port range), and two
``courtlink recorder`` processes. Every process writes its output to a file of its own (never a pipe that could
fill up), which the test keeps under ``tmp_path`` and prints the tail of when something fails.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aioice import stun

from tests.conftest import free_port
from tests.serve_process import clean_env
from tests.ws_fixtures import ADMIN_KEY, TOKEN_SECRET

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SECRET = "topology-cluster-secret-0123456789"
TURN_SECRET = "topology-turn-secret-0123456789abcdef"
LEASE_SECONDS = 6.0
"""``[cluster] lease_seconds`` as deployed (the default): the drills measure what operators get."""


@dataclass
class Proc:
    """One OS process of the topology; ``start`` waits until it is ready (a line in its output, or a check)."""

    name: str
    argv: Sequence[str]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    ready: re.Pattern[str] | Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None
    match: re.Match[str] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the process and wait for it to be ready (RuntimeError with its output's tail if it is not)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                list(self.argv), stdout=sink, stderr=subprocess.STDOUT, env=dict(self.env), cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ready is None:
                return
            if callable(self.ready):
                if self.ready():
                    return
            else:
                text = self.log.read_bytes()[offset:].decode(errors="replace")
                self.match = self.ready.search(text)
                if self.match:
                    return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        """The last lines of its output."""
        if not self.log.exists():
            return "(no output)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM as an operator stops it; its exit code (killed if it does not stop within 30 s)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stun_answers(port: int) -> bool:
    """Whether a STUN binding request to 127.0.0.1:port is answered (coturn is up)."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(bytes(request), ("127.0.0.1", port))
        try:
            s.recvfrom(2048)
        except OSError:
            return False
    return True


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (Caddy's TLS in front of signaling)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class Topology:
    """The running processes, by role, and where to reach them."""

    folder: Path
    redis: Proc
    redis_url: str
    coturn: Proc
    turn_url: str
    signaling: dict[str, Proc]
    nodes: dict[str, Proc]
    node_regions: dict[str, str]
    recorders: dict[str, Proc]
    recorder_dirs: dict[str, Path]
    caddy: Proc
    front_url: str

    def signaling_url(self, name: str) -> str:
        """The URL one signaling process printed when ready."""
        match = self.signaling[name].match
        assert match is not None
        return match.group(1)

    def all(self) -> list[Proc]:
        """Every process."""
        return [
            self.caddy,
            *self.signaling.values(),
            *self.recorders.values(),
            *self.nodes.values(),
            self.coturn,
            self.redis,
        ]


def courtlink(*args: str) -> list[str]:
    """The argv of one courtlink command."""
    return [sys.executable, "-m", "courtlink.cli", *args]


def _service_env(redis_url: str, **extra: str) -> dict[str, str]:
    return clean_env(
        {
            "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
            "COURTLINK_REDIS_URL": redis_url,
            "COURTLINK_CLUSTER__SECRET": CLUSTER_SECRET,
            "COURTLINK_LOG_LEVEL": "warning",
            **extra,
        }
    )


def redis_proc(folder: Path, port: int) -> Proc:
    """redis-server with AOF (``appendfsync everysec``, as deploy/compose.yaml runs it), restartable in place."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found (apt-get install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "everysec",
        "--save", "", "--dir", str(folder), "--protected-mode", "yes",
    ]  # fmt: skip
    return Proc("redis", argv, folder / "redis.log", env=clean_env(), ready=re.compile("Ready to accept connections"))


@contextmanager
def topology(folder: Path, *, regions: Sequence[str] = ("north", "south")) -> Iterator[Topology]:
    """Start the whole topology; stop every process afterwards (SIGTERM, then SIGKILL)."""
    for tool in ("redis-server", "turnserver", "caddy", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found (scripts/test.sh installs it)")
    with ExitStack() as stack:
        procs: list[Proc] = []

        def started(proc: Proc, timeout: float = 60) -> Proc:
            proc.start(timeout)
            procs.append(proc)
            return proc

        stack.callback(lambda: [p.stop() for p in reversed(procs)])
        redis_port = free_port()
        redis = started(redis_proc(folder / "redis", redis_port))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"

        turn_port = free_udp_port()
        coturn = started(
            Proc(
                "coturn",
                [
                    "turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                    f"--listening-port={turn_port}", "--min-port=49160", "--max-port=49200", "--use-auth-secret",
                    f"--static-auth-secret={TURN_SECRET}", "--realm=courtlink.test", "--allow-loopback-peers",
                    "--no-cli", "--no-tls", "--no-dtls", "--fingerprint", f"--db={folder / 'turndb'}",
                    f"--pidfile={folder / 'turn.pid'}", f"--log-file={folder / 'turn.log'}", "--simple-log",
                    "--no-stdout-log",
                ],
                folder / "coturn.out",
                env=clean_env(),
                ready=lambda: stun_answers(turn_port),
            )
        )  # fmt: skip
        turn_url = f"turn:127.0.0.1:{turn_port}?transport=udp"

        # Each node its own UDP range, below the kernel's ephemeral ports (so no other socket takes them).
        base = random.Random().randrange(20000, 29000, 200)
        nodes: dict[str, Proc] = {}
        node_regions: dict[str, str] = {}
        for n, region in enumerate(regions):
            node_id = f"{region}-1"
            low = base + n * 100
            nodes[node_id] = started(
                Proc(
                    f"media-node {node_id}",
                    courtlink("media-node", "--node-id", node_id, "--region", region),
                    folder / f"{node_id}.log",
                    env=_service_env(
                        redis_url,
                        COURTLINK_MEDIA__ANNOUNCE_ADDRESSES='["127.0.0.1"]',
                        COURTLINK_MEDIA__UDP_PORT_MIN=str(low),
                        COURTLINK_MEDIA__UDP_PORT_MAX=str(low + 99),
                        COURTLINK_MEDIA__FRAME_PORT="0",
                    ),
                    ready=re.compile(rf"courtlink: media node {node_id} ready"),
                )
            )
            node_regions[node_id] = region

        recorders: dict[str, Proc] = {}
        recorder_dirs: dict[str, Path] = {}
        for recorder_id in ("rec-1", "rec-2"):
            data = folder / recorder_id
            recorder_dirs[recorder_id] = data
            recorders[recorder_id] = started(
                Proc(
                    f"recorder {recorder_id}",
                    courtlink("recorder", "--recorder-id", recorder_id, "--data-dir", str(data)),
                    folder / f"{recorder_id}.log",
                    env=_service_env(redis_url, COURTLINK_RECORDER__SEGMENT_SECONDS="2"),
                    ready=re.compile(rf"courtlink: recorder {recorder_id} ready"),
                )
            )

        signaling: dict[str, Proc] = {}
        for name in ("a", "b"):
            signaling[name] = started(
                Proc(
                    f"signaling {name}",
                    courtlink("signaling", "--port", "0", "--data-dir", str(folder / f"signaling-{name}")),
                    folder / f"signaling-{name}.log",
                    env=_service_env(
                        redis_url,
                        COURTLINK_ADMIN_KEY=ADMIN_KEY,
                        COURTLINK_TOKENS__SECRET=TOKEN_SECRET,
                        COURTLINK_CLUSTER__PROCESS_ID=f"signaling-{name}",
                        COURTLINK_MEDIA__TURN_URLS=f'["{turn_url}"]',
                        COURTLINK_MEDIA__TURN_SECRET=TURN_SECRET,
                    ),
                    ready=re.compile(r"courtlink: signaling \S+ ready at (https?://\S+)"),
                )
            )

        cert, key = _self_signed(folder)
        front_port = free_port()
        upstreams = " ".join(p.match.group(1).split("://", 1)[1] for p in signaling.values() if p.match)
        caddyfile, xdg = folder / "Caddyfile", folder / "xdg"
        caddyfile.write_text(
            f"""{{
\tadmin off
\tauto_https off
\tstorage file_system {folder / "caddy-data"}
}}
https://127.0.0.1:{front_port} {{
\ttls {cert} {key}
\treverse_proxy {upstreams} {{
\t\tlb_policy round_robin
\t\tlb_try_duration 10s
\t\tfail_duration 30s
\t}}
}}
""",
            encoding="utf-8",
        )
        caddy = started(
            Proc(
                "caddy",
                ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                folder / "caddy.log",
                env=clean_env({"HOME": str(folder), "XDG_DATA_HOME": str(xdg), "XDG_CONFIG_HOME": str(xdg)}),
                ready=re.compile("serving initial configuration"),
            )
        )  # fmt: skip
        yield Topology(
            folder=folder,
            redis=redis,
            redis_url=redis_url,
            coturn=coturn,
            turn_url=turn_url,
            signaling=signaling,
            nodes=nodes,
            node_regions=node_regions,
            recorders=recorders,
            recorder_dirs=recorder_dirs,
            caddy=caddy,
            front_url=f"https://127.0.0.1:{front_port}",
        )
