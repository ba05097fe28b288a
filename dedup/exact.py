"""Exact deduplication on normalised content, global across sources, before the fuzzy pass.

Three datatrove steps, none of them a single process over the whole corpus:
1. ``ExactSignatures`` (one task per input shard): a 128-bit xxh3 hash of each document's normalised text
   (NFKC, case-folded, whitespace collapsed), written into ``num_buckets`` files by hash range, sorted;
2. ``ExactDuplicateFinder`` (one task per bucket): merges that bucket's files from every shard, keeps the
   first document of each hash group in (source priority, input position) order and writes, per shard,
   the positions to remove with the position of their keeper;
3. ``ExactDuplicateMarker`` (one task per shard, the same shards as 1): marks those documents
   ``removed_reason = exact_duplicate`` with ``exact_duplicate_of`` (the keeper's id-free locator).
Every intermediate file is a checked array (size and checksum validated where it is read).
"""

from __future__ import annotations

import glob
import os
import re
import unicodedata

import numpy as np
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import read_checked, write_checked
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.sources import POSITION

DUPLICATE_REASON = "exact_duplicate"
SIGNATURE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("prio", "<u4"), ("pos", "<u8"), ("rank", "<u4"), ("idx", "<u4")])
ORDER = ["hi", "lo", "prio", "pos", "rank", "idx"]
REMOVAL = np.dtype([("idx", "<u4"), ("keeper_rank", "<u4"), ("keeper_idx", "<u4")])
_SPACE = re.compile(r"\s+")


def normalized_content(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def input_position(metadata: dict) -> int:
    """The document's place in the recipe's input order (file index, record number) as one sortable int;
    documents without one (not read by the source reader) sort last."""
    pos = metadata.get(POSITION)
    return (int(pos[0]) << 32 | int(pos[1])) if pos else (1 << 64) - 1


def content_hash(text: str) -> tuple[int, int]:
    h = xxhash.xxh3_128_intdigest(normalized_content(text).encode("utf-8"))
    return h >> 64, h & 0xFFFFFFFFFFFFFFFF


class ExactSignatures(PipelineStep):
    name = "🫆 Exact content hashes"
    type = "🫂 - DEDUP"

    def __init__(self, output_folder: str, num_buckets: int, source_priority: dict[str, int], shard_offset: int = 0):
        super().__init__()
        self.output_folder, self.num_buckets, self.source_priority = output_folder, num_buckets, source_priority
        self.shard_offset = shard_offset  # an increment's shards are numbered after the earlier layers'

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        rank += self.shard_offset
        rows = []
        for idx, doc in enumerate(data):
            with self.track_time():
                hi, lo = content_hash(doc.text)
            prio = self.source_priority.get(doc.metadata.get("source"), len(self.source_priority))
            rows.append((hi, lo, prio, input_position(doc.metadata), rank, idx))
            self.stat_update("documents")
        sig = np.array(rows, dtype=SIGNATURE)
        bucket = (sig["hi"] >> np.uint64(32)) * np.uint64(self.num_buckets) >> np.uint64(32)  # hash range
        for b in range(self.num_buckets):
            part = np.sort(sig[bucket == b], order=ORDER)
            write_checked(os.path.join(self.output_folder, f"{b:04d}", f"{rank:05d}.sig"), part)
        return
        yield


class ExactDuplicateFinder(PipelineStep):
    """Task ``rank`` handles bucket ``rank``: memory is that bucket's hashes, 1/num_buckets of the corpus.
    Shards below ``first_new_shard`` are an earlier layer's (``ruyi2 add``): their documents are kept already,
    so in a group they come first and only the new shards' documents are removed."""

    name = "🫆 Exact duplicate groups"
    type = "🫂 - DEDUP"

    def __init__(self, signatures_folder: str, output_folder: str, first_new_shard: int = 0):
        super().__init__()
        self.signatures_folder, self.output_folder, self.first_new_shard = signatures_folder, output_folder, first_new_shard

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = sorted(glob.glob(os.path.join(self.signatures_folder, f"{rank:04d}", "*.sig")))
        sig = np.concatenate([read_checked(f, SIGNATURE) for f in files]) if files else np.empty(0, SIGNATURE)
        # ORDER, with an earlier layer's copy ahead of a new one inside each hash group
        sig = sig[np.lexsort([sig[k] for k in reversed(ORDER[2:])] + [sig["rank"] >= self.first_new_shard, sig["lo"], sig["hi"]])]
        new = sig["rank"] >= self.first_new_shard
        first = np.ones(len(sig), dtype=bool)
        first[1:] = (sig["hi"][1:] != sig["hi"][:-1]) | (sig["lo"][1:] != sig["lo"][:-1])
        keeper = np.maximum.accumulate(np.where(first, np.arange(len(sig)), 0))  # first row of each group
        dup = ~first
        self.stat_update("groups", value=int(first.sum()))
        self.stat_update("duplicates", value=int((dup & new).sum()))
        removed = np.zeros(int(dup.sum()), dtype=REMOVAL)
        removed["idx"], removed["keeper_rank"], removed["keeper_idx"] = sig["idx"][dup], sig["rank"][keeper[dup]], sig["idx"][keeper[dup]]
        shard = sig["rank"][dup]
        for r in np.unique(shard[shard >= self.first_new_shard]):
            write_checked(os.path.join(self.output_folder, f"{int(r):05d}", f"{rank:04d}.rm"), np.sort(removed[shard == r], order="idx"))
        return
        yield


class ExactDuplicateMarker(PipelineStep):
    name = "🫆 Exact duplicate marker"
    type = "🫂 - DEDUP"

    def __init__(self, removals_folder: str, shard_offset: int = 0):
        super().__init__()
        self.removals_folder, self.shard_offset = removals_folder, shard_offset

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = sorted(glob.glob(os.path.join(self.removals_folder, f"{rank + self.shard_offset:05d}", "*.rm")))
        rm = np.concatenate([read_checked(f, REMOVAL) for f in files]) if files else np.empty(0, REMOVAL)
        rm = {int(i): (int(kr), int(ki)) for i, kr, ki in zip(rm["idx"], rm["keeper_rank"], rm["keeper_idx"])}
        for idx, doc in enumerate(data):
            if idx in rm:
                doc.metadata[REMOVED_REASON] = DUPLICATE_REASON
                doc.metadata["exact_duplicate_of"] = f"shard {rm[idx][0]} doc {rm[idx][1]}"
                self.stat_update(DUPLICATE_REASON)
            yield doc
