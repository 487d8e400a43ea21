"""The recorder's Ed25519 signing keys: created on first run, kept as PEM files with mode 0600.

Each recorder (``recorder_id``) has its own key, so two independent recorders
of one hearing produce independently signed archives. Beside each signing key
lies its public record, ``<recorder_id>.<key_id>.public.json`` (key id, base64
public key, recorder, ``not_before``/``not_after``). Rotating a key
(:func:`rotate_key`) closes the old record's period and deletes the old
private key, but keeps the old public record, so seals made before the
rotation still verify. :func:`public_keys` lists every record, as
``/api/v1/recorder/keys`` serves them and ``courtlink recorder keys export``
writes them; a verifier trusts exactly these (:mod:`recorder.trust`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recorder.chain import ALGORITHM, key_id_of, verify_signature
from recorder.trust import PUBLIC_SUFFIX, format_time, key_dir_keys, keys_from_file

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class SigningKey:
    """One recorder's private key, with its public half as stored in seals."""

    private: Ed25519PrivateKey
    key_id: str
    public_b64: str

    def sign(self, data: bytes) -> str:
        """Base64 Ed25519 signature over ``data``."""
        return base64.b64encode(self.private.sign(data)).decode()


def key_path(key_dir: Path, recorder_id: str) -> Path:
    """Where the key of ``recorder_id`` lives."""
    return key_dir / f"{_SAFE.sub('_', recorder_id)}.ed25519.pem"


def load_or_create(key_dir: Path, recorder_id: str) -> SigningKey:
    """The recorder's key, created (0600, in a 0700 directory) if there is none yet."""
    path = key_path(key_dir, recorder_id)
    if path.exists():
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        private = loaded
    else:
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # O_EXCL: two recorders starting at once must not overwrite each other's fresh key.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return load_or_create(key_dir, recorder_id)
        finally:
            tmp.unlink()
        raw = _raw(private.public_key())
        _write_record(key_dir, recorder_id, raw, not_before=time.time(), not_after=None)
    raw = _raw(private.public_key())
    return SigningKey(private, key_id_of(raw), base64.b64encode(raw).decode())


def _record_path(key_dir: Path, recorder_id: str, key_id: str) -> Path:
    return key_dir / f"{_SAFE.sub('_', recorder_id)}.{key_id}{PUBLIC_SUFFIX}"


def _write_record(
    key_dir: Path, recorder_id: str, raw: bytes, not_before: float | None, not_after: float | None
) -> None:
    """Write (atomically) the public record of a key: what a verifier will trust it for."""
    record = {
        "key_id": key_id_of(raw),
        "algorithm": ALGORITHM,
        "public_key": base64.b64encode(raw).decode(),
        "recorder_id": recorder_id,
        "not_before": format_time(not_before) if not_before is not None else None,
        "not_after": format_time(not_after) if not_after is not None else None,
    }
    path = _record_path(key_dir, recorder_id, record["key_id"] or "")
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def rotate_key(key_dir: Path, recorder_id: str, at: float | None = None) -> SigningKey:
    """Retire the recorder's key at ``at`` (its public record kept, ``not_after`` set) and create a new one.

    Run it while the recorder is stopped: a running recorder keeps signing with
    the key it loaded, and its seals after ``at`` would not verify.
    """
    at = time.time() if at is None else at
    path = key_path(key_dir, recorder_id)
    if path.exists():
        old = load_or_create(key_dir, recorder_id)
        raw = base64.b64decode(old.public_b64)
        record = _record_path(key_dir, recorder_id, old.key_id)
        not_before = None
        if record.exists():
            (existing,) = keys_from_file(record)
            not_before = existing.not_before
        _write_record(key_dir, recorder_id, raw, not_before=not_before, not_after=at)
        path.unlink()
    new = load_or_create(key_dir, recorder_id)
    # The new key's period starts at the rotation, not at the file's creation a moment later.
    _write_record(key_dir, recorder_id, base64.b64decode(new.public_b64), not_before=at, not_after=None)
    return new


def public_keys(key_dir: Path) -> list[dict[str, Any]]:
    """Every public key of ``key_dir``, current and rotated out, as ``/api/v1/recorder/keys`` lists them.

    Each: ``key_id``, ``algorithm``, ``public_key`` (base64 raw), ``recorder_id``, ``not_before`` and
    ``not_after`` (RFC 3339 UTC, or null: open).
    """
    keys = key_dir_keys(key_dir)
    return [
        {
            "key_id": k.key_id,
            "algorithm": ALGORITHM,
            "public_key": k.public_key,
            "recorder_id": k.recorder_id,
            "not_before": format_time(k.not_before) if k.not_before is not None else None,
            "not_after": format_time(k.not_after) if k.not_after is not None else None,
        }
        for k in sorted(keys, key=lambda k: (k.recorder_id, k.not_before or 0.0, k.key_id))
    ]


def export_keys(key_dir: Path) -> dict[str, Any]:
    """The JSON ``GET /api/v1/recorder/keys`` serves (``{"items": [...]}``), for ``courtlink recorder keys export``."""
    return {"items": public_keys(key_dir)}


__all__ = [
    "ALGORITHM",
    "SigningKey",
    "export_keys",
    "key_id_of",
    "load_or_create",
    "public_keys",
    "rotate_key",
    "verify_signature",
]
