"""The client speaks English and Chinese: chosen from the browser's languages, switchable with the toggle."""

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


def test_language_toggle_switches_visible_strings(court_server: Server, participants: Participants) -> None:
    """An English page switches to zh-CN with the toggle: headings, labels, buttons and role names change."""
    en, zh = catalog("en"), catalog("zh-CN")
    shots = participants.artifacts("i18n")
    booking = court_server.book([("Chen Jing", "judge", "court"), ("Sun Hao", "defendant", "remote")])
    page = participants.open(booking.links["defendant"], locale="en-US")
    page.wait_for_selector("body[data-view=prejoin]")
    checked = {
        "#prejoin-heading": "prejoin.heading",
        "#pj-join": "prejoin.join",
        "#pj-role": "role.defendant",
        "label[for=pj-camera]": "prejoin.camera",
        "#pj-network": "prejoin.test_network",
    }
    for selector, key in checked.items():
        assert page.locator(selector).inner_text().strip() == en[key]
    assert page.locator("html").get_attribute("lang") == "en"

    page.get_by_role("button", name=en["lang.toggle_label"]).click()
    page.wait_for_selector("html[lang=zh-CN]")
    for selector, key in checked.items():
        text = page.locator(selector).inner_text().strip()
        assert text == zh[key]
        assert text != en[key]
    assert page.locator("#lang-toggle").get_attribute("aria-label") == zh["lang.toggle_label"]
    page.screenshot(path=str(shots / "prejoin-zh-CN.png"))

    # The choice holds in the hearing too: the judge's console in Chinese after the toggle.
    judge = participants.open(booking.links["judge"], locale="en-US")
    judge.get_by_role("button", name=en["lang.toggle_label"]).click()
    judge.wait_for_selector("html[lang=zh-CN]")
    participants.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    assert judge.locator("button[data-action=open]").inner_text().strip() == zh["session.open"]
    assert judge.locator("#console-heading").inner_text().strip() == zh["console.heading"]
    judge.screenshot(path=str(shots / "judge-console-zh-CN.png"))

    # And back to English.
    judge.get_by_role("button", name=zh["lang.toggle_label"]).click()
    judge.wait_for_selector("html[lang=en]")
    assert judge.locator("button[data-action=open]").inner_text().strip() == en["session.open"]


def test_chinese_browser_starts_in_chinese(court_server: Server, participants: Participants) -> None:
    """A browser whose preferred language is Chinese gets the zh-CN catalog without touching the toggle."""
    zh = catalog("zh-CN")
    booking = court_server.book([("Chen Jing", "judge", "court"), ("Zhou Yu", "witness", "remote")])
    page = participants.open(booking.links["witness"], locale="zh-CN")
    page.wait_for_selector("body[data-view=prejoin]")
    page.wait_for_selector("html[lang=zh-CN]")
    assert page.locator("#prejoin-heading").inner_text().strip() == zh["prejoin.heading"]
    assert page.locator("#pj-role").inner_text().strip() == zh["role.witness"]


def test_catalogs_cover_every_key() -> None:
    """Both catalogs have the same keys, no empty string, and every data-i18n key of the page exists."""
    en, zh = catalog("en"), catalog("zh-CN")
    assert set(en) == set(zh)
    assert all(isinstance(v, str) and v.strip() for v in (*en.values(), *zh.values()))
    page = (CATALOGS.parent / "index.html").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n(?:-aria|-title)?="([^"]+)"', page))
    assert keys, "the page names no catalog keys"
    assert keys <= set(en), sorted(keys - set(en))
