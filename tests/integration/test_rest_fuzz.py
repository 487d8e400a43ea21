"""Hostile JSON bodies on every REST route that takes one: never a 5xx, never a traceback.

The routes and their body schemas come from the served OpenAPI document, so a
route added later is fuzzed too. A seeded generator (reproducible: the seed is
in each failure message) builds a valid-looking body from the schema, then
breaks it the ways the black-box tests did and more: deep nesting up to the
body limit, lone surrogates in values and keys, JSON values of the wrong type
(``true`` for a number, ``"yes"`` for a boolean), huge numbers, NaN, truncated
text, invalid UTF-8, duplicate and unknown keys. Real signaling app over
loopback HTTP on a real SQLite store.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

import pytest

from signaling.json_input import MAX_DEPTH

if TYPE_CHECKING:
    from tests.api_fixtures import Answer, Api

pytest_plugins = ["tests.api_fixtures"]

SEED = 8
BODIES_PER_ROUTE = 80
LIMIT = 64 * 1024
"""max_body_bytes of the test server (tests/api_fixtures.py)."""


async def _world(api: Api) -> dict[str, str]:
    """A site, a courtroom and a booked hearing; the values for the routes' path parameters."""
    await api.site("court1", "court", terminals=50)
    await api.courtroom("room1", "court1")
    answer = await api.call(
        "POST",
        "/api/v1/hearings",
        json_body={
            "case_number": "(2031) Fuzz 1",
            "kind": "trial",
            "courtroom_id": "room1",
            "starts_at": api.at(9),
            "ends_at": api.at(11),
            "participants": [{"name": "Judge Wang", "role": "judge", "site_id": "court1"}],
        },
    )
    assert answer.status == 201, answer.text
    return {
        "hearing_id": answer.body["id"],
        "participant_id": answer.body["participants"][0]["id"],
        "site_id": "court1",
    }


async def _routes(api: Api) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(method, path template, body schema, components) of every route with a JSON body."""
    doc = (await api.call("GET", "/api/v1/openapi.json", key=None)).body
    components: dict[str, Any] = doc.get("components", {}).get("schemas", {})
    found = []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                found.append((method.upper(), path, body["schema"], components))
    assert found, "the OpenAPI document lists no JSON bodies"
    return found


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


class Bodies:
    """A seeded maker of valid-looking and broken JSON bodies for one schema."""

    def __init__(self, rng: random.Random, components: dict[str, Any], values: dict[str, str]) -> None:
        self.rng = rng
        self.components = components
        self.values = values

    def instance(self, schema: dict[str, Any], depth: int = 0) -> Any:
        """A value that roughly fits ``schema`` (ids point at the stored world where the name says so)."""
        schema = _resolve(schema, self.components)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
                return self.instance(self.rng.choice(options), depth)
        if "allOf" in schema:
            return self.instance(schema["allOf"][0], depth)
        if "enum" in schema:
            return self.rng.choice(schema["enum"])
        if "const" in schema:
            return schema["const"]
        kind = schema.get("type", "object")
        if kind == "object" or "properties" in schema:
            props: dict[str, Any] = schema.get("properties", {})
            required = set(schema.get("required", []))
            out = {}
            for name, sub in props.items():
                if name in required or self.rng.random() < 0.5:
                    out[name] = self._named(name) or self.instance(sub, depth + 1)
            return out
        if kind == "array":
            items = schema.get("items", {})
            count = self.rng.randint(schema.get("minItems", 0), min(schema.get("maxItems", 3), 3))
            return [self.instance(items, depth + 1) for _ in range(count)]
        if kind == "string":
            if schema.get("format") == "date-time":
                return "2031-03-04T10:00:00+08:00"
            return "x" * self.rng.randint(
                max(1, schema.get("minLength", 1)), max(1, min(schema.get("maxLength", 8), 8))
            )
        if kind == "integer":
            return self.rng.randint(schema.get("minimum", 0), min(schema.get("maximum", 10), 10))
        if kind == "number":
            return self.rng.random()
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    def _named(self, name: str) -> str | None:
        if name.endswith("site_id"):
            return "court1"
        if name.endswith("courtroom_id"):
            return "room1"
        return None

    def broken(self, schema: dict[str, Any]) -> bytes:
        """One hostile body: a valid-looking instance broken in one of many ways, as raw bytes."""
        base = self.instance(schema)
        text = json.dumps(base, ensure_ascii=self.rng.random() < 0.5)
        how = self.rng.randrange(14)
        if how == 0:  # deep nesting, anywhere from just over the limit to the size of the body limit
            levels = self.rng.choice([MAX_DEPTH + 1, 100, 1000, 10_000, LIMIT // 2 - 64])
            return self._replace_value(base, "[" * levels + "]" * levels).encode()
        if how == 1:  # deep objects
            levels = self.rng.choice([MAX_DEPTH + 1, 1000, 5000])
            return self._replace_value(base, '{"a":' * levels + "1" + "}" * levels).encode()
        if how == 2:  # a lone surrogate in a value or a key
            surrogate = self.rng.choice(["\\ud800", "\\udfff", "\\ud83d x", "\\ud800\\u0041"])
            if self.rng.random() < 0.5:
                return self._replace_value(base, f'"{surrogate}"').encode()
            return ("{" + f'"{surrogate}": 1' + "}").encode()
        if how == 3:  # a value of the wrong JSON type
            wrong = self.rng.choice(["true", "false", "1", '"1"', '"yes"', "null", "[]", "{}", "-0", "1.5", '""'])
            return self._replace_value(base, wrong).encode()
        if how == 4:  # numbers no field can hold
            huge = self.rng.choice(["1e400", "-1e400", "1" * 5000, "1e-400", "123456789012345678901234567890"])
            return self._replace_value(base, huge).encode()
        if how == 5:  # NaN and friends
            return self._replace_value(base, self.rng.choice(["NaN", "Infinity", "-Infinity"])).encode()
        if how == 6:  # truncated text
            cut = self.rng.randrange(max(1, len(text)))
            return text[:cut].encode()
        if how == 7:  # invalid UTF-8
            raw = text.encode()
            at = self.rng.randrange(max(1, len(raw)))
            return raw[:at] + self.rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]) + raw[at:]
        if how == 8:  # duplicate and unknown keys
            return ("{" + text[1:-1] + (", " if len(text) > 2 else "") + '"zz": 1, "zz": 2}').encode()
        if how == 9:  # not an object at all
            return self.rng.choice([b"[]", b"1", b'"x"', b"null", b"true", b"  ", b"\xef\xbb\xbf{}", b"{}{}"])
        if how == 10:  # a long string up to the body limit
            size = self.rng.choice([10_000, LIMIT - 200, LIMIT + 10])
            return self._replace_value(base, json.dumps("é" * (size // 2))).encode()
        if how == 11:  # control characters and escapes
            return self._replace_value(
                base, self.rng.choice(['"\\u0000"', '"a\\x"', '"\t"', '"\\ud83d\\ude00"'])
            ).encode()
        if how == 12:  # many shallow members
            return ("[" + ",".join(["{}"] * (LIMIT // 4)) + "]").encode()[:LIMIT]
        return self._replace_value(base, json.dumps(self.instance({"type": "object"}))).encode()

    def _replace_value(self, base: Any, raw_value: str) -> str:
        """``base`` as JSON text with one of its values (or itself) replaced by ``raw_value`` verbatim."""
        if isinstance(base, dict) and base and self.rng.random() < 0.8:
            key = self.rng.choice(sorted(base))
            marker = "\u2063MARK\u2063"
            return json.dumps({**base, key: marker}, ensure_ascii=False).replace(
                json.dumps(marker, ensure_ascii=False), raw_value
            )
        return raw_value


def _no_failure(answer: Answer, what: str) -> None:
    assert answer.status < 500, (what, answer.status, answer.text[:300])
    assert "Traceback" not in answer.text, what
    if answer.status >= 400:
        assert answer.content_type == "application/problem+json", (what, answer.headers)
        assert answer.body["status"] == answer.status, what


async def test_hostile_bodies_never_fail_the_server(api: Api) -> None:
    """Seeded hostile bodies on every JSON route (with and without a key): 4xx problems or success, never 5xx."""
    values = await _world(api)
    routes = await _routes(api)
    rng = random.Random(SEED)
    statuses: dict[int, int] = {}
    for method, template, schema, components in routes:
        path = template.format(**{k: values.get(k, "nope") for k in ("hearing_id", "participant_id", "site_id", "id")})
        bodies = Bodies(rng, components, values)
        for n in range(BODIES_PER_ROUTE):
            body = bodies.broken(schema)
            key = "default" if n % 4 else None
            answer = await api.call(method, path, data=body, key=key)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
            _no_failure(answer, f"seed {SEED}, {method} {template} body #{n}: {body[:120]!r}")
    print(f"{len(routes)} routes, statuses: {dict(sorted(statuses.items()))}")
    assert (await api.call("GET", "/healthz", key=None)).status == 200


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1000, 100_000])
async def test_deep_bodies_are_400_json_too_deep(api: Api, levels: int) -> None:
    """Every JSON route, the unauthenticated join/info included, answers a deeply nested body with 400 json_too_deep."""
    values = await _world(api)
    for method, template, _, _ in await _routes(api):
        path = template.format(**{k: values.get(k, "nope") for k in ("hearing_id", "participant_id", "site_id", "id")})
        body = '{"token": ' + "[" * levels + "]" * levels + "}"
        answer = await api.call(method, path, data=body)
        if len(body) > LIMIT:
            assert answer.status == 413, (template, answer.text)
            continue
        _no_failure(answer, f"{method} {template}")
        assert answer.status == 400, (template, answer.text)
        assert answer.body["type"] == "urn:courtlink:problem:json_too_deep", answer.body


async def test_lone_surrogate_body_is_400_malformed_json(api: Api) -> None:
    """A body holding a lone surrogate is a 400 malformed_json that names it, on join/info and on booking."""
    for path, key in (("/api/v1/join/info", None), ("/api/v1/hearings", "default")):
        answer = await api.call("POST", path, data='{"token": "\\ud800"}', key=key)
        _no_failure(answer, path)
        assert answer.status == 400, answer.text
        assert answer.body["type"] == "urn:courtlink:problem:malformed_json"
        assert "surrogate" in answer.body["detail"]


async def test_loose_types_are_refused(api: Api) -> None:
    """`true` is not a number and `"5"` is not one either: REST bodies are strict (422 naming the field)."""
    for terminals in (True, "5", 5.5):
        answer = await api.call(
            "POST",
            "/api/v1/sites",
            json_body={"id": f"s{terminals!s}", "name": "S", "kind": "court", "terminals": terminals},
        )
        assert answer.status == 422, answer.text
        assert answer.body["errors"][0]["loc"] == ["terminals"]
    assert (
        await api.call("POST", "/api/v1/sites", json_body={"id": "s5", "name": "S", "kind": "court", "terminals": 5})
    ).status == 201


REQUEST_LINE_LIMIT = 8190
"""aiohttp's limit on the request line: a longer one is answered 400 by its parser, before the application."""

HOSTILE_TEXT = [
    "%ED%A0%80",  # a UTF-8-encoded surrogate
    "%FF%FE",
    "%00",
    "1e999",
    "99999999999999999999999",
    "-1",
    "true",
    "9999-12-31T23:59:59%2B00:00",
    "0001-01-01T00:00:00-23:59",
    "2031-01-01T00:00:00%2B99:00",
    "[[[[[[[[",
    "a" * 5000,
]


async def test_hostile_queries_and_paths_never_fail_the_server(api: Api) -> None:
    """Hostile query values on every documented query parameter, and hostile path segments: never 5xx."""
    values = await _world(api)
    doc = (await api.call("GET", "/api/v1/openapi.json", key=None)).body
    rng = random.Random(SEED)
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            if method.upper() not in ("GET", "DELETE"):
                continue
            names = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]
            for _ in range(10):
                segment = rng.choice(HOSTILE_TEXT)
                path = template.format(**{k: segment for k in ("hearing_id", "participant_id", "site_id", "id")})
                query = "&".join(f"{name}={rng.choice(HOSTILE_TEXT)}" for name in names if rng.random() < 0.7)
                url = path + ("?" + query if query else "")
                if method.upper() == "DELETE":
                    url = path
                answer = await api.call(method.upper(), url)
                if len(f"{method} {url} HTTP/1.1") > REQUEST_LINE_LIMIT:
                    # Refused by aiohttp's parser before any middleware (signaling/serving.py): a plain 400.
                    assert (answer.status, "Traceback" in answer.text) == (400, False), url[:120]
                    continue
                _no_failure(answer, f"{method} {url[:120]}")
            path = template.format(
                **{k: values.get(k, "nope") for k in ("hearing_id", "participant_id", "site_id", "id")}
            )
            _no_failure(await api.call(method.upper(), path), f"{method} {path}")
