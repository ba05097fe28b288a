"""Spam and boilerplate: URL block lists, bad words, boilerplate lines, and PII counts / redaction.

* URLs: datatrove's ``URLFilter`` with its bundled block lists (domains, URLs, banned words and subwords),
  with tldextract pinned to its bundled public-suffix snapshot (no network at run time).
* Bad words: share of words on datatrove's banned-word list (or a recipe file).
* Boilerplate lines (a line edit, like C4's): cookie and JavaScript notices, navigation and share/footer
  lines, and templated lines (the same shape, digits aside, three or more times in one page). The kept
  lines are stored as index ranges, so the edit is re-applied from signals, never recomputed.
* PII: e-mail and public IP counts always; redaction with datatrove's ``PIIFormatter`` when asked.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache

from filters.heuristics import expand_ranges, kept_ranges

_COOKIE = re.compile(r"\bcookies?\b.{0,80}\b(?:use|uses|using|accept|consent|policy|settings|agree|continu|enabled?)", re.I)
_JAVASCRIPT = re.compile(r"(?:enable|turn on|requires?|disabled|activate).{0,30}javascript|javascript.{0,30}(?:disabled|required|enabled?)", re.I)
_NAV_PHRASE = re.compile(
    r"^\W*(?:skip to (?:main )?content|back to top|share (?:this|on)\b|follow us|sign (?:in|up)\b|log ?in\b|log ?out\b"
    r"|subscribe\b|all rights reserved|copyright\b|©|read more\b|click here\b|previous post|next post|home\s*[|»>›/])",
    re.I,
)
_NAV_SEPARATORS = re.compile(r"\s[|»›•·/>]\s|\s\|\s?|\s?\|\s")
_DIGITS = re.compile(r"\d+")
_WORDS = re.compile(r"[a-z0-9]+")


def _is_navigation(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > 200:
        return False
    if len(s) <= 80 and _NAV_PHRASE.search(s):
        return True
    parts = [p for p in re.split(r"\s*[|»›•·]\s*", s) if p]
    # a menu: several short items between separators, no sentence punctuation
    return len(parts) >= 4 and all(len(p.split()) <= 3 for p in parts) and not s.endswith((".", "?", "!"))


def boilerplate_signals(text: str, min_repeats: int, max_template_chars: int) -> tuple[dict, str]:
    """(signals, cleaned text). Lines keep their own endings, so the edit is exact."""
    lines = text.splitlines(keepends=True)
    shapes: dict[str, int] = {}
    for line in lines:
        s = line.strip()
        if s and len(s) <= max_template_chars:
            shape = _DIGITS.sub("0", s.lower())
            shapes[shape] = shapes.get(shape, 0) + 1
    counts = {"cookie": 0, "javascript": 0, "navigation": 0, "template": 0}
    kept = []
    for i, line in enumerate(lines):
        s = line.strip()
        kind = None
        if s:
            if _COOKIE.search(s) and len(s) <= 400:
                kind = "cookie"
            elif _JAVASCRIPT.search(s) and len(s) <= 400:
                kind = "javascript"
            elif _is_navigation(s):
                kind = "navigation"
            elif len(s) <= max_template_chars and shapes.get(_DIGITS.sub("0", s.lower()), 0) >= min_repeats:
                kind = "template"
        if kind:
            counts[kind] += 1
        else:
            kept.append(i)
    nonblank = sum(1 for line in lines if line.strip())
    removed = sum(counts.values())
    sig = {**counts, "removed_fraction": round(removed / nonblank, 4) if nonblank else 0.0, "kept": kept_ranges(kept)}
    return sig, "".join(lines[i] for i in kept) if removed else text


def boilerplate_edit(text: str, kept: list[list[int]]) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[i] for i in expand_ranges(kept))


def boilerplate_reason(sig: dict, cfg) -> str | None:
    return "mostly_boilerplate" if sig["removed_fraction"] > cfg.max_removed_fraction else None


# ------------------------------------------------------------------------------------------------ urls
@lru_cache(maxsize=4)
def _url_filter(soft_word_threshold: int, extra_domains: tuple[str, ...]):
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    flt = URLFilter(soft_word_threshold=soft_word_threshold, extra_domains=extra_domains or None)
    # the bundled public-suffix snapshot: TLDExtract() would try to download the list first
    flt.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    return flt


def url_signals(url: str | None, soft_word_threshold: int, extra_domains: list[str]) -> dict:
    if not url:
        return {"verdict": None}
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import get_filter_result

    keep, reason = get_filter_result(_url_filter(soft_word_threshold, tuple(extra_domains)).filter(Document(text="", id="url", metadata={"url": url})))
    return {"verdict": "ok" if keep else reason}


def url_reason(sig: dict, cfg) -> str | None:
    return None if sig["verdict"] in (None, "ok") else sig["verdict"]


# ------------------------------------------------------------------------------------------- bad words
@lru_cache(maxsize=4)
def bad_word_list(path: str | None) -> frozenset[str]:
    if path is None:
        from datatrove.utils._import_utils import ASSETS_PATH

        path = os.path.join(ASSETS_PATH, "banned_words.txt")
    with open(path, encoding="utf-8") as f:
        return frozenset(w.strip().lower() for w in f if w.strip() and not w.startswith("#"))


def bad_word_signals(text: str, words_file: str | None) -> dict:
    words = _WORDS.findall(text.lower())
    bad = bad_word_list(words_file)
    hits = [w for w in words if w in bad]
    return {"fraction": round(len(hits) / len(words), 5) if words else 0.0, "distinct": len(set(hits))}


def bad_words_reason(sig: dict, cfg) -> str | None:
    if sig["distinct"] >= cfg.max_distinct:
        return "too_many_bad_words"
    return "bad_word_fraction" if sig["fraction"] > cfg.max_fraction else None


# ------------------------------------------------------------------------------------------------- pii
@lru_cache(maxsize=1)
def _pii():
    from datatrove.pipeline.formatters import PIIFormatter

    return PIIFormatter()


def pii_signals(text: str) -> dict:
    f = _pii()
    emails = len(f.emails_replacer.regex.findall(text))
    ips = sum(1 for m in f.ip_replacer.regex.finditer(text) if f.ip_replacer.validator(m.group(0)))
    return {"emails": emails, "ips": ips}


def redact(text: str, emails: bool, ips: bool) -> str:
    f = _pii()
    # the replacers cycle through their replacements; restart per document so output never depends on
    # which documents a worker saw before
    f.emails_replacer._replace_i = f.ip_replacer._replace_i = 0
    if emails:
        text = f.emails_replacer.replace(text)
    if ips:
        text = f.ip_replacer.replace(text)
    return text
