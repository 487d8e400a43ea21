"""Run a real ``courtlink media-node`` subprocess on loopback for multi-process tests."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.serve_process import ChildHandle, clean_env, launch_child


@dataclass
class MediaNodeProcess(ChildHandle):
    """A ``courtlink media-node`` child process; ``start`` waits for its ready line."""

    redis_url: str
    node_id: str
    region: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    """Further ``COURTLINK_*`` settings (the test's own ``COURTLINK_*`` variables are not passed on)."""
    args: Sequence[str] = ()
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    ready_line: str = ""

    def start(self, timeout: float = 60) -> str:
        """Start the node and return its ready line."""
        env = clean_env(
            {
                "COURTLINK_REDIS_URL": self.redis_url,
                "COURTLINK_LOG_LEVEL": "warning",
                "COURTLINK_MEDIA__ANNOUNCE_ADDRESSES": '["127.0.0.1"]',
                **self.env,
            }
        )
        region = ("--region", self.region) if self.region else ()
        ready = re.compile(rf"^courtlink: media node {re.escape(self.node_id)} ready.*")
        self.proc, match = launch_child(
            ["media-node", "--node-id", self.node_id, *region, *self.args],
            env,
            ready,
            self.output,
            timeout=timeout,
            what="courtlink media-node",
        )
        self.ready_line = match.group(0).strip()
        return self.ready_line
