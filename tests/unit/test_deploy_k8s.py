"""deploy/k8s/, checked offline: every object valid against Kubernetes' published schemas (the OpenAPI-derived
JSON schemas the `kubernetes-validate` package ships, strict: unknown fields refused), and the topology of
issue 10 (signaling Deployment and Service, media nodes on host networking per region, the recorder as a
StatefulSet with a volume claim template, Redis with AOF, coturn), hardened, with every courtlink process's
settings loaded by courtlink's own loader from the ConfigMap's file and the container's environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from courtlink.settings import Settings, load_settings
from tests.deploy_fixtures import (
    CLUSTER_SETTINGS,
    COMMANDS,
    CONTAINER_CONFIG,
    DEPLOY,
    K8S,
    k8s_documents,
    load_yaml_documents,
    pod_spec,
    process_environment,
    settings_has,
    settings_key,
)

KUBERNETES_VERSIONS = ("1.29", "1.33")
"""The oldest Kubernetes release still in wide support and a recent one: the files must suit both."""

SECRET = "courtlink-secrets"
SECRET_KEYS = {"admin-key", "tokens-secret", "cluster-secret", "turn-secret", "redis-password"}
"""The keys of the one Secret operators create (deploy/k8s/kustomization.yaml says how)."""

FIELD_VALUES = {"status.hostIP": "192.0.2.10", "spec.nodeName": "node-a", "metadata.name": "recorder-0"}
"""What the downward API gives, for loading the settings here."""


def _objects() -> list[tuple[Path, dict[str, Any]]]:
    return list(k8s_documents())


def _find(kind: str, name: str) -> dict[str, Any]:
    for _path, obj in _objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in deploy/k8s/")


def _courtlink_containers() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec, container) of every container that runs the courtlink image."""
    out = []
    for _path, obj in _objects():
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec["containers"]:
            if "/courtlink:" in container["image"]:
                out.append((obj, spec, container))
    return out


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secrets as placeholders, downward API values,
    and ``$(VAR)`` references to earlier variables expanded."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        else:
            source = item["valueFrom"]
            if "secretKeyRef" in source:
                value = f"placeholder-{source['secretKeyRef']['key']}-0123456789abcdef0123456789"
            else:
                value = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
        env[item["name"]] = value
    return env


def _args(container: dict[str, Any]) -> list[str]:
    env = _environment(container)
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], str(a)) for a in container.get("args", [])]


def _settings(spec: dict[str, Any], container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the container's process starts with: the ConfigMap's file, then its environment."""
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_volume = next(n for n, path in mounts.items() if path == str(Path(CONTAINER_CONFIG).parent))
    assert volumes[config_volume]["configMap"]["name"] == "courtlink-settings"
    env = process_environment(_environment(container))
    for name in list(os.environ):
        if name.startswith("COURTLINK_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    """`kubectl apply` accepts every object: each validates against its Kubernetes JSON schema, strictly."""
    objects = _objects()
    assert len(objects) >= 10
    for path, obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{path.name}: {obj['kind']} {obj['metadata']['name']}: " + "/".join(str(p) for p in exc.path)
            raise AssertionError(f"{where}: {exc.message}") from None


def test_schema_check_catches_a_wrong_field() -> None:
    """The schema check can fail: a misspelt container field is refused."""
    deployment = _find("Deployment", "signaling")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_file_and_no_secret_values() -> None:
    """`kubectl apply -k deploy/k8s/` applies every file; Secrets are referenced, never written in the files."""
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    for _path, obj in _objects():
        assert obj["kind"] != "Secret"
    referenced = set()
    for _path, obj in _objects():
        spec = pod_spec(obj)
        for container in spec["containers"] if spec else []:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == SECRET
                    referenced.add(ref["key"])
                else:
                    assert not re.search(r"(KEY|SECRET|PASSWORD)$", item["name"]) or "value" not in item, item
    assert referenced == SECRET_KEYS


def test_configmaps_carry_the_repository_files() -> None:
    """The settings file and coturn's configuration in the ConfigMaps are the ones compose mounts, verbatim."""
    settings = _find("ConfigMap", "courtlink-settings")["data"]["courtlink.toml"]
    assert settings == CLUSTER_SETTINGS.read_text(encoding="utf-8")
    coturn = _find("ConfigMap", "coturn-config")["data"]["turnserver.conf"]
    assert coturn == (DEPLOY / "coturn" / "turnserver.conf").read_text(encoding="utf-8")


def test_every_container_is_hardened_and_sized() -> None:
    """Every container: non-root, read-only root filesystem, no capabilities, resource requests, a memory limit."""
    for _path, obj in _objects():
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            image = container["image"]
            assert re.search(r":\d+(\.\d+)+(-[a-z]+)?$", image), f"{name}: {image} is not pinned to a version"


def test_signaling_deployment_and_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signaling: a Deployment of 2+ replicas behind a Service and a TLS Ingress, probed on its settings' port."""
    deployment = _find("Deployment", "signaling")
    assert deployment["spec"]["replicas"] >= 2
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert _args(container) == ["signaling"]
    settings = _settings(spec, container, monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert "tcpSocket" in container["livenessProbe"], "a Redis restart must not restart every replica"
    assert settings.redis_url == f"redis://:{_environment(container)['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.public_url == "https://hearings.court.example"
    service = _find("Service", "signaling")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = _find("Ingress", "signaling")
    assert ingress["spec"]["tls"][0]["secretName"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "signaling", "port": {"name": "http"}}
    budget = _find("PodDisruptionBudget", "signaling")
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_media_nodes_on_host_networking_per_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """Media nodes: per region a DaemonSet on the host's network, on that region's machines, announcing the
    machine's address (downward API), with a UDP range and a frame pipe port their settings agree with."""
    regions = {}
    for obj, spec, container in _courtlink_containers():
        args = _args(container)
        if args[0] != "media-node":
            continue
        assert obj["kind"] == "DaemonSet"
        assert spec["hostNetwork"] is True
        assert spec["dnsPolicy"] == "ClusterFirstWithHostNet", "it must still resolve the redis Service"
        region = args[args.index("--region") + 1]
        assert spec["nodeSelector"] == {"courtlink.example/media-region": region}
        raw = {item["name"]: item for item in container["env"]}
        assert raw["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
        settings = _settings(spec, container, monkeypatch)
        assert settings.media.announce_addresses == [FIELD_VALUES["status.hostIP"]]
        assert settings.media.frame_advertise == f"{FIELD_VALUES['status.hostIP']}:{settings.media.frame_port}"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["frame-pipe"] == settings.media.frame_port
        assert container["livenessProbe"]["tcpSocket"]["port"] == "frame-pipe"
        env = _environment(container)
        udp = (int(env["COURTLINK_MEDIA__UDP_PORT_MIN"]), int(env["COURTLINK_MEDIA__UDP_PORT_MAX"]))
        assert (settings.media.udp_port_min, settings.media.udp_port_max) == udp
        assert settings.media.node_id.startswith(f"media-{region}-")
        regions[region] = udp
    assert regions == {"north": (40000, 40099), "south": (40100, 40199)}


def test_recorder_statefulset_keeps_its_id_and_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder: a StatefulSet whose pods keep their id (pod name) and their volume claim across restarts."""
    recorder = _find("StatefulSet", "recorder")
    spec = recorder["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = _args(container)
    assert args[:1] == ["recorder"]
    assert args[args.index("--recorder-id") + 1] == FIELD_VALUES["metadata.name"]
    settings = _settings(spec, container, monkeypatch)
    (claim,) = recorder["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == str(settings.data_dir)
    assert claim["metadata"]["name"] not in {v["name"] for v in spec["volumes"]}
    assert recorder["spec"]["serviceName"] == _find("Service", "recorder")["metadata"]["name"]
    assert spec["terminationGracePeriodSeconds"] > 15, "time for the closing handshake and the seals"


def test_redis_statefulset_with_aof_on_a_claim() -> None:
    """Redis: a StatefulSet with AOF (everysec) on a persistent volume claim, on the port every redis_url names."""
    redis = _find("StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--appendonly yes" in args
    assert "--appendfsync everysec" in args
    assert "--dir /data" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    port = _find("Service", "redis")["spec"]["ports"][0]["port"]
    for _obj, _spec, courtlink in _courtlink_containers():
        assert f"@redis:{port}/" in _environment(courtlink)["COURTLINK_REDIS_URL"]


def test_coturn_shares_the_turn_secret_with_signaling() -> None:
    """coturn: use-auth-secret with the same Secret key signaling signs TURN credentials with, on port 3478."""
    coturn = _find("DaemonSet", "coturn")
    spec = coturn["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    (container,) = spec["containers"]
    assert "--static-auth-secret=$(TURN_SECRET)" in container["args"]
    env = {item["name"]: item for item in container["env"]}
    assert env["TURN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "turn-secret"}
    (signaling,) = _find("Deployment", "signaling")["spec"]["template"]["spec"]["containers"]
    turn = {item["name"]: item for item in signaling["env"]}["COURTLINK_MEDIA__TURN_SECRET"]
    assert turn["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "turn-secret"}
    assert {p["containerPort"] for p in container["ports"]} == {3478}
    urls = yaml.safe_load({i["name"]: i for i in signaling["env"]}["COURTLINK_MEDIA__TURN_URLS"]["value"])
    assert urls
    assert all(":3478?" in url for url in urls), urls


def test_every_courtlink_container_runs_a_known_command_with_known_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every courtlink container runs one of the deployment commands; every COURTLINK_* variable is a settings key."""
    commands = set()
    for obj, spec, container in _courtlink_containers():
        args = _args(container)
        assert args[0] in COMMANDS, obj["metadata"]["name"]
        commands.add(args[0])
        for item in container["env"]:
            name = item["name"]
            if name.startswith("COURTLINK_") and name != "COURTLINK_CONFIG":
                key = settings_key(name)
                assert settings_has(key), name
        settings = _settings(spec, container, monkeypatch)
        assert str(settings.data_dir) == "/var/lib/courtlink"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/var/lib/courtlink", "/tmp", "/etc/courtlink"} <= mounts, "writable data dir and /tmp"
    assert commands == {"signaling", "media-node", "recorder"}
