"""Training throughput on one GPU: plain megatron-core GPT vs the familial model vs a Hugging Face
early-exit loop, on the same Qwen3 shape, batch and sequence length.

    .venv/bin/python bench/train_gpu.py --out bench_train_gpu.json          # one GPU (bf16)
    .venv/bin/python bench/train_gpu.py --smoke --out /tmp/smoke.json       # CPU smoke run (fp32, tiny shape)

Contenders, each in its own process (clean memory and CUDA state), each given the same random token
batches, the same warm-up and the same number of timed steps:
- ``plain``: the project's trainer (megatron-core DDP + optimizer, bf16 with fp32 master weights) on the
  shape with only the full-depth exit: plain megatron-core GPT training;
- ``familial``: the same trainer with exits at Ruyi2's relative depths (2/39, 21/39, 1 of the layers);
- ``hf``: transformers' Qwen3ForCausalLM with the same branches (one copied decoder layer, norm and head per
  aux exit) driven by ``output_hidden_states``, bf16 autocast with fp32 weights, torch AdamW (fused on GPU):
  what a user writes without megatron-core.
Reported per contender: tokens/s, model TFLOP/s per GPU and MFU (FLOPs of every layer, branch and head:
``train_entry/metrics.py``), peak GPU memory, wall and CPU seconds of the timed steps. Targets (issue 16):
familial overhead <= the branches' FLOP share + 3%; plain bf16 MFU >= 40%; familial >= 3x the HF loop.
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

# Qwen3-4B's shape (36 layers, 2560 wide, 32 Q / 8 KV heads of 128, FFN 9728, vocabulary 151,936): trains
# with Adam and fp32 master weights in one 80 GB GPU at 4k tokens
GPU_SHAPE = dict(num_layers=36, hidden_size=2560, ffn_hidden_size=9728, num_attention_heads=32, num_query_groups=8,
                 kv_channels=128, vocab_size=151936)
SMOKE_SHAPE = dict(num_layers=6, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4, num_query_groups=2,
                   kv_channels=16, vocab_size=1024)


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
    from train_entry.loss_schedule import ExitWeight
    from train_entry.model_config import FamilialConfig
    from train_entry.trainer import FamilialTrainer, LoopSettings

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


def one(args) -> None:
    shape = SMOKE_SHAPE if args.smoke else GPU_SHAPE
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
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny shape, fp32, CPU or GPU: checks the script runs")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--contender", choices=["plain", "familial", "hf"], help=argparse.SUPPRESS)  # one child process
    ap.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    defaults = dict(steps=2, warmup=1, batch=2, seq=32) if args.smoke else dict(steps=10, warmup=3, batch=2, seq=4096)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.contender:
        return one(args)
    results = []
    work = os.path.splitext(os.path.abspath(args.out))[0] + "_work"
    os.makedirs(work, exist_ok=True)
    for contender in ("plain", "familial", "hf"):
        part = os.path.join(work, f"{contender}.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--contender", contender, "--out", part, "--work",
               os.path.join(work, contender)] + [f"--{k}={getattr(args, k)}" for k in ("steps", "warmup", "batch", "seq", "recompute")]
        cmd += ["--smoke"] if args.smoke else []
        subprocess.run(cmd, check=True)
        results.append(json.load(open(part)))
    plain, fam, hf = results
    summary = {
        "machine": platform.node(), "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "shape": SMOKE_SHAPE if args.smoke else GPU_SHAPE, "seq": args.seq, "batch": args.batch, "steps": args.steps,
        "results": results,
        "familial_overhead": plain["tokens_per_s"] / fam["tokens_per_s"] - 1,
        "branch_flop_share": fam["flops_per_token"] / plain["flops_per_token"] - 1,
        "familial_vs_hf": fam["tokens_per_s"] / hf["tokens_per_s"],
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_gpu_memory_gib']:.1f} GiB" if r["peak_gpu_memory_gib"] is not None else "n/a"
        print(f"{r['contender']:9s} {r['tokens_per_s']:>10,.0f} tok/s  {r['tflops_per_gpu']:7.2f} TFLOP/s  MFU {mfu}  "
              f"peak {mem}  wall {r['wall_s']:.2f}s cpu {r['cpu_s']:.2f}s")
    print(f"familial overhead {summary['familial_overhead']:.1%} (branch FLOP share {summary['branch_flop_share']:.1%}); "
          f"familial vs HF loop {summary['familial_vs_hf']:.2f}x")


if __name__ == "__main__":
    main()
