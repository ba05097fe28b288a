"""`ruyi2 eval` scoring speed on one trained run, three ways over the same items, tokenizer, batches and
threads, each warmed up first:

- megatron: the run's megatron-core model, only the scored positions reach the LM heads (ours);
- hf: the run's Hugging Face export through transformers, heads over the last positions of the batch
  (``logits_to_keep``);
- hf-full: the same export with the heads over every position, then sliced, as lm-evaluation-harness's
  Hugging Face wrapper computes them (the peer's method, on our items).

The three must agree on every prediction; the figure is items per second and CPU-seconds per item.

    .venv/bin/ruyi2 demo --run-dir /tmp/full_demo
    .venv/bin/python bench/eval_scoring.py --run-dir /tmp/full_demo --limit 40
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--tasks", default="arc_challenge,hellaswag,mmlu")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from train_entry.distributed import DistributedContext
    from train_entry.eval_scoring import HFScorer
    from train_entry.evaluate import EvalOptions, _hf_scorer, _run_scorer, evaluate_items, load_items

    class FullLogitsScorer(HFScorer):
        @torch.no_grad()
        def logits(self, tokens, exits, positions):
            out = {}
            for e in exits:
                lg = self.model(input_ids=tokens, use_cache=False, early_exit_point=e).logits  # every position
                out[e] = lg.gather(1, positions.unsqueeze(-1).expand(*positions.shape, lg.shape[-1]))
            return out

    torch.set_num_threads(args.threads)
    options = EvalOptions(tasks=tuple(args.tasks.split(",")), limit=args.limit)
    items = load_items(options)
    warm = EvalOptions(tasks=options.tasks, limit=2)
    warm_items = load_items(warm)
    n_items = sum(len(v) for v in items.values())
    export = tempfile.mkdtemp(prefix="eval_bench_")
    subprocess.run([sys.executable, "-m", "pipeline.cli", "export", args.run_dir, "--out", export, "--dtype", "float32"],
                   check=True, capture_output=True)
    results = {}
    with DistributedContext():
        mscorer, tok, eos, _ = _run_scorer(args.run_dir, False)
        hscorer, htok, heos, _ = _hf_scorer(export)
        fscorer = FullLogitsScorer(hscorer.model, hscorer.exits, hscorer.max_length, familial=True)
        for name, scorer in (("megatron", mscorer), ("hf", hscorer), ("hf-full", fscorer)):
            evaluate_items(scorer, tok, eos, warm_items, warm)
            t0, c0 = time.perf_counter(), _cpu()
            tasks, rows = evaluate_items(scorer, tok, eos, items, options)
            results[name] = (time.perf_counter() - t0, _cpu() - c0, rows, tasks)
    preds = {name: [r["prediction"] for r in rows] for name, (_, _, rows, _) in results.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}; python {platform.python_version()}")
    print(f"run {args.run_dir}: exits {list(mscorer.exits)}, context {mscorer.max_length}; {n_items} items "
          f"({args.tasks}, {args.limit} each), every exit scored")
    base = results["hf-full"][0]
    for name, (wall, cpu, _, _) in results.items():
        print(f"  {name:<9} wall {wall:7.2f} s  CPU {cpu:7.2f} s  {n_items / wall:7.2f} items/s  "
              f"{cpu / n_items:.3f} CPU s/item  {base / wall:.2f}x hf-full")
    agree = all(p == preds["hf-full"] for p in preds.values())
    print(f"  predictions identical across the three: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
