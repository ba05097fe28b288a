"""Decompose-after-Expansion end to end on a finished demo run, through the user's commands: a longer joint
run continued from the demo's base (`ruyi2 train`), DaE stage 1 from its checkpoint (`ruyi2 train` with
`train.init_from {format: mcore}` and `train.dae`), DaE stage 2 (`ruyi2 compress --ratio 0.4`, and on a
copy `--head-ratio 0.4` as well); then the four models (joint, after SBE, after compression of the blocks,
and of the blocks and the branch's LM head) are scored on the same held-out sequences of the run's last
curriculum stage, per exit, with their parameter counts.

    .venv/bin/ruyi2 demo --run-dir /tmp/full_demo
    .venv/bin/python bench/dae_compression.py --run-dir /tmp/full_demo --joint-steps 120 --sbe-steps 80
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUYI2 = os.path.join(os.path.dirname(sys.executable), "ruyi2")


def run_with(demo: str, root: str, train: dict) -> str:
    """A run directory holding the demo's mixture and a recipe whose ``train`` section is updated."""
    from pipeline.core.layout import claim_run_dir

    claim_run_dir(root)  # marked before files are copied in: ruyi2 refuses an unmarked folder that holds files
    shutil.copytree(os.path.join(demo, "mix"), os.path.join(root, "mix"), dirs_exist_ok=True)
    with open(os.path.join(demo, "recipe.yaml")) as f:
        recipe = yaml.safe_load(f)
    recipe["run_dir"] = root
    recipe["train"].update(train)
    path = os.path.join(root, "recipe.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)
    return path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def score(roots: dict[str, tuple[str, bool]], calibration: int, heldout: int, exit_: int) -> dict:
    """Held-out loss per exit and parameters of each model, on one set of batches (one process)."""
    from pipeline.core.layout import RunLayout
    from pipeline.recipe import load_recipe
    from train_entry.compress import _losses, heldout_batches
    from train_entry.distributed import DistributedContext
    from train_entry.run_model import checkpoint_dae_blocks, rebuild, run_checkpoint, trained_config

    out = {}
    first = next(iter(roots.values()))[0]
    recipe = load_recipe(os.path.join(first, "recipe.yaml"), check_inputs=False)
    with DistributedContext():
        _, held = heldout_batches(recipe, RunLayout(first), trained_config(first).vocab_size, calibration, heldout,
                                  os.path.join(first, "bench_dataset_cache"))
        for name, (root, compressed) in roots.items():
            fcfg = trained_config(root)
            checkpoint, ranks = run_checkpoint(root, compressed)
            model, _ = rebuild(fcfg, checkpoint, checkpoint_dae_blocks(checkpoint), ranks)
            model.eval()
            added = sum(p.numel() for branch in model.exits.values() for p in branch.blocks.parameters())
            head = sum(p.numel() for p in model.exits[str(exit_)].head.parameters())
            out[name] = {"loss": {f"exit{e}": v for e, v in _losses(model, held).items()},
                         "parameters": sum(p.numel() for p in model.parameters()), "dae_parameters": added,
                         "head_parameters": head}
    return {"heldout_sequences": sum(len(b["tokens"]) for b in held), "models": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True, help="a finished `ruyi2 demo` run")
    ap.add_argument("--work", default="/tmp/dae_bench")
    ap.add_argument("--joint-steps", type=int, default=120)
    ap.add_argument("--sbe-steps", type=int, default=80)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--sbe-lr", type=float, default=None, help="peak learning rate of the SBE run (default: the recipe's)")
    ap.add_argument("--exit", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--head-ratio", type=float, default=0.4, help="the second compression also takes this share of the branch's LM head")
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--heldout", type=int, default=64)
    args = ap.parse_args()
    demo = os.path.abspath(args.run_dir)
    shutil.rmtree(args.work, ignore_errors=True)
    joint, dae = os.path.join(args.work, "joint"), os.path.join(args.work, "dae")
    t_joint = timed([RUYI2, "train", run_with(demo, joint, {"steps": args.joint_steps})])
    sbe = {"steps": args.sbe_steps, "init_from": {"path": os.path.join(joint, "train", "checkpoint"), "format": "mcore"},
           "dae": {"enabled": True, "exit": args.exit, "blocks": args.blocks}}
    if args.sbe_lr:
        sbe.update(lr=args.sbe_lr, min_lr=args.sbe_lr / 10)
    t_sbe = timed([RUYI2, "train", run_with(demo, dae, sbe)])
    # DaE stage 2 twice on copies of the SBE run: the blocks only, and the blocks with the branch's LM head
    heads = os.path.join(args.work, "dae_heads")
    shutil.copytree(dae, heads)
    compress_cmd = [RUYI2, "compress", "--ratio", str(args.ratio), "--calibration", str(args.calibration),
                    "--heldout", str(args.heldout)]
    t_compress = timed([*compress_cmd, dae])
    timed([*compress_cmd, heads, "--head-ratio", str(args.head_ratio)])
    with open(os.path.join(dae, "compress", "stats.json")) as f:
        compress = json.load(f)
    scored = score({"joint": (joint, False), "after SBE": (dae, False), "after compression": (dae, True),
                    f"+ head at {args.head_ratio}": (heads, True)}, args.calibration, args.heldout, args.exit)
    models = scored["models"]
    exits = list(models["joint"]["loss"])
    print(f"demo run {demo}: joint {args.joint_steps} steps ({t_joint:.0f} s), SBE {args.blocks} blocks after exit "
          f"{args.exit} for {args.sbe_steps} steps ({t_sbe:.0f} s), compress ratio {args.ratio} ({t_compress:.0f} s); "
          f"held-out loss on {scored['heldout_sequences']} sequences")
    print(f"{'model':20s} " + " ".join(f"{e:>8s}" for e in exits) + f" {'params':>12s} {'DaE params':>11s} {'branch head':>12s}")
    for name, m in models.items():
        print(f"{name:20s} " + " ".join(f"{m['loss'][e]:8.4f}" for e in exits)
              + f" {m['parameters']:12,d} {m['dae_parameters']:11,d} {m['head_parameters']:12,d}")
    deep = f"exit{args.exit}"
    sbe, comp = models["after SBE"], models["after compression"]
    print(f"{deep}: SBE {models['joint']['loss'][deep]:.4f} -> {sbe['loss'][deep]:.4f}; compression "
          f"{sbe['loss'][deep]:.4f} -> {comp['loss'][deep]:.4f} ({100 * (comp['loss'][deep] / sbe['loss'][deep] - 1):+.2f}%) with "
          f"{100 * (1 - comp['dae_parameters'] / sbe['dae_parameters']):.1f}% fewer DaE parameters "
          f"({len(compress['matrices'])} matrices; compress/stats.json: {compress['loss_before'][deep]:.4f} -> "
          f"{compress['loss_after'][deep]:.4f} on its own held-out split)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
