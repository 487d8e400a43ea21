"""The recorder's Ed25519 signing keys: created on first run, kept as PEM files with mode 0600.

Each recorder (``recorder_id``) has its own key, so two independent recorders
of one hearing produce independently signed archives. The seal line of a
manifest carries the signer's public key and key id; a verifier may also be
given the set of keys it trusts (``/api/v1/recorder/keys``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def key_id_of(public_raw: bytes) -> str:
    """A short stable id of a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


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
    return SigningKey(private, key_id_of(raw), base64.b64encode(raw).decode())


def public_keys(key_dir: Path) -> list[dict[str, str]]:
    """Every public key in ``key_dir`` as ``{key_id, algorithm, public_key (base64 raw), recorder_id}``."""
    keys: list[dict[str, str]] = []
    if not key_dir.is_dir():
        return keys
    for path in sorted(key_dir.glob("*.ed25519.pem")):
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            continue
        raw = _raw(loaded.public_key())
        keys.append(
            {
                "key_id": key_id_of(raw),
                "algorithm": ALGORITHM,
                "public_key": base64.b64encode(raw).decode(),
                "recorder_id": path.name.removesuffix(".ed25519.pem"),
            }
        )
    return keys


def verify_signature(public_b64: str, signature_b64: str, data: bytes) -> bool:
    """Whether ``signature_b64`` is a valid Ed25519 signature of ``data`` by ``public_b64``."""
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64, validate=True))
        public.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True
