"""The clerk's booking page (/book): a site's link budget is shown while booking, with a warning when over it."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from signaling.webclient import CONTENT_SECURITY_POLICY

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

WEB_DIR = Path(__file__).resolve().parents[2] / "signaling" / "web"
VIEWPORT = (1024, 600)


def catalog(lang: str) -> dict[str, str]:
    """One catalog file of the client."""
    data: dict[str, str] = json.loads((WEB_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def test_booking_page_names_only_catalog_keys() -> None:
    """Every string the booking page and its script name is in both catalogs (no key shown raw to a clerk)."""
    page = (WEB_DIR / "book.html").read_text(encoding="utf-8")
    script = (WEB_DIR / "js" / "book.js").read_text(encoding="utf-8")
    keys = set(re.findall(r'data-i18n(?:-aria|-title)?="([^"]+)"', page))
    keys |= {k for k in re.findall(r't\("([a-z_]+\.[a-z_]+)"', script)}
    assert {"book.link_over", "book.link_figure", "book.submit"} <= keys
    for lang in ("en", "zh-CN"):
        missing = sorted(keys - set(catalog(lang)))
        assert not missing, f"{lang} lacks {missing}"


def test_booking_page_is_served_with_strict_headers(court_server: Server) -> None:
    """/book is served fresh with the client's Content-Security-Policy and no-referrer, like /join."""
    with urllib.request.urlopen(f"{court_server.base_url}/book", timeout=10) as resp:
        headers = dict(resp.headers.items())
        body = resp.read().decode("utf-8")
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"
    assert '<script type="module" src="/static/js/book.js">' in body


def _world(server: Server) -> dict[str, Any]:
    """A detention center with a 20 Mbit/s link, a court, a home site, courtrooms, and three arraignments tomorrow
    09:00-10:00 UTC that fill 19.5 Mbit/s of the center's link."""
    sfx = secrets.token_hex(3)
    ids = {"dc": f"dc-{sfx}", "court": f"court-{sfx}", "home": f"home-{sfx}"}
    sites = (
        (ids["dc"], "detention_center", f"No. 2 Detention Center {sfx}", 20),
        (ids["court"], "court", f"Intermediate Court {sfx}", None),
        (ids["home"], "remote", f"Home {sfx}", None),
    )
    for site_id, kind, name, link in sites:
        body: dict[str, Any] = {"id": site_id, "name": name, "kind": kind, "terminals": 10}
        if link is not None:
            body["link_mbps"] = link
        status, answer = server.request("POST", "/api/v1/sites", body)
        assert status == 201, answer
    for n in range(4):
        status, answer = server.request(
            "POST",
            "/api/v1/courtrooms",
            {"id": f"room{n}-{sfx}", "name": f"Courtroom {n} {sfx}", "site_id": ids["court"]},
        )
        assert status == 201, answer
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=1)
    for n in range(3):
        people = [
            ("judge", "court"),
            ("clerk", "court"),
            ("prosecutor", "court"),
            ("defendant", "dc"),
            ("counsel", "home"),
        ]
        status, answer = server.request(
            "POST",
            "/api/v1/hearings",
            {
                "case_number": f"(2026) Arr {n} {sfx}",
                "kind": "arraignment",
                "courtroom_id": f"room{n}-{sfx}",
                "starts_at": start.isoformat(),
                "ends_at": end.isoformat(),
                "participants": [
                    {"name": f"{role} {n} {sfx}", "role": role, "site_id": ids[site]} for role, site in people
                ],
            },
        )
        assert status == 201, answer
        assert answer["link_budget"][0]["over"] is False
    return {"sfx": sfx, "ids": ids, "start": start, "end": end, "room": f"room3-{sfx}"}


def _set_local_time(page: Page, selector: str, moment: datetime) -> None:
    """Type ``moment`` into a datetime-local input, in the browser's own time zone."""
    value = page.evaluate(
        """(iso) => { const d = new Date(iso); const p = (n) => String(n).padStart(2, "0");
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`
                + `T${p(d.getHours())}:${p(d.getMinutes())}`; }""",
        moment.isoformat(),
    )
    page.fill(selector, value)


def _fits(page: Page, selector: str) -> bool:
    """Whether the element is wholly inside the viewport (seen without scrolling the page)."""
    box = page.locator(selector).first.bounding_box()
    width, height = VIEWPORT
    return (
        box is not None
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= width
        and (box["y"] + box["height"] <= height)
    )


def test_clerk_sees_the_link_budget_and_a_warning_when_booking(
    court_server: Server, participants: Participants
) -> None:
    """At 1024x600 in zh-CN, then English: the clerk's form shows the center's link filling up and warns over it."""
    zh, en = catalog("zh-CN"), catalog("en")
    shots = participants.artifacts("booking")
    world = _world(court_server)
    sfx, ids = world["sfx"], world["ids"]
    page = participants.open(f"{court_server.base_url}/book", locale="zh-CN", viewport=VIEWPORT)

    page.wait_for_selector("body[data-view=key]")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    page.fill("#bk-key", "not-a-key")
    page.click("#bk-key-use")
    page.wait_for_selector("#bk-key-error:not([hidden])")
    assert "401" in page.locator("#bk-key-error").inner_text()
    page.fill("#bk-key", court_server.admin_key)
    page.click("#bk-key-use")
    page.wait_for_selector("body[data-view=form]")

    # An arraignment at the same time: judge at court, a defendant at the center. Before booking, the panel counts
    # it on the center's link beside the three booked ones and warns (22.3 of 20 Mbit/s).
    page.fill("#bk-case", f"(2026) New {sfx}")
    page.select_option("#bk-kind", "arraignment")
    page.select_option("#bk-room", world["room"])
    _set_local_time(page, "#bk-start", world["start"])
    _set_local_time(page, "#bk-end", world["end"])
    rows = page.locator("#bk-people > li")
    rows.nth(0).locator(".bk-name").fill(f"Judge {sfx}")
    rows.nth(0).locator(".bk-role").select_option("judge")
    rows.nth(0).locator(".bk-site").select_option(ids["court"])
    page.click("#bk-add")
    rows.nth(1).locator(".bk-name").fill(f"Defendant {sfx}")
    rows.nth(1).locator(".bk-role").select_option("defendant")
    rows.nth(1).locator(".bk-site").select_option(ids["dc"])

    dc_card = f".budget-site[data-site='{ids['dc']}']"
    page.wait_for_selector(f"{dc_card}[data-over=true] .budget-warning")
    warning = page.locator(f"{dc_card} .budget-warning")
    assert warning.get_attribute("role") == "alert"
    assert warning.inner_text().startswith(zh["book.link_over"].split("：")[0])
    assert re.search(r"22\.[23]", warning.inner_text()), warning.inner_text()
    assert "20.0" in warning.inner_text()
    assert page.locator(f"{dc_card} .budget-hearings li").count() == 4
    assert page.locator(f"{dc_card} li[data-hearing=new]").inner_text().startswith(zh["book.this_hearing"])
    court_card = f".budget-site[data-site='{ids['court']}']"
    assert page.locator(court_card).get_attribute("data-over") == "unknown"
    assert page.locator(".budget-site").first.get_attribute("data-site") == ids["dc"], "over-budget card not first"
    assert _fits(page, f"{dc_card} .budget-warning"), "the warning is not in sight at 1024x600"
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight"), "the page scrolls"
    assert participants.unlabelled_controls(page) == []
    page.screenshot(path=str(shots / "planned-zh-CN-1024x600.png"))

    # Booking stands (a warning, not a refusal); the panel now shows the answer's budget with this hearing.
    page.click("#bk-submit")
    page.wait_for_selector("#bk-result:not([hidden])")
    assert f"(2026) New {sfx}" in page.locator("#bk-result-heading").inner_text()
    assert page.locator("#bk-links li").count() == 2
    assert page.locator("#bk-budget-heading").inner_text() == zh["book.link_heading_booked"]
    page.wait_for_selector(f"{dc_card}[data-over=true] .budget-warning")
    mine = page.locator(f"{dc_card} .budget-hearings li").filter(has_text=f"(2026) New {sfx}")
    assert mine.inner_text().startswith(zh["book.this_hearing"])
    page.screenshot(path=str(shots / "booked-zh-CN-1024x600.png"))

    # The same page in English: the warning is relabelled, still in sight.
    page.get_by_role("button", name=zh["lang.toggle_label"]).click()
    page.wait_for_selector("html[lang=en]")
    page.wait_for_function(
        "(text) => document.querySelector('.budget-site[data-over=true] .budget-warning').textContent.startsWith(text)",
        arg=en["book.link_over"].split(":")[0],
    )
    assert page.locator("#bk-budget-heading").inner_text() == en["book.link_heading_booked"]
    assert page.locator("label[for=bk-case]").inner_text() == en["book.case_number"]
    assert _fits(page, f"{dc_card} .budget-warning")
    page.screenshot(path=str(shots / "booked-en-1024x600.png"))

    # Moving the time to a free afternoon clears the warning before booking again.
    afternoon = world["start"] + timedelta(hours=5)
    _set_local_time(page, "#bk-start", afternoon)
    _set_local_time(page, "#bk-end", afternoon + timedelta(hours=1))
    page.wait_for_selector(f"{dc_card}[data-over=false]")
    assert page.locator(f"{dc_card} .budget-warning").count() == 0
    assert page.locator("#bk-budget-heading").inner_text() == en["book.link_heading"]
    assert en["book.link_figure"].split("{link}")[1].strip() in page.locator(f"{dc_card} .budget-figure").inner_text()
