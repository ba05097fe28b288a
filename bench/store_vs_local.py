"""The filter stage of the shipped 800B recipe reading its sources from object storage against the same files on
local disk: the scale corpus (``bench/scale_corpus.py``) with every source as ``.jsonl.zst`` (its JSONL and its
Parquet files rewritten, every column a key, rows in order), once on disk and once in a bucket of a local S3-compatible server (SeaweedFS's ``weed
mini`` on 127.0.0.1, tests/s3_server.py). The same recipe, executor, tasks and workers; only the sources' paths
(and ``storage``) differ. Each run is ``ruyi2 filter RECIPE`` metered like ``bench/scale_run.py`` (every
process's CPU seconds); the server's own CPU seconds are read from /proc apart. The two runs' filter outputs
must be byte-identical.

    .venv/bin/python bench/store_vs_local.py --mb 100 --workers 2 --repeats 2

The filter is the only stage that reads the sources; every later stage reads the run directory.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import os
import platform
import subprocess
import sys

import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def zst_copy(corpus: dict, folder: str) -> dict[str, str]:
    """Each source's folder with its files as .jsonl.zst (level 3): JSONL recompressed, Parquet rows as JSON lines."""
    import pyarrow.parquet as pq

    out = {}
    for name, src in corpus["paths"].items():
        dst = os.path.join(folder, name)
        os.makedirs(dst, exist_ok=True)
        for f in sorted(os.listdir(src)):
            stem = f.removesuffix(".jsonl.gz").removesuffix(".parquet")
            target = os.path.join(dst, stem + ".jsonl.zst")
            if os.path.exists(target):
                continue
            with open(target + ".tmp", "wb") as w, zstandard.ZstdCompressor(level=3).stream_writer(w) as z:
                if f.endswith(".jsonl.gz"):
                    with gzip.open(os.path.join(src, f), "rb") as r:
                        z.write(r.read())
                else:
                    for batch in pq.ParquetFile(os.path.join(src, f)).iter_batches():
                        z.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in batch.to_pylist()).encode())
            os.replace(target + ".tmp", target)
        out[name] = dst
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (/proc/PID/stat), in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    import yaml

    from bench.scale_corpus import build_scaled_corpus
    from bench.scale_run import RUYI2, metered, recipe_for
    from pipeline.core.layout import claim_run_dir
    from tests.recipe_corpus import train_classifiers
    from tests.s3_server import CREDENTIALS, ENDPOINT, S3Server

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each contender, interleaved")
    ap.add_argument("--corpus-root", default=os.path.join(ROOT, ".data", "scale"))
    ap.add_argument("--run-root", default="/tmp/ruyi2_store_vs_local")
    args = ap.parse_args()

    corpus = build_scaled_corpus(os.path.join(args.corpus_root, f"{args.mb:g}MB"), args.mb)
    models_dir = os.path.join(args.corpus_root, "models")
    models = {lang: os.path.join(models_dir, f"quality_{lang}", "model.bin") for lang in ("en", "zh")}
    if not all(os.path.exists(m) for m in models.values()):
        models = train_classifiers(models_dir, corpus["train_zh"])
    local = zst_copy(corpus, os.path.join(args.corpus_root, f"{args.mb:g}MB-zst"))
    stored_mb = sum(os.path.getsize(os.path.join(p, f)) for p in local.values() for f in os.listdir(p)) / 1e6
    subprocess.run(["rm", "-rf", args.run_root], check=True)
    os.environ.update(CREDENTIALS)
    server = S3Server(os.path.join(args.run_root, "weed"))
    server.start()
    try:
        fs = server.filesystem()
        fs.mkdir("corpus")
        for name, folder in local.items():
            fs.put(folder + "/", f"corpus/{name}/", recursive=True)

        def recipe(where: str, repeat: int) -> str:
            run_dir = os.path.join(args.run_root, f"{where}-{repeat}")
            claim_run_dir(run_dir)
            data = recipe_for({"paths": local}, models, run_dir, args.tasks, args.workers)
            for s in data["sources"]:
                s["format"] = "jsonl.zst"
                if where == "s3":
                    s["paths"] = [f"s3://corpus/{s['name']}"]
                    s["storage"] = {"endpoint_url": ENDPOINT}
            path = os.path.join(run_dir, "recipe.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(data, f, sort_keys=False)
            return path

        rows = []
        for repeat in range(args.repeats):
            for where in ("local", "s3"):
                path = recipe(where, repeat)
                server_before = cpu_seconds(server.proc.pid)
                r = metered([RUYI2, "filter", path], os.path.join(os.path.dirname(path), "filter.log"))
                r["server_cpu"] = cpu_seconds(server.proc.pid) - server_before
                rows.append((where, repeat, os.path.dirname(path), r))
                print(f"{where:>6s} run {repeat}: wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s, {corpus_mb(corpus) / r['cpu']:.3f} MB/s per core, "
                      f"server cpu {r['server_cpu']:.1f} s, max RSS {r['max_rss_mib']:.0f} MiB", flush=True)
        first = rows[0][2]
        for _, _, run_dir, _ in rows[1:]:
            diff = filecmp.dircmp(os.path.join(first, "filter", "output"), os.path.join(run_dir, "filter", "output"))
            same = not diff.left_only and not diff.right_only and all(
                filecmp.cmp(os.path.join(first, "filter", "output", f), os.path.join(run_dir, "filter", "output", f), shallow=False)
                for f in diff.common_files)
            if not same:
                raise SystemExit(f"filter outputs differ: {first} vs {run_dir}")
        for where in ("local", "s3"):
            mine = [r for w, _, _, r in rows if w == where]
            print(f"{where:>6s} best: wall {min(r['wall'] for r in mine):.1f} s, cpu {min(r['cpu'] for r in mine):.1f} s")
        print(f"corpus: {corpus_mb(corpus):.1f} MB of text, {stored_mb:.1f} MB as stored (.jsonl.zst + Parquet); "
              f"outputs byte-identical across all runs; machine: {platform.machine()}, {os.cpu_count()} cpus")
    finally:
        server.stop()


def corpus_mb(corpus: dict) -> float:
    return sum(corpus["bytes"].values()) / 1e6


if __name__ == "__main__":
    main()
