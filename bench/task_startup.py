"""Start-up cost per task: each data stage run on the same input with 1 task and with N tasks on one
worker (same documents, same I/O, one process at a time), and with N tasks on two workers. The difference
between N tasks and 1 task on one worker, divided by N - 1, is what a task costs beyond its documents
(reader and writer set-up, model and tokenizer loads, datatrove's per-task logging). Each run is the user's
command (`ruyi2 <stage> RECIPE`) in a fresh process; wall and CPU seconds (the command and its workers).

    .venv/bin/python bench/task_startup.py --tasks 8            # on the small demo corpus
    .venv/bin/python bench/task_startup.py --tasks 8 --full     # on the full demo corpus
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STAGES = ("filter", "dedup", "decontam", "tokenize")
RUYI2 = os.path.join(os.path.dirname(sys.executable), "ruyi2")


def _children_cpu() -> float:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # every waited-for descendant: the command and its workers
    return kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="the full demo corpus (default: the small one)")
    args = ap.parse_args()
    from pipeline.core.layout import RunLayout, claim_run_dir
    from pipeline.demo import prepare_demo
    from pipeline.recipe import dump_recipe, load_recipe
    from pipeline.runner import run_stages

    with tempfile.TemporaryDirectory() as work:
        base = load_recipe(prepare_demo(os.path.join(work, "demo"), "local", small=not args.full))
        reference = base.model_copy(deep=True)
        reference.run_dir = os.path.join(work, "reference")
        run_stages(reference, list(STAGES), quiet=True)  # every stage's input, made once
        docs = {}
        print(f"{'stage':10s} {'config':>18s} {'wall s':>8s} {'cpu s':>8s}")
        results = {}
        for name in STAGES:
            for tasks, workers in ((1, 1), (args.tasks, 1), (args.tasks, 2)):
                recipe = base.model_copy(deep=True)
                recipe.run_dir = os.path.join(work, f"{name}-{tasks}-{workers}")
                recipe.executor.tasks, recipe.executor.workers = tasks, workers
                previous = STAGES[STAGES.index(name) - 1] if name != "filter" else None
                claim_run_dir(recipe.run_dir)  # before anything is put in: ruyi2 refuses an unmarked folder with files
                if previous:  # the stage's input, copied from the reference run
                    shutil.copytree(RunLayout(reference.run_dir).stage(previous), RunLayout(recipe.run_dir).stage(previous))
                path = os.path.join(recipe.run_dir, "recipe.yaml")
                dump_recipe(recipe, path)
                # the user's command in a fresh process: no model, tokenizer or import is warm from a previous run
                t0, c0 = time.perf_counter(), _children_cpu()
                subprocess.run([RUYI2, name, path], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
                results[(name, tasks, workers)] = (wall, cpu)
                with open(RunLayout(recipe.run_dir).stats(name)) as f:
                    stats = json.load(f)
                docs[name] = sum(s.get("in", {}).get("docs", 0) for s in stats.get("sources", {}).values()) or None
                print(f"{name:10s} {f'{tasks} tasks, {workers} worker(s)':>18s} {wall:8.1f} {cpu:8.1f}")
        print(f"\nper extra task on one worker ((N tasks - 1 task) / (N - 1)), N = {args.tasks}:")
        for name in STAGES:
            w1, c1 = results[(name, 1, 1)]
            wn, cn = results[(name, args.tasks, 1)]
            w2, _ = results[(name, args.tasks, 2)]
            print(f"  {name:10s} {(wn - w1) / (args.tasks - 1):6.2f} s wall, {(cn - c1) / (args.tasks - 1):6.2f} s cpu; "
                  f"{docs[name] or '?'} documents; two workers vs one at N tasks: {wn / w2:.2f}x")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
