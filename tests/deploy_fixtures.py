"""Reading the deployment files (Dockerfile, deploy/compose.yaml, deploy/k8s/) the way their tools read them,
for the tests that check them offline: no image is built or pulled, no cluster is reached."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from courtlink.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
CLUSTER_SETTINGS = DEPLOY / "courtlink.cluster.toml"
ENV_EXAMPLE = DEPLOY / "env.example"
COMPOSE_SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"

COMMANDS = ("serve", "signaling", "media-node", "recorder")
"""The courtlink commands a deployment runs (CONTRACTS-10.md, "The processes")."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction, continuation lines joined."""

    line: int
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form argument list, or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, comments dropped, ``\\`` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        out.append(Instruction(start, keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def load_yaml_documents(path: Path) -> list[Any]:
    """Every YAML document of a file (empty documents dropped)."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def example_env() -> dict[str, str]:
    """The variables of deploy/env.example (what an operator puts in deploy/.env), as compose reads them."""
    env: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"env.example: {raw!r} is not NAME=value"
        env[name.strip()] = value.strip()
    return env


_VARIABLE = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (``${X}``, ``${X:?err}``, ``${X:-default}``, ``$$``) over a whole document.

    A ``${X:?...}`` whose variable is unset fails (as ``docker compose config`` does).
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name = match.group(2) or match.group(5)
        operator, argument = match.group(3), match.group(4) or ""
        current = env.get(name)
        unset = current is None or (operator is not None and operator.startswith(":") and current == "")
        if operator in ("?", ":?") and unset:
            raise AssertionError(f"${{{name}}} is required ({argument}) and not set in deploy/env.example")
        if operator in ("-", ":-") and unset:
            return argument
        return current or ""

    return _VARIABLE.sub(one, value)


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's ``environment`` as a mapping (list or mapping form)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def courtlink_argv(command: Any) -> list[str]:
    """The arguments after the entrypoint (``courtlink``) of a compose ``command`` or a container's ``args``."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s/ (kustomization.yaml apart), with its file."""
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_yaml_documents(path):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            yield path, doc


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload object (Deployment, StatefulSet, DaemonSet), else None."""
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        spec: dict[str, Any] = obj["spec"]["template"]["spec"]
        return spec
    return None


# --- settings ------------------------------------------------------------------------------------------

CONTAINER_CONFIG = "/etc/courtlink/courtlink.toml"
"""Where both deployments mount deploy/courtlink.cluster.toml (COURTLINK_CONFIG)."""


def settings_key(variable: str) -> str:
    """The dotted settings key a ``COURTLINK_*`` variable sets (``COURTLINK_MEDIA__LAST_N`` -> ``media.last_n``)."""
    assert variable.startswith("COURTLINK_"), variable
    return variable.removeprefix("COURTLINK_").lower().replace("__", ".")


def settings_has(key: str) -> bool:
    """Whether ``courtlink.settings.Settings`` has the dotted key."""
    model: type[BaseModel] | None = Settings
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return True


def process_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The ``COURTLINK_*`` variables of a process to load locally, the config path pointed at the repository's
    file."""
    out: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith("COURTLINK_"):
            continue
        if name == "COURTLINK_CONFIG":
            assert value == CONTAINER_CONFIG, f"COURTLINK_CONFIG={value}: the settings file is mounted elsewhere"
            out[name] = str(CLUSTER_SETTINGS)
            continue
        out[name] = value
    return out
