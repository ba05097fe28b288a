"""Exact-substring deduplication with a suffix array (Lee et al., 2022), in-process with pydivsufsort: no
external Rust binary, and token ids are int32 (Qwen3's 151,669-token vocabulary does not fit the uint16
of Google's tool).

Documents of the selected domains are buffered, in input order, into shards of at most ``shard_bytes``
of UTF-8 text; for each shard the concatenation (UTF-8 bytes, or int32 token ids) gets a suffix array and
its LCP array. Adjacent suffixes sharing at least ``min_length`` units are the same substring twice: the
occurrence at the later position is marked, so the first occurrence of every repeated span is kept (the
earliest position is never the later one of a pair). Marks are clipped to their document, widened to whole
characters (byte marks never split a UTF-8 sequence; token marks use the tokenizer's character offsets),
and cut out of the text. A document left with less than ``min_doc_fraction`` of its characters is removed
(``substring_duplicate``). The suffix array finds repeats within a shard (memory is bounded by the shard,
not the corpus); spans repeated in other shards come from ``substring_fingerprints.py`` (``repeats_folder``)
and are cut together with the shard's own.
"""

from __future__ import annotations

import glob
import os
from functools import lru_cache

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import records_in_range
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.ranges import cut_ranges, merge_ranges
from pipeline.core.tokens import TokenRecounter, load_tokenizer

DUPLICATE_REASON = "substring_duplicate"
# a window repeated across shards (substring_fingerprints.py): node = shard << 32 | document index in the shard
REPEAT = np.dtype([("node", "<u8"), ("offset", "<u4")])


def repeated_ranges(seq: np.ndarray, starts: np.ndarray, min_length: int, chunk: int = 1 << 20) -> list[list[tuple[int, int]]]:
    """For a concatenation ``seq`` of documents beginning at ``starts`` (ascending, plus the end as the last
    element), the [start, end) ranges, relative to each document, of spans repeated earlier in ``seq``
    (overlapping or touching spans merged)."""
    import pydivsufsort

    seq = np.ascontiguousarray(seq).copy()  # pydivsufsort needs a writable buffer
    starts = np.asarray(starts, np.int64)
    n_docs, n = len(starts) - 1, len(seq)
    out: list[list[tuple[int, int]]] = [[] for _ in range(n_docs)]
    if n < 2:
        return out
    sa = pydivsufsort.divsufsort(seq)
    lcp = pydivsufsort.kasai(seq, sa)  # lcp[i] = common prefix of suffixes sa[i] and sa[i + 1]
    del seq
    # reach[p]: the furthest end of a repeat found at p. Matches are folded into it a chunk of the suffix
    # array at a time, so memory is a few arrays of the shard's length whatever the number of matches
    # (repetitive generated code has one per position; per-match int64 arrays took ~1 GB for a 16 MiB shard)
    pos = np.int32 if n < 2**31 else np.int64
    reach = np.zeros(n, pos)
    for a in range(0, n - 1, chunk):
        i = np.flatnonzero(lcp[a : min(a + chunk, n - 1)] >= min_length) + a
        if not len(i):
            continue
        later = np.maximum(sa[i], sa[i + 1]).astype(np.int64)
        doc_end = starts[np.searchsorted(starts, later, side="right")]  # a match never runs into the next document
        end = np.minimum(later + lcp[i], doc_end)
        keep = end - later >= min_length
        np.maximum.at(reach, later[keep], end[keep].astype(pos))
    del sa, lcp
    np.maximum.accumulate(reach, out=reach)  # covered[p]: some repeat starting at or before p reaches past p
    covered = np.zeros(n + 2, bool)
    for a in range(0, n, chunk):
        covered[a + 1 : min(a + chunk, n) + 1] = reach[a : a + chunk] > np.arange(a, min(a + chunk, n), dtype=pos)
    del reach
    edges = np.flatnonzero(covered[1:] != covered[:-1])
    s, e = edges[0::2], edges[1::2]
    # a run covering the end of one document and the start of the next is one range in each
    pieces = []
    while len(s):
        doc = np.searchsorted(starts, s, side="right") - 1
        doc_end = starts[doc + 1]
        pieces.append((doc, s - starts[doc], np.minimum(e, doc_end) - starts[doc]))
        rest = e > doc_end
        s, e = doc_end[rest], e[rest]
    for doc, a, b in pieces:
        for d, x, y in zip(doc.tolist(), a.tolist(), b.tolist()):
            out[d].append((x, y))
    for ranges in out:
        ranges.sort()
    return out


def byte_ranges_to_chars(data: bytes, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Byte ranges of UTF-8 ``data`` -> character ranges covering only whole characters inside them."""
    if not ranges:
        return []
    b = np.frombuffer(data, dtype=np.uint8)
    is_start = np.append((b & 0xC0) != 0x80, True)  # a boundary after the last byte too
    chars_before = np.concatenate([[0], np.cumsum(is_start[:-1])])
    out = []
    for s, e in ranges:
        while not is_start[s]:  # forward to the first character that starts inside the range
            s += 1
        while e > s and not is_start[e]:  # back to the end of the last character wholly inside
            e -= 1
        if e > s:
            out.append((int(chars_before[s]), int(chars_before[e])))
    return out


@lru_cache(maxsize=2)
def _tokenizer(path: str):
    return load_tokenizer(path)


def unit_sequences(texts: list[str], unit: str, tokenizer_path: str | None = None) -> tuple[list[np.ndarray], list]:
    """Each text as its units (UTF-8 bytes, or int32 token ids), and a mapper per text from unit ranges to
    the character ranges they cover."""
    if unit == "bytes":
        data = [t.encode("utf-8") for t in texts]
        return [np.frombuffer(d, dtype=np.uint8) for d in data], [lambda r, d=d: byte_ranges_to_chars(d, r) for d in data]
    seqs, offsets = [], []
    for a in range(0, len(texts), 256):  # encodings (ids, offsets, token strings) held a batch at a time, not a shard
        for e in _tokenizer(tokenizer_path).encode_batch(texts[a : a + 256], add_special_tokens=False):
            seqs.append(np.array(e.ids, dtype=np.int32))
            offsets.append(np.array(e.offsets, dtype=np.int64).reshape(-1, 2))
    mappers = [lambda r, o=o: [(int(o[s, 0]), int(o[e - 1, 1])) for s, e in r if e > s] for o in offsets]
    return seqs, mappers


class SubstringDeduplicator(PipelineStep):
    """Removes repeated spans from documents of ``domains``; other documents and documents already marked
    removed pass through unchanged (in their input order; the selected ones leave when their shard is done)."""

    name = "🧵 Suffix-array substring dedup"
    type = "🫂 - DEDUP"

    def __init__(self, domains: list[str], min_length: int = 100, unit: str = "bytes", shard_bytes: int = 16 * 2**20,
                 min_doc_fraction: float = 0.2, tokenizer_path: str | None = None, repeats_folder: str | None = None,
                 shard_offset: int = 0):
        super().__init__()
        # the windows repeated across shards (substring_fingerprints.py), cut together with the shard's own repeats
        self.repeats_folder, self.shard_offset = repeats_folder, shard_offset
        self._repeats: dict[int, np.ndarray] = {}
        if unit not in ("bytes", "tokens") or (unit == "tokens" and not tokenizer_path):
            raise ValueError("unit must be 'bytes', or 'tokens' with a tokenizer_path")
        self.domains, self.min_length, self.unit = set(domains), min_length, unit
        self.shard_bytes, self.min_doc_fraction, self.tokenizer_path = shard_bytes, min_doc_fraction, tokenizer_path
        self.recount = TokenRecounter(tokenizer_path) if tokenizer_path else None

    def _dedup_shard(self, docs: list[tuple[int, Document]]) -> list[Document]:
        seqs, mappers = unit_sequences([d.text for _, d in docs], self.unit, self.tokenizer_path)
        starts = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
        seq = np.concatenate(seqs) if seqs else np.empty(0, np.uint8)
        edited = []
        for (idx, doc), ranges, to_chars in zip(docs, repeated_ranges(seq, starts, self.min_length), mappers):
            if idx in self._repeats:
                across = [(o, o + self.min_length) for o in self._repeats[idx].tolist()]
                self.stat_update("windows_repeated_across_shards", value=len(across))
                ranges = merge_ranges(ranges + across)
            if not ranges:
                continue
            chars = to_chars(ranges)
            removed = sum(e - s for s, e in chars)
            if removed == 0:
                continue
            self.stat_update("documents_with_repeats")
            self.stat_update("chars_removed", value=removed)
            if len(doc.text) - removed < self.min_doc_fraction * len(doc.text):
                doc.metadata[REMOVED_REASON] = DUPLICATE_REASON
                self.stat_update(DUPLICATE_REASON)
            else:
                doc.text = cut_ranges(doc.text, chars)
                doc.metadata["substring_chars_removed"] = removed
                edited.append(doc)
        if self.recount:
            self.recount(edited)
        return [d for _, d in docs]

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.repeats_folder:
            self._repeats = shard_repeats(self.repeats_folder, rank + self.shard_offset)
        shard: list[tuple[int, Document]] = []
        size = 0
        for idx, doc in enumerate(data):
            if doc.metadata.get(REMOVED_REASON) or doc.metadata.get("domain") not in self.domains:
                yield doc
                continue
            shard.append((idx, doc))
            size += len(doc.text.encode("utf-8"))
            if size >= self.shard_bytes:
                with self.track_time():
                    done = self._dedup_shard(shard)
                yield from done
                shard, size = [], 0
        if shard:
            with self.track_time():
                done = self._dedup_shard(shard)
            yield from done


def shard_repeats(folder: str, shard: int) -> dict[int, np.ndarray]:
    """Document index -> offsets of its repeated windows, for one shard: its slice of every grouping task's
    file (each sorted by node), so a final-pass task holds its shard's repeats, not the corpus's."""
    files = sorted(glob.glob(os.path.join(folder, "repeats", "*.bin")))
    rep = records_in_range(files, REPEAT, "node", shard << 32, ((shard + 1) << 32) - 1)
    if not len(rep):
        return {}
    rep = np.sort(rep)
    idx = (rep["node"] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    bounds = np.flatnonzero(np.diff(idx)) + 1
    return {int(i[0]): g.astype(np.int64) for i, g in zip(np.split(idx, bounds), np.split(rep["offset"], bounds))}
