"""A witness waits in the witness room until the judge calls them from the console, and can be released again."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.browser_fixtures import Participants, Server

pytest_plugins = ["tests.browser_fixtures"]
pytestmark = pytest.mark.browser


def test_judge_calls_and_releases_a_witness(court_server: Server, participants: Participants) -> None:
    """The witness sees the witness room, is called into the hearing view, and goes back when released."""
    p = participants
    shots = p.artifacts("witness")
    booking = court_server.book([("Gao Yan", "judge", "court"), ("He Xin", "witness", "remote")])
    witness_id, witness_name = booking.ids["witness"], booking.names["witness"]

    judge = p.open(booking.links["judge"])
    p.join(judge)
    judge.wait_for_selector("body[data-view=hearing]")
    judge.get_by_role("button", name="Open the courtroom").click()
    judge.wait_for_selector("#hearing-state[data-state=open]")

    witness = p.open(booking.links["witness"])
    p.join(witness)
    witness.wait_for_selector("body[data-view=lobby]")
    assert witness.locator("#lobby-heading").inner_text().strip() == "Witness room"
    witness.screenshot(path=str(shots / "witness-room.png"))

    judge.wait_for_selector(f"#witness-queue li[data-participant='{witness_id}']")
    judge.get_by_role("button", name=f"Call witness {witness_name}").click()
    witness.wait_for_selector("body[data-view=hearing]")
    p.wait_receiving(judge, witness_id, "judge <- witness")
    judge.screenshot(path=str(shots / "witness-called.png"))

    judge.get_by_role("button", name=f"Send witness {witness_name} back to the witness room").click()
    witness.wait_for_selector("body[data-view=lobby]")
    assert p.state(witness)["placement"] == "witness_lobby"
