"""The LSH clusters found in rounds of partitioned tasks: the same components as one process holding every
edge (scipy), on graphs shaped like LSH unions and on the long paths that need the most rounds, with each
task holding its share of the edges; and the dedup decisions do not depend on the number of partitions."""

import copy
import random

import numpy as np
import pytest
from datatrove.data import Document
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from dedup.checked_arrays import read_checked
from dedup.components import EDGE, ComponentLabels, StarRound, mix, round_input, run_rounds, unmix, write_partitioned
from pipeline.core.documents import REMOVED_REASON
from pipeline.demo import shakespeare_scenes
from tests.test_dedup_fuzzy import edit, run_fuzzy


def test_mix_is_a_bijection_with_its_inverse():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.arange(1000, dtype=np.uint64), rng.integers(0, 2**63, 10000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)])
    assert np.array_equal(unmix(mix(x)), x)
    assert len(np.unique(mix(x))) == len(x)
    # consecutive ids of one shard spread evenly over partitions
    assert np.bincount((mix(np.arange(8000, dtype=np.uint64)) % np.uint64(8)).astype(int)).min() > 900


def components(folder, edges: list[tuple[np.ndarray, np.ndarray]], partitions: int) -> tuple[dict, int, list[int]]:
    """Run the rounds over per-band edge lists; returns ({node: label}, rounds, edges read per task in round 0)."""
    folder = str(folder)
    for band, (a, b) in enumerate(edges):
        write_partitioned(f"{folder}/edges", band, partitions, mix(a), mix(b))
    loads = [len(round_input(folder, 0, p, partitions, len(edges))) for p in range(partitions)]

    def run_round(r):
        for p in range(partitions):
            list(StarRound(folder, r, partitions, len(edges)).run(None, p, partitions))

    last = run_rounds(folder, partitions, run_round)
    labels = {}
    for p in range(partitions):
        list(ComponentLabels(folder, last, partitions).run(None, p, partitions))
        out = read_checked(f"{folder}/labels/{p:05d}.bin", EDGE)
        assert np.array_equal(out["a"], np.sort(out["a"]))  # sorted by node, so by shard
        labels.update(zip(out["a"].tolist(), out["b"].tolist()))
    return labels, last + 1, loads


def scipy_components(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """node -> smallest mixed id in its component, from one process holding every edge."""
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    graph = coo_matrix((np.ones(len(a)), (inv[: len(a)], inv[len(a) :])), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(graph, directed=False)
    centre = np.full(comp.max() + 1, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(centre, comp, mix(nodes))
    return dict(zip(nodes.tolist(), centre[comp].tolist()))


def node(shard, idx):
    return (np.asarray(shard, np.uint64) << np.uint64(32)) | np.asarray(idx, np.uint64)


def lsh_like_bands(rng: np.random.Generator, docs: int, bands: int, clusters: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per band, stars over random subsets of hidden clusters (as the band tasks write them): documents of one
    cluster meet in some bands only, so a cluster is joined only through the union of the bands."""
    member = rng.integers(0, clusters, docs)
    ids = node(rng.integers(0, 16, docs), np.arange(docs))
    out = []
    for _ in range(bands):
        a, b = [], []
        for c in range(clusters):
            m = ids[(member == c) & (rng.random(docs) < 0.5)]
            if len(m) > 1:
                a.append(m[m != m.min()])
                b.append(np.full(len(m) - 1, m.min(), np.uint64))
        out.append((np.concatenate(a), np.concatenate(b)))
    return out


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_rounds_find_the_same_components_as_one_process(tmp_path, partitions):
    rng = np.random.default_rng(partitions)
    bands = lsh_like_bands(rng, 3000, 12, 400)
    labels, rounds, loads = components(tmp_path, bands, partitions)
    a, b = (np.concatenate(x) for x in zip(*bands))
    assert labels == scipy_components(a, b)
    assert rounds <= 12
    # each task of round 0 reads about 2/partitions of the (directed, distinct) edges
    assert max(loads) <= 1.25 * sum(loads) / partitions


def test_a_long_path_in_scrambled_order_settles(tmp_path):
    # the worst case for label propagation (rounds ~ length); star rounds need ~log^2
    order = np.random.default_rng(1).permutation(5000).astype(np.uint64)
    path = node(0, order)
    labels, rounds, _ = components(tmp_path, [(path[:-1], path[1:])], 4)
    assert set(labels.values()) == {int(mix(path).min())} and len(labels) == 5000
    assert rounds < 60


def test_a_graph_with_no_edges_has_no_labels(tmp_path):
    labels, rounds, _ = components(tmp_path, [(np.empty(0, np.uint64), np.empty(0, np.uint64))], 3)
    assert labels == {} and rounds == 2


def test_decisions_do_not_depend_on_the_partitions(tmp_path):
    rng = random.Random(5)
    scenes = [s["text"] for s in shakespeare_scenes(120) if len(s["text"]) > 1500][:40]
    docs = []
    for i, text in enumerate(scenes):
        for j in range(rng.randrange(1, 5)):  # clusters of 1-4 copies, spread over three shards below
            docs.append(Document(id=f"s{i}/{j}", text=text if j == 0 else edit(text, rng, 0.02),
                                 metadata={"source": "s", "position": [0, len(docs)], "q": rng.random()}))
    rng.shuffle(docs)
    shards = [docs[k::3] for k in range(3)]
    outcome = []
    for p in (1, 2, 7):
        out = run_fuzzy(copy.deepcopy(shards), tmp_path / str(p), 20, 5, keeper=("quality", "earliest"), quality_key="q", similarity=0.6, partitions=p)
        outcome.append({d.id: (d.metadata.get(REMOVED_REASON), d.metadata.get("duplicate_of"), d.metadata.get("minhash_cluster_id"),
                               d.metadata.get("minhash_cluster_size")) for s in out for d in s})
    assert outcome[0] == outcome[1] == outcome[2]
    removed = [k for k, v in outcome[0].items() if v[0] == "minhash_duplicate"]
    assert len(removed) == len(docs) - len(scenes) and all(outcome[0][k][1].split("/")[0] == k.split("/")[0] for k in removed)
