"""The courtlink image's HEALTHCHECK: ``GET /healthz`` of the process that serves HTTP, whatever its command.

The image runs every courtlink command. ``serve`` and ``signaling`` serve HTTP: healthy when ``/healthz``
answers 200 (the store answers) on the port of ``--port``, else ``COURTLINK_PORT``, else 8080. ``media-node``
and ``recorder`` serve no HTTP: they are healthy while they run (Docker restarts them when they exit; a media
node's liveness for placement is its heartbeat record in Redis). The command is read from PID 1's command line.

Exit 0: healthy; 1: unhealthy (Docker's convention). Standard library only: it runs every 30 s.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

HTTP_COMMANDS = ("serve", "signaling")
OTHER_COMMANDS = ("media-node", "recorder")
DEFAULT_PORT = 8080


def command_line(path: str = "/proc/1/cmdline") -> list[str]:
    """The arguments of the container's main process."""
    with open(path, "rb") as handle:
        return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]


def http_port(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """The port ``/healthz`` answers on, or None for a command that serves no HTTP."""
    command = next((a for a in argv if a in HTTP_COMMANDS + OTHER_COMMANDS), None)
    if command not in HTTP_COMMANDS:
        return None
    for index, arg in enumerate(argv):
        if arg == "--port" and index + 1 < len(argv):
            return int(argv[index + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return int(env.get("COURTLINK_PORT", DEFAULT_PORT))


def check(argv: Sequence[str], env: Mapping[str, str], *, host: str = "127.0.0.1", timeout: float = 4.0) -> int:
    """0 when the process of ``argv`` is healthy, 1 when not (with one line on stderr saying why)."""
    port = http_port(argv, env)
    if port is None:
        return 0
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(check(command_line(), os.environ))
