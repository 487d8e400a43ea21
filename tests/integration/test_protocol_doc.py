"""docs/protocol.md names everything the running server serves: every REST route, every WebSocket message type in
both directions, every close code.

The served schemas (``GET /api/v1/openapi.json``, ``GET /api/v1/schema/ws.json``) are the machine-readable truth;
these tests fetch them from the all-in-one application (the same wiring as ``courtlink serve``, on a throw-away data
dir, over loopback) and fail, naming what is missing, when the protocol page falls behind.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode
from aiohttp.test_utils import TestClient, TestServer

from courtlink.settings import RecorderSettings, Settings
from courtlink.wiring import build_app
from rooms.backends import open_store

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"
SIGNALING = ROOT / "signaling"
MEDIA = ROOT / "media"

Served = tuple[dict[str, Any], dict[str, Any]]


async def _fetch(data_dir: Path) -> Served:
    settings = Settings(data_dir=data_dir, recorder=RecorderSettings(enabled=False))
    async with AsyncExitStack() as stack:
        store = await open_store(None, data_dir)
        stack.push_async_callback(store.close)
        app = await build_app(settings, store, stack)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            openapi_answer = await client.get("/api/v1/openapi.json")
            ws_answer = await client.get("/api/v1/schema/ws.json")
            assert openapi_answer.status == 200
            assert ws_answer.status == 200
            return await openapi_answer.json(), await ws_answer.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    """The OpenAPI document and the WebSocket schema as the all-in-one server serves them."""
    return asyncio.run(_fetch(tmp_path_factory.mktemp("data")))


def section(text: str, heading: str) -> str:
    """The body of the markdown section whose heading line is ``heading``, up to the next heading of its level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        raise AssertionError(f"docs/protocol.md has no section {heading!r}") from None
    body: list[str] = []
    for line in lines[start + 1 :]:
        match = re.match(r"^(#+) ", line)
        if match and len(match.group(1)) <= level:
            break
        body.append(line)
    return "\n".join(body)


def first_cells(markdown: str) -> set[str]:
    """The backticked names in the first cell of every table row (a cell may name several: `a`, `b`)."""
    names: set[str] = set()
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("| ---"):
            cell = line.split("|")[1]
            names.update(re.findall(r"`([^`]+)`", cell))
    return names


def message_types(schema: dict[str, Any], direction: str) -> set[str]:
    """The ``type`` constants of one direction's union in ws.json (``ClientMessage`` or ``ServerMessage``)."""
    defs = schema["$defs"]
    refs = [entry["$ref"].rsplit("/", 1)[-1] for entry in defs[direction]["oneOf"]]
    return {defs[name]["properties"]["type"]["const"] for name in refs}


def missing_types(doc: str, schema: dict[str, Any]) -> dict[str, set[str]]:
    """Message types of ws.json that the protocol page's message tables do not name, by direction."""
    client = first_cells(section(doc, "### Client → server messages"))
    server = first_cells(section(doc, "### Server → client messages"))
    return {
        "client → server": message_types(schema, "ClientMessage") - client,
        "server → client": message_types(schema, "ServerMessage") - server,
    }


def served_routes(openapi: dict[str, Any]) -> set[str]:
    """Every served route as ``METHOD /path`` (OpenAPI path templates)."""
    return {f"{method.upper()} {path}" for path, ops in openapi["paths"].items() for method in ops}


def close_codes_used() -> set[int]:
    """Every WebSocket close code the signaling package names: its ``CLOSE_*`` constants and aiohttp's
    ``WSCloseCode`` members it uses."""
    codes: set[int] = set()
    for source in SIGNALING.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        codes.update(int(c) for c in re.findall(r"^CLOSE_[A-Z_]+ = (\d{4})$", text, flags=re.M))
        codes.update(WSCloseCode[name].value for name in re.findall(r"WSCloseCode\.([A-Z_]+)", text))
    return codes


def error_codes_used(package: Path, pattern: str) -> set[str]:
    """The literal error codes ``pattern`` (one group) finds in the package's modules."""
    codes: set[str] = set()
    for source in package.glob("*.py"):
        codes.update(re.findall(pattern, source.read_text(encoding="utf-8")))
    return codes


def test_protocol_doc_names_every_error_code() -> None:
    """Every WebSocket error code signaling sends, and every refusal code of the media node, is in docs/protocol.md."""
    doc = PROTOCOL.read_text(encoding="utf-8")
    sent = error_codes_used(SIGNALING, r'SessionError\(\s*"([a-z_]+)"') | error_codes_used(
        SIGNALING, r'Error\(\s*(?:ref=[^,]+,\s*)?code="([a-z_]+)"'
    )
    assert {"not_admitted", "join_expected", "too_many_messages", "peer_replaced"} <= sent
    table = first_cells(section(doc, "## Error codes"))
    assert sorted(sent - table) == []
    refused = error_codes_used(MEDIA, r'NegotiationError\(\s*"([a-z_]+)"')
    assert {"invalid_sdp", "too_many_media_sections", "renegotiation_pending"} <= refused
    assert sorted(c for c in refused if f"`{c}`" not in doc) == []


def test_protocol_doc_names_every_websocket_message_type(served: Served) -> None:
    """Every message type of the served ws.json, both directions, has a row in docs/protocol.md's message tables."""
    _, schema = served
    doc = PROTOCOL.read_text(encoding="utf-8")
    assert message_types(schema, "ClientMessage") >= {"join", "offer", "restart_media"}
    assert message_types(schema, "ServerMessage") >= {"joined", "error", "media_restart"}
    assert missing_types(doc, schema) == {"client → server": set(), "server → client": set()}


def test_a_missing_message_type_is_caught(served: Served) -> None:
    """The check above fails when a served message type's row is taken out of the page."""
    _, schema = served
    doc = PROTOCOL.read_text(encoding="utf-8")
    without = "\n".join(line for line in doc.splitlines() if not line.startswith("| `restart_media` |"))
    assert missing_types(without, schema)["client → server"] == {"restart_media"}
    without = "\n".join(line for line in doc.splitlines() if not line.startswith("| `pong` |"))
    assert missing_types(without, schema)["server → client"] == {"pong"}


def test_protocol_doc_names_every_served_route(served: Served) -> None:
    """Every method and path of the served openapi.json appears in docs/protocol.md's route table."""
    openapi, _ = served
    routes = served_routes(openapi)
    assert {"POST /api/v1/hearings", "GET /api/v1/ws", "GET /healthz"} <= routes
    documented = first_cells(section(PROTOCOL.read_text(encoding="utf-8"), "### Every route"))
    assert sorted(routes - documented) == []


def test_protocol_doc_names_every_close_code() -> None:
    """Every WebSocket close code named in signaling/ has a row in docs/protocol.md's close-code table."""
    used = close_codes_used()
    assert {1000, 1002, 1009, 4001, 4010} <= used
    table = section(PROTOCOL.read_text(encoding="utf-8"), "## Close codes")
    documented = {int(code) for code in re.findall(r"^\| (\d{4}) \|", table, flags=re.M)}
    assert sorted(used - documented) == []
