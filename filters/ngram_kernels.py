"""Compiled (numba) n-gram repetition counts for one document: Gopher's top n-gram and duplicated n-gram
characters, on token ids or code points.

Written by hand because no library computes these counts: datatrove joins Python strings per n-gram, and a numpy
version (sorts, windows, masks) spends most of a short page's time in per-call overhead, a dozen array
operations per n. Here one pass per n groups the n-grams by a hash, and every hash match is confirmed on the
ids or code points themselves; a match that is not the same n-gram (a 64-bit collision) is reported, and the
caller then takes the exact path (``repetition.py``), so a collision costs time, never a different count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

COLLISION = -2  # a hash match between different n-grams: the caller recounts exactly
NONE = -1  # fewer than n items: no n-gram
_MIX = np.uint64(0xBF58476D1CE4E5B9)


@njit(cache=True)
def top_ngram(ids, lengths, n, separator):
    """Characters of the most common n-gram of ``ids`` (``lengths`` per item, ``separator`` between items) times
    its count; ties go to the n-gram seen first (Counter.most_common(1)). NONE or COLLISION."""
    m = len(ids) - n + 1
    if m <= 0:
        return NONE
    keys = np.empty(m, np.uint64)
    for i in range(m):
        k = ids[i]
        for j in range(1, n):
            k = k * _MIX + ids[i + j]
        keys[i] = k
    order = np.argsort(keys, kind="mergesort")  # stable: a group's first entry is its first occurrence
    best, best_pos = 0, m
    i = 0
    while i < m:
        first = order[i]
        j = i + 1
        while j < m and keys[order[j]] == keys[first]:
            other = order[j]
            for t in range(n):
                if ids[other + t] != ids[first + t]:
                    return COLLISION
            j += 1
        if j - i > best or (j - i == best and first < best_pos):
            best, best_pos = j - i, first
        i = j
    chars = separator * (n - 1)
    for t in range(n):
        chars += lengths[best_pos + t]
    return chars * best


@njit(cache=True)
def duplicated_ngram_chars(cp, starts, prefix, inv_pow, n):
    """datatrove's find_all_duplicate over words ``cp[starts[k]:starts[k + 1]]`` (an n-gram is its words' joined
    text): walk the n-grams in order, count the characters of one already seen and skip n words after it.
    ``prefix`` and ``inv_pow`` are ``repetition.prefix_hash(cp)``. COLLISION where two different texts hash
    alike."""
    m = len(starts) - 1 - n + 1
    if m <= 0:
        return 0
    h = np.empty(m, np.uint64)
    for p in range(m):
        a, b = starts[p], starts[p + n]
        h[p] = (prefix[b] - prefix[a]) * inv_pow[a]
    # only an n-gram whose hash occurs twice can repeat: find those first, walk only them
    order = np.argsort(h)
    candidate = np.zeros(m, np.bool_)
    for i in range(1, m):
        if h[order[i]] == h[order[i - 1]]:
            candidate[order[i]] = True
            candidate[order[i - 1]] = True
    seen = Dict.empty(key_type=types.uint64, value_type=types.int64)
    repeated, cur = 0, 0
    for p in range(m):
        if not candidate[p] or p < cur:
            continue  # skipped after a repeat: not added to the seen n-grams either
        if h[p] not in seen:
            seen[h[p]] = p
            continue
        q = seen[h[p]]
        a, b, c, d = starts[p], starts[p + n], starts[q], starts[q + n]
        if b - a != d - c:
            return COLLISION
        for t in range(b - a):
            if cp[a + t] != cp[c + t]:
                return COLLISION
        repeated += b - a
        cur = p + n
    return repeated
