"""The ``courtlink`` command line as a newcomer runs it: a real ``courtlink serve`` in a working directory, and
the CLI in subprocesses started there (the admin key read from ``./courtlink-data/admin.key``, as on a fresh
install). Every ``COURTLINK_*`` variable of the test's own environment is dropped, so only what a test sets counts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.serve_process import ServeProcess, clean_env, rest_call

DATA_DIR = "courtlink-data"


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
    serve: ServeProcess = field(init=False)

    def __post_init__(self) -> None:
        self.serve = ServeProcess(None, cwd=self.workdir, first_run=True)

    @property
    def url(self) -> str:
        """The base URL the server printed."""
        return self.serve.url

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    @property
    def data_dir(self) -> Path:
        """The server's data dir (the default ``./courtlink-data`` of its working directory)."""
        return self.workdir / DATA_DIR

    @property
    def admin_key(self) -> str:
        """The admin key the server created on its first run."""
        return (self.data_dir / "admin.key").read_text(encoding="utf-8").strip()

    def start(self) -> None:
        """Start and wait for the line that names the URL."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.serve.start()

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        self.serve.stop()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One REST call with the admin key: (status, parsed JSON body)."""
        return rest_call(f"{self.url}/api/v1{path}", self.admin_key, method, body)


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
