"""Chinese as a first-class target: jieba word segmentation and character-level repetition.

Whitespace splitting sees a Chinese paragraph as one word, and Gopher's English word lengths and stop
words mean nothing for it. jieba (the segmenter datatrove's Chinese tokenizer also uses) gives the word
counts; repetition is measured on characters, with Gopher's n-gram rules over the character sequence
(top 2-4-grams, duplicated 5-10-grams), which needs no segmentation at all.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from filters.heuristics import dup_ngram_chars_exact, top_ngram_chars
from pipeline.text import CJK_RANGES

_CJK = re.compile(f"[{CJK_RANGES}]")
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _jieba():
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def chinese_signals(text: str, top_n: list[int], dup_n: list[int]) -> dict:
    words = [w for w in _jieba().lcut(text) if w.strip()]
    cjk_words = [w for w in words if _CJK.search(w)]
    chars = _SPACE.sub("", text)  # repetition over the characters, as Gopher's over words
    cps = np.frombuffer(chars.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    ones = np.ones(len(cps), dtype=np.int64)
    sig = {
        "cjk_chars": len(text) - len(_CJK.sub("", text)),
        "words": len(words),
        "avg_cjk_word_length": round(sum(map(len, cjk_words)) / len(cjk_words), 4) if cjk_words else None,
    }
    for n in top_n:
        top = top_ngram_chars(cps, ones, n, separator=0)
        sig[f"top_{n}_char_frac"] = None if top is None else top / max(len(chars), 1)
    for n in dup_n:
        sig[f"dup_{n}_char_frac"] = dup_ngram_chars_exact(chars, n) / max(len(chars), 1)
    return sig


def chinese_reason(sig: dict, cfg) -> str | None:
    if sig["cjk_chars"] < cfg.min_cjk_chars:
        return "too_few_cjk_chars"
    if sig["words"] < cfg.min_words:
        return "too_few_words"
    if sig["avg_cjk_word_length"] is not None and sig["avg_cjk_word_length"] > cfg.max_avg_word_length:
        return "long_words"
    for n, frac in cfg.top_char_n_grams:
        v = _signal(sig, f"top_{n}_char_frac")
        if v is not None and v > frac:
            return f"top_{n}_char_gram"
    for n, frac in cfg.dup_char_n_grams:
        if _signal(sig, f"dup_{n}_char_frac") > frac:
            return f"duplicated_{n}_char_grams"
    return None


def _signal(sig: dict, key: str):
    from filters.signals import require

    return require(sig, key, "chinese")
