"""Chinese as a first-class target: jieba word segmentation and character-level repetition.

Whitespace splitting sees a Chinese paragraph as one word, and Gopher's English word lengths and stop
words mean nothing for it. jieba (the segmenter datatrove's Chinese tokenizer also uses; ``segmenter.py``) gives
the word counts; repetition is measured on characters, with Gopher's n-gram rules over the character sequence
(top 2-4-grams, duplicated 5-10-grams), which needs no segmentation at all.
"""

from __future__ import annotations

import re

import numpy as np

from filters.repetition import dup_ngram_chars_exact, top_ngram_chars
from filters.segmenter import segmenter
from filters.thresholds import Check, first_failure, first_ngram_failure
from pipeline.core.text import CJK_RANGES

_CJK = re.compile(f"[{CJK_RANGES}]")
_SPACE = re.compile(r"\s+")


def chinese_signals(text: str, top_n: list[int], dup_n: list[int]) -> dict:
    words = [w for w in segmenter().lcut(text) if w.strip()]
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


CHECKS = (
    Check("min_cjk_chars", "cjk_chars", "<", "too_few_cjk_chars", off_when_zero=False),
    Check("min_words", "words", "<", "too_few_words", off_when_zero=False),
    Check("max_avg_word_length", "avg_cjk_word_length", ">", "long_words", off_when_zero=False),
)


def chinese_reason(sig: dict, cfg) -> str | None:
    return (first_failure(sig, cfg, CHECKS, "chinese")
            or first_ngram_failure(sig, cfg.top_char_n_grams, "top_{n}_char_frac", "top_{n}_char_gram", "chinese")
            or first_ngram_failure(sig, cfg.dup_char_n_grams, "dup_{n}_char_frac", "duplicated_{n}_char_grams", "chinese"))
