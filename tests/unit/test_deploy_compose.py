"""deploy/compose.yaml, checked offline: valid against the Compose Specification's published JSON schema
(vendored in tests/schemas/), the topology of issue 10 (Redis with AOF, two signaling processes behind Caddy,
two media nodes in two regions with their UDP ranges, a recorder with a volume, coturn with use-auth-secret),
and every process's settings loaded by courtlink's own loader from the mounted file and its environment."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from courtlink.settings import Settings, load_settings
from tests.deploy_fixtures import (
    CLUSTER_SETTINGS,
    COMMANDS,
    COMPOSE,
    COMPOSE_SCHEMA,
    CONTAINER_CONFIG,
    DEPLOY,
    compose_environment,
    courtlink_argv,
    example_env,
    interpolate,
    load_yaml_documents,
    process_environment,
    settings_has,
    settings_key,
)

SECRET_VARIABLES = {
    "COURTLINK_ADMIN_KEY": "ADMIN_KEY",
    "COURTLINK_TOKENS__SECRET": "TOKENS_SECRET",
    "COURTLINK_CLUSTER__SECRET": "CLUSTER_SECRET",
    "COURTLINK_MEDIA__TURN_SECRET": "TURN_SECRET",
}
"""Each secret setting and the one deploy/.env variable every process takes it from."""


def _raw() -> dict[str, Any]:
    (document,) = load_yaml_documents(COMPOSE)
    assert isinstance(document, dict)
    return document


def _compose() -> dict[str, Any]:
    """The compose file as `docker compose config` sees it with deploy/env.example as .env (anchors merged)."""
    document = interpolate(_raw(), example_env())
    assert isinstance(document, dict)
    return document


def _courtlink_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the courtlink image, by name."""
    return {
        name: service
        for name, service in document["services"].items()
        if courtlink_argv(service.get("command"))[:1] and courtlink_argv(service["command"])[0] in COMMANDS
    }


def _by_command(document: dict[str, Any], command: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _courtlink_services(document).items() if courtlink_argv(s["command"])[0] == command}


def _settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a courtlink service's process starts with: the mounted file, then its environment."""
    mounts = [str(v) for v in service.get("volumes", [])]
    assert f"./{CLUSTER_SETTINGS.name}:{CONTAINER_CONFIG}:ro" in mounts
    env = process_environment(compose_environment(service))
    for name in list(os.environ):
        if name.startswith("COURTLINK_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _turn_option(config: str, name: str) -> str:
    """The value of ``name=value`` in coturn's configuration."""
    match = re.search(rf"^{re.escape(name)}=(\S+)$", config, re.MULTILINE)
    assert match is not None, name
    return match.group(1)


def test_valid_against_the_compose_specification_schema() -> None:
    """`docker compose` accepts the file: it validates against the published compose-spec JSON schema."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    for document in (_raw(), _compose()):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert errors == [], [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_schema_check_catches_a_wrong_key() -> None:
    """The schema check can fail: a misspelt service key is refused."""
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    broken = _compose()
    broken["services"]["redis"]["restart_policy"] = "always"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_every_required_variable_is_in_env_example() -> None:
    """Every ${VAR} the file uses is in deploy/env.example (a copied .env starts it all); .env is never committed."""
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", json.dumps(_raw())))
    assert used <= set(example_env()), sorted(used - set(example_env()))
    assert "deploy/.env" in (DEPLOY.parent / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_redis_appends_every_second_on_a_volume() -> None:
    """Redis runs with AOF (`appendonly yes`, `appendfsync everysec`) on a named volume, so bookings survive."""
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--requirepass" in command
    assert any(str(v).startswith("redis-data:/data") for v in redis["volumes"])
    assert redis["ports"] == ["127.0.0.1:6379:6379"], "Redis is never published beyond loopback"


def test_two_signaling_processes_behind_caddy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `courtlink signaling` processes on Caddy's network, on the port their settings listen on."""
    document = _compose()
    signaling = _by_command(document, "signaling")
    assert len(signaling) == 2
    caddy = document["services"]["caddy"]
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    caddyfile = (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    ids = set()
    for name, service in signaling.items():
        settings = _settings(service, monkeypatch)
        assert settings.host == "0.0.0.0"  # noqa: S104 (in its container, behind Caddy)
        assert service["expose"] == [str(settings.port)]
        assert f"{name}:{settings.port}" in caddyfile
        assert set(caddy["networks"]) & set(service["networks"])
        assert "ports" not in service, "signaling is reached through Caddy only"
        assert settings.public_url == "https://hearings.court.example"
        assert settings.redis_url is not None
        ids.add(settings.cluster.process_id)
    assert len(ids) == 2


def test_shared_secrets_come_from_one_variable_each() -> None:
    """Every process that needs a secret takes it from the same .env variable, and none is written in the file."""
    raw = _raw()
    for name, service in raw["services"].items():
        env = compose_environment(service)
        for setting, variable in SECRET_VARIABLES.items():
            if setting in env:
                assert re.fullmatch(r"\$\{" + variable + r"(:\?[^}]*)?\}", env[setting]), (name, setting)
    signaling = _by_command(raw, "signaling")
    for setting in ("COURTLINK_ADMIN_KEY", "COURTLINK_TOKENS__SECRET", "COURTLINK_MEDIA__TURN_SECRET"):
        assert all(setting in compose_environment(s) for s in signaling.values()), setting
    for service in _courtlink_services(raw).values():
        assert "COURTLINK_CLUSTER__SECRET" in compose_environment(service)
    coturn = " ".join(raw["services"]["coturn"]["command"])
    assert "--static-auth-secret=${TURN_SECRET" in coturn


def test_media_nodes_in_two_regions_with_disjoint_udp_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two media nodes, regions north and south, each with its own UDP range and a frame pipe kept internal."""
    document = _compose()
    nodes = _by_command(document, "media-node")
    assert len(nodes) == 2
    regions, ranges, frame_ports, node_ids = set(), [], set(), set()
    for name, service in nodes.items():
        argv = courtlink_argv(service["command"])
        regions.add(argv[argv.index("--region") + 1])
        env = compose_environment(service)
        low, high = int(env["COURTLINK_MEDIA__UDP_PORT_MIN"]), int(env["COURTLINK_MEDIA__UDP_PORT_MAX"])
        assert 1024 < low <= high < 65536
        ranges.append((low, high))
        # A node binds its ICE candidates on its announced address: it has to be on the host's network.
        assert service["network_mode"] == "host"
        settings = _settings(service, monkeypatch)
        assert settings.media.announce_addresses == ["192.0.2.10"]
        assert settings.media.frame_host == "127.0.0.1", "the frame pipe is not reachable from outside"
        assert settings.media.frame_advertise == f"127.0.0.1:{settings.media.frame_port}"
        assert (settings.media.udp_port_min, settings.media.udp_port_max) == (low, high)
        frame_ports.add(settings.media.frame_port)
        node_ids.add(settings.media.node_id)
        assert name == settings.media.node_id
    assert regions == {"north", "south"}
    assert sorted(ranges) == [(40000, 40099), (40100, 40199)]
    assert frame_ports == {7400, 7401}
    assert len(node_ids) == 2


def test_recorder_writes_to_a_named_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder's data dir (keys and recordings: the court record) is a named volume that outlives it."""
    document = _compose()
    (recorder,) = _by_command(document, "recorder").values()
    settings = _settings(recorder, monkeypatch)
    mounts = [str(v) for v in recorder["volumes"]]
    assert f"recordings:{settings.data_dir}" in mounts
    assert "recordings" in document["volumes"]
    argv = courtlink_argv(recorder["command"])
    assert argv[argv.index("--recorder-id") + 1] == "rec-1"
    assert int(str(recorder["stop_grace_period"]).rstrip("s")) > 15, "time for the closing handshake and seals"


def test_coturn_uses_the_shared_secret_scheme() -> None:
    """coturn runs with use-auth-secret, relays only to the media nodes, on the ports signaling hands out."""
    document = _compose()
    coturn = document["services"]["coturn"]
    config = (DEPLOY / "coturn" / "turnserver.conf").read_text(encoding="utf-8")
    lines = {line.strip() for line in config.splitlines() if line.strip() and not line.startswith("#")}
    assert "use-auth-secret" in lines
    assert "listening-port=3478" in lines
    assert "no-multicast-peers" in lines
    assert "./coturn/turnserver.conf:/etc/coturn/turnserver.conf:ro" in coturn["volumes"]
    assert {"--allowed-peer-ip=192.0.2.10"} <= set(coturn["command"])
    env = compose_environment(next(iter(_by_command(document, "signaling").values())))
    for url in json.loads(env["COURTLINK_MEDIA__TURN_URLS"]):
        assert ":3478?" in url
    relay = (int(_turn_option(config, "min-port")), int(_turn_option(config, "max-port")))
    for service in _by_command(document, "media-node").values():
        node = compose_environment(service)
        low, high = int(node["COURTLINK_MEDIA__UDP_PORT_MIN"]), int(node["COURTLINK_MEDIA__UDP_PORT_MAX"])
        assert high < relay[0] or low > relay[1], "a media node's range overlaps coturn's relay range"


def test_every_setting_named_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every COURTLINK_* variable names a key of courtlink's settings, and each courtlink process's settings load."""
    document = _compose()
    services = _courtlink_services(document)
    assert {courtlink_argv(s["command"])[0] for s in services.values()} == {"signaling", "media-node", "recorder"}
    for name, service in services.items():
        for variable in compose_environment(service):
            if variable.startswith("COURTLINK_") and variable != "COURTLINK_CONFIG":
                key = settings_key(variable)
                assert settings_has(key), (name, variable)
        settings = _settings(service, monkeypatch)
        assert str(settings.data_dir) == "/var/lib/courtlink"
        assert settings.redis_url is not None
        assert settings.redis_url.endswith(":6379/0")


def test_hardened_containers() -> None:
    """courtlink containers run read-only, without capabilities, restart by themselves and never as root."""
    for name, service in _courtlink_services(_compose()).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["restart"] == "unless-stopped", name
        assert "user" not in service or not str(service["user"]).startswith("0"), name


def test_settings_file_loads_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/courtlink.cluster.toml alone is valid settings (every key in it exists)."""
    for name in list(os.environ):
        if name.startswith("COURTLINK_"):
            monkeypatch.delenv(name)
    settings = load_settings(CLUSTER_SETTINGS)
    assert settings.port == 8080
    assert str(settings.data_dir) == "/var/lib/courtlink"


def test_topology_doc_names_every_port() -> None:
    """docs/operations.md's Topology section names every port and range the deployment opens."""
    document = _compose()
    doc = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    topology = doc[doc.index("## Topology") : doc.index("\n## ", doc.index("## Topology") + 5)]
    ports = {"443", "6379"}
    for service in _by_command(document, "signaling").values():
        ports.update(service["expose"])
    for service in _by_command(document, "media-node").values():
        env = compose_environment(service)
        ports.add(f"{env['COURTLINK_MEDIA__UDP_PORT_MIN']}-{env['COURTLINK_MEDIA__UDP_PORT_MAX']}")
        ports.add(env["COURTLINK_MEDIA__FRAME_PORT"])
    config = (DEPLOY / "coturn" / "turnserver.conf").read_text(encoding="utf-8")
    ports.add(_turn_option(config, "listening-port"))
    ports.add(f"{_turn_option(config, 'min-port')}-{_turn_option(config, 'max-port')}")
    assert [p for p in sorted(ports) if p not in topology] == []
    for heading in ("### Ports", "### Scaling", "### When a part dies", "### The deployment files"):
        assert heading in topology
    for reason in ("node_lost", "recorder_restart"):
        assert reason in topology
