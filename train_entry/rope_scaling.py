"""A Qwen3 checkpoint's RoPE scaling (``rope_scaling`` / ``rope_parameters`` in its config.json) read, carried
to the trained model and its export, and expressed in megatron-core's terms.

Two kinds are honoured, each equal to transformers' own (``tests/test_import_fidelity.py`` compares logits):
``linear`` (position interpolation: megatron-core's ``seq_len_interpolation_factor``) and ``yarn`` (megatron-
core's ``YarnRotaryEmbedding``, whose frequencies equal transformers'; its attention multiplies cos and sin by
the concentration factor it derives from ``yarn_mscale`` / ``yarn_mscale_all_dim``, set here so that the factor
is transformers' ``attention_factor``). Other kinds (dynamic NTK, LongRoPE, llama3) are refused by name:
training on silently different positions than the base was trained with would be worse than not starting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SUPPORTED = ("linear", "yarn")


class RopeScalingError(ValueError):
    pass


def read_rope_scaling(config: dict, where: str) -> dict | None:
    """The scaling of a Hugging Face config.json as a plain dict (``rope_type``, ``factor``, ...), None for
    plain RoPE; an unsupported kind raises, naming the file and the kind."""
    params = config.get("rope_scaling") or config.get("rope_parameters") or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "default":
        return None
    if kind not in SUPPORTED:
        raise RopeScalingError(f"{where}: rope_scaling {kind!r} is not one the trainer reproduces (it does "
                               f"{', '.join(SUPPORTED)} and plain RoPE)")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise RopeScalingError(f"{where}: partial_rotary_factor {params['partial_rotary_factor']} is not supported")
    out = {"rope_type": kind, "factor": float(params["factor"])}
    if kind == "yarn":
        out["original_max_position_embeddings"] = int(params.get("original_max_position_embeddings")
                                                      or config["max_position_embeddings"])
        for key in ("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim", "truncate"):
            if params.get(key) is not None:
                out[key] = params[key]
    return out


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


@dataclass(frozen=True)
class MegatronRope:
    """What megatron-core's GPT model and transformer config take for a scaling."""

    position_embedding_type: str = "rope"
    seq_len_interpolation_factor: float | None = None
    config_fields: tuple = ()  # (name, value) pairs for the transformer config


def megatron_rope(scaling: dict | None) -> MegatronRope:
    if scaling is None:
        return MegatronRope()
    if scaling["rope_type"] == "linear":
        return MegatronRope(seq_len_interpolation_factor=scaling["factor"])
    factor = scaling["factor"]
    m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if scaling.get("attention_factor") is not None:
        # megatron-core's factor is mscale(f, m) / mscale(f, m_all): with m_all = 0 the denominator is 1, and m
        # gives the stated factor
        attention = float(scaling["attention_factor"])
        if factor <= 1 and attention != 1:
            raise RopeScalingError(f"yarn: attention_factor {attention} with factor {factor} <= 1 cannot be reproduced")
        m, m_all = ((attention - 1) / (0.1 * math.log(factor)) if factor > 1 else 1.0), 0.0
    elif not (m and m_all):  # transformers' rule without both: 0.1 ln(f) + 1
        m, m_all = 1.0, 0.0
    fields = (("yarn_rotary_scaling_factor", factor),
              ("yarn_original_max_position_embeddings", scaling["original_max_position_embeddings"]),
              ("yarn_beta_fast", float(scaling.get("beta_fast") or 32)), ("yarn_beta_slow", float(scaling.get("beta_slow") or 1)),
              ("yarn_mscale", float(m)), ("yarn_mscale_all_dim", float(m_all)),
              ("yarn_correction_range_round_to_int", bool(scaling.get("truncate", True))))
    return MegatronRope("yarn", None, fields)
