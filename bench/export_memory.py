"""Export memory: ``ruyi2 export``'s streamed path (the model's skeleton on the meta device, the checkpoint
read module by module) against exporting a model rebuilt in memory (the checkpoint loaded into a TP=PP=1
model, then converted), on the same checkpoint, same dtype, same shard size, each in a fresh process.
Reports each process's peak RSS above its state after imports, wall and CPU seconds, and checks the two
folders hold the same tensors.

    .venv/bin/python bench/export_memory.py --layers 12 --hidden 1024 --ffn 4096 --vocab 32000

The model is a Qwen3-shaped familial model with three exits, random weights, saved as a weights-only
checkpoint in the train stage's layout (``train/stats.json`` + ``train/checkpoint``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_run(run_dir: str, layers: int, hidden: int, ffn: int, vocab: int, heads: int = 8, groups: int = 4) -> int:
    """A run directory with a saved model of this shape; returns its parameter count."""
    import torch

    from train_entry import checkpointing
    from train_entry.distributed import DistributedContext
    from train_entry.model import build_model
    from train_entry.model_config import FamilialConfig

    fcfg = FamilialConfig(num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn, num_attention_heads=heads,
                          num_query_groups=groups, kv_channels=hidden // heads, exits=(1, layers // 2, layers - 1),
                          vocab_size=vocab, max_sequence_length=256)
    with DistributedContext():
        torch.manual_seed(0)
        model = build_model(fcfg)
        checkpointing.save_weights(os.path.join(run_dir, "train", "checkpoint"), 1, model)
        n = sum(p.numel() for p in model.parameters())
    with open(os.path.join(run_dir, "train", "stats.json"), "w") as f:
        json.dump({"model": dict(fcfg.__dict__)}, f)
    return n


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. Not ``ru_maxrss``: Linux keeps the parent's peak across
    fork and exec, so a child started by a big parent would report the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def export_variant(variant: str, run_dir: str, out: str, shard: str) -> dict:
    """Runs in its own process: one export, with its memory and time."""
    import torch  # noqa: F401  (imports are part of the baseline, not of the export)

    from train_entry.distributed import DistributedContext
    from train_entry.export import _export
    from train_entry.hf_interop import export_ruyi_hf
    from train_entry.run_model import rebuild, run_checkpoint, trained_config

    base = _status_mib("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    if variant == "streamed":
        _export(run_dir, out, {"dtype": "bfloat16", "max_shard_size": shard, "exit": None})
    else:
        fcfg = trained_config(run_dir)
        with DistributedContext():
            model, _ = rebuild(fcfg, run_checkpoint(run_dir)[0], {})
            export_ruyi_hf(model, fcfg, out, "bfloat16", shard)
    peak = _status_mib("VmHWM")
    return {"variant": variant, "peak_above_imports_mib": peak - base, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0}


def same_tensors(a: str, b: str) -> bool:
    from safetensors import safe_open

    def read(folder):
        out = {}
        for f in sorted(os.listdir(folder)):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(folder, f), "pt") as st:
                    out.update({k: st.get_tensor(k) for k in st.keys()})
        return out

    ta, tb = read(a), read(b)
    return ta.keys() == tb.keys() and all(ta[k].equal(tb[k]) for k in ta)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard", default="100MB")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(export_variant(args.variant, args.run_dir, args.out, args.shard)))
        return
    with tempfile.TemporaryDirectory() as work:
        run_dir = os.path.join(work, "run")
        os.makedirs(os.path.join(run_dir, "train"))
        n = make_run(run_dir, args.layers, args.hidden, args.ffn, args.vocab)
        print(f"model: {n / 1e6:,.0f} M parameters, {n * 4 / 2**20:,.0f} MiB in fp32, {n * 2 / 2**20:,.0f} MiB in bf16; "
              f"shards of {args.shard}")
        results = {}
        for variant in ("streamed", "in_memory"):
            out = os.path.join(work, variant)
            proc = subprocess.run([sys.executable, __file__, "--variant", variant, "--run-dir", run_dir, "--out", out,
                                   "--shard", args.shard], capture_output=True, text=True, check=True)
            results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
            files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
            r = results[variant]
            print(f"{variant:10s} peak RSS above imports {r['peak_above_imports_mib']:8,.0f} MiB   wall {r['wall_s']:6.1f} s   "
                  f"cpu {r['cpu_s']:6.1f} s   {len(files)} shard files")
        s, m = results["streamed"], results["in_memory"]
        same = same_tensors(os.path.join(work, "streamed"), os.path.join(work, "in_memory"))
        print(f"same tensors in both folders: {same}; "
              f"peak memory {m['peak_above_imports_mib'] / s['peak_above_imports_mib']:.1f}x lower streamed")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"parameters": n, "fp32_mib": n * 4 / 2**20, "same_tensors": same, **results}, f, indent=2)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
