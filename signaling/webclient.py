"""The browser client: ``GET /join?t=TOKEN``, the clerk's ``GET /book``, and their static files under ``/static/``.

Everything the page needs is served from ``signaling/web/`` (court networks are
closed: no CDN, no web fonts, no third-party scripts). Every answer carries a
strict Content-Security-Policy that allows only this origin, plus WebSocket
and the browser's own media URLs. The join token stays in the query string and
is read by the page's JavaScript; ``Referrer-Policy: no-referrer`` keeps it
from leaking to anything the page might link to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

WEB_DIR: Final = Path(__file__).resolve().parent / "web"
"""Where the client's files live (shipped as package data)."""

CONTENT_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
"""The only file types served; anything else under /static/ is 404."""

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self' ws: wss:",
        "media-src 'self' blob: mediastream:",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
"""Only this origin; WebSocket for signaling; blob:/mediastream: for camera, microphone and received media."""

SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=()",
}
"""Headers on every page and static file of the client."""

WEB_DIR_KEY: Final = web.AppKey("courtlink_web_dir", Path)
"""The directory the client is served from (a test may point it elsewhere)."""


def setup_web(app: web.Application, web_dir: Path | None = None) -> None:
    """Register ``GET /join`` (the client page), ``GET /book`` (the clerk's booking page) and ``GET /static/{path}``
    (their modules, styles, catalogs)."""
    app[WEB_DIR_KEY] = (web_dir or WEB_DIR).resolve()
    app.router.add_get("/join", _join_page, name="join_page")
    app.router.add_get("/book", _booking_page, name="booking_page")
    app.router.add_get("/static/{path:.+}", _static_file, name="web_static")


async def _join_page(request: web.Request) -> web.StreamResponse:
    """The single page of the client; the token is read from ``location.search`` by the page itself."""
    path = request.app[WEB_DIR_KEY] / "index.html"
    # The page is tiny and names versionless module URLs: never cache it, so an upgrade takes effect at once.
    headers = {**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES[".html"], "Cache-Control": "no-store"}
    return web.FileResponse(path, headers=headers)


async def _booking_page(request: web.Request) -> web.StreamResponse:
    """The clerk's booking page; it calls the REST API with the key the clerk types in (kept in the tab only)."""
    path = request.app[WEB_DIR_KEY] / "book.html"
    headers = {**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES[".html"], "Cache-Control": "no-store"}
    return web.FileResponse(path, headers=headers)


async def _static_file(request: web.Request) -> web.StreamResponse:
    """One file of the client, from the web directory only, with an explicit content type."""
    root = request.app[WEB_DIR_KEY]
    relative = request.match_info["path"]
    candidate = (root / relative).resolve()
    content_type = CONTENT_TYPES.get(candidate.suffix.lower())
    # Refuse anything that resolves outside the web directory (../, symlinks) or is not a known file type.
    if content_type is None or not candidate.is_relative_to(root) or not candidate.is_file():
        raise web.HTTPNotFound(text="not found", headers=SECURITY_HEADERS)
    headers = {**SECURITY_HEADERS, "Content-Type": content_type, "Cache-Control": "no-cache"}
    return web.FileResponse(candidate, headers=headers)
