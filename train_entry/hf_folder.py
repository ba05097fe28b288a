"""A Hugging Face model folder as ``from_pretrained`` reads it: ``config.json``, weights in safetensors
shards of bounded size with ``model.safetensors.index.json`` (one ``model.safetensors`` when it fits),
``generation_config.json`` and the tokenizer's files.

Shards follow huggingface_hub's sharding rule and are written while the tensors stream in (``ShardWriter``),
so at most one shard exists in memory in the export dtype.
"""

from __future__ import annotations

import fnmatch
import os
import shutil

import torch

from pipeline.core.atomic import write_json

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# files of a tokenizer folder that AutoTokenizer reads, copied when they sit beside tokenizer.json
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


class ShardWriter:
    """Safetensors shards written while the tensors stream in: each tensor is cast to the export dtype on
    arrival, and a shard is written as soon as the next tensor would take it past ``max_shard_size`` (one
    tensor larger than that gets a shard of its own), the rule of huggingface_hub's
    ``split_torch_state_dict_into_shards``; so memory holds at most one shard in the export dtype. Files are
    renamed ``model-0000i-of-0000n.safetensors`` (or ``model.safetensors`` when one suffices) at ``close``,
    which also writes the index."""

    def __init__(self, folder: str, dtype: str, max_shard_size: str | int = "5GB"):
        from huggingface_hub.serialization._base import parse_size_to_int

        self.folder, self.dtype = folder, DTYPES[dtype]
        self.limit = parse_size_to_int(max_shard_size) if isinstance(max_shard_size, str) else int(max_shard_size)
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = self.total = 0
        self.shards: list[list[str]] = []
        self._storages: set[int] = set()

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            t = t.detach().to(self.dtype).contiguous()
            size = t.numel() * t.element_size()
            if self.pending and self.pending_bytes + size > self.limit:
                self._flush()
            ptr = t.untyped_storage().data_ptr()
            if t.untyped_storage().nbytes() > size or ptr in self._storages:  # safetensors refuses shared storage
                t = t.clone()
            self._storages.add(t.untyped_storage().data_ptr())
            self.pending[name] = t
            self.pending_bytes += size
            self.total += size

    def _flush(self) -> None:
        from safetensors.torch import save_file

        save_file(self.pending, os.path.join(self.folder, f".shard-{len(self.shards):05d}.tmp"), metadata={"format": "pt"})
        self.shards.append(sorted(self.pending))
        self.pending, self.pending_bytes, self._storages = {}, 0, set()

    def close(self) -> list[str]:
        """The files written, in order."""
        if self.pending or not self.shards:
            self._flush()
        n = len(self.shards)
        names = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for i, name in enumerate(names):
            os.replace(os.path.join(self.folder, f".shard-{i:05d}.tmp"), os.path.join(self.folder, name))
        if n > 1:
            index = {"metadata": {"total_size": self.total},
                     "weight_map": {t: name for name, tensors in zip(names, self.shards) for t in tensors}}
            write_json(os.path.join(self.folder, "model.safetensors.index.json"), index, indent=2, sort_keys=True)
        return names


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
        write_json(os.path.join(folder, "tokenizer_config.json"), {"tokenizer_class": "PreTrainedTokenizerFast",
                   "eos_token": eos_token, "pad_token": eos_token, "model_max_length": context_length}, indent=2)


def write_generation_config(folder: str, eos_token_id: int) -> None:
    """Greedy by default; generation stops at the end-of-document token the model was trained with."""
    write_json(os.path.join(folder, "generation_config.json"), {"bos_token_id": eos_token_id, "eos_token_id": eos_token_id,
               "pad_token_id": eos_token_id, "do_sample": False}, indent=2)


MODELING_FILES = ("configuration_ruyi_qwen3.py", "modeling_ruyi_qwen3.py")
# what an export writes: with `ruyi2 export --overwrite` these (and only these) are removed from --out first, so
# an older model.safetensors cannot be loaded in place of the new shards
EXPORT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "config.json",
                   "generation_config.json", *TOKENIZER_FILES, *MODELING_FILES, "ruyi2-export.error.log")


def remove_export_files(folder: str) -> list[str]:
    """Removes from ``folder`` the files an earlier export wrote there (``EXPORT_PATTERNS``); returns them."""
    gone = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path) and any(fnmatch.fnmatchcase(name, p) for p in EXPORT_PATTERNS):
            os.remove(path)
            gone.append(name)
    return gone


def write_modeling_code(folder: str) -> None:
    """Our modeling code for the Ruyi2 layout (``train_entry/hf_modeling``), which ``auto_map`` names."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_modeling")
    for name in MODELING_FILES:
        shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))
