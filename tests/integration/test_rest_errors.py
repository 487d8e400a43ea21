"""Bad input to the REST API: each gets a clear 4xx problem+json and changes nothing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from rooms.audit import SYSTEM_STREAM
from signaling.app import create_app

if TYPE_CHECKING:
    from rooms.store import Store
    from tests.api_fixtures import Answer, Api

pytest_plugins = ["tests.api_fixtures"]


async def _world(api: Api) -> str:
    """Two sites, a courtroom and one booked hearing; the hearing's id."""
    await api.site("dc1", "detention_center", terminals=1)
    await api.site("court1", "court", terminals=10)
    await api.courtroom("room1", "court1")
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api), key=api.clerk_key)
    assert answer.status == 201, answer.text
    hearing_id: str = answer.body["id"]
    return hearing_id


def _booking(api: Api, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_number": "(2031) Crim 7",
        "title": "People v. Chen",
        "kind": "trial",
        "courtroom_id": "room1",
        "starts_at": api.at(9),
        "ends_at": api.at(11),
        "participants": [
            {"name": "Judge Wang", "role": "judge", "site_id": "court1"},
            {"name": "Defendant Chen", "role": "defendant", "site_id": "dc1"},
        ],
    }
    body.update(changes)
    return body


async def _state(api: Api, hearing_id: str) -> Any:
    """Everything a bad request could have changed, read back through the API and the audit chains."""
    hearings = await api.call("GET", "/api/v1/hearings", key=api.clerk_key)
    sites = await api.call("GET", "/api/v1/sites", key=api.clerk_key)
    rooms = await api.call("GET", "/api/v1/courtrooms", key=api.clerk_key)
    audit = await api.call("GET", f"/api/v1/hearings/{hearing_id}/audit", key=api.clerk_key)
    system = [e.hash for e in await api.store.audit_log(SYSTEM_STREAM)]
    return hearings.body, sites.body, rooms.body, audit.body["events"], system


@pytest.fixture
async def booked(api: Api) -> tuple[Api, str, Any]:
    """The API with one booked hearing, and a snapshot of everything stored."""
    hearing_id = await _world(api)
    return api, hearing_id, await _state(api, hearing_id)


def _problem(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer.text
    assert answer.content_type == "application/problem+json"
    body: dict[str, Any] = answer.body
    assert body["type"] == f"urn:courtlink:problem:{code}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in answer.text
    return body


async def _unchanged(booked: tuple[Api, str, Any]) -> None:
    api, hearing_id, before = booked
    assert await _state(api, hearing_id) == before


async def test_malformed_json(booked: tuple[Api, str, Any]) -> None:
    """A body that is not JSON is a 400 saying so."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", data='{"case_number": "x",', key=api.clerk_key)
    body = _problem(answer, 400, "malformed_json")
    assert "not valid JSON" in body["detail"]
    await _unchanged(booked)


async def test_unknown_field(booked: tuple[Api, str, Any]) -> None:
    """An unknown field is a 422 naming it."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api, judge="me"), key=api.clerk_key)
    body = _problem(answer, 422, "validation_error")
    assert body["errors"] == [{"loc": ["judge"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]
    assert body["detail"].startswith("judge:")
    await _unchanged(booked)


async def test_ends_before_it_starts(booked: tuple[Api, str, Any]) -> None:
    """ends_at not after starts_at is a 422 on ends_at."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api, ends_at=api.at(9)), key=api.clerk_key)
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["ends_at"]
    assert "ends_at must be after starts_at" in body["detail"]
    await _unchanged(booked)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ends_at", "9999-12-31T23:00:00+00:00"),
        ("starts_at", "0001-01-01T00:00:00+00:00"),
        ("ends_at", "2101-01-01T00:00:00+00:00"),
    ],
)
async def test_absurd_year_is_refused(booked: tuple[Api, str, Any], field: str, value: str) -> None:
    """A window time outside the years 2000-2100 is a 422 naming the field, and nothing is stored."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api, **{field: value}), key=api.clerk_key)
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == [field]
    assert "2000-2100" in body["detail"]
    await _unchanged(booked)


async def test_window_too_long_is_refused(booked: tuple[Api, str, Any]) -> None:
    """A window longer than 24 hours is a 422 on ends_at, and nothing is stored."""
    api = booked[0]
    answer = await api.call(
        "POST", "/api/v1/hearings", json_body=_booking(api, ends_at=api.at(9 + 25)), key=api.clerk_key
    )
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["ends_at"]
    assert "at most 24 hours" in body["detail"]
    await _unchanged(booked)


async def test_patch_absurd_or_too_long_window_is_refused(booked: tuple[Api, str, Any]) -> None:
    """PATCH to year 9999, or stretching the stored window past 24 hours, is a 422 naming the field; nothing changes."""
    api, hearing_id, _ = booked
    path = f"/api/v1/hearings/{hearing_id}"
    far = await api.call("PATCH", path, json_body={"ends_at": "9999-12-31T23:00:00+00:00"}, key=api.clerk_key)
    assert _problem(far, 422, "validation_error")["errors"][0]["loc"] == ["ends_at"]
    long = await api.call("PATCH", path, json_body={"ends_at": api.at(9 + 30)}, key=api.clerk_key)
    body = _problem(long, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["ends_at"]
    assert "at most 24 hours" in body["detail"]
    early = await api.call("PATCH", path, json_body={"starts_at": api.at(-20)}, key=api.clerk_key)
    assert _problem(early, 422, "validation_error")["errors"][0]["loc"] == ["starts_at"]
    await _unchanged(booked)


async def test_unknown_role(booked: tuple[Api, str, Any]) -> None:
    """A role the court does not know is a 422 on that participant's role."""
    api = booked[0]
    people = [{"name": "Mr Bean", "role": "jester", "site_id": "court1"}]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api, participants=people), key=api.clerk_key)
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["participants", 0, "role"]
    assert "judge" in body["errors"][0]["msg"]
    await _unchanged(booked)


async def test_recorder_role_is_not_bookable(booked: tuple[Api, str, Any]) -> None:
    """The internal recorder role cannot be put on a booking."""
    api = booked[0]
    people = [{"name": "Tape", "role": "recorder", "site_id": "court1"}]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api, participants=people), key=api.clerk_key)
    body = _problem(answer, 422, "validation_error")
    assert "'recorder' cannot be booked" in body["detail"]
    await _unchanged(booked)


async def test_unknown_site(booked: tuple[Api, str, Any]) -> None:
    """A participant at a site that does not exist is a 422 naming the site."""
    api = booked[0]
    people = [{"name": "Judge Wang", "role": "judge", "site_id": "atlantis"}]
    answer = await api.call(
        "POST",
        "/api/v1/hearings",
        json_body=_booking(api, participants=people, starts_at=api.at(13), ends_at=api.at(14)),
        key=api.clerk_key,
    )
    body = _problem(answer, 422, "invalid_reference")
    assert "'atlantis'" in body["detail"]
    await _unchanged(booked)


async def test_unknown_courtroom(booked: tuple[Api, str, Any]) -> None:
    """A courtroom that does not exist is a 422 naming it."""
    api = booked[0]
    answer = await api.call(
        "POST", "/api/v1/hearings", json_body=_booking(api, courtroom_id="room99"), key=api.clerk_key
    )
    body = _problem(answer, 422, "invalid_reference")
    assert "'room99'" in body["detail"]
    await _unchanged(booked)


async def test_missing_api_key(booked: tuple[Api, str, Any]) -> None:
    """No Authorization header is a 401 with a Bearer challenge."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api), key=None)
    body = _problem(answer, 401, "unauthorized")
    assert "Bearer" in body["detail"]
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    await _unchanged(booked)


async def test_wrong_api_key(booked: tuple[Api, str, Any]) -> None:
    """An unknown key is a 401."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=_booking(api), key="not-a-key-0123456789")
    body = _problem(answer, 401, "unauthorized")
    assert body["detail"] == "the API key is not valid"
    await _unchanged(booked)


async def test_clerk_key_on_admin_call(booked: tuple[Api, str, Any]) -> None:
    """A clerk key cannot create a site: 403 naming the scope needed."""
    api = booked[0]
    answer = await api.call(
        "POST", "/api/v1/sites", json_body={"id": "x", "name": "X", "kind": "court"}, key=api.clerk_key
    )
    body = _problem(answer, 403, "forbidden")
    assert "admin" in body["detail"]
    await _unchanged(booked)


async def test_naive_datetime(booked: tuple[Api, str, Any]) -> None:
    """A time without a UTC offset is a 422 on that field."""
    api = booked[0]
    answer = await api.call(
        "POST", "/api/v1/hearings", json_body=_booking(api, starts_at="2031-03-04T13:00:00"), key=api.clerk_key
    )
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["starts_at"]
    assert "offset" in body["errors"][0]["msg"]
    await _unchanged(booked)


async def test_body_too_large(booked: tuple[Api, str, Any]) -> None:
    """A body over the configured limit is a 413."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", data='{"title": "' + "x" * 70_000 + '"}', key=api.clerk_key)
    body = _problem(answer, 413, "body_too_large")
    assert "65536" in body["detail"]
    await _unchanged(booked)


async def test_same_person_twice(booked: tuple[Api, str, Any]) -> None:
    """Booking one person twice into the same hearing is a 422 naming the duplicate."""
    api = booked[0]
    twice = [{"name": "Judge Li", "role": "judge", "site_id": "court1"}] * 2
    answer = await api.call(
        "POST",
        "/api/v1/hearings",
        json_body=_booking(api, participants=twice, starts_at=api.at(13), ends_at=api.at(14)),
        key=api.clerk_key,
    )
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["participants", 1]
    await _unchanged(booked)


async def test_json_that_is_not_an_object(booked: tuple[Api, str, Any]) -> None:
    """A JSON array where an object is expected is a 422."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/hearings", json_body=[1, 2], key=api.clerk_key)
    _problem(answer, 422, "validation_error")
    await _unchanged(booked)


async def test_unknown_route_and_wrong_method(booked: tuple[Api, str, Any]) -> None:
    """Unknown paths are 404 and wrong methods 405 (with Allow), both as problems."""
    api = booked[0]
    _problem(await api.call("GET", "/api/v1/nothing-here"), 404, "not_found")
    wrong = await api.call("PUT", "/api/v1/sites", json_body={})
    body = _problem(wrong, 405, "method_not_allowed")
    assert "GET" in wrong.headers["Allow"]
    assert "POST" in wrong.headers["Allow"]
    assert "PUT" in body["detail"]
    await _unchanged(booked)


async def test_unknown_hearing_in_path(booked: tuple[Api, str, Any]) -> None:
    """A hearing id in the path that does not exist is a 404 naming it, for reads and changes."""
    api = booked[0]
    body = _problem(await api.call("GET", "/api/v1/hearings/hrg_nope", key=api.clerk_key), 404, "not_found")
    assert "'hrg_nope'" in body["detail"]
    _problem(await api.call("DELETE", "/api/v1/hearings/hrg_nope", key=api.clerk_key), 404, "not_found")
    _problem(
        await api.call("PATCH", "/api/v1/hearings/hrg_nope", json_body={"title": "x"}, key=api.clerk_key),
        404,
        "not_found",
    )
    await _unchanged(booked)


async def test_unknown_participant_in_path(booked: tuple[Api, str, Any]) -> None:
    """Reissuing or removing a participant that is not booked is a 404."""
    api, hearing_id, _ = booked
    path = f"/api/v1/hearings/{hearing_id}/participants/prt_nope"
    _problem(await api.call("POST", path + "/link", key=api.clerk_key), 404, "not_found")
    _problem(await api.call("DELETE", path, key=api.clerk_key), 404, "not_found")
    await _unchanged(booked)


async def test_patch_window_inverted_against_stored(booked: tuple[Api, str, Any]) -> None:
    """Moving only the start past the stored end is a 422 and changes nothing."""
    api, hearing_id, _ = booked
    answer = await api.call(
        "PATCH", f"/api/v1/hearings/{hearing_id}", json_body={"starts_at": api.at(12)}, key=api.clerk_key
    )
    body = _problem(answer, 422, "validation_error")
    assert body["errors"][0]["loc"] == ["starts_at"]
    await _unchanged(booked)


async def test_patch_null_and_empty(booked: tuple[Api, str, Any]) -> None:
    """PATCH with a null field or with nothing to change is a 422."""
    api, hearing_id, _ = booked
    path = f"/api/v1/hearings/{hearing_id}"
    _problem(await api.call("PATCH", path, json_body={"case_number": None}, key=api.clerk_key), 422, "validation_error")
    _problem(await api.call("PATCH", path, json_body={}, key=api.clerk_key), 422, "validation_error")
    await _unchanged(booked)


async def test_cancel_twice(booked: tuple[Api, str, Any]) -> None:
    """Cancelling a cancelled hearing is a 409 invalid_transition; editing it too."""
    api, hearing_id, _ = booked
    path = f"/api/v1/hearings/{hearing_id}"
    assert (await api.call("DELETE", path, key=api.clerk_key)).status == 200
    after_cancel = await _state(api, hearing_id)
    body = _problem(await api.call("DELETE", path, key=api.clerk_key), 409, "invalid_transition")
    assert "cancelled" in body["detail"]
    _problem(await api.call("PATCH", path, json_body={"title": "x"}, key=api.clerk_key), 409, "invalid_transition")
    assert await _state(api, hearing_id) == after_cancel


async def test_duplicate_site_id(booked: tuple[Api, str, Any]) -> None:
    """Creating a site with an id in use is a 409."""
    api = booked[0]
    answer = await api.call("POST", "/api/v1/sites", json_body={"id": "dc1", "name": "Again", "kind": "prison"})
    _problem(answer, 409, "already_exists")
    await _unchanged(booked)


async def test_bad_list_query(booked: tuple[Api, str, Any]) -> None:
    """A naive 'from' or an unknown query parameter on GET /hearings is a 422 naming it."""
    api = booked[0]
    naive = await api.call("GET", "/api/v1/hearings", key=api.clerk_key, params={"from": "2031-03-04T09:00:00"})
    assert _problem(naive, 422, "validation_error")["errors"][0]["loc"] == ["from"]
    extra = await api.call("GET", "/api/v1/hearings", key=api.clerk_key, params={"room": "room1"})
    assert _problem(extra, 422, "validation_error")["errors"][0]["loc"] == ["room"]


async def test_non_json_content_type(booked: tuple[Api, str, Any]) -> None:
    """A form-encoded body is refused with 415."""
    api = booked[0]
    answer = await api.call(
        "POST",
        "/api/v1/hearings",
        data="case_number=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        key=api.clerk_key,
    )
    _problem(answer, 415, "unsupported_media_type")
    await _unchanged(booked)


async def test_patch_to_unknown_courtroom(booked: tuple[Api, str, Any]) -> None:
    """Moving a hearing to a courtroom that does not exist is a 422 naming it."""
    api, hearing_id, _ = booked
    answer = await api.call(
        "PATCH", f"/api/v1/hearings/{hearing_id}", json_body={"courtroom_id": "room99"}, key=api.clerk_key
    )
    assert "'room99'" in _problem(answer, 422, "invalid_reference")["detail"]
    await _unchanged(booked)


async def test_unexpected_failure_is_a_bare_500(sqlite_store: Store) -> None:
    """A handler that crashes answers a 500 problem with the request id and no traceback (a plug-in route)."""

    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("secret internals /etc/passwd")

    def plugin(app: web.Application) -> None:
        app.router.add_get("/api/v1/broken", broken)

    from tests.api_fixtures import api_config  # after pytest registered the fixture module (assertion rewriting)

    app = create_app(api_config(), sqlite_store, registrars=[plugin])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/v1/broken", headers={"X-Request-Id": "rid-1"}) as resp,
        ):
            text = await resp.text()
            assert resp.status == 500
            assert resp.content_type == "application/problem+json"
        body = json.loads(text)
        assert body["type"] == "urn:courtlink:problem:internal_error"
        assert "rid-1" in body["detail"]
        assert "secret" not in text
        assert "Traceback" not in text
    finally:
        await runner.cleanup()


def test_store_busy_is_a_named_retryable_refusal() -> None:
    """Contention the store gives up on is a named 503 with Retry-After, never a bare 500."""
    from rooms.errors import StoreBusy
    from signaling.problems import domain_problem

    problem = domain_problem(StoreBusy("gave up after 500 concurrent-update retries"))
    assert (problem.status, problem.code, problem.headers.get("Retry-After")) == (503, "store_busy", "1")
