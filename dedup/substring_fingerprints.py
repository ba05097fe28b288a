"""Repeated substrings across shards: winnowed window fingerprints, grouped by hash in parallel tasks.

The suffix array of ``substrings.py`` finds every repeat inside a shard of ``shard_bytes``; a span repeated
in another shard needs the whole corpus. Here each document of the selected domains gets the hash of every
window of ``min_length`` units (bytes or token ids; polynomial hashes combined by doubling, log2(n) numpy
passes), and keeps the smallest hash of each run of ``winnow`` consecutive windows (winnowing, Schleimer et
al., SIGMOD 2003: two texts sharing a span of at least ``min_length + winnow - 1`` units share a kept
fingerprint, and consecutive kept windows are at most ``winnow`` apart). Each shard writes its fingerprints
sorted by hash; the grouping tasks each take one range of hash values, a slice of every shard's file, and
every occurrence after the first (in corpus order: shard, document, offset) is a repeat. How many ranges is
decided once the fingerprints are written, from their count (``fingerprint_partitions``): a task's memory
is set by ``partition_fingerprints``, whatever the corpus, and the files are one per shard (and per
``FLUSH`` fingerprints), not shards x partitions. The marker cuts the window of each repeated fingerprint, so a repeated
span is cut from its first kept window to its last: up to ``winnow - 1`` units at either end may stay, and
spans shorter than ``min_length + winnow - 1`` may be missed (the suffix array still finds those within
a shard). Intermediates: 20 bytes per fingerprint, about 2 / (winnow + 1) fingerprints per unit.

Files (checked arrays): ``fp/<shard>_<chunk>.bin`` (hash, node, offset; sorted) and ``repeats/<range>.bin``
(node, offset; sorted), of which a shard's final pass reads its own slice (``substrings.shard_repeats``).
"""

from __future__ import annotations

import glob
import os

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from numpy.lib.stride_tricks import sliding_window_view

from dedup.checked_arrays import checked_count, hash_range, records_in_range, write_checked
from dedup.components import mix
from dedup.substrings import REPEAT, unit_sequences
from pipeline.core.documents import REMOVED_REASON

FINGERPRINT = np.dtype([("hash", "<u8"), ("node", "<u8"), ("offset", "<u4")])
_M = np.uint64(0x9E3779B97F4A7C15)
FLUSH = 1 << 22  # fingerprints held per task before a chunk is written (~80 MiB)


def window_hashes(units: np.ndarray, length: int) -> np.ndarray:
    """The hash of every window of ``length`` consecutive units (len(units) - length + 1 of them): a
    polynomial hash mod 2^64 over mixed unit values, built from power-of-two blocks by doubling."""
    n = len(units) - length + 1
    if n <= 0:
        return np.empty(0, np.uint64)
    with np.errstate(over="ignore"):
        block, size, power = mix(units.astype(np.uint64) + np.uint64(1)), 1, _M  # hash and M^size of blocks of `size`
        out, done = None, 0
        while True:
            if length & size:  # extend every window's prefix by the block of `size` units that follows it
                part = block[done : done + n]
                out = part.copy() if out is None else out * power + part
                done += size
            if size * 2 > length:
                return out
            block = block[:-size] * power + block[size:]
            size, power = size * 2, power * power


def winnowed(hashes: np.ndarray, winnow: int) -> np.ndarray:
    """Offsets of the kept fingerprints: the (leftmost) smallest hash of every ``winnow`` consecutive windows."""
    if len(hashes) == 0:
        return np.empty(0, np.int64)
    if len(hashes) <= winnow:
        return np.array([int(np.argmin(hashes))])
    pos = np.argmin(sliding_window_view(hashes, winnow), axis=1) + np.arange(len(hashes) - winnow + 1)
    return np.unique(pos)


class SubstringFingerprints(PipelineStep):
    """One task per shard: the fingerprints of the shard's documents of ``domains`` not already removed."""

    name = "🧵 Substring fingerprints"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, domains: list[str], min_length: int, unit: str, winnow: int,
                 tokenizer_path: str | None = None, shard_offset: int = 0):
        super().__init__()
        self.folder, self.domains, self.min_length, self.unit = folder, set(domains), min_length, unit
        self.winnow, self.tokenizer_path, self.shard_offset = winnow, tokenizer_path, shard_offset

    def _flush(self, shard: int, chunk: int, parts: list[np.ndarray]) -> None:
        fp = np.concatenate(parts) if parts else np.empty(0, FINGERPRINT)
        write_checked(os.path.join(self.folder, "fp", f"{shard:05d}_{chunk:06d}.bin"), np.sort(fp))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        shard = rank + self.shard_offset
        parts, held, chunk = [], 0, 0
        for idx, doc in enumerate(data):
            if doc.metadata.get(REMOVED_REASON) or doc.metadata.get("domain") not in self.domains:
                continue
            with self.track_time():
                (units,), _ = unit_sequences([doc.text], self.unit, self.tokenizer_path)
                h = window_hashes(units, self.min_length)
                keep = winnowed(h, self.winnow)
                fp = np.empty(len(keep), FINGERPRINT)
                # a kept window is the smallest of its run, so kept hashes crowd the low end of uint64: mixed
                # (a bijection: equal stays equal) so that equal ranges of hash values hold equal shares
                fp["hash"], fp["node"], fp["offset"] = mix(h[keep]), (shard << 32) | idx, keep
            parts.append(fp)
            held += len(fp)
            self.stat_update("fingerprints", value=len(fp))
            if held >= FLUSH:
                self._flush(shard, chunk, parts)
                parts, held, chunk = [], 0, chunk + 1
        self._flush(shard, chunk, parts)
        return
        yield


def fingerprint_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "fp", "*.bin")))


def fingerprint_partitions(folder: str, per_partition: int) -> tuple[int, int]:
    """(fingerprints written, grouping tasks for them): one task per ``per_partition`` fingerprints, counted
    from the files' headers (an increment's include the earlier layers' linked files)."""
    total = sum(checked_count(f, FINGERPRINT) for f in fingerprint_files(folder))
    return total, max(1, -(-total // per_partition))


class SubstringRepeats(PipelineStep):
    """Task ``rank`` groups the fingerprints whose hash is in the ``rank``-th of ``partitions`` ranges: every
    occurrence after the first is a repeat, kept only for shards from ``first_new_shard`` on (an increment's)."""

    name = "🧵 Substring repeats across shards"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, partitions: int, first_new_shard: int = 0):
        super().__init__()
        self.folder, self.partitions, self.first_new_shard = folder, partitions, first_new_shard

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        fp = records_in_range(fingerprint_files(self.folder), FINGERPRINT, "hash", *hash_range(rank, self.partitions),
                              whole=self.partitions == 1)
        fp = np.sort(fp, order=["hash", "node", "offset"])
        later = np.zeros(len(fp), bool)
        later[1:] = fp["hash"][1:] == fp["hash"][:-1]
        rep = fp[later]
        rep = rep[(rep["node"] >> np.uint64(32)) >= self.first_new_shard]
        self.stat_update("fingerprints", value=len(fp))
        self.stat_update("repeated", value=int(later.sum()))
        out = np.empty(len(rep), REPEAT)
        out["node"], out["offset"] = rep["node"], rep["offset"]
        write_checked(os.path.join(self.folder, "repeats", f"{rank:05d}.bin"), np.sort(out))
        return
        yield
