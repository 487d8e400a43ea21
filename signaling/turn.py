"""Time-limited TURN credentials in coturn's shared-secret scheme (the "TURN REST API").

coturn run with ``use-auth-secret`` and ``static-auth-secret=<secret>`` accepts
any user name of the form ``<expiry unix seconds>:<anything>`` whose password is
``base64(HMAC-SHA1(secret, username))``, until the expiry passes. Signaling,
which shares the secret with coturn, so hands every participant fresh
credentials in ``joined`` (on each join and resume) without any per-user state
on the TURN server, and a leaked credential stops working by itself.

Pure computation: no I/O, no clock of its own (the caller passes ``now``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from protocol.client import IceServer

MIN_LIFETIME_SECONDS = 60
MAX_LIFETIME_SECONDS = 24 * 3600

_SAFE_USER = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""A participant id used as is in the TURN user name (anything else is replaced by a random user)."""


def turn_credential(secret: str, username: str) -> str:
    """The password coturn expects for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def turn_username(user: str, now: float, lifetime_seconds: int) -> str:
    """``<expiry unix seconds>:<user>``, the user name of a credential valid ``lifetime_seconds`` from ``now``."""
    if not _SAFE_USER.fullmatch(user):
        user = secrets.token_hex(8)
    return f"{int(now) + lifetime_seconds}:{user}"


class TurnSettings(BaseModel):
    """Where the TURN servers are and the secret shared with them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: tuple[str, ...] = Field(default=(), description="turn:/turns: URLs of one TURN service (coturn).")
    secret: SecretStr | None = Field(default=None, description="coturn's static-auth-secret.")
    lifetime_seconds: int = Field(
        default=3600,
        ge=MIN_LIFETIME_SECONDS,
        le=MAX_LIFETIME_SECONDS,
        description="How long an issued credential is valid.",
    )


class TurnIssuer:
    """Issues one participant's TURN server entry with a fresh time-limited credential."""

    def __init__(self, settings: TurnSettings) -> None:
        if not settings.urls or settings.secret is None:
            raise ValueError("TURN needs both URLs and the shared secret")
        self._urls = settings.urls
        self._secret = settings.secret
        self.lifetime_seconds = settings.lifetime_seconds

    def issue(self, participant_id: str, now: float) -> IceServer:
        """The TURN entry for ``participant_id``'s ``joined``, valid ``lifetime_seconds`` from ``now``."""
        username = turn_username(participant_id, now, self.lifetime_seconds)
        credential = turn_credential(self._secret.get_secret_value(), username)
        return IceServer(urls=self._urls, username=username, credential=credential)

    def __repr__(self) -> str:
        return f"TurnIssuer(urls={self._urls!r}, lifetime_seconds={self.lifetime_seconds})"


def turn_issuer(settings: TurnSettings) -> TurnIssuer | None:
    """An issuer when TURN is configured (URLs and secret), else None."""
    if not settings.urls or settings.secret is None:
        return None
    return TurnIssuer(settings)
