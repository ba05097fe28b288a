"""Repetition kernels on token or character sequences, as numpy sorts instead of Python string joins.

* ``find_duplicates``: datatrove's duplicate lines/paragraphs count;
* ``top_ngram_chars(_all)``: characters of the most common n-gram times its count (Gopher's top n-gram
  rule), grouped on token ids, several n in one sort;
* ``dup_ngram_chars_all``: datatrove's ``find_all_duplicate`` walk (characters in repeated n-grams,
  skipping n words after each repeat), candidates found with a rolling hash and confirmed on the strings.

Used by the Gopher family on spaCy words and by the Chinese family on characters.
"""

from __future__ import annotations

import numpy as np

# rolling hash over code points, modulo 2**64 (numpy's uint64 wraps); equal strings always hash equal and
# every hash match is confirmed on the strings, so the weakness of a 2**64 modulus costs time, never truth
_BASE = np.uint64(0x9E3779B97F4A7C15)
_BASE_INV = np.uint64(pow(int(_BASE), -1, 2**64))
_MIX = np.uint64(0xBF58476D1CE4E5B9)


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


def _window_keys(ids: np.ndarray, n: int) -> np.ndarray:
    # shifted slices, not sliding_window_view: its set-up costs more than the arithmetic on a page's words
    m = len(ids) - n + 1
    key = ids[:m].astype(np.uint64)
    for k in range(1, n):
        key = key * _MIX + ids[k:k + m]
    return key


def top_ngram_chars(ids: np.ndarray, lengths: np.ndarray, n: int, separator: int = 1) -> int | None:
    """len(most common n-gram, joined with ``separator`` characters) * its count, ties to the first seen
    (what Counter.most_common(1) picks)."""
    m = len(ids) - n + 1
    if m <= 0:
        return None
    windows = np.lib.stride_tricks.sliding_window_view(ids, n)
    key = _window_keys(ids, n)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    same = sk[1:] == sk[:-1]
    if same.any() and not (windows[order[1:][same]] == windows[order[:-1][same]]).all():
        # a key collision between different n-grams: group on the n-gram rows themselves
        _, first, counts = np.unique(windows, axis=0, return_index=True, return_counts=True)
    else:
        group_starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
        counts = np.diff(np.append(group_starts, m))
        first = order[group_starts]  # a stable sort keeps each group's first occurrence first
    best = counts.max()
    pos = first[counts == best].min()
    chars = int(lengths[pos : pos + n].sum()) + separator * (n - 1)
    return chars * int(best)


def top_ngram_chars_all(ids: np.ndarray, lengths: np.ndarray, ns, separator: int = 1) -> dict[int, int | None]:
    """top_ngram_chars for several n with one sort: keys of every n, salted by n, sorted together."""
    ns = list(ns)
    L = len(ids)
    out: dict[int, int | None] = {n: None for n in ns if L - n + 1 <= 0}
    todo = [n for n in ns if L - n + 1 > 0]
    if not todo:
        return out
    keys = np.concatenate([_window_keys(ids, n) ^ np.uint64((n * 0x632BE59BD9B4E019) % 2**64) for n in todo])
    sizes = np.array([L - n + 1 for n in todo])
    nn = np.repeat(np.array(todo), sizes)
    pos = np.arange(len(keys)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    same = sk[1:] == sk[:-1]
    if same.any():
        a, b = order[:-1][same], order[1:][same]
        width = max(todo)
        padded = np.concatenate((ids, np.zeros(width, dtype=ids.dtype)))
        offsets = np.arange(width)
        cols = offsets[None, :] >= nn[a][:, None]
        equal = padded[pos[a][:, None] + offsets] == padded[pos[b][:, None] + offsets]
        if not ((nn[a] == nn[b]) & (equal | cols).all(axis=1)).all():
            # a key collision between different n-grams: exact grouping, one n at a time
            return out | {n: top_ngram_chars(ids, lengths, n, separator) for n in todo}
    group_starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
    counts = np.diff(np.append(group_starts, len(keys)))
    g_n, g_first = nn[order[group_starts]], pos[order[group_starts]]
    for n in todo:
        sel = g_n == n
        c = counts[sel]
        best = c.max()
        p = int(g_first[sel][c == best].min())
        out[n] = (int(lengths[p : p + n].sum()) + separator * (n - 1)) * int(best)
    return out


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
    return _dup_ngram_chars(text, np.arange(len(cp) + 1), prefix, inv_pow, n)


def dup_ngram_chars_all(joined: str, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray, ns) -> dict[int, int]:
    """_dup_ngram_chars for several n: the hashes of every n, salted by n, sorted together once."""
    words = len(starts) - 1
    todo = [n for n in ns if words - n + 1 > 0]
    out = {n: 0 for n in ns}
    if not todo:
        return out
    parts = []
    for n in todo:
        m = words - n + 1
        a, b = starts[:m], starts[n : n + m]
        parts.append(((prefix[b] - prefix[a]) * inv_pow[a]) ^ np.uint64((n * 0x632BE59BD9B4E019) % 2**64))
    h = np.concatenate(parts)
    order = np.argsort(h)
    sh = h[order]
    eq = sh[1:] == sh[:-1]
    if not eq.any():
        return out
    mark = np.zeros(len(h), dtype=bool)
    mark[order[1:][eq]] = True
    mark[order[:-1][eq]] = True
    offset = 0
    for n, part in zip(todo, parts):
        cand = np.flatnonzero(mark[offset : offset + len(part)])
        offset += len(part)
        if len(cand):
            out[n] = _walk_repeats(joined, starts, cand, n)
    return out


def _walk_repeats(joined: str, starts: np.ndarray, candidates: np.ndarray, n: int) -> int:
    # only n-grams that occur twice can repeat; the walk's skips decide which occurrences count
    seen: set[str] = set()
    repeated, cur = 0, 0
    for p in candidates.tolist():
        if p < cur:
            continue
        s = joined[starts[p] : starts[p + n]]
        if s in seen:
            repeated += len(s)
            cur = p + n
        else:
            seen.add(s)
    return repeated


def _dup_ngram_chars(joined: str, starts: np.ndarray, prefix: np.ndarray, inv_pow: np.ndarray, n: int) -> int:
    """datatrove's find_all_duplicate: walk the ''-joined n-grams, skipping n words after each repeat."""
    m = len(starts) - 1 - n + 1
    if m <= 0:
        return 0
    a, b = starts[:m], starts[n : n + m]
    h = (prefix[b] - prefix[a]) * inv_pow[a]
    order = np.argsort(h)
    sh = h[order]
    eq = sh[1:] == sh[:-1]
    if not eq.any():
        return 0
    mark = np.zeros(m, dtype=bool)
    mark[order[1:][eq]] = True
    mark[order[:-1][eq]] = True
    return _walk_repeats(joined, starts, np.flatnonzero(mark), n)
