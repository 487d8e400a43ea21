"""Who is who in words, over the real WebSocket: site names in `joined` and the roster, and who removed or refused you.

Real aiohttp server on 127.0.0.1, real SQLite store, real in-process media node (no media negotiated here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tests.ws_fixtures import Booking

if TYPE_CHECKING:
    from tests.ws_fixtures import Court

pytest_plugins = ["tests.ws_fixtures"]

HEARINGS = "/api/v1/hearings"


async def book_named(court: Court, tag: str) -> Booking:
    """A trial with a judge and clerk at a named court and a defendant and counsel at a named detention center."""
    sites = {"court": f"ct-{tag}", "dc": f"dc-{tag}"}
    names = {"court": "Haidian District People's Court", "dc": "第一看守所 No. 1 Detention Center"}
    for key, site_id in sites.items():
        kind = "court" if key == "court" else "detention_center"
        status, body = await court.rest("POST", "/api/v1/sites", {"id": site_id, "name": names[key], "kind": kind})
        assert status == 201, body
    status, body = await court.rest(
        "POST", "/api/v1/courtrooms", {"id": f"room-{tag}", "name": "Courtroom 3", "site_id": sites["court"]}
    )
    assert status == 201, body
    start = datetime.now(UTC) - timedelta(minutes=5)
    cast = [("Judge Chen", "judge", "court"), ("Clerk Liu", "clerk", "court"), ("Li Ming", "defendant", "dc")]
    cast.append(("Zhao Lei", "counsel", "dc"))
    people: list[dict[str, Any]] = [{"name": n, "role": r, "site_id": sites[s]} for n, r, s in cast]
    people[3]["represents"] = [2]
    status, body = await court.rest(
        "POST",
        HEARINGS,
        {
            "case_number": f"(2026) Names {tag}",
            "kind": "trial",
            "courtroom_id": f"room-{tag}",
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(),
            "participants": people,
        },
    )
    assert status == 201, body
    roles = [r for _, r, _ in cast]
    ids = {role: p["id"] for role, p in zip(roles, body["participants"], strict=True)}
    tokens = {role: p["token"] for role, p in zip(roles, body["participants"], strict=True)}
    return Booking(body["id"], ids, tokens, body)


async def test_joined_and_roster_carry_site_names(court: Court) -> None:
    """`joined.participant.site_name` and every roster entry's `site_name` are the site's name from the store."""
    b = await book_named(court, "names")
    _, judge = await court.join(b.tokens["judge"])
    assert judge["participant"]["site"] == "ct-names"
    assert judge["participant"]["site_name"] == "Haidian District People's Court"
    client, defendant = await court.join(b.tokens["defendant"])
    assert defendant["participant"]["site_name"] == "第一看守所 No. 1 Detention Center"
    names = {p["id"]: p["site_name"] for p in defendant["roster"]}
    assert names[b.ids["judge"]] == "Haidian District People's Court"
    assert names[b.ids["defendant"]] == "第一看守所 No. 1 Detention Center"
    await client.close()


async def test_removed_and_denied_name_who_did_it(court: Court) -> None:
    """`removed` and `denied` say who did it (id, name, role); free-text reasons pass unchanged."""
    b = await book_named(court, "byw")
    judge, _ = await court.join(b.tokens["judge"])
    clerk, _ = await court.join(b.tokens["clerk"])
    defendant, _ = await court.join(b.tokens["defendant"])
    counsel, _ = await court.join(b.tokens["counsel"])
    await clerk.request_ok("admit", "roster", participant_id=b.ids["defendant"])
    await defendant.expect("admitted")
    await clerk.request_ok("remove", "roster", participant_id=b.ids["defendant"], reason="Disrupting the hearing")
    removed = await defendant.expect("removed")
    assert removed["by"] == b.ids["clerk"]
    assert removed["by_name"] == "Clerk Liu"
    assert removed["by_role"] == "clerk"
    assert removed["reason"] == "Disrupting the hearing"
    assert await defendant.close_code() == 4010
    await judge.request_ok("deny", "roster", participant_id=b.ids["counsel"])
    denied = await counsel.expect("denied")
    assert (denied["by"], denied["by_name"], denied["by_role"], denied["reason"]) == (
        b.ids["judge"],
        "Judge Chen",
        "judge",
        "",
    )
    assert await counsel.close_code() == 4003


async def test_removed_by_a_booking_change_names_no_one(court: Court) -> None:
    """Unbooked through REST while connected: `removed` carries the code `unbooked` and no person (`by` null)."""
    b = await book_named(court, "unb")
    _judge, _ = await court.join(b.tokens["judge"])
    defendant, _ = await court.join(b.tokens["defendant"])
    status, body = await court.rest("DELETE", f"{HEARINGS}/{b.hearing_id}/participants/{b.ids['defendant']}")
    assert status in (200, 204), body
    removed = await defendant.expect("removed")
    assert (removed["reason"], removed["by"], removed["by_name"], removed["by_role"]) == ("unbooked", None, "", None)
    assert await defendant.close_code() == 4010
