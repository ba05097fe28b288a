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
# a literal both notices need, under the same case rules (re.I also folds e.g. the Kelvin sign into "k"): one
# cheap scan per line decides whether the two slower patterns can match at all
_NOTICE_WORD = re.compile(r"cookie|javascript", re.I)
_MENU_SEPARATOR = re.compile(r"\s*[|»›•·]\s*")
_MENU_CHARS = frozenset("|»›•·")


def _is_navigation(line: str) -> bool:
    s = line.strip()
    if not s or len(s) > 200:
        return False
    if len(s) <= 80 and _NAV_PHRASE.search(s):
        return True
    if _MENU_CHARS.isdisjoint(s):  # no separator: one part, not a menu
        return False
    parts = [p for p in _MENU_SEPARATOR.split(s) if p]
    # a menu: several short items between separators, no sentence punctuation
    return len(parts) >= 4 and all(len(p.split()) <= 3 for p in parts) and not s.endswith((".", "?", "!"))


def boilerplate_signals(text: str, min_repeats: int, max_template_chars: int) -> tuple[dict, str]:
    """(signals, cleaned text). Lines keep their own endings, so the edit is exact."""
    lines = text.splitlines(keepends=True)
    stripped = [line.strip() for line in lines]
    line_shapes = [_DIGITS.sub("0", s.lower()) if s and len(s) <= max_template_chars else None for s in stripped]
    shapes: dict[str, int] = {}
    for shape in line_shapes:
        if shape is not None:
            shapes[shape] = shapes.get(shape, 0) + 1
    counts = {"cookie": 0, "javascript": 0, "navigation": 0, "template": 0}
    kept = []
    for i, s in enumerate(stripped):
        kind = None
        if s:
            notice = len(s) <= 400 and _NOTICE_WORD.search(s) is not None
            if notice and _COOKIE.search(s):
                kind = "cookie"
            elif notice and _JAVASCRIPT.search(s):
                kind = "javascript"
            elif _is_navigation(s):
                kind = "navigation"
            elif line_shapes[i] is not None and shapes[line_shapes[i]] >= min_repeats:
                kind = "template"
        if kind:
            counts[kind] += 1
        else:
            kept.append(i)
    nonblank = sum(1 for s in stripped if s)
    removed = sum(counts.values())
    sig = {**counts, "removed_fraction": round(removed / nonblank, 4) if nonblank else 0.0, "kept": index_runs(kept)}
    return sig, "".join(lines[i] for i in kept) if removed else text


def boilerplate_edit(text: str, kept: list[list[int]]) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[i] for i in expand_runs(kept))


def boilerplate_reason(sig: dict, cfg) -> str | None:
    return "mostly_boilerplate" if sig["removed_fraction"] > cfg.max_removed_fraction else None
