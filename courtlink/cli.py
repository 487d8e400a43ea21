"""The ``courtlink`` command line.

- ``courtlink serve``: the all-in-one server (signaling, one media node, a recorder) on the embedded store.
- ``courtlink hearings book --file hearing.toml`` and ``courtlink hearings list``: a clerk's tools,
  talking to a running server over its REST API (so every booking is checked and audited the same way).
- ``courtlink verify ARCHIVE`` and ``courtlink render ARCHIVE -o hearing.mp4``: the recorder's offline tools
  (verify trusts the keys of the settings' data dir unless told otherwise; see docs/archive.md).
- ``courtlink recorder keys export [-o FILE]``: the recorders' public keys, to keep with the recordings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import ValidationError

from courtlink.bootstrap import ADMIN_KEY_FILE
from courtlink.settings import load_settings

DEFAULT_URL = "http://127.0.0.1:8080"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="courtlink", description="Remote hearings for courts.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run signaling, a media node and a recorder in one process")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--data-dir", type=Path, help="data directory (default ./courtlink-data)")
    serve.add_argument("--config", type=Path, help="TOML settings file (see deploy/courtlink.example.toml)")

    hearings = sub.add_parser("hearings", help="book and list hearings on a running server")
    hsub = hearings.add_subparsers(dest="hearings_command", required=True)
    for name, text in (("book", "book a hearing described in a TOML file"), ("list", "list booked hearings")):
        cmd = hsub.add_parser(name, help=text)
        cmd.add_argument("--url", default=os.environ.get("COURTLINK_URL", DEFAULT_URL), help="server base URL")
        cmd.add_argument("--key", help="API key (default: $COURTLINK_API_KEY, else the data dir's admin key)")
        cmd.add_argument("--data-dir", type=Path, default=Path("courtlink-data"), help="where to find admin.key")
        cmd.add_argument("--json", action="store_true", help="print the server's JSON answer")
        if name == "book":
            cmd.add_argument("--file", type=Path, required=True, help="hearing TOML (see deploy/hearing.example.toml)")
        else:
            cmd.add_argument("--courtroom", help="only this courtroom")
            cmd.add_argument("--site", help="only hearings joined from this site")
            cmd.add_argument("--from", dest="from_", help="window start (RFC 3339)")
            cmd.add_argument("--to", help="window end (RFC 3339)")

    verify = sub.add_parser("verify", help="verify a recording (a session or a hearing directory)", add_help=False)
    verify.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    recorder = sub.add_parser("recorder", help="the recorder's keys: export the public keys, rotate a key")
    recorder.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    render = sub.add_parser("render", help="render an archive to a composite MP4")
    render.add_argument("archive", help="archive directory")
    render.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``courtlink`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["verify"], ["recorder"]):
        # Their own parsers (recorder.cli) take every option, --help included.
        from recorder import cli as recorder_cli

        if argv[0] == "verify":
            return recorder_cli.verify_main(argv[1:], default_data_dir=_settings_data_dir())
        if argv[1:2] != ["keys"]:
            print("usage: courtlink recorder keys {export,rotate} [--data-dir DIR] ...", file=sys.stderr)
            return 2
        return recorder_cli.keys_main(argv[2:], default_data_dir=_settings_data_dir())
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "hearings":
        return asyncio.run(_hearings(args))
    from recorder import cli as recorder_cli

    return recorder_cli.render_main([args.archive, *args.rest])


def _settings_data_dir() -> Path | None:
    """The data dir the server's settings name (environment, $COURTLINK_CONFIG): whose keys verify trusts."""
    try:
        return load_settings().data_dir
    except (ValidationError, FileNotFoundError, tomllib.TOMLDecodeError):
        return None


def _serve(args: argparse.Namespace) -> int:
    from courtlink.wiring import serve

    try:
        settings = load_settings(args.config, host=args.host, port=args.port, data_dir=args.data_dir)
    except (ValidationError, FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        print(f"courtlink: invalid settings: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"courtlink: cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _api_key(args: argparse.Namespace) -> str | None:
    if args.key:
        return str(args.key)
    env = os.environ.get("COURTLINK_API_KEY") or os.environ.get("COURTLINK_ADMIN_KEY")
    if env:
        return env
    path = Path(args.data_dir) / ADMIN_KEY_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


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
    key = _api_key(args)
    if not key:
        print("courtlink: no API key: pass --key, set COURTLINK_API_KEY, or run where the data dir is", file=sys.stderr)
        return 2
    headers = {"Authorization": f"Bearer {key}"}
    base = str(args.url).rstrip("/")
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            if args.hearings_command == "book":
                try:
                    text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
                    body = _jsonable(tomllib.loads(text))
                except (OSError, tomllib.TOMLDecodeError) as exc:
                    print(f"courtlink: cannot read {args.file}: {exc}", file=sys.stderr)
                    return 2
                async with http.post(f"{base}/api/v1/hearings", json=body) as resp:
                    return _report(resp.status, await resp.json(content_type=None), args.json, _print_booking)
            params = {
                k: v
                for k, v in (
                    ("courtroom_id", args.courtroom),
                    ("site_id", args.site),
                    ("from", args.from_),
                    ("to", args.to),
                )
                if v
            }
            async with http.get(f"{base}/api/v1/hearings", params=params) as resp:
                return _report(resp.status, await resp.json(content_type=None), args.json, _print_list)
    except aiohttp.ClientError as exc:
        print(f"courtlink: cannot reach {base}: {exc}", file=sys.stderr)
        return 1


def _report(status: int, body: Any, as_json: bool, pretty: Any) -> int:
    if as_json:
        print(json.dumps(body, ensure_ascii=False, indent=2))
    elif status >= 400:
        detail = body.get("detail", "") if isinstance(body, dict) else body
        print(
            f"courtlink: {status} {body.get('title', '') if isinstance(body, dict) else ''}: {detail}", file=sys.stderr
        )
    else:
        pretty(body)
    return 0 if status < 400 else 1


def _print_booking(body: dict[str, Any]) -> None:
    hearing = body.get("hearing", body)
    print(f"booked {hearing['id']}  {hearing['case_number']}  {hearing['starts_at']} - {hearing['ends_at']}")
    for p in body.get("participants", hearing.get("participants", [])):
        print(f"  {p.get('role', ''):<12} {p.get('name', ''):<24} {p.get('join_url', '')}")


def _print_list(body: Any) -> None:
    items = body.get("hearings", body) if isinstance(body, dict) else body
    for h in items:
        where = f"{h['starts_at']}  {h['courtroom_id']:<16}"
        print(f"{h['id']}  {h['state']:<10} {where} {h['case_number']}  {h.get('title', '')}")
    if not items:
        print("no hearings")


if __name__ == "__main__":
    raise SystemExit(main())
