"""What adding data to a finished run costs (``ruyi2 add``) against rerunning everything, on the shipped 800B
recipe's data flow.

    .venv/bin/python bench/increment_cost.py --mb 100 --add-fraction 0.1
    .venv/bin/python bench/increment_cost.py --mb 100 --base-run /tmp/ruyi2_scale/100MB-2w   # a finished scale run as the base

The base corpus is ``bench/scale_corpus.py``'s at ``--mb`` (seed 0); the addition is another corpus of
that layout at ``--add-fraction`` of the size (seed 1: other recombined documents, and code files drawn in
another order, so some of them are files the base already has: exact duplicates for the increment to
remove). Three runs, each the user's command under the meter of ``bench/scale_run.py`` (CPU seconds of
every process it started, the largest process's peak RSS): the base run (``ruyi2 run --to mix``), then
``ruyi2 add`` of every source folder of the addition, then a full run over base and addition together.
``--base-run`` takes a finished ``bench/scale_run.py`` run of the same corpus as the base instead (its data
stages are the same; it is copied, and the add runs on the copy).
The mixture's curriculum tokens are scaled to the corpus (800B -> the corpus's tokens) with
``over_cap: redistribute``, so that the plan is feasible at this size; the data stages are the recipe's.
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
RUYI2 = os.path.join(os.path.dirname(sys.executable), "ruyi2")


def main() -> None:
    import yaml

    from bench.scale_corpus import build_scaled_corpus
    from bench.scale_run import metered, recipe_for
    from tests.recipe_corpus import train_classifiers

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--add-fraction", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--corpus-root", default=os.path.join(ROOT, ".data", "scale"))
    ap.add_argument("--run-root", default="/tmp/ruyi2_increment")
    ap.add_argument("--base-run", help="a finished scale_run.py run directory of this corpus, used as the base run")
    args = ap.parse_args()
    base = build_scaled_corpus(os.path.join(args.corpus_root, f"{args.mb:g}MB"), args.mb)
    extra_mb = args.mb * args.add_fraction
    extra = build_scaled_corpus(os.path.join(args.corpus_root, f"{extra_mb:g}MB-seed1"), extra_mb, seed=1)
    models_dir = os.path.join(args.corpus_root, "models")
    models = {"en": os.path.join(models_dir, "quality_en", "model.bin"), "zh": os.path.join(models_dir, "quality_zh", "model.bin")}
    if not all(os.path.exists(m) for m in models.values()):
        models = train_classifiers(models_dir, base["train_zh"])
    subprocess.run(["rm", "-rf", args.run_root], check=True)

    def recipe(run_dir: str, corpora: list[dict]) -> str:
        data = recipe_for(corpora[0], models, run_dir, args.tasks, args.workers)
        for s in data["sources"]:
            s["paths"] = [c["paths"][s["name"]] for c in corpora]
        tokens = sum(c["bytes"][n] for c in corpora for n in c["bytes"]) / 8  # ~4 bytes a token, about half kept
        for st in data["mixture"]["stages"]:
            st["tokens"] = max(1000, round(st["tokens"] * tokens / 800e9))
        data["mixture"]["over_cap"] = "redistribute"
        from pipeline.core.layout import claim_run_dir

        claim_run_dir(run_dir)  # marked before the recipe is written in: ruyi2 refuses an unmarked folder with files
        path = os.path.join(run_dir, "recipe.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        return path

    base_recipe = recipe(os.path.join(args.run_root, "base"), [base])
    full_recipe = recipe(os.path.join(args.run_root, "full"), [base, extra])
    added = [f"{name}={folder}" for name, folder in extra["paths"].items()]
    if args.base_run:
        for stage in ("filter", "dedup", "decontam", "tokenize"):
            subprocess.run(["cp", "-a", os.path.join(args.base_run, stage), os.path.join(args.run_root, "base", stage)], check=True)
        # the copied token prefixes name the scale run's folder: point them at the copy
        for path in glob.glob(os.path.join(args.run_root, "base", "tokenize", "stats.json")):
            with open(path) as f:
                text = f.read().replace(os.path.abspath(args.base_run), os.path.join(args.run_root, "base"))
            with open(path, "w") as f:
                f.write(text)
    runs = {
        "base run": metered([RUYI2, "mix" if args.base_run else "run", base_recipe, *([] if args.base_run else ["--to", "mix"])],
                            os.path.join(args.run_root, "base.log")),
        "ruyi2 add": metered([RUYI2, "add", base_recipe, *added], os.path.join(args.run_root, "add.log")),
        "full rerun": metered([RUYI2, "run", full_recipe, "--to", "mix"], os.path.join(args.run_root, "full.log")),
    }
    base_mb, extra_mb_real = sum(base["bytes"].values()) / 1e6, sum(extra["bytes"].values()) / 1e6
    print(f"base {base_mb:.1f} MB, addition {extra_mb_real:.1f} MB ({extra_mb_real / base_mb:.1%}), {args.tasks} tasks, {args.workers} workers")
    print(f"{'run':>12s} {'wall s':>8s} {'cpu s':>8s} {'max RSS MiB':>11s}")
    for name, r in runs.items():
        print(f"{name:>12s} {r['wall']:8.1f} {r['cpu']:8.1f} {r['max_rss_mib']:11.1f}")
    add, full = runs["ruyi2 add"], runs["full rerun"]
    print(f"add / full rerun: {add['cpu'] / full['cpu']:.3f} of the CPU seconds, {add['wall'] / full['wall']:.3f} of the wall time")
    inc = os.path.join(args.run_root, "base", "increments", "001")
    for stage in ("filter", "dedup", "decontam"):
        with open(os.path.join(inc, stage, "stats.json")) as f:
            stats = json.load(f)
        reasons: dict[str, int] = {}
        for src in stats["sources"].values():
            for reason, n in src["removed"]["reasons"].items():
                reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + n
        print(f"  increment {stage}: {stats['totals']['in']['docs']:,} documents in, removed {dict(sorted(reasons.items()))}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
