"""A loopback-only Janus VideoRoom for ``bench/forwarding.py``: the C SFU the media node is measured against.

Uses Debian's ``janus`` package (1.1.2), which the bench never installs itself::

    apt-get install -y janus

:class:`JanusServer` writes a minimal configuration into a temporary directory (the core, the VideoRoom
plugin with one room, the HTTP transport bound to 127.0.0.1; every other plugin, transport, logger and
event handler disabled) and starts ``janus`` with it, either stock or with ``event_loops`` set.

Two traps, both handled here:

- Janus 1.1 skips interfaces flagged ``IFF_LOOPBACK`` before it reads ``ice_enforce_list``, so on
  loopback it gathers no candidate at all. ``janus_shim.c`` (compiled with gcc into the temporary
  directory and loaded with ``LD_PRELOAD``) hands Janus a ``getifaddrs`` list whose only address is
  127.0.0.1, without the loopback flag. Its ICE candidates are then 127.0.0.1 only.
- A subscriber's ``join`` fails with "No such feed" until the publisher's PeerConnection is up: wait
  for the ``webrtcup`` event on the publisher's handle (:meth:`JanusSession.webrtcup`).

Janus's CPU time is read from ``/proc/<pid>/stat`` (utime + stime, all its threads, finished ones
included): :meth:`JanusServer.cpu_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
ROOM = 1234
SHIM_SOURCE = Path(__file__).with_name("janus_shim.c")
ANSWER_TIMEOUT = 20.0
"""Seconds to wait for Janus's answer to a plugin request, or for a PeerConnection to come up."""
INSTALL_HINT = "Janus is not installed: the Janus baseline needs Debian's package (apt-get install -y janus)."


class JanusMissing(RuntimeError):
    """``janus`` (or gcc, for the loopback shim) is not on this machine."""


def janus_binary() -> str:
    """Path of the ``janus`` executable; :class:`JanusMissing` with the apt line when absent."""
    path = shutil.which("janus")
    if path is None or not _lib_dir().is_dir():
        raise JanusMissing(INSTALL_HINT)
    if shutil.which("gcc") is None:
        raise JanusMissing("gcc is needed to build the loopback getifaddrs shim for Janus (apt-get install -y gcc).")
    return path


def _lib_dir() -> Path:
    if JANUS_LIB.is_dir():
        return JANUS_LIB
    for candidate in Path("/usr/lib").glob("*/janus"):
        return candidate
    return JANUS_LIB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _disable(folder: Path, keep: str) -> str:
    """Every module in ``folder`` but ``keep``, as Janus's ``disable`` list wants them."""
    names = sorted(p.name for p in folder.glob("libjanus_*.so"))
    return ",".join(n for n in names if n != keep)


class JanusServer:
    """One ``janus`` process on 127.0.0.1, stock or with ``event_loops`` set; one VideoRoom, ``ROOM``."""

    def __init__(self, event_loops: int | None = None) -> None:
        self.event_loops = event_loops
        self.name = "janus" if event_loops is None else f"janus-el{event_loops}"
        self.url = ""
        self.proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def _write_config(self, folder: Path, http_port: int) -> None:
        lib = _lib_dir()
        loops = f"\tevent_loops = {self.event_loops}\n" if self.event_loops is not None else ""
        (folder / "janus.jcfg").write_text(
            "general: {\n"
            f'\tconfigs_folder = "{folder}"\n'
            f'\tplugins_folder = "{lib / "plugins"}"\n'
            f'\ttransports_folder = "{lib / "transports"}"\n'
            f'\tevents_folder = "{lib / "events"}"\n'
            f'\tloggers_folder = "{lib / "loggers"}"\n'
            "\tdebug_level = 3\n"
            f"{loops}"
            "}\n"
            "media: {\n\tipv6 = false\n}\n"
            # The shim leaves 127.0.0.1 alone in the list; the enforce list says so again.
            'nat: {\n\tnice_debug = false\n\tice_enforce_list = "lo"\n}\n'
            f'plugins: {{\n\tdisable = "{_disable(lib / "plugins", "libjanus_videoroom.so")}"\n}}\n'
            f'transports: {{\n\tdisable = "{_disable(lib / "transports", "libjanus_http.so")}"\n}}\n'
            f'loggers: {{\n\tdisable = "{_disable(lib / "loggers", "")}"\n}}\n'
            f'events: {{\n\tbroadcast = false\n\tdisable = "{_disable(lib / "events", "")}"\n}}\n'
        )
        (folder / "janus.transport.http.jcfg").write_text(
            "general: {\n"
            '\tjson = "plain"\n\tbase_path = "/janus"\n\thttp = true\n'
            f'\tport = {http_port}\n\tip = "127.0.0.1"\n\thttps = false\n'
            "}\n"
            "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
        )
        # bitrate 0: no REMB cap on the publisher; fir_freq 0: no keyframe request on a timer (both defaults).
        (folder / "janus.plugin.videoroom.jcfg").write_text(
            "general: {\n}\n"
            f"room-{ROOM}: {{\n"
            '\tdescription = "bench"\n\tpublishers = 4\n\tbitrate = 0\n\tfir_freq = 0\n'
            '\taudiocodec = "opus"\n\tvideocodec = "vp8"\n\trecord = false\n'
            "}\n"
        )

    async def start(self) -> None:
        """Write the configuration, build the shim, start Janus and wait until its HTTP API answers."""
        binary = janus_binary()
        self._dir = tempfile.TemporaryDirectory(prefix=f"bench-{self.name}-")
        folder = Path(self._dir.name)
        shim = folder / "janus_shim.so"
        await asyncio.to_thread(
            subprocess.run,
            ["gcc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
            check=True,
        )
        port = _free_port()
        self._write_config(folder, port)
        self.url = f"http://127.0.0.1:{port}/janus"
        env = {**os.environ, "LD_PRELOAD": str(shim)}
        with (folder / "janus.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *(binary, "-C", str(folder / "janus.jcfg"), "-F", str(folder), "-o"),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=folder,
            )
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                if self.proc.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{self.url}/info") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; its log: {folder / 'janus.log'}\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of Janus's log (for error messages)."""
        if self._dir is None:
            return ""
        path = Path(self._dir.name) / "janus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def cpu_seconds(self) -> float:
        """CPU time Janus has used so far (utime + stime of all its threads), from ``/proc/<pid>/stat``."""
        assert self.proc is not None
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        # Fields 14 and 15 of stat(5), counted from the state (field 3) here.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stop(self) -> None:
        """Stop Janus and remove its temporary directory."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class JanusError(RuntimeError):
    """Janus (or its VideoRoom plugin) refused a request."""


class JanusSession:
    """One Janus API session over HTTP: handles, plugin requests and the events that answer them (long poll)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession()
        self.session_id = 0
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._up: dict[int, asyncio.Event] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        transaction = secrets.token_hex(6)
        async with self.http.post(f"{self.url}{path}", json={**body, "transaction": transaction}) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(reply["error"])
        return reply

    async def open(self) -> None:
        """Create the session and start reading its events."""
        reply = await self._post("", {"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._poll = asyncio.ensure_future(self._long_poll())

    async def _long_poll(self) -> None:
        while True:
            try:
                async with self.http.get(f"{self.url}/{self.session_id}?maxev=50") as response:
                    events = await response.json(content_type=None)
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "webrtcup":
            self._up.setdefault(int(event["sender"]), asyncio.Event()).set()
        elif kind == "event":
            future = self._waiting.pop(event.get("transaction", ""), None)
            if future is not None and not future.done():
                future.set_result(event)

    async def attach(self) -> int:
        """A new handle on the VideoRoom plugin."""
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Send a plugin request and wait for its answer event: (plugin data, jsep or None)."""
        transaction = f"m{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        payload: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            payload["jsep"] = jsep
        async with self.http.post(f"{self.url}/{self.session_id}/{handle}", json=payload) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            self._waiting.pop(transaction, None)
            raise JanusError(reply["error"])
        if reply.get("janus") == "success":  # synchronous plugin request
            self._waiting.pop(transaction, None)
            return reply["plugindata"]["data"], None
        event = await asyncio.wait_for(future, ANSWER_TIMEOUT)
        data: dict[str, Any] = event["plugindata"]["data"]
        if "error" in data:
            raise JanusError(f"{data.get('error_code')}: {data['error']}")
        return data, event.get("jsep")

    async def webrtcup(self, handle: int) -> None:
        """Wait until the handle's PeerConnection is up (subscribers get "No such feed" before that)."""
        await asyncio.wait_for(self._up.setdefault(handle, asyncio.Event()).wait(), ANSWER_TIMEOUT)

    async def close(self) -> None:
        """Destroy the session (its handles leave the room) and stop reading events."""
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self.session_id:
            with contextlib.suppress(aiohttp.ClientError, JanusError):
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
        await self.http.close()
