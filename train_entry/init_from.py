"""Continued pretraining starts from weights: a Hugging Face Qwen3 folder, or a megatron-core checkpoint of
this project (a joint run, or a plain Qwen3 trained here).

Hugging Face folders are read the way a large model must be read: every rank loads only its own slice
(its pipeline stage's layers, its tensor-parallel shard), one tensor at a time, lazily from whichever
safetensors file holds it (``model.safetensors.index.json`` or each file's header), so host memory holds
one decoder layer at a time, never the whole model in fp32. Branch k's decoder layer is a copy of backbone
layer e_k, and every exit's norm and head start from the final norm and head (the embedding for a
checkpoint with tied embeddings), as the report initialises Ruyi2 from Qwen3-14B.
"""

from __future__ import annotations

import json
import os
import re

import torch

from train_entry.hf_interop import DAE_BLOCK, layer_from_hf
from train_entry.model_config import FamilialConfig

HF, MCORE = "hf", "mcore"


class InitError(ValueError):
    """A starting checkpoint that cannot be read or does not fit the model; the message names it."""


def detect_format(path: str) -> str:
    """``hf`` for a folder with config.json and safetensors, ``mcore`` for a checkpoint folder of ours."""
    if os.path.exists(os.path.join(path, "latest_checkpointed_iteration.txt")) or os.path.exists(os.path.join(path, "metadata.json")):
        return MCORE
    if os.path.exists(os.path.join(path, "config.json")) and any(f.endswith(".safetensors") for f in os.listdir(path)):
        return HF
    raise InitError(f"{path}: neither a Hugging Face folder (config.json + *.safetensors) nor a checkpoint of ours "
                    "(latest_checkpointed_iteration.txt)")


class SafetensorsFolder:
    """Tensors of a Hugging Face folder by name, read on demand (a whole tensor, or a range of its rows)."""

    def __init__(self, folder: str):
        from safetensors import safe_open

        self.folder = folder
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                self.where = {name: os.path.join(folder, file) for name, file in json.load(f)["weight_map"].items()}
        else:
            self.where = {}
            for file in sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")):
                with safe_open(os.path.join(folder, file), framework="pt") as st:
                    self.where.update({name: os.path.join(folder, file) for name in st.keys()})
        if not self.where:
            raise InitError(f"{folder}: no tensors in any .safetensors file")
        self._open: dict[str, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def _file(self, name: str):
        from safetensors import safe_open

        if name not in self.where:
            raise InitError(f"{self.folder}: no tensor {name!r} in the checkpoint")
        path = self.where[name]
        if path not in self._open:
            self._open[path] = safe_open(path, framework="pt")
        return self._open[path]

    def get(self, name: str) -> torch.Tensor:
        return self._file(name).get_tensor(name)

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return self._file(name).get_slice(name)[start:stop]


def hf_config(folder: str) -> dict:
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)


def config_from_qwen3(folder: str, exits: tuple[int, ...], seq_length: int | None = None,
                      untie_embeddings: bool = False) -> FamilialConfig:
    """The familial model of a Qwen3 checkpoint's shape with these exits (the last: num_hidden_layers - 1): its
    tied embeddings (unless ``untie_embeddings``: the full model's head starts as a copy of the embedding and
    trains on its own), RoPE base and scaling, and context length."""
    from train_entry.rope_scaling import RopeScalingError, read_rope_scaling

    where = os.path.join(folder, "config.json")
    c = hf_config(folder)
    rope = c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0)
    try:
        scaling = read_rope_scaling(c, where)
    except RopeScalingError as e:
        raise InitError(str(e)) from None
    return FamilialConfig(
        num_layers=c["num_hidden_layers"], hidden_size=c["hidden_size"], ffn_hidden_size=c["intermediate_size"],
        num_attention_heads=c["num_attention_heads"], num_query_groups=c["num_key_value_heads"],
        kv_channels=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], exits=tuple(exits),
        vocab_size=c["vocab_size"], max_sequence_length=seq_length or c.get("max_position_embeddings", 8192),
        rope_theta=float(rope), norm_eps=c.get("rms_norm_eps", 1e-6), context_length=c.get("max_position_embeddings"),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)) and not untie_embeddings, rope_scaling=scaling,
    )


def _tp() -> tuple[int, int]:
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def _local_slice(full: torch.Tensor, param: torch.nn.Parameter, name: str, gated: bool) -> torch.Tensor:
    """This tensor-parallel rank's part of a full (TP=1) tensor, as megatron-core lays the parameter out."""
    rank, size = _tp()
    if size == 1 or not getattr(param, "tensor_model_parallel", False):
        return full
    dim = param.partition_dim
    if gated and name.endswith("linear_fc1.weight"):  # [gate; up]: each rank holds its gate rows then its up rows
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(size, dim=0)[rank], up.chunk(size, dim=0)[rank]])
    return full.chunk(size, dim=dim)[rank]


def _vocab_rows(src: SafetensorsFolder, name: str, param: torch.nn.Parameter) -> torch.Tensor:
    """The rows of an embedding or head this rank holds (vocabulary-parallel), read without the rest; rows of
    the padding past the checkpoint's vocabulary are zeros (``FamilialConfig.padded_vocab_size``)."""
    rank, size = _tp()
    n = param.shape[0]
    start = rank * n if size > 1 and getattr(param, "tensor_model_parallel", False) else 0
    rows = src.rows(name, start, start + n)
    if rows.shape[0] < n:
        rows = torch.cat([rows, rows.new_zeros(n - rows.shape[0], *rows.shape[1:])])
    return rows


def _copy(param: torch.nn.Parameter, value: torch.Tensor, what: str) -> None:
    if tuple(value.shape) != tuple(param.shape):
        raise InitError(f"{what}: shape {tuple(value.shape)} in the checkpoint, {tuple(param.shape)} in the model")
    with torch.no_grad():
        param.copy_(value.to(param.dtype))


def load_hf_qwen3(model, fcfg: FamilialConfig, folder: str) -> int:
    """Every parameter this rank holds, from a stock Qwen3 folder; returns the number of tensors set.
    Collective-free: each rank reads what it needs. A tied model's last pipeline stage holds a copy of the
    embedding as its head (megatron-core keeps the two equal by reducing their gradients together)."""
    src = SafetensorsFolder(folder)
    tied = bool(hf_config(folder).get("tie_word_embeddings", False))
    if "lm_head.weight" in src and not tied:
        head = "lm_head.weight"
    elif tied:
        head = "model.embed_tokens.weight"  # the base's head is its embedding (trained tied, or untied from here)
    else:
        raise InitError(f"{folder}: no lm_head.weight, and config.json does not tie the embeddings "
                        "(tie_word_embeddings is false): the checkpoint is incomplete")
    gated = model.config.gated_linear_unit
    params = dict(model.named_parameters())
    done: set[str] = set()

    def layer(hf_index: int, prefix: str) -> None:
        hf = {n: src.get(n) for n in src.where if n.startswith(f"model.layers.{hf_index}.")}
        if not hf:
            raise InitError(f"{folder}: no tensors for model.layers.{hf_index} (the checkpoint has fewer layers than the model)")
        full: dict[str, torch.Tensor] = {}
        layer_from_hf(hf, f"model.layers.{hf_index}", prefix, fcfg, full)
        for name, value in full.items():
            if name in params:
                _copy(params[name], _local_slice(value, params[name], name, gated), f"{folder}: {name}")
                done.add(name)

    for i, block in enumerate(model.decoder.layers):  # this pipeline stage's layers: local index i, global number
        layer(block.layer_number - 1, f"decoder.layers.{i}")
    for key in model.exits.keys():
        layer(int(key), f"exits.{key}.layer")
    for name, param in params.items():
        if name == "embedding.word_embeddings.weight":
            _copy(param, _vocab_rows(src, "model.embed_tokens.weight", param), f"{folder}: model.embed_tokens.weight")
        elif name == "output_layer.weight" or re.fullmatch(r"exits\.\d+\.head\.weight", name):
            _copy(param, _vocab_rows(src, head, param), f"{folder}: {head}")
        elif name == "decoder.final_layernorm.weight" or re.fullmatch(r"exits\.\d+\.norm\.weight", name):
            _copy(param, src.get("model.norm.weight"), f"{folder}: model.norm.weight")
        else:
            continue
        done.add(name)
    missing = sorted(n for n in params if n not in done and not DAE_BLOCK.match(n))
    if missing:
        raise InitError(f"{folder}: nothing in the checkpoint for {missing[:5]}")
    return len(done)


def check_hf_fits(folder: str, fcfg: FamilialConfig) -> None:
    """The model shape the recipe asks for is the checkpoint's (before any rank builds a model)."""
    c = hf_config(folder)
    want = {"num_hidden_layers": fcfg.num_layers, "hidden_size": fcfg.hidden_size, "intermediate_size": fcfg.ffn_hidden_size,
            "num_attention_heads": fcfg.num_attention_heads, "num_key_value_heads": fcfg.num_query_groups,
            "vocab_size": fcfg.vocab_size}
    bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k) != v}
    if bad:
        raise InitError(f"{folder}/config.json does not fit the model: " + ", ".join(f"{k} {a} (model {b})" for k, (a, b) in bad.items()))
