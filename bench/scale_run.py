"""The data flow of the shipped 800B recipe at corpus scale: MB/s per core per stage and for the whole flow,
peak memory of the largest process, and one worker against two.

    .venv/bin/python bench/scale_run.py --mb 100 300 1000 --workers 2
    .venv/bin/python bench/scale_run.py --mb 300 --workers 1 2
    .venv/bin/python bench/scale_run.py --mb 1000 --workers 2 --stages dedup    # one stage again, on the earlier run's input
    .venv/bin/python bench/scale_run.py --mb 100 --stages dedup --set dedup.minhash.partitions=256
    .venv/bin/python bench/scale_run.py --mb 100 --stages filter --quantized-classifiers

The corpus is ``bench/scale_corpus.py``'s (built once per size under ``--corpus-root`` and reused), laid out
like the recipe's sources; the recipe is ``pipeline/recipes/ruyi2-800b.yaml`` with only where the data lives,
the classifier models (trained as in the recipe's test, on text the corpus does not contain) and the
executor changed. Each stage runs as the user runs it (``ruyi2 <stage> RECIPE``) in a fresh process under a
meter process that makes itself the child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``): datatrove's workers
come from a forkserver that the command never waits for, and as the meter's orphans they are reaped by it, so
its ``RUSAGE_CHILDREN`` holds every process's CPU seconds and the largest process's peak RSS, exactly.
Each task's own peak RSS comes from its stats (``pipeline/core/task_memory.py``) and is printed per pool
(a stage's steps run as several pools: dedup's exact, MinHash and substring passes), so the step that holds
the most is named.
MB/s per core = the stage's input text (the ``in`` bytes of its stats, for tokenize what decontam kept; the
corpus for the whole flow) /
CPU seconds of all its processes.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STAGES = ("filter", "dedup", "decontam", "tokenize")
RUYI2 = os.path.join(os.path.dirname(sys.executable), "ruyi2")

METER = r"""
import ctypes, json, os, resource, subprocess, sys, time
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphaned descendants come to us
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=open(os.environ["METER_LOG"], "w")).returncode
wall = time.perf_counter() - t
while True:  # reap every descendant (the forkserver and its workers outlive the command by a moment)
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": r.ru_utime + r.ru_stime, "max_rss_mib": r.ru_maxrss / 1024}))
"""


def apply_settings(data: dict, settings: list[str]) -> dict:
    """``KEY.PATH=YAML_VALUE`` settings applied to a recipe dict (e.g. ``dedup.minhash.partitions=256``)."""
    import yaml

    for item in settings:
        key, _, value = item.partition("=")
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    return data


def recipe_for(corpus: dict, models: dict, run_dir: str, tasks: int, workers: int) -> dict:
    import yaml

    with open(os.path.join(ROOT, "pipeline", "recipes", "ruyi2-800b.yaml")) as f:
        data = yaml.safe_load(f)
    data["run_dir"] = run_dir
    for s in data["sources"]:
        s["paths"] = [corpus["paths"][s["name"]]]
    for language, model in models.items():
        data["filter"]["per_language"][language]["classifier"]["model"] = model
    data["executor"] = {"kind": "local", "tasks": tasks, "workers": workers}
    return data


def task_peaks(stage_logs: str) -> dict[str, float]:
    """{pool: largest task peak RSS in MiB} from the stats every task records (``pipeline/core/task_memory.py``);
    a stage's pools each have a logs folder under the stage's (the stage's own is ".")."""
    from pipeline.core.task_memory import largest_task_rss

    pools = sorted({os.path.dirname(os.path.relpath(p, stage_logs)) or "." for p in glob.glob(os.path.join(stage_logs, "**", "stats"), recursive=True)})
    return {pool: peak for pool in pools if (peak := largest_task_rss(os.path.join(stage_logs, pool), recursive=False)) is not None}


def stage_tasks(stage_logs: str) -> list[dict]:
    """[{rank, peak_rss_mib, process_tasks_before}] of the stage's own pool, in rank order: whether a worker's
    peak climbs with the tasks its process ran before (memory kept between tasks) or stays put."""
    from pipeline.core.task_memory import STEP_NAME

    rows = []
    for path in sorted(glob.glob(os.path.join(stage_logs, "stats", "*.json"))):
        with open(path) as f:
            step = next((s for s in json.load(f) if s.get("name", "").endswith(STEP_NAME)), None)
        if step:
            stats = {k: v["total"] if isinstance(v, dict) else v for k, v in step["stats"].items()}
            rows.append({"rank": int(os.path.basename(path).split(".")[0]), **{k: stats.get(k) for k in ("peak_rss_mib", "process_tasks_before")}})
    return rows


def metered(args: list[str], log: str) -> dict:
    out = subprocess.run([sys.executable, "-c", METER, *args], capture_output=True, text=True, env=os.environ | {"METER_LOG": log})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise RuntimeError(f"{' '.join(args)} failed (exit {result['rc']}); see {log}")
    return result


def refresh_memory_table(rows: list[tuple[str, dict]], mb: float) -> None:
    """Each pool's largest task peak (MiB) in this run into the table Ray requests come from (pools this run did
    not measure keep their figure)."""
    import datetime

    from pipeline.core.atomic import write_json
    from pipeline.core.task_memory_requests import TABLE, table_name

    with open(TABLE) as f:
        table = json.load(f)
    seen: dict[str, int] = {}
    for stage, r in rows:
        for pool, peak in r["task_rss_mib"].items():
            name = table_name(stage, pool)
            table["peak_mib"][name] = max(round(peak), seen.get(name, 0))  # a pass's rounds: the largest
            seen[name] = table["peak_mib"][name]
    table["peak_mib"] = dict(sorted(table["peak_mib"].items()))
    table["measured"].append(f"{datetime.date.today()}: bench/scale_run.py --mb {mb:g} --refresh-memory-table, stages "
                             f"{' '.join(stage for stage, _ in rows)} ({platform.machine()}, {os.cpu_count()} cpus)")
    write_json(TABLE, table, indent=1)


def main() -> None:
    import yaml

    from bench.scale_corpus import build_scaled_corpus
    from pipeline.core.layout import claim_run_dir
    from tests.recipe_corpus import train_classifiers

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, nargs="+", default=[100])
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--tasks", default="8",
                    help="tasks per stage, or 'files': one per input file (fixed-size shards, so a task's input does not grow with the corpus)")
    ap.add_argument("--corpus-root", default=os.path.join(ROOT, ".data", "scale"))
    ap.add_argument("--run-root", default="/tmp/ruyi2_scale")
    ap.add_argument("--json", help="append each result as a JSON line here")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe settings on top of the 800B recipe's")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                    help="run only these stages, on the run directory an earlier full run left (their outputs are redone)")
    ap.add_argument("--refresh-memory-table", action="store_true",
                    help="write each pool's largest task peak of this run into pipeline/core/task_peaks.json "
                         "(what Ray tasks request)")
    ap.add_argument("--quantized-classifiers", action="store_true",
                    help="the two quality classifiers trained with `ruyi2 classifier train --quantize` (model.ftz)")
    args = ap.parse_args()
    print(f"{'MB':>6s} {'workers':>7s} {'stage':>9s} {'in MB':>8s} {'wall s':>8s} {'cpu s':>8s} {'MB/s/core':>9s} {'max RSS MiB':>11s}", flush=True)
    for mb in args.mb:
        corpus = build_scaled_corpus(os.path.join(args.corpus_root, f"{mb:g}MB"), mb)
        models_dir = os.path.join(args.corpus_root, "models-quantized" if args.quantized_classifiers else "models")
        name = "model.ftz" if args.quantized_classifiers else "model.bin"
        models = {"en": os.path.join(models_dir, "quality_en", name), "zh": os.path.join(models_dir, "quality_zh", name)}
        if not all(os.path.exists(m) for m in models.values()):
            models = train_classifiers(models_dir, corpus["train_zh"], quantize=args.quantized_classifiers)
        corpus_mb = sum(corpus["bytes"].values()) / 1e6
        tasks = sum(len(os.listdir(p)) for p in corpus["paths"].values()) if args.tasks == "files" else int(args.tasks)
        for workers in args.workers:
            run_dir = os.path.join(args.run_root, f"{mb:g}MB-{workers}w")
            if args.stages == list(STAGES):
                subprocess.run(["rm", "-rf", run_dir], check=True)
                os.makedirs(run_dir)
            else:  # the earlier stages' outputs are kept; the measured ones start from nothing
                subprocess.run(["rm", "-rf", *(os.path.join(run_dir, s) for s in args.stages)], check=True)
                os.makedirs(run_dir, exist_ok=True)
            claim_run_dir(run_dir)  # ruyi2 refuses an unmarked folder holding files (the recipe and logs written here)
            path = os.path.join(run_dir, "recipe.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(apply_settings(recipe_for(corpus, models, run_dir, tasks, workers), args.set), f, sort_keys=False)
            total = {"wall": 0.0, "cpu": 0.0, "max_rss_mib": 0.0}
            rows = []
            for stage in args.stages:
                r = metered([RUYI2, stage, path], os.path.join(run_dir, f"{stage}.log"))
                with open(os.path.join(run_dir, stage, "stats.json")) as f:
                    stats = json.load(f)
                r["task_rss_mib"] = task_peaks(os.path.join(run_dir, stage, "logs"))
                r["tasks"] = stage_tasks(os.path.join(run_dir, stage, "logs"))
                if stage == "tokenize":  # its stats count tokens; its input is what decontam kept
                    with open(os.path.join(run_dir, "decontam", "stats.json")) as f:
                        kept = sum(s["kept"]["bytes"] for s in json.load(f)["sources"].values()) / 1e6
                    r["in_mb"], r["tokens"] = kept, sum(s["tokens"] for s in stats["sources"].values())
                else:
                    r["in_mb"] = sum(s["in"]["bytes"] for s in stats["sources"].values()) / 1e6
                    r["kept_mb"] = sum(s["kept"]["bytes"] for s in stats["sources"].values()) / 1e6
                rows.append((stage, r))
                total = {"wall": total["wall"] + r["wall"], "cpu": total["cpu"] + r["cpu"], "max_rss_mib": max(total["max_rss_mib"], r["max_rss_mib"])}
                print(f"{mb:6g} {workers:7d} {stage:>9s} {r['in_mb']:8.1f} {r['wall']:8.1f} {r['cpu']:8.1f} {r['in_mb'] / r['cpu']:9.3f} {r['max_rss_mib']:11.1f}", flush=True)
                print("       largest task per pool (MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in r["task_rss_mib"].items()), flush=True)
            if args.stages == list(STAGES):
                print(f"{mb:6g} {workers:7d} {'flow':>9s} {corpus_mb:8.1f} {total['wall']:8.1f} {total['cpu']:8.1f} {corpus_mb / total['cpu']:9.3f} "
                      f"{total['max_rss_mib']:11.1f}", flush=True)
            if args.refresh_memory_table:
                refresh_memory_table(rows, mb)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"mb": mb, "corpus_mb": corpus_mb, "workers": workers, "tasks": tasks,
                                        "stages": dict(rows), "flow": total}) + "\n")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
