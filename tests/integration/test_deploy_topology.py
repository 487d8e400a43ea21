"""The deployment files against the real programs they configure, offline: deploy/Caddyfile adapted by
Debian's caddy and serving a real `courtlink serve` over TLS (WebSocket upgrade included, a dead upstream
skipped, /metrics refused), and every courtlink command and flag the deployments run present in
`courtlink --help`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from courtlink.settings import load_settings
from tests.cli_fixtures import courtlink, live_server
from tests.deploy_fixtures import (
    CLUSTER_SETTINGS,
    COMPOSE,
    DEPLOY,
    courtlink_argv,
    k8s_documents,
    load_yaml_documents,
    pod_spec,
)

CADDYFILE = DEPLOY / "Caddyfile"

PENDING_COMMANDS = frozenset({"signaling", "media-node", "recorder"})
"""Commands issue 10's other parts add (CONTRACTS-10.md, "The processes"). Until they are merged, a missing one
skips the check below; after the merge the integrator sees it pass (or the skip name what is still missing)."""


def _caddy() -> str:
    binary = shutil.which("caddy")
    if binary is None:
        pytest.skip("caddy not installed (apt-get install caddy; scripts/test.sh does)")
    return binary


def _adapt(text: str, env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "Caddyfile"
    source.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [_caddy(), "adapt", "--config", str(source), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "WARN" not in result.stderr, result.stderr
    adapted: dict[str, Any] = json.loads(result.stdout)
    return adapted


def _routes(adapted: dict[str, Any]) -> list[dict[str, Any]]:
    (server,) = adapted["apps"]["http"]["servers"].values()
    (site,) = server["routes"]
    routes: list[dict[str, Any]] = site["handle"][0]["routes"]
    return routes


def test_caddyfile_proxies_every_signaling_process_with_tls(tmp_path: Path) -> None:
    """Caddy serves the domain on 443 and proxies to both signaling services on their port, checking /healthz,
    reusing upstream connections for less than signaling's header timeout, and refusing /metrics."""
    adapted = _adapt(CADDYFILE.read_text(encoding="utf-8"), {"COURTLINK_DOMAIN": "hearings.court.example"}, tmp_path)
    (server,) = adapted["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    assert server["routes"][0]["match"] == [{"host": ["hearings.court.example"]}]
    routes = _routes(adapted)
    refuse = next(r for r in routes if r.get("match") == [{"path": ["/metrics"]}])
    assert refuse["handle"] == [{"handler": "static_response", "status_code": 403}]
    proxy = next(h for r in routes for h in r["handle"] if h["handler"] == "reverse_proxy")
    (compose,) = load_yaml_documents(COMPOSE)
    signaling = [n for n, s in compose["services"].items() if courtlink_argv(s.get("command"))[:1] == ["signaling"]]
    port = load_settings(CLUSTER_SETTINGS).port
    assert sorted(u["dial"] for u in proxy["upstreams"]) == sorted(f"{name}:{port}" for name in signaling)
    assert proxy["health_checks"]["active"]["uri"] == "/healthz"
    keepalive = proxy["transport"]["keep_alive"]["idle_timeout"] / 1e9
    assert keepalive < load_settings(CLUSTER_SETTINGS).http.header_timeout_seconds
    assert proxy["load_balancing"]["try_duration"] > 0, "a request to a dead process is retried on another"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _through_caddy(url: str, trusted: ssl.SSLContext) -> dict[str, Any]:
    out: dict[str, Any] = {"health": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.get(f"{url}/healthz", ssl=trusted) as resp:
                out["health"].append(resp.status)
        async with http.get(f"{url}/metrics", ssl=trusted) as resp:
            out["metrics"] = resp.status
        async with http.ws_connect(f"{url.replace('https', 'wss')}/api/v1/ws", ssl=trusted) as ws:
            await ws.send_str(json.dumps({"type": "join", "token": "not-a-token"}))
            message = await ws.receive(timeout=20)
            out["ws"] = json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else message.type
    return out


def test_caddyfile_carries_websockets_to_signaling_over_tls(tmp_path: Path) -> None:
    """Through Caddy with this Caddyfile (TLS from Caddy's own CA on loopback): health answers even with one
    upstream dead, /metrics is refused, and a WebSocket upgrades and talks to courtlink."""
    caddy = _caddy()
    https_port, http_port, dead_port = _free_port(), _free_port(), _free_port()
    with live_server(tmp_path / "serve") as server:
        text = CADDYFILE.read_text(encoding="utf-8")
        # Loopback instead of the compose service names; the directives under test stay as they are.
        text = text.replace("signaling-a:8080 signaling-b:8080", f"127.0.0.1:{dead_port} 127.0.0.1:{server.port}")
        assert f"127.0.0.1:{server.port}" in text
        settings = f"{{\n\tadmin off\n\tskip_install_trust\n\thttp_port {http_port}\n\thttps_port {https_port}\n}}\n"
        config = tmp_path / "Caddyfile"
        config.write_text(settings + text, encoding="utf-8")
        home = tmp_path / "caddy-home"
        env = {
            **os.environ,
            "COURTLINK_DOMAIN": f"127.0.0.1:{https_port}",
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
        }
        log = (tmp_path / "caddy.log").open("w")
        proc = subprocess.Popen(
            [caddy, "run", "--config", str(config), "--adapter", "caddyfile"], env=env, stdout=log, stderr=log
        )
        try:
            root = home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
            deadline = time.monotonic() + 60
            while not root.exists() or not _listening(https_port):
                assert proc.poll() is None, (tmp_path / "caddy.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "caddy.log").read_text()
                time.sleep(0.2)
            trusted = ssl.create_default_context(cafile=str(root))
            out = asyncio.run(_through_caddy(f"https://127.0.0.1:{https_port}", trusted))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    assert out["health"] == [200] * 6, out
    assert out["metrics"] == 403
    assert isinstance(out["ws"], dict), out
    assert out["ws"]["type"] == "error", out


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _deployed_commands() -> dict[str, set[str]]:
    """Every courtlink command the deployments run, with the flags they give it."""
    runs: list[list[str]] = []
    (compose,) = load_yaml_documents(COMPOSE)
    for service in compose["services"].values():
        argv = courtlink_argv(service.get("command"))
        if argv and not argv[0].startswith("-") and "image" in service and "courtlink" in str(service["image"]):
            runs.append(argv)
    for _path, obj in k8s_documents():
        spec = pod_spec(obj)
        for container in spec["containers"] if spec else []:
            if "/courtlink:" in container["image"]:
                runs.append([str(a) for a in container["args"]])
    dockerfile_cmd = re.search(r'^CMD \["(\w[\w-]*)"', (DEPLOY.parent / "Dockerfile").read_text(), re.MULTILINE)
    assert dockerfile_cmd is not None
    runs.append([dockerfile_cmd.group(1)])
    found: dict[str, set[str]] = {}
    for argv in runs:
        found.setdefault(argv[0], set()).update(a.split("=")[0] for a in argv[1:] if a.startswith("--"))
    return found


def test_every_command_the_deployments_run_exists(tmp_path: Path) -> None:
    """Each command and flag in the Dockerfile, compose.yaml and k8s/ is one `courtlink --help` lists."""
    deployed = _deployed_commands()
    assert set(deployed) == {"serve", "signaling", "media-node", "recorder"}
    shown = courtlink("--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    listed = set(re.findall(r"^\s{4}([a-z][a-z-]+)\s", shown.stdout, re.MULTILINE))
    pending = sorted(c for c in deployed if c not in listed and c in PENDING_COMMANDS)
    missing = sorted(c for c in deployed if c not in listed and c not in PENDING_COMMANDS)
    assert missing == [], shown.stdout
    for command, flags in deployed.items():
        if command in pending:
            continue
        helped = courtlink(command, "--help", cwd=tmp_path)
        absent = [f for f in sorted(flags) if f not in helped.stdout]
        if command in PENDING_COMMANDS and (helped.returncode != 0 or absent):
            # e.g. `courtlink recorder` is still only the keys tool here; part recorder makes it run one.
            pending.append(command)
            continue
        assert helped.returncode == 0, helped.stderr
        assert absent == [], (command, helped.stdout)
    if pending:
        pytest.skip(f"not on this branch yet (other parts of issue 10): courtlink {', '.join(pending)}")
