"""Every reason code the server can send reaches a person in words, in English and Chinese, never as the raw code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

from protocol.client import MissingTrack
from recorder.manifest import GAP_REASONS, PERSON_GAP_REASONS
from signaling import tokens

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = ROOT / "signaling" / "web" / "i18n"
SOURCES = sorted((ROOT / "signaling").glob("*.py"))


def catalog(lang: str) -> dict[str, str]:
    """One catalog file of the client."""
    data: dict[str, str] = json.loads((CATALOGS / f"{lang}.json").read_text(encoding="utf-8"))
    return data


def code(text: str) -> str:
    """A close reason or code as the client reads it (reasons.js: spaces and dashes become underscores)."""
    return re.sub(r"[ -]+", "_", text.strip())


def server_codes() -> set[str]:
    """Codes from the server's sources: session errors, error messages, close reasons, token errors, recorder gaps."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in SOURCES)
    found = set(re.findall(r'SessionError\(\s*"([a-z_]+)"', text))
    found |= set(re.findall(r'Error\(code="([a-z_]+)"', text))
    found |= {code(r) for r in re.findall(r'Close\([^()]*?,\s*CLOSE_[A-Z_]+,\s*"([a-z ]+)"\)', text)}
    found |= {code(r) for r in re.findall(r'\.close\(\s*CLOSE_[A-Z_]+,\s*"([a-z ]+)"\)', text)}
    found |= {c.code for c in vars(tokens).values() if isinstance(c, type) and issubclass(c, tokens.TokenError)}
    found |= {"unbooked", "hearing_adjourned", "hearing_cancelled"}  # removed by a booking change; f"hearing {state}"
    found |= set(GAP_REASONS) | set(PERSON_GAP_REASONS) | set(get_args(MissingTrack.model_fields["reason"].annotation))
    return found


def test_every_server_reason_code_has_words_in_both_languages() -> None:
    """Each code has `reason.<code>` (or the older `error.<code>` / `rec.reason_<code>`) in en and zh-CN."""
    codes = server_codes()
    assert {"removed", "joined_elsewhere", "revoked", "recess", "disk", "too_many_offers"} <= codes  # the scan works
    for lang in ("en", "zh-CN"):
        said = {k for k, v in catalog(lang).items() if v}
        missing = sorted(c for c in codes if not {f"reason.{c}", f"error.{c}", f"rec.reason_{c}"} & said)
        assert not missing, f"{lang}: no words for {missing}"


def test_chinese_reasons_are_chinese() -> None:
    """A zh-CN `reason.` string is not the English one (a copied string would show English in a Chinese page)."""
    en, zh = catalog("en"), catalog("zh-CN")
    same = sorted(k for k in en if k.startswith(("reason.", "polish.", "netcheck.")) and en[k] == zh.get(k))
    assert not same, same
