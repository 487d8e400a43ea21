"""Fixtures for the REST API tests: the real signaling app on a free loopback port, on a real SQLite store.

Test modules load them with ``pytest_plugins = ["tests.api_fixtures"]`` and import :class:`Api` only
for type checking (importing this module before pytest registers it would skip its assertion rewriting);
the keys, base URL and test day are attributes of the ``api`` fixture.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from rooms.backends import open_store
from rooms.store import Store
from signaling.app import TOKENS_KEY, create_app
from signaling.config import ApiKey, KeyScope, SignalingConfig
from signaling.serving import app_runner
from signaling.tokens import TokenService

ADMIN_KEY = "admin-key-0123456789abcdef"
CLERK_KEY = "clerk-key-0123456789abcdef"
TOKEN_SECRET = "test-secret-0123456789abcdef0123456789"
PUBLIC_BASE = "https://court.test"

CST = timezone(timedelta(hours=8))
"""China Standard Time, the offset clerks send."""

DAY = datetime(2031, 3, 4, tzinfo=CST)
"""A fixed future day on which the tests book hearings (times are absolute, never 'now')."""


def at(hour: int, minute: int = 0) -> str:
    """RFC 3339 time on the test day, with the +08:00 offset."""
    return (DAY + timedelta(hours=hour, minutes=minute)).isoformat()


@dataclass
class Answer:
    """One HTTP answer, read fully."""

    status: int
    headers: CIMultiDict[str]
    body: Any
    text: str

    @property
    def content_type(self) -> str:
        """The media type without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip()


@dataclass
class Api:
    """A running signaling app and a client session pointed at it."""

    base_url: str
    session: aiohttp.ClientSession
    store: Store
    app: web.Application
    default_key: str = ADMIN_KEY
    admin_key: str = ADMIN_KEY
    clerk_key: str = CLERK_KEY
    public_base: str = PUBLIC_BASE

    @staticmethod
    def at(hour: int, minute: int = 0) -> str:
        """RFC 3339 time on the fixed test day, with the +08:00 offset."""
        return at(hour, minute)

    @property
    def tokens(self) -> TokenService:
        """The app's join-token service."""
        return self.app[TOKENS_KEY]

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | str | None = None,
        key: str | None = "default",
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request over loopback HTTP; ``key=None`` sends no Authorization header."""
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {self.default_key if key == 'default' else key}"
        if json_body is not None:
            data = json.dumps(json_body)
            sent.setdefault("Content-Type", "application/json")
        elif data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base_url + path, data=data, headers=sent, params=params) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = None
            return Answer(resp.status, CIMultiDict(resp.headers), body, text)

    async def site(self, site_id: str, kind: str = "court", terminals: int = 1, name: str | None = None) -> Any:
        """Create a site with the admin key; the created site."""
        answer = await self.call(
            "POST",
            "/api/v1/sites",
            json_body={"id": site_id, "name": name or site_id, "kind": kind, "terminals": terminals},
            key=ADMIN_KEY,
        )
        assert answer.status == 201, answer.text
        return answer.body

    async def courtroom(self, room_id: str, site_id: str) -> Any:
        """Create a courtroom with the admin key; the created courtroom."""
        answer = await self.call(
            "POST", "/api/v1/courtrooms", json_body={"id": room_id, "name": room_id, "site_id": site_id}, key=ADMIN_KEY
        )
        assert answer.status == 201, answer.text
        return answer.body


def api_config(**overrides: Any) -> SignalingConfig:
    """The configuration the API tests run with: one admin and one clerk key."""
    values: dict[str, Any] = {
        "api_keys": (
            ApiKey(name="ops", key=ADMIN_KEY, scope=KeyScope.admin),
            ApiKey(name="clerk1", key=CLERK_KEY, scope=KeyScope.clerk),
        ),
        "token_secret": TOKEN_SECRET,
        "public_base_url": PUBLIC_BASE,
        "max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return SignalingConfig.model_validate(values)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A real SQLite store in the test's temporary directory."""
    store = await open_store(None, tmp_path / "data")
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def serve(store: Store, config: SignalingConfig | None = None) -> AsyncIterator[Api]:
    """Run the signaling app on ``store`` on 127.0.0.1 (free port) with a client session, then stop both."""
    app = create_app(config or api_config(), store)
    runner = app_runner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession()
    try:
        yield Api(f"http://127.0.0.1:{port}", session, store, app)
    finally:
        await session.close()
        await runner.cleanup()


@pytest.fixture
async def api(sqlite_store: Store) -> AsyncIterator[Api]:
    """The real signaling app on a real SQLite store, over loopback HTTP."""
    async with serve(sqlite_store) as running:
        yield running


@pytest.fixture
async def redis_api(redis_server: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The real signaling app on the real Redis store (a fresh key prefix in the session's redis-server)."""
    store = await open_store(redis_server, tmp_path, key_prefix=f"test:{uuid.uuid4().hex[:12]}:")
    try:
        async with serve(store) as running:
            yield running
    finally:
        await store.close()
