"""The TLS certificate and key checks of `courtlink serve`, without starting a server."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from courtlink.settings import ConfigError, HttpSettings
from courtlink.tls import server_context
from tests.tls_fixtures import make_pair


def test_a_usable_pair_gives_a_server_context_and_none_without_tls(tmp_path: Path) -> None:
    """A matching certificate and key give an SSL server context (TLS 1.2 at least); no TLS settings give none."""
    cert, key = make_pair(tmp_path)
    context = server_context(HttpSettings(tls_cert=cert, tls_key=key))
    assert isinstance(context, ssl.SSLContext)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server_context(HttpSettings()) is None


def test_an_encrypted_or_unreadable_key_is_named(tmp_path: Path) -> None:
    """An encrypted key, a key file that is not PEM, or a directory in place of a file is refused in one line."""
    cert, key = make_pair(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(ConfigError, match=r"^http\.tls_key: .*encrypted.key is encrypted; give an unencrypted PEM"):
        server_context(HttpSettings(tls_cert=cert, tls_key=encrypted))
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^http\.tls_key: .*garbage.key is not a PEM private key$"):
        server_context(HttpSettings(tls_cert=cert, tls_key=garbage))
    with pytest.raises(ConfigError, match=r"^--tls-cert: certificate file .* is not a file$"):
        server_context(HttpSettings(tls_cert=tmp_path, tls_key=key), "--tls-cert", "--tls-key")
