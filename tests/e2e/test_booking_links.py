"""Booking links counsel to their clients (``represents``) and names the presiding judge, through the REST door."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]


def person(name: str, role: str, **extra: Any) -> dict[str, Any]:
    """A participant entry of a booking body, at the court."""
    return {"name": name, "role": role, "site_id": "court1", **extra}


def booking(people: list[dict[str, Any]], case: str = "(2031) Crim 7") -> dict[str, Any]:
    """A ``POST /hearings`` body in room1 on the test day."""
    from tests.api_fixtures import at

    return {
        "case_number": case,
        "kind": "trial",
        "courtroom_id": "room1",
        "starts_at": at(9),
        "ends_at": at(11),
        "participants": people,
    }


PANEL = [
    person("Judge Wang", "judge"),
    person("Judge Li", "judge", presiding=True),
    person("Defendant Zhao", "defendant"),
    person("Defendant Qian", "defendant"),
    person("Counsel Sun", "counsel", represents=[2]),
    person("Counsel Zhou", "counsel", represents=[2, 3]),
    person("Clerk Wu", "clerk"),
]


async def links_scenario(api: Api) -> None:
    """Book, read back, refuse bad links, add counsel by id, remove a client (see the test docstrings)."""
    await api.site("court1", "court", terminals=20)
    await api.courtroom("room1", "court1")
    booked = await api.call("POST", "/api/v1/hearings", json_body=booking(PANEL), key=api.clerk_key)
    assert booked.status == 201, booked.text
    ids = [p["id"] for p in booked.body["participants"]]
    hid = booked.body["id"]
    read = await api.call("GET", f"/api/v1/hearings/{hid}", key=api.clerk_key)
    people = read.body["participants"]
    assert [p["represents"] for p in people] == [[], [], [], [], [ids[2]], [ids[2], ids[3]], []]
    assert [p["presiding"] for p in people] == [False, True, False, False, False, False, False]
    assert [p["presiding"] for p in booked.body["participants"]] == [p["presiding"] for p in people]

    # Counsel may only be linked to a defendant or party booked in the same request.
    bad = [
        ([person("Judge", "judge"), person("Witness", "witness", represents=[0])], ["participants", 1, "represents"]),
        ([person("Counsel", "counsel", represents=[5])], ["participants", 0, "represents", 0]),
        (
            [person("Judge", "judge"), person("Counsel", "counsel", represents=[0])],
            ["participants", 1, "represents", 0],
        ),
        ([person("Clerk", "clerk", presiding=True)], ["participants", 0, "presiding"]),
        (
            [person("A", "judge", presiding=True), person("B", "judge", presiding=True)],
            ["participants", 1, "presiding"],
        ),
        ([person("Counsel", "counsel", represents=["x"])], ["participants", 0, "represents", 0]),
    ]
    for n, (party, loc) in enumerate(bad):
        answer = await api.call(
            "POST", "/api/v1/hearings", json_body=booking(party, case=f"(2031) Bad {n}"), key=api.clerk_key
        )
        assert answer.status == 422, answer.text
        assert answer.body["errors"][0]["loc"][: len(loc)] == loc, answer.body
    listed = await api.call("GET", "/api/v1/hearings", key=api.clerk_key)
    assert [h["id"] for h in listed.body["items"]] == [hid]

    # Adding counsel names the clients by participant id.
    path = f"/api/v1/hearings/{hid}/participants"
    added = await api.call(
        "POST", path, json_body=person("Counsel Zheng", "counsel", represents=[ids[3]]), key=api.clerk_key
    )
    assert added.status == 201, added.text
    assert added.body["represents"] == [ids[3]]
    for wrong in ([ids[0]], ["prt_unknown"]):
        answer = await api.call(
            "POST", path, json_body=person("Counsel X", "counsel", represents=wrong), key=api.clerk_key
        )
        assert answer.status == 422, answer.text
        assert answer.body["errors"][0]["loc"] == ["represents", 0]
    answer = await api.call("POST", path, json_body=person("Judge Feng", "judge", presiding=True), key=api.clerk_key)
    assert answer.status == 422, answer.text

    # A removed defendant is no longer anybody's client; the hearing stays readable.
    removed = await api.call("DELETE", f"{path}/{ids[3]}", key=api.clerk_key)
    assert removed.status == 200, removed.text
    counsel = {p["name"]: p["represents"] for p in removed.body["participants"] if p["role"] == "counsel"}
    assert counsel == {"Counsel Sun": [ids[2]], "Counsel Zhou": [ids[2]], "Counsel Zheng": []}
    again = await api.call("GET", f"/api/v1/hearings/{hid}", key=api.clerk_key)
    assert again.status == 200
    audit = await api.call("GET", f"/api/v1/hearings/{hid}/audit", key=api.clerk_key)
    booked_event = audit.body["events"][0]["data"]["participants"]
    assert booked_event[5]["represents"] == [ids[2], ids[3]]
    assert booked_event[1]["presiding"] is True

    doc = (await api.call("GET", "/api/v1/openapi.json", key=None)).body
    add_body = doc["paths"]["/api/v1/hearings/{hearing_id}/participants"]["post"]["requestBody"]
    assert add_body["content"]["application/json"]["schema"]["$ref"].endswith("/ParticipantAdd")
    schemas = doc["components"]["schemas"]
    assert schemas["ParticipantAdd"]["properties"]["represents"]["items"]["type"] == "string"
    assert schemas["ParticipantCreate"]["properties"]["represents"]["items"]["type"] == "integer"


async def test_counsel_links_and_presiding_judge_on_sqlite(api: Api) -> None:
    """A booking links counsel to the clients they represent and marks the presiding judge; bad links get named 422s."""
    await links_scenario(api)


@pytest.mark.redis
async def test_counsel_links_and_presiding_judge_on_redis(redis_api: Api) -> None:
    """The same links are stored and read back by the Redis store."""
    await links_scenario(redis_api)
