"""The ``courtlink`` command line (reference: docs/cli.md).

- ``courtlink serve``: the all-in-one server (signaling, one media node, a recorder) on the embedded store.
- ``courtlink demo``: book a hearing that starts now on a running server and print everyone's join link.
- ``courtlink hearings book --file hearing.toml`` and ``courtlink hearings list``: a clerk's tools,
  talking to a running server over its REST API (so every booking is checked and audited the same way).
- ``courtlink verify ARCHIVE`` and ``courtlink render ARCHIVE -o hearing.mp4``: the recorder's offline tools
  (verify trusts the keys of the settings' data dir unless told otherwise; see docs/archive.md).
- ``courtlink recorder keys export [-o FILE]``: the recorders' public keys, to keep with the recordings.

Exit codes: 0 done; 1 the server refused or could not be reached (or verify found a bad archive); 2 unusable
settings or arguments. A settings problem is one line on stderr naming the file or variable and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from courtlink import eventloop
from courtlink.bootstrap import ADMIN_KEY_FILE, TOKEN_SECRET_FILE
from courtlink.settings import CONFIG_ENV, ConfigError, Settings, describe_errors, load_settings
from media import AiortcMismatch

DEFAULT_URL = "http://127.0.0.1:8080"
MIN_KEY_LENGTH = 16
MIN_SECRET_LENGTH = 32
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)

DEMO_SITES = (
    {"id": "demo-court", "name": "Demo District Court", "kind": "court", "terminals": 50},
    {"id": "demo-detention", "name": "Demo No. 1 Detention Center", "kind": "detention_center", "terminals": 50},
    {"id": "demo-law-office", "name": "Demo Law Office", "kind": "remote", "terminals": 50},
)
"""The demo's sites, created when missing (terminals enough for many demo runs at once)."""
DEMO_ROOM = "demo-room"
DEMO_CAST = (
    ("Judge Wang", "judge", "demo-court"),
    ("Clerk Liu", "clerk", "demo-court"),
    ("Li Ming", "defendant", "demo-detention"),
    ("Counsel Chen", "counsel", "demo-law-office"),
    ("Observer Zhou", "observer", "demo-court"),
)
"""(name, role, site) of everyone the demo books; counsel represents the defendant."""
MAX_DEMO_ROOMS = 20


class CliError(Exception):
    """A one-line failure of a client command; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="courtlink",
        description="Remote hearings for courts. Every command's options: courtlink COMMAND --help (docs/cli.md).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run signaling, a media node and a recorder in one process")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any free port)")
    serve.add_argument("--data-dir", type=Path, help="data directory (default ./courtlink-data)")
    serve.add_argument("--config", type=Path, help="TOML settings file (see deploy/courtlink.example.toml)")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS and WSS (with --tls-key)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")

    media_node = sub.add_parser(
        "media-node",
        help="run one media node on the bus (needs redis_url)",
        description="Run one media node (the SFU) as its own process: signaling processes find it through Redis "
        "(redis_url), drive it over the bus and see it at GET /api/v1/nodes. Stops cleanly on SIGTERM/SIGINT.",
    )
    media_node.add_argument("--config", type=Path, help="TOML settings file (see deploy/courtlink.example.toml)")
    media_node.add_argument("--region", help="the node's region, for placement (default: [media] region)")
    media_node.add_argument("--node-id", help="the node's id, unique in the network (default: [media] node_id)")
    media_node.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N media nodes on this machine, one per core, under one supervisor (node ids <node-id>-w0 ... "
        "-w<N-1>, the UDP range and frame ports shared out; default 1: one node in this process)",
    )
    # A supervisor's worker: which one it is, the owner of its node-id lease, the supervisor's pid (courtlink.workers).
    media_node.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    media_node.add_argument("--worker-owner", help=argparse.SUPPRESS)
    media_node.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)

    signaling_cmd = sub.add_parser(
        "signaling",
        help="run the front door (REST, WebSocket, web client) driving media nodes on the bus (needs redis_url)",
        description="Run signaling as its own process: REST, the WebSocket session and the web client on the shared "
        "store, placing hearings on the media nodes (courtlink media-node) it finds through Redis (redis_url). "
        "No media node and no recorder run here. Stops cleanly on SIGTERM/SIGINT.",
    )
    signaling_cmd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    signaling_cmd.add_argument("--port", type=int, help="port to listen on (default 8080; 0: any free port)")
    signaling_cmd.add_argument("--data-dir", type=Path, help="data directory (default ./courtlink-data)")
    signaling_cmd.add_argument("--config", type=Path, help="TOML settings file (see deploy/courtlink.example.toml)")
    signaling_cmd.add_argument("--tls-cert", type=Path, help="PEM certificate: serve HTTPS and WSS (with --tls-key)")
    signaling_cmd.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")

    demo = sub.add_parser(
        "demo",
        help="book a demo hearing that starts now on a running server and print everyone's join link",
        description="Book a hearing that starts now on a running server (judge, clerk, a defendant at a detention "
        "center, counsel, an observer; three sites), creating the demo sites and courtroom when missing, and print "
        "each person's join link. Run it again for a fresh hearing: earlier demo hearings keep working.",
    )
    _client_options(demo)
    demo.add_argument("--minutes", type=int, default=60, help="length of the hearing's window (default 60)")

    hearings = sub.add_parser("hearings", help="book and list hearings on a running server")
    hsub = hearings.add_subparsers(dest="hearings_command", required=True, metavar="{book,list}")
    book = hsub.add_parser("book", help="book a hearing described in a TOML file")
    _client_options(book)
    book.add_argument("--file", type=Path, required=True, help="hearing TOML (see deploy/hearing.example.toml)")
    book.add_argument("--starts-at", help="start, RFC 3339 with offset (overrides the file's starts_at)")
    book.add_argument("--ends-at", help="end, RFC 3339 with offset (overrides the file's ends_at)")
    listing = hsub.add_parser("list", help="list booked hearings")
    _client_options(listing)
    listing.add_argument("--courtroom", help="only this courtroom")
    listing.add_argument("--site", help="only hearings joined from this site")
    listing.add_argument("--from", dest="from_", help="only hearings ending after this (RFC 3339)")
    listing.add_argument("--to", help="only hearings starting before this (RFC 3339)")

    nodes = sub.add_parser("nodes", help="list, drain and put back media nodes on a running server (admin key)")
    nsub = nodes.add_subparsers(dest="nodes_command", required=True, metavar="{list,drain,undrain}")
    _client_options(nsub.add_parser("list", help="list media nodes with a live heartbeat"))
    for name, text in (
        ("drain", "place no new hearing on a node; its hearings stay until they end"),
        ("undrain", "put a drained node back into placement"),
    ):
        cmd = nsub.add_parser(name, help=text)
        _client_options(cmd)
        cmd.add_argument("node_id", help="the node's id, as `courtlink nodes list` shows it")

    # verify, render and recorder have their own parsers (recorder.cli); these entries only list them here.
    for name, text in (
        ("verify", "verify a recording (a session or a hearing directory); see courtlink verify --help"),
        ("render", "render a recording to one MP4; see courtlink render --help"),
        ("recorder", "run a recorder over Redis (courtlink recorder --help), or its keys: courtlink recorder keys"),
    ):
        cmd = sub.add_parser(name, help=text, add_help=False)
        cmd.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _client_options(cmd: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a running server."""
    cmd.add_argument(
        "--url", help="server base URL (default: $COURTLINK_URL, else the settings' host and port, e.g. " + DEFAULT_URL
    )
    cmd.add_argument(
        "--key",
        help="API key (default: $COURTLINK_API_KEY, else the settings' admin_key / $COURTLINK_ADMIN_KEY, "
        "else the data dir's admin.key)",
    )
    cmd.add_argument("--data-dir", type=Path, help="the server's data dir, for admin.key (default: the settings')")
    cmd.add_argument("--config", type=Path, help="TOML settings file (default: $COURTLINK_CONFIG)")
    cmd.add_argument("--json", action="store_true", help="print the server's JSON answer")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``courtlink`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except ConfigError as exc:
        print(f"courtlink: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"courtlink: {exc}", file=sys.stderr)
        return exc.code
    except AiortcMismatch as exc:  # the media node refused to start on this aiortc/aioice
        print(f"courtlink: {exc}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str]) -> int:
    if argv[:1] in (["verify"], ["recorder"], ["render"]):
        # Their own parsers (recorder.cli) take every option, before or after the path, --help included.
        from recorder import cli as recorder_cli

        rest = argv[1:]
        if argv[0] == "render":
            return recorder_cli.render_main(rest)
        if argv[0] == "verify":
            given = _names_option(rest, "--trusted-keys", "--data-dir", "--any-key", "-h", "--help")
            return recorder_cli.verify_main(rest, default_data_dir=None if given else load_settings().data_dir)
        if rest[:1] != ["keys"]:
            return _recorder(rest)  # `courtlink recorder [--recorder-id ID]`: the recorder process
        given = _names_option(rest, "--data-dir", "-h", "--help")
        settings = None if given else load_settings()
        return recorder_cli.keys_main(
            rest[1:],
            default_data_dir=None if settings is None else settings.data_dir,
            default_recorder_id=None if settings is None else settings.recorder.recorder_id,
        )
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "media-node":
        return _media_node(args)
    if args.command == "signaling":
        return _signaling(args)
    if args.command == "demo":
        return asyncio.run(_demo(args))
    if args.command == "nodes":
        return asyncio.run(_nodes(args))
    return asyncio.run(_hearings(args))


def _names_option(argv: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in argv for n in names)


def _needs_redis(settings: Settings, message: str) -> None:
    """The processes of a network on Redis refuse to start without ``redis_url``: one line, exit 2."""
    if not settings.redis_url:
        raise CliError(message, 2)


def _front_door(settings: Settings, args: argparse.Namespace) -> tuple[Settings, tuple[str, str]]:
    """What ``serve`` and ``signaling`` check before they listen: the TLS flags applied, the address and the data
    dir usable, the certificate and key loadable (each a one-line error). The settings and where TLS was set."""
    from courtlink.tls import server_context

    settings, tls_where = with_tls_flags(settings, args)
    check_front_door(settings, args.config)
    check_data_dir(settings, _data_dir_source(args))
    server_context(settings.http, *tls_where)
    return settings, tls_where


# -- serve ---------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from courtlink.wiring import serve
    from rooms.backends import EMBEDDED_STORE_ERRORS

    settings = load_settings(args.config, host=args.host, port=args.port, data_dir=args.data_dir)
    settings, tls_where = _front_door(settings, args)
    try:
        eventloop.run(serve(settings, tls_where))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"courtlink: cannot serve: {exc}", file=sys.stderr)
        return 1
    except EMBEDDED_STORE_ERRORS as exc:
        print(f"courtlink: cannot open the store in {settings.data_dir}: {exc}", file=sys.stderr)
        return 1
    return 0


# -- recorder (issue 10, part recorder) -----------------------------------------------------------------------


def _recorder(argv: list[str]) -> int:
    """``courtlink recorder [--recorder-id ID]``: one recorder process, following every live hearing over Redis."""
    from courtlink.recorder_process import recorder

    parser = argparse.ArgumentParser(
        prog="courtlink recorder",
        description="Run one recorder: it follows every live hearing over Redis (redis_url), receives frames from "
        "the media nodes' frame pipes and writes sealed archives to its data dir. Its keys: courtlink recorder "
        "keys {export,rotate} --help.",
    )
    parser.add_argument("--recorder-id", help="this recorder's id (default: the settings' recorder.recorder_id)")
    parser.add_argument("--data-dir", type=Path, help="where archives and keys are written (default: the settings')")
    parser.add_argument("--config", type=Path, help="TOML settings file (default: $COURTLINK_CONFIG)")
    args = parser.parse_args(argv)
    settings = load_settings(args.config, data_dir=args.data_dir)
    _needs_redis(
        settings,
        "recorder needs redis_url (set it in the settings file or COURTLINK_REDIS_URL): it finds "
        "signaling and the media nodes on Redis",
    )
    check_data_dir(settings, _data_dir_source(args))
    try:
        asyncio.run(recorder(settings, args.recorder_id or settings.recorder.recorder_id))
    except KeyboardInterrupt:
        pass
    except ConfigError:
        raise
    except Exception as exc:  # the store or bus unreachable at start (redis raises its own types): one line
        print(f"courtlink: recorder cannot run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def with_tls_flags(settings: Settings, args: argparse.Namespace) -> tuple[Settings, tuple[str, str]]:
    """The settings with ``--tls-cert``/``--tls-key`` applied (flags win), and where each path was set."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return settings, ("http.tls_cert", "http.tls_key")
    http = settings.http.model_copy(
        update={"tls_cert": cert or settings.http.tls_cert, "tls_key": key or settings.http.tls_key}
    )
    if (http.tls_cert is None) != (http.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both (or set http.tls_cert and http.tls_key)")
    where = ("--tls-cert" if cert else "http.tls_cert", "--tls-key" if key else "http.tls_key")
    return settings.model_copy(update={"http": http}), where


SIGNALING_KEYS: dict[str, tuple[str, ...]] = {
    "token_secret": ("tokens", "secret"),
    "public_base_url": ("public_url",),
    "api_keys": ("api_keys",),
}
"""The signaling configuration's fields that come from a settings key of another name."""


def check_front_door(settings: Settings, config: Path | None) -> None:
    """Refuse (:class:`ConfigError`) settings the signaling configuration refuses (a short token secret, ...)."""
    from pydantic import ValidationError

    from courtlink.wiring import signaling_config

    # Secrets kept in the data dir are checked with it; stand-ins of the right length take their place here.
    admin = settings.admin_key.get_secret_value() if settings.admin_key else secrets.token_urlsafe(32)
    secret = settings.tokens.secret.get_secret_value() if settings.tokens.secret else secrets.token_urlsafe(48)
    try:
        signaling_config(settings, admin, secret)
    except ValidationError as exc:
        env_file = os.environ.get(CONFIG_ENV)
        file = config or (Path(env_file) if env_file else None)
        raise ConfigError(describe_errors(exc, file, renamed=SIGNALING_KEYS)) from None


def _data_dir_source(args: argparse.Namespace) -> str:
    """Where the data dir setting came from, for error messages."""
    if getattr(args, "data_dir", None) is not None:
        return "--data-dir"
    if any(k.upper() == "COURTLINK_DATA_DIR" for k in os.environ):
        return "environment variable COURTLINK_DATA_DIR"
    config = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    return f"data_dir of {config}" if config else "the default data_dir"


def check_data_dir(settings: Settings, source: str) -> None:
    """Refuse (:class:`ConfigError`) a data dir the server cannot create, write, or whose files it cannot use."""
    data_dir = settings.data_dir
    where = f"data dir {data_dir} ({source})"
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create it: {exc.strerror or exc}") from None
    if not data_dir.is_dir():
        raise ConfigError(f"{where}: not a directory")
    try:
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}: not writable: {exc.strerror or exc}") from None
    for name in ("courtlink.sqlite3", ADMIN_KEY_FILE, TOKEN_SECRET_FILE):
        path = data_dir / name
        if path.exists() and not os.access(path, os.R_OK | (os.W_OK if name.endswith("sqlite3") else 0)):
            raise ConfigError(f"{where}: cannot {'write' if name.endswith('sqlite3') else 'read'} {path}")
    for name, given, what, minimum in (
        (ADMIN_KEY_FILE, settings.admin_key, "admin key", MIN_KEY_LENGTH),
        (TOKEN_SECRET_FILE, settings.tokens.secret, "token secret", MIN_SECRET_LENGTH),
    ):
        stored_in = data_dir / name
        if given is not None or not stored_in.is_file():
            continue
        try:
            stored = stored_in.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{stored_in}: cannot read the {what}: {exc}") from None
        if stored and len(stored) < minimum:
            raise ConfigError(f"{stored_in}: {what}: must be at least {minimum} characters long")


# -- media-node ----------------------------------------------------------------------------------------------


def _media_node(args: argparse.Namespace) -> int:
    from courtlink import workers
    from courtlink.logs import configure_logging
    from courtlink.node_process import run_media_node
    from media.node import InProcessNode
    from media.service import NodeIdInUse
    from rooms.bus import BusError

    settings = load_settings(args.config)
    _needs_redis(
        settings,
        "media-node needs redis_url (the Redis its signaling processes use): set redis_url in the "
        "settings file or COURTLINK_REDIS_URL",
    )
    if args.node_id is not None and not args.node_id.strip():
        raise CliError("--node-id must not be empty", 2)
    if not 1 <= args.workers <= workers.MAX_WORKERS:
        raise CliError(f"--workers must be between 1 and {workers.MAX_WORKERS} (one per core), not {args.workers}", 2)
    node_id = args.node_id or settings.media.node_id
    plans = workers.plan_workers(settings, node_id, args.workers) if args.workers > 1 else []
    InProcessNode.check_environment()  # a mismatched aiortc: one line, exit 2 (main)
    owner: str | None = None
    cpu: int | None = None
    if args.worker is not None:  # one worker of a supervisor (courtlink.workers)
        if not 0 <= args.worker < len(plans) or not args.worker_owner or args.supervisor_pid is None:
            raise CliError("--worker is given by the supervisor of --workers N only", 2)
        plan = plans[args.worker]
        settings, node_id, owner = workers.worker_settings(settings, plan), plan.node_id, args.worker_owner
        configure_logging(settings.log_level, settings.log_format)
        cpu = workers.prepare_worker(args.worker, args.supervisor_pid)
    elif plans:
        config = str(args.config) if args.config is not None else None
        try:
            supervisor = workers.run_supervisor(settings, node_id, args.workers, region=args.region, config=config)
            return asyncio.run(supervisor)
        except KeyboardInterrupt:
            return 0
    try:
        eventloop.run(run_media_node(settings, node_id=node_id, region=args.region, owner=owner, cpu=cpu))
    except KeyboardInterrupt:
        pass
    except BusError as exc:
        print(f"courtlink: media-node cannot use the bus: {exc}", file=sys.stderr)
        return 1
    except NodeIdInUse as exc:
        print(f"courtlink: media-node: {exc}: give each node its own --node-id", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"courtlink: media-node cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


# -- signaling -----------------------------------------------------------------------------------------------


def _signaling(args: argparse.Namespace) -> int:
    from courtlink.signaling_process import run_signaling
    from rooms.bus import BusError

    settings = load_settings(args.config, host=args.host, port=args.port, data_dir=args.data_dir)
    _needs_redis(
        settings,
        "signaling needs redis_url (the Redis its media nodes and other signaling processes use): "
        "set redis_url in the settings file or COURTLINK_REDIS_URL",
    )
    settings, tls_where = _front_door(settings, args)
    try:
        asyncio.run(run_signaling(settings, tls_where))
    except KeyboardInterrupt:
        pass
    except BusError as exc:
        print(f"courtlink: signaling cannot use the bus: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"courtlink: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


# -- talking to a running server -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The server a client command talks to, and the key it uses."""

    url: str
    key: str


def _target(args: argparse.Namespace) -> Target:
    """The server's URL and the API key, from the options, the environment, then the settings and data dir."""
    url = args.url or os.environ.get("COURTLINK_URL")
    key = args.key or os.environ.get("COURTLINK_API_KEY")
    settings: Settings | None = None
    if not url or not key:
        settings = load_settings(args.config, data_dir=args.data_dir)
    if not url:
        assert settings is not None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)  # noqa: S104
        scheme = "https" if settings.http.tls_cert is not None else "http"
        url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{settings.port}"
    if not key:
        assert settings is not None
        if settings.admin_key is not None:
            key = settings.admin_key.get_secret_value()
        else:
            path = settings.data_dir / ADMIN_KEY_FILE
            try:
                key = path.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                raise CliError(
                    f"no API key: {path} does not exist; pass --key, set COURTLINK_ADMIN_KEY, or give the server's "
                    "data dir with --data-dir",
                    2,
                ) from None
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"cannot read the admin key {path}: {exc}", 2) from None
    return Target(str(url).rstrip("/"), key)


class Api:
    """A few REST calls with one-line errors: the server down, the key refused, any other refusal."""

    def __init__(self, http: aiohttp.ClientSession, target: Target) -> None:
        self._http = http
        self.url = target.url

    async def call(self, method: str, path: str, *, ok: Sequence[int] = (), **kwargs: Any) -> tuple[int, Any]:
        """``(status, JSON body)``; statuses >= 400 not in ``ok`` raise :class:`CliError`."""
        try:
            async with self._http.request(method, f"{self.url}/api/v1{path}", **kwargs) as resp:
                try:
                    body = await resp.json(content_type=None)
                except (ValueError, aiohttp.ClientPayloadError):
                    body = None
                status = resp.status
        except aiohttp.ClientConnectorError:
            raise CliError(
                f"no courtlink server answers at {self.url}: start one with `courtlink serve`, or pass --url"
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CliError(f"cannot reach {self.url}: {type(exc).__name__} {exc}".rstrip()) from None
        if status >= 400 and status not in ok:
            raise CliError(_refusal(self.url, status, body))
        if not isinstance(body, dict):
            raise CliError(f"{self.url} did not answer as a courtlink server (HTTP {status}, no JSON)")
        return status, body


def _refusal(url: str, status: int, body: Any) -> str:
    if status == 401:
        return (
            f"the server at {url} refused the API key (401): pass the admin key with --key or COURTLINK_ADMIN_KEY, "
            "or run where the server's data dir is (--data-dir)"
        )
    if status == 403:
        return f"the server at {url} does not allow this key to do that (403): use the admin key"
    if not isinstance(body, dict):
        return f"{url} did not answer as a courtlink server (HTTP {status})"
    detail = str(body.get("detail") or "")
    conflicts = body.get("conflicts")
    if isinstance(conflicts, list) and conflicts:
        detail = "; ".join(str(c.get("detail", c)) if isinstance(c, dict) else str(c) for c in conflicts)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        loc = ".".join(str(p) for p in first.get("loc", []) if p != "body")
        detail = f"{loc}: {first.get('msg', '')}" if loc else str(first.get("msg", detail))
    return f"{status} {body.get('title', '')}: {detail}".rstrip(": ")


async def _session(args: argparse.Namespace, work: Callable[[Api], Awaitable[int]]) -> int:
    target = _target(args)
    headers = {"Authorization": f"Bearer {target.key}"}
    async with aiohttp.ClientSession(headers=headers, timeout=HTTP_TIMEOUT) as http:
        return await work(Api(http, target))


# -- demo ------------------------------------------------------------------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    if not 5 <= args.minutes <= 24 * 60:
        raise CliError("--minutes must be between 5 and 1440", 2)
    return await _session(args, lambda api: _book_demo(api, args.minutes, args.json))


async def _book_demo(api: Api, minutes: int, as_json: bool) -> int:
    _, listed = await api.call("GET", "/sites")
    sites = {s["id"]: s for s in listed.get("items", [])}
    for site in DEMO_SITES:
        if site["id"] not in sites:
            status, body = await api.call("POST", "/sites", json=site, ok=(409,))
            sites[str(site["id"])] = body if status == 201 else site
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    starts, ends = now, now + timedelta(minutes=minutes)
    room = await _free_demo_room(api, starts, ends)
    tag = secrets.token_hex(3)
    participants: list[dict[str, Any]] = []
    for name, role, site_id in DEMO_CAST:
        entry: dict[str, Any] = {"name": name, "role": role, "site_id": site_id, "identity": f"demo-{tag}-{role}"}
        if role == "counsel":
            entry["represents"] = [i for i, (_, r, _) in enumerate(DEMO_CAST) if r == "defendant"]
        participants.append(entry)
    booking = {
        "case_number": f"(DEMO) {now:%Y-%m-%d %H:%M} {tag}",
        "title": "Demo: State v. Li Ming",
        "kind": "trial",
        "courtroom_id": room,
        "starts_at": starts.isoformat(),
        "ends_at": ends.isoformat(),
        "participants": participants,
    }
    _, booked = await api.call("POST", "/hearings", json=booking)
    if as_json:
        print(json.dumps(booked, ensure_ascii=False, indent=2))
        return 0
    local = starts.astimezone()
    print(
        f"Booked demo hearing {booked['id']} ({booked['case_number']}) in courtroom {room}, "
        f"{local:%H:%M}-{ends.astimezone():%H:%M} {local:%Z}, starting now."
    )
    print("Open each link in its own browser tab or window; the judge opens the hearing and admits the others.\n")
    for p in booked["participants"]:
        site_name = sites.get(p["site_id"], {}).get("name", p["site_id"])
        print(f"{p['role'].upper():<10} {p['name']}, at {site_name}")
        print(f"           {p['join_url']}")
    return 0


async def _free_demo_room(api: Api, starts: datetime, ends: datetime) -> str:
    """The first demo courtroom (``demo-room``, ``demo-room-2``, ...) with no live booking in the window.

    A missing one is created. Earlier demo hearings keep their courtroom, so their links keep working.
    """
    _, listed = await api.call("GET", "/courtrooms")
    rooms = {r["id"] for r in listed.get("items", [])}
    for n in range(1, MAX_DEMO_ROOMS + 1):
        room = DEMO_ROOM if n == 1 else f"{DEMO_ROOM}-{n}"
        if room not in rooms:
            body = {"id": room, "name": f"Demo courtroom {n}", "site_id": "demo-court"}
            await api.call("POST", "/courtrooms", json=body, ok=(409,))
            return room
        params = {"courtroom_id": room, "from": starts.isoformat(), "to": ends.isoformat()}
        _, hearings = await api.call("GET", "/hearings", params=params)
        if not any(h.get("state") not in ("cancelled", "adjourned") for h in hearings.get("items", [])):
            return room
    raise CliError(f"all {MAX_DEMO_ROOMS} demo courtrooms are busy now; adjourn or cancel a demo hearing first")


# -- hearings --------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """TOML dates and times as RFC 3339 strings, the rest unchanged."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


async def _hearings(args: argparse.Namespace) -> int:
    if args.hearings_command == "book":
        try:
            text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
            body = _jsonable(tomllib.loads(text))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"cannot read {args.file}: {exc}", 2) from None
        if not isinstance(body, dict):
            raise CliError(f"{args.file} is not a hearing table", 2)
        for field in ("starts_at", "ends_at"):
            if getattr(args, field):
                body[field] = getattr(args, field)

        async def book(api: Api) -> int:
            _, booked = await api.call("POST", "/hearings", json=body)
            _show(booked, args.json, _print_booking)
            return 0

        return await _session(args, book)
    params = {
        k: v
        for k, v in (("courtroom_id", args.courtroom), ("site_id", args.site), ("from", args.from_), ("to", args.to))
        if v
    }

    async def listing(api: Api) -> int:
        _, listed = await api.call("GET", "/hearings", params=params)
        _show(listed, args.json, _print_list)
        return 0

    return await _session(args, listing)


async def _nodes(args: argparse.Namespace) -> int:
    """``courtlink nodes list|drain|undrain``."""
    if args.nodes_command == "list":

        async def listing(api: Api) -> int:
            _, listed = await api.call("GET", "/nodes")
            _show(listed, args.json, _print_nodes)
            return 0

        return await _session(args, listing)
    method = "POST" if args.nodes_command == "drain" else "DELETE"

    async def drain(api: Api) -> int:
        _, node = await api.call(method, f"/nodes/{quote(args.node_id, safe='')}/drain")
        _show(node, args.json, lambda n: _print_nodes({"items": [n]}))
        return 0

    return await _session(args, drain)


def _print_nodes(body: dict[str, Any]) -> None:
    items = body.get("items", [])
    for n in items:
        print(
            f"{n['id']}  {n['state']:<9} region={n.get('region') or '-'}  rooms={n['rooms']}  "
            f"peers={n['peers']}/{n['capacity_peers']}  load={n['load']}"
        )
    if not items:
        print("no media nodes")


def _show(body: dict[str, Any], as_json: bool, pretty: Callable[[dict[str, Any]], None]) -> None:
    if as_json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
    else:
        pretty(body)


def _print_booking(body: dict[str, Any]) -> None:
    print(f"booked {body['id']}  {body['case_number']}  {body['starts_at']} - {body['ends_at']}")
    for p in body.get("participants", []):
        print(f"  {p.get('role', ''):<12} {p.get('name', ''):<24} {p.get('join_url', '')}")
    for link in body.get("link_budget", []):
        if link.get("over"):
            hearings = ", ".join(h.get("case_number", "") for h in link.get("hearings", []))
            print(
                f"warning: site {link['site_id']} link over budget: {link['expected_mbps']} of {link['link_mbps']} "
                f"Mbit/s expected at that time ({hearings})"
            )


def _print_list(body: dict[str, Any]) -> None:
    items = body.get("items", [])
    for h in items:
        where = f"{h['starts_at']}  {h['courtroom_id']:<16}"
        print(f"{h['id']}  {h['state']:<10} {where} {h['case_number']}  {h.get('title', '')}")
    if not items:
        print("no hearings")


if __name__ == "__main__":
    raise SystemExit(main())
