"""Hugging Face interop: export to the published Ruyi2 layout (``model_type: ruyi_qwen3``) and import a
stock Qwen3 checkpoint, building the exit branches from it.

Ruyi2 layout: ``model.embed_tokens``, ``model.layers.{i}`` (Qwen3 names), ``model.eelayers.{k}`` for every
branch but the last, ``model.norms.{k}`` and ``lm_head.{k}`` for every exit. Config keys
``early_exit_points``, ``shared_heads: false``, ``default_early_exit_point``.

megatron-core fuses Q, K and V into ``linear_qkv`` grouped per KV head (for each group: its query heads,
then its key head, then its value head) and gate/up into ``linear_fc1`` (gate first); the converters split
and join those. Works on a TP=PP=1 state dict (gather shards first for a parallel checkpoint).
"""

from __future__ import annotations

import json
import os

import torch

from train_entry.model_config import FamilialConfig

# per-layer names: megatron-core local spec -> Qwen3
_LAYER_PLAIN = {
    "input_layernorm.weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.linear_proj.weight": "self_attn.o_proj.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
    "mlp.linear_fc2.weight": "mlp.down_proj.weight",
}


def _split_qkv(w: torch.Tensor, cfg: FamilialConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    groups, hd = cfg.num_query_groups, cfg.kv_channels
    per = cfg.num_attention_heads // groups
    w = w.view(groups, (per + 2) * hd, cfg.hidden_size)
    q = w[:, : per * hd].reshape(-1, cfg.hidden_size)
    k = w[:, per * hd : (per + 1) * hd].reshape(-1, cfg.hidden_size)
    v = w[:, (per + 1) * hd :].reshape(-1, cfg.hidden_size)
    return q, k, v


def _join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: FamilialConfig) -> torch.Tensor:
    groups, hd, h = cfg.num_query_groups, cfg.kv_channels, cfg.hidden_size
    per = cfg.num_attention_heads // groups
    return torch.cat([q.view(groups, per * hd, h), k.view(groups, hd, h), v.view(groups, hd, h)], dim=1).reshape(-1, h)


def _layer_to_hf(sd: dict, src: str, dst: str, cfg: FamilialConfig, out: dict) -> None:
    for m, h in _LAYER_PLAIN.items():
        out[f"{dst}.{h}"] = sd[f"{src}.{m}"]
    q, k, v = _split_qkv(sd[f"{src}.self_attention.linear_qkv.weight"], cfg)
    out[f"{dst}.self_attn.q_proj.weight"], out[f"{dst}.self_attn.k_proj.weight"], out[f"{dst}.self_attn.v_proj.weight"] = q, k, v
    gate, up = sd[f"{src}.mlp.linear_fc1.weight"].chunk(2, dim=0)
    out[f"{dst}.mlp.gate_proj.weight"], out[f"{dst}.mlp.up_proj.weight"] = gate, up


def _layer_from_hf(sd: dict, src: str, dst: str, cfg: FamilialConfig, out: dict) -> None:
    for m, h in _LAYER_PLAIN.items():
        out[f"{dst}.{m}"] = sd[f"{src}.{h}"]
    out[f"{dst}.self_attention.linear_qkv.weight"] = _join_qkv(
        sd[f"{src}.self_attn.q_proj.weight"], sd[f"{src}.self_attn.k_proj.weight"], sd[f"{src}.self_attn.v_proj.weight"], cfg
    )
    out[f"{dst}.mlp.linear_fc1.weight"] = torch.cat([sd[f"{src}.mlp.gate_proj.weight"], sd[f"{src}.mlp.up_proj.weight"]])


def _correspondence(cfg: FamilialConfig):
    """(megatron-core name, Ruyi2 HF name, is a decoder layer) for every module, in one place for both
    directions."""
    yield "embedding.word_embeddings.weight", "model.embed_tokens.weight", False
    for i in range(cfg.num_layers):
        yield f"decoder.layers.{i}", f"model.layers.{i}", True
    for k, e in enumerate(cfg.exits):
        if e == cfg.exits[-1]:  # the full model: the backbone's own final norm and output layer
            yield "decoder.final_layernorm.weight", f"model.norms.{k}.weight", False
            yield "output_layer.weight", f"lm_head.{k}.weight", False
        else:
            yield f"ee_layers.{e}", f"model.eelayers.{k}", True
            yield f"ee_norms.{e}.weight", f"model.norms.{k}.weight", False
            yield f"ee_heads.{e}.weight", f"lm_head.{k}.weight", False


def mcore_to_ruyi_hf(sd: dict, cfg: FamilialConfig) -> dict[str, torch.Tensor]:
    """A TP=PP=1 FamilialGPTModel state dict -> the Ruyi2 Hugging Face state dict."""
    out: dict[str, torch.Tensor] = {}
    for mcore, hf, is_layer in _correspondence(cfg):
        if is_layer:
            _layer_to_hf(sd, mcore, hf, cfg, out)
        else:
            out[hf] = sd[mcore]
    return {name: t.detach().contiguous().clone() for name, t in out.items()}


def ruyi_hf_to_mcore(sd: dict, cfg: FamilialConfig) -> dict[str, torch.Tensor]:
    """The Ruyi2 Hugging Face state dict -> a FamilialGPTModel state dict (load with strict=False)."""
    out: dict[str, torch.Tensor] = {}
    for mcore, hf, is_layer in _correspondence(cfg):
        if is_layer:
            _layer_from_hf(sd, hf, mcore, cfg, out)
        else:
            out[mcore] = sd[hf]
    return out


def qwen3_to_ruyi_hf(sd: dict, cfg: FamilialConfig) -> dict[str, torch.Tensor]:
    """A stock Qwen3 state dict -> the Ruyi2 layout with branches built as the report does: branch k's
    layer is a copy of backbone layer e_k; every exit's norm and head start from the final norm and head."""
    out = {k: v for k, v in sd.items() if k.startswith("model.layers.") or k == "model.embed_tokens.weight"}
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])  # tied checkpoints have no lm_head
    for k, e in enumerate(cfg.exits):
        if e != cfg.exits[-1]:
            for name, t in sd.items():
                if name.startswith(f"model.layers.{e}."):
                    out[name.replace(f"model.layers.{e}.", f"model.eelayers.{k}.", 1)] = t.clone()
        out[f"model.norms.{k}.weight"] = sd["model.norm.weight"].clone()
        out[f"lm_head.{k}.weight"] = head.clone()
    return out


def ruyi_hf_config(cfg: FamilialConfig) -> dict:
    return {
        "architectures": ["RuyiQwen3ForCausalLM"],
        "model_type": "ruyi_qwen3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.ffn_hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_query_groups,
        "head_dim": cfg.kv_channels,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_sequence_length,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "early_exit_points": list(cfg.exits),
        "shared_heads": False,
        "default_early_exit_point": -1,
        "torch_dtype": "float32",
    }


def export_ruyi_hf(model, cfg: FamilialConfig, folder: str) -> str:
    """Write ``config.json`` and ``model.safetensors`` in the Ruyi2 layout."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    tensors = mcore_to_ruyi_hf({k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}, cfg)
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(ruyi_hf_config(cfg), f, indent=2)
    return folder


def load_hf_state(folder: str) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face checkpoint folder (one or several safetensors files)."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(folder, name)))
    if not out:
        raise FileNotFoundError(f"{folder}: no .safetensors files")
    return out


def config_from_qwen3(folder: str, exits: tuple[int, ...]) -> FamilialConfig:
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    rope = c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0)
    return FamilialConfig(
        num_layers=c["num_hidden_layers"], hidden_size=c["hidden_size"], ffn_hidden_size=c["intermediate_size"],
        num_attention_heads=c["num_attention_heads"], num_query_groups=c["num_key_value_heads"],
        kv_channels=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], exits=tuple(exits),
        vocab_size=c["vocab_size"], max_sequence_length=c.get("max_position_embeddings", 8192), rope_theta=float(rope),
        norm_eps=c.get("rms_norm_eps", 1e-6),
    )


def import_qwen3(model, cfg: FamilialConfig, folder: str) -> None:
    """Load a stock Qwen3 checkpoint into a TP=PP=1 FamilialGPTModel, branches built from the backbone."""
    state = ruyi_hf_to_mcore(qwen3_to_ruyi_hf(load_hf_state(folder), cfg), cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
