"""Run a real ``courtlink serve`` subprocess on a free loopback port for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

URL_LINE = re.compile(r"courtlink: serving (https?://\S+)")
ADMIN_KEY = "serve-admin-key-0123456789abcdef"


@dataclass
class ServeProcess:
    """A ``courtlink serve`` child process; ``start`` waits until it prints its URL."""

    data_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    """Further ``courtlink serve`` options (e.g. ``--tls-cert``)."""
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> str:
        """Start the server and return its base URL."""
        env = {**os.environ, "COURTLINK_ADMIN_KEY": ADMIN_KEY, "COURTLINK_LOG_LEVEL": "warning", **self.env}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "courtlink.cli",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
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
                return self.url
        self.stop()
        raise RuntimeError("courtlink serve did not start:\n" + "".join(self.output))

    def stop(self) -> int:
        """Stop with SIGTERM (as an operator would) and return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self.proc.stdout is not None:
            self.output.append(self.proc.stdout.read())
            self.proc.stdout.close()
        self.proc = None
        return code

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
