"""Connected components of the LSH graph in rounds of parallel tasks, each holding one partition of the edges.

The band tasks leave, per band, star edges joining each duplicate document to its band component; the union
of those edges over the bands is a graph whose components are the LSH clusters. One task holding every edge
(datatrove's single cluster task, a 900 GB RAM job in its own example) stops scaling first, so the union is
found with the large-star / small-star rounds of Kiveris et al., "Connected Components in MapReduce and
Beyond" (SoCC 2014): nodes are hash-partitioned into ``partitions``; a round's task reads the edges keyed by
its partition's nodes, and writes new edges keyed by either endpoint, so a task holds 2/partitions of the
edges (the edge count never grows). Large-star links each node's larger neighbours to the smallest node of
its neighbourhood; small-star links each node and its smaller neighbours to the smallest of them. Two rounds
in a row that change nothing leave every component a star around its smallest node; the rounds needed grow
as log^2 of the component size, and LSH graphs (unions of stars) settle in a few.

Nodes are the documents' ids (shard << 32 | index) put through a bijective 64-bit mix (splitmix64's
finaliser) before the rounds: the partition is the mixed id's remainder, and the component's centre (its
smallest mixed id) is a random member, so no partition collects the components of the first shards. No
library does this over files with bounded memory (scipy's ``connected_components`` is one process holding
every edge; a distributed graph library would be a new cluster to run), so it is written here, in numpy.

Files (checked arrays, so a truncated one fails where it is read, named):
  ``edges/<t>/<p>.bin``: round 0's input, written by band task t (band t // partitions, key range
  t % partitions): directed (node, neighbour) pairs, node in partition p, both directions of each edge.
  ``rounds/<r>/<src>/<p>.bin``: round r's output from task src, for partition p; ``rounds/<r>/changed/<src>.bin``:
  how many of src's edges the round changed.
  ``labels/<p>.bin``: (document node, component label) for the documents of partition p, sorted by node
  (so by shard): the label is the centre's mixed id.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from dedup.checked_arrays import read_checked, write_checked

EDGE = np.dtype([("a", "<u8"), ("b", "<u8")])
COUNT = np.dtype("<u8")
MAX_ROUNDS = 200  # 2 log^2 n for a 2^40-document component is ~3,200; real LSH graphs settle in under 10

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_M1_INV, _M2_INV = np.uint64(pow(0xBF58476D1CE4E5B9, -1, 2**64)), np.uint64(pow(0x94D049BB133111EB, -1, 2**64))


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads consecutive ids over the whole range."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, np.uint64)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def unmix(z: np.ndarray) -> np.ndarray:
    """The inverse of ``mix`` (each xor-shift undone by repeating it, each product by the modular inverse)."""
    with np.errstate(over="ignore"):
        z = np.asarray(z, np.uint64)
        z = z ^ (z >> np.uint64(31)) ^ (z >> np.uint64(62))
        z = z * _M2_INV
        z = z ^ (z >> np.uint64(27)) ^ (z >> np.uint64(54))
        z = z * _M1_INV
        return z ^ (z >> np.uint64(30)) ^ (z >> np.uint64(60))


def partition_of(mixed: np.ndarray, partitions: int) -> np.ndarray:
    return (mixed % np.uint64(partitions)).astype(np.int64)


def write_partitioned(folder: str, src: int, partitions: int, a: np.ndarray, b: np.ndarray) -> None:
    """Undirected edges a-b (mixed ids) as directed pairs keyed by each endpoint, one sorted file of distinct
    pairs per partition of the key: ``folder/<src>/<p>.bin`` (every partition's file is written, even empty,
    so a reader can tell a lost file from a partition with no edges)."""
    pairs = np.empty(2 * len(a), EDGE)
    pairs["a"], pairs["b"] = np.concatenate([a, b]), np.concatenate([b, a])
    pairs = np.unique(pairs[pairs["a"] != pairs["b"]])  # sorted by (a, b)
    part = partition_of(pairs["a"], partitions)
    order = np.argsort(part, kind="stable")
    pairs, part = pairs[order], part[order]
    bounds = np.searchsorted(part, np.arange(partitions + 1))
    for p in range(partitions):
        write_checked(os.path.join(folder, f"{src:05d}", f"{p:05d}.bin"), pairs[bounds[p] : bounds[p + 1]])


def _neighbourhoods(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct directed pairs sorted by (node, neighbour), and each pair's group start (first pair of its node)."""
    pairs = np.unique(pairs)
    a, b = pairs["a"], pairs["b"]
    first = np.ones(len(a), bool)
    first[1:] = a[1:] != a[:-1]
    return a, b, np.nonzero(first)[0][np.cumsum(first) - 1]


def large_star(a: np.ndarray, b: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Each neighbour v > u of node u is joined to m(u), the smallest of u and its neighbours. Every edge
    (u, v > u) maps to one edge, changed where m(u) < u."""
    m = np.minimum(a, b[start])  # neighbours ascend, so a group's first is its smallest
    larger = b > a
    return b[larger], m[larger], int((larger & (m < a)).sum())


def small_star(a: np.ndarray, b: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Node u and its smaller neighbours N are all joined to min(N). Changed where u has two or more smaller
    neighbours (with one, the edge out is the edge in)."""
    smaller = b < a
    a, b = a[smaller], b[smaller]
    first = np.ones(len(a), bool)
    first[1:] = a[1:] != a[:-1]
    group = np.cumsum(first) - 1
    m = b[first][group]
    counts = np.bincount(group) if len(group) else np.empty(0, np.int64)
    # the neighbours other than the minimum, then each node itself
    rest = b != m
    return np.concatenate([b[rest], a[first]]), np.concatenate([m[rest], m[first]]), int((counts >= 2).sum())


def _read_edges(paths: list[str]) -> np.ndarray:
    parts = [read_checked(p, EDGE) for p in paths]
    return np.concatenate(parts) if parts else np.empty(0, EDGE)


def round_output(folder: str, rnd: int, partition: int, partitions: int) -> np.ndarray:
    """The edges of ``partition`` that round ``rnd``'s tasks wrote."""
    return _read_edges([os.path.join(folder, "rounds", f"{rnd:03d}", f"{src:05d}", f"{partition:05d}.bin") for src in range(partitions)])


def round_input(folder: str, rnd: int, partition: int, partitions: int, band_tasks: int) -> np.ndarray:
    """Round 0 reads the ``band_tasks`` band tasks' edges, every later round the previous round's output."""
    if rnd == 0:
        return _read_edges([os.path.join(folder, "edges", f"{src:05d}", f"{partition:05d}.bin") for src in range(band_tasks)])
    return round_output(folder, rnd - 1, partition, partitions)


class StarRound(PipelineStep):
    """Task ``rank`` runs round ``rnd`` (even: large-star, odd: small-star) on partition ``rank``."""

    name = "🎯 LSH components round"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, rnd: int, partitions: int, band_tasks: int):
        super().__init__()
        self.folder, self.rnd, self.partitions, self.band_tasks = folder, rnd, partitions, band_tasks

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        a, b, start = _neighbourhoods(round_input(self.folder, self.rnd, rank, self.partitions, self.band_tasks))
        x, y, changed = (large_star if self.rnd % 2 == 0 else small_star)(a, b, start)
        out = os.path.join(self.folder, "rounds", f"{self.rnd:03d}")
        write_partitioned(out, rank, self.partitions, x, y)
        write_checked(os.path.join(out, "changed", f"{rank:05d}.bin"), np.array([changed], COUNT))
        self.stat_update("edges_in", value=len(a))
        self.stat_update("changed", value=changed)
        return
        yield


def changed_in(folder: str, rnd: int, partitions: int) -> int:
    return int(sum(read_checked(os.path.join(folder, "rounds", f"{rnd:03d}", "changed", f"{p:05d}.bin"), COUNT)[0]
                   for p in range(partitions)))


def run_rounds(folder: str, partitions: int, run_round: Callable[[int], None]) -> int:
    """Run rounds until two in a row change nothing; returns the last round (its output is the star forest).
    ``run_round(r)`` runs round r's ``partitions`` tasks (on whichever executor); a resumed run finds the
    finished rounds' files and recounts the same changes, so it stops at the same round."""
    quiet = 0
    for rnd in range(MAX_ROUNDS):
        run_round(rnd)
        quiet = quiet + 1 if changed_in(folder, rnd, partitions) == 0 else 0
        if quiet == 2:
            return rnd
    raise RuntimeError(f"{folder}: the LSH components did not settle in {MAX_ROUNDS} rounds")


class ComponentLabels(PipelineStep):
    """Task ``rank``: the component label of every document of partition ``rank``, from the settled star
    forest (a leaf's one neighbour is its centre; a centre is its own label)."""

    name = "🎯 LSH component labels"
    type = "🫂 - DEDUP"

    def __init__(self, folder: str, last_round: int, partitions: int):
        super().__init__()
        self.folder, self.last_round, self.partitions = folder, last_round, partitions

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        a, b, start = _neighbourhoods(round_output(self.folder, self.last_round, rank, self.partitions))
        first = np.zeros(len(a), bool)
        first[np.unique(start)] = True
        out = np.empty(int(first.sum()), EDGE)
        out["a"], out["b"] = unmix(a[first]), np.minimum(a[first], b[first])
        out = np.sort(out, order=["a"])
        self.stat_update("documents", value=len(out))
        self.stat_update("centres", value=int((out["b"] == mix(out["a"])).sum()))
        write_checked(os.path.join(self.folder, "labels", f"{rank:05d}.bin"), out)
        return
        yield
