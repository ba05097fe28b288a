"""Per-step cost of Ruyi2's exit branches on CPU: the familial model vs the same backbone without exits.

Ruyi-14B proportions at toy width: 40 layers, exits (2, 21, 39), FFN/hidden = 3.4, and a vocabulary
chosen so one LM head costs about 2.4 decoder layers, as 5120 x 151936 does against a Qwen3-14B layer.
Both models run in the same process, interleaved step by step, so the ratio holds on a noisy machine.

    .venv/bin/python bench/exit_overhead.py --steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from train_entry.distributed import DistributedContext
from train_entry.model import build_model, masked_mean
from train_entry.model_config import FamilialConfig


def make(exits) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = FamilialConfig(num_layers=40, hidden_size=64, ffn_hidden_size=216, num_attention_heads=4, num_query_groups=1,
                         kv_channels=16, exits=exits, vocab_size=1792, max_sequence_length=128)
    torch.manual_seed(0)
    model = build_model(cfg)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def step(model, opt, batch) -> float:
    inp, lab, pos, mask = batch
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    masked_mean(model(inp, pos, None, labels=lab, loss_mask=mask), mask).backward()
    opt.step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with DistributedContext():
        plain, plain_opt = make((39,))
        fam, fam_opt = make((2, 21, 39))
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, 1792, (args.batch, args.seq + 1), generator=g)
        batch = (tokens[:, :-1], tokens[:, 1:], torch.arange(args.seq).expand(args.batch, args.seq), torch.ones(args.batch, args.seq))
        for _ in range(3):  # warm-up
            step(plain, plain_opt, batch), step(fam, fam_opt, batch)
        t_plain, t_fam = [], []
        for _ in range(args.steps):
            t_plain.append(step(plain, plain_opt, batch))
            t_fam.append(step(fam, fam_opt, batch))
    p, f = statistics.median(t_plain), statistics.median(t_fam)
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "params_plain": sum(x.numel() for x in plain.parameters()),
        "params_familial": sum(x.numel() for x in fam.parameters()),
        "median_step_s_plain": round(p, 4),
        "median_step_s_familial": round(f, 4),
        "overhead": round(f / p - 1, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
