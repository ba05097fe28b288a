"""Which document of each LSH component is kept, in parallel tasks that each hold whole components.

1. ``MemberAttributes`` (one task per input shard): the shard's documents that are in a component (from
   every partition's ``labels/<p>.bin``, sliced by node) get their keeper attributes joined from the shard's
   ``attrs/<shard>.parquet`` (streamed by row group) and are written to ``members/<shard>.parquet``, sorted by
   the partition of their component label.
2. ``ClusterKeepers`` (one task per partition): the members of the partition's components, from every shard's
   file (row groups of other partitions skipped by their statistics): in each component the document kept is
   the first by the configured order (default: highest quality score, then source priority, then earliest in
   the input), and members are verified against it from the stored signatures (``verified_keepers``). The
   decision for every member goes to ``decisions/<partition>.parquet``, sorted by node, so each shard's
   marker reads its own slice.
3. ``ClusterMarker`` (one task per shard): members get ``minhash_cluster_id`` and ``minhash_cluster_size``;
   removed ones ``removed_reason = minhash_duplicate``, ``duplicate_of`` and ``duplicate_similarity``.
A cluster's id is its kept document's node (shard << 32 | index): unique without a global count.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import CorruptIntermediate, map_checked
from dedup.components import EDGE, partition_of
from dedup.fuzzy import DUPLICATE_REASON, SignatureRows
from pipeline.core.documents import REMOVED_REASON

KEEPER_CRITERIA = ("quality", "source_priority", "earliest", "length", "id")
_LOW32 = np.uint64(0xFFFFFFFF)


def verified_keepers(cluster: np.ndarray, preferred: np.ndarray, signatures, threshold: float | None,
                     batch: int = 1 << 14) -> tuple[np.ndarray, np.ndarray, int]:
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


def _read_attrs(path: str, idx: np.ndarray) -> pa.Table:
    """The attribute rows of documents ``idx`` of one shard, streamed by row group: memory follows the
    clustered documents, not the shard."""
    wanted = pa.array(idx, pa.uint32())
    try:
        parts = [b.filter(pc.is_in(b["idx"], value_set=wanted)) for b in pq.ParquetFile(path).iter_batches(batch_size=65536)]
    except (pa.ArrowInvalid, OSError) as e:
        raise CorruptIntermediate(f"{path}: unreadable keeper attributes ({e})") from None
    return pa.Table.from_batches(parts) if parts else pa.table({"idx": pa.array([], pa.uint32())})


def shard_labels(folder: str, shard: int, partitions: int) -> np.ndarray:
    """(node, label) of the shard's documents in a component, from every partition's sorted label file."""
    lo, hi = np.uint64(shard) << np.uint64(32), np.uint64(shard + 1) << np.uint64(32)
    parts = []
    for p in range(partitions):
        labels = map_checked(os.path.join(folder, "labels", f"{p:05d}.bin"), EDGE)
        parts.append(np.array(labels[np.searchsorted(labels["a"], lo) : np.searchsorted(labels["a"], hi)]))
    return np.sort(np.concatenate(parts), order=["a"]) if parts else np.empty(0, EDGE)


MEMBER_SCHEMA = pa.schema([("part", pa.int32()), ("node", pa.uint64()), ("label", pa.uint64()), ("id", pa.string()),
                           ("length", pa.int64()), ("quality", pa.float64()), ("source_priority", pa.int32()), ("position", pa.uint64())])


class MemberAttributes(PipelineStep):
    """Task ``rank`` joins shard ``rank``'s component members with their keeper attributes."""

    name = "🎯 LSH member attributes"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, partitions: int):
        super().__init__()
        self.folder, self.partitions = folder, partitions

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        labels = shard_labels(self.folder, rank, self.partitions)
        path = os.path.join(self.folder, "attrs", f"{rank:05d}.parquet")
        t = _read_attrs(path, (labels["a"] & _LOW32).astype(np.uint32)).sort_by("idx")
        if t.num_rows != len(labels):
            raise CorruptIntermediate(f"{path}: {t.num_rows} of {len(labels)} documents found")
        part = partition_of(labels["b"], self.partitions).astype(np.int32)
        table = MEMBER_SCHEMA.empty_table()
        if len(labels):
            table = t.select(["id", "length", "quality", "source_priority", "position"])
            for i, (name, values) in enumerate((("part", part), ("node", labels["a"]), ("label", labels["b"]))):
                table = table.add_column(i, name, pa.array(values))
            table = table.cast(MEMBER_SCHEMA).take(pa.array(np.lexsort([labels["a"], part])))
        os.makedirs(os.path.join(self.folder, "members"), exist_ok=True)
        pq.write_table(table, os.path.join(self.folder, "members", f"{rank:05d}.parquet"), row_group_size=65536)
        self.stat_update("members", value=len(labels))
        return
        yield


DECISION_SCHEMA = pa.schema([("node", pa.uint64()), ("cluster", pa.int64()), ("size", pa.int64()), ("keep", pa.bool_()),
                             ("keeper", pa.string()), ("similarity", pa.float32())])


class ClusterKeepers(PipelineStep):
    """Task ``rank`` decides the components whose label falls in partition ``rank``; ``shards`` is the number
    of input shards (signature tasks). Shards below ``first_new_shard`` are earlier layers' (``ruyi2 add``):
    their documents come first in the keeper order, so a new document never displaces one already kept,
    and decisions are written for the new shards only."""

    name = "🎯 Clusters and keepers"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, shards: int, partitions: int, keeper: list[str], num_perm: int | None = None,
                 similarity: float | None = None, first_new_shard: int = 0):
        super().__init__()
        unknown = sorted(set(keeper) - set(KEEPER_CRITERIA))
        if unknown:
            raise ValueError(f"unknown keeper criteria {unknown}; known: {KEEPER_CRITERIA}")
        if similarity is not None and num_perm is None:
            raise ValueError("verifying clusters by similarity needs the signature length")
        self.folder, self.shards, self.partitions = folder, shards, partitions
        self.keeper, self.num_perm, self.similarity = list(keeper), num_perm, similarity
        self.first_new_shard = first_new_shard

    def _members(self, partition: int) -> pa.Table:
        parts = []
        for s in range(self.shards):
            path = os.path.join(self.folder, "members", f"{s:05d}.parquet")
            try:
                parts.append(pq.read_table(path, filters=[("part", "=", partition)], schema=MEMBER_SCHEMA))
            except (pa.ArrowInvalid, OSError) as e:
                raise CorruptIntermediate(f"{path}: unreadable component members ({e})") from None
        return pa.concat_tables(parts).sort_by([("label", "ascending"), ("node", "ascending")]) if parts else MEMBER_SCHEMA.empty_table()

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        t = self._members(rank)
        n = t.num_rows
        nodes, component = t["node"].to_numpy(), t["label"].to_numpy()
        ids = np.array(t["id"].to_pylist(), dtype=object)
        id_rank = np.unique(ids.astype(str), return_inverse=True)[1] if n else np.empty(0, np.int64)
        columns = {"quality": -t["quality"].fill_null(-np.inf).to_numpy(), "length": -t["length"].to_numpy(),
                   "source_priority": t["source_priority"].to_numpy(), "earliest": t["position"].to_numpy(), "id": id_rank}
        new = (nodes >> np.uint64(32)) >= np.uint64(self.first_new_shard)
        preferred = np.lexsort([columns[c] for c in reversed(self.keeper)] + [new, component])
        signatures = SignatureRows(self.folder, self.num_perm) if self.similarity is not None else None
        keeper, similarity, rounds = verified_keepers(component, preferred, lambda pos: signatures(nodes[pos]), self.similarity)
        # a verified cluster is a keeper and the members it removes; a keeper left alone is no cluster
        _, cluster_index, size = np.unique(keeper, return_inverse=True, return_counts=True)
        in_cluster = size[cluster_index] > 1
        removed = keeper != np.arange(n)
        components = len(np.unique(component))
        self.stat_update("lsh_components", value=components)
        self.stat_update("lsh_members", value=n)
        self.stat_update("clusters", value=int((~removed & in_cluster).sum()))
        self.stat_update("to_remove", value=int((removed & new).sum()))
        self.stat_update("split_off_by_verification", value=int(n - components - removed.sum()))
        self.stat_update("verification_rounds", value=rounds)
        sel = np.nonzero(in_cluster & new)[0]
        sel = sel[np.argsort(nodes[sel])]
        table = pa.table({"node": nodes[sel], "cluster": nodes[keeper[sel]].astype(np.int64), "size": size[cluster_index[sel]].astype(np.int64),
                          "keep": ~removed[sel], "keeper": ids[keeper[sel]].tolist(),
                          "similarity": similarity[sel] if self.similarity is not None else pa.nulls(len(sel), pa.float32())},
                         schema=DECISION_SCHEMA)
        os.makedirs(os.path.join(self.folder, "decisions"), exist_ok=True)
        pq.write_table(table, os.path.join(self.folder, "decisions", f"{rank:05d}.parquet"), row_group_size=65536)
        return
        yield


def shard_decisions(folder: str, shard: int, partitions: int) -> dict[int, dict]:
    """The decisions for the members of one shard, by document index, from every partition's file."""
    lo, hi = shard << 32, (shard + 1) << 32
    out = {}
    for p in range(partitions):
        path = os.path.join(folder, "decisions", f"{p:05d}.parquet")
        try:
            rows = pq.read_table(path, filters=[("node", ">=", lo), ("node", "<", hi)], schema=DECISION_SCHEMA).to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            raise CorruptIntermediate(f"{path}: unreadable cluster decisions ({e})") from None
        out.update({r["node"] & 0xFFFFFFFF: r for r in rows})
    return out


class ClusterMarker(PipelineStep):
    name = "🎯 MinHash duplicate marker"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, partitions: int, shard_offset: int = 0):
        super().__init__()
        self.folder, self.partitions, self.shard_offset = folder, partitions, shard_offset

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        decisions = shard_decisions(self.folder, rank + self.shard_offset, self.partitions)
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
