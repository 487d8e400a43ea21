"""One typed settings tree for every courtlink process.

Sources, later ones winning: defaults, an optional TOML file (``--config`` or
``COURTLINK_CONFIG``), then environment variables ``COURTLINK_*`` (nested keys
with ``__``, e.g. ``COURTLINK_MEDIA__LAST_N=4``). Every key is documented in
``deploy/courtlink.example.toml``.

A setting that cannot be used is a :class:`ConfigError`: one line naming the
file or environment variable and the key, never the value (it may be a secret).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "COURTLINK_"
CONFIG_ENV = "COURTLINK_CONFIG"
MIN_TURN_SECONDS = 60
MAX_TURN_SECONDS = 24 * 3600
TURN_URL = re.compile(r"turns?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?(\?transport=(udp|tcp))?")
"""A TURN URL as RFC 7065 writes it (host, optional port and transport)."""


class ConfigError(Exception):
    """Settings that cannot be used, said in one line (file or variable, key, what is wrong; never the value)."""


class ApiKeySetting(BaseModel):
    """A management API key and what it may do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="Who holds the key; appears in the audit log.")
    key: SecretStr = Field(description="The bearer secret (at least 16 characters).", min_length=16)
    scope: Literal["clerk", "admin"] = Field(description="clerk: book and manage hearings; admin: everything.")


class TokenSettings(BaseModel):
    """Join tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr | None = Field(
        default=None, description="HS256 signing secret; created on first run and kept in the data dir when unset."
    )
    margin_before_minutes: int = Field(default=30, ge=0, le=24 * 60, description="Link valid this long before start.")
    margin_after_minutes: int = Field(default=120, ge=0, le=7 * 24 * 60, description="Link valid this long after end.")


class MediaSettings(BaseModel):
    """The media node embedded in ``courtlink serve``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str = Field(default="node-1", description="Stable id of the embedded media node.")
    region: str = Field(default="", description="Region of the node, for placement.")
    announce_addresses: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="ICE host addresses the node announces: its reachable (or public) address in production.",
    )
    ice_servers: list[str] = Field(
        default_factory=list, description="STUN/TURN URLs given to clients and the node (none by default)."
    )
    last_n: int = Field(default=6, ge=1, le=64, description="Video of the N most recent speakers is forwarded.")
    capacity_peers: int = Field(
        default=300, ge=1, le=100_000, description="Peer connections the node is sized for (its load is peers/this)."
    )
    frame_host: str = Field(
        default="127.0.0.1", description="Address the node's frame pipe listens on (recorders connect there)."
    )
    frame_port: int = Field(default=0, ge=0, le=65535, description="Port of the frame pipe (0: any free port).")
    frame_advertise: str | None = Field(
        default=None,
        description="host:port recorders should use for the frame pipe (default: frame_host and the bound port).",
    )
    turn_urls: list[str] = Field(
        default_factory=list,
        description="turn:/turns: URLs of the TURN service (coturn) given to clients with time-limited credentials, "
        "e.g. turn:turn.court.example:3478?transport=udp. The media node itself does not use TURN.",
    )
    turn_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="The secret shared with coturn (its static-auth-secret, use-auth-secret); required with turn_urls.",
    )
    turn_credential_seconds: int = Field(
        default=3600,
        ge=MIN_TURN_SECONDS,
        le=MAX_TURN_SECONDS,
        description="How long a TURN credential issued in `joined` is valid (a new one comes with every join).",
    )
    udp_port_min: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Lowest UDP port the node's ICE host candidates bind (with udp_port_max; 0 and 0: any port).",
    )
    udp_port_max: int = Field(
        default=0, ge=0, le=65535, description="Highest UDP port the node's ICE host candidates bind."
    )
    adaptation: bool = Field(
        default=True,
        description="Adapt what each subscriber receives to its bandwidth estimate (REMB): pause video by priority, "
        "cap publishers, budget resends. False: forward everything and resend every NACK.",
    )
    adapt_hold_seconds: float = Field(
        default=3.0, gt=0, le=60, description="At most one pause/resume change per subscriber in this many seconds."
    )
    min_video_kbps: int = Field(
        default=150, ge=30, le=100_000, description="The lowest bitrate the node asks a publisher's video for."
    )
    nack_budget_share: float = Field(
        default=0.2, gt=0, le=1, description="Share of a subscriber's estimate that resends (NACK answers) may use."
    )
    simulcast: bool = Field(
        default=True,
        description="Take browsers' camera video in simulcast layers and give each subscriber one layer by its tile "
        "size (and, with adaptation, its bandwidth). False: answer without simulcast; browsers send one layer.",
    )

    @model_validator(mode="after")
    def _udp_port_range(self) -> MediaSettings:
        if (self.udp_port_min == 0) != (self.udp_port_max == 0):
            raise ValueError("udp_port_min and udp_port_max go together: set both (a range) or neither")
        if self.udp_port_min > self.udp_port_max:
            raise ValueError(f"udp_port_min ({self.udp_port_min}) is above udp_port_max ({self.udp_port_max})")
        return self

    @field_validator("turn_urls")
    @classmethod
    def _turn_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not TURN_URL.fullmatch(url):
                raise ValueError(
                    "each entry must be a turn: or turns: URL, host[:port] with an optional ?transport=udp|tcp"
                )
        return urls

    @model_validator(mode="after")
    def _turn_pair(self) -> MediaSettings:
        if self.turn_urls and self.turn_secret is None:
            raise ValueError("turn_urls are set but turn_secret (coturn's static-auth-secret) is not")
        return self


class ClusterSettings(BaseModel):
    """How the processes of a multi-process deployment (signaling, media-node, recorder) work together on Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    process_id: str | None = Field(
        default=None,
        max_length=128,
        description="This process's id on the bus (default: host name and process id); unique per process.",
    )
    request_seconds: float = Field(default=2.0, gt=0, le=60, description="How long one bus request waits.")
    request_retries: int = Field(default=2, ge=0, le=10, description="Retries of a bus request that got no reply.")
    lease_seconds: float = Field(
        default=6.0,
        ge=1,
        le=120,
        description="A live room's owner lease; renewed every third of it, taken over by another signaling "
        "process when it lapses.",
    )
    secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="Shared by the processes of one deployment: authenticates recorders on a node's frame pipe.",
    )


class SessionSettings(BaseModel):
    """The WebSocket session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resume_grace_seconds: float = Field(
        default=30, gt=0, le=600, description="How long a dropped participant keeps their place."
    )
    max_message_bytes: int = Field(
        default=65536, ge=1024, le=1 << 20, description="Largest accepted WebSocket message."
    )
    rate_per_second: float = Field(default=20, gt=0, description="Sustained messages per second per connection.")
    rate_burst: int = Field(default=50, ge=1, description="Burst of messages allowed per connection.")
    join_timeout_seconds: float = Field(default=10, gt=0, le=300, description="Time to send `join` after connecting.")
    send_queue: int = Field(default=256, ge=8, le=65536, description="Messages queued for a slow client before 1013.")


class HttpSettings(BaseModel):
    """The HTTP front door's connection limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger request bodies get 413."
    )
    header_timeout_seconds: float = Field(
        default=15,
        gt=0,
        le=3600,
        description="A connection without a complete request head this long after opening or its last answer "
        "is closed (half-sent requests, idle keep-alive).",
    )
    body_timeout_seconds: float = Field(
        default=30, gt=0, le=3600, description="A request body not received in full this long gets 408."
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) file: serve HTTPS and WSS (with tls_key)."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key file of tls_cert (not encrypted).")

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self


class RecorderSettings(BaseModel):
    """The recorder embedded in ``courtlink serve``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Every hearing is recorded; switch off only for tests.")
    recorder_id: str = Field(default="rec-1", description="Distinguishes independent recorders of the same hearing.")
    segment_seconds: float = Field(default=10, gt=0.5, le=600, description="Target length of one segment.")
    queue_frames: int = Field(
        default=2000, ge=10, description="Bound of the write queue; when full the recording degrades."
    )


class Settings(BaseSettings):
    """Everything a courtlink process can be told."""

    model_config = SettingsConfigDict(env_prefix="COURTLINK_", env_nested_delimiter="__", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on (0: any free port).")
    data_dir: Path = Field(
        default=Path("courtlink-data"), description="Where the embedded store, keys and recordings live."
    )
    public_url: str | None = Field(
        default=None, description="Base URL for join links; derived from the request when unset."
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://... switches every store to Redis; redis+cluster://node:port to a Redis Cluster.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="The admin API key (at least 16 characters); created on first run and kept in the data dir "
        "when unset.",
    )
    api_keys: list[ApiKeySetting] = Field(default_factory=list, description="Further API keys (clerks, case systems).")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log threshold.")
    log_format: Literal["json", "console"] = Field(default="json", description="Log line format.")
    court_timezone: str = Field(
        default="Asia/Shanghai",
        pattern=r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
        description="The court's time zone (IANA name): the judge's clock and the scheduled window are shown in it.",
    )
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = settings_cls.model_config.get("toml_file") or os.environ.get(CONFIG_ENV)
        if config_file:
            path = Path(str(config_file))
            if not path.is_file():
                raise ConfigError(f"{CONFIG_ENV} names {path}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from defaults, the TOML file, the environment, then explicit overrides (CLI flags).

    Raises :class:`ConfigError` (one line, no secret) when a file is missing or unreadable, or a value is wrong.
    """
    config_file = Path(config_file) if config_file is not None else None
    env_file = os.environ.get(CONFIG_ENV)
    file = config_file or (Path(env_file) if env_file else None)
    where = f"--config {config_file}" if config_file is not None else f"{CONFIG_ENV}={env_file}"
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"settings file {file} ({where}) does not exist or is not a file")
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read settings file {file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"settings file {file} is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {file} is not valid TOML: {exc}") from None
    else:
        document = {}
    cls: type[Settings] = Settings
    if config_file is not None:

        class _FromFile(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": config_file})

        cls = _FromFile
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, file, document, clean)) from None
    except SettingsError as exc:
        raise ConfigError(_settings_error(str(exc))) from None


def _dotted(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _env_name(loc: Sequence[int | str]) -> str | None:
    """The ``COURTLINK_*`` variable that set the key at ``loc`` (or one of its parents), if one is set."""
    names = {k.upper(): k for k in os.environ}
    keys = [str(p) for p in loc if isinstance(p, str)]
    for n in range(len(keys), 0, -1):
        name = ENV_PREFIX + "__".join(keys[:n]).upper()
        if name in names:
            return names[name]
    return None


_MESSAGES = {
    "extra_forbidden": "unknown key (see deploy/courtlink.example.toml for every key)",
    "missing": "missing",
}


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in ("too_short", "string_too_short") and "min_length" in ctx:
        return f"must be at least {ctx['min_length']} characters long"
    if kind in ("too_long", "string_too_long") and "max_length" in ctx:
        return f"must be at most {ctx['max_length']} characters long"
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:] if msg[1:2].islower() else msg


def describe_errors(
    exc: ValidationError,
    file: Path | None = None,
    document: Mapping[str, Any] | None = None,
    overrides: Mapping[str, object] | None = None,
    renamed: Mapping[str, tuple[str, ...]] | None = None,
) -> str:
    """One line for a settings validation error: where the key was set, which key, what is wrong; no values.

    ``renamed`` maps the first part of an error's location to a settings key, for errors of a model built
    from the settings (e.g. the signaling configuration's ``token_secret`` is ``tokens.secret``).
    """
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    if renamed and loc and str(loc[0]) in renamed:
        loc = renamed[str(loc[0])] + loc[1:]
    key = _dotted(loc) or "settings"
    top = str(loc[0]) if loc else ""
    env = _env_name(loc)
    if overrides and top in overrides:
        where = f"--{top.replace('_', '-')}"
    elif env is not None:
        where = f"environment variable {env}"
    elif file is not None and (document is None or top in document):
        where = f"settings file {file}"
    else:
        where = "settings"
    others = [k for k in dict.fromkeys(_dotted(tuple(e.get("loc", ()))) for e in errors[1:]) if k != key]
    more = f" (also wrong: {', '.join(others)})" if others else ""
    return f"{where}: {key}: {_message(first)}{more}"


def _settings_error(text: str) -> str:
    """pydantic-settings' parse error (a variable that is not JSON) as one line naming the variable."""
    match = re.search(r'field "(\w+)"', text)
    if match:
        name = _env_name((match.group(1),)) or f"{ENV_PREFIX}{match.group(1).upper()}"
        return f"environment variable {name}: {match.group(1)}: not valid JSON"
    return text.splitlines()[0] if text else "invalid settings"
