"""The pre-join network check in Chromium: a WebRTC echo from the media node shows round-trip time and bitrate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

CATALOGS = Path(__file__).resolve().parents[2] / "signaling" / "web" / "i18n"


def catalog(lang: str) -> dict[str, str]:
    """One catalog file of the client."""
    data: dict[str, str] = json.loads((CATALOGS / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def pattern(template: str) -> re.Pattern[str]:
    """A catalog string with its {placeholders} as number patterns."""
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else rf"(?P<{p}>[0-9.]+)" for i, p in enumerate(parts))
    return re.compile(regex)


@pytest.mark.parametrize(("locale", "lang"), [("en-US", "en"), ("zh-CN", "zh-CN")])
def test_network_check_shows_media_round_trip_and_bitrate(
    court_server: Server, participants: Participants, locale: str, lang: str
) -> None:
    """Clicking the network check runs the WebRTC probe: the page shows an RTT in ms and up/down Mbit/s."""
    strings = catalog(lang)
    booking = court_server.book([("Chen Jing", "judge", "court"), ("Sun Hao", "witness", "remote")])
    page = participants.open(booking.links["witness"], locale=locale)
    page.wait_for_selector("body[data-view=prejoin]")
    # The preview must be running: the check sends it.
    page.wait_for_function("() => document.getElementById('pj-preview')?.srcObject?.getTracks().length > 0")
    page.click("#pj-network")
    page.wait_for_selector("#pj-network-result[data-kind]", timeout=30_000)
    result = page.locator("#pj-network-result")
    text = result.inner_text().strip()
    assert result.get_attribute("data-kind") == "media", text
    match = pattern(strings["prejoin.network_media"]).fullmatch(text)
    assert match is not None, text
    assert int(match["rtt"]) >= 0
    assert float(match["up"]) > 0
    assert float(match["down"]) > 0
    assert (result.get_attribute("data-rtt") or "").isdigit()
    page.screenshot(path=str(participants.artifacts("probe") / f"network-check-{lang}.png"))
