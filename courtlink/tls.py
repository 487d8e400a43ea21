"""TLS for the HTTP front door: a certificate and key from the settings become a server SSL context.

Browsers give a page camera and microphone only in a secure context, so any
server reached by a name other than localhost must serve HTTPS (and so WSS).
Every way the pair can be unusable is one :class:`ConfigError` line naming the
file and the setting (or flag) it came from: missing, unreadable, not PEM, an
encrypted key, or a key that is not the certificate's.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from courtlink.settings import ConfigError, HttpSettings

log = structlog.get_logger("courtlink")


def _read(path: Path, what: str, where: str) -> bytes:
    if not path.exists():
        raise ConfigError(f"{where}: {what} file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"{where}: {what} file {path} is not a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {what} file {path}: {exc.strerror or exc}") from None


def check_pair(cert_path: Path, key_path: Path, cert_where: str, key_where: str) -> x509.Certificate:
    """The certificate of a usable pair, or :class:`ConfigError` saying in one line what is wrong with it."""
    cert_pem = _read(cert_path, "certificate", cert_where)
    key_pem = _read(key_path, "private key", key_where)
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_where}: {cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"{key_where}: {key_path} is encrypted; give an unencrypted PEM key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{key_where}: {key_path} is not a PEM private key") from None
    spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigError(f"{key_where}: {key_path} is not the private key of the certificate {cert_path}")
    return certificate


def server_context(
    http: HttpSettings, cert_where: str = "http.tls_cert", key_where: str = "http.tls_key"
) -> ssl.SSLContext | None:
    """The server SSL context of ``http.tls_cert``/``http.tls_key`` (None without them); one-line errors.

    ``cert_where``/``key_where`` name where each path was set (the settings key or a CLI flag).
    """
    if http.tls_cert is None or http.tls_key is None:
        return None
    certificate = check_pair(http.tls_cert, http.tls_key, cert_where, key_where)
    if certificate.not_valid_after_utc < datetime.now(UTC):
        # Still served (refusing would only trade one outage for another), but browsers will refuse it.
        log.warning(
            "tls_certificate_expired", cert=str(http.tls_cert), expired=certificate.not_valid_after_utc.isoformat()
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(http.tls_cert, http.tls_key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{cert_where}: cannot use {http.tls_cert} with {http.tls_key}: {reason}") from None
    return context
