"""Settings: every key is documented in deploy/courtlink.example.toml, and the sources layer as promised."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from courtlink.settings import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "courtlink.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name not in ("api_keys",):
            keys += _keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_key_is_documented_in_the_example() -> None:
    """Each settings key (nested ones under their [section]) appears in the example file."""
    text = EXAMPLE.read_text(encoding="utf-8")
    sections: dict[str, str] = {"": text.split("\n[", 1)[0]}
    for match in re.finditer(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, flags=re.M | re.S):
        sections[match.group(1)] = match.group(2)
    missing = []
    for key in _keys(Settings):
        section, _, name = key.rpartition(".")
        body = sections.get(section, "")
        if not re.search(rf"^#?\s*{name}\s*=|^#?\s*\[\[{name}\]\]", body, flags=re.M):
            missing.append(key)
    assert missing == []


def test_example_file_loads_with_defaults() -> None:
    """The example file is valid settings and equals the defaults."""
    assert load_settings(EXAMPLE).model_dump() == load_settings().model_dump()


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """COURTLINK_* variables win over the TOML file, explicit overrides win over both."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("port = 9001\n[media]\nlast_n = 3\n", encoding="utf-8")
    monkeypatch.setenv("COURTLINK_MEDIA__LAST_N", "5")
    settings = load_settings(cfg)
    assert (settings.port, settings.media.last_n) == (9001, 5)
    assert load_settings(cfg, port=9100).port == 9100


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    """A misspelt key in the file is an error naming it and the file, not silently ignored."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("prot = 9001\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"settings file {cfg}: prot: unknown key"):
        load_settings(cfg)
