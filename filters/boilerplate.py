"""Boilerplate lines of web pages (a line edit, like C4's): cookie and JavaScript notices, navigation and
share/footer lines, and templated lines (the same shape, digits aside, three or more times in one page).
The kept lines are stored as index runs, so the edit is re-applied from signals, never recomputed."""

from __future__ import annotations

import re

from pipeline.core.ranges import expand_runs, index_runs

_COOKIE = re.compile(r"\bcookies?\b.{0,80}\b(?:use|uses|using|accept|consent|policy|settings|agree|continu|enabled?)", re.I)
_JAVASCRIPT = re.compile(r"(?:enable|turn on|requires?|disabled|activate).{0,30}javascript|javascript.{0,30}(?:disabled|required|enabled?)", re.I)
_NAV_PHRASE = re.compile(
    r"^\W*(?:skip to (?:main )?content|back to top|share (?:this|on)\b|follow us|sign (?:in|up)\b|log ?in\b|log ?out\b"
    r"|subscribe\b|all rights reserved|copyright\b|©|read more\b|click here\b|previous post|next post|home\s*[|»>›/])",
    re.I,
)
_DIGITS = re.compile(r"\d+")


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
    sig = {**counts, "removed_fraction": round(removed / nonblank, 4) if nonblank else 0.0, "kept": index_runs(kept)}
    return sig, "".join(lines[i] for i in kept) if removed else text


def boilerplate_edit(text: str, kept: list[list[int]]) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[i] for i in expand_runs(kept))


def boilerplate_reason(sig: dict, cfg) -> str | None:
    return "mostly_boilerplate" if sig["removed_fraction"] > cfg.max_removed_fraction else None
