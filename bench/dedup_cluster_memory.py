"""Peak memory of the MinHash clustering steps versus corpus size, up to 1M+ documents built from real text.

    .venv/bin/python bench/dedup_cluster_memory.py --sizes 100000 300000 1000000 --duplicates 20000

Documents: four sentences drawn at random from real text (Shakespeare, pydoc topics, sympy and stdlib
docstrings); ``--duplicates`` of them get a copy with one word changed, the same number at every size, so
the corpus grows while the duplicates do not. Band keys are computed by ``MinhashSignatures`` in two worker
processes (two shards). Then, each in a fresh process, peak RSS (ru_maxrss) above the process's RSS after
imports: one ``BandComponents`` task (one band: reads that band's keys from every shard) and the
``ClusterKeepers`` task (the global union over the bands' star edges, the keeper choice and the verification of
members against their keeper from the stored signatures).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

BANDS, ROWS = 20, 5  # the default banding; the cluster task verifies at the default min_similarity


def corpus_sentences() -> list[str]:
    import re

    sys.path.insert(0, os.path.dirname(__file__))
    from dedup_quality_speed import real_documents

    text = " ".join(real_documents(100000, random.Random(0)))
    return sorted({s.strip() for s in re.split(r"[.!?\n]+", text) if len(s.split()) >= 6})


def shard_docs(sentences: list[str], n: int, dups: int, shard: int, shards: int, seed: int):
    """Document i: four real sentences drawn at random (two documents rarely share more than one)."""
    from datatrove.data import Document

    rng = random.Random(seed)
    picks = [[rng.randrange(len(sentences)) for _ in range(4)] for _ in range(n)]
    dup_of = set(rng.sample(range(n), dups))
    out = []
    for i in range(shard, n, shards):
        text = ". ".join(sentences[j] for j in picks[i]) + "."
        out.append(Document(id=f"d/{i}", text=text, metadata={"source": "s"}))
        if i in dup_of:
            w = text.split()
            w[rng.randrange(len(w))] = "changed"
            out.append(Document(id=f"d/{i}/copy", text=" ".join(w), metadata={"source": "s"}))
    return out


def _signatures(job):
    folder, n, dups, shard, shards = job
    from dedup.fuzzy import MinhashSignatures

    docs = shard_docs(corpus_sentences(), n, dups, shard, shards, seed=n)
    list(MinhashSignatures(folder, BANDS, ROWS, 5, 3, 1, {}).run(iter(docs), shard, shards))
    return len(docs)


CHILD = """
import resource, sys, time
from dedup.fuzzy import BandComponents, ClusterKeepers
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
folder, what = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if what == "band":
    list(BandComponents(folder).run(None, 0, {bands}))
else:
    list(ClusterKeepers(folder, {bands}, ["quality", "length", "source_priority", "id"], {rows}, 0.6).run(None, 0, 1))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, time.perf_counter() - t)
"""


def measure(folder: str, what: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(bands=BANDS, rows=ROWS), folder, what], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    kb, secs = out.stdout.split()[-2:]
    return int(kb) / 1024, float(secs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100000, 300000, 1000000])
    ap.add_argument("--duplicates", type=int, default=20000)
    args = ap.parse_args()
    print(f"{'documents':>10s} {'signatures s':>12s} {'band task MiB':>13s} {'band s':>7s} {'cluster task MiB':>16s} {'cluster s':>9s} {'in clusters':>11s}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            with Pool(2) as pool:
                total = sum(pool.map(_signatures, [(folder, n, args.duplicates, s, 2) for s in range(2)]))
            sig_s = time.perf_counter() - t0
            for b in range(1, BANDS):  # the other bands' edges, so the cluster task sees all of them
                subprocess.run([sys.executable, "-c", f"from dedup.fuzzy import BandComponents; list(BandComponents({folder!r}).run(None, {b}, {BANDS}))"],
                               check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            band_mb, band_s = measure(folder, "band")
            clus_mb, clus_s = measure(folder, "cluster")
            import pyarrow.parquet as pq

            decided = sum(pq.read_table(os.path.join(folder, "decisions", f)).num_rows for f in os.listdir(os.path.join(folder, "decisions")))
            print(f"{total:10d} {sig_s:12.1f} {band_mb:13.1f} {band_s:7.2f} {clus_mb:16.1f} {clus_s:9.2f} {decided:11d}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
