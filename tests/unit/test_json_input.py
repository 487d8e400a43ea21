"""The shared JSON decoder of the front door: depth counted right, lone surrogates named, valid JSON untouched."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from signaling.json_input import MAX_DEPTH, JsonRefused, check_depth, depth, loads, lone_surrogate

_TRICKY = ['"', "\\", "[", "]", "{", "}", '\\"[', "]\\", "\\\\", "é", "\u2028", "\U0001f600", "\x00"]


def _doc(rng: random.Random, levels: int) -> Any:
    """A random JSON value nesting at most ``levels`` deep, with strings full of brackets, quotes and escapes."""
    kind = rng.randrange(6) if levels > 0 else rng.randrange(3)
    if kind == 0:
        return "".join(rng.choice(_TRICKY) for _ in range(rng.randrange(6)))
    if kind == 1:
        return rng.choice([0, -1, 1.5, 10**30, True, False, None])
    if kind == 2:
        return ""
    if kind in (3, 4):
        return [_doc(rng, levels - 1) for _ in range(rng.randrange(4))]
    return {"".join(rng.choice(_TRICKY) for _ in range(3)) + str(i): _doc(rng, levels - 1) for i in range(3)}


def _true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_true_depth(v) for v in value.values()), default=0)
    return 0


def test_depth_matches_the_parsed_document() -> None:
    """For 2,000 seeded documents with brackets and escapes inside strings, the scan's depth is the true depth."""
    rng = random.Random(18)
    for _ in range(2000):
        doc = _doc(rng, rng.randrange(8))
        for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), json.dumps(doc, indent=1)):
            assert depth(text) == _true_depth(doc), text
            assert depth(text.encode()) == _true_depth(doc)
            assert loads(text) == json.loads(text)


def test_depth_limit_is_exact() -> None:
    """MAX_DEPTH levels pass, one more is json_too_deep; brackets inside strings never count."""
    check_depth("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JsonRefused) as refused:
        check_depth("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert refused.value.code == "json_too_deep"
    check_depth(json.dumps({"a": "[" * 10_000}))
    check_depth('["\\"' + "[" * 100 + '"]')


@pytest.mark.parametrize(
    "text",
    [
        "[" * 300_000,  # only openers: refused, not counted by recursion
        '"' + '\\"' * 100_000 + "\\",  # escaped quotes ending in a lone backslash (no quadratic rescans)
        '"' * 200_001,
        "\\" * 200_000,
        '["a",' * 50_000,
    ],
)
def test_hostile_texts_are_scanned_without_recursion(text: str) -> None:
    """Texts built to defeat a naive scanner are refused or passed to the parser, never crash it."""
    with pytest.raises(JsonRefused):
        loads(text)


@pytest.mark.parametrize(
    ("text", "offset", "code"),
    [
        ('"\\ud800"', 1, 0xD800),
        ('"\\udfff"', 1, 0xDFFF),
        ('{"a": "\\ud83d\\ude00", "b": "\\ud83d"}', 28, 0xD83D),
        ('"\\ud800\\u0041"', 1, 0xD800),
        ('"x\\ud800 \\udc00"', 2, 0xD800),
    ],
)
def test_lone_surrogates_are_named(text: str, offset: int, code: int) -> None:
    """A lone surrogate escape is malformed_json naming the escape and where it is."""
    assert lone_surrogate(text) == (offset, code)
    with pytest.raises(JsonRefused) as refused:
        loads(text)
    assert refused.value.code == "malformed_json"
    assert f"\\u{code:04x}" in refused.value.detail


def test_pairs_and_escaped_backslashes_are_not_surrogates() -> None:
    """A proper surrogate pair and the text `\\\\ud800` (an escaped backslash) decode normally."""
    assert loads('"\\ud83d\\ude00"') == "\U0001f600"
    assert loads('"\\\\ud800"') == "\\ud800"
    assert lone_surrogate('"\\\\ud800"') is None
