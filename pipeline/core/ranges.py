"""Half-open [start, end) ranges: merging, runs of indices, and cutting character ranges out of text.

Used wherever a stage keeps or removes parts of a document: line edits stored with the filter signals,
suffix-array repeats, contaminated spans.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping or touching ranges joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def index_runs(indices: Iterable[int]) -> list[list[int]]:
    """Ascending indices as [start, end) runs: what an edit keeps, stored compactly (JSON lists)."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def expand_runs(runs: Iterable[Iterable[int]]) -> list[int]:
    return [i for a, b in runs for i in range(a, b)]


def cut_ranges(text: str, char_ranges: Iterable[tuple[int, int]]) -> str:
    """``text`` without the characters in ``char_ranges`` (sorted, not overlapping)."""
    pieces, last = [], 0
    for s, e in char_ranges:
        pieces.append(text[last:s])
        last = e
    pieces.append(text[last:])
    return "".join(pieces)


def range_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices of the ranges [starts[k], starts[k] + counts[k]), one range after the other: what
    concatenating their aranges gives, in three array operations instead of one arange per range."""
    counts = np.asarray(counts, dtype=np.int64)
    first = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) + np.repeat(np.asarray(starts, dtype=np.int64) - first, counts)
