"""Repetition counts on token or character sequences, without Python string joins.

* ``find_duplicates``: datatrove's duplicate lines/paragraphs count;
* ``top_ngram_chars(_all)``: characters of the most common n-gram times its count (Gopher's top n-gram
  rule), grouped on token ids (compiled: ``ngram_kernels.top_ngram``);
* ``dup_ngram_chars(_all)``: datatrove's ``find_all_duplicate`` walk (characters in repeated n-grams,
  skipping n words after each repeat), n-grams compared by a rolling hash over code points and confirmed on
  the code points (compiled: ``ngram_kernels.duplicated_ngram_chars``).

Where a kernel meets a hash collision it says so, and the exact path here (grouping on the n-gram rows, or
the walk on strings) counts instead.

Used by the Gopher family on spaCy words and by the Chinese family on characters.
"""

from __future__ import annotations

import numpy as np

# rolling hash over code points, modulo 2**64 (numpy's uint64 wraps); equal strings always hash equal and
# every hash match is confirmed on the strings, so the weakness of a 2**64 modulus costs time, never truth
_BASE = np.uint64(0x9E3779B97F4A7C15)
_BASE_INV = np.uint64(pow(int(_BASE), -1, 2**64))


def _kernels():
    # imported on first use: numba (~0.5 s) is paid by the workers that compute signals, not by every command
    from filters import ngram_kernels

    return ngram_kernels


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's gopher_repetition_filter.find_duplicates (duplicate count and their characters)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    for x in items:
        if x in seen:
            dup += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup, dup_chars


def top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int, separator: int = 1) -> int | None:
    """len(most common n-gram, joined with ``separator`` characters) * its count, ties to the first seen
    (what Counter.most_common(1) picks)."""
    if len(ids) < n:
        return None
    k = _kernels()
    value = k.top_ngram(np.ascontiguousarray(ids, dtype=np.uint64), np.ascontiguousarray(lengths, dtype=np.int64), n, separator)
    if value != k.COLLISION:
        return int(value)
    # a hash collision between different n-grams: group on the n-gram rows themselves
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    _, first, counts = np.unique(windows, axis=0, return_index=True, return_counts=True)
    best = counts.max()
    pos = first[counts == best].min()
    return (int(lengths[pos : pos + n].sum()) + separator * (n - 1)) * int(best)


def top_ngram_chars_all(ids: np.ndarray, lengths: np.ndarray, ns, separator: int = 1) -> dict[int, int | None]:
    return {n: top_ngram_chars(ids, lengths, n, separator) for n in ns}


def prefix_hash(cp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix sums of c_k * B^k and the powers B^-k, so any substring's hash is one subtraction and product."""
    m = len(cp)
    powers = np.ones(m, dtype=np.uint64)
    if m > 1:
        powers[1:] = np.cumprod(np.full(m - 1, _BASE, dtype=np.uint64))
    inv_pow = np.ones(m + 1, dtype=np.uint64)
    inv_pow[1:] = np.cumprod(np.full(m, _BASE_INV, dtype=np.uint64))
    prefix = np.zeros(m + 1, dtype=np.uint64)
    prefix[1:] = np.cumsum(cp.astype(np.uint64) * powers, dtype=np.uint64)
    return prefix, inv_pow


def dup_ngram_chars_exact(text: str, n: int) -> int:
    """find_all_duplicate over the characters of ``text`` (each character a word)."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    prefix, inv_pow = prefix_hash(cp)
    return dup_ngram_chars(text, cp, np.arange(len(cp) + 1), prefix, inv_pow, n)


def dup_ngram_chars_all(joined: str, cp: np.ndarray, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray,
                        ns) -> dict[int, int]:
    return {n: dup_ngram_chars(joined, cp, starts, prefix, inv_pow, n) for n in ns}


def dup_ngram_chars(joined: str, cp: np.ndarray, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray, n: int) -> int:
    """datatrove's find_all_duplicate: walk the ''-joined n-grams, skipping n words after each repeat
    (``cp``: ``joined``'s code points; ``starts``: each word's offset, then the end)."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    k = _kernels()
    value = k.duplicated_ngram_chars(cp, starts, prefix, inv_pow, n)
    if value != k.COLLISION:
        return int(value)
    # a hash collision: the same walk over every n-gram, on the strings
    seen: set[str] = set()
    repeated, cur = 0, 0
    for p in range(len(starts) - n):
        if p < cur:
            continue
        s = joined[starts[p] : starts[p + n]]
        if s in seen:
            repeated += len(s)
            cur = p + n
        else:
            seen.add(s)
    return repeated
