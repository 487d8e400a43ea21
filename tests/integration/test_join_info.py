"""The device-check page learns who and what a join link is for, and bad links are named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.api_fixtures import Api

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
async def booked(api: Api) -> dict[str, Any]:
    """A hearing running now, with a judge at the court and a defendant at a detention center."""
    await api.site("dc1", "detention_center", name="No. 1 Detention Center")
    await api.site("court1", "court", name="Intermediate Court")
    await api.courtroom("room1", "court1")
    now = datetime.now(UTC)
    body = {
        "case_number": "(2026) Xing Chu 7",
        "title": "State v. Chen",
        "kind": "arraignment",
        "courtroom_id": "room1",
        "starts_at": (now - timedelta(minutes=5)).isoformat(),
        "ends_at": (now + timedelta(hours=1)).isoformat(),
        "participants": [
            {"name": "Judge Wang", "role": "judge", "site_id": "court1"},
            {"name": "陈明", "role": "defendant", "site_id": "dc1"},
        ],
    }
    answer = await api.call("POST", "/api/v1/hearings", json_body=body, key=api.clerk_key)
    assert answer.status == 201, answer.text
    result: dict[str, Any] = answer.body
    return result


async def test_join_info_names_participant_and_hearing(api: Api, booked: dict[str, Any]) -> None:
    """A valid link shows the person's name, role and site and the hearing's case number, without an API key."""
    defendant = booked["participants"][1]
    answer = await api.call("POST", "/api/v1/join/info", json_body={"token": defendant["token"]}, key=None)
    assert answer.status == 200, answer.text
    assert answer.body["participant"] == {
        "id": defendant["id"],
        "name": "陈明",
        "role": "defendant",
        "site_id": "dc1",
        "site_name": "No. 1 Detention Center",
    }
    assert answer.body["hearing"]["case_number"] == "(2026) Xing Chu 7"
    assert answer.body["hearing"]["courtroom_name"] == "room1"


async def test_join_info_refuses_reissued_and_tampered_links(api: Api, booked: dict[str, Any]) -> None:
    """A reissued (old) link is 'revoked' and a tampered one 'bad_token', both 401 problems."""
    judge = booked["participants"][0]
    reissue = await api.call("POST", f"/api/v1/hearings/{booked['id']}/participants/{judge['id']}/link")
    assert reissue.status == 200, reissue.text
    old = await api.call("POST", "/api/v1/join/info", json_body={"token": judge["token"]}, key=None)
    assert (old.status, old.content_type, old.body["type"]) == (
        401,
        "application/problem+json",
        "urn:courtlink:problem:revoked",
    )
    tampered = judge["token"][:-3] + ("AAA" if not judge["token"].endswith("AAA") else "BBB")
    bad = await api.call("POST", "/api/v1/join/info", json_body={"token": tampered}, key=None)
    assert (bad.status, bad.body["type"]) == (401, "urn:courtlink:problem:bad_token")
