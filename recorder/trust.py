"""Which recorder keys a verifier trusts: standard library and ``cryptography`` only (see :mod:`recorder.chain`).

A trusted key is a recorder's Ed25519 *public* key with its validity period
(``not_before``/``not_after``, RFC 3339 UTC, either may be null) and the
recorder it belongs to. A seal verifies only if its key is one of them, the
seal's time lies inside the key's period, and the key belongs to the session's
recorder. Keys come from

- :func:`load_trusted`: what a court keeps next to the recordings, in any of
  three forms: the JSON that ``GET /api/v1/recorder/keys`` serves (and
  ``courtlink recorder keys export`` writes), ``{"items": [...]}``; a PEM file
  of one or more public keys; or a folder of such files. A private key in any
  of them is refused (:class:`TrustError`): a verifier never needs one.
- :func:`data_dir_keys`: the public keys of a server's data directory (the
  recorder writes a public record next to each signing key, and keeps it when
  the key is rotated).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder.chain import ALGORITHM, key_id_of

PUBLIC_SUFFIX = ".public.json"
"""A public key record in a key directory: ``<recorder_id>.<key_id>.public.json``."""
PRIVATE_SUFFIX = ".ed25519.pem"
"""A recorder's current signing key in a key directory: ``<recorder_id>.ed25519.pem`` (mode 0600)."""
_KEY_FILE_SUFFIXES = (".json", ".pem", ".pub")
_MAX_KEY_FILE = 1 << 20
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


class TrustError(ValueError):
    """The trusted keys given cannot be used (unreadable, not public keys, or a private key)."""


@dataclass(frozen=True)
class TrustedKey:
    """One public key a verifier accepts seals from."""

    public_key: str
    """Raw Ed25519 public key, base64."""
    key_id: str
    recorder_id: str = ""
    """The recorder the key belongs to ("" when the source did not say)."""
    not_before: float | None = None
    """Unix seconds from which the key may seal (None: from the start)."""
    not_after: float | None = None
    """Unix seconds after which the key may no longer seal (None: still current)."""
    source: str = ""
    """Where the key came from (a file name), for messages."""

    def valid_at(self, at: float) -> bool:
        """Whether the key may seal at ``at`` (Unix seconds)."""
        return (self.not_before is None or at >= self.not_before) and (self.not_after is None or at <= self.not_after)

    def period(self) -> str:
        """The validity period in words."""
        return f"{format_time(self.not_before) if self.not_before else 'the start'} to " + (
            format_time(self.not_after) if self.not_after else "now"
        )


def format_time(t: float | None) -> str:
    """Unix seconds as RFC 3339 UTC with microseconds (the format of key records and verify's output)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any, what: str) -> float | None:
    """An RFC 3339 string or Unix seconds (or null) as Unix seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TrustError(f"{what} is not a time: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TrustError(f"{what} is not an RFC 3339 time: {value!r}") from None
        if parsed.tzinfo is None:
            raise TrustError(f"{what} has no time zone: {value!r}")
        return parsed.timestamp()
    raise TrustError(f"{what} is not a time: {value!r}")


def _public_b64(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TrustError(f"{what}: public_key is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise TrustError(f"{what}: public_key is not a base64 Ed25519 public key") from None
    return base64.b64encode(raw).decode()


def key_from_record(record: Any, source: str) -> TrustedKey:
    """One key record (an item of ``/api/v1/recorder/keys``) or a bare base64 public key string."""
    if isinstance(record, str):
        public = _public_b64(record, source)
        return TrustedKey(public, key_id_of(base64.b64decode(public)), source=source)
    if not isinstance(record, dict):
        raise TrustError(f"{source}: a key must be an object with public_key, not {type(record).__name__}")
    if any("private" in str(name).lower() for name in record):
        raise TrustError(f"{source} holds a private key: give public keys only (courtlink recorder keys export)")
    algorithm = str(record.get("algorithm", ALGORITHM)).lower()
    if algorithm != ALGORITHM:
        raise TrustError(f"{source}: algorithm {algorithm!r} is not {ALGORITHM}")
    public = _public_b64(record.get("public_key"), source)
    key_id = key_id_of(base64.b64decode(public))
    if record.get("key_id") not in (None, key_id):
        raise TrustError(f"{source}: key_id {record.get('key_id')!r} does not match its public key ({key_id})")
    return TrustedKey(
        public,
        key_id,
        str(record.get("recorder_id") or ""),
        parse_time(record.get("not_before"), f"{source}: not_before"),
        parse_time(record.get("not_after"), f"{source}: not_after"),
        source,
    )


def keys_from_json(data: Any, source: str) -> list[TrustedKey]:
    """Keys from parsed JSON: ``{"items": [...]}`` (the keys API), ``{"keys": [...]}``, a list, or one record."""
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        items: list[Any] = data["items"]
    elif isinstance(data, dict) and isinstance(data.get("keys"), list):
        items = data["keys"]
    elif isinstance(data, list):
        items = data
    elif isinstance(data, dict) and "public_key" in data:
        items = [data]
    else:
        if isinstance(data, dict) and any("private" in str(name).lower() for name in data):
            raise TrustError(f"{source} holds a private key: give public keys only (courtlink recorder keys export)")
        raise TrustError(f"{source} is not a key list (expected the JSON of /api/v1/recorder/keys)")
    return [key_from_record(item, source) for item in items]


def keys_from_pem(data: bytes, source: str) -> list[TrustedKey]:
    """Every ``PUBLIC KEY`` block of a PEM file (Ed25519 only)."""
    keys: list[TrustedKey] = []
    for block in _PEM_PUBLIC.finditer(data):
        try:
            public = serialization.load_pem_public_key(block.group(0))
        except ValueError as exc:
            raise TrustError(f"{source}: unreadable public key ({exc})") from None
        if not isinstance(public, Ed25519PublicKey):
            raise TrustError(f"{source}: not an Ed25519 public key")
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys.append(TrustedKey(base64.b64encode(raw).decode(), key_id_of(raw), source=source))
    if not keys:
        raise TrustError(f"{source} holds no PUBLIC KEY block")
    return keys


def _read_key_file(path: Path) -> bytes:
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise TrustError(f"{path} is not a regular file")
    if info.st_size > _MAX_KEY_FILE:
        raise TrustError(f"{path} is too large for a key file")
    return path.read_bytes()


def keys_from_file(path: Path) -> list[TrustedKey]:
    """Keys from one file: JSON (the keys API's answer, an export) or PEM public keys; private keys refused."""
    data = _read_key_file(path)
    if b"PRIVATE KEY" in data:
        raise TrustError(f"{path} holds a private key: give public keys only (courtlink recorder keys export)")
    if data.lstrip().startswith(b"-----BEGIN"):
        return keys_from_pem(data, str(path))
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise TrustError(f"{path} is neither JSON nor PEM ({exc})") from None
    return keys_from_json(parsed, str(path))


def load_trusted(path: Path) -> list[TrustedKey]:
    """Keys from a file or a folder of key files (``*.json``, ``*.pem``, ``*.pub``); see the module docstring."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise TrustError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        return keys_from_file(path)
    keys: list[TrustedKey] = []
    for child in sorted(path.iterdir()):
        if child.name.endswith(_KEY_FILE_SUFFIXES):
            keys.extend(keys_from_file(child))
    if not keys:
        raise TrustError(f"{path} holds no public key files (*.json, *.pem, *.pub)")
    return keys


def key_dir_of(data_dir: Path) -> Path:
    """Where the recorders' keys live under a data directory."""
    return data_dir / "recorder" / "keys"


def data_dir_keys(data_dir: Path) -> list[TrustedKey]:
    """The public keys of a server's data directory (see :func:`key_dir_keys`)."""
    return key_dir_keys(key_dir_of(data_dir))


def key_dir_keys(key_dir: Path) -> list[TrustedKey]:
    """The public keys of a recorder key directory: every public record, current and rotated out.

    A signing key older than public records (no record beside it) counts with
    an open validity period. Private keys are read only to derive that public half.
    """
    if not key_dir.is_dir():
        return []
    keys: dict[str, TrustedKey] = {}
    for path in sorted(key_dir.glob(f"*{PUBLIC_SUFFIX}")):
        for key in keys_from_file(path):
            keys[key.public_key] = key
    for path in sorted(key_dir.glob(f"*{PRIVATE_SUFFIX}")):
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError):
            continue
        if not isinstance(loaded, Ed25519PrivateKey):
            continue
        raw = loaded.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        public = base64.b64encode(raw).decode()
        if public not in keys:
            recorder_id = path.name.removesuffix(PRIVATE_SUFFIX)
            keys[public] = TrustedKey(public, key_id_of(raw), recorder_id, source=str(path))
    return list(keys.values())
