"""The media node's UDP port range ([media] udp_port_min/max): validated at start, and its aioice names self-checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from courtlink.settings import ConfigError, load_settings
from courtlink.wiring import node_settings
from media import AiortcMismatch
from media.aiortc_compat import self_check
from media.settings import NodeSettings


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f"[media]\n{body}\n", encoding="utf-8")
    return path


def test_a_range_reaches_the_node(tmp_path: Path) -> None:
    """udp_port_min/max in the settings file become the node's port range; none set means ephemeral ports."""
    settings = load_settings(_config(tmp_path, "udp_port_min = 40000\nudp_port_max = 40099"))
    assert node_settings(settings).udp_ports == (40000, 40099)
    assert node_settings(load_settings()).udp_ports == (0, 0)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("udp_port_min = 40100\nudp_port_max = 40000", "udp_port_min (40100) is above udp_port_max (40000)"),
        ("udp_port_min = 40000", "go together"),
        ("udp_port_max = 40000", "go together"),
        ("udp_port_min = 40000\nudp_port_max = 70000", "udp_port_max"),
    ],
)
def test_a_bad_range_is_refused_by_name(tmp_path: Path, body: str, named: str) -> None:
    """A reversed range, half a range or a port past 65535 is refused at start with a message naming the key."""
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings(_config(tmp_path, body))


def test_node_settings_refuse_half_a_range() -> None:
    """NodeSettings, built by code, apply the same rule."""
    with pytest.raises(ValidationError, match="go together"):
        NodeSettings(udp_port_min=40000)
    with pytest.raises(ValidationError, match="above"):
        NodeSettings(udp_port_min=40001, udp_port_max=40000)
    assert NodeSettings(udp_port_min=40000, udp_port_max=40000).udp_ports == (40000, 40000)


def test_self_check_covers_the_port_range_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """An aioice whose server-reflexive lookup changed its parameters stops the node at start, by name."""

    async def changed(stun_server: object) -> None:
        return None

    monkeypatch.setattr("media.aiortc_compat.server_reflexive_candidate", changed)
    with pytest.raises(AiortcMismatch, match=r"aioice\.ice\.server_reflexive_candidate\(protocol, stun_server\)"):
        self_check()
