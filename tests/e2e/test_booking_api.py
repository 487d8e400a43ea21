"""The booking scenario through the public REST door: real app, real SQLite store, loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from openapi_spec_validator import validate

from rooms.audit import SYSTEM_STREAM
from rooms.backends import SQLITE_FILE

if TYPE_CHECKING:
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]


def person(name: str, role: str, site_id: str) -> dict[str, str]:
    """A participant entry of a booking body."""
    return {"name": name, "role": role, "site_id": site_id}


def booking(case: str, room: str, start: str, end: str, people: list[dict[str, str]], kind: str = "trial") -> Any:
    """A ``POST /hearings`` body."""
    return {
        "case_number": case,
        "title": f"People v. {case}",
        "kind": kind,
        "courtroom_id": room,
        "starts_at": start,
        "ends_at": end,
        "participants": people,
    }


async def book(api: Api, body: Any) -> Any:
    """Book with the clerk key; the raw answer."""
    return await api.call("POST", "/api/v1/hearings", json_body=body, key=api.clerk_key)


async def world(api: Api) -> None:
    """A detention center with 2 terminals, a court (plenty of terminals) and three courtrooms at the court."""
    await api.site("dc1", "detention_center", terminals=2, name="No. 1 Detention Center")
    await api.site("court1", "court", terminals=20, name="Intermediate People's Court")
    for room in ("room1", "room2", "room3"):
        await api.courtroom(room, "court1")


async def test_booking_conflicts_reschedule_and_cancel(api: Api) -> None:
    """A clerk books a trial, conflicts are refused with names, reschedule re-checks, cancel frees the slot."""
    await booking_scenario(api)


@pytest.mark.redis
async def test_booking_scenario_on_redis(redis_api: Api) -> None:
    """The same booking scenario holds on the Redis store."""
    await booking_scenario(redis_api)


@pytest.mark.redis
async def test_concurrent_bookings_on_redis(redis_api: Api) -> None:
    """Concurrent bookings of one courtroom on Redis: exactly one wins."""
    await concurrent_bookings(redis_api)


async def booking_scenario(api: Api) -> None:
    """Book, collide, reschedule, cancel, audit (see the test docstrings)."""
    await world(api)

    trial = booking(
        "(2031) Crim 1",
        "room1",
        api.at(9),
        api.at(11),
        [
            person("Judge Wang", "judge", "court1"),
            person("Prosecutor Li", "prosecutor", "court1"),
            person("Counsel Zhao", "counsel", "court1"),
            person("Defendant Chen", "defendant", "dc1"),
        ],
    )
    first = await book(api, trial)
    assert first.status == 201, first.text
    h1 = first.body["id"]
    assert first.headers["Location"] == f"/api/v1/hearings/{h1}"
    links = first.body["participants"]
    assert [p["role"] for p in links] == ["judge", "prosecutor", "counsel", "defendant"]
    assert len({p["id"] for p in links}) == 4
    for p in links:
        assert p["join_url"] == f"{api.public_base}/join?t={p['token']}"
        claims = await api.tokens.verify(p["token"], now=datetime.fromisoformat(api.at(9)))
        assert (claims.hearing_id, claims.participant_id, claims.role.value) == (h1, p["id"], p["role"])

    # The same courtroom at an overlapping time: refused, naming the first hearing and the courtroom.
    clash = booking("(2031) Crim 2", "room1", api.at(10), api.at(12), [person("Judge Qian", "judge", "court1")])
    refused = await book(api, clash)
    assert refused.status == 409
    assert refused.content_type == "application/problem+json"
    assert refused.body["conflicts"][0]["what"] == "courtroom"
    assert refused.body["conflicts"][0]["hearing_id"] == h1
    assert h1 in refused.body["detail"]
    assert "room1" in refused.body["detail"]

    # A second courtroom may use the detention center's second terminal at the same time.
    second = await book(
        api,
        booking(
            "(2031) Crim 3",
            "room2",
            api.at(10),
            api.at(12),
            [person("Judge Sun", "judge", "court1"), person("Defendant Liu", "defendant", "dc1")],
        ),
    )
    assert second.status == 201, second.text
    h2 = second.body["id"]

    # A third overlapping hearing at the detention center finds both terminals in use.
    third_body = booking(
        "(2031) Crim 4",
        "room3",
        api.at(10, 30),
        api.at(11, 30),
        [person("Judge Zhou", "judge", "court1"), person("Defendant Wu", "defendant", "dc1")],
        kind="arraignment",
    )
    third = await book(api, third_body)
    assert third.status == 409
    assert [c["what"] for c in third.body["conflicts"]] == ["site_terminals"]
    assert third.body["conflicts"][0]["subject"] == "dc1"
    assert "dc1" in third.body["detail"]
    assert "terminal" in third.body["detail"]

    # Rescheduling into a conflict is refused and changes nothing.
    before = (await api.call("GET", f"/api/v1/hearings/{h2}", key=api.clerk_key)).body
    into = await api.call(
        "PATCH",
        f"/api/v1/hearings/{h2}",
        json_body={"courtroom_id": "room1", "starts_at": api.at(9, 30)},
        key=api.clerk_key,
    )
    assert into.status == 409
    assert into.body["conflicts"][0]["what"] == "courtroom"
    assert into.body["conflicts"][0]["hearing_id"] == h1
    assert (await api.call("GET", f"/api/v1/hearings/{h2}", key=api.clerk_key)).body == before

    # Rescheduling to a free slot is accepted.
    moved = await api.call(
        "PATCH", f"/api/v1/hearings/{h2}", json_body={"starts_at": api.at(14), "ends_at": api.at(16)}, key=api.clerk_key
    )
    assert moved.status == 200, moved.text
    assert moved.body["version"] == before["version"] + 1
    assert datetime.fromisoformat(moved.body["starts_at"]) == datetime.fromisoformat(api.at(14))
    # ...and back into the detention center's busy hour, which now has one terminal free again.
    back = await api.call(
        "PATCH", f"/api/v1/hearings/{h2}", json_body={"starts_at": api.at(10), "ends_at": api.at(12)}, key=api.clerk_key
    )
    assert back.status == 200, back.text

    # Cancelling the first hearing frees its courtroom and its detention-center terminal.
    cancelled = await api.call("DELETE", f"/api/v1/hearings/{h1}", key=api.clerk_key)
    assert cancelled.status == 200
    assert cancelled.body["state"] == "cancelled"
    assert (await book(api, clash)).status == 201
    assert (await book(api, third_body)).status == 201

    # Every accepted change is in the hearing's audit chain, by the clerk's key, and the chain verifies.
    audit = await api.call("GET", f"/api/v1/hearings/{h1}/audit", key=api.clerk_key)
    assert audit.status == 200
    assert [e["action"] for e in audit.body["events"]] == ["hearing_booked", "hearing_cancelled"]
    assert {e["actor"] for e in audit.body["events"]} == {"key:clerk1"}
    assert audit.body["verified"] == {"ok": True, "first_bad_seq": None, "reason": None}
    audit2 = await api.call("GET", f"/api/v1/hearings/{h2}/audit", key=api.clerk_key)
    assert [e["action"] for e in audit2.body["events"]] == [
        "hearing_booked",
        "hearing_rescheduled",
        "hearing_rescheduled",
    ]
    assert audit2.body["verified"]["ok"] is True
    system = await api.store.audit_log(SYSTEM_STREAM)
    assert [(e.action, e.actor) for e in system] == [("site_created", "key:ops")] * 2 + [
        ("courtroom_created", "key:ops")
    ] * 3

    listed = await api.call("GET", "/api/v1/hearings", key=api.clerk_key, params={"site_id": "dc1"})
    assert listed.status == 200
    assert {h["id"] for h in listed.body["items"]} >= {h1, h2}


async def test_participants_are_added_removed_and_relinked(api: Api) -> None:
    """Adding a participant checks conflicts and returns a link; removal and reissue leave audit events."""
    await world(api)
    one = await book(
        api, booking("(2031) Civ 1", "room1", api.at(9), api.at(10), [person("Judge Wang", "judge", "court1")])
    )
    other = await book(
        api,
        booking(
            "(2031) Civ 2",
            "room2",
            api.at(9, 30),
            api.at(10, 30),
            [person("Witness Ma", "witness", "court1")],
            kind="mediation",
        ),
    )
    hid = one.body["id"]
    added = await api.call(
        "POST", f"/api/v1/hearings/{hid}/participants", json_body=person("Party Gao", "party", "dc1"), key=api.clerk_key
    )
    assert added.status == 201, added.text
    assert added.body["join_url"].startswith(f"{api.public_base}/join?t=")

    # The same person cannot sit in two overlapping hearings.
    busy = await api.call(
        "POST",
        f"/api/v1/hearings/{hid}/participants",
        json_body=person("Witness Ma", "witness", "court1"),
        key=api.clerk_key,
    )
    assert busy.status == 409
    assert busy.body["conflicts"][0] | {"detail": ""} == {
        "what": "participant",
        "hearing_id": other.body["id"],
        "detail": "",
        "subject": "witness ma@court1",
    }

    pid = added.body["id"]
    relinked = await api.call("POST", f"/api/v1/hearings/{hid}/participants/{pid}/link", key=api.clerk_key)
    assert relinked.status == 200
    assert relinked.body["token"] != added.body["token"]
    removed = await api.call("DELETE", f"/api/v1/hearings/{hid}/participants/{pid}", key=api.clerk_key)
    assert removed.status == 200
    assert [p["role"] for p in removed.body["participants"]] == ["judge"]
    audit = await api.call("GET", f"/api/v1/hearings/{hid}/audit", key=api.clerk_key)
    assert [e["action"] for e in audit.body["events"]] == [
        "hearing_booked",
        "participant_added",
        "participant_link_reissued",
        "participant_removed",
    ]
    assert audit.body["verified"]["ok"] is True


async def test_calendar_export(api: Api) -> None:
    """A booking downloads as an iCalendar event in UTC with the case number and courtroom."""
    await world(api)
    booked = await book(
        api, booking("(2031) Crim 9", "room1", api.at(9), api.at(10), [person("Judge Wang", "judge", "court1")])
    )
    hid = booked.body["id"]
    ics = await api.call("GET", f"/api/v1/hearings/{hid}/calendar.ics", key=api.clerk_key)
    assert ics.status == 200
    assert ics.content_type == "text/calendar"
    assert "BEGIN:VEVENT" in ics.text
    assert f"UID:{hid}@courtlink" in ics.text
    assert "DTSTART:20310304T010000Z" in ics.text  # 09:00 +08:00
    assert "(2031) Crim 9" in ics.text
    assert "LOCATION:room1" in ics.text


async def test_openapi_lists_every_route(api: Api) -> None:
    """openapi.json is OpenAPI 3.1 JSON listing every registered route with component schemas."""
    answer = await api.call("GET", "/api/v1/openapi.json", key=None)
    assert answer.status == 200
    doc = json.loads(answer.text)
    assert doc["openapi"].startswith("3.1")
    registered = {
        (r.method.lower(), r.resource.canonical) for r in api.app.router.routes() if r.method != "HEAD" and r.resource
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert registered <= documented
    for path in ("/api/v1/sites", "/api/v1/courtrooms", "/api/v1/hearings", "/api/v1/hearings/{hearing_id}/audit"):
        assert path in doc["paths"]
    schemas = doc["components"]["schemas"]
    for name in ("HearingCreate", "BookedHearing", "ProblemDocument", "SiteCreate", "AuditLog"):
        assert name in schemas
    book_op = doc["paths"]["/api/v1/hearings"]["post"]
    assert book_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/HearingCreate"
    }
    assert "409" in book_op["responses"]

    # Every $ref resolves inside the document.
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    validate(doc)  # the OpenAPI 3.1 meta-schema, not just our own reading of it


async def test_health_metrics_and_request_id(api: Api) -> None:
    """/healthz answers from the store, /metrics counts requests and bookings, every answer has X-Request-Id."""
    health = await api.call("GET", "/healthz", key=None)
    assert health.status == 200
    assert health.body == {"status": "ok"}
    assert len(health.headers["X-Request-Id"]) >= 16
    echoed = await api.call("GET", "/healthz", key=None, headers={"X-Request-Id": "case-system-42"})
    assert echoed.headers["X-Request-Id"] == "case-system-42"
    await world(api)
    await book(api, booking("(2031) Crim 5", "room1", api.at(9), api.at(10), [person("Judge Wang", "judge", "court1")]))
    await book(api, booking("(2031) Crim 6", "room1", api.at(9), api.at(10), [person("Judge Sun", "judge", "court1")]))
    metrics = await api.call("GET", "/metrics", key=None)
    assert metrics.status == 200
    assert 'courtlink_bookings_total{outcome="booked"} 1.0' in metrics.text
    assert 'courtlink_bookings_total{outcome="conflict"} 1.0' in metrics.text
    assert 'courtlink_http_requests_total{method="POST",route="/api/v1/hearings",status="409"} 1.0' in metrics.text
    assert "courtlink_http_request_duration_seconds_bucket" in metrics.text


async def test_concurrent_bookings_of_one_courtroom(api: Api) -> None:
    """Six clerks booking the same courtroom and hour at once: exactly one wins, the others get 409."""
    await concurrent_bookings(api)


async def concurrent_bookings(api: Api) -> None:
    """Six simultaneous bookings of room1 09:00-10:00; exactly one is stored."""
    await world(api)
    bodies = [
        booking(f"(2031) Crim 2{i}", "room1", api.at(9), api.at(10), [person(f"Judge {i}", "judge", "court1")])
        for i in range(6)
    ]
    answers = await asyncio.gather(*(book(api, body) for body in bodies))
    assert sorted(a.status for a in answers) == [201, 409, 409, 409, 409, 409]
    winner = next(a.body["id"] for a in answers if a.status == 201)
    assert all(a.body["conflicts"][0]["hearing_id"] == winner for a in answers if a.status == 409)
    listed = await api.call("GET", "/api/v1/hearings", key=api.clerk_key, params={"courtroom_id": "room1"})
    assert [h["id"] for h in listed.body["items"]] == [winner]


async def test_list_filters(api: Api) -> None:
    """GET /hearings filters by courtroom, by site and by a [from, to) window."""
    await world(api)
    morning = await book(api, booking("(2031) A", "room1", api.at(9), api.at(10), [person("J1", "judge", "court1")]))
    afternoon = await book(
        api,
        booking(
            "(2031) B",
            "room2",
            api.at(14),
            api.at(15),
            [person("J2", "judge", "court1"), person("D", "defendant", "dc1")],
        ),
    )

    async def ids(**params: str) -> list[str]:
        answer = await api.call("GET", "/api/v1/hearings", key=api.clerk_key, params=params)
        assert answer.status == 200, answer.text
        return [h["id"] for h in answer.body["items"]]

    m, a = morning.body["id"], afternoon.body["id"]
    assert await ids() == [m, a]
    assert await ids(courtroom_id="room2") == [a]
    assert await ids(site_id="dc1") == [a]
    assert await ids(**{"from": api.at(13)}) == [a]
    assert await ids(to=api.at(12)) == [m]
    assert await ids(**{"from": api.at(9, 30), "to": api.at(14, 30)}) == [m, a]


async def test_tampered_audit_log_is_reported(api: Api, tmp_path: Path) -> None:
    """An audit event edited behind the store's back makes the audit answer name the first bad seq."""
    await world(api)
    booked = await book(api, booking("(2031) T", "room1", api.at(9), api.at(10), [person("J", "judge", "court1")]))
    hid = booked.body["id"]
    await api.call("PATCH", f"/api/v1/hearings/{hid}", json_body={"title": "renamed"}, key=api.clerk_key)
    await api.call("PATCH", f"/api/v1/hearings/{hid}", json_body={"title": "renamed again"}, key=api.clerk_key)
    conn = sqlite3.connect(tmp_path / "data" / SQLITE_FILE, isolation_level=None)
    try:
        conn.execute(
            "UPDATE audit SET body = json_set(body, '$.actor', 'key:intruder') WHERE stream = ? AND seq = 2", (hid,)
        )
    finally:
        conn.close()
    audit = await api.call("GET", f"/api/v1/hearings/{hid}/audit", key=api.clerk_key)
    assert audit.status == 200
    assert audit.body["verified"]["ok"] is False
    assert audit.body["verified"]["first_bad_seq"] == 2
    assert "altered" in audit.body["verified"]["reason"]
