"""Reading JSON from outside: one decoder for REST bodies and WebSocket frames.

Every JSON text a client sends passes :func:`check_depth` before any parser
sees it, so nesting deeper than :data:`MAX_DEPTH` is refused by a linear scan
instead of by a parser's recursion (Python's ``json`` raises ``RecursionError``
past about 1,000 levels). :func:`loads` then decodes with pydantic-core's
parser, which also refuses lone UTF-16 surrogates (``"\\ud800"``) that
Python's ``json`` lets through and that no JSON answer could carry back.

Both raise :class:`JsonRefused`, whose ``code`` is stable (``json_too_deep``,
``malformed_json``): the REST door answers it as a 400 problem, the WebSocket
as an ``error`` message.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import pydantic_core

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (a booking body needs 4, a WebSocket message 3)."""

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# One JSON string, or an unterminated one up to the end of the text. Possessive and always
# matching from a quote, so the scan stays linear however the quotes and escapes are arranged.
_BRACKETS = b"[]{}"
_NOT_BRACKETS = bytes(b for b in range(256) if b not in _BRACKETS)
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


class JsonRefused(ValueError):
    """A JSON text refused before or while decoding; ``code`` names why, ``detail`` says it in words."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _as_bytes(raw: str | bytes | bytearray) -> bytes:
    if isinstance(raw, str):
        # WebSocket text arrives decoded; surrogatepass so that encoding itself can never fail.
        return raw.encode("utf-8", "surrogatepass")
    return bytes(raw)


def _structure(raw: str | bytes | bytearray) -> bytes:
    """The brackets of ``raw`` that lie outside strings, in order."""
    return _STRING.sub(b"", _as_bytes(raw)).translate(None, _NOT_BRACKETS)


def _deepest(structure: bytes) -> int:
    if not structure:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, structure))))


def depth(raw: str | bytes | bytearray) -> int:
    """How deeply arrays and objects nest in ``raw``, counting brackets outside strings only.

    Linear in the size of ``raw`` and done in C (a regular expression, ``bytes.translate``,
    ``itertools.accumulate``); the callers bound the size (body limit, WebSocket frame limit).
    """
    return _deepest(_structure(raw))


def check_depth(raw: str | bytes | bytearray, limit: int = MAX_DEPTH) -> None:
    """Refuse ``raw`` with ``json_too_deep`` when its nesting exceeds ``limit`` (before any parser sees it)."""
    structure = _structure(raw)
    # Common case: no more opening brackets than the limit cannot nest deeper than it.
    if structure.count(b"[") + structure.count(b"{") <= limit:
        return
    if _deepest(structure) > limit:
        raise JsonRefused("json_too_deep", f"JSON nested deeper than {limit} levels of arrays and objects")


def loads(raw: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode one JSON text from a client: depth checked first, lone surrogates and NaN/Infinity refused."""
    check_depth(raw, max_depth)
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        lone = lone_surrogate(raw)
        if lone is not None:
            offset, code = lone
            raise JsonRefused(
                "malformed_json",
                f"not valid JSON: lone UTF-16 surrogate \\u{code:04x} at byte {offset} (text must be valid Unicode)",
            ) from None
        raise JsonRefused("malformed_json", f"not valid JSON: {exc}") from None


def lone_surrogate(raw: str | bytes | bytearray) -> tuple[int, int] | None:
    """The byte offset and code of the first ``\\uXXXX`` escape that is half a surrogate pair, if any.

    Only called once a text was refused, to say why in words: pydantic-core's own
    message for it ("unexpected end of hex escape") does not name the problem.
    """
    high: tuple[int, int, int] | None = None
    for match in _ESCAPE.finditer(_as_bytes(raw)):
        digits = match.group(1)
        code = int(digits, 16) if digits is not None else -1
        if high is not None:
            if 0xDC00 <= code <= 0xDFFF and match.start() == high[1]:
                high = None
                continue
            return high[0], high[2]
        if 0xD800 <= code <= 0xDBFF:
            high = (match.start(), match.end(), code)
        elif 0xDC00 <= code <= 0xDFFF:
            return match.start(), code
    return (high[0], high[2]) if high is not None else None
