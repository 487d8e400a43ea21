"""The image's HEALTHCHECK script (deploy/healthcheck.py) against a real `courtlink serve`: healthy while
`/healthz` answers, unhealthy when nothing listens; media nodes and recorders pass while they run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.cli_fixtures import live_server
from tests.deploy_fixtures import DEPLOY


def _healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("courtlink_image_healthcheck", DEPLOY / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthy_while_healthz_answers_unhealthy_after_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A container running `courtlink serve --port N` is healthy while its server answers, unhealthy once stopped."""
    check = _healthcheck().check
    with live_server(tmp_path) as server:
        argv = ["/opt/courtlink/bin/python", "/opt/courtlink/bin/courtlink", "serve", "--port", str(server.port)]
        assert check(argv, {}) == 0
        assert check(["courtlink", "signaling", f"--port={server.port}"], {}) == 0
        assert check(["courtlink", "signaling"], {"COURTLINK_PORT": str(server.port)}) == 0
    assert check(argv, {}) == 1
    assert "healthz" in capsys.readouterr().err


def test_processes_without_http_pass_and_commands_are_read_from_proc(tmp_path: Path) -> None:
    """`media-node` and `recorder` containers are healthy while they run; the command comes from /proc/1/cmdline."""
    module = _healthcheck()
    assert module.check(["courtlink", "media-node", "--region", "north"], {}) == 0
    assert module.check(["courtlink", "recorder"], {}) == 0
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/courtlink/bin/python\0/opt/courtlink/bin/courtlink\0signaling\0--port\x009\0")
    assert module.command_line(str(cmdline))[2:] == ["signaling", "--port", "9"]
    assert module.http_port(module.command_line(str(cmdline)), {}) == 9
