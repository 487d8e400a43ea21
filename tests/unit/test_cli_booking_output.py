"""`courtlink hearings book` prints a site link over budget as a warning line after the join links."""

from __future__ import annotations

import pytest

from courtlink.cli import _print_booking


def test_booking_output_warns_of_a_link_over_budget(capsys: pytest.CaptureFixture[str]) -> None:
    """An over-budget site gets one warning line naming the site, the figures and the hearings; others none."""
    budget = {"hearings": [{"case_number": "(2031) Arr 1"}, {"case_number": "(2031) Arr 2"}]}
    _print_booking(
        {
            "id": "hrg_1",
            "case_number": "(2031) Arr 2",
            "starts_at": "2031-05-06T09:00:00+08:00",
            "ends_at": "2031-05-06T10:00:00+08:00",
            "participants": [{"role": "defendant", "name": "Li Ming", "join_url": "http://x/join?t=1"}],
            "link_budget": [
                {"site_id": "dc1", "link_mbps": 20.0, "expected_mbps": 26.0, "over": True, **budget},
                {"site_id": "dc2", "link_mbps": 50.0, "expected_mbps": 6.5, "over": False, **budget},
            ],
        }
    )
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == [
        "warning: site dc1 link over budget: 26.0 of 20.0 Mbit/s expected at that time ((2031) Arr 1, (2031) Arr 2)"
    ]
