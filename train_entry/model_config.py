"""The familial model's configuration: a Qwen3 backbone plus early exits, and its megatron-core config."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FamilialConfig:
    """Qwen3 decoder (GQA, QK-norm, SwiGLU, RMSNorm, RoPE) with exits.

    ``exits`` are 0-based layer indices e_k: branch k runs backbone layers [0, e_k), then its own decoder
    layer (initialised from backbone layer e_k), its own RMSNorm and LM head. The last exit must be
    ``num_layers - 1``: that branch is the full model (backbone final norm and output layer).
    """

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    kv_channels: int
    exits: tuple[int, ...]
    vocab_size: int = 151936
    max_sequence_length: int = 8192
    rope_theta: float = 1_000_000.0
    norm_eps: float = 1e-6
    # the context the model serves (a Qwen3 base's max_position_embeddings); None: max_sequence_length
    context_length: int | None = None
    # the full model's LM head is the embedding matrix (Qwen3-0.6B/1.7B/4B); exit branches keep heads of their own
    tie_embeddings: bool = False
    # a base's RoPE scaling, as train_entry/rope_scaling.py reads it (None: plain RoPE)
    rope_scaling: dict | None = None
    # rows of the embedding and heads in the model: the vocabulary padded for tensor parallelism as Megatron-LM
    # pads it (None: vocab_size); the padding never leaves the trained checkpoint
    padded_vocab_size: int | None = None

    def __post_init__(self):
        ex = tuple(self.exits)
        if not ex or list(ex) != sorted(set(ex)):
            raise ValueError(f"exits must be strictly increasing, got {ex}")
        if ex[-1] != self.num_layers - 1:
            raise ValueError(f"the last exit must be num_layers - 1 = {self.num_layers - 1} (the full model), got {ex}")
        if ex[0] < 1:
            raise ValueError(f"an exit needs at least one backbone layer before it (e >= 1), got {ex}")
        if self.num_attention_heads % self.num_query_groups:
            raise ValueError("num_attention_heads must be a multiple of num_query_groups")

    @property
    def model_vocab_size(self) -> int:
        return self.padded_vocab_size or self.vocab_size

    @property
    def aux_exits(self) -> tuple[int, ...]:
        return tuple(self.exits[:-1])

    def exit_name(self, e: int) -> str:
        return f"exit{e}"

    def transformer_config(self, tp: int = 1, pp: int = 1, params_dtype=torch.float32, pipeline_layout: list | None = None,
                           recompute: str = "none", cpu_init: bool | None = None):
        """``recompute``: none; selective (attention scores recomputed in the backward, megatron-core's
        default selective set); full (each decoder layer's activations recomputed, one layer per chunk)."""
        from megatron.core.transformer.transformer_config import TransformerConfig

        from train_entry.rope_scaling import megatron_rope

        rope = megatron_rope(self.rope_scaling)
        config_class = TransformerConfig
        if rope.position_embedding_type == "yarn":
            from train_entry.yarn_config import YarnTransformerConfig as config_class
        on_cpu = not torch.cuda.is_available()
        recompute_args = {"none": {}, "selective": {"recompute_granularity": "selective"},
                          "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}}
        return config_class(
            **recompute_args[recompute],
            **dict(rope.config_fields),
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            ffn_hidden_size=self.ffn_hidden_size,
            num_attention_heads=self.num_attention_heads,
            num_query_groups=self.num_query_groups,
            kv_channels=self.kv_channels,
            normalization="RMSNorm",
            layernorm_epsilon=self.norm_eps,
            gated_linear_unit=True,
            activation_func=F.silu,
            add_bias_linear=False,
            add_qkv_bias=False,
            qk_layernorm=True,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            tensor_model_parallel_size=tp,
            pipeline_model_parallel_size=pp,
            pipeline_model_parallel_layout=pipeline_layout if pp > 1 else None,
            pipeline_dtype=params_dtype,
            params_dtype=params_dtype,
            bf16=params_dtype == torch.bfloat16,
            # megatron-core creates weights with an explicit CUDA device unless this is set
            use_cpu_initialization=on_cpu if cpu_init is None else cpu_init,
            **fused_kernels(not on_cpu, bf16=params_dtype == torch.bfloat16),
            batch_p2p_comm=not on_cpu,
        )


def fused_kernels(on_cuda: bool, bf16: bool = True) -> dict[str, bool]:
    """The fused kernels megatron-core runs on a GPU: those written in PyTorch (SwiGLU and bias-dropout-add
    through its jit fuser; the vocab-parallel cross-entropy in bf16 training) whenever CUDA is present; RoPE
    fusion only with Transformer Engine, gradient-accumulation fusion and the masked softmax (unfused attention
    only) only with Apex's CUDA extensions, each where it is installed. On a CPU none: the torch paths compute
    the same function (``tests/test_attention.py`` runs the PyTorch-written ones on a CPU against them).
    megatron-core 0.16.1's fused cross-entropy returns the logits' gradient in bf16 whatever the logits' dtype:
    the same as autograd gives bf16 logits, a silent loss of precision for fp32 ones, so fp32 training keeps
    the plain one. README "Training" lists what runs fused."""
    from importlib.util import find_spec

    if not on_cuda:
        return dict(bias_activation_fusion=False, bias_dropout_fusion=False, cross_entropy_loss_fusion=False,
                    apply_rope_fusion=False, gradient_accumulation_fusion=False, masked_softmax_fusion=False,
                    persist_layer_norm=False)
    return dict(bias_activation_fusion=True, bias_dropout_fusion=True, cross_entropy_loss_fusion=bf16,
                apply_rope_fusion=find_spec("transformer_engine") is not None,
                gradient_accumulation_fusion=find_spec("fused_weight_gradient_mlp_cuda") is not None,
                masked_softmax_fusion=find_spec("scaled_upper_triang_masked_softmax_cuda") is not None,
                persist_layer_norm=False)


PRESETS: dict[str, FamilialConfig] = {
    # Qwen3-14B-Base with Ruyi2's exits: 1.7B (3 layers), 8B (22 layers), 14B (40 layers)
    "ruyi2-14b": FamilialConfig(40, 5120, 17408, 40, 8, 128, (2, 21, 39)),
    # Qwen3-0.6B-shaped proxy for mixture ablations and throughput runs
    "proxy-0.5b": FamilialConfig(28, 1024, 3072, 16, 8, 128, (2, 14, 27)),
    # CPU tests and the demo
    "tiny": FamilialConfig(4, 64, 128, 4, 2, 16, (1, 2, 3)),
}


def padded_vocab(vocab_size: int, tp: int, divisible_by: int) -> int | None:
    """The vocabulary rounded up to a multiple of ``divisible_by`` and of TP (each tensor-parallel rank holds an
    equal slice of the embedding and heads); None when it needs no padding. Megatron-LM pads to a multiple of
    divisible_by x TP, so the padded size changes with TP and a checkpoint no longer loads at another TP; the
    least common multiple gives the same size for every power-of-two TP up to ``divisible_by`` (Qwen3's
    151,936 = 128 x 1,187 is never padded), with slices that are still multiples of divisible_by / TP."""
    multiple = math.lcm(divisible_by, tp)
    padded = -(-vocab_size // multiple) * multiple
    return padded if padded != vocab_size else None


def build_config(preset: str, seq_length: int, **overrides) -> FamilialConfig:
    base = PRESETS[preset]
    fields = {k: v for k, v in overrides.items() if v is not None}
    if "exits" in fields:
        fields["exits"] = tuple(fields["exits"])
    elif "num_layers" in fields and fields["num_layers"] != base.num_layers:
        raise ValueError("changing num_layers needs explicit exits")
    return replace(base, max_sequence_length=seq_length, **fields)
