"""Global MinHash/LSH fuzzy deduplication across all sources, without a step whose memory grows with the
corpus.

1. ``MinhashSignatures`` (one task per input shard): shingles are word n-grams, or character n-grams when
   most tokens are CJK; 32-bit shingle hashes go through ``bands * rows`` universal hash functions
   ((a*h + b) mod 2^61-1): ``shingle_hashes`` and ``minhash`` below define it in numpy, and
   ``minhash_kernel.py`` computes the same bits in one compiled pass; each band's rows are hashed to one
   64-bit key. Keys are written per band, sorted, in chunks of ``flush_docs`` documents (memory per task
   is bounded by the chunk), with the keeper attributes of each document (id, length, quality, source).
2. ``BandComponents`` (one task per band and key range, in parallel; ``band_key_ranges``: one range per
   four partitions): the keys of its band in its range of key values, from every shard (documents sharing a
   key share its range, so memory per task is a share of a band, not the whole band); documents sharing a
   key are joined and reduced to star edges (member -> smallest member), at most one per duplicate
   document, written by partition of their nodes.
3. The union of the bands' edges -> connected components, in rounds of ``partitions`` tasks
   (``components.py``), then the keeper of each component and the verification of its members, in
   ``partitions`` tasks that each hold whole components (``keepers.py``): memory per task is a share of the
   duplicate documents, not of the corpus.
4. ``ClusterMarker`` (one task per shard, the same shards as 1): members get ``minhash_cluster_id`` and
   ``minhash_cluster_size``; removed ones ``removed_reason = minhash_duplicate`` and ``duplicate_of``.
Key and edge files are checked arrays: a truncated or corrupt file fails where it is read, named.
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import CorruptIntermediate, hash_range, map_checked, records_in_range, write_checked
from dedup.components import mix, write_partitioned
from dedup.exact import input_position
from pipeline.core.text import CJK_RANGES, TOKEN, rolling_hashes, token_hashes

DUPLICATE_REASON = "minhash_duplicate"
KEY = np.dtype([("key", "<u8"), ("node", "<u8")])
_P = np.uint64((1 << 61) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_CHUNK = 2048  # shingles per numpy block: bounds the (shingles x permutations) matrix


def node_id(rank: int, idx: int) -> int:
    return (rank << 32) | idx


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """a in [1, 2^32), b in [0, 2^32): a*h + b stays below 2^64 for 32-bit h, so uint64 needs no bignums."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, 2**32, num_perm, dtype=np.uint64), rng.integers(0, 2**32, num_perm, dtype=np.uint64)


_CJK_CHAR = re.compile(f"[{CJK_RANGES}]")


def shingle_hashes(text: str, n_words: int, n_chars: int) -> np.ndarray:
    """Distinct 64-bit hashes of the document's shingles: word n-grams, or character n-grams when most
    tokens are CJK characters (the whole text is one shingle when it is shorter than n)."""
    toks = TOKEN.findall(text.lower())
    if not toks:
        return np.empty(0, np.uint64)
    cjk = sum(1 for t in toks if len(t) == 1 and _CJK_CHAR.match(t))
    n = min(n_chars if 2 * cjk > len(toks) else n_words, len(toks))
    return np.unique(rolling_hashes(token_hashes(toks), [n])[n])


def minhash(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The MinHash signature (uint32 per permutation) of a set of 64-bit shingle hashes."""
    sig = np.full(len(a), _LOW32, dtype=np.uint64)
    h = (shingles >> np.uint64(32)).reshape(-1, 1)
    for s in range(0, len(h), _CHUNK):
        block = (h[s : s + _CHUNK] * a + b) % _P & _LOW32
        np.minimum(sig, block.min(axis=0), out=sig)
    return sig.astype(np.uint32)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> list[int]:
    return [xxhash.xxh3_64_intdigest(sig[i * rows : (i + 1) * rows].tobytes()) for i in range(bands)]


class MinhashSignatures(PipelineStep):
    name = "🎯 MinHash band keys"
    type = "🫂 - DEDUP"

    def __init__(self, output_folder: str, bands: int, rows: int, n_words: int, n_chars: int, seed: int,
                 source_priority: dict[str, int], quality_key: str | None = None, flush_docs: int = 100_000, shard_offset: int = 0):
        super().__init__()
        self.shard_offset = shard_offset  # an increment's shards are numbered after the earlier layers'
        self.output_folder, self.bands, self.rows = output_folder, bands, rows
        self.n_words, self.n_chars, self.seed = n_words, n_chars, seed
        self.source_priority, self.quality_key, self.flush_docs = source_priority, quality_key, flush_docs

    def _flush(self, rank: int, start: int, keys: list, sigs: list, attrs: dict, writer) -> None:
        """Write one chunk: the band keys of its documents with shingles, their keeper attributes, and one
        signature row per input document (``start`` is the chunk's first input index)."""
        if keys:
            arr = np.array(keys, dtype=np.uint64).reshape(-1, self.bands + 1)
            for band in range(self.bands):
                out = np.empty(len(arr), dtype=KEY)
                out["key"], out["node"] = arr[:, band + 1], arr[:, 0]
                write_checked(os.path.join(self.output_folder, "keys", f"{band:03d}", f"{rank:05d}_{start:012d}.bin"), np.sort(out))
        rows = np.empty(len(sigs), dtype=signature_dtype(self.bands * self.rows))
        rows["sig"] = np.array(sigs, dtype=np.uint32).reshape(len(sigs), -1)
        write_checked(os.path.join(self.output_folder, "sigs", f"{rank:05d}", f"{start:012d}.bin"), rows)
        writer.write_table(pa.table(attrs, schema=writer.schema))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # imported here: numba (~0.5 s) is paid by the signature workers only, not by every command and pool
        from dedup.minhash_kernel import signature

        rank += self.shard_offset
        a, b = permutations(self.bands * self.rows, self.seed)
        no_shingles = np.zeros(self.bands * self.rows, np.uint32)  # never compared: such documents have no band keys
        attrs_path = os.path.join(self.output_folder, "attrs", f"{rank:05d}.parquet")
        os.makedirs(os.path.dirname(attrs_path), exist_ok=True)
        schema = pa.schema([("idx", pa.uint32()), ("id", pa.string()), ("length", pa.int64()), ("quality", pa.float64()),
                            ("source_priority", pa.int32()), ("position", pa.uint64())])
        start, keys, sigs = 0, [], []
        attrs = {f.name: [] for f in schema}
        with pq.ParquetWriter(attrs_path, schema) as writer:
            for idx, doc in enumerate(data):
                if idx - start == self.flush_docs:
                    self._flush(rank, start, keys, sigs, attrs, writer)
                    start, keys, sigs, attrs = idx, [], [], {f.name: [] for f in schema}
                with self.track_time():
                    # minhash(shingle_hashes(...)) in one compiled pass, the same bits (minhash_kernel.py)
                    sig = signature(doc.text, self.n_words, self.n_chars, a, b)
                    if len(sig) == 0:
                        self.stat_update("no_shingles")
                        sigs.append(no_shingles)
                        continue
                    sigs.append(sig)
                    keys.append([node_id(rank, idx), *band_keys(sig, self.bands, self.rows)])
                q = doc.metadata.get(self.quality_key) if self.quality_key else None
                for k, v in (("idx", idx), ("id", doc.id), ("length", len(doc.text)), ("quality", float(q) if q is not None else None),
                             ("source_priority", self.source_priority.get(doc.metadata.get("source"), len(self.source_priority))),
                             ("position", input_position(doc.metadata))):
                    attrs[k].append(v)
                self.stat_update("documents")
            if sigs:
                self._flush(rank, start, keys, sigs, attrs, writer)
        return
        yield


def signature_dtype(num_perm: int) -> np.dtype:
    return np.dtype([("sig", "<u4", (num_perm,))])


class SignatureRows:
    """The stored signatures of documents looked up by node id, read by row from memory-mapped chunk files
    (``sigs/<shard>/<first index>.bin``): memory follows the rows asked for, not the corpus."""

    def __init__(self, folder: str, num_perm: int):
        self.folder, self.dtype = folder, signature_dtype(num_perm)
        self._chunks: dict[int, tuple[np.ndarray, list[str]]] = {}

    def _shard(self, shard: int) -> tuple[np.ndarray, list[str]]:
        if shard not in self._chunks:
            paths = sorted(glob.glob(os.path.join(self.folder, "sigs", f"{shard:05d}", "*.bin")))
            starts = np.array([int(os.path.basename(p)[:-4]) for p in paths], dtype=np.int64)
            self._chunks[shard] = starts, paths
        return self._chunks[shard]

    def __call__(self, nodes: np.ndarray) -> np.ndarray:
        out = np.empty((len(nodes), self.dtype["sig"].shape[0]), np.uint32)
        shard, idx = (nodes >> np.uint64(32)).astype(np.int64), (nodes & _LOW32).astype(np.int64)
        for r in np.unique(shard):
            in_shard = np.nonzero(shard == r)[0]
            starts, paths = self._shard(int(r))
            chunk = np.searchsorted(starts, idx[in_shard], side="right") - 1
            for c in np.unique(chunk):
                sel = in_shard[chunk == c]
                rows = map_checked(paths[c], self.dtype) if c >= 0 else None
                if rows is None or (idx[sel] - starts[c]).max() >= len(rows):
                    raise CorruptIntermediate(f"{self.folder}/sigs/{int(r):05d}: no signature for document {int(idx[sel].max())}")
                out[sel] = rows["sig"][idx[sel] - starts[c]]
        return out


def _components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, label) for the graph with edges a-b: label = the smallest node of each node's component."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (inv[: len(a)], inv[len(a) :])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    smallest = np.full(comp.max() + 1 if n else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, comp, np.arange(n))  # nodes are sorted, so the smallest index is the smallest node
    return nodes, nodes[smallest[comp]]


def band_keys_in_range(files: list[str], part: int, partitions: int) -> np.ndarray:
    """The (key, node) records of a band's key files whose key is in the ``part``-th of ``partitions`` equal
    ranges of uint64. Each file is sorted by key, so the range is one slice of it (``records_in_range``)."""
    return records_in_range(files, KEY, "key", *hash_range(part, partitions), whole=partitions == 1)


def band_key_ranges(partitions: int) -> int:
    """Key ranges per band for ``partitions`` partitions: one per four, so a band task holds the keys of about
    four partitions' documents (16 bytes each: ~256 MB at 4M documents per partition, near a components
    round's share) while the band tasks' edge files, (bands x ranges) x partitions, stay a quarter of one range
    per partition (~315k files at 250 partitions and 20 bands, not 1.25M)."""
    return -(-partitions // 4)


class BandComponents(PipelineStep):
    """Task ``rank`` handles band ``rank // key_ranges``, keys in range ``rank % key_ranges``; edges go to
    ``partitions`` partitions."""

    name = "🎯 LSH band components"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, partitions: int, key_ranges: int = 1):
        super().__init__()
        self.folder, self.partitions, self.key_ranges = folder, partitions, key_ranges

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        band, part = divmod(rank, self.key_ranges)
        files = sorted(glob.glob(os.path.join(self.folder, "keys", f"{band:03d}", "*.bin")))
        keys = np.sort(band_keys_in_range(files, part, self.key_ranges), order=["key", "node"])
        same = keys["key"][1:] == keys["key"][:-1]
        # documents sharing a key: join each to the previous one in its group
        a, b = keys["node"][:-1][same], keys["node"][1:][same]
        nodes, label = _components(a, b) if len(a) else (np.empty(0, np.uint64), np.empty(0, np.uint64))
        leaf = nodes != label
        self.stat_update("documents", value=len(keys))
        self.stat_update("duplicate_documents", value=int(leaf.sum()))
        write_partitioned(os.path.join(self.folder, "edges"), rank, self.partitions, mix(nodes[leaf]), mix(label[leaf]))
        return
        yield
