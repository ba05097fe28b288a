"""Training throughput on one GPU: plain megatron-core GPT vs the familial model vs a Hugging Face
early-exit loop, on the same Qwen3 shape, batch and sequence length, each planned on paper first.

    .venv/bin/python bench/train_gpu.py --plan                               # the memory plan only (any machine)
    .venv/bin/python bench/train_gpu.py --out bench_train_gpu.json          # one GPU (bf16)
    .venv/bin/python bench/train_gpu.py --smoke --out /tmp/smoke.json       # CPU dry run (fp32, tiny shape)

First the script prints torch, CUDA and the GPU, then each contender's memory plan (``train_entry/memory_plan.py``:
weights, gradients, optimizer state, activations, the transient peak, each with its formula) against the GPU's
memory (``--gpu-gib``, default the device's, or an H100's 79.1 GiB where there is none), and refuses to run
a contender whose plan leaves less than 10% of it free. The defaults fit an H100 with that margin: the
Qwen3-1.7B shape (untied, 2.03B parameters plain, 2.75B with the branches), micro-batch 1 x 2,048 tokens, no
recompute, the fused core attention (``train_entry/attention.py``): plain 51.0, familial 66.9, the HF loop 67.2
of 79.1 GiB; 4,096 tokens would need 83 GiB. Qwen3-4B does not fit one 80 GB GPU at 18 bytes per parameter in
any configuration (``--plan --shape qwen3-4b`` shows it).

Contenders, each in its own process (clean memory and CUDA state), each given the same random token
batches, the same warm-up and the same number of timed steps; a contender that fails is recorded with its
error and the others still run:
- ``plain``: the project's trainer (megatron-core DDP + optimizer, bf16 with fp32 master weights) on the
  shape with only the full-depth exit: plain megatron-core GPT training;
- ``familial``: the same trainer with exits at Ruyi2's relative depths (2/39, 21/39, 1 of the layers);
- ``hf``: transformers' Qwen3ForCausalLM with the same branches (one copied decoder layer, norm and head per
  aux exit) driven by ``output_hidden_states``, bf16 autocast with fp32 weights, torch AdamW (fused on GPU):
  what a user writes without megatron-core.
Reported per contender: tokens/s, model TFLOP/s per GPU and MFU (FLOPs of every layer, branch and head,
causal attention: ``train_entry/metrics.py``), peak GPU memory next to the plan's prediction, wall and CPU
seconds of the timed steps. Targets (issue 16): familial overhead <= the branches' FLOP share + 3%; plain bf16
MFU >= 40%; familial >= 3x the HF loop.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from train_entry.memory_plan import GPU_GIB, hf_plan, megatron_plan  # noqa: E402
from train_entry.model_config import FamilialConfig  # noqa: E402

VOCAB = 151936
SHAPES = {
    # Qwen3-1.7B (28 layers, 2048 wide, 16 Q / 8 KV heads of 128, FFN 6144), untied: the default
    "qwen3-1.7b": dict(num_layers=28, hidden_size=2048, ffn_hidden_size=6144, num_attention_heads=16, num_query_groups=8,
                       kv_channels=128, vocab_size=VOCAB),
    # Qwen3-4B (36 layers, 2560 wide, 32 Q / 8 KV heads, FFN 9728): more than one 80 GB GPU holds with Adam
    "qwen3-4b": dict(num_layers=36, hidden_size=2560, ffn_hidden_size=9728, num_attention_heads=32, num_query_groups=8,
                     kv_channels=128, vocab_size=VOCAB),
    "smoke": dict(num_layers=6, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2,
                  kv_channels=16, vocab_size=1024),
}
CONTENDERS = ("plain", "familial", "hf")
FIT_MARGIN = 0.10  # a plan must leave this share of the GPU's memory free


def ruyi2_exits(num_layers: int) -> tuple[int, ...]:
    """Exits at Ruyi2's relative depths: after layers 2, 21, 39 of 40 (0-based; the first after layer 1 at least)."""
    last = num_layers - 1
    return tuple(sorted({max(1, round(2 / 39 * last)), round(21 / 39 * last), last}))


def batches(args, vocab: int, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(1234)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g)
        out.append({"tokens": tokens[:, :-1], "labels": tokens[:, 1:],
                    "position_ids": torch.arange(args.seq).expand(args.batch, args.seq).contiguous(),
                    "loss_mask": torch.ones(args.batch, args.seq)})
    return out


def timed(step_fn, data: list[dict], warmup: int) -> dict:
    cuda = torch.cuda.is_available()
    for b in data[:warmup]:
        step_fn(b)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    for b in data[warmup:]:
        step_fn(b)
    if cuda:
        torch.cuda.synchronize()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def run_megatron(args, exits: tuple[int, ...], shape: dict) -> dict:
    from train_entry.distributed import DistributedContext
    from train_entry.loop_settings import LoopSettings
    from train_entry.loss_schedule import ExitWeight
    from train_entry.model_config import FamilialConfig
    from train_entry.trainer import FamilialTrainer

    fcfg = FamilialConfig(**shape, exits=exits, max_sequence_length=args.seq)
    settings = LoopSettings(steps=args.warmup + args.steps, micro_batch_size=args.batch, seq_length=args.seq, lr=1e-4,
                            min_lr=1e-5, weight_decay=0.1, seed=1234, eval_samples=0,
                            exit_weights=[ExitWeight() for _ in exits], bf16=torch.cuda.is_available(),
                            recompute=args.recompute, tensorboard=False)
    with DistributedContext():
        trainer = FamilialTrainer(fcfg, settings, tokenizer=None, out_dir=args.work)
        result = timed(trainer.train_step, batches(args, fcfg.vocab_size, args.warmup + args.steps), args.warmup)
        return result | {"flops_per_token": trainer.flops_per_token, "parameters": sum(p.numel() for p in trainer.model.parameters())}


class HFEarlyExit(torch.nn.Module):
    """transformers' Qwen3 with Ruyi2's branches: exit k runs a copy of layer e_k + 1, its own norm and head."""

    def __init__(self, shape: dict, exits: tuple[int, ...], seq: int):
        super().__init__()
        from transformers import Qwen3Config, Qwen3ForCausalLM
        from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm

        cfg = Qwen3Config(vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
                          intermediate_size=shape["ffn_hidden_size"], num_hidden_layers=shape["num_layers"],
                          num_attention_heads=shape["num_attention_heads"], num_key_value_heads=shape["num_query_groups"],
                          head_dim=shape["kv_channels"], max_position_embeddings=seq, tie_word_embeddings=False,
                          attn_implementation="sdpa", use_cache=False)
        self.lm = Qwen3ForCausalLM(cfg)
        self.aux = exits[:-1]
        self.branches = torch.nn.ModuleList(Qwen3DecoderLayer(cfg, e + 1) for e in self.aux)
        for branch, e in zip(self.branches, self.aux):
            branch.load_state_dict(self.lm.model.layers[e + 1].state_dict())
        self.norms = torch.nn.ModuleList(Qwen3RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) for _ in self.aux)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) for _ in self.aux)

    def forward(self, tokens, labels, position_ids) -> torch.Tensor:
        out = self.lm.model(input_ids=tokens, position_ids=position_ids, output_hidden_states=True)
        ce = torch.nn.functional.cross_entropy
        vocab = self.lm.config.vocab_size
        loss = ce(self.lm.lm_head(out.last_hidden_state).float().view(-1, vocab), labels.reshape(-1))
        rope = self.lm.model.rotary_emb(out.last_hidden_state, position_ids)
        for branch, norm, head, e in zip(self.branches, self.norms, self.heads, self.aux):
            h = branch(out.hidden_states[e + 1], position_ids=position_ids, position_embeddings=rope)
            h = h[0] if isinstance(h, tuple) else h
            loss = loss + ce(head(norm(h)).float().view(-1, vocab), labels.reshape(-1))
        return loss


def run_hf(args, exits: tuple[int, ...], shape: dict) -> dict:
    from train_entry.metrics import training_flops_per_token
    from train_entry.model_config import FamilialConfig

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(1234)
    model = HFEarlyExit(shape, exits, args.seq).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=cuda)

    def step(b):
        b = {k: v.to(device) for k, v in b.items()}
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = model(b["tokens"], b["labels"], b["position_ids"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    result = timed(step, batches(args, shape["vocab_size"], args.warmup + args.steps), args.warmup)
    fcfg = FamilialConfig(**shape, exits=exits, max_sequence_length=args.seq)
    return result | {"flops_per_token": training_flops_per_token(fcfg, args.seq),
                     "parameters": sum(p.numel() for p in model.parameters())}


def contender_exits(contender: str, shape: dict) -> tuple[int, ...]:
    exits = ruyi2_exits(shape["num_layers"])
    return exits[-1:] if contender == "plain" else exits


def plan(contender: str, args, shape: dict):
    """The contender's memory plan (``train_entry/memory_plan.py``)."""
    fcfg = FamilialConfig(**shape, exits=contender_exits(contender, shape), max_sequence_length=args.seq)
    if contender == "hf":
        return hf_plan(fcfg, args.batch, args.seq)
    # the GPU run is bf16 (planned so from any machine); the smoke run on a CPU is fp32
    return megatron_plan(fcfg, args.batch, args.seq, bf16=torch.cuda.is_available() or not args.smoke,
                         recompute=args.recompute, attention="fused", contender=contender)


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "machine": platform.node()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"device": props.name, "device_memory_gib": round(props.total_memory / 2**30, 2),
                "cuda_runtime": torch.version.cuda}
    else:
        env["device"] = "cpu"
    return env


def one(args) -> None:
    if args.inject_failure == args.contender:  # the dry-run test's fault injection
        raise RuntimeError(f"injected failure of contender {args.contender!r}")
    shape = SHAPES[args.shape]
    exits = ruyi2_exits(shape["num_layers"])
    if args.contender == "plain":
        result = run_megatron(args, (exits[-1],), shape)
    elif args.contender == "familial":
        result = run_megatron(args, exits, shape)
    else:
        result = run_hf(args, exits, shape)
    tokens = args.steps * args.batch * args.seq
    from train_entry.metrics import peak_tflops_per_device

    tflops = tokens * result["flops_per_token"] / result["wall_s"] / 1e12
    peak = peak_tflops_per_device()
    result |= {"contender": args.contender, "exits": list(exits if args.contender != "plain" else exits[-1:]),
               "tokens_per_s": tokens / result["wall_s"], "tflops_per_gpu": tflops, "mfu": tflops / peak if peak else None}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="the summary (JSON); required unless --plan")
    ap.add_argument("--plan", action="store_true", help="print every contender's memory plan and stop")
    ap.add_argument("--smoke", action="store_true", help="tiny shape, fp32 on a CPU: checks the script runs")
    ap.add_argument("--shape", choices=sorted(SHAPES), help="model shape (default qwen3-1.7b; smoke with --smoke)")
    ap.add_argument("--gpu-gib", type=float, help=f"GPU memory to plan for (default: the device's; else an H100, {GPU_GIB['h100']})")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated subset of " + ",".join(CONTENDERS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--recompute", choices=["none", "selective", "full"])
    ap.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)  # one child process
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--inject-failure", choices=CONTENDERS, help=argparse.SUPPRESS)  # tests: this contender raises
    args = ap.parse_args()
    defaults = (dict(steps=2, warmup=1, batch=2, seq=32, recompute="none", shape="smoke") if args.smoke else
                dict(steps=10, warmup=3, batch=1, seq=2048, recompute="none", shape="qwen3-1.7b"))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.contender:
        return one(args)
    env = environment()
    print(" ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    gpu_gib = args.gpu_gib or (env["device_memory_gib"] - 0.9 if torch.cuda.is_available() else GPU_GIB["h100"])
    shape = SHAPES[args.shape]
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        ap.error(f"--contenders: unknown {unknown}")
    plans = {c: plan(c, args, shape) for c in contenders}
    print(f"memory plans for {args.shape}, micro-batch {args.batch} x {args.seq} tokens, recompute {args.recompute} and "
          f"fused attention (megatron contenders), against {gpu_gib:.1f} GiB with {FIT_MARGIN:.0%} kept free:")
    for p in plans.values():
        print(p.table() + f"  -> {'fits' if p.fits(gpu_gib, FIT_MARGIN) else 'DOES NOT FIT'}")
    refused = [c for c, p in plans.items() if not p.fits(gpu_gib, FIT_MARGIN)]
    if refused:
        print(f"refused: {', '.join(refused)} would not fit {gpu_gib:.1f} GiB with {FIT_MARGIN:.0%} free; choose a smaller "
              "--shape, --batch or --seq, or --recompute full", file=sys.stderr)
        sys.exit(2)
    if args.plan:
        return
    if not args.out:
        ap.error("--out is required to run the contenders")
    work = os.path.splitext(os.path.abspath(args.out))[0] + "_work"
    os.makedirs(work, exist_ok=True)
    results = []
    for contender in contenders:
        part, log = os.path.join(work, f"{contender}.json"), os.path.join(work, f"{contender}.log")
        cmd = [sys.executable, os.path.abspath(__file__), "--contender", contender, "--out", part, "--work",
               os.path.join(work, contender), "--shape", args.shape] + [
               f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch", "seq", "recompute")]
        cmd += (["--smoke"] if args.smoke else []) + ([f"--inject-failure={args.inject_failure}"] if args.inject_failure else [])
        started = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
        predicted = plans[contender].tensors_gib  # torch's max_memory_allocated is compared with this
        if proc.returncode == 0 and os.path.exists(part):
            results.append(json.load(open(part)) | {"predicted_gib": predicted})
        else:  # recorded; the other contenders still run
            tail = open(log, errors="replace").read()[-3000:]
            results.append({"contender": contender, "error": f"exit status {proc.returncode}", "log": log, "log_tail": tail,
                            "seconds": round(time.perf_counter() - started, 1), "predicted_gib": predicted})
            print(f"{contender}: FAILED (exit status {proc.returncode}); its log: {log}\n{tail[-1500:]}", file=sys.stderr)
    ok = {r["contender"]: r for r in results if "error" not in r}
    summary = {"environment": env, "shape": args.shape, "shape_fields": shape, "seq": args.seq, "batch": args.batch,
               "steps": args.steps, "recompute": args.recompute, "gpu_gib": gpu_gib,
               "plans": {c: p.as_dict() for c, p in plans.items()}, "results": results}
    if {"plain", "familial"} <= set(ok):
        summary["familial_overhead"] = ok["plain"]["tokens_per_s"] / ok["familial"]["tokens_per_s"] - 1
        summary["branch_flop_share"] = ok["familial"]["flops_per_token"] / ok["plain"]["flops_per_token"] - 1
    if {"familial", "hf"} <= set(ok):
        summary["familial_vs_hf"] = ok["familial"]["tokens_per_s"] / ok["hf"]["tokens_per_s"]
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    for r in results:
        if "error" in r:
            print(f"{r['contender']:9s} failed: {r['error']} (log {r['log']})")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_gpu_memory_gib']:.1f} GiB" if r["peak_gpu_memory_gib"] is not None else "n/a"
        print(f"{r['contender']:9s} {r['tokens_per_s']:>10,.0f} tok/s  {r['tflops_per_gpu']:7.2f} TFLOP/s  MFU {mfu}  "
              f"peak {mem} (planned {r['predicted_gib']:.1f} of tensors)  wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
    if "familial_overhead" in summary:
        print(f"familial overhead {summary['familial_overhead']:.1%} (branch FLOP share {summary['branch_flop_share']:.1%})"
              + (f"; familial vs HF loop {summary['familial_vs_hf']:.2f}x" if "familial_vs_hf" in summary else ""))
    if len(ok) < len(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
