"""The signaling front door's settings: API keys, join-token secret and margins, limits.

A plain frozen pydantic model; the composition root (``courtlink/``) fills it
from pydantic-settings. Nothing here reads the environment.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class KeyScope(StrEnum):
    """What an API key may do: ``clerk`` books and edits hearings, ``admin`` also manages sites and courtrooms."""

    clerk = "clerk"
    admin = "admin"


class ApiKey(BaseModel):
    """One configured API key of a case-management system, clerk or administrator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Who holds it; audit actor 'key:<name>'.")
    key: SecretStr = Field(description="The bearer secret (at least 16 characters).")
    scope: KeyScope = Field(description="clerk or admin.")

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("an API key must be at least 16 characters long")
        return value


class SignalingConfig(BaseModel):
    """Everything the REST front door needs to know that is not in the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_keys: tuple[ApiKey, ...] = Field(default=(), description="Accepted API keys; none means every call is 401.")
    token_secret: SecretStr = Field(description="HS256 secret that signs join tokens (at least 32 characters).")
    token_issuer: str = Field(default="courtlink", description="'iss' claim of join tokens.")
    token_audience: str = Field(default="courtlink-join", description="'aud' claim of join tokens.")
    token_margin_before: timedelta = Field(
        default=timedelta(minutes=30), ge=timedelta(0), description="A join link works this long before the start."
    )
    token_margin_after: timedelta = Field(
        default=timedelta(hours=2), ge=timedelta(0), description="A join link works this long after the booked end."
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base of join links, e.g. 'https://court.example'; default: scheme and host of the request.",
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger request bodies get 413."
    )
    header_timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="A connection without a complete request head this long after it opened or after its last "
        "answer is closed (half-sent requests, idle keep-alive connections).",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="A request body not received in full within this time gets 408."
    )

    @field_validator("token_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("the token secret must be at least 32 characters long")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_keys")
    @classmethod
    def _distinct(cls, value: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        names = [k.name for k in value]
        secrets = [k.key.get_secret_value() for k in value]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be distinct")
        if len(set(secrets)) != len(secrets):
            raise ValueError("API key secrets must be distinct")
        return value
