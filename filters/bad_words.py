"""Bad words: the share of words on datatrove's banned-word list (or a recipe file), and how many
different ones a document holds."""

from __future__ import annotations

import os
import re
from functools import lru_cache

_WORDS = re.compile(r"[a-z0-9]+")


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
