"""Run a real ``courtlink serve`` subprocess on a free loopback port for end-to-end tests."""

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

URL_LINE = re.compile(r"courtlink: serving (https?://\S+)")
ADMIN_KEY = "serve-admin-key-0123456789abcdef"


def rest_call(url: str, key: str, method: str, body: Any = None, timeout: float = 15) -> tuple[int, Any]:
    """One REST call with an API key, as a clerk's script makes it: (status, parsed JSON body or None)."""
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any ``COURTLINK_*`` variable, plus ``extra`` (unbuffered Python output)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("COURTLINK_")}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def end_child(proc: subprocess.Popen[str], output: list[str], *, crash: bool = False) -> int:
    """Stop a child courtlink process: SIGTERM as an operator would (SIGKILL after 20 s), or SIGKILL at once as a
    crash would (``crash``); what it printed meanwhile goes to ``output``. Its exit code."""
    if proc.poll() is None:
        if crash:
            proc.kill()
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        if not crash:
            output.append(proc.stdout.read())
        proc.stdout.close()
    return int(proc.returncode)


def launch_child(
    args: Sequence[str],
    env: Mapping[str, str],
    ready: re.Pattern[str],
    output: list[str],
    *,
    timeout: float = 60,
    cwd: Path | None = None,
    what: str = "courtlink",
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start ``python -m courtlink.cli ARGS`` and wait for the line matching ``ready`` (its output so far goes to
    ``output``); a process that exits or stays silent is stopped and named with what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "courtlink.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env),
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        match = ready.search(line)
        if match:
            return proc, match
    end_child(proc, output)
    raise RuntimeError(f"{what} did not start:\n" + "".join(output))


class ChildHandle:
    """``stop`` and ``kill`` of a harness holding one courtlink child process (``proc``) and what it printed."""

    proc: subprocess.Popen[str] | None
    output: list[str]

    def stop(self) -> int:
        """SIGTERM (as an operator would) and the exit code."""
        if self.proc is None:
            return 0
        code = end_child(self.proc, self.output)
        self.proc = None
        return code

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None:
            end_child(self.proc, self.output, crash=True)
            self.proc = None


@dataclass
class ServeProcess(ChildHandle):
    """A ``courtlink serve`` child process; ``start`` waits until it prints its URL."""

    data_dir: Path | None
    """``--data-dir``; None: the default ``./courtlink-data`` of ``cwd``."""
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()
    """Further ``courtlink serve`` options (e.g. ``--tls-cert``)."""
    cwd: Path | None = None
    first_run: bool = False
    """As on a fresh install: no ``COURTLINK_*`` variable of the test's environment and no admin key given, so the
    server makes its own (``<data dir>/admin.key``)."""
    proc: subprocess.Popen[str] | None = None
    url: str = ""
    output: list[str] = field(default_factory=list)

    def start(self, timeout: float = 60) -> str:
        """Start the server and return its base URL."""
        base = clean_env() if self.first_run else {**os.environ, "COURTLINK_ADMIN_KEY": ADMIN_KEY}
        env = {**base, "COURTLINK_LOG_LEVEL": "warning", **self.env}
        data_dir = () if self.data_dir is None else ("--data-dir", str(self.data_dir))
        self.proc, match = launch_child(
            ["serve", "--port", "0", *data_dir, *self.args],
            env,
            URL_LINE,
            self.output,
            timeout=timeout,
            cwd=self.cwd,
            what="courtlink serve",
        )
        self.url = match.group(1)
        return self.url
