"""Global MinHash/LSH fuzzy deduplication across all sources, without a step whose memory grows with the
corpus.

1. ``MinhashSignatures`` (one task per input shard): shingles are word n-grams, or character n-grams when
   most tokens are CJK; 32-bit shingle hashes go through ``bands * rows`` universal hash functions
   ((a*h + b) mod 2^61-1), all shingles of a document at once in numpy; each band's rows are hashed to one
   64-bit key. Keys are written per band, sorted, in chunks of ``flush_docs`` documents (memory per task
   is bounded by the chunk), with the keeper attributes of each document (id, length, quality, source).
2. ``BandComponents`` (one task per band, in parallel): the band's keys from every shard; documents
   sharing a key are joined, and the band's connected components are reduced to star edges
   (member -> smallest member), at most one per duplicate document.
3. ``ClusterKeepers`` (one task): the union of the bands' star edges -> connected components with scipy
   (memory grows with the duplicate documents, not the corpus); in each cluster one document is kept by the
   configured order (default: highest quality score, then source priority, then earliest in the input); the
   decision for every member is written per shard.
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
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import CorruptIntermediate, map_checked, read_checked, write_checked
from dedup.exact import input_position
from pipeline.core.documents import REMOVED_REASON
from pipeline.core.text import CJK_RANGES, TOKEN, rolling_hashes, token_hashes

DUPLICATE_REASON = "minhash_duplicate"
KEY = np.dtype([("key", "<u8"), ("node", "<u8")])
EDGE = np.dtype([("a", "<u8"), ("b", "<u8")])
KEEPER_CRITERIA = ("quality", "source_priority", "earliest", "length", "id")
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
                 source_priority: dict[str, int], quality_key: str | None = None, flush_docs: int = 100_000):
        super().__init__()
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
                    sh = shingle_hashes(doc.text, self.n_words, self.n_chars)
                    if len(sh) == 0:
                        self.stat_update("no_shingles")
                        sigs.append(no_shingles)
                        continue
                    sig = minhash(sh, a, b)
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


def verified_keepers(cluster: np.ndarray, preferred: np.ndarray, signatures, threshold: float | None,
                     batch: int = 1 << 16) -> tuple[np.ndarray, np.ndarray, int]:
    """Split LSH components into verified clusters: every removed document is a near-duplicate of the
    document kept for it.

    ``preferred`` lists node positions by component, best keeper first. In each component the best document
    is kept; each other member whose estimated Jaccard similarity with it (the share of equal signature
    entries) is at least ``threshold`` is removed as its duplicate; the members left over form the next
    round, where their own best is kept and the rest compared with it, until none is left. This equals
    greedy clustering that assigns each member to the first keeper, in keeper order, it is similar to; the
    work is members x keepers per component, in numpy batches. LSH components are transitive (A~B, B~C
    joins A and C), so without this a kept document can be far from members it removes.

    Returns (keeper position per node, estimated similarity with the keeper, rounds)."""
    keeper = np.full(len(cluster), -1, np.int64)
    similarity = np.ones(len(cluster), np.float32)
    pending, rounds = preferred, 0
    while len(pending):
        rounds += 1
        group = cluster[pending]
        first = np.ones(len(pending), dtype=bool)
        first[1:] = group[1:] != group[:-1]
        keeper[pending[first]] = pending[first]
        head = pending[first][np.cumsum(first) - 1]
        rest, rest_head = pending[~first], head[~first]
        near = np.ones(len(rest), dtype=bool)
        if threshold is not None:
            for s in range(0, len(rest), batch):
                est = (signatures(rest[s : s + batch]) == signatures(rest_head[s : s + batch])).mean(axis=1)
                similarity[rest[s : s + batch]] = est
                near[s : s + batch] = est >= threshold
        keeper[rest[near]] = rest_head[near]
        pending = rest[~near]
    return keeper, similarity, rounds


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


class BandComponents(PipelineStep):
    """Task ``rank`` handles band ``rank``."""

    name = "🎯 LSH band components"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = sorted(glob.glob(os.path.join(self.folder, "keys", f"{rank:03d}", "*.bin")))
        keys = np.concatenate([read_checked(f, KEY) for f in files]) if files else np.empty(0, KEY)
        keys = np.sort(keys, order=["key", "node"])
        same = keys["key"][1:] == keys["key"][:-1]
        # documents sharing a key: join each to the previous one in its group
        a, b = keys["node"][:-1][same], keys["node"][1:][same]
        nodes, label = _components(a, b) if len(a) else (np.empty(0, np.uint64), np.empty(0, np.uint64))
        star = np.empty(int((nodes != label).sum()), dtype=EDGE)
        star["a"], star["b"] = nodes[nodes != label], label[nodes != label]
        self.stat_update("documents", value=len(keys))
        self.stat_update("duplicate_documents", value=len(star))
        write_checked(os.path.join(self.folder, "edges", f"{rank:03d}.bin"), star)
        return
        yield


def _read_attrs(path: str, idx: np.ndarray) -> pa.Table:
    """The attribute rows of documents ``idx`` of one shard, streamed by row group: memory follows the
    clustered documents, not the shard."""
    wanted = pa.array(idx, pa.uint32())
    try:
        parts = [b.filter(pc.is_in(b["idx"], value_set=wanted)) for b in pq.ParquetFile(path).iter_batches(batch_size=65536)]
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptIntermediate(f"{path}: unreadable keeper attributes ({e})") from None
    return pa.Table.from_batches(parts) if parts else pa.table({"idx": pa.array([], pa.uint32())})


class ClusterKeepers(PipelineStep):
    name = "🎯 Clusters and keepers"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, bands: int, keeper: list[str], rows: int | None = None, similarity: float | None = None):
        super().__init__()
        unknown = sorted(set(keeper) - set(KEEPER_CRITERIA))
        if unknown:
            raise ValueError(f"unknown keeper criteria {unknown}; known: {KEEPER_CRITERIA}")
        if similarity is not None and rows is None:
            raise ValueError("verifying clusters by similarity needs the rows per band (the signature length)")
        self.folder, self.bands, self.keeper, self.rows, self.similarity = folder, bands, list(keeper), rows, similarity

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        edges = [read_checked(os.path.join(self.folder, "edges", f"{band:03d}.bin"), EDGE) for band in range(self.bands)]
        edges = np.concatenate(edges)
        nodes, component = _components(edges["a"], edges["b"]) if len(edges) else (np.empty(0, np.uint64),) * 2
        shard, idx = (nodes >> np.uint64(32)).astype(np.int64), (nodes & _LOW32).astype(np.int64)
        # keeper attributes of the clustered documents only, shard by shard
        n = len(nodes)
        ids = np.empty(n, dtype=object)
        length, quality, prio, position = np.zeros(n, np.int64), np.full(n, -np.inf), np.zeros(n, np.int64), np.zeros(n, np.uint64)
        for r in np.unique(shard):
            sel = np.nonzero(shard == r)[0]
            # nodes are sorted, so within a shard idx[sel] ascends like the table sorted by idx
            t = _read_attrs(os.path.join(self.folder, "attrs", f"{int(r):05d}.parquet"), idx[sel]).sort_by("idx")
            if t.num_rows != len(sel):
                raise CorruptIntermediate(f"{self.folder}/attrs/{int(r):05d}.parquet: {t.num_rows} of {len(sel)} documents found")
            ids[sel] = t["id"].to_pylist()
            length[sel] = t["length"].to_numpy()
            quality[sel] = t["quality"].fill_null(-np.inf).to_numpy()
            prio[sel] = t["source_priority"].to_numpy()
            position[sel] = t["position"].to_numpy()
        id_rank = np.unique(ids.astype(str), return_inverse=True)[1] if n else np.empty(0, np.int64)
        columns = {"quality": -quality, "length": -length, "source_priority": prio, "earliest": position, "id": id_rank}
        preferred = np.lexsort([columns[c] for c in reversed(self.keeper)] + [component])
        signatures = SignatureRows(self.folder, self.bands * self.rows) if self.similarity is not None else None
        keeper, similarity, rounds = verified_keepers(component, preferred, lambda pos: signatures(nodes[pos]), self.similarity)
        # a verified cluster is a keeper and the members it removes; a keeper left alone is no cluster
        _, cluster_index, size = np.unique(keeper, return_inverse=True, return_counts=True)
        in_cluster = size[cluster_index] > 1
        removed = keeper != np.arange(n)
        self.stat_update("lsh_components", value=len(np.unique(component)))
        self.stat_update("lsh_members", value=n)
        self.stat_update("clusters", value=int((~removed & in_cluster).sum()))
        self.stat_update("to_remove", value=int(removed.sum()))
        self.stat_update("split_off_by_verification", value=int(n - len(np.unique(component)) - removed.sum()))
        self.stat_update("verification_rounds", value=rounds)
        os.makedirs(os.path.join(self.folder, "decisions"), exist_ok=True)
        for r in np.unique(shard):
            sel = np.nonzero((shard == r) & in_cluster)[0]
            pq.write_table(pa.table({"idx": idx[sel].astype(np.uint32), "cluster": cluster_index[sel].astype(np.int64),
                                     "size": size[cluster_index[sel]].astype(np.int64), "keep": ~removed[sel],
                                     "keeper": ids[keeper[sel]].tolist(),
                                     "similarity": similarity[sel] if self.similarity is not None else pa.nulls(len(sel), pa.float32())}),
                           os.path.join(self.folder, "decisions", f"{int(r):05d}.parquet"))
        return
        yield


class ClusterMarker(PipelineStep):
    name = "🎯 MinHash duplicate marker"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = os.path.join(self.folder, "decisions", f"{rank:05d}.parquet")
        decisions = {}
        if os.path.exists(path):
            try:
                rows = pq.read_table(path).to_pylist()
            except (pa.ArrowInvalid, OSError) as e:
                raise CorruptIntermediate(f"{path}: unreadable cluster decisions ({e})") from None
            decisions = {r["idx"]: r for r in rows}
        for idx, doc in enumerate(data):
            d = decisions.get(idx)
            if d is not None:
                doc.metadata["minhash_cluster_id"] = d["cluster"]
                doc.metadata["minhash_cluster_size"] = d["size"]
                if not d["keep"]:
                    doc.metadata[REMOVED_REASON] = DUPLICATE_REASON
                    doc.metadata["duplicate_of"] = d["keeper"]
                    if d["similarity"] is not None:
                        doc.metadata["duplicate_similarity"] = round(d["similarity"], 4)
                    self.stat_update(DUPLICATE_REASON)
            yield doc
