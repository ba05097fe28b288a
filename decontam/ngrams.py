"""Word n-gram hashing and the benchmark n-gram index.

Text is normalised (lower case, every run of non-alphanumeric characters becomes one space, so
punctuation, whitespace and LaTeX spacing differences vanish) and split into words. Each word is hashed
once with xxh64; an n-gram's hash is a polynomial of its word hashes, computed for all positions at once
with numpy (uint64 arithmetic wraps, which is the modulus). Written by hand because datatrove's n-gram
decontamination needs lighteval and the hub to build its index and keeps no item ids.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import regex
import xxhash

_NON_WORD = regex.compile(r"[^\p{L}\p{N}]+")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio): mixes word positions


def normalized_words(text: str) -> list[str]:
    return _NON_WORD.sub(" ", text.lower()).split()


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """uint64 hash of every word n-gram (``len(words) - n + 1`` of them; none if shorter than n)."""
    if len(words) < n:
        return np.empty(0, dtype=np.uint64)
    w = np.fromiter((xxhash.xxh64_intdigest(x) for x in words), dtype=np.uint64, count=len(words))
    m = len(words) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _MULT + w[j : j + m]
    return h


@dataclass
class NgramIndex:
    """Sorted unique n-gram hashes with, for each, the first benchmark item that contains it."""

    n: int
    hashes: np.ndarray  # uint64, sorted, unique
    item_of_hash: np.ndarray  # int32 index into items
    items: list[tuple[str, str]]  # (benchmark, item_id)

    @classmethod
    def build(cls, items, n: int) -> "NgramIndex":
        all_h, all_i, names = [], [], []
        for idx, item in enumerate(items):
            names.append((item.benchmark, item.item_id))
            h = ngram_hashes(normalized_words(item.text), n)
            all_h.append(h)
            all_i.append(np.full(len(h), idx, dtype=np.int32))
        hashes = np.concatenate(all_h) if all_h else np.empty(0, np.uint64)
        owners = np.concatenate(all_i) if all_i else np.empty(0, np.int32)
        # keep the first item of each hash: a stable sort then unique's first occurrence
        order = np.argsort(hashes, kind="stable")
        uniq, first = np.unique(hashes[order], return_index=True)
        return cls(n=n, hashes=uniq, item_of_hash=owners[order][first], items=names)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in ``hashes`` that are in the index, the item index of each)."""
        if len(self.hashes) == 0 or len(hashes) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        pos = np.searchsorted(self.hashes, hashes)
        pos = np.minimum(pos, len(self.hashes) - 1)
        hit = np.nonzero(self.hashes[pos] == hashes)[0]
        return hit, self.item_of_hash[pos[hit]]

    def save(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"ngrams_{self.n}.npz")
        bench = np.array([b for b, _ in self.items])
        ids = np.array([i for _, i in self.items])
        np.savez(path, n=np.int64(self.n), hashes=self.hashes, item_of_hash=self.item_of_hash, bench=bench, ids=ids)
        return path

    @classmethod
    def load(cls, path: str) -> "NgramIndex":
        with np.load(path) as z:
            items = list(zip(z["bench"].tolist(), z["ids"].tolist()))
            return cls(n=int(z["n"]), hashes=z["hashes"], item_of_hash=z["item_of_hash"], items=items)
