"""The site link budget through the public REST door: real app, real SQLite and Redis stores, loopback HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from rooms.audit import SYSTEM_STREAM
from rooms.link_budget import AUDIO_MBPS, CAMERA_MBPS, EVIDENCE_MBPS

if TYPE_CHECKING:
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]

DEFENDANT_MBPS = round(4 * CAMERA_MBPS + 4 * AUDIO_MBPS + EVIDENCE_MBPS, 2)
"""What one arraignment below puts on the detention center's link: the defendant receives four cameras and voices
and the evidence (the busier direction)."""


def arraignment(n: int, room: str, start: str, end: str) -> Any:
    """A ``POST /hearings`` body: judge, clerk, prosecutor at court, defendant n at dc1, counsel at home."""
    return {
        "case_number": f"(2031) Arr {n}",
        "kind": "arraignment",
        "courtroom_id": room,
        "starts_at": start,
        "ends_at": end,
        "participants": [
            {"name": f"Judge {n}", "role": "judge", "site_id": "court1"},
            {"name": f"Clerk {n}", "role": "clerk", "site_id": "court1"},
            {"name": f"Prosecutor {n}", "role": "prosecutor", "site_id": "court1"},
            {"name": f"Defendant {n}", "role": "defendant", "site_id": "dc1"},
            {"name": f"Counsel {n}", "role": "counsel", "site_id": "home"},
        ],
    }


async def test_link_budget_on_sqlite(api: Api) -> None:
    """A clerk sees a detention center's link fill up as arraignments are booked, and a warning when over it."""
    await link_budget_scenario(api)


@pytest.mark.redis
async def test_link_budget_on_redis(redis_api: Api) -> None:
    """The same link budget scenario holds on the Redis store."""
    await link_budget_scenario(redis_api)


async def link_budget_scenario(api: Api) -> None:
    """Sites with and without a link, bookings that overlap on it, the clerk's look-up, and bad input refused."""
    created = await api.call(
        "POST",
        "/api/v1/sites",
        json_body={"id": "dc1", "name": "No. 1 DC", "kind": "detention_center", "terminals": 8, "link_mbps": 20},
        key=api.admin_key,
    )
    assert created.status == 201, created.text
    assert created.body["link_mbps"] == 20
    await api.site("court1", "court", terminals=20)
    await api.site("home", "remote", terminals=20)
    for n in range(5):
        await api.courtroom(f"room{n}", "court1")
    sites = await api.call("GET", "/api/v1/sites", key=api.clerk_key)
    assert {s["id"]: s["link_mbps"] for s in sites.body["items"]} == {"court1": None, "dc1": 20, "home": None}

    # Three arraignments at 09:00-10:00 fit the 20 Mbit/s link; every answer shows the link, never the court's.
    ids = []
    for n in range(3):
        booked = await api.call(
            "POST", "/api/v1/hearings", json_body=arraignment(n, f"room{n}", api.at(9), api.at(10)), key=api.clerk_key
        )
        assert booked.status == 201, booked.text
        (entry,) = booked.body["link_budget"]
        assert entry["site_id"] == "dc1"
        assert entry["link_mbps"] == 20
        assert entry["expected_mbps"] == pytest.approx((n + 1) * DEFENDANT_MBPS, abs=0.02)
        assert entry["over"] is False
        ids.append(booked.body["id"])

    # A fourth overlapping one is booked all the same, with the warning naming every hearing on the link.
    fourth = await api.call(
        "POST", "/api/v1/hearings", json_body=arraignment(3, "room3", api.at(9, 30), api.at(11)), key=api.clerk_key
    )
    assert fourth.status == 201, fourth.text
    (entry,) = fourth.body["link_budget"]
    assert entry["over"] is True
    assert entry["expected_mbps"] == pytest.approx(4 * DEFENDANT_MBPS, abs=0.02)
    # By start, then id: the three at 09:00 first, then the fourth at 09:30.
    assert [(h["id"], h["case_number"]) for h in entry["hearings"]] == [
        *sorted((hid, f"(2031) Arr {n}") for n, hid in enumerate(ids)),
        (fourth.body["id"], "(2031) Arr 3"),
    ]
    assert all(h["expected_mbps"] == pytest.approx(DEFENDANT_MBPS) for h in entry["hearings"])

    # The clerk's form asks before booking: 10:00-11:00 has only the fourth on the link.
    link = await api.call(
        "GET", "/api/v1/sites/dc1/link", params={"starts_at": api.at(10), "ends_at": api.at(11)}, key=api.clerk_key
    )
    assert link.status == 200, link.text
    assert [h["id"] for h in link.body["hearings"]] == [fourth.body["id"]]
    assert link.body["over"] is False
    busy = await api.call(
        "GET", "/api/v1/sites/dc1/link", params={"starts_at": api.at(9), "ends_at": api.at(10)}, key=api.clerk_key
    )
    assert busy.body["over"] is True
    assert len(busy.body["hearings"]) == 4
    # With the form's would-be hearing (a judge at court, a defendant at the center) counted as "new".
    planned = await api.call(
        "GET",
        "/api/v1/sites/dc1/link",
        params={"starts_at": api.at(10), "ends_at": api.at(11), "participants": "judge@court1, defendant@dc1"},
        key=api.clerk_key,
    )
    assert planned.status == 200, planned.text
    assert [h["id"] for h in planned.body["hearings"]] == [fourth.body["id"], "new"]
    assert planned.body["hearings"][1]["expected_mbps"] == pytest.approx(CAMERA_MBPS + AUDIO_MBPS + EVIDENCE_MBPS)
    court = await api.call(
        "GET", "/api/v1/sites/court1/link", params={"starts_at": api.at(9), "ends_at": api.at(10)}, key=api.clerk_key
    )
    assert (court.status, court.body["link_mbps"], court.body["over"]) == (200, None, False)

    # Moving the fourth to the afternoon (PATCH) answers with its new, lone place on the link.
    moved = await api.call(
        "PATCH",
        f"/api/v1/hearings/{fourth.body['id']}",
        json_body={"starts_at": api.at(14), "ends_at": api.at(15)},
        key=api.clerk_key,
    )
    assert moved.status == 200, moved.text
    (entry,) = moved.body["link_budget"]
    assert ([h["id"] for h in entry["hearings"]], entry["over"]) == ([fourth.body["id"]], False)

    # Adding a second defendant at the center to the moved hearing (an update too) answers with its link budget.
    added = await api.call(
        "POST",
        f"/api/v1/hearings/{fourth.body['id']}/participants",
        json_body={"name": "Defendant 3b", "role": "defendant", "site_id": "dc1"},
        key=api.clerk_key,
    )
    assert added.status == 201, added.text
    assert added.body["join_url"]
    (entry,) = added.body["link_budget"]
    assert entry["expected_mbps"] == pytest.approx(2 * (DEFENDANT_MBPS + CAMERA_MBPS + AUDIO_MBPS), abs=0.02)

    # The admin widens the link (an audited change), then clears it: no entry, no check.
    widened = await api.call("PATCH", "/api/v1/sites/dc1", json_body={"link_mbps": 100.5}, key=api.admin_key)
    assert (widened.status, widened.body["link_mbps"], widened.body["terminals"]) == (200, 100.5, 8)
    cleared = await api.call("PATCH", "/api/v1/sites/dc1", json_body={"link_mbps": None}, key=api.admin_key)
    assert (cleared.status, cleared.body["link_mbps"]) == (200, None)
    fifth = await api.call(
        "POST", "/api/v1/hearings", json_body=arraignment(4, "room4", api.at(9), api.at(10)), key=api.clerk_key
    )
    assert (fifth.status, fifth.body["link_budget"]) == (201, [])
    system = await api.store.audit_log(SYSTEM_STREAM)
    changes = [e.data for e in system if e.action == "site_changed"]
    assert changes == [
        {"site_id": "dc1", "from": {"link_mbps": 20.0}, "to": {"link_mbps": 100.5}},
        {"site_id": "dc1", "from": {"link_mbps": 100.5}, "to": {"link_mbps": None}},
    ]

    await bad_input_is_refused_by_name(api)


async def bad_input_is_refused_by_name(api: Api) -> None:
    """Absurd links, bad windows and unknown sites get a named 4xx and change nothing."""
    before = (await api.call("GET", "/api/v1/sites", key=api.clerk_key)).body
    audit_before = len(await api.store.audit_log(SYSTEM_STREAM))
    for bad in (-5, 0, 100_001, 1e12, "20", True, [20]):
        body = {"id": "dc9", "name": "DC 9", "kind": "detention_center", "link_mbps": bad}
        refused = await api.call("POST", "/api/v1/sites", json_body=body, key=api.admin_key)
        assert (refused.status, refused.body["type"]) == (422, "urn:courtlink:problem:validation_error"), bad
        assert refused.body["errors"][0]["loc"][0] == "link_mbps", refused.text
        patched = await api.call("PATCH", "/api/v1/sites/dc1", json_body={"link_mbps": bad}, key=api.admin_key)
        assert patched.status == 422, (bad, patched.text)
        assert "link_mbps" in patched.body["detail"]
    patches: list[tuple[dict[str, Any], str | None]] = [
        ({}, None),
        ({"name": None}, "name"),
        ({"terminals": 3}, "terminals"),
        ({"id": "x"}, "id"),
    ]
    for body, field in patches:
        refused = await api.call("PATCH", "/api/v1/sites/dc1", json_body=body, key=api.admin_key)
        assert refused.status == 422, (body, refused.text)
        if field is not None:
            assert field in refused.body["detail"]
    clerk = await api.call("PATCH", "/api/v1/sites/dc1", json_body={"link_mbps": 5}, key=api.clerk_key)
    assert (clerk.status, clerk.body["type"]) == (403, "urn:courtlink:problem:forbidden")
    missing = await api.call("PATCH", "/api/v1/sites/nope", json_body={"link_mbps": 5}, key=api.admin_key)
    assert (missing.status, missing.body["type"]) == (404, "urn:courtlink:problem:not_found")
    assert (await api.call("GET", "/api/v1/sites", key=api.clerk_key)).body == before
    assert len(await api.store.audit_log(SYSTEM_STREAM)) == audit_before

    windows: list[tuple[dict[str, str], str]] = [
        ({"starts_at": api.at(10)}, "ends_at"),
        ({"starts_at": api.at(10), "ends_at": api.at(9)}, "ends_at"),
        ({"starts_at": api.at(0), "ends_at": api.at(30)}, "ends_at"),
        ({"starts_at": "2031-05-06T09:00:00", "ends_at": api.at(10)}, "starts_at"),
        ({"starts_at": "tomorrow", "ends_at": api.at(10)}, "starts_at"),
        ({"starts_at": "1999-12-31T23:00:00+00:00", "ends_at": "2000-01-01T01:00:00+00:00"}, "starts_at"),
        ({"starts_at": api.at(9), "ends_at": api.at(10), "site": "dc1"}, "site"),
        *(
            ({"starts_at": api.at(9), "ends_at": api.at(10), "participants": bad}, "participants")
            for bad in ("recorder@dc1", "judge", "judge@", "judge@dc 1", "@dc1", ",".join(["judge@dc1"] * 201))
        ),
    ]
    for params, field in windows:
        refused = await api.call("GET", "/api/v1/sites/dc1/link", params=params, key=api.clerk_key)
        assert (refused.status, refused.body["type"]) == (422, "urn:courtlink:problem:validation_error"), params
        assert refused.body["detail"].startswith(field), refused.text
    unknown = await api.call(
        "GET", "/api/v1/sites/nope/link", params={"starts_at": api.at(9), "ends_at": api.at(10)}, key=api.clerk_key
    )
    assert (unknown.status, unknown.body["type"]) == (404, "urn:courtlink:problem:not_found")
    anonymous = await api.call(
        "GET", "/api/v1/sites/dc1/link", params={"starts_at": api.at(9), "ends_at": api.at(10)}, key=None
    )
    assert anonymous.status == 401
