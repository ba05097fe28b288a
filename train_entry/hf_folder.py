"""A Hugging Face model folder as ``from_pretrained`` reads it: ``config.json``, weights in safetensors
shards of bounded size with ``model.safetensors.index.json`` (one ``model.safetensors`` when it fits),
``generation_config.json`` and the tokenizer's files.

Shards are planned by huggingface_hub's ``split_torch_state_dict_into_shards`` (the same plan
``save_pretrained`` makes) and each shard is cast to the export dtype only when it is written, so at most one
shard exists in the export dtype beside the fp32 weights.
"""

from __future__ import annotations

import json
import os
import shutil

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# files of a tokenizer folder that AutoTokenizer reads, copied when they sit beside tokenizer.json
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def write_weights(tensors: dict[str, torch.Tensor], folder: str, dtype: str, max_shard_size: str | int = "5GB") -> list[str]:
    """The tensors cast to ``dtype`` as safetensors shards; returns the files written."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    target = DTYPES[dtype]
    # plan on the export dtype's sizes (a bf16 shard holds twice the fp32 parameters)
    sized = {k: torch.empty(v.shape, dtype=target, device="meta") for k, v in tensors.items()}
    plan = split_torch_state_dict_into_shards(sized, max_shard_size=max_shard_size)
    for file, names in plan.filename_to_tensors.items():
        shard = {n: tensors[n].to(target).contiguous() for n in names}
        save_file(shard, os.path.join(folder, file), metadata={"format": "pt"})
        del shard
    if plan.is_sharded:
        index = {"metadata": {"total_size": plan.metadata["total_size"]}, "weight_map": plan.tensor_to_filename}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    return sorted(plan.filename_to_tensors)


def write_tokenizer(folder: str, tokenizer_json: str, eos_token: str, context_length: int) -> None:
    """The run's tokenizer files; a ``tokenizer_config.json`` is written when the tokenizer has none."""
    source = os.path.dirname(os.path.abspath(tokenizer_json))
    copied = False
    for name in TOKENIZER_FILES:
        path = tokenizer_json if name == "tokenizer.json" else os.path.join(source, name)
        if os.path.exists(path):
            shutil.copyfile(path, os.path.join(folder, name))
            copied |= name == "tokenizer_config.json"
    if not copied:
        with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos_token, "pad_token": eos_token,
                       "model_max_length": context_length}, f, indent=2)


def write_generation_config(folder: str, eos_token_id: int) -> None:
    """Greedy by default; generation stops at the end-of-document token the model was trained with."""
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": eos_token_id, "eos_token_id": eos_token_id, "pad_token_id": eos_token_id,
                   "do_sample": False}, f, indent=2)


def write_modeling_code(folder: str) -> None:
    """Our modeling code for the Ruyi2 layout (``train_entry/hf_modeling``), which ``auto_map`` names."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_modeling")
    for name in ("configuration_ruyi_qwen3.py", "modeling_ruyi_qwen3.py"):
        shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))
