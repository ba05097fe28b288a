"""Peak memory per task of the MinHash clustering steps versus corpus size and partitions, up to 1M+
documents built from real text.

    .venv/bin/python bench/dedup_cluster_memory.py --sizes 300000 --duplicates 100000 --partitions 1 4 16
    .venv/bin/python bench/dedup_cluster_memory.py --sizes 100000 300000 1000000 --duplicates 20000 --partitions 8

Documents: four sentences drawn at random from real text (Shakespeare, pydoc topics, sympy and stdlib
docstrings); ``--duplicates`` of them get a copy with one word changed. Band keys are computed by
``MinhashSignatures`` in two worker processes (two shards). Then every task of every clustering step (band
components, the components rounds, labels, member attributes, keepers) runs in a process forked from this
one after the imports; its peak RSS above its RSS at the start (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) is recorded, and the largest task of each step reported. Partitions = 1 is the
single cluster task of before (one process holding every edge and every member).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import random
import shutil
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


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _task(step, rank: int, tasks: int, out) -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS: the peak from here on is this task's
    base, t = _status_kb("VmRSS"), time.perf_counter()
    list(step.run(None, rank, tasks))
    out.put(((_status_kb("VmHWM") - base) / 1024, time.perf_counter() - t))


def measure(step, tasks: int) -> tuple[float, float]:
    """Every task of ``step`` in a fresh fork, one at a time: (largest peak MiB, total seconds)."""
    ctx = multiprocessing.get_context("fork")
    peak, secs = 0.0, 0.0
    for rank in range(tasks):
        q = ctx.Queue()
        p = ctx.Process(target=_task, args=(step, rank, tasks, q))
        p.start()
        mb, s = q.get()
        p.join()
        if p.exitcode:
            raise RuntimeError(f"{type(step).__name__} task {rank} failed")
        peak, secs = max(peak, mb), secs + s
    return peak, secs


def main() -> None:
    import pyarrow.parquet as pq

    from dedup.components import ComponentLabels, StarRound, changed_in
    from dedup.fuzzy import BandComponents, band_key_ranges
    from dedup.keepers import ClusterKeepers, MemberAttributes

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[300000])
    ap.add_argument("--duplicates", type=int, default=100000)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    cols = ("band", "rounds", "labels", "members", "keepers")
    print(f"{'documents':>10s} {'partitions':>10s} " + " ".join(f"{c + ' MiB':>12s}" for c in cols) + f" {'rounds':>6s} {'cluster s':>9s} {'removed':>8s}")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            with Pool(2) as pool:
                total = sum(pool.map(_signatures, [(folder, n, args.duplicates, s, 2) for s in range(2)]))
            for parts in args.partitions:
                for sub in ("edges", "rounds", "labels", "members", "decisions"):
                    if os.path.exists(os.path.join(folder, sub)):
                        shutil.rmtree(os.path.join(folder, sub))
                peaks, secs = {}, 0.0
                ranges = band_key_ranges(parts)
                peaks["band"], s = measure(BandComponents(folder, parts, ranges), BANDS * ranges)
                secs += s
                rnd, quiet, peaks["rounds"] = 0, 0, 0.0
                while quiet < 2:
                    mb, s = measure(StarRound(folder, rnd, parts, BANDS * ranges), parts)
                    peaks["rounds"], secs = max(peaks["rounds"], mb), secs + s
                    quiet = quiet + 1 if changed_in(folder, rnd, parts) == 0 else 0
                    rnd += 1
                for name, step, tasks in (("labels", ComponentLabels(folder, rnd - 1, parts), parts), ("members", MemberAttributes(folder, parts), 2),
                                          ("keepers", ClusterKeepers(folder, 2, parts, ["quality", "length", "source_priority", "id"], BANDS * ROWS, 0.6), parts)):
                    peaks[name], s = measure(step, tasks)
                    secs += s
                removed = sum((~pq.read_table(os.path.join(folder, "decisions", f"{p:05d}.parquet"))["keep"].to_numpy()).sum() for p in range(parts))
                print(f"{total:10d} {parts:10d} " + " ".join(f"{peaks[c]:12.1f}" for c in cols) + f" {rnd:6d} {secs:9.2f} {removed:8d}", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
