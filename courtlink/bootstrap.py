"""First-run secrets kept in the data directory: the admin API key and the token secret.

Each is created once with the system's CSPRNG, written with mode 0600 and read
back on every later start, so links and keys survive restarts.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ADMIN_KEY_FILE = "admin.key"
TOKEN_SECRET_FILE = "token.secret"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True)
class Secret:
    """A secret and whether this start created it (then it is shown once)."""

    value: str
    created: bool


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory (owner-only) if needed and return it resolved."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return data_dir.resolve()


def load_or_create(path: Path, nbytes: int = 32) -> Secret:
    """The secret stored at ``path``; created atomically (never overwritten) when missing."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return Secret(value, created=False)
    value = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first: use theirs.
        return Secret(path.read_text(encoding="utf-8").strip(), created=False)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(value + "\n")
    return Secret(value, created=True)


def admin_key(data_dir: Path) -> Secret:
    """The admin API key of this data directory."""
    return load_or_create(data_dir / ADMIN_KEY_FILE)


def token_secret(data_dir: Path) -> Secret:
    """The join-token signing secret of this data directory."""
    return load_or_create(data_dir / TOKEN_SECRET_FILE, nbytes=48)
