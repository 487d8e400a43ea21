"""A dropped network: the page shows it, reconnects by itself with its resume key, and media flows again."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.browser_fixtures import admit_defendant

if TYPE_CHECKING:
    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser

OFFLINE_SECONDS = 5.0


def test_offline_for_five_seconds_then_resumes_by_itself(court_server: Server, participants: Participants) -> None:
    """After 5 s offline the defendant's page reconnects on its own, keeps its place, and media flows both ways."""
    p = participants
    shots = p.artifacts("reconnect")
    booking = court_server.book([("Wu Min", "judge", "court"), ("Qian Bo", "defendant", "remote")])
    judge_id, defendant_id = booking.ids["judge"], booking.ids["defendant"]

    judge, defendant = admit_defendant(p, p, booking, what=" before the drop")

    defendant.context.set_offline(True)
    went_offline = time.monotonic()
    defendant.wait_for_selector("body[data-conn=offline], body[data-conn=reconnecting]")
    banner = defendant.locator("#banner")
    assert banner.is_visible()
    assert banner.inner_text().strip()
    defendant.screenshot(path=str(shots / "offline.png"))
    time.sleep(max(0.0, OFFLINE_SECONDS - (time.monotonic() - went_offline)))
    defendant.context.set_offline(False)

    defendant.wait_for_selector("body[data-conn=connected]", timeout=60_000)
    assert banner.is_hidden()
    state = p.state(defendant)
    assert state["view"] == "hearing"
    assert state["placement"] == "courtroom", "the resumed defendant lost their place"
    p.wait_receiving(defendant, judge_id, "defendant <- judge after the drop")
    p.wait_receiving(judge, defendant_id, "judge <- defendant after the drop")
    defendant.screenshot(path=str(shots / "resumed.png"))
