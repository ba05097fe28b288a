"""jieba's word segmentation (accurate mode, HMM on), word for word, computed once per document.

Two rule families segment Chinese text: the fused heuristic pass (spaCy's Chinese tokenizer, which calls
``jieba.cut``) and the Chinese family (word counts). jieba is pure Python, and was a third of a Chinese
source's filter time, twice over (bench/filter_profile in BENCHMARKS.md). Here:

- one segmentation per document serves both (the last text and its words are kept);
- jieba cuts a text into blocks first (its ``re_han_default``) and segments each block on its own; blocks of
  Han characters only go to rjieba (jieba-rs, the same dictionary and HMM in Rust), every other block to
  jieba itself through a bounded memo (those blocks, ASCII words, numbers, mixed names, repeat a lot).
  rjieba alone differs from jieba on ASCII inside a block (``s-1ADDR`` is one word for rjieba, three for
  jieba), which is why it gets Han-only blocks: on those the two agree (tests/test_segmenter.py compares
  every document of the Chinese test corpora with ``jieba.lcut``).
"""

from __future__ import annotations

import re
from functools import lru_cache

from pipeline.core.cache import private_cache

_HAN_ONLY = re.compile("[\u4E00-\u9FD5]+")  # the Han range of jieba's block pattern
# distinct non-Han blocks memoised before the memo is dropped (bounded worker memory; ~200 bytes each)
MAX_MEMO_BLOCKS = 1 << 18


@lru_cache(maxsize=1)
def jieba_module():
    """jieba, its dictionary cache in a private folder of the user's (its default, ``/tmp/jieba.cache``, is a
    name any local user can plant a file under, and jieba loads it with ``marshal``)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.dt.tmp_dir = private_cache("jieba")
    jieba.initialize()
    return jieba


class JiebaSegmenter:
    """``lcut(text)`` equals ``jieba.lcut(text)``; ``cut(text, cut_all=False)`` is what spaCy's Chinese
    tokenizer calls (it takes this object in place of the jieba module)."""

    def __init__(self):
        import rjieba

        self._jieba = jieba_module()
        self._blocks = self._jieba.re_han_default  # jieba's own block pattern: the cut follows it
        self._rust_cut = rjieba.cut
        self._memo: dict[str, list[str]] = {}
        self._last: tuple[str, list[str]] = ("", [])

    def _block(self, block: str) -> list[str]:
        words = self._memo.get(block)
        if words is None:
            if len(self._memo) >= MAX_MEMO_BLOCKS:
                self._memo.clear()
            # jieba's cut of one block is that block's part of the whole text's cut
            words = self._memo[block] = self._jieba.lcut(block)
        return words

    def lcut(self, text: str) -> list[str]:
        """The words of ``text`` (a list the caller must not change: it is shared with the next caller)."""
        if text == self._last[0]:
            return self._last[1]
        words: list[str] = []
        for block in self._blocks.split(text):
            if not block:
                continue
            if _HAN_ONLY.fullmatch(block):
                words += self._rust_cut(block)
            else:
                words += self._block(block)
        self._last = (text, words)
        return words

    def cut(self, text: str, cut_all: bool = False):
        if cut_all:
            raise ValueError("JiebaSegmenter implements jieba's accurate mode only (cut_all=False)")
        return iter(self.lcut(text))


@lru_cache(maxsize=1)
def segmenter() -> JiebaSegmenter:
    return JiebaSegmenter()
