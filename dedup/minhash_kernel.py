"""The MinHash signature of a document in one compiled pass (numba), equal bit for bit to the numpy
definition in ``fuzzy.py`` (``minhash(shingle_hashes(text))``).

Written by hand because no library computes *these* signatures: rensa and datasketch hash shingle strings
with their own functions, so switching to them would change every signature and band key of a run (and an
increment's keys must match its base run's). The numpy definition makes a regex pass, a Python call per
token (xxh64) and five array passes per permutation block; here the UTF-8 bytes of the lower-cased text are
read once:

- a code point is a token character when the definition's ``TOKEN`` regex would put it in a run (``\\w``
  without ``_`` and without CJK), a token of its own when it is in ``CJK_RANGES``, else a separator: a table
  over all of Unicode built once per process by running that regex over every code point, so the classes
  cannot drift from the regex;
- each token's hash is XXH64 (seed 0) of its UTF-8 bytes, which is what ``xxhash.xxh64_intdigest(str)``
  computes (checked against xxhash on every token of the tests' texts);
- the n-gram hashes are ``rolling_hashes``' polynomial, and the permutations ``(a*h + b) mod (2^61 - 1)``
  reduced with the Mersenne identity (exact: one conditional subtraction). The minimum over a set does not
  depend on order or repeats, so the shingles need no ``np.unique``.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from numba import njit

from dedup.fuzzy import _LOW32
from dedup.fuzzy import _P as _MERSENNE
from pipeline.core.text import _MULT as _M  # rolling_hashes' multiplier
from pipeline.core.text import CJK_RANGES

SEPARATOR, RUN, SINGLE = 0, 1, 2
_P1, _P2, _P3 = np.uint64(0x9E3779B185EBCA87), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_P4, _P5 = np.uint64(0x85EBCA77C2B2AE63), np.uint64(0x27D4EB2F165667C5)


@lru_cache(maxsize=1)
def code_point_classes() -> np.ndarray:
    """uint8 per code point (0..0x10FFFF): RUN, SINGLE or SEPARATOR, from the definition's own regexes."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, np.uint8)
    for cls, pattern in ((RUN, f"[^\\W_{CJK_RANGES}]"), (SINGLE, f"[{CJK_RANGES}]")):
        table[[m.start() for m in re.finditer(pattern, every)]] = cls
    return table


@njit(inline="always", cache=True)
def _rotl(x, r):
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(inline="always", cache=True)
def _read_le(buf, i, width):
    """``width`` bytes of ``buf`` from ``i``, little-endian."""
    v = np.uint64(0)
    for k in range(width):
        v |= np.uint64(buf[i + k]) << np.uint64(8 * k)
    return v


@njit(inline="always", cache=True)
def _round(acc, lane):
    return _rotl(acc + lane * _P2, 31) * _P1


@njit(cache=True)
def xxh64(buf, start, end):
    """XXH64 with seed 0 of ``buf[start:end]`` (the reference algorithm, Collet)."""
    n = end - start
    i = start
    if n >= 32:
        v1, v2, v3, v4 = _P1 + _P2, _P2, np.uint64(0), np.uint64(0) - _P1
        while i + 32 <= end:
            v1 = _round(v1, _read_le(buf, i, 8))
            v2 = _round(v2, _read_le(buf, i + 8, 8))
            v3 = _round(v3, _read_le(buf, i + 16, 8))
            v4 = _round(v4, _read_le(buf, i + 24, 8))
            i += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        for v in (v1, v2, v3, v4):
            h = (h ^ _round(np.uint64(0), v)) * _P1 + _P4
    else:
        h = _P5
    h += np.uint64(n)
    while i + 8 <= end:
        h = _rotl(h ^ _round(np.uint64(0), _read_le(buf, i, 8)), 27) * _P1 + _P4
        i += 8
    if i + 4 <= end:
        h = _rotl(h ^ (_read_le(buf, i, 4) * _P1), 23) * _P2 + _P3
        i += 4
    while i < end:
        h = _rotl(h ^ (np.uint64(buf[i]) * _P5), 11) * _P1
        i += 1
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@njit(cache=True)
def token_hashes_utf8(buf, classes):
    """(token hashes, tokens that are one CJK character) of UTF-8 text, tokenised as ``TOKEN.findall``."""
    out = np.empty(len(buf), np.uint64)
    count, singles, run_start, i, n = 0, 0, -1, 0, len(buf)
    while i <= n:
        if i == n:
            cls, width = np.int64(SEPARATOR), 1
        else:
            b0 = buf[i]
            if b0 < 0x80:
                cp, width = np.int64(b0), 1
            elif b0 < 0xE0:
                cp, width = ((np.int64(b0) & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
            elif b0 < 0xF0:
                cp = ((np.int64(b0) & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F)
                width = 3
            else:
                cp = (((np.int64(b0) & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
                      | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F))
                width = 4
            cls = np.int64(classes[cp])
        if cls != RUN and run_start >= 0:
            out[count] = xxh64(buf, run_start, i)
            count += 1
            run_start = -1
        if cls == RUN and run_start < 0:
            run_start = i
        elif cls == SINGLE:
            out[count] = xxh64(buf, i, i + width)
            count += 1
            singles += 1
        i += width
    return out[:count], singles


@njit(cache=True)
def signature_utf8(buf, classes, n_words, n_chars, a, b):
    """The MinHash signature (uint32 per permutation) of UTF-8 text; None-equivalent: an empty array when the
    text has no tokens. Shingles: word n-grams, or character n-grams when most tokens are CJK characters."""
    h, singles = token_hashes_utf8(buf, classes)
    if len(h) == 0:
        return np.empty(0, np.uint32)
    n = min(n_chars if 2 * singles > len(h) else n_words, len(h))
    sig = np.full(len(a), _LOW32, np.uint64)
    for p in range(len(h) - n + 1):
        s = h[p]
        for k in range(1, n):
            s = s * _M + h[p + k]
        x = s >> np.uint64(32)
        for j in range(len(a)):
            y = x * a[j] + b[j]  # < 2^64: x, a and b are below 2^32
            r = (y & _MERSENNE) + (y >> np.uint64(61))  # y mod 2^61-1, up to one subtraction
            if r >= _MERSENNE:
                r -= _MERSENNE
            r &= _LOW32
            if r < sig[j]:
                sig[j] = r
    return sig.astype(np.uint32)


def signature(text: str, n_words: int, n_chars: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``minhash(shingle_hashes(text, n_words, n_chars), a, b)``, or an empty array for a text without tokens.
    Lone surrogates (possible in JSON input) are kept as their 3-byte form: they are separators either way."""
    buf = np.frombuffer(text.lower().encode("utf-8", "surrogatepass"), np.uint8)
    return signature_utf8(buf, code_point_classes(), n_words, n_chars, a, b)
