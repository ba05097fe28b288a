"""A larger mixture ablation on the full demo run (five real sources, five domains): `ruyi2 ablate` as a
user runs it, with more candidates and longer proxies than the CI test, then the figures BENCHMARKS.md
records: fit quality per exit and regressor (cross-validated Spearman and R² on held-out mixtures), the
proposal against the baselines over seeds, and the cost (proxy FLOPs, CPU-seconds, wall time).

    .venv/bin/ruyi2 demo --run-dir /tmp/full_demo          # once: the data stages and the base model
    .venv/bin/python bench/mixture_ablation.py --run-dir /tmp/full_demo --count 32 --steps 20

The peers are in the same run: the regressors (log-linear Data Mixing Laws, RegMix's linear regression, a
GP) against each other on the same runs, and the proposal against the token-proportional, uniform, UniMax
and recipe baselines on the same proxies, data files and seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a run of `ruyi2 demo` (its recipe, tokenize stage and base model)")
    ap.add_argument("--count", type=int, default=32, help="Dirichlet candidates besides the four baselines")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--seq-length", type=int, default=64)
    ap.add_argument("--concentration", type=float, default=1.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    from pipeline.ablate import ablate
    from pipeline.core.layout import RunLayout
    from pipeline.recipe import load_recipe

    src = os.path.join(args.run_dir, "demo_corpus", "recipe.yaml")
    data = yaml.safe_load(open(src))
    data["ablation"] = {
        "stage": "general", "categories": "domains",
        "candidates": {"count": args.count, "concentration": args.concentration, "seed": 0},
        "proxy": {"steps": args.steps, "micro_batch_size": args.micro_batch, "global_batch_size": args.micro_batch,
                  "seq_length": args.seq_length, "eval_samples": 16, "lr_schedule": "cosine", "threads": 1},
        "workers": args.workers, "validation": {"seeds": args.seeds},
    }
    path = os.path.join(args.run_dir, "demo_corpus", "ablate_bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    recipe = load_recipe(path)
    t0, c0 = time.perf_counter(), _cpu()
    summary = ablate(recipe, RunLayout(recipe.run_dir), resume=args.resume)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}")
    print(f"ablation of stage general over {summary['categories']}: {summary['compute']['runs']} proxy runs "
          f"({args.count} candidates + baselines, {len(summary['rejected'])} rejected by the planner), "
          f"{args.steps} steps x {args.micro_batch} x {args.seq_length} tokens each")
    print(f"wall {wall:.0f} s, CPU {cpu:.0f} s (driver and workers); proxy FLOPs {summary['compute']['proxy_flops']:.3e} = "
          f"{summary['compute']['fraction_of_target']:.1%} of the planned run")
    print("fit quality (5-fold CV on held-out mixtures): exit, model, Spearman, R²")
    for exit_name, models in summary["fit_quality"].items():
        for m, q in models.items():
            if m != "chosen":
                mark = " (chosen)" if m == models["chosen"] else ""
                print(f"  {exit_name}  {m + mark:<20} {_f(q['spearman'])}  {_f(q['r2'])}")
    print(f"target {summary['target_exit']} over {summary['target_weights']}")
    for name, stat in summary["mixtures"].items():
        v = summary["versus"].get(name)
        print(f"  {name:<20} {stat['mean']:.4f} ± {stat['ci95']:.4f}" +
              (f"   proposal − {name}: {v['mean']:+.4f} ± {v['ci95']:.4f} ({v['verdict']})" if v else ""))
    print(f"  predicted for the proposal: {summary['predicted']:.4f}")
    print("  proposal: " + json.dumps(summary["proposal"]) + "  prior: " + json.dumps({k: round(v, 4) for k, v in summary["prior"].items()}))
    return 0


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _f(v) -> str:
    return "  –  " if v is None else f"{v:+.3f}"


if __name__ == "__main__":
    sys.exit(main())
