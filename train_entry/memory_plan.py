"""GPU memory of a training configuration, planned on paper before it runs: weights, gradients, optimizer
state, activations and the transient peak, each with its formula, so a configuration that does not fit is
refused with the arithmetic instead of failing with an out-of-memory error on the first GPU.

Bytes per parameter (megatron-core, ``train_entry/optim.py``): bf16 weights 2, fp32 gradient buffer 4
(``grad_reduce_in_fp32``), fp32 master copy 4 and Adam's two moments 8 = 18; with the distributed optimizer
over ``d`` data-parallel ranks the master copy and moments are sharded: 2 + 4 + 12/d. fp32 training: 4 + 4 +
8 (or 8/d). A Hugging Face loop with fp32 weights, bf16 autocast and torch AdamW: 4 + 4 + 8, plus the bf16
weight copies autocast makes and autograd keeps until the backward (2).

Activations are the tensors autograd saves for the backward, per token, summed over the unique storages a
layer of megatron-core's local spec keeps (listed tensor by tensor from a real forward with
``torch.autograd.graph.saved_tensors_hooks``; ``tests/test_memory_plan.py`` checks the sums against it). With
``e`` bytes per activation element (2 in bf16, 4 in fp32), ``h`` hidden, ``a`` query heads, ``g`` key/value
groups, ``d`` head size, ``f`` FFN width, ``s`` sequence length, ``b`` micro-batch, ``V`` vocabulary:
- each RMSNorm (torch's, in the local spec) keeps its input in fp32, the fp32 normalised value, a fp32
  reciprocal per row and its output in the activation dtype (the next linear's input): 8h + 4 + e*h; the Q/K
  norms the same per head: 8(a + g)d + 4(a + g);
- attention, unfused (megatron-core's ``DotProductAttention``): the rotated query and the keys and values
  repeated to the query heads (3ad; with a == g the keys are not repeated and the values stay a view of the
  fused QKV output, (a + 2g)d), the fp32 softmax output and the bf16 probabilities (a*s at 6 bytes; 4 in
  fp32), the causal mask (s*s bytes, shared), RoPE's cos and sin (4ed/b); the output projection's input (ad);
- SwiGLU MLP: fc1's output (2f), and three f-wide products of the gate (SiLU, product, fc2's input): 5f;
- each exit: its norm (above) and the cross-entropy's fp32 softmax (megatron-core's vocab-parallel
  cross-entropy saves ``exp_logits``: 4V) with its masks (9); a branch layer counts like a backbone layer.
Selective recompute (megatron-core's: core attention recomputed in the backward) keeps the attention's inputs
instead of the scores and the repeated keys and values: the rotated query and key (ad + gd) and the values, a
view that keeps the whole fused QKV output ((a + 2g)d). Full recompute keeps each layer's input (h) and
rebuilds one layer at a time. Fused attention (scaled_dot_product_attention) keeps the query, key and value,
its output and a fp32 log-sum-exp per head, never the s x s scores.
The transient peak is the largest short-lived allocation on top: a head's logits in the activation dtype
next to their fp32 copy and, in the backward, their fp32 gradient ((e + 8) V per token), or, unfused, one
layer's scores and their gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 2**30
# what CUDA, cuBLAS/cuDNN workspaces and NCCL take before the first tensor, and allocator fragmentation
CONTEXT_GIB = 2.5
FRAGMENTATION = 0.05
# usable memory of the GPUs a plan is checked against (device memory as torch reports it, minus the driver's)
GPU_GIB = {"h100": 79.1, "h100-80gb": 79.1, "h200": 139.8, "a100-80gb": 79.1, "a100-40gb": 39.4, "l40s": 44.4}


def layer_parameters(h: int, a: int, g: int, d: int, f: int) -> int:
    """One decoder layer: fused QKV h x (a + 2g)d, output projection ad x h, Q/K norms 2d, SwiGLU fc1 h x 2f
    and fc2 f x h, the input and pre-MLP norms 2h."""
    return h * (a + 2 * g) * d + a * d * h + 2 * d + 2 * h * f + f * h + 2 * h


def parameter_count(fcfg, tied: bool | None = None) -> dict[str, int]:
    """Parameters of the familial model by part: an output layer per exit, the full model's none when its
    embeddings are tied (``tied``; default the model's own), every vocabulary row counted padding included."""
    h, v = fcfg.hidden_size, fcfg.model_vocab_size
    tied = fcfg.tie_embeddings if tied is None else tied
    layer = layer_parameters(h, fcfg.num_attention_heads, fcfg.num_query_groups, fcfg.kv_channels, fcfg.ffn_hidden_size)
    aux = len(fcfg.exits) - 1
    parts = {"embedding": v * h, "layers": fcfg.num_layers * layer, "final_norm": h, "output_layer": 0 if tied else v * h,
             "exit_branches": aux * (layer + h + v * h)}
    parts["total"] = sum(parts.values())
    return parts


def norm_bytes(width: int, element: int) -> float:
    """torch's RMSNorm over ``width``: fp32 input and normalised value, a fp32 reciprocal, the output."""
    return 8 * width + 4 + element * width


def layer_activation_bytes(fcfg, seq: int, element: int, recompute: str, attention: str, micro_batch: int = 1) -> float:
    """Bytes autograd keeps per token for one decoder layer (see the module docstring)."""
    h, a, g, d, f = (fcfg.hidden_size, fcfg.num_attention_heads, fcfg.num_query_groups, fcfg.kv_channels,
                     fcfg.ffn_hidden_size)
    e = element
    if recompute == "full":
        return e * h
    norms = 2 * norm_bytes(h, e) + 8 * (a + g) * d + 4 * (a + g)
    rope = 4 * e * d / micro_batch
    mlp = 5 * e * f
    proj_in = e * a * d
    if attention == "fused":  # SDPA keeps q, k, v (the values a view of the QKV output), its output, a log-sum-exp
        attn = e * (a * d + g * d + (a + 2 * g) * d + a * d) + 4 * a
    elif recompute == "selective":  # the checkpointed core attention keeps its inputs only
        attn = e * (a * d + g * d + (a + 2 * g) * d)
    else:
        scores = 6 if e == 2 else 4  # fp32 softmax output (+ bf16 probabilities in bf16)
        kv = 2 * a * d if a != g else (a + 2 * g) * d  # repeated keys and values, or the QKV output the values view
        attn = e * (a * d + kv) + scores * a * seq
    return norms + rope + attn + proj_in + mlp


@dataclass
class MemoryPlan:
    """A configuration's memory, GiB, by part, and what it is checked against."""

    contender: str
    parameters: int
    parts: dict[str, float]
    formulas: dict[str, str] = field(default_factory=dict)

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values())

    def fits(self, gpu_gib: float, margin: float = 0.10) -> bool:
        return self.total_gib <= gpu_gib * (1 - margin)

    def table(self) -> str:
        lines = [f"{self.contender}: {self.parameters / 1e9:.3f}B parameters"]
        for name, gib in self.parts.items():
            lines.append(f"  {name:<22} {gib:8.2f} GiB   {self.formulas.get(name, '')}")
        lines.append(f"  {'total':<22} {self.total_gib:8.2f} GiB")
        return "\n".join(lines)

    @property
    def tensors_gib(self) -> float:
        """What torch's allocator holds at the peak (``torch.cuda.max_memory_allocated``): the total less the
        CUDA context and fragmentation."""
        return self.total_gib - self.parts.get("context+fragmentation", 0.0)

    def as_dict(self) -> dict:
        return {"contender": self.contender, "parameters": self.parameters, "parts_gib": self.parts,
                "total_gib": self.total_gib, "tensors_gib": self.tensors_gib, "formulas": self.formulas}


def exit_activation_bytes(fcfg, element: int) -> float:
    """Per token, one exit: its norm (whose output is the head's input) and the cross-entropy's fp32 softmax."""
    return norm_bytes(fcfg.hidden_size, element) + 4 * fcfg.model_vocab_size + 9


def activation_bytes(fcfg, micro_batch: int, seq: int, element: int, recompute: str, attention: str) -> tuple[float, float]:
    """(bytes the forward of one micro-batch leaves for the backward, bytes the backward adds back at most by
    recomputing). Under full recompute an exit branch runs inside its tap layer's checkpoint, so only the
    layers' inputs and the final exit are kept, and the backward rebuilds one layer (a tap layer with its
    branch layer and exit) at a time."""
    tokens = micro_batch * seq
    aux = len(fcfg.exits) - 1
    layer = layer_activation_bytes(fcfg, seq, element, recompute, attention, micro_batch)
    per_exit = exit_activation_bytes(fcfg, element)
    if recompute == "full":
        rebuilt = tokens * (2 * layer_activation_bytes(fcfg, seq, element, "none", attention, micro_batch) + per_exit)
        return tokens * (fcfg.num_layers * layer + per_exit), rebuilt
    mask = seq * seq if attention == "unfused" else 0  # the causal mask, shared by the layers
    return tokens * ((fcfg.num_layers + aux) * layer + (aux + 1) * per_exit) + mask, 0.0


def megatron_plan(fcfg, micro_batch: int, seq: int, bf16: bool = True, recompute: str = "none", attention: str = "unfused",
                  distributed_optimizer: bool = False, dp: int = 1, contender: str = "megatron") -> MemoryPlan:
    """The project's trainer on one GPU (TP = PP = 1) with ``micro_batch`` x ``seq`` tokens per micro-batch."""
    n = parameter_count(fcfg)["total"]
    e = 2 if bf16 else 4
    shard = dp if distributed_optimizer else 1
    weight_b, grad_b, opt_b = (2, 4, 12 / shard) if bf16 else (4, 4, 8 / shard)
    tokens = micro_batch * seq
    aux = len(fcfg.exits) - 1
    saved, rebuilt = activation_bytes(fcfg, micro_batch, seq, e, recompute, attention)
    activations = saved + rebuilt
    layer = layer_activation_bytes(fcfg, seq, e, recompute, attention, micro_batch)
    v = fcfg.model_vocab_size
    per_exit = exit_activation_bytes(fcfg, e)
    scores = (6 if e == 2 else 4) * fcfg.num_attention_heads * seq * micro_batch * seq
    transient = max(tokens * (e + 8) * v, 2 * scores if attention == "unfused" else 0)
    parts = {"weights": n * weight_b / GIB, "gradients": n * grad_b / GIB, "optimizer": n * opt_b / GIB,
             "activations": activations / GIB, "transient": transient / GIB}
    parts["context+fragmentation"] = CONTEXT_GIB + FRAGMENTATION * sum(parts.values())
    formulas = {"weights": f"{n:,} x {weight_b} B", "gradients": f"{n:,} x {grad_b} B (fp32 buffer)",
                "optimizer": f"{n:,} x {opt_b:g} B ({'fp32 master + ' if bf16 else ''}Adam m, v"
                             f"{f', sharded over {shard}' if shard > 1 else ''})",
                "activations": f"{tokens:,} tokens x ({fcfg.num_layers + aux} layers x {layer:,.0f} B + {aux + 1} exits x "
                               f"{per_exit:,.0f} B); recompute {recompute}, attention {attention}"
                               + (f"; + {rebuilt / GIB:.2f} GiB rebuilt in the backward" if rebuilt else ""),
                "transient": f"max(logits {tokens:,} x {e + 8} B x {v:,}" + (f", 2 x scores {scores:,} B)" if attention == "unfused" else ")"),
                "context+fragmentation": f"{CONTEXT_GIB} GiB + {FRAGMENTATION:.0%} of the rest"}
    return MemoryPlan(contender, n, parts, formulas)


def hf_layer_activation_bytes(fcfg) -> float:
    """Per token, one transformers Qwen3 decoder layer with fp32 weights under bf16 autocast and SDPA: the
    residual stream stays fp32, each RMSNorm keeps its fp32 input and normalised value (8h each, Q/K norms
    8(a + g)d), each projection keeps its own bf16 cast of its input (q, k, v: 6h; gate, up: 4h; o: 2ad),
    RoPE's products come out fp32 (4(a + g)d), SDPA keeps bf16 q, k, v and its output (2(2a + 2g)d) and a
    log-sum-exp (4a), the MLP keeps gate, up, the SiLU and the product (8f)."""
    h, a, g, d, f = (fcfg.hidden_size, fcfg.num_attention_heads, fcfg.num_query_groups, fcfg.kv_channels,
                     fcfg.ffn_hidden_size)
    return 16 * h + 8 * (a + g) * d + 6 * h + 4 * h + 2 * a * d + 4 * (a + g) * d + 2 * (2 * a + 2 * g) * d + 4 * a + 8 * f


def hf_plan(fcfg, micro_batch: int, seq: int) -> MemoryPlan:
    """A Hugging Face training loop (transformers' Qwen3 with the same branches, fp32 weights, bf16 autocast,
    torch AdamW, every exit's loss summed before one backward)."""
    n = parameter_count(fcfg)["total"]
    tokens = micro_batch * seq
    aux = len(fcfg.exits) - 1
    h, v = fcfg.hidden_size, fcfg.model_vocab_size
    layer = hf_layer_activation_bytes(fcfg)
    per_exit = 8 * h + 2 * h + 4 * v  # the norm (fp32), the head's bf16 input, log_softmax's fp32 output
    activations = tokens * ((fcfg.num_layers + aux) * layer + (aux + 1) * per_exit)
    transient = tokens * (2 + 4 + 4) * v  # bf16 logits, their fp32 copy, and the fp32 gradient in the backward
    parts = {"weights": n * 4 / GIB, "gradients": n * 4 / GIB, "optimizer": n * 8 / GIB, "autocast_copies": n * 2 / GIB,
             "activations": activations / GIB, "transient": transient / GIB}
    parts["context+fragmentation"] = CONTEXT_GIB + FRAGMENTATION * sum(parts.values())
    formulas = {"weights": f"{n:,} x 4 B (fp32)", "gradients": f"{n:,} x 4 B", "optimizer": f"{n:,} x 8 B (AdamW m, v)",
                "autocast_copies": f"{n:,} x 2 B (bf16 weight casts kept for the backward)",
                "activations": f"{tokens:,} tokens x ({fcfg.num_layers + aux} layers x {layer:,.0f} B + {aux + 1} exits x {per_exit:,} B)",
                "transient": f"{tokens:,} x 10 B x {v:,} (logits bf16 + fp32 + fp32 gradient)",
                "context+fragmentation": f"{CONTEXT_GIB} GiB + {FRAGMENTATION:.0%} of the rest"}
    return MemoryPlan("hf", n, parts, formulas)
