"""Hugging Face interop: the name correspondence between megatron-core and the Hugging Face layouts, and
export to the published Ruyi2 layout (``model_type: ruyi_qwen3``). Reading a Hugging Face checkpoint into
a model (continued pretraining) is ``init_from.py``.

Ruyi2 layout (stock Qwen3 names for a model without branches): ``model.embed_tokens``, ``model.layers.{i}`` (Qwen3 names), ``model.eelayers.{k}`` for every
branch but the last, ``model.norms.{k}`` and ``lm_head.{k}`` for every exit. Config keys
``early_exit_points``, ``shared_heads: false``, ``default_early_exit_point``.

megatron-core fuses Q, K and V into ``linear_qkv`` grouped per KV head (for each group: its query heads,
then its key head, then its value head) and gate/up into ``linear_fc1`` (gate first); the converters split
and join those. Works on a TP=PP=1 state dict (gather shards first for a parallel checkpoint).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import torch

from pipeline.core.atomic import write_json
from train_entry.model_config import FamilialConfig

# per-layer names: megatron-core local spec -> Qwen3
_NORMS = {
    "input_layernorm.weight": "input_layernorm.weight",
    "pre_mlp_layernorm.weight": "post_attention_layernorm.weight",
    "self_attention.q_layernorm.weight": "self_attn.q_norm.weight",
    "self_attention.k_layernorm.weight": "self_attn.k_norm.weight",
}
_LINEARS = {"self_attention.linear_proj": "self_attn.o_proj", "mlp.linear_fc2": "mlp.down_proj"}


def _split_qkv(w: torch.Tensor, cfg: FamilialConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of a fused QKV matrix (or of its low-rank up factor: any number of columns) per projection."""
    groups, hd, cols = cfg.num_query_groups, cfg.kv_channels, w.shape[1]
    per = cfg.num_attention_heads // groups
    w = w.view(groups, (per + 2) * hd, cols)
    q = w[:, : per * hd].reshape(-1, cols)
    k = w[:, per * hd : (per + 1) * hd].reshape(-1, cols)
    v = w[:, (per + 1) * hd :].reshape(-1, cols)
    return q, k, v


def _join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: FamilialConfig) -> torch.Tensor:
    groups, hd, h = cfg.num_query_groups, cfg.kv_channels, cfg.hidden_size
    per = cfg.num_attention_heads // groups
    return torch.cat([q.view(groups, per * hd, h), k.view(groups, hd, h), v.view(groups, hd, h)], dim=1).reshape(-1, h)


def _linear_to_hf(sd: dict, src: str, parts: list, out: dict) -> None:
    """One megatron-core linear -> its Qwen3 linears, each ``(name, rows)`` taking its rows of the matrix.
    A compressed linear (W = up @ down, ``train_entry/low_rank.py``) becomes low-rank linears sharing the
    down factor: ``name.down.weight`` and ``name.up.weight`` (our modeling code's ``LowRankLinear``)."""
    if f"{src}.weight" in sd:
        for name, rows in parts:
            out[f"{name}.weight"] = rows(sd[f"{src}.weight"])
        return
    down, up = sd[f"{src}.down"], sd[f"{src}.up"]
    for name, rows in parts:
        out[f"{name}.down.weight"], out[f"{name}.up.weight"] = down, rows(up)


def layer_to_hf(sd: dict, src: str, dst: str, cfg: FamilialConfig, out: dict) -> None:
    for m, h in _NORMS.items():
        out[f"{dst}.{h}"] = sd[f"{src}.{m}"]
    for m, h in _LINEARS.items():
        _linear_to_hf(sd, f"{src}.{m}", [(f"{dst}.{h}", lambda w: w)], out)
    qkv = [(f"{dst}.self_attn.{p}_proj", lambda w, i=i: _split_qkv(w, cfg)[i]) for i, p in enumerate("qkv")]
    _linear_to_hf(sd, f"{src}.self_attention.linear_qkv", qkv, out)
    fc1 = [(f"{dst}.mlp.{p}_proj", lambda w, i=i: w.chunk(2, dim=0)[i]) for i, p in enumerate(("gate", "up"))]
    _linear_to_hf(sd, f"{src}.mlp.linear_fc1", fc1, out)


def low_rank_modules(hf_tensors: dict) -> dict[str, int]:
    """Low-rank linears of an exported state dict: module path under ``model.dae_blocks`` -> rank."""
    prefix = "model.dae_blocks."
    return {name[len(prefix):-len(".down.weight")]: int(t.shape[0]) for name, t in sorted(hf_tensors.items())
            if name.startswith(prefix) and name.endswith(".down.weight")}


def layer_from_hf(sd: dict, src: str, dst: str, cfg: FamilialConfig, out: dict) -> None:
    for m, h in list(_NORMS.items()) + [(f"{m}.weight", f"{h}.weight") for m, h in _LINEARS.items()]:
        out[f"{dst}.{m}"] = sd[f"{src}.{h}"]
    out[f"{dst}.self_attention.linear_qkv.weight"] = _join_qkv(
        sd[f"{src}.self_attn.q_proj.weight"], sd[f"{src}.self_attn.k_proj.weight"], sd[f"{src}.self_attn.v_proj.weight"], cfg
    )
    out[f"{dst}.mlp.linear_fc1.weight"] = torch.cat([sd[f"{src}.mlp.gate_proj.weight"], sd[f"{src}.mlp.up_proj.weight"]])


def _correspondence(cfg: FamilialConfig, dae: dict[int, int] | None = None, untie: bool = False):
    """(megatron-core name, Ruyi2 HF name, is a decoder layer) for every module, in one place for both
    directions. ``dae``: exit -> number of DaE blocks after its branch layer (our modeling code's
    ``model.dae_blocks.{e}.{j}``; the published layout has none). A tied model's full-model head is its
    embedding: not written (the config ties it), or with ``untie`` written as a copy of the embedding (for
    code that loads every head by name)."""
    yield "embedding.word_embeddings.weight", "model.embed_tokens.weight", False
    for i in range(cfg.num_layers):
        yield f"decoder.layers.{i}", f"model.layers.{i}", True
    for k, e in enumerate(cfg.exits):
        if e == cfg.exits[-1]:  # the full model: the backbone's own final norm and output layer
            yield "decoder.final_layernorm.weight", f"model.norms.{k}.weight", False
            if not cfg.tie_embeddings:
                yield "output_layer.weight", f"lm_head.{k}.weight", False
            elif untie:
                yield "embedding.word_embeddings.weight", f"lm_head.{k}.weight", False
        else:
            yield f"exits.{e}.layer", f"model.eelayers.{k}", True
            yield f"exits.{e}.norm.weight", f"model.norms.{k}.weight", False
            yield f"exits.{e}.head.weight", f"lm_head.{k}.weight", False
    for e, n in sorted((dae or {}).items()):
        for j in range(n):
            yield f"exits.{e}.blocks.{j}", f"model.dae_blocks.{e}.{j}", True


DAE_BLOCK = re.compile(r"exits\.(\d+)\.blocks\.(\d+)\.")  # a DaE block's tensor in our model
HF_DAE_BLOCK = re.compile(r"model\.dae_blocks\.(\d+)\.(\d+)\.")  # ... in our Hugging Face modeling code


def dae_blocks_in(names, pattern: re.Pattern = DAE_BLOCK) -> dict[int, int]:
    """exit -> number of DaE blocks, from state-dict or checkpoint names (``pattern`` captures exit, block)."""
    found: dict[int, set[int]] = {}
    for name in names:
        m = pattern.match(name)
        if m:
            found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {e: len(js) for e, js in sorted(found.items())}


def _vocabulary(t: torch.Tensor, cfg: FamilialConfig) -> torch.Tensor:
    """An embedding's or head's rows without the tensor-parallel padding (``FamilialConfig.padded_vocab_size``)."""
    return t[: cfg.vocab_size] if t.shape[0] == cfg.model_vocab_size != cfg.vocab_size else t


def hf_units(names: list[str], fetch, cfg: FamilialConfig, untie: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """The Ruyi2 Hugging Face tensors module by module (the embedding, each decoder layer, each exit's branch
    layer, norm and head, each DaE block). ``names``: the megatron-core state-dict names of the model;
    ``fetch(names) -> {name: tensor}`` reads them, so a caller streaming from a checkpoint holds one module.
    ``untie``: a tied model's full-model head written out (``_correspondence``)."""
    for mcore, hf, is_layer in _correspondence(cfg, dae_blocks_in(names), untie):
        if is_layer:
            prefix = mcore + "."
            sd = fetch([n for n in names if n.startswith(prefix) and not n.endswith("_extra_state")])
            out: dict[str, torch.Tensor] = {}
            layer_to_hf(sd, mcore, hf, cfg, out)
            yield out
        elif mcore.endswith(".weight") and mcore not in names and mcore.removesuffix("weight") + "down" in names:
            # a head compressed by `ruyi2 compress --head-ratio`: its two factors, as our modeling code's LowRankLinear
            base, hf_base = mcore.removesuffix(".weight"), hf.removesuffix(".weight")
            sd = fetch([f"{base}.down", f"{base}.up"])
            yield {f"{hf_base}.down.weight": sd[f"{base}.down"], f"{hf_base}.up.weight": _vocabulary(sd[f"{base}.up"], cfg)}
        else:
            yield {hf: _vocabulary(fetch([mcore])[mcore], cfg)}


def low_rank_heads(hf_tensors: dict) -> dict[str, int]:
    """Compressed LM heads of an exported state dict: head index -> rank."""
    return {name.split(".")[1]: int(t.shape[0]) for name, t in hf_tensors.items()
            if name.startswith("lm_head.") and name.endswith(".down.weight")}


def mcore_to_ruyi_hf(sd: dict, cfg: FamilialConfig) -> dict[str, torch.Tensor]:
    """A TP=PP=1 FamilialGPTModel state dict -> the Ruyi2 Hugging Face state dict (DaE blocks included)."""
    out: dict[str, torch.Tensor] = {}
    for unit in hf_units(list(sd), lambda names: {n: sd[n] for n in names}, cfg):
        out.update(unit)
    return {name: t.detach().contiguous().clone() for name, t in out.items()}


def ruyi_hf_to_mcore(sd: dict, cfg: FamilialConfig) -> dict[str, torch.Tensor]:
    """The Ruyi2 Hugging Face state dict -> a FamilialGPTModel state dict (load with strict=False)."""
    out: dict[str, torch.Tensor] = {}
    for mcore, hf, is_layer in _correspondence(cfg, dae_blocks_in(sd, HF_DAE_BLOCK)):
        if is_layer:
            layer_from_hf(sd, hf, mcore, cfg, out)
        elif sd[hf].shape[0] == cfg.vocab_size != cfg.model_vocab_size:  # the padding rows: zeros
            out[mcore] = torch.cat([sd[hf], sd[hf].new_zeros(cfg.model_vocab_size - cfg.vocab_size, *sd[hf].shape[1:])])
        else:
            out[mcore] = sd[hf]
    return out


def context_length(cfg: FamilialConfig) -> int:
    """The context the exported model serves: its base's, and at least what it was trained on."""
    return max(cfg.context_length or 0, cfg.max_sequence_length)


def head_written_out(cfg: FamilialConfig, published: bool) -> bool:
    """A tied model's full-model head is written as a copy of the embedding for the published Ruyi2 modeling
    code, which loads every exit's head by name; our modeling code and the stock Qwen3 layout tie it."""
    return published and cfg.tie_embeddings


def ruyi_hf_config(cfg: FamilialConfig, dtype: str = "float32", default_exit: int | None = None, untie: bool = False) -> dict:
    """``untie``: a tied model written with its full-model head as a copy (``_correspondence``)."""
    ctx = context_length(cfg)
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
        "rope_scaling": dict(cfg.rope_scaling) if cfg.rope_scaling else None,
        "max_position_embeddings": ctx,
        # full attention over the whole context: the published configuration class defaults to a 4,096-token
        # window, which modeling code may apply whatever use_sliding_window says
        "use_sliding_window": False,
        "sliding_window": ctx,
        "max_window_layers": cfg.num_layers,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tie_embeddings and not untie,
        "early_exit_points": list(cfg.exits),
        "shared_heads": False,
        "default_early_exit_point": -1 if default_exit is None else default_exit,
        "torch_dtype": dtype,
        # modeling code of our own, copied beside the weights (train_entry/hf_modeling)
        "auto_map": {"AutoConfig": "configuration_ruyi_qwen3.RuyiQwen3Config",
                     "AutoModelForCausalLM": "modeling_ruyi_qwen3.RuyiQwen3ForCausalLM"},
    }


def qwen3_hf_config(cfg: FamilialConfig, dtype: str = "float32") -> dict:
    """A stock Qwen3 config for a model without branches (its only exit is the full model)."""
    c = {k: v for k, v in ruyi_hf_config(cfg, dtype).items()
         if k not in ("early_exit_points", "shared_heads", "default_early_exit_point", "auto_map")}
    return c | {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}


def write_hf(units, cfg: FamilialConfig, folder: str, dtype: str = "float32", max_shard_size: str | int = "5GB",
             default_exit: int | None = None, published: bool = False, dae: dict[int, int] | None = None) -> str:
    """Write ``units`` (``hf_units``) to ``folder`` as they come: safetensors shards, ``config.json`` and, for
    the Ruyi2 layout, our modeling code. A model whose only exit is the full model (e.g. a base trained here)
    is written in the stock Qwen3 layout. ``published``: only what the published Ruyi2 modeling code loads
    (no DaE blocks, no auto_map)."""
    from train_entry.hf_folder import ShardWriter, write_modeling_code

    untie = head_written_out(cfg, published)
    if dae and (published or len(cfg.exits) == 1):
        raise ValueError(f"the model has DaE blocks after exit(s) {sorted(dae)} (train.dae); the "
                         f"{'published Ruyi2' if published else 'stock Qwen3'} layout has no place for them, and exporting "
                         "without them would change those exits' outputs (export with our modeling code instead)")
    os.makedirs(folder, exist_ok=True)
    writer, low_rank, heads = ShardWriter(folder, dtype, max_shard_size), {}, {}
    for unit in units:
        if len(cfg.exits) == 1:  # plain Qwen3: the one norm and head keep their stock names
            unit = {{"model.norms.0.weight": "model.norm.weight", "lm_head.0.weight": "lm_head.weight"}.get(k, k): v
                    for k, v in unit.items()}
        low_rank.update(low_rank_modules(unit))
        heads.update(low_rank_heads(unit))
        if heads and published:
            raise ValueError(f"LM head(s) {sorted(heads)} are compressed to low rank (ruyi2 compress --head-ratio); the published "
                             "Ruyi2 layout has full heads only (export with our modeling code instead)")
        writer.add(unit)
    writer.close()
    if len(cfg.exits) == 1:
        config = qwen3_hf_config(cfg, dtype)
    else:
        config = ruyi_hf_config(cfg, dtype, default_exit, untie)
        if published:
            config.pop("auto_map")
        if dae:
            config["dae_blocks"] = {str(e): n for e, n in sorted(dae.items())}
            if low_rank:  # compressed by `ruyi2 compress`
                config["dae_low_rank"] = dict(sorted(low_rank.items()))
        if heads:
            config["low_rank_heads"] = dict(sorted(heads.items()))
    write_json(os.path.join(folder, "config.json"), config, indent=2)
    if "auto_map" in config:
        write_modeling_code(folder)
    return folder


def export_ruyi_hf(model, cfg: FamilialConfig, folder: str, dtype: str = "float32", max_shard_size: str | int = "5GB",
                   default_exit: int | None = None, published: bool = False) -> str:
    """A model in memory written as a Hugging Face folder (``write_hf``)."""
    sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    units = hf_units(list(sd), lambda names: {n: sd[n] for n in names}, cfg, head_written_out(cfg, published))
    return write_hf(units, cfg, folder, dtype, max_shard_size, default_exit, published, dae_blocks_in(sd))
