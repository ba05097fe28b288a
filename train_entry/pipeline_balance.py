"""Pipeline stages balanced for the cost of the exit branches.

An exit branch is one extra decoder layer plus an RMSNorm and a vocabulary-sized LM head, computed on the
pipeline stage that holds its tap layer; the full-model head sits on the last stage. For Ruyi2-14B at 4k
tokens an LM head costs about two decoder layers (vocabulary 151,936), so a branch weighs about three:
an even split of the 40 layers leaves the stages holding exits ~30% slower than the rest, and the whole
pipeline runs at the pace of the slowest stage.

The planner counts forward FLOPs per token (the backward pass scales every part by the same factor),
then chooses the contiguous split of the decoder layers that minimises the most expensive stage (exact
dynamic programme; L x L x P is tiny). The result is megatron-core's ``pipeline_model_parallel_layout``,
which gives every stage its own number of layers. Only compute is balanced; a stage holding a head also
holds its weights and logits, so check memory on the largest stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from train_entry.model_config import FamilialConfig


def layer_flops(fcfg: FamilialConfig, seq_length: int) -> float:
    """Forward FLOPs per token of one Qwen3 decoder layer (GQA projections, attention scores, SwiGLU). Attention
    is causal: a token attends to s/2 positions on average, so QK^T and the weighted sum of V count s/2, as
    Megatron-LM's FLOP count does (counting s would overstate MFU by 10-13% at 4k tokens)."""
    h, q, kv = fcfg.hidden_size, fcfg.num_attention_heads * fcfg.kv_channels, fcfg.num_query_groups * fcfg.kv_channels
    projections = 2 * h * (q + 2 * kv) + 2 * q * h
    scores = 2 * 2 * (seq_length / 2) * q  # QK^T and attention-weighted V over the causal half
    mlp = 2 * 3 * h * fcfg.ffn_hidden_size
    return float(projections + scores + mlp)


def head_flops(fcfg: FamilialConfig) -> float:
    return float(2 * fcfg.hidden_size * fcfg.model_vocab_size)


@dataclass(frozen=True)
class PipelinePlan:
    layers_per_stage: tuple[int, ...]
    stage_cost: tuple[float, ...]  # in decoder-layer equivalents
    even_stage_cost: tuple[float, ...] | None  # the same for an even split (None when L % P != 0)

    @property
    def layout(self) -> list[list[str]]:
        """megatron-core's ``pipeline_model_parallel_layout``: embedding first, loss last."""
        out = []
        for i, n in enumerate(self.layers_per_stage):
            stage = (["embedding"] if i == 0 else []) + ["decoder"] * n
            out.append(stage + (["loss"] if i == len(self.layers_per_stage) - 1 else []))
        return out

    @property
    def speedup_over_even(self) -> float | None:
        return max(self.even_stage_cost) / max(self.stage_cost) if self.even_stage_cost else None


def _costs(fcfg: FamilialConfig, seq_length: int) -> tuple[list[float], float]:
    """Cost of each layer including the exit branches it feeds, and of the final head, in layer units."""
    layer = layer_flops(fcfg, seq_length)
    branch = (layer + head_flops(fcfg)) / layer
    per_layer = [1.0] * fcfg.num_layers
    for e in fcfg.aux_exits:  # branch e taps the output of 0-based layer e - 1
        per_layer[e - 1] += branch
    return per_layer, head_flops(fcfg) / layer


def _stage_costs(per_layer: list[float], final_head: float, counts: list[int]) -> tuple[float, ...]:
    out, start = [], 0
    for n in counts:
        out.append(sum(per_layer[start : start + n]))
        start += n
    out[-1] += final_head
    return tuple(out)


def plan_pipeline(fcfg: FamilialConfig, pp: int, seq_length: int, balance: str | list[int] = "exits") -> PipelinePlan:
    """``balance``: "exits" (balanced for the branches), "even" (L / P layers each) or explicit layer counts."""
    if balance == "exits":
        return balance_pipeline(fcfg, pp, seq_length)
    counts = [fcfg.num_layers // pp] * pp if balance == "even" else list(balance)
    if len(counts) != pp or sum(counts) != fcfg.num_layers or min(counts) < 1 or (balance == "even" and fcfg.num_layers % pp):
        raise ValueError(f"pipeline layout {balance!r}: needs {pp} stages of >= 1 layer summing to {fcfg.num_layers}")
    per_layer, final_head = _costs(fcfg, seq_length)
    even = _stage_costs(per_layer, final_head, [fcfg.num_layers // pp] * pp) if fcfg.num_layers % pp == 0 else None
    return PipelinePlan(tuple(counts), _stage_costs(per_layer, final_head, counts), even)


def balance_pipeline(fcfg: FamilialConfig, pp: int, seq_length: int) -> PipelinePlan:
    if pp < 1 or pp > fcfg.num_layers:
        raise ValueError(f"pipeline_parallel={pp}: needs 1 <= P <= num_layers ({fcfg.num_layers})")
    per_layer, final_head = _costs(fcfg, seq_length)
    n = len(per_layer)
    prefix = [0.0]
    for c in per_layer:
        prefix.append(prefix[-1] + c)

    def cost(start: int, end: int) -> float:
        return prefix[end] - prefix[start] + (final_head if end == n else 0.0)

    @lru_cache(maxsize=None)
    def bottleneck(start: int, stages: int) -> float:
        """Lowest achievable max-stage cost for layers[start:] over ``stages`` stages (each >= 1 layer)."""
        if stages == 1:
            return cost(start, n)
        return min(max(cost(start, end), bottleneck(end, stages - 1)) for end in range(start + 1, n - stages + 2))

    limit = bottleneck(0, pp) + 1e-9
    even_size = n / pp

    @lru_cache(maxsize=None)
    def smoothest(start: int, stages: int) -> tuple[float, float, tuple[int, ...]]:
        """Among splits whose every stage stays within the bottleneck: the most even stage costs, then
        the most even layer counts (several splits often share the bottleneck)."""
        if stages == 1:
            c = cost(start, n)
            return (c * c, (n - start - even_size) ** 2, (n - start,)) if c <= limit else (float("inf"), 0.0, ())
        best = (float("inf"), 0.0, ())
        for end in range(start + 1, n - stages + 2):
            c = cost(start, end)
            if c > limit:
                break  # costs only grow with the stage
            sq, dev, rest = smoothest(end, stages - 1)
            cand = (round(sq + c * c, 6), round(dev + (end - start - even_size) ** 2, 6), (end - start, *rest))
            best = min(best, cand)
        return best

    counts = smoothest(0, pp)[2]
    even = _stage_costs(per_layer, final_head, [n // pp] * pp) if n % pp == 0 else None
    return PipelinePlan(counts, _stage_costs(per_layer, final_head, list(counts)), even)
