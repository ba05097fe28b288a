"""Text units shared by the stages that compare documents (decontamination n-grams, dedup shingles).

Tokens: every run of letters/digits is a word and every CJK ideograph or kana is a token of its own, so
Chinese and Japanese get character n-grams where English gets word n-grams, from one token stream.
Hashes: each token is hashed once with xxh64; an n-gram's hash is a polynomial of its token hashes,
computed for all positions at once with numpy (uint64 arithmetic wraps, which is the modulus).
"""

from __future__ import annotations

import re

import numpy as np
import xxhash

# stdlib ``re`` with explicit code-point ranges: no dependency on ``regex``'s Unicode property tables
CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"  # kana, CJK ideographs
TOKEN = re.compile(f"[{CJK_RANGES}]|[^\\W_{CJK_RANGES}]+")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio): mixes token positions


def token_hashes(tokens: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh64_intdigest(x) for x in tokens), dtype=np.uint64, count=len(tokens))


def rolling_hashes(h: np.ndarray, lengths) -> dict[int, np.ndarray]:
    """For each n in ``lengths``: the uint64 hash of every n-gram (``len(h) - n + 1`` of them), from the
    token hashes ``h``; one pass up to the longest n (hash_k[p] = hash_{k-1}[p] * M + h[p + k - 1])."""
    wanted = {n for n in lengths if n <= len(h)}
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    acc = h.copy()
    if 1 in wanted:
        out[1] = acc
    with np.errstate(over="ignore"):
        for k in range(2, max(wanted) + 1):
            acc = acc[: len(h) - k + 1] * _MULT + h[k - 1 :]
            if k in wanted:
                out[k] = acc
    return out
