"""A pipeline ablation of the shipped 800B recipe on a real mixed-quality corpus, run as a user runs it
(`ruyi2 run RECIPE --to tokenize`, then `ruyi2 ablate RECIPE`), with what BENCHMARKS.md records of it.

    .venv/bin/python bench/pipeline_ablation.py --mb 4 --seeds 3 --steps 40 --work /tmp/pipeline_ablation

The corpus is ``bench/scale_corpus.py``'s (web pages from spam and ham e-mail, package READMEs with their
boilerplate, near-duplicate and exact copies, garbled Chinese, code, TeX, books, Wikipedia passages, Chinese
manpages), the classifiers are trained as in the recipe's test, on text the corpus does not contain. Every arm
is scored on two evaluation sets kept apart from every arm's training data: CPython's standard-library
docstrings (the corpus has none) and SpamAssassin ham e-mails that neither the corpus nor the classifier uses.

Arms: raw, recipe, datatrove's FineWeb-style chain (on the English web source, the Gopher, C4 and FineWeb families
only, after the sanity rule; the other sources as the recipe filters them), dedup off, decontam off, and leave-one-out for the quality classifier, C4 and Gopher quality. The proxy is
the familial model's tiny preset (three exits) trained from scratch on the same number of tokens per arm.
Wall and CPU seconds of both commands come from the meter of ``bench/scale_run.py`` (every descendant reaped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FINEWEB_CHAIN = ("gopher_repetition", "gopher_quality", "c4", "fineweb")


def eval_sets(folder: str) -> list[dict]:
    from pipeline.demo import stdlib_docstrings
    from tests.recipe_corpus import _mails

    os.makedirs(folder, exist_ok=True)
    sets = {"stdlib_docs": stdlib_docstrings(400),
            # the classifier trains on the first 1,200 of easy-ham-1, the corpus reads other sets
            "ham_mail": _mails("easy-ham-1", 10_000)[1200:1700]}
    out = []
    for name, docs in sets.items():
        path = os.path.join(folder, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
        out.append({"name": name, "paths": [path]})
    return out


def ablation_section(web_sources: list[str], steps: int, seeds: int, sets: list[dict]) -> dict:
    from filters.config import RULE_ORDER

    # FineWeb's chain is an English web-page filter: those sources get it alone (after the sanity rule), the
    # others keep the recipe's rules (the chain on code, TeX or Chinese leaves almost nothing of them)
    off = [f for f in RULE_ORDER if f != "sanity" and f not in FINEWEB_CHAIN]
    chain = {"filter": {"per_source": {s: {f: {"enabled": False} for f in off} | {f: {"enabled": True} for f in FINEWEB_CHAIN}
                                       for s in web_sources}}}
    return {
        "kind": "pipeline", "stage": "general", "leave_one_out": ["classifier", "c4", "gopher_quality"],
        "variants": [{"name": "fineweb-chain", "patch": chain}, {"name": "dedup-off", "patch": {"dedup": {"enabled": False}}},
                     {"name": "decontam-off", "patch": {"decontam": {"enabled": False}}}],
        "eval_sets": sets,
        "proxy": {"model": {"preset": "tiny", "exits": [1, 2, 3]}, "init_from": None, "seq_length": 128,
                  "micro_batch_size": 4, "global_batch_size": 4, "steps": steps, "precision": "fp32",
                  "distributed_optimizer": False, "recompute": "none", "tensor_parallel": 1, "pipeline_parallel": 1,
                  "virtual_pipeline_parallel": 1, "pipeline_balance": "even", "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": max(1, steps // 10), "lr_schedule": "cosine", "lr_anneal_stage": None,
                  "save_interval": 0, "eval_samples": 32, "threads": 1},
        "validation": {"seeds": seeds}, "workers": 2,
    }


def main() -> None:
    import yaml

    from bench.scale_corpus import build_scaled_corpus
    from bench.scale_run import RUYI2, metered, recipe_for
    from pipeline.core.layout import claim_run_dir
    from tests.recipe_corpus import train_classifiers

    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--work", default="/tmp/pipeline_ablation")
    ap.add_argument("--resume", action="store_true", help="keep the finished arms and proxies of an earlier run")
    args = ap.parse_args()
    corpus = build_scaled_corpus(os.path.join(args.work, "corpus"), args.mb)
    models_dir = os.path.join(args.work, "models")
    models = {"en": os.path.join(models_dir, "quality_en", "model.bin"), "zh": os.path.join(models_dir, "quality_zh", "model.bin")}
    if not all(os.path.exists(m) for m in models.values()):
        models = train_classifiers(models_dir, corpus["train_zh"])
    run_dir = os.path.join(args.work, "run")
    claim_run_dir(run_dir)
    data = recipe_for(corpus, models, run_dir, tasks=2, workers=2)
    # FineWeb's chain is for English web pages (FineWeb-2 has other rules per language)
    data["ablation"] = ablation_section([s["name"] for s in data["sources"] if s["domain"] == "web" and s["language"] == "en"],
                                        args.steps, args.seeds,
                                        eval_sets(os.path.join(args.work, "eval")))
    path = os.path.join(args.work, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
    flow = metered([RUYI2, "run", path, "--to", "tokenize", *(["--resume"] if args.resume else [])],
                   os.path.join(args.work, "run.log"))
    ablate = metered([RUYI2, "ablate", path, "--resume" if args.resume else "--restart"], os.path.join(args.work, "ablate.log"))
    with open(os.path.join(run_dir, "ablate", "summary.json")) as f:
        s = json.load(f)
    e = s["target_exit"]
    print(f"corpus {sum(corpus['bytes'].values()) / 1e6:.1f} MB; recipe through tokenize: wall {flow['wall']:.0f} s, "
          f"CPU {flow['cpu']:.0f} s; ablate: wall {ablate['wall']:.0f} s, CPU {ablate['cpu']:.0f} s; "
          f"{len(s['arm_order'])} arms x {len(s['seeds'])} seeds, {s['proxy_tokens']:,} tokens per proxy")
    print("| arm | tokens kept | epochs (max) | " + " | ".join(f"loss {x}" for x in s["exits"]) + " | arm − recipe | arm − raw |")
    print("|---|---|---|" + "---|" * len(s["exits"]) + "---|---|")
    for a in s["arm_order"]:
        info = s["arms"][a]
        if not info["feasible"]:
            print(f"| {a} | {info['funnel']['tokenize']['tokens']:,} | infeasible |" + " |" * (len(s["exits"]) + 2))
            continue
        cells = [f"{s['outcomes'][x][a]['mean']:.4f} ± {s['outcomes'][x][a]['ci95']:.4f}" for x in s["exits"]]
        vs = [f"{d['mean']:+.4f} ± {d['ci95']:.4f} {d['verdict']}" if (d := s["versus"][e][a].get(ref)) else "" for ref in ("recipe", "raw")]
        print(f"| {a} | {info['funnel']['tokenize']['tokens']:,} | {info['epochs_max']:.2f} | " + " | ".join(cells + vs) + " |")
    print(f"best at {e}: {s['best']}; machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
