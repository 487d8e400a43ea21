"""The aiortc adapter: its start-up self-check, and that no other media module uses aiortc's internals."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import aioice
import aiortc
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender

from media import AiortcMismatch
from media.aiortc_compat import self_check
from media.node import InProcessNode
from media.settings import NodeSettings
from tests.cli_fixtures import one_line_error
from tests.serve_process import clean_env

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = "aiortc_compat.py"
GUARDED = sorted([*(ROOT / "media").glob("*.py"), *(ROOT / "recorder").glob("*.py")])


def _versions() -> tuple[str, str]:
    return importlib.metadata.version("aiortc"), importlib.metadata.version("aioice")


def _assert_one_line(message: str, missing: str) -> None:
    aiortc_version, aioice_version = _versions()
    assert "\n" not in message
    assert missing in message
    assert f"aiortc {aiortc_version}" in message
    assert f"aioice {aioice_version}" in message


# --- self-check --------------------------------------------------------------------------------------------


def test_self_check_passes_on_the_installed_versions() -> None:
    """On the aiortc/aioice that pyproject pins, the media node's self-check finds every internal it uses."""
    self_check()
    InProcessNode(NodeSettings(node_id="n1"))


def test_missing_sender_method_refuses_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """An aiortc without RTCRtpSender._run_rtp: the self-check names it and the versions in one line."""
    monkeypatch.delattr(RTCRtpSender, "_run_rtp")
    with pytest.raises(AiortcMismatch) as caught:
        self_check()
    _assert_one_line(str(caught.value), "RTCRtpSender._run_rtp")


def test_missing_instance_attribute_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that no longer sets the depayloaded bytes on packets (``_data``) is caught before any packet."""

    async def handle(self: RTCRtpReceiver, packet: object, arrival_time_ms: int) -> None:
        return None

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle)
    with pytest.raises(AiortcMismatch) as caught:
        self_check()
    _assert_one_line(str(caught.value), "RTCRtpReceiver._data")


def test_changed_signature_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PLI sender whose parameters changed is a mismatch too, named with the parameters expected."""

    async def send_pli(self: RTCRtpReceiver) -> None:
        return None

    monkeypatch.setattr(RTCRtpReceiver, "_send_rtcp_pli", send_pli)
    with pytest.raises(AiortcMismatch) as caught:
        self_check()
    _assert_one_line(str(caught.value), "RTCRtpReceiver._send_rtcp_pli(self, media_ssrc)")


def test_media_node_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process media node does not start on a mismatched aiortc (no failure later, on the packet path)."""
    monkeypatch.delattr(RTCRtpReceiver, "_handle_rtcp_packet")
    with pytest.raises(AiortcMismatch, match=r"RTCRtpReceiver\._handle_rtcp_packet"):
        InProcessNode(NodeSettings(node_id="n1"))


def test_serve_refuses_with_one_line_and_exit_2(tmp_path: Path) -> None:
    """``courtlink serve`` on an aiortc lacking an internal exits 2 with one line naming it and the versions."""
    script = (
        "import sys; from aiortc import RTCRtpSender; del RTCRtpSender._retransmit; "
        "from courtlink.cli import main; sys.exit(main(['serve', '--port', '0']))"
    )
    result = _python(script, tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert line.startswith("courtlink: media node cannot start:")
    _assert_one_line(line, "RTCRtpSender._retransmit")


def _python(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -c script`` as the CLI tests run ``courtlink`` (clean environment, captured output)."""
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- no aiortc/aioice internals outside the adapter -------------------------------------------------------


def _private_names_of(*packages: object) -> frozenset[str]:
    """Every underscored attribute or function name in the packages' own source (``x._y``, ``def _y``)."""
    names: set[str] = set()
    for package in packages:
        folder = Path(str(getattr(package, "__file__", ""))).parent
        for path in folder.rglob("*.py"):
            if "contrib" in path.parts:
                continue  # aiortc.contrib (signaling helpers, media players) is not what the node reaches into
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute):
                    name = node.attr
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = node.name
                else:
                    continue
                if name.startswith("_") and not name.endswith("__"):
                    names.add(name)
    return frozenset(names)


PRIVATE = _private_names_of(aiortc, aioice)
_MANGLED = re.compile(r"_[A-Za-z]\w*?__([a-z]|$)")
"""A name-mangled private attribute (``_RTCRtpSender__mid``): aiortc's own classes' ``self.__x``."""


def private_uses(source: str, private: frozenset[str] = PRIVATE) -> list[str]:
    """Where ``source`` reaches into aiortc/aioice: internal imports, their underscored names, mangled names."""
    found: list[str] = []
    tree = ast.parse(source)
    # A class's own ``__slots__`` name its own attributes (ForwardedTrack's ``_queue`` is not aioice's).
    own = {
        id(constant)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets)
        for constant in ast.walk(node.value)
    }
    for node in ast.walk(tree):
        if id(node) in own:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top == "aioice" or (top == "aiortc" and node.module != "aiortc"):
                found.append(f"{line}: from {node.module} import ...")
            elif node.module == "aiortc":
                found += [f"{line}: aiortc.{a.name}" for a in node.names if a.name not in aiortc.__all__]
        elif isinstance(node, ast.Import):
            found += [
                f"{line}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "aioice" or ("." in a.name and a.name.startswith("aiortc."))
            ]
        elif isinstance(node, ast.Attribute) and (node.attr in private or _MANGLED.match(node.attr)):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{line}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in private or _MANGLED.match(text):
                found.append(f"{line}: {text!r}")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


@pytest.mark.parametrize("path", [p for p in GUARDED if p.name != ADAPTER], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_aiortc_internals_outside_the_adapter(path: Path) -> None:
    """Media and recorder modules use aiortc's public API and media.aiortc_compat only, never its internals."""
    assert private_uses(path.read_text(encoding="utf-8")) == [], f"{path}: use media.aiortc_compat instead"


def test_the_guard_catches_internal_uses() -> None:
    """The scan above sees each kind of internal use (so a passing scan means something)."""
    source = "\n".join(
        [
            "from aiortc.rtp import RtpPacket",
            "from aioice.ice import StunProtocol",
            "from aiortc import RTCRtpSender, random_thing",
            "import aiortc.sdp",
            "receiver._send_rtcp_pli(1)",
            "x = sender._RTCRtpSender__mid",
            "getattr(sender, '_RTCRtpSender__packet_count')",
            "transceiver._codecs = []",
            "frame = packet._data",
            "prefix = '_RTCRtpSender__'",
            "self._codecs = []",
            "__slots__ = ('_queue', '_offset')",
            "names = ('_queue', '_offset')",
        ]
    )
    assert [hit.split(":")[0] for hit in private_uses(source)] == [
        *("1", "2", "3", "4", "5", "6", "7", "8", "9", "10"),
        *("13", "13"),  # a class's own slots are its own names; the same strings elsewhere are not
    ]


def test_the_adapter_does_use_internals() -> None:
    """The adapter itself is where the internals are (the scan is not trivially empty everywhere)."""
    assert private_uses((ROOT / "media" / ADAPTER).read_text(encoding="utf-8"))
