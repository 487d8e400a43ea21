"""The OpenAPI 3.1 document, generated from the routes' specs and their pydantic models.

Every route registered on the application appears: documented routes with
their request and answer schemas; any route added without a spec (e.g. by a
plug-in) at least with its method and path, so the document never hides one.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from signaling.problems import PROBLEM_CONTENT_TYPE, ProblemDocument
from signaling.routing import ApiRoutes, RouteSpec

_REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")

_STATUS_TEXT = {
    400: "Malformed JSON",
    401: "Missing or unknown API key",
    403: "The key's scope does not allow this call",
    404: "Not found",
    409: "Conflict (schedule, state or existing id)",
    413: "Request body too large",
    415: "Body is not JSON",
    422: "Invalid fields or unknown references",
}


def _models(specs: list[RouteSpec]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ProblemDocument, "serialization"): None}
    for spec in specs:
        if spec.body is not None:
            seen[(spec.body, "validation")] = None
        if spec.response is not None:
            seen[(spec.response, "serialization")] = None
    return list(seen)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True, ref_template=_REF)
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "description": prop.get("description", ""),
            "schema": {k: v for k, v in prop.items() if k != "description"},
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(app: web.Application, routes: ApiRoutes, *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``."""
    specs = routes.specs
    refs, defs = models_json_schema(_models(specs), ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    by_key = {(s.method, s.path): s for s in specs}
    paths: dict[str, dict[str, Any]] = {}
    problem_ref = refs[(ProblemDocument, "serialization")]
    for route in app.router.routes():
        method = route.method.upper()
        if method == "HEAD" or route.resource is None:
            continue  # aiohttp adds HEAD beside every GET
        path = route.resource.canonical
        spec = by_key.get((method, path))
        names = _PARAM.findall(path)
        oas_path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
        operation: dict[str, Any] = {
            "operationId": spec.operation_id if spec else f"{method.lower()}_{_slug(path)}",
            "summary": spec.summary
            if spec
            else (getattr(route.handler, "__doc__", None) or path).strip().split("\n")[0],
            "tags": [spec.tag] if spec else ["other"],
            "parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names],
            "responses": {},
        }
        if spec is not None:
            if spec.scope is not None:
                operation["security"] = [{"apiKey": []}]
                operation["x-courtlink-scope"] = spec.scope.value
            if spec.query is not None:
                operation["parameters"] += _query_parameters(spec.query)
            if spec.body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(spec.body, "validation")]}},
                }
            ok: dict[str, Any] = {"description": "Success"}
            if spec.response is not None:
                ok["content"] = {spec.content_type: {"schema": refs[(spec.response, "serialization")]}}
            elif spec.content_type != "application/json":
                ok["content"] = {spec.content_type: {"schema": {"type": "string"}}}
            operation["responses"][str(spec.status)] = ok
            for status in spec.errors:
                operation["responses"][str(status)] = {
                    "description": _STATUS_TEXT.get(status, "Error"),
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
                }
        else:
            operation["responses"]["default"] = {"description": "See the route's own documentation"}
        if not operation["parameters"]:
            del operation["parameters"]
        paths.setdefault(oas_path, {})[method.lower() if method != "*" else "get"] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "courtlink REST API: bookings, hearings, participants and their join links.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "A configured API key."}},
        },
    }


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
