"""The ``courtlink`` command line as a newcomer runs it: a real ``courtlink serve`` in a working directory, and
the CLI in subprocesses started there (the admin key read from ``./courtlink-data/admin.key``, as on a fresh
install). Every ``COURTLINK_*`` variable of the test's own environment is dropped, so only what a test sets counts.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URL_LINE = re.compile(r"courtlink: serving (https?://\S+)")
DATA_DIR = "courtlink-data"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any ``COURTLINK_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("COURTLINK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def courtlink(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``courtlink ARGS`` in ``cwd`` and return what it did (never raises on a non-zero exit)."""
    return subprocess.run(
        [sys.executable, "-m", "courtlink.cli", *args],
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class LiveServer:
    """``courtlink serve --port 0`` in ``workdir`` on ``workdir/courtlink-data``, with a first-run admin key."""

    workdir: Path
    url: str = ""
    port: int = 0
    output: list[str] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None

    @property
    def data_dir(self) -> Path:
        """The server's data dir (the default ``./courtlink-data`` of its working directory)."""
        return self.workdir / DATA_DIR

    @property
    def admin_key(self) -> str:
        """The admin key the server created on its first run."""
        return (self.data_dir / "admin.key").read_text(encoding="utf-8").strip()

    def start(self, timeout: float = 60) -> None:
        """Start and wait for the line that names the URL."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "courtlink.cli", "serve", "--port", "0"],
            cwd=self.workdir,
            env=clean_env({"COURTLINK_LOG_LEVEL": "warning"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = URL_LINE.search(line)
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return
        self.stop()
        raise RuntimeError("courtlink serve did not start:\n" + "".join(self.output))

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST call with the admin key: (status, parsed JSON body)."""
        request = urllib.request.Request(
            f"{self.url}/api/v1{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.admin_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


@contextmanager
def live_server(workdir: Path) -> Iterator[LiveServer]:
    """A running :class:`LiveServer`, stopped afterwards."""
    server = LiveServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command; fails when there is a traceback or more than one line."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]
