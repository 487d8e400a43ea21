"""The README's shell examples, run as written against a live server, in the README's order.

A newcomer's directory: ``courtlink serve`` running there with its ``./courtlink-data``, ``.venv/bin/courtlink``
as the set-up line leaves it, and the repository's ``deploy/`` files. The only change made to the blocks is the
port (a free one instead of 8080; the CLI finds it through ``COURTLINK_PORT``, a setting like any other).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_fixtures import live_server
from tests.serve_process import clean_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
NOT_RUN = {
    "pip install -e .": "the set-up line: the test starts the same `courtlink serve` itself",
    "scripts/test.sh": "the test suite itself",
}
PLACEHOLDER = "<hearing>"
"""Lines naming a recording to fill in are left out (no hearing was in session)."""


def _blocks() -> list[str]:
    return BLOCK.findall(README.read_text(encoding="utf-8"))


def test_readme_shell_examples_work_as_written(tmp_path: Path) -> None:
    """Quick start (`courtlink demo`), curl booking, CLI booking and listing, key export: each works today."""
    if shutil.which("curl") is None:
        pytest.skip("curl not found (apt-get install curl)")
    blocks = _blocks()
    skipped = [b for b in blocks if any(marker in b for marker in NOT_RUN)]
    assert len(skipped) == len(NOT_RUN), "a README block the test skips went missing"
    with live_server(tmp_path / "newcomer") as server:
        work = server.workdir
        venv_bin = work / ".venv" / "bin"
        venv_bin.mkdir(parents=True)
        script = venv_bin / "courtlink"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} -m courtlink.cli "$@"\n', encoding="utf-8")
        script.chmod(0o755)
        shutil.copytree(ROOT / "deploy", work / "deploy")
        outputs: list[str] = []
        for block in blocks:
            if block in skipped:
                continue
            lines = [line for line in block.splitlines() if PLACEHOLDER not in line]
            text = "\n".join(lines).replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", text],
                cwd=work,
                env=clean_env({"COURTLINK_PORT": str(server.port)}),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, f"{text}\n---\n{result.stdout}\n{result.stderr}"
            assert "urn:courtlink:problem" not in result.stdout, f"{text}\n---\n{result.stdout}"
            outputs.append(result.stdout)
        demo, curl, cli, recordings = outputs
        assert demo.count("/join?t=") == 5
        tokens = re.findall(r'"join_url": ?"[^"]*/join\?t=([^"]+)"', curl)
        assert len(tokens) == 4, curl
        for token in tokens:
            assert server.api("POST", "/join/info", {"token": token})[0] == 200, "the curl booking's links work now"
        assert cli.startswith("booked ")
        assert cli.count("/join?t=") == 4
        listed = [line for line in cli.splitlines() if line.startswith("hrg_") and "(2026) Xing Chu 123" in line]
        assert len(listed) == 2, "the curl and the CLI hearing are both listed"
        assert (work / "courtlink-keys.json").is_file()
        assert recordings == ""
