"""Settings that cannot be used stop `courtlink` with one line naming the file or variable and the key (exit 2),
never a traceback and never a secret's value."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_fixtures import courtlink, one_line_error
from tests.serve_process import clean_env

SHORT_KEY = "sekrit-short-1"
"""A too-short admin key: the message must name it, never show it."""


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return courtlink("serve", "--port", "0", *args, cwd=tmp_path, env=env, timeout=60)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "courtlink.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    line = one_line_error(result)
    for part in expected:
        assert part in line, line
    assert SHORT_KEY not in result.stderr + result.stdout
    assert "_FromFile" not in line
    assert "pydantic" not in line
    return line


def test_short_admin_key_in_the_environment(tmp_path: Path) -> None:
    """COURTLINK_ADMIN_KEY shorter than 16 characters: the variable and the key named, the value never printed."""
    result = _serve(tmp_path, env={"COURTLINK_ADMIN_KEY": SHORT_KEY})
    _refused(result, "COURTLINK_ADMIN_KEY", "admin_key", "at least 16 characters")


def test_short_admin_key_in_the_file_and_in_the_data_dir(tmp_path: Path) -> None:
    """A short admin_key in the settings file, or in the data dir's admin.key, is named with its file."""
    cfg = _config(tmp_path, f'admin_key = "{SHORT_KEY}"\n')
    _refused(_serve(tmp_path, "--config", str(cfg)), str(cfg), "admin_key", "at least 16")
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.key").write_text(SHORT_KEY + "\n", encoding="utf-8")
    _refused(_serve(tmp_path, "--data-dir", str(data)), str(data / "admin.key"), "at least 16")


def test_short_api_key_in_the_file(tmp_path: Path) -> None:
    """A short [[api_keys]] key names api_keys[0].key and the file, not the key."""
    cfg = _config(tmp_path, f'[[api_keys]]\nname = "case-system"\nkey = "{SHORT_KEY}"\nscope = "clerk"\n')
    _refused(_serve(tmp_path, "--config", str(cfg)), str(cfg), "api_keys[0].key", "at least 16")


def test_wrong_types_name_the_file_or_variable_and_the_key(tmp_path: Path) -> None:
    """A string for a number in the file or the environment: file/variable and key, no raw pydantic output."""
    cfg = _config(tmp_path, '[media]\nlast_n = 0\n[session]\nrate_burst = "lots"\n')
    line = _refused(_serve(tmp_path, "--config", str(cfg)), f"settings file {cfg}", "media.last_n", "greater than")
    assert "also wrong: session.rate_burst" in line
    env = {"COURTLINK_MEDIA__LAST_N": "many"}
    _refused(_serve(tmp_path, env=env), "environment variable COURTLINK_MEDIA__LAST_N", "media.last_n")
    _refused(_serve(tmp_path, env={"COURTLINK_API_KEYS": "not json"}), "COURTLINK_API_KEYS", "not valid JSON")
    broken = _config(tmp_path, "port = \n")
    _refused(_serve(tmp_path, "--config", str(broken)), str(broken), "not valid TOML")


def test_missing_config_file(tmp_path: Path) -> None:
    """COURTLINK_CONFIG or --config naming a missing file fails (it was silently ignored), for every command."""
    missing = str(tmp_path / "nowhere.toml")
    _refused(_serve(tmp_path, env={"COURTLINK_CONFIG": missing}), "COURTLINK_CONFIG", missing)
    _refused(_serve(tmp_path, "--config", missing), "--config", missing)
    demo = courtlink("demo", cwd=tmp_path, env={"COURTLINK_CONFIG": missing})
    _refused(demo, "COURTLINK_CONFIG", missing)
    keys = courtlink("recorder", "keys", "export", cwd=tmp_path, env={"COURTLINK_CONFIG": missing})
    _refused(keys, "COURTLINK_CONFIG")


def _read_only_prefix(path: Path) -> list[str]:
    """A command prefix under which ``path`` is read-only (root ignores modes: a private read-only bind mount)."""
    if os.geteuid() != 0:
        path.chmod(0o500)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not found")
    probe = subprocess.run([unshare, "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a mount namespace here")
    quoted = shlex.quote(str(path))
    return [
        unshare,
        "-m",
        "sh",
        "-c",
        f'mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted} && exec "$@"',
        "sh",
    ]


def test_read_only_data_dir(tmp_path: Path) -> None:
    """An existing data dir the server cannot write (with a store and keys in it): one line naming it, exit 2."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin.key").write_text("a-fine-long-admin-key-0123456789\n", encoding="utf-8")
    (data / "courtlink.sqlite3").write_bytes(b"")
    prefix = _read_only_prefix(data)
    try:
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "courtlink.cli", "serve", "--port", "0", "--data-dir", str(data)],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        data.chmod(0o700)
    _refused(result, f"data dir {data}", "--data-dir", "not writable")


def test_settings_the_front_door_refuses(tmp_path: Path) -> None:
    """A short token secret (variable or data-dir file), a public_url without scheme: named, value never shown."""
    env = {"COURTLINK_TOKENS__SECRET": SHORT_KEY}
    _refused(_serve(tmp_path, env=env), "environment variable COURTLINK_TOKENS__SECRET", "tokens.secret", "32")
    cfg = _config(tmp_path, 'public_url = "hearings.court.example"\n')
    _refused(_serve(tmp_path, "--config", str(cfg)), f"settings file {cfg}", "public_url", "http://")
    data = tmp_path / "data"
    data.mkdir()
    (data / "token.secret").write_text(SHORT_KEY + "\n", encoding="utf-8")
    _refused(_serve(tmp_path, "--data-dir", str(data)), str(data / "token.secret"), "at least 32")
