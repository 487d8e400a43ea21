"""Evidence display in Chromium: a shared screen reaches the others as evidence (declared by its msid track id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser


def test_shared_screen_arrives_as_evidence(court_server: Server, participants: Participants) -> None:
    """The judge shares a screen (getDisplayMedia): the observer receives it as source evidence, on the stage."""
    p = participants
    booking = court_server.book([("Wang Fang", "judge", "court"), ("Zhao Lei", "observer", "court")])
    judge_id, observer_name = booking.ids["judge"], booking.names["observer"]
    judge = p.open(booking.links["judge"])
    judge.wait_for_function("() => document.getElementById('pj-preview').videoWidth > 0")
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")
    observer = p.open(booking.links["observer"])
    p.join(observer, keyboard=True)
    observer.wait_for_selector("body[data-view=lobby]")
    judge.get_by_role("button", name=f"Admit {observer_name}").click()
    observer.wait_for_selector("body[data-view=hearing]")
    p.wait_receiving(observer, judge_id, "observer <- judge")

    judge.click("#ctl-share")  # a user gesture, as getDisplayMedia requires

    def evidence_frames() -> int:
        return sum(
            int(s.get("framesDecoded") or 0)
            for s in p.inbound(observer)
            if s["participant_id"] == judge_id and s.get("source") == "evidence"
        )

    p.wait_until(lambda: evidence_frames() > 0, what="the judge's evidence at the observer")
    first = evidence_frames()
    p.wait_until(lambda: evidence_frames() > first + 10, what="evidence frames rising")
    sources = {s.get("source") for s in p.inbound(observer) if s["participant_id"] == judge_id}
    assert {"camera", "evidence", "microphone"} <= sources, sources
    observer.wait_for_selector("#stage.evidence")
    observer.screenshot(path=str(p.artifacts("evidence") / "observer-evidence.png"))
